//! Typed column values and column types.
//!
//! Values are source-neutral: a PostgreSQL `timestamptz` and a MySQL `TIMESTAMP` both
//! become [`Value::TimestampTz`]. Numerics stay exact as decimal text of any precision.
//! [`Value::Unchanged`] is distinct from [`Value::Null`]: it marks a column whose value
//! the source did not send because it did not change (PostgreSQL's unchanged TOAST
//! value), and a sink must keep what it has.

use serde::{Deserialize, Serialize};

/// The logical type of a column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// 16-bit signed integer.
    Int16,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Exact decimal; precision and scale when the source declares them.
    Numeric {
        /// Total digits, when declared.
        precision: Option<u32>,
        /// Digits after the point, when declared.
        scale: Option<u32>,
    },
    /// Character data (text, varchar, char, ...).
    Text,
    /// Binary data.
    Bytes,
    /// Calendar date.
    Date,
    /// Time of day without zone.
    Time,
    /// Timestamp without zone.
    Timestamp,
    /// Timestamp with zone, normalised to UTC.
    TimestampTz,
    /// Interval of months, days and microseconds.
    Interval,
    /// UUID.
    Uuid,
    /// JSON document; `binary` for PostgreSQL `jsonb`.
    Json {
        /// Whether the source stores it as `jsonb`.
        binary: bool,
    },
    /// A value of a user-defined enumeration, carried as its label.
    Enum {
        /// Name of the enumeration type at the source.
        name: String,
    },
    /// A one-dimensional array of elements (NULL elements allowed).
    Array {
        /// Element type.
        element: Box<ColumnType>,
    },
    /// Any other source type, carried as the source's text form.
    Other {
        /// The source's type name.
        name: String,
    },
}

impl ColumnType {
    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            ColumnType::Array { element } => format!("{}[]", element.describe()),
            ColumnType::Enum { name } => format!("enum {name}"),
            ColumnType::Other { name } => format!("other {name}"),
            ColumnType::Numeric { .. } => "numeric".into(),
            ColumnType::Json { binary: true } => "jsonb".into(),
            ColumnType::Json { binary: false } => "json".into(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// An interval as PostgreSQL keeps it: months, days and microseconds, each signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    /// Whole months.
    pub months: i32,
    /// Whole days.
    pub days: i32,
    /// Microseconds.
    pub micros: i64,
}

/// One column value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// The source did not send this value because it did not change; keep the old one.
    Unchanged,
    /// Boolean.
    Bool(bool),
    /// 16-bit integer.
    Int16(i16),
    /// 32-bit integer.
    Int32(i32),
    /// 64-bit integer.
    Int64(i64),
    /// 32-bit float.
    Float32(f32),
    /// 64-bit float.
    Float64(f64),
    /// Exact decimal as text (`-12.3400`, `NaN`, `Infinity`, `-Infinity`).
    Numeric(String),
    /// Character data.
    Text(String),
    /// Binary data.
    Bytes(Vec<u8>),
    /// Days since 1970-01-01; `i32::MIN`/`i32::MAX` are -infinity/infinity.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 1970-01-01 00:00, no zone; `i64::MIN`/`i64::MAX` are infinities.
    Timestamp(i64),
    /// Microseconds since 1970-01-01 00:00 UTC; `i64::MIN`/`i64::MAX` are infinities.
    TimestampTz(i64),
    /// An interval.
    Interval(Interval),
    /// A UUID.
    Uuid([u8; 16]),
    /// A JSON document as text.
    Json(String),
    /// An enumeration label.
    Enum(String),
    /// A one-dimensional array.
    Array(Vec<Value>),
}

impl Value {
    /// Whether the value is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether `self` can stand in a column of type `ty` (NULL and Unchanged fit any).
    pub fn fits(&self, ty: &ColumnType) -> bool {
        match (self, ty) {
            (Value::Null | Value::Unchanged, _) => true,
            (Value::Bool(_), ColumnType::Bool)
            | (Value::Int16(_), ColumnType::Int16)
            | (Value::Int32(_), ColumnType::Int32)
            | (Value::Int64(_), ColumnType::Int64)
            | (Value::Float32(_), ColumnType::Float32)
            | (Value::Float64(_), ColumnType::Float64)
            | (Value::Numeric(_), ColumnType::Numeric { .. })
            | (Value::Text(_), ColumnType::Text | ColumnType::Other { .. })
            | (Value::Bytes(_), ColumnType::Bytes)
            | (Value::Date(_), ColumnType::Date)
            | (Value::Time(_), ColumnType::Time)
            | (Value::Timestamp(_), ColumnType::Timestamp)
            | (Value::TimestampTz(_), ColumnType::TimestampTz)
            | (Value::Interval(_), ColumnType::Interval)
            | (Value::Uuid(_), ColumnType::Uuid)
            | (Value::Json(_), ColumnType::Json { .. })
            | (Value::Enum(_), ColumnType::Enum { .. }) => true,
            (Value::Array(items), ColumnType::Array { element }) => items
                .iter()
                .all(|v| !matches!(v, Value::Unchanged) && v.fits(element)),
            _ => false,
        }
    }

    /// A short description for error messages (never the full content of large values).
    pub fn describe(&self) -> String {
        let s = format!("{self:?}");
        if s.len() > 60 {
            format!("{}…", &s[..s.floor_char_boundary(60)])
        } else {
            s
        }
    }
}

/// A row image: one value per column of the table schema, in column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// The values.
    pub fn values(&self) -> &[Value] {
        &self.0
    }
}
