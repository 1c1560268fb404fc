//! Text forms of `date`, `time`, `timestamp` and `timestamptz` in `DateStyle=ISO`.
//!
//! PostgreSQL prints `2024-01-31`, `13:45:00.5`, `2024-01-31 13:45:00.5` and, with
//! `TimeZone=UTC`, `2024-01-31 13:45:00.5+00`; years before 1 AD carry a ` BC` suffix
//! (`0044-03-15 13:45:00+00 BC`), years after 9999 simply have more digits, and
//! `infinity`/`-infinity` stand for the infinities.
//!
//! The calendar is the proleptic Gregorian one PostgreSQL uses. Its range (4713 BC to
//! 5874897 AD for dates) is far wider than chrono's, so the day arithmetic is done here
//! with Howard Hinnant's civil-date algorithms over `i64`. A timestamp after
//! 294247-01-10 04:00:54.775806 (PostgreSQL goes to 294276 AD) does not fit 64-bit
//! microseconds since 1970 and is refused as unsupported.

use super::Fault;
use std::fmt::Write as _;

/// Microseconds in a day.
pub(super) const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days from 1970-01-01 to the given proleptic Gregorian date (astronomical year: 0 is 1 BC).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date (astronomical year, month, day) `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400;
    (if month <= 2 { year + 1 } else { year }, month, day)
}

/// Whether `year` (astronomical) is a Gregorian leap year.
fn is_leap(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

/// Days in `month` of `year` (astronomical).
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Splits off a trailing ` BC`.
fn strip_era(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text.strip_suffix(" AD").unwrap_or(text), false),
    }
}

/// Parses an unsigned decimal field of at most `max_len` digits.
fn field(text: &str, max_len: usize, what: &str) -> Result<i64, Fault> {
    if text.is_empty() || text.len() > max_len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::invalid(format!("bad {what} {text:?}")));
    }
    text.parse()
        .map_err(|_| Fault::invalid(format!("bad {what} {text:?}")))
}

/// Parses `YYYY-MM-DD` (year 1 or later, BC when `bc`) into days since 1970-01-01.
fn parse_ymd(text: &str, bc: bool) -> Result<i64, Fault> {
    let mut parts = text.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Fault::invalid("expected YYYY-MM-DD"));
    };
    let year = field(y, 9, "year")?;
    let month = field(m, 2, "month")? as u32;
    let day = field(d, 2, "day")? as u32;
    if year == 0 {
        return Err(Fault::invalid("there is no year 0"));
    }
    let year = if bc { 1 - year } else { year };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(Fault::invalid("no such day"));
    }
    Ok(days_from_civil(year, month, day))
}

/// Parses `HH:MM:SS[.ffffff]` (up to `24:00:00`) into microseconds since midnight.
fn parse_clock(text: &str) -> Result<i64, Fault> {
    let mut parts = text.splitn(3, ':');
    let (Some(h), Some(m), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Fault::invalid("expected HH:MM:SS"));
    };
    let (s, frac) = match s.split_once('.') {
        Some((s, frac)) => (s, Some(frac)),
        None => (s, None),
    };
    let (hour, minute, second) = (
        field(h, 2, "hour")?,
        field(m, 2, "minute")?,
        field(s, 2, "second")?,
    );
    let micros = match frac {
        Some(f) => field(f, 6, "fraction of a second")? * 10_i64.pow(6 - f.len() as u32),
        None => 0,
    };
    let total = ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
    if hour > 24 || minute > 59 || second > 59 || total > MICROS_PER_DAY {
        return Err(Fault::invalid("no such time of day"));
    }
    Ok(total)
}

/// Parses a UTC offset `+HH`, `+HH:MM` or `+HH:MM:SS` into seconds east of Greenwich.
fn parse_offset(text: &str) -> Result<i64, Fault> {
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(Fault::invalid("expected a UTC offset such as +00")),
    };
    let mut seconds = 0;
    let mut count = 0;
    for (i, part) in rest.split(':').enumerate() {
        let value = field(part, 2, "UTC offset")?;
        if i > 2 || (i > 0 && value > 59) {
            return Err(Fault::invalid("bad UTC offset"));
        }
        seconds = seconds * 60 + value;
        count = i + 1;
    }
    Ok(sign * seconds * 60_i64.pow(3 - count as u32))
}

/// Writes the date `days` after 1970-01-01 as `YYYY-MM-DD`; returns whether it is BC.
fn write_date(out: &mut String, days: i64) -> bool {
    let (year, month, day) = civil_from_days(days);
    let (year, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    let _ = write!(out, "{year:04}-{month:02}-{day:02}");
    bc
}

/// Writes `micros` since midnight as `HH:MM:SS[.ffffff]` without trailing zeros.
fn write_clock(out: &mut String, micros: i64) {
    let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    write_fraction(out, fraction);
}

/// Writes `.ffffff` for a non-zero microsecond fraction, without trailing zeros.
pub(super) fn write_fraction(out: &mut String, fraction: i64) {
    if fraction != 0 {
        let digits = format!("{:06}", fraction.unsigned_abs());
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Parses a date into days since 1970-01-01 (`i32::MIN`/`i32::MAX` for the infinities).
pub(super) fn parse_date(text: &str) -> Result<i32, Fault> {
    match text {
        "infinity" => return Ok(i32::MAX),
        "-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let (body, bc) = strip_era(text);
    let days = parse_ymd(body, bc)?;
    match i32::try_from(days) {
        Ok(d) if d != i32::MIN && d != i32::MAX => Ok(d),
        _ => Err(Fault::invalid("date out of range")),
    }
}

/// Formats days since 1970-01-01 as a date.
pub(super) fn format_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        _ => {
            let mut out = String::with_capacity(13);
            if write_date(&mut out, i64::from(days)) {
                out.push_str(" BC");
            }
            out
        }
    }
}

/// Parses a time of day into microseconds since midnight.
pub(super) fn parse_time(text: &str) -> Result<i64, Fault> {
    parse_clock(text)
}

/// Formats microseconds since midnight as a time of day.
pub(super) fn format_time(micros: i64) -> String {
    let mut out = String::with_capacity(15);
    write_clock(&mut out, micros);
    out
}

/// Parses a timestamp (with a UTC offset when `zoned`) into microseconds since 1970
/// (UTC when zoned); `i64::MIN`/`i64::MAX` for the infinities.
pub(super) fn parse_timestamp(text: &str, zoned: bool) -> Result<i64, Fault> {
    match text {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let (body, bc) = strip_era(text);
    let Some((date, rest)) = body.split_once(' ') else {
        return Err(Fault::invalid("expected a date and a time"));
    };
    let days = parse_ymd(date, bc)?;
    let (clock, offset) = if zoned {
        let at = rest
            .find(['+', '-'])
            .ok_or_else(|| Fault::invalid("expected a UTC offset such as +00"))?;
        (&rest[..at], parse_offset(&rest[at..])?)
    } else {
        (rest, 0)
    };
    let micros = i128::from(days) * i128::from(MICROS_PER_DAY) + i128::from(parse_clock(clock)?)
        - i128::from(offset) * 1_000_000;
    match i64::try_from(micros) {
        Ok(m) if m != i64::MIN && m != i64::MAX => Ok(m),
        _ => Err(Fault::Unsupported(
            "microseconds since 1970 do not fit 64 bits (Tributary carries timestamps up to 294247-01-10)".into(),
        )),
    }
}

/// Formats microseconds since 1970 as a timestamp (in UTC with `+00` when `zoned`).
pub(super) fn format_timestamp(micros: i64, zoned: bool) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => {
            let mut out = String::with_capacity(32);
            let bc = write_date(&mut out, micros.div_euclid(MICROS_PER_DAY));
            out.push(' ');
            write_clock(&mut out, micros.rem_euclid(MICROS_PER_DAY));
            if zoned {
                out.push_str("+00");
            }
            if bc {
                out.push_str(" BC");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips_and_knows_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [
            -2_440_588,
            -719_528,
            -1,
            0,
            59,
            2_147_483_493 - 2_440_588,
            i64::from(i32::MAX) * 30,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn dates_at_the_edges_of_postgres_range() {
        // PostgreSQL's smallest and largest dates (Julian day 0 and 5874897-12-31).
        assert_eq!(parse_date("4714-11-24 BC"), Ok(-2_440_588));
        assert_eq!(format_date(-2_440_588), "4714-11-24 BC");
        let last = parse_date("5874897-12-31").unwrap();
        assert_eq!(format_date(last), "5874897-12-31");
        assert_eq!(parse_date("0001-01-01"), Ok(-719_162));
        assert_eq!(format_date(-719_163), "0001-12-31 BC");
        assert_eq!(
            parse_date("0044-03-15 BC").map(format_date),
            Ok("0044-03-15 BC".into())
        );
        assert_eq!(parse_date("2024-02-29"), Ok(19_782));
        assert_eq!(format_date(i32::MAX), "infinity");
    }

    #[test]
    fn bad_dates_are_refused() {
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "0000-01-01",
            "2024-1-1x",
            "2024/01/01",
            "",
            "infinite",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("00:00:00"), Ok(0));
        assert_eq!(parse_time("13:45:00.123456"), Ok(49_500_123_456));
        assert_eq!(parse_time("24:00:00"), Ok(MICROS_PER_DAY));
        assert_eq!(format_time(MICROS_PER_DAY), "24:00:00");
        assert_eq!(format_time(1_000_010), "00:00:01.00001");
        for bad in [
            "24:00:00.000001",
            "25:00:00",
            "12:60:00",
            "12:00",
            "12:00:00.1234567",
            "12:00:00.",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_with_offsets_and_eras() {
        let utc = parse_timestamp("2024-01-31 08:15:00.5+00", true).unwrap();
        assert_eq!(
            parse_timestamp("2024-01-31 13:45:00.5+05:30", true),
            Ok(utc)
        );
        assert_eq!(parse_timestamp("2024-01-31 03:15:00.5-05", true), Ok(utc));
        assert_eq!(
            parse_timestamp("1912-01-01 00:00:00+00:53:28", true)
                .map(|t| format_timestamp(t, true)),
            Ok("1911-12-31 23:06:32+00".into())
        );
        let bc = "0044-03-15 13:45:00+00 BC";
        assert_eq!(
            parse_timestamp(bc, true).map(|t| format_timestamp(t, true)),
            Ok(bc.into())
        );
        let bc = "4714-11-24 00:00:00 BC";
        assert_eq!(
            parse_timestamp(bc, false).map(|t| format_timestamp(t, false)),
            Ok(bc.into())
        );
        assert_eq!(format_timestamp(-1, false), "1969-12-31 23:59:59.999999");
        assert_eq!(parse_timestamp("-infinity", true), Ok(i64::MIN));
        assert!(parse_timestamp("2024-01-31 13:45:00", true).is_err());
        assert!(parse_timestamp("2024-01-31", false).is_err());
    }

    #[test]
    fn timestamps_past_64_bit_micros_are_unsupported() {
        let last = "294247-01-10 04:00:54.775806";
        assert_eq!(
            parse_timestamp(last, false).map(|t| format_timestamp(t, false)),
            Ok(last.into())
        );
        for beyond in [
            "294247-01-10 04:00:54.775807",
            "294276-12-31 23:59:59.999999",
        ] {
            assert!(
                matches!(parse_timestamp(beyond, false), Err(Fault::Unsupported(_))),
                "{beyond}"
            );
        }
    }
}
