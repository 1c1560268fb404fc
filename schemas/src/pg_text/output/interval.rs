//! Text form of `interval` in `IntervalStyle=iso_8601`.
//!
//! PostgreSQL keeps an interval as months, days and microseconds and prints it as
//! `P<years>Y<months>M<days>DT<hours>H<minutes>M<seconds>S`, leaving out zero parts (and
//! `T` when the time is zero) and printing `PT0S` for the zero interval. Years and months
//! are the months split by truncating division, hours, minutes and seconds likewise the
//! microseconds, so every part carries the sign of the field it comes from:
//! `P-1Y-2M3DT-4H`, `PT-0.5S`. PostgreSQL 17's infinite intervals print as
//! `infinity`/`-infinity` and are kept as all-`MAX`/all-`MIN` fields, their internal form.

use super::datetime::write_fraction;
use super::Fault;
use crate::Interval;
use std::fmt::Write as _;

/// PostgreSQL 17's `infinity` interval.
const INFINITY: Interval = Interval {
    months: i32::MAX,
    days: i32::MAX,
    micros: i64::MAX,
};

/// PostgreSQL 17's `-infinity` interval.
const NEG_INFINITY: Interval = Interval {
    months: i32::MIN,
    days: i32::MIN,
    micros: i64::MIN,
};

/// Microseconds in an hour.
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Microseconds in a minute.
const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Formats an interval in ISO 8601 style, exactly as PostgreSQL does.
pub(super) fn format_interval(interval: &Interval) -> String {
    match *interval {
        INFINITY => return "infinity".into(),
        NEG_INFINITY => return "-infinity".into(),
        Interval {
            months: 0,
            days: 0,
            micros: 0,
        } => return "PT0S".into(),
        _ => {}
    }
    let mut out = String::from("P");
    part(&mut out, i64::from(interval.months / 12), 'Y');
    part(&mut out, i64::from(interval.months % 12), 'M');
    part(&mut out, i64::from(interval.days), 'D');
    let micros = interval.micros;
    if micros != 0 {
        out.push('T');
        part(&mut out, micros / MICROS_PER_HOUR, 'H');
        part(&mut out, micros % MICROS_PER_HOUR / MICROS_PER_MINUTE, 'M');
        let seconds = micros % MICROS_PER_MINUTE;
        if seconds != 0 {
            if seconds < 0 {
                out.push('-');
            }
            let _ = write!(out, "{}", (seconds / 1_000_000).unsigned_abs());
            write_fraction(&mut out, seconds % 1_000_000);
            out.push('S');
        }
    }
    out
}

/// Writes `<n><unit>` unless `n` is zero.
fn part(out: &mut String, n: i64, unit: char) {
    if n != 0 {
        let _ = write!(out, "{n}{unit}");
    }
}

/// Parses an ISO 8601 interval as PostgreSQL prints it (weeks, `W`, are read too).
pub(super) fn parse_interval(text: &str) -> Result<Interval, Fault> {
    match text {
        "infinity" => return Ok(INFINITY),
        "-infinity" => return Ok(NEG_INFINITY),
        _ => {}
    }
    let Some(rest) = text.strip_prefix('P') else {
        return Err(Fault::invalid(
            "expected an ISO 8601 interval such as P1DT2H (IntervalStyle=iso_8601)",
        ));
    };
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    if (date.is_empty() && time.is_none()) || time == Some("") {
        return Err(Fault::invalid("no interval parts"));
    }
    let (mut months, mut days, mut micros) = (0_i128, 0_i128, 0_i128);
    for (number, unit) in parts(date)? {
        let n = whole(number)?;
        match unit {
            'Y' => months += n * 12,
            'M' => months += n,
            'W' => days += n * 7,
            'D' => days += n,
            _ => return Err(Fault::invalid(format!("unknown date unit {unit:?}"))),
        }
    }
    for (number, unit) in parts(time.unwrap_or(""))? {
        match unit {
            'H' => micros += whole(number)? * i128::from(MICROS_PER_HOUR),
            'M' => micros += whole(number)? * i128::from(MICROS_PER_MINUTE),
            'S' => micros += seconds(number)?,
            _ => return Err(Fault::invalid(format!("unknown time unit {unit:?}"))),
        }
    }
    let out_of_range = |_| Fault::invalid("interval out of range");
    Ok(Interval {
        months: i32::try_from(months).map_err(out_of_range)?,
        days: i32::try_from(days).map_err(out_of_range)?,
        micros: i64::try_from(micros).map_err(out_of_range)?,
    })
}

/// Splits `1Y-2M3D` into `[("1", 'Y'), ("-2", 'M'), ("3", 'D')]`.
fn parts(mut text: &str) -> Result<Vec<(&str, char)>, Fault> {
    let mut out = Vec::new();
    while !text.is_empty() {
        let at = text
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| Fault::invalid(format!("{text:?} has no unit")))?;
        let unit = text[at..].chars().next().unwrap_or('?');
        out.push((&text[..at], unit));
        text = &text[at + 1..];
    }
    Ok(out)
}

/// Splits an optional sign off a number: (negative, digits).
fn sign(number: &str) -> (bool, &str) {
    match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    }
}

/// Parses a signed whole number of up to 20 digits.
fn whole(number: &str) -> Result<i128, Fault> {
    let (negative, digits) = sign(number);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::invalid(format!("bad number {number:?}")));
    }
    let n: i128 = digits
        .parse()
        .map_err(|_| Fault::invalid(format!("bad number {number:?}")))?;
    Ok(if negative { -n } else { n })
}

/// Parses signed seconds with up to six decimals into microseconds.
fn seconds(number: &str) -> Result<i128, Fault> {
    let (negative, unsigned) = sign(number);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::invalid(format!("bad seconds {number:?}")));
    }
    let frac: i128 = frac.parse::<i128>().unwrap_or(0) * 10_i128.pow(6 - frac.len() as u32);
    let micros = whole(int)? * 1_000_000 + frac;
    Ok(if negative { -micros } else { micros })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(months: i32, days: i32, micros: i64) -> Interval {
        Interval {
            months,
            days,
            micros,
        }
    }

    #[test]
    fn matches_postgres_output() {
        // What PostgreSQL 15 prints with IntervalStyle=iso_8601.
        let cases = [
            (iv(14, -3, 14_706_500_000), "P1Y2M-3DT4H5M6.5S"),
            (iv(0, 0, -1_500_000), "PT-1.5S"),
            (iv(0, 0, -500_000), "PT-0.5S"),
            (iv(0, 0, 0), "PT0S"),
            (iv(-14, 3, -4 * MICROS_PER_HOUR), "P-1Y-2M3DT-4H"),
            (iv(11, 0, 0), "P11M"),
            (iv(0, 7, 0), "P7D"),
            (
                iv(2_147_483_647, 2_147_483_647, i64::MAX - 1),
                "P178956970Y7M2147483647DT2562047788H54.775806S",
            ),
        ];
        for (interval, text) in cases {
            assert_eq!(format_interval(&interval), text);
            assert_eq!(parse_interval(text), Ok(interval), "{text}");
        }
    }

    #[test]
    fn extremes_and_infinities_round_trip() {
        for interval in [
            iv(i32::MIN, i32::MIN, i64::MIN + 1),
            iv(i32::MIN, 0, i64::MIN),
            INFINITY,
            NEG_INFINITY,
            iv(-1, 0, 1),
        ] {
            assert_eq!(parse_interval(&format_interval(&interval)), Ok(interval));
        }
        assert_eq!(format_interval(&INFINITY), "infinity");
        assert_eq!(parse_interval("P1W2D"), Ok(iv(0, 9, 0)));
    }

    #[test]
    fn bad_intervals_are_refused() {
        for bad in [
            "",
            "P",
            "PT",
            "1 day",
            "P1",
            "P1X",
            "PT1.5H",
            "PT1.S",
            "PT1.1234567S",
            "P99999999999Y",
            "P0.5Y",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
