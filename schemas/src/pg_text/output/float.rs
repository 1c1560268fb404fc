//! Text forms of `float4` and `float8`.
//!
//! With `extra_float_digits` above zero PostgreSQL (12 and later) prints a float with
//! Ryu: the fewest significant digits of a decimal lying strictly inside the float's
//! rounding interval (bounds excluded, which sometimes costs a digit), and of those the
//! one nearest the float, ties going to the even digit. It lays them out in fixed notation
//! for decimal exponents from -4 up to 14 (float8) or 5 (float4), otherwise as `1.5e+20`
//! (two exponent digits at least).
//!
//! Rust's `{:e}` gives the fewest digits too, but accepts a decimal on an interval bound
//! and breaks ties away from zero. So we start at Rust's length and take, length by
//! length, Rust's correctly rounded digits, move exact ties to the even digit, and keep
//! the first candidate that reads back to the float and is not exactly on a bound. All
//! equality tests against the float are exact (integer arithmetic on odd parts and
//! powers of two), so the output is byte for byte PostgreSQL's.

use super::Fault;
use std::fmt::LowerExp;
use std::str::FromStr;

/// What the formatting needs to know of a float type.
trait PgFloat: Copy + PartialEq + LowerExp + FromStr {
    /// Most significant digits ever needed to read back.
    const MAX_DIGITS: usize;
    /// Decimal exponents below this (and from -4) print in fixed notation.
    const FIXED_BELOW: i32;
    /// A finite, non-negative value as `mantissa * 2^exp2`, and whether the gap to the
    /// next float below is half the gap above (at a power of two).
    fn dyadic(self) -> (u64, i32, bool);
}

impl PgFloat for f64 {
    const MAX_DIGITS: usize = 17;
    const FIXED_BELOW: i32 = 15;

    fn dyadic(self) -> (u64, i32, bool) {
        let bits = self.to_bits();
        let (exp_bits, fraction) = ((bits >> 52) & 0x7ff, bits & ((1 << 52) - 1));
        match exp_bits {
            0 => (fraction, -1074, false),
            _ => (
                fraction | (1 << 52),
                exp_bits as i32 - 1075,
                fraction == 0 && exp_bits > 1,
            ),
        }
    }
}

impl PgFloat for f32 {
    const MAX_DIGITS: usize = 9;
    const FIXED_BELOW: i32 = 6;

    fn dyadic(self) -> (u64, i32, bool) {
        let bits = self.to_bits();
        let (exp_bits, fraction) = ((bits >> 23) & 0xff, bits & ((1 << 23) - 1));
        match exp_bits {
            0 => (u64::from(fraction), -149, false),
            _ => (
                u64::from(fraction | (1 << 23)),
                exp_bits as i32 - 150,
                fraction == 0 && exp_bits > 1,
            ),
        }
    }
}

/// Parses a float4 (`NaN`, `Infinity`, `-Infinity` or a decimal).
pub(super) fn parse_f32(text: &str) -> Result<f32, Fault> {
    match special(text) {
        Some(f) => Ok(f as f32),
        None => finite(text, text.parse::<f32>(), f32::is_finite),
    }
}

/// Parses a float8 (`NaN`, `Infinity`, `-Infinity` or a decimal).
pub(super) fn parse_f64(text: &str) -> Result<f64, Fault> {
    match special(text) {
        Some(f) => Ok(f),
        None => finite(text, text.parse::<f64>(), f64::is_finite),
    }
}

/// The special values PostgreSQL prints.
fn special(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The result of Rust's float parsing of a decimal `text`, refusing the words Rust
/// accepts but PostgreSQL does not print (`inf`, `nan`) and decimals out of range.
fn finite<F: Copy>(
    text: &str,
    parsed: Result<F, std::num::ParseFloatError>,
    is_finite: fn(F) -> bool,
) -> Result<F, Fault> {
    if text
        .bytes()
        .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
    {
        return Err(Fault::invalid("not a number"));
    }
    match parsed {
        Ok(f) if is_finite(f) => Ok(f),
        Ok(_) => Err(Fault::invalid("out of range")),
        Err(e) => Err(Fault::invalid(e.to_string())),
    }
}

/// Formats a float8 as PostgreSQL does.
pub(super) fn format_f64(f: f64) -> String {
    match f {
        f if f.is_nan() => "NaN".into(),
        f64::INFINITY => "Infinity".into(),
        f64::NEG_INFINITY => "-Infinity".into(),
        f => layout(f.is_sign_negative(), &shortest(f.abs()), f64::FIXED_BELOW),
    }
}

/// Formats a float4 as PostgreSQL does.
pub(super) fn format_f32(f: f32) -> String {
    match f {
        f if f.is_nan() => "NaN".into(),
        f32::INFINITY => "Infinity".into(),
        f32::NEG_INFINITY => "-Infinity".into(),
        f => layout(f.is_sign_negative(), &shortest(f.abs()), f32::FIXED_BELOW),
    }
}

/// A decimal `digits * 10^(exp10 + 1 - digits.len())`: significant digits without
/// trailing zeros and the decimal exponent of the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    /// Significant digits.
    digits: String,
    /// Decimal exponent of the first digit.
    exp10: i32,
}

impl Decimal {
    /// Reads Rust's `{:e}` form of a non-negative number (`1.25e-7`).
    fn from_sci(sci: &str) -> Decimal {
        let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let trimmed = digits.trim_end_matches('0');
        Decimal {
            digits: if trimmed.is_empty() {
                "0".into()
            } else {
                trimmed.into()
            },
            exp10: exp.parse().unwrap_or(0),
        }
    }

    /// The digits as an integer and the power of ten that scales it.
    fn scaled(&self) -> Option<(u128, i32)> {
        Some((
            self.digits.parse().ok()?,
            self.exp10 + 1 - self.digits.len() as i32,
        ))
    }

    /// The `{:e}` text of the decimal.
    fn sci(&self) -> String {
        match self.digits.split_at(1) {
            (first, "") => format!("{first}e{}", self.exp10),
            (first, rest) => format!("{first}.{rest}e{}", self.exp10),
        }
    }
}

/// Whether `m * 2^e2 == n * 10^k`, exactly.
fn equals(m: u128, e2: i32, n: u128, k: i32) -> bool {
    if m == 0 || n == 0 {
        return m == n;
    }
    let (tm, tn) = (m.trailing_zeros() as i32, n.trailing_zeros() as i32);
    let (om, on) = (m >> tm, n >> tn);
    if tm + e2 != tn + k {
        return false;
    }
    let Some(five_k) = 5_u128.checked_pow(k.unsigned_abs()) else {
        return false;
    };
    if k >= 0 {
        on.checked_mul(five_k) == Some(om)
    } else {
        om.checked_mul(five_k) == Some(on)
    }
}

/// Whether `decimal` is exactly on a bound of the rounding interval of `x`.
fn on_bound<F: PgFloat>(x: F, decimal: &Decimal) -> bool {
    let (mantissa, exp2, halved_below) = x.dyadic();
    let Some((n, k)) = decimal.scaled() else {
        return false;
    };
    let m = u128::from(mantissa);
    let lower = if halved_below {
        equals(4 * m - 1, exp2 - 2, n, k)
    } else {
        m > 0 && equals(2 * m - 1, exp2 - 1, n, k)
    };
    lower || equals(2 * m + 1, exp2 - 1, n, k)
}

/// The even neighbour of `decimal` when `x` lies exactly halfway between them.
fn half_even<F: PgFloat>(x: F, decimal: Decimal) -> Decimal {
    let last = decimal.digits.bytes().last().unwrap_or(b'0') - b'0';
    if last.is_multiple_of(2) {
        return decimal;
    }
    let stem = &decimal.digits[..decimal.digits.len() - 1];
    let (mantissa, exp2, _) = x.dyadic();
    let halfway = format!("{stem}{}5", last - 1).parse::<u128>();
    let k = decimal.exp10 - decimal.digits.len() as i32;
    match halfway {
        Ok(h) if equals(u128::from(mantissa), exp2, h, k) => {
            let lower = Decimal::from_sci(&format!("{stem}{}e0", last - 1));
            match lower.digits.as_str() {
                "0" => decimal,
                _ => Decimal {
                    digits: lower.digits,
                    exp10: decimal.exp10,
                },
            }
        }
        _ => decimal,
    }
}

/// PostgreSQL's shortest digits of a finite, non-negative `x`, in `{:e}` form.
fn shortest<F: PgFloat>(x: F) -> String {
    let rust = Decimal::from_sci(&format!("{x:e}"));
    if rust.digits == "0" {
        return rust.sci();
    }
    for length in rust.digits.len()..=F::MAX_DIGITS {
        let rounded = Decimal::from_sci(&format!("{:.*e}", length - 1, x));
        let candidate = half_even(x, rounded);
        if candidate.sci().parse::<F>().ok() == Some(x) && !on_bound(x, &candidate) {
            return candidate.sci();
        }
    }
    rust.sci()
}

/// Lays out the shortest digits in `{:e}` form (`1.25e-7`) in PostgreSQL's style, with a
/// minus when `negative`: fixed notation when `-4 <= exponent < fixed_below`, otherwise
/// `1.25e-07`.
fn layout(negative: bool, sci: &str, fixed_below: i32) -> String {
    let decimal = Decimal::from_sci(sci);
    let (digits, exp) = (decimal.digits.as_str(), decimal.exp10);
    let mut out = String::from(if negative { "-" } else { "" });
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        out.push_str(&format!("e{sign}{:02}", exp.unsigned_abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_laid_out_like_postgres() {
        // What PostgreSQL 15 prints with extra_float_digits=3.
        let f8 = [
            (1.5, "1.5"),
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (123_456_789_012_345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e-7, "1e-07"),
            (0.0, "0"),
            (-0.0, "-0"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (f, text) in f8 {
            assert_eq!(format_f64(f), text);
            assert_eq!(parse_f64(text).unwrap().to_bits(), f.to_bits());
        }
        let f4 = [
            (123_456.0, "123456"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f32::MAX, "3.4028235e+38"),
            (0.1, "0.1"),
            (1e-45, "1e-45"),
            // Exactly halfway between -480819.62 and -480819.63: the even one wins.
            (-(480_819.0 + 5.0 / 8.0), "-480819.62"),
            // 1.1558818e+08 reads back, but lies exactly on the interval's bound.
            (115_588_176.0, "1.15588176e+08"),
        ];
        for (f, text) in f4 {
            assert_eq!(format_f32(f), text);
            assert_eq!(parse_f32(text).unwrap().to_bits(), f.to_bits());
        }
        assert!(parse_f64("NaN").unwrap().is_nan());
        assert!(parse_f32("NaN").unwrap().is_nan());
        assert_eq!(parse_f32("-Infinity").unwrap(), f32::NEG_INFINITY);
    }

    #[test]
    fn exact_comparison() {
        assert!(equals(3, -1, 15, -1)); // 1.5 == 15e-1
        assert!(equals(1, 10, 1024, 0));
        assert!(!equals(1, -1, 49, -2));
        assert!(equals(0, 5, 0, -3));
        assert!(!equals(1, -1074, 5, -324));
    }

    #[test]
    fn bad_floats_are_refused() {
        for text in ["", "inf", "nan", "1.2.3", "x", "1e", "1e400"] {
            assert!(parse_f64(text).is_err(), "{text}");
            assert!(parse_f32(text).is_err(), "{text}");
        }
        assert!(parse_f32("1e39").is_err());
    }
}
