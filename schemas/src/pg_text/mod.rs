//! Values in PostgreSQL's text formats: the input form written here, and the output form
//! PostgreSQL prints, read (and printed) by [`output`].
//!
//! Sinks that load through `COPY ... FROM STDIN` (text format) or bind parameters as
//! `$n::text::<type>` need every [`Value`] spelled the way PostgreSQL's input functions
//! read it back exactly. The rules here are chosen for exactness rather than beauty:
//!
//! - floats use Rust's shortest round-trip representation, so an `f32` read back by
//!   `float4in` is bit-for-bit the value we had; non-finite values are `NaN`, `Infinity`
//!   and `-Infinity`;
//! - dates and timestamps are ISO (`YYYY-MM-DD HH:MM:SS.ffffff`), years before 1 AD get
//!   the ` BC` suffix, and the sentinel values are `-infinity`/`infinity`;
//! - intervals are written as `+M mons +D days +U microseconds`, every field with an
//!   explicit sign so the result does not depend on the session's `IntervalStyle`;
//! - arrays are literals with every element double-quoted and backslash-escaped.
//!
//! [`Value::Null`] and [`Value::Unchanged`] have no text form: callers must handle them
//! before formatting (both are spelled `NULL` here, which is only right inside arrays).
//! The calendar math is proleptic Gregorian, as PostgreSQL's.

pub mod output;

pub use output::{format_output, parse_text, TypeError, OUTPUT_SETTINGS};

use crate::value::{Interval, Value};
use std::fmt::Write;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Formats `value` as PostgreSQL text input.
pub fn format_text(value: &Value) -> String {
    let mut out = String::new();
    write_text(value, &mut out);
    out
}

/// Appends `value` as PostgreSQL text input to `out` (see [`format_text`]).
pub fn write_text(value: &Value, out: &mut String) {
    // Writing into a String cannot fail; the results of write! are ignored for that reason.
    match value {
        Value::Null | Value::Unchanged => out.push_str("NULL"),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int16(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int32(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int64(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Float32(v) if v.is_finite() => {
            let _ = write!(out, "{v}");
        }
        Value::Float64(v) if v.is_finite() => {
            let _ = write!(out, "{v}");
        }
        Value::Float32(v) => write_non_finite(f64::from(*v), out),
        Value::Float64(v) => write_non_finite(*v, out),
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Enum(s) => out.push_str(s),
        Value::Bytes(bytes) => {
            out.reserve(2 + bytes.len() * 2);
            out.push_str("\\x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
        }
        Value::Date(days) => write_date(*days, out),
        Value::Time(micros) => write_time_of_day(*micros, out),
        Value::Timestamp(micros) => write_timestamp(*micros, false, out),
        Value::TimestampTz(micros) => write_timestamp(*micros, true, out),
        Value::Interval(iv) => write_interval(iv, out),
        Value::Uuid(bytes) => {
            let _ = write!(out, "{}", uuid::Uuid::from_bytes(*bytes).hyphenated());
        }
        Value::Array(items) => write_array(items, out),
    }
}

/// Writes NaN or an infinity as PostgreSQL spells them.
fn write_non_finite(v: f64, out: &mut String) {
    out.push_str(if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    });
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for &d in digits[..len].iter().rev() {
        out.push(char::from(d));
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
///
/// The year is astronomical: 0 is 1 BC, -1 is 2 BC. This is H. Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `YYYY-MM-DD` and returns whether the date is BC (the caller adds the suffix).
fn write_ymd(days: i64, out: &mut String) -> bool {
    let (year, month, day) = civil_from_days(days);
    let bc = year <= 0;
    let shown = if bc { 1 - year } else { year };
    push_padded(out, shown.unsigned_abs(), 4);
    out.push('-');
    push_padded(out, u64::from(month), 2);
    out.push('-');
    push_padded(out, u64::from(day), 2);
    bc
}

fn write_date(days: i32, out: &mut String) {
    match days {
        i32::MIN => out.push_str("-infinity"),
        i32::MAX => out.push_str("infinity"),
        _ => {
            if write_ymd(i64::from(days), out) {
                out.push_str(" BC");
            }
        }
    }
}

/// Writes `HH:MM:SS.ffffff` for microseconds since midnight (24:00:00 is allowed).
fn write_time_of_day(micros: i64, out: &mut String) {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    let frac = micros.rem_euclid(MICROS_PER_SECOND);
    let (h, m, s) = (secs / 3_600, (secs / 60) % 60, secs % 60);
    if secs < 0 {
        // Not a time of day; PostgreSQL will reject it, and the text says why.
        let _ = write!(out, "{h:03}:{m:02}:{s:02}");
        return;
    }
    push_padded(out, h as u64, 2);
    out.push(':');
    push_padded(out, m as u64, 2);
    out.push(':');
    push_padded(out, s as u64, 2);
    out.push('.');
    push_padded(out, frac as u64, 6);
}

fn write_timestamp(micros: i64, with_zone: bool, out: &mut String) {
    match micros {
        i64::MIN => out.push_str("-infinity"),
        i64::MAX => out.push_str("infinity"),
        _ => {
            let bc = write_ymd(micros.div_euclid(MICROS_PER_DAY), out);
            out.push(' ');
            write_time_of_day(micros.rem_euclid(MICROS_PER_DAY), out);
            if with_zone {
                out.push_str("+00");
            }
            if bc {
                out.push_str(" BC");
            }
        }
    }
}

fn write_interval(iv: &Interval, out: &mut String) {
    // Explicit signs on every field: with IntervalStyle = sql_standard a lone leading
    // minus would otherwise apply to all fields.
    let _ = write!(
        out,
        "{:+} mons {:+} days {:+} microseconds",
        iv.months, iv.days, iv.micros
    );
}

fn write_array(items: &[Value], out: &mut String) {
    out.push('{');
    let mut element = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null | Value::Unchanged => out.push_str("NULL"),
            // A nested array is a sub-literal of a multi-dimensional array, never quoted.
            Value::Array(inner) => write_array(inner, out),
            other => {
                element.clear();
                write_text(other, &mut element);
                out.push('"');
                for c in element.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Value) -> String {
        format_text(&v)
    }

    #[test]
    fn scalars() {
        assert_eq!(text(Value::Bool(true)), "t");
        assert_eq!(text(Value::Bool(false)), "f");
        assert_eq!(text(Value::Int16(i16::MIN)), "-32768");
        assert_eq!(text(Value::Int32(42)), "42");
        assert_eq!(text(Value::Int64(i64::MAX)), "9223372036854775807");
        assert_eq!(text(Value::Numeric("-12.3400".into())), "-12.3400");
        assert_eq!(text(Value::Text("a\tb".into())), "a\tb");
        assert_eq!(text(Value::Json("{\"a\": 1}".into())), "{\"a\": 1}");
        assert_eq!(text(Value::Enum("happy".into())), "happy");
        assert_eq!(text(Value::Bytes(vec![0, 0xab, 0xff])), "\\x00abff");
        assert_eq!(text(Value::Bytes(vec![])), "\\x");
    }

    #[test]
    fn floats_round_trip_and_spell_non_finite_values() {
        assert_eq!(text(Value::Float32(0.1)), "0.1");
        assert_eq!(text(Value::Float64(0.1)), "0.1");
        assert_eq!(text(Value::Float64(-0.0)), "-0");
        assert_eq!(text(Value::Float32(f32::NAN)), "NaN");
        assert_eq!(text(Value::Float64(f64::INFINITY)), "Infinity");
        assert_eq!(text(Value::Float32(f32::NEG_INFINITY)), "-Infinity");
        for v in [
            f32::MIN_POSITIVE,
            f32::MAX,
            1.0e-45,
            3.4028235e38,
            16_777_217.0,
            0.3,
        ] {
            let back: f32 = text(Value::Float32(v)).parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits());
        }
        for v in [f64::MIN_POSITIVE, f64::MAX, 5e-324, 0.1 + 0.2] {
            let back: f64 = text(Value::Float64(v)).parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits());
        }
    }

    #[test]
    fn padding() {
        let mut out = String::new();
        push_padded(&mut out, 7, 4);
        push_padded(&mut out, 12345, 2);
        push_padded(&mut out, 0, 1);
        push_padded(&mut out, u64::MAX, 2);
        assert_eq!(out, "000712345018446744073709551615");
    }

    #[test]
    fn dates() {
        assert_eq!(text(Value::Date(0)), "1970-01-01");
        assert_eq!(text(Value::Date(-1)), "1969-12-31");
        assert_eq!(text(Value::Date(19_723)), "2024-01-01");
        assert_eq!(text(Value::Date(11_016)), "2000-02-29");
        // 0001-01-01 AD and the day before it, 0001-12-31 BC (astronomical year 0).
        assert_eq!(text(Value::Date(-719_162)), "0001-01-01");
        assert_eq!(text(Value::Date(-719_163)), "0001-12-31 BC");
        // PostgreSQL's lower bound, 4714-11-24 BC (Julian day 0).
        assert_eq!(text(Value::Date(-2_440_588)), "4714-11-24 BC");
        // PostgreSQL's upper bound.
        assert_eq!(text(Value::Date(2_145_042_905)), "5874897-12-31");
        assert_eq!(text(Value::Date(i32::MIN)), "-infinity");
        assert_eq!(text(Value::Date(i32::MAX)), "infinity");
    }

    #[test]
    fn times_and_timestamps() {
        assert_eq!(text(Value::Time(0)), "00:00:00.000000");
        assert_eq!(text(Value::Time(45_296_000_007)), "12:34:56.000007");
        assert_eq!(text(Value::Time(MICROS_PER_DAY)), "24:00:00.000000");
        assert_eq!(text(Value::Timestamp(0)), "1970-01-01 00:00:00.000000");
        assert_eq!(text(Value::Timestamp(-1)), "1969-12-31 23:59:59.999999");
        assert_eq!(
            text(Value::TimestampTz(1_704_067_200_123_456)),
            "2024-01-01 00:00:00.123456+00"
        );
        let bc = -719_163 * MICROS_PER_DAY + 3_600 * MICROS_PER_SECOND;
        assert_eq!(text(Value::Timestamp(bc)), "0001-12-31 01:00:00.000000 BC");
        assert_eq!(
            text(Value::TimestampTz(bc)),
            "0001-12-31 01:00:00.000000+00 BC"
        );
        assert_eq!(text(Value::Timestamp(i64::MIN)), "-infinity");
        assert_eq!(text(Value::TimestampTz(i64::MAX)), "infinity");
    }

    #[test]
    fn civil_dates_agree_with_a_day_by_day_walk() {
        let (mut y, mut m, mut d) = (1970_i64, 1_u32, 1_u32);
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn intervals_carry_explicit_signs() {
        let iv = |months, days, micros| {
            Value::Interval(Interval {
                months,
                days,
                micros,
            })
        };
        assert_eq!(text(iv(1, 2, 3)), "+1 mons +2 days +3 microseconds");
        assert_eq!(text(iv(-1, 0, -3)), "-1 mons +0 days -3 microseconds");
        assert_eq!(
            text(iv(i32::MIN, i32::MIN, i64::MIN)),
            "-2147483648 mons -2147483648 days -9223372036854775808 microseconds"
        );
    }

    #[test]
    fn uuids_are_hyphenated() {
        let bytes = [
            0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44,
            0x00, 0x00,
        ];
        assert_eq!(
            text(Value::Uuid(bytes)),
            "550e8400-e29b-41d4-a716-446655440000"
        );
    }

    #[test]
    fn arrays_quote_and_escape_every_element() {
        assert_eq!(text(Value::Array(vec![])), "{}");
        assert_eq!(
            text(Value::Array(vec![
                Value::Int32(1),
                Value::Null,
                Value::Int32(-2)
            ])),
            "{\"1\",NULL,\"-2\"}"
        );
        assert_eq!(
            text(Value::Array(vec![
                Value::Text("a\"b".into()),
                Value::Text("c\\d".into()),
                Value::Text("NULL".into()),
                Value::Text("".into()),
                Value::Text("x,y {z}".into()),
            ])),
            r#"{"a\"b","c\\d","NULL","","x,y {z}"}"#
        );
        assert_eq!(
            text(Value::Array(vec![Value::Bytes(vec![1, 2])])),
            r#"{"\\x0102"}"#
        );
        assert_eq!(
            text(Value::Array(vec![
                Value::Array(vec![Value::Int16(1), Value::Int16(2)]),
                Value::Array(vec![Value::Int16(3), Value::Null]),
            ])),
            "{{\"1\",\"2\"},{\"3\",NULL}}"
        );
    }
}
