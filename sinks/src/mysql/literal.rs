//! Values as MySQL literals.
//!
//! Batches are sent as SQL text: one multi-row `INSERT` is far cheaper for the server
//! than as many prepared-statement executions. The session runs with
//! `NO_BACKSLASH_ESCAPES` and `utf8mb4`, so a string literal only doubles its quotes, and
//! with `time_zone = '+00:00'`, so timestamps are written in UTC.
//!
//! [`check`] runs before anything is written and refuses every value MySQL cannot store
//! exactly (NaN, infinite dates, intervals with months, decimals with more digits than
//! the target column keeps): MySQL would round or reject some of them with a note only,
//! and a sink must not lose data quietly. [`write`] then cannot fail.

use chrono::DateTime;
use std::fmt::Write;
use tributary_schemas::pg_text::format_text;
use tributary_schemas::{Interval, Value};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// MySQL's TIME range: ±838:59:59.999999.
const MAX_TIME_MICROS: i64 = (838 * 3600 + 59 * 60 + 59) * MICROS_PER_SECOND + 999_999;

/// One column of a target table, as the catalog describes it: what [`check`] checks against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetColumn {
    /// Name as stored.
    pub name: String,
    /// `DATA_TYPE`, lower case (`decimal`, `varchar`, ...).
    pub data_type: String,
    /// `NUMERIC_PRECISION`, for numbers.
    pub precision: Option<u64>,
    /// `NUMERIC_SCALE`, for numbers.
    pub scale: Option<u64>,
}

/// Why `value` cannot be stored in `target` without loss, if it cannot.
pub(crate) fn check(value: &Value, target: &TargetColumn) -> Result<(), String> {
    match value {
        Value::Float32(v) if !v.is_finite() => Err("MySQL stores no NaN or infinite float".into()),
        Value::Float64(v) if !v.is_finite() => Err("MySQL stores no NaN or infinite float".into()),
        Value::Numeric(text) => check_decimal(text, target),
        Value::Date(days) => {
            if *days == i32::MIN || *days == i32::MAX {
                return Err("MySQL has no infinite date".into());
            }
            match i64::from(*days).checked_mul(MICROS_PER_DAY) {
                Some(micros) => check_year(micros),
                None => Err("MySQL dates run from year 0 to 9999".into()),
            }
        }
        Value::Timestamp(micros) | Value::TimestampTz(micros) => {
            if *micros == i64::MIN || *micros == i64::MAX {
                return Err("MySQL has no infinite timestamp".into());
            }
            check_year(*micros)
        }
        Value::Interval(iv) => interval_micros(iv).map(drop),
        _ => Ok(()),
    }
}

/// Years MySQL's DATE and DATETIME hold.
fn check_year(micros: i64) -> Result<(), String> {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) if (0..=9999).contains(&chrono::Datelike::year(&t)) => Ok(()),
        _ => Err("MySQL dates run from year 0 to 9999".into()),
    }
}

/// An interval as the signed microseconds of a MySQL TIME, if it is one.
fn interval_micros(iv: &Interval) -> Result<i64, String> {
    if iv.months != 0 {
        return Err("an interval with months has no MySQL TIME equivalent".into());
    }
    let total = i64::from(iv.days)
        .checked_mul(MICROS_PER_DAY)
        .and_then(|d| d.checked_add(iv.micros))
        .filter(|t| t.abs() <= MAX_TIME_MICROS);
    total.ok_or_else(|| "MySQL TIME holds at most ±838:59:59.999999".into())
}

/// Checks an exact decimal against the target's precision and scale (integer targets
/// such as `bigint unsigned` take integers; the server checks their range).
/// Whether `text` is `-?digits(.digits)?`, the only form written unquoted.
fn is_plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn check_decimal(text: &str, target: &TargetColumn) -> Result<(), String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if !is_plain_decimal(text) {
        return Err(format!(
            "{text} is not a finite decimal, which is all MySQL stores"
        ));
    }
    let int_digits = int.trim_start_matches('0').len();
    let frac_digits = frac.trim_end_matches('0').len();
    match (target.data_type.as_str(), target.precision, target.scale) {
        ("decimal", Some(p), s) => {
            let s = s.unwrap_or(0);
            if int_digits as u64 > p.saturating_sub(s) || frac_digits as u64 > s {
                return Err(format!(
                    "the target column is decimal({p},{s}), which would round or refuse it"
                ));
            }
            Ok(())
        }
        ("tinyint" | "smallint" | "mediumint" | "int" | "bigint", _, _) if frac_digits > 0 => {
            Err("the target column holds integers".into())
        }
        _ => Ok(()),
    }
}

/// Appends `value` as a literal for a column of the target.
pub(crate) fn write(value: &Value, out: &mut String) {
    // Writing into a String cannot fail; the results of write! are ignored for that reason.
    match value {
        Value::Null | Value::Unchanged => out.push_str("NULL"),
        Value::Bool(b) => out.push(if *b { '1' } else { '0' }),
        Value::Int16(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int32(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int64(v) => {
            let _ = write!(out, "{v}");
        }
        // Exponent form: a DOUBLE literal, in the shortest digits that read back the same.
        // As the double it is exactly: the shortest f32 digits can read back as a double
        // just above FLOAT's range (f32::MAX).
        Value::Float32(v) => {
            let _ = write!(out, "{:e}", f64::from(*v));
        }
        Value::Float64(v) => {
            let _ = write!(out, "{v:e}");
        }
        // Digits with an optional sign and point: an exact decimal literal. Anything else
        // (which `check` refuses) is quoted, never spliced into the statement.
        Value::Numeric(text) if is_plain_decimal(text) => out.push_str(text),
        Value::Numeric(text) => quote(text, out),
        Value::Text(s) | Value::Json(s) | Value::Enum(s) => quote(s, out),
        Value::Bytes(bytes) => {
            out.reserve(3 + bytes.len() * 2);
            out.push_str("X'");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
            out.push('\'');
        }
        Value::Date(days) => {
            let micros = i64::from(*days).saturating_mul(MICROS_PER_DAY);
            let date = DateTime::from_timestamp_micros(micros)
                .unwrap_or_default()
                .date_naive();
            let _ = write!(out, "'{}'", date.format("%Y-%m-%d"));
        }
        Value::Time(micros) => {
            out.push('\'');
            write_duration(*micros, out);
            out.push('\'');
        }
        Value::Timestamp(micros) | Value::TimestampTz(micros) => {
            let t = DateTime::from_timestamp_micros(*micros).unwrap_or_default();
            let _ = write!(out, "'{}'", t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f"));
        }
        Value::Interval(iv) => {
            out.push('\'');
            write_duration(interval_micros(iv).unwrap_or_default(), out);
            out.push('\'');
        }
        Value::Uuid(bytes) => {
            let _ = write!(out, "'{}'", uuid::Uuid::from_bytes(*bytes).hyphenated());
        }
        Value::Array(items) => quote(&json_array(items).to_string(), out),
    }
}

/// `[-]H:MM:SS.ffffff`.
fn write_duration(micros: i64, out: &mut String) {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let secs = m / 1_000_000;
    let _ = write!(
        out,
        "{sign}{}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        m % 1_000_000
    );
}

/// A string literal: quotes doubled (the session has `NO_BACKSLASH_ESCAPES`).
pub(crate) fn quote(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('\'');
    for part in s.split_inclusive('\'') {
        out.push_str(part);
        if part.ends_with('\'') {
            out.push('\'');
        }
    }
    out.push('\'');
}

/// An array as a JSON array (MySQL has no array type): numbers and booleans as JSON
/// scalars, everything else as its PostgreSQL text form.
fn json_array(items: &[Value]) -> serde_json::Value {
    serde_json::Value::Array(items.iter().map(json_item).collect())
}

fn json_item(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null | Value::Unchanged => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int16(v) => J::from(*v),
        Value::Int32(v) => J::from(*v),
        Value::Int64(v) => J::from(*v),
        Value::Float32(v) if v.is_finite() => J::from(f64::from(*v)),
        Value::Float64(v) if v.is_finite() => J::from(*v),
        Value::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| J::String(text.clone())),
        Value::Array(items) => json_array(items),
        other => J::String(format_text(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(data_type: &str, precision: Option<u64>, scale: Option<u64>) -> TargetColumn {
        TargetColumn {
            name: "c".into(),
            data_type: data_type.into(),
            precision,
            scale,
        }
    }

    fn lit(value: &Value) -> String {
        let mut out = String::new();
        write(value, &mut out);
        out
    }

    #[test]
    fn strings_double_their_quotes_only() {
        assert_eq!(
            lit(&Value::Text("it's \\ ok''".into())),
            "'it''s \\ ok'''''"
        );
        assert_eq!(lit(&Value::Text(String::new())), "''");
        assert_eq!(lit(&Value::Bytes(vec![0, 0xab])), "X'00ab'");
        assert_eq!(lit(&Value::Bytes(vec![])), "X''");
    }

    #[test]
    fn times_are_utc_text_with_microseconds() {
        assert_eq!(lit(&Value::Date(-1)), "'1969-12-31'");
        assert_eq!(
            lit(&Value::Timestamp(1_500_000)),
            "'1970-01-01 00:00:01.500000'"
        );
        assert_eq!(lit(&Value::TimestampTz(-1)), "'1969-12-31 23:59:59.999999'");
        assert_eq!(lit(&Value::Time(3_723_000_004)), "'1:02:03.000004'");
        let iv = Interval {
            months: 0,
            days: -1,
            micros: -1,
        };
        assert_eq!(lit(&Value::Interval(iv)), "'-24:00:00.000001'");
    }

    #[test]
    fn floats_read_back_exactly() {
        for v in [0.1f64, -1e300, 5e-324, 123456.789] {
            let text = lit(&Value::Float64(v));
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
        }
        for v in [0.1f32, f32::MAX, f32::MIN_POSITIVE] {
            let text = lit(&Value::Float32(v));
            assert_eq!(text.parse::<f64>().unwrap(), f64::from(v), "{text}");
        }
    }

    #[test]
    fn lossy_values_are_refused() {
        let dec = target("decimal", Some(5), Some(2));
        assert!(check(&Value::Numeric("123.45".into()), &dec).is_ok());
        assert!(check(&Value::Numeric("-123.4500".into()), &dec).is_ok());
        assert!(check(&Value::Numeric("123.456".into()), &dec).is_err());
        assert!(check(&Value::Numeric("1234.5".into()), &dec).is_err());
        assert!(check(&Value::Numeric("NaN".into()), &dec).is_err());
        let int = target("bigint", Some(20), Some(0));
        assert!(check(&Value::Numeric("18446744073709551615".into()), &int).is_ok());
        assert!(check(&Value::Numeric("1.5".into()), &int).is_err());
        let any = target("longtext", None, None);
        assert!(check(&Value::Float64(f64::NAN), &any).is_err());
        assert!(check(&Value::Date(i32::MAX), &any).is_err());
        assert!(check(&Value::Timestamp(i64::MIN), &any).is_err());
        let month = Interval {
            months: 1,
            days: 0,
            micros: 0,
        };
        assert!(check(&Value::Interval(month), &any).is_err());
        let long = Interval {
            months: 0,
            days: 35,
            micros: 0,
        };
        assert!(check(&Value::Interval(long), &any).is_err());
        assert!(check(&Value::Date(i32::MAX - 1), &any).is_err());
        assert!(check(&Value::Date(i32::MIN + 1), &any).is_err());
        // Never spliced in unquoted, even unchecked.
        assert_eq!(lit(&Value::Numeric("1) OR (1=1".into())), "'1) OR (1=1'");
        // 10000-01-01
        assert!(check(&Value::Date(2_932_897), &any).is_err());
        assert!(check(&Value::Date(2_932_896), &any).is_ok());
    }

    #[test]
    fn arrays_become_json() {
        let v = Value::Array(vec![
            Value::Int32(1),
            Value::Null,
            Value::Text("a'b".into()),
            Value::Array(vec![Value::Bool(true)]),
        ]);
        assert_eq!(lit(&v), "'[1,null,\"a''b\",[true]]'");
    }
}
