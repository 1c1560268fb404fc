//! Reading a value back as the sink wrote it (see [`crate::admin::Session::read_table`]):
//! the inverse of `literal::write` for the column types `ddl::type_sql` chose, from the
//! text protocol's bytes.
//!
//! Dates and timestamps are read with chrono, as `literal` writes them (years 0 to 9999,
//! proleptic); integers and UUIDs, spelled alike by MySQL and PostgreSQL, with the
//! PostgreSQL text parser, as are array items (written in PostgreSQL's text form).

use chrono::{NaiveDate, NaiveDateTime};
use tributary_schemas::pg_text::parse_text;
use tributary_schemas::{Column, ColumnType, Interval, Value};

/// The value of `column` whose text-protocol bytes are `raw` (`None`: NULL).
pub(crate) fn value(column: &Column, raw: Option<&[u8]>) -> Result<Value, String> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    if column.ty == ColumnType::Bytes {
        return Ok(Value::Bytes(raw.to_vec()));
    }
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8 text".to_string())?;
    typed(&column.ty, text)
}

fn typed(ty: &ColumnType, text: &str) -> Result<Value, String> {
    let unreadable = || format!("unreadable {} {text:?}", ty.describe());
    Ok(match ty {
        ColumnType::Bool => Value::Bool(text.parse::<i64>().map_err(|_| unreadable())? != 0),
        ColumnType::Float32 => Value::Float32(text.parse().map_err(|_| unreadable())?),
        ColumnType::Float64 => Value::Float64(text.parse().map_err(|_| unreadable())?),
        ColumnType::Numeric { .. } => Value::Numeric(text.to_string()),
        ColumnType::Text | ColumnType::Other { .. } => Value::Text(text.to_string()),
        ColumnType::Enum { .. } => Value::Enum(text.to_string()),
        ColumnType::Json { .. } => Value::Json(text.to_string()),
        ColumnType::Bytes => Value::Bytes(text.as_bytes().to_vec()),
        ColumnType::Date => {
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| unreadable())?;
            let days = date.signed_duration_since(NaiveDate::default()).num_days();
            Value::Date(i32::try_from(days).map_err(|_| unreadable())?)
        }
        ColumnType::Time => Value::Time(duration_micros(text).ok_or_else(unreadable)?),
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .map_err(|_| unreadable())?;
            let micros = t.and_utc().timestamp_micros();
            if *ty == ColumnType::Timestamp {
                Value::Timestamp(micros)
            } else {
                Value::TimestampTz(micros)
            }
        }
        ColumnType::Interval => Value::Interval(Interval {
            months: 0,
            days: 0,
            micros: duration_micros(text).ok_or_else(unreadable)?,
        }),
        ColumnType::Array { element } => {
            let doc: serde_json::Value = serde_json::from_str(text).map_err(|_| unreadable())?;
            item(element, &doc).ok_or_else(unreadable)?
        }
        // Integers and UUIDs.
        _ => parse_text("", ty, text).map_err(|_| unreadable())?,
    })
}

/// A JSON array item (see `literal::json_array`) as a value of type `ty`.
fn item(ty: &ColumnType, doc: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    Some(match (ty, doc) {
        (_, J::Null) => Value::Null,
        (ColumnType::Array { element }, J::Array(items)) => Value::Array(
            items
                .iter()
                .map(|i| item(element, i))
                .collect::<Option<_>>()?,
        ),
        (_, J::Array(_)) => Value::Array(
            doc.as_array()?
                .iter()
                .map(|i| item(ty, i))
                .collect::<Option<_>>()?,
        ),
        (ColumnType::Json { .. }, doc) => Value::Json(doc.to_string()),
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (_, J::Number(n)) => typed(ty, &n.to_string()).ok()?,
        (_, J::String(s)) => parse_text("", ty, s).ok()?,
        _ => return None,
    })
}

/// `[-]H:MM:SS[.ffffff]` as signed microseconds.
fn duration_micros(text: &str) -> Option<i64> {
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let seconds = whole.split(':').try_fold(0_i64, |acc, part| {
        Some(acc.checked_mul(60)? + part.parse::<i64>().ok()?)
    })?;
    let digits = fraction.get(..fraction.len().min(6))?;
    let micros = format!("{digits:0<6}").parse::<i64>().ok()?;
    Some(sign * (seconds * 1_000_000 + micros))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::literal::write;

    fn column(ty: ColumnType) -> Column {
        Column {
            name: "c".into(),
            ty,
            source_type: String::new(),
            nullable: true,
            missing: None,
        }
    }

    /// The text MySQL prints for what `literal::write` wrote (its quotes off).
    fn written(value: &Value) -> String {
        let mut out = String::new();
        write(value, &mut out);
        let unquoted = out.trim_matches('\'').replace("''", "'");
        match value {
            // DATE and DATETIME(6) print as written; TIME(6) prints six decimals too.
            Value::Bool(b) => i32::from(*b).to_string(),
            _ => unquoted,
        }
    }

    #[test]
    fn every_written_value_reads_back() {
        let int = |t: ColumnType| Box::new(t);
        let cases = vec![
            (ColumnType::Bool, Value::Bool(true)),
            (ColumnType::Int16, Value::Int16(-7)),
            (ColumnType::Int64, Value::Int64(i64::MAX)),
            (ColumnType::Float64, Value::Float64(0.1)),
            (ColumnType::Date, Value::Date(19_753)),
            (ColumnType::Date, Value::Date(-719_528)),
            (ColumnType::Time, Value::Time(49_500_123_000)),
            (
                ColumnType::Timestamp,
                Value::Timestamp(1_706_708_700_500_000),
            ),
            (ColumnType::TimestampTz, Value::TimestampTz(-1)),
            (
                ColumnType::Interval,
                Value::Interval(Interval {
                    months: 0,
                    days: 0,
                    micros: -3_000_000_123_456,
                }),
            ),
            (ColumnType::Uuid, Value::Uuid([7; 16])),
            (ColumnType::Text, Value::Text("it's".into())),
            (
                ColumnType::Array {
                    element: int(ColumnType::Int32),
                },
                Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-2)]),
            ),
            (
                ColumnType::Array {
                    element: int(ColumnType::Date),
                },
                Value::Array(vec![Value::Date(0), Value::Date(19_753)]),
            ),
        ];
        for (ty, v) in cases {
            let text = written(&v);
            assert_eq!(
                value(&column(ty.clone()), Some(text.as_bytes())),
                Ok(v),
                "{ty:?} {text}"
            );
        }
        assert_eq!(value(&column(ColumnType::Int32), None), Ok(Value::Null));
        let e = value(&column(ColumnType::Int32), Some(b"12x")).unwrap_err();
        assert!(e.contains("12x"), "{e}");
    }
}
