//! Between PostgreSQL's text output of a value and a [`Value`], by the column's
//! [`ColumnType`].
//!
//! Both the replication stream (pgoutput in text mode) and the snapshot (`COPY ... TO
//! STDOUT` in text format) hand us each value as PostgreSQL's text output, so one parser
//! serves both. A sink reading a table back (a restore test) reads
//! it with `SELECT column::text` through the same parser. The text output depends on
//! session settings; every reader pins them to [`OUTPUT_SETTINGS`] (`DateStyle=ISO,
//! IntervalStyle=iso_8601, TimeZone=UTC, extra_float_digits=3, bytea_output=hex`) and
//! this module reads exactly that dialect (plus a few harmless
//! variants of it, such as `+05:30` offsets or `escape`-format bytea).
//!
//! [`format_output`] is the inverse: it prints a value the way PostgreSQL itself prints it
//! under those settings, which is also valid input for PostgreSQL, so a value can be
//! written back with COPY or a cast. For every value `v` that fits a type `ty`,
//! `parse_text(column, ty, &format_output(&v)) == Ok(v)`; property tests check this.
//!
//! Failure model: parsing never panics. A text that is not what PostgreSQL prints for the
//! type is a [`TypeError::Parse`]; a value PostgreSQL accepts but Tributary cannot carry
//! (a multi-dimensional array, a timestamp after year 294247 whose microseconds since
//! 1970 overflow 64 bits) is a [`TypeError::Unsupported`]. Both are definite: the same
//! text always fails the same way, so retrying cannot help. Messages name the column.
//!
//! The submodules are the domains of the conversion: `number`, `float`, `binary`,
//! `datetime`, `interval` and `array`. (From a catalog's type OIDs to a [`ColumnType`]
//! is the capture's business: `tributary_capture::postgres::types`.)

mod array;
mod binary;
mod datetime;
mod float;
mod interval;
mod number;

use crate::{ColumnType, Value};
use thiserror::Error;

/// The session settings under which PostgreSQL prints values the way [`parse_text`]
/// reads them: for a capture's snapshot and replication sessions, and for anything that
/// reads a table back.
pub const OUTPUT_SETTINGS: &[(&str, &str)] = &[
    ("datestyle", "ISO"),
    ("intervalstyle", "iso_8601"),
    ("timezone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// Why a value's text or a COPY line could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TypeError {
    /// The text is not a valid text form of the column's type.
    #[error("column {column}: cannot parse {text:?} as {ty}: {reason}")]
    Parse {
        /// Column name.
        column: String,
        /// The column's type, as [`ColumnType::describe`] prints it.
        ty: String,
        /// The offending text (shortened when long).
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value is valid in PostgreSQL but cannot be represented as a [`Value`].
    #[error("column {column}: {ty} value {text:?} is not supported: {reason}")]
    Unsupported {
        /// Column name.
        column: String,
        /// The column's type, as [`ColumnType::describe`] prints it.
        ty: String,
        /// The offending text (shortened when long).
        text: String,
        /// Why it cannot be carried.
        reason: String,
    },
    /// A line of COPY text output is malformed.
    #[error("COPY field {field}: {reason}")]
    Copy {
        /// 1-based position of the field in the line.
        field: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// What went wrong inside a type's parser, before the column is known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// Not a valid text form of the type.
    Invalid(String),
    /// Valid for PostgreSQL, not representable here.
    Unsupported(String),
}

impl Fault {
    /// An [`Fault::Invalid`] with a message.
    fn invalid(reason: impl Into<String>) -> Self {
        Fault::Invalid(reason.into())
    }

    /// The [`TypeError`] for `text` in `column` of type `ty`.
    fn into_error(self, column: &str, ty: &ColumnType, text: &str) -> TypeError {
        let (column, ty, text) = (column.to_string(), ty.describe(), excerpt(text));
        match self {
            Fault::Invalid(reason) => TypeError::Parse {
                column,
                ty,
                text,
                reason,
            },
            Fault::Unsupported(reason) => TypeError::Unsupported {
                column,
                ty,
                text,
                reason,
            },
        }
    }
}

/// The first 80 characters of `text`, for messages.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Parses PostgreSQL's text output of a value of type `ty` (column name for errors).
pub fn parse_text(column: &str, ty: &ColumnType, text: &str) -> Result<Value, TypeError> {
    let parsed = match ty {
        ColumnType::Bool => number::parse_bool(text).map(Value::Bool),
        ColumnType::Int16 => number::parse_int(text).map(Value::Int16),
        ColumnType::Int32 => number::parse_int(text).map(Value::Int32),
        ColumnType::Int64 => number::parse_int(text).map(Value::Int64),
        ColumnType::Float32 => float::parse_f32(text).map(Value::Float32),
        ColumnType::Float64 => float::parse_f64(text).map(Value::Float64),
        ColumnType::Numeric { .. } => {
            number::check_numeric(text).map(|()| Value::Numeric(text.into()))
        }
        ColumnType::Text => Ok(Value::Text(text.into())),
        ColumnType::Other { .. } => Ok(Value::Text(text.into())),
        ColumnType::Bytes => binary::parse_bytea(text).map(Value::Bytes),
        ColumnType::Date => datetime::parse_date(text).map(Value::Date),
        ColumnType::Time => datetime::parse_time(text).map(Value::Time),
        ColumnType::Timestamp => datetime::parse_timestamp(text, false).map(Value::Timestamp),
        ColumnType::TimestampTz => datetime::parse_timestamp(text, true).map(Value::TimestampTz),
        ColumnType::Interval => interval::parse_interval(text).map(Value::Interval),
        ColumnType::Uuid => binary::parse_uuid(text).map(Value::Uuid),
        ColumnType::Json { .. } => Ok(Value::Json(text.into())),
        ColumnType::Enum { .. } => Ok(Value::Enum(text.into())),
        ColumnType::Array { element } => return array::parse_array(column, ty, element, text),
    };
    parsed.map_err(|fault| fault.into_error(column, ty, text))
}

/// Formats a value as PostgreSQL text input (inverse of parse_text), used to write values back into PostgreSQL (COPY text / casts).
///
/// The result is what PostgreSQL prints for the value under the pinned session settings.
/// `Null` formats as `NULL`, its spelling inside an array; COPY writers must write `\N`
/// for a NULL field themselves. `Unchanged` has no text form and formats as an empty
/// string. Arrays are always written with `,` between elements, which is right for
/// every type except `box` (whose arrays PostgreSQL delimits with `;`).
pub fn format_output(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Unchanged => String::new(),
        Value::Bool(b) => if *b { "t" } else { "f" }.into(),
        Value::Int16(i) => i.to_string(),
        Value::Int32(i) => i.to_string(),
        Value::Int64(i) => i.to_string(),
        Value::Float32(f) => float::format_f32(*f),
        Value::Float64(f) => float::format_f64(*f),
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Enum(s) => s.clone(),
        Value::Bytes(b) => binary::format_bytea(b),
        Value::Date(d) => datetime::format_date(*d),
        Value::Time(t) => datetime::format_time(*t),
        Value::Timestamp(t) => datetime::format_timestamp(*t, false),
        Value::TimestampTz(t) => datetime::format_timestamp(*t, true),
        Value::Interval(i) => interval::format_interval(i),
        Value::Uuid(u) => binary::format_uuid(u),
        Value::Array(items) => array::format_array(items, ','),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Interval;

    fn parse(ty: &ColumnType, text: &str) -> Value {
        parse_text("c", ty, text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Each case is what PostgreSQL 15 prints under the pinned settings (checked with psql),
    /// the type, and the value it means; both directions must agree.
    #[test]
    fn literal_postgres_output_both_ways() {
        let day = 86_400_000_000_i64;
        let cases: Vec<(ColumnType, &str, Value)> = vec![
            (ColumnType::Bool, "t", Value::Bool(true)),
            (ColumnType::Bool, "f", Value::Bool(false)),
            (ColumnType::Int16, "-32768", Value::Int16(i16::MIN)),
            (
                ColumnType::Int64,
                "9223372036854775807",
                Value::Int64(i64::MAX),
            ),
            (ColumnType::Float64, "1e+100", Value::Float64(1e100)),
            (
                ColumnType::Float32,
                "1.234567e+06",
                Value::Float32(1_234_567.0),
            ),
            (
                ColumnType::Numeric {
                    precision: None,
                    scale: None,
                },
                "-12.3400",
                Value::Numeric("-12.3400".into()),
            ),
            (
                ColumnType::Numeric {
                    precision: None,
                    scale: None,
                },
                "Infinity",
                Value::Numeric("Infinity".into()),
            ),
            (ColumnType::Bytes, "\\x0a0b", Value::Bytes(vec![10, 11])),
            (ColumnType::Bytes, "\\x", Value::Bytes(vec![])),
            (
                ColumnType::Uuid,
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                Value::Uuid([
                    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd,
                    0x38, 0x0a, 0x11,
                ]),
            ),
            (ColumnType::Date, "2024-01-31", Value::Date(19_753)),
            (ColumnType::Date, "-infinity", Value::Date(i32::MIN)),
            (ColumnType::Time, "24:00:00", Value::Time(day)),
            (
                ColumnType::Time,
                "13:45:00.123",
                Value::Time(49_500_123_000),
            ),
            (
                ColumnType::TimestampTz,
                "2024-02-29 23:59:59.999999+00",
                Value::TimestampTz(1_709_251_199_999_999),
            ),
            (
                ColumnType::TimestampTz,
                "infinity",
                Value::TimestampTz(i64::MAX),
            ),
            (
                ColumnType::Timestamp,
                "2024-01-31 13:45:00.5",
                Value::Timestamp(1_706_708_700_500_000),
            ),
            (
                ColumnType::Interval,
                "P1Y2M-3DT4H5M6.5S",
                Value::Interval(Interval {
                    months: 14,
                    days: -3,
                    micros: 14_706_500_000,
                }),
            ),
            (
                ColumnType::Interval,
                "PT0S",
                Value::Interval(Interval {
                    months: 0,
                    days: 0,
                    micros: 0,
                }),
            ),
            (
                ColumnType::Json { binary: true },
                "{\"a\": 1}",
                Value::Json("{\"a\": 1}".into()),
            ),
            (
                ColumnType::Enum {
                    name: "mood".into(),
                },
                "happy",
                Value::Enum("happy".into()),
            ),
            (
                ColumnType::Other {
                    name: "inet".into(),
                },
                "10.0.0.1/8",
                Value::Text("10.0.0.1/8".into()),
            ),
        ];
        for (ty, text, value) in cases {
            assert_eq!(parse(&ty, text), value, "parsing {text:?} as {ty:?}");
            assert_eq!(format_output(&value), text, "formatting {value:?}");
        }
    }

    #[test]
    fn errors_name_the_column_and_the_problem() {
        let err = parse_text("price", &ColumnType::Int32, "12x").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("column price: cannot parse \"12x\" as int32"),
            "{msg}"
        );
        let err = parse_text(
            "grid",
            &ColumnType::Array {
                element: Box::new(ColumnType::Int32),
            },
            "{{1,2},{3,4}}",
        )
        .unwrap_err();
        assert!(
            matches!(err, TypeError::Unsupported { ref column, .. } if column == "grid"),
            "{err}"
        );
        assert!(err.to_string().contains("multi-dimensional"), "{err}");
    }

    #[test]
    fn long_texts_are_shortened_in_errors() {
        let text = "x".repeat(1000);
        let err = parse_text("n", &ColumnType::Int64, &text).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
