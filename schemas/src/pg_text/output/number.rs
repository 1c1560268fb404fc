//! Text forms of booleans, integers and numerics.
//!
//! Integers are plain decimals. Numerics stay the exact text PostgreSQL printed (any
//! precision, trailing zeros kept: `-12.3400`), after checking that it is a number.

use super::Fault;
use std::str::FromStr;

/// Parses `t`/`f` (and the other spellings PostgreSQL accepts as input).
pub(super) fn parse_bool(text: &str) -> Result<bool, Fault> {
    match text.to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        _ => Err(Fault::invalid("expected t or f")),
    }
}

/// Parses a decimal integer that must fit the target type.
pub(super) fn parse_int<T: FromStr<Err = std::num::ParseIntError>>(text: &str) -> Result<T, Fault> {
    text.parse()
        .map_err(|e: std::num::ParseIntError| Fault::invalid(e.to_string()))
}

/// Checks that `text` is a numeric as PostgreSQL writes one: an optionally signed decimal
/// (an exponent is accepted too), `NaN`, `Infinity` or `-Infinity`.
pub(super) fn check_numeric(text: &str) -> Result<(), Fault> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(());
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = all_digits(int) && all_digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if mantissa_ok && exponent_ok {
        Ok(())
    } else {
        Err(Fault::invalid("not a decimal number, NaN or ±Infinity"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ints_are_refused() {
        assert!(parse_int::<i16>("32768").is_err());
        assert!(parse_int::<i32>(" 1").is_err());
        assert_eq!(parse_int::<i64>("-42"), Ok(-42));
    }

    #[test]
    fn numerics_are_validated() {
        for ok in [
            "0",
            "-12.3400",
            "1e5",
            ".5",
            "5.",
            "+1",
            "NaN",
            "Infinity",
            "-Infinity",
            "1.5E-3",
        ] {
            assert_eq!(check_numeric(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-", ".", "1..2", "1e", "abc", "nan", "1 ", "--1", "1e+-2",
        ] {
            assert!(check_numeric(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("t"), Ok(true));
        assert_eq!(parse_bool("FALSE"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }
}
