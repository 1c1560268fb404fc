//! MySQL/MariaDB column types and values.
//!
//! | MySQL / MariaDB | Tributary type | notes |
//! |---|---|---|
//! | tinyint, smallint (signed) | int16 | tinyint unsigned also int16 |
//! | smallint unsigned, mediumint, int | int32 | |
//! | int unsigned, bigint | int64 | |
//! | bigint unsigned | numeric(20,0) | every u64 without loss |
//! | decimal(p,s) | numeric(p,s) | exact |
//! | float, double | float32, float64 | |
//! | bit(1) / bit(n) | bool / bytes | bit(n) big-endian, ⌈n/8⌉ bytes |
//! | char, varchar, *text | text | decoded from the column's charset |
//! | binary, varbinary, *blob | bytes | |
//! | date | date | |
//! | time | interval | MySQL's TIME spans -838:59:59..838:59:59 |
//! | datetime | timestamp | fractional seconds kept |
//! | timestamp | timestamptz | UTC |
//! | year | int16 | |
//! | enum | enum | the label |
//! | set | text | members joined by `,` |
//! | json (MySQL), json (MariaDB, a checked longtext) | json | |
//!
//! Zero and partial dates (`0000-00-00`, `2024-00-10`, allowed when `sql_mode` lacks
//! `NO_ZERO_DATE`/`NO_ZERO_IN_DATE`) have no value in any other database: they become
//! NULL, with a warning naming the column the first time.

use crate::error::CaptureError;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value as MyValue;
use tributary_schemas::{ColumnType, Interval, Value};

/// How a column's values are read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Integer of `bits` width.
    Int {
        /// Width in bits.
        bits: u32,
        /// Whether declared unsigned.
        unsigned: bool,
    },
    /// decimal(p, s).
    Decimal,
    /// float.
    Float,
    /// double.
    Double,
    /// bit(n).
    Bit {
        /// Width in bits.
        bits: u32,
    },
    /// Character data in `charset`.
    Text {
        /// MySQL character set name.
        charset: String,
    },
    /// Binary data.
    Binary,
    /// date.
    Date,
    /// time.
    Time,
    /// datetime.
    DateTime,
    /// timestamp.
    Timestamp,
    /// year.
    Year,
    /// enum with its labels.
    Enum {
        /// Labels in declaration order (index 1 first).
        labels: Vec<String>,
    },
    /// set with its members.
    Set {
        /// Members in declaration order (bit 0 first).
        members: Vec<String>,
    },
    /// json (binary in MySQL, text in MariaDB).
    Json,
}

/// A captured column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MyColumn {
    /// Column name.
    pub name: String,
    /// `COLUMN_TYPE`, e.g. `varchar(40)` or `int(10) unsigned`.
    pub column_type: String,
    /// How values are read.
    pub kind: Kind,
    /// Tributary's type.
    pub ty: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// The column's default when it is a constant, as text.
    pub default: Option<String>,
}

/// Describes a column from `information_schema.COLUMNS` fields; `Err` names what is
/// unsupported.
pub fn describe(
    name: &str,
    data_type: &str,
    column_type: &str,
    charset: Option<&str>,
    precision: Option<u64>,
    scale: Option<u64>,
    json_checked: bool,
) -> Result<(Kind, ColumnType), String> {
    let dt = data_type.to_ascii_lowercase();
    let ct = column_type.to_ascii_lowercase();
    let unsigned = ct.contains("unsigned");
    let int = |bits: u32| {
        let ty = match (bits, unsigned) {
            (8, _) | (16, false) => ColumnType::Int16,
            (16, true) | (24, _) | (32, false) => ColumnType::Int32,
            (32, true) | (64, false) => ColumnType::Int64,
            _ => ColumnType::Numeric {
                precision: Some(20),
                scale: Some(0),
            },
        };
        (Kind::Int { bits, unsigned }, ty)
    };
    let text_charset = || charset.unwrap_or("utf8mb4").to_ascii_lowercase();
    Ok(match dt.as_str() {
        "tinyint" => int(8),
        "smallint" => int(16),
        "mediumint" => int(24),
        "int" | "integer" => int(32),
        "bigint" => int(64),
        "decimal" | "numeric" => (
            Kind::Decimal,
            ColumnType::Numeric {
                precision: precision.map(|p| p as u32),
                scale: scale.map(|s| s as u32),
            },
        ),
        "float" => (Kind::Float, ColumnType::Float32),
        "double" | "real" => (Kind::Double, ColumnType::Float64),
        "bit" => {
            let bits = precision.unwrap_or(1) as u32;
            let ty = if bits == 1 {
                ColumnType::Bool
            } else {
                ColumnType::Bytes
            };
            (Kind::Bit { bits }, ty)
        }
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            if json_checked {
                (Kind::Json, ColumnType::Json { binary: false })
            } else {
                let charset = text_charset();
                if charset == "binary" {
                    (Kind::Binary, ColumnType::Bytes)
                } else {
                    decoder(&charset).ok_or_else(|| {
                        format!("column {name}: character set {charset} is not supported")
                    })?;
                    (Kind::Text { charset }, ColumnType::Text)
                }
            }
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            (Kind::Binary, ColumnType::Bytes)
        }
        "date" => (Kind::Date, ColumnType::Date),
        "time" => (Kind::Time, ColumnType::Interval),
        "datetime" => (Kind::DateTime, ColumnType::Timestamp),
        "timestamp" => (Kind::Timestamp, ColumnType::TimestampTz),
        "year" => (Kind::Year, ColumnType::Int16),
        "enum" => (
            Kind::Enum {
                labels: quoted_list(column_type),
            },
            ColumnType::Enum {
                name: column_type.to_string(),
            },
        ),
        "set" => (
            Kind::Set {
                members: quoted_list(column_type),
            },
            ColumnType::Text,
        ),
        "json" => (Kind::Json, ColumnType::Json { binary: false }),
        other => {
            return Err(format!(
                "column {name}: type {other} ({column_type}) is not supported; leave the table out with exclude = [...]"
            ))
        }
    })
}

/// The labels of `enum('a','b''c')` / `set(...)`.
fn quoted_list(column_type: &str) -> Vec<String> {
    let Some(inner) = column_type
        .find('(')
        .and_then(|i| column_type.rfind(')').map(|j| &column_type[i + 1..j]))
    else {
        return Vec::new();
    };
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    label.push('\'');
                } else {
                    break;
                }
            } else if c == '\\' {
                if let Some(n) = chars.next() {
                    label.push(n);
                }
            } else {
                label.push(c);
            }
        }
        labels.push(label);
    }
    labels
}

/// The decoder of a MySQL character set.
fn decoder(charset: &str) -> Option<&'static encoding_rs::Encoding> {
    if is_utf8(charset) {
        return Some(encoding_rs::UTF_8);
    }
    let label = match charset {
        "latin1" | "cp1252" => "windows-1252",
        "latin2" => "iso-8859-2",
        "latin5" => "windows-1254",
        "latin7" => "iso-8859-13",
        "greek" => "iso-8859-7",
        "hebrew" => "iso-8859-8",
        "cp1250" => "windows-1250",
        "cp1251" => "windows-1251",
        "cp1256" => "windows-1256",
        "cp1257" => "windows-1257",
        "koi8r" => "koi8-r",
        "koi8u" => "koi8-u",
        "sjis" | "cp932" => "shift_jis",
        "ujis" | "eucjpms" => "euc-jp",
        "euckr" => "euc-kr",
        "gbk" | "gb2312" => "gbk",
        "gb18030" => "gb18030",
        "big5" => "big5",
        "ucs2" | "utf16" => "utf-16be",
        "utf16le" => "utf-16le",
        _ => return None,
    };
    encoding_rs::Encoding::for_label(label.as_bytes())
}

fn decode_text(charset: &str, bytes: &[u8]) -> Result<String, String> {
    let enc =
        decoder(charset).ok_or_else(|| format!("character set {charset} is not supported"))?;
    let (text, had_errors) = enc.decode_without_bom_handling(bytes);
    if had_errors {
        return Err(format!("bytes that are not valid {charset}"));
    }
    Ok(text.into_owned())
}

/// Days from 1970-01-01 to the civil date `y-m-d` (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` into `(days, micros of day)`; `None` for zero
/// or partial dates.
fn parse_datetime_text(s: &str) -> Result<Option<(i64, i64)>, String> {
    let bad = || format!("unreadable date/time {s:?}");
    let (date, time) = s.split_once(' ').unwrap_or((s, ""));
    let mut parts = date.split('-');
    let y: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let m: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let d: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    if m == 0 || d == 0 {
        return Ok(None);
    }
    let micros = if time.is_empty() {
        0
    } else {
        parse_time_text(time)?.1
    };
    Ok(Some((days_from_civil(y, m, d), micros)))
}

/// Parses `[-]H+:MM:SS[.ffffff]` into `(negative, micros)`.
fn parse_time_text(s: &str) -> Result<(bool, i64), String> {
    let bad = || format!("unreadable time {s:?}");
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let h: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let m: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let sec: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let mut us: i64 = 0;
    if !frac.is_empty() {
        let digits = &frac[..frac.len().min(6)];
        us = digits.parse().map_err(|_| bad())?;
        us *= 10i64.pow(6 - digits.len() as u32);
    }
    Ok((neg, ((h * 60 + m) * 60 + sec) * 1_000_000 + us))
}

fn interval(negative: bool, micros: i64) -> Value {
    Value::Interval(Interval {
        months: 0,
        days: 0,
        micros: if negative { -micros } else { micros },
    })
}

fn bit_value(kind_bits: u32, bytes: &[u8]) -> Value {
    if kind_bits == 1 {
        Value::Bool(bytes.iter().any(|b| *b != 0))
    } else {
        Value::Bytes(bytes.to_vec())
    }
}

fn set_value(members: &[String], mask: u64) -> Value {
    let chosen: Vec<&str> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 64 && mask & (1u64 << i) != 0)
        .map(|(_, m)| m.as_str())
        .collect();
    Value::Text(chosen.join(","))
}

/// An integer of a column of `bits` width (declared `unsigned` or not) as Tributary's value.
pub fn int_value(bits: u32, unsigned: bool, v: i128) -> Result<Value, String> {
    // Without signedness metadata the binlog hands unsigned values over as signed ones of
    // the column's width: reinterpret them.
    let v = if unsigned && v < 0 {
        v + (1i128 << bits)
    } else if !unsigned && bits == 24 && v >= 1 << 23 {
        // mysql_common 0.37 reads a signed MEDIUMINT without sign extension.
        v - (1 << 24)
    } else {
        v
    };
    let out_of_range = || format!("integer {v} out of range");
    Ok(match (bits, unsigned) {
        (8, _) | (16, false) => Value::Int16(i16::try_from(v).map_err(|_| out_of_range())?),
        (16, true) | (24, _) | (32, false) => {
            Value::Int32(i32::try_from(v).map_err(|_| out_of_range())?)
        }
        (32, true) | (64, false) => Value::Int64(i64::try_from(v).map_err(|_| out_of_range())?),
        _ => Value::Numeric(v.to_string()),
    })
}

/// Text of a column in `charset` from its bytes.
pub fn text_value(charset: &str, bytes: Vec<u8>) -> Result<Value, String> {
    text_value_in(is_utf8(charset), charset, bytes)
}

/// Text of a column in `charset` from its bytes, `utf8` telling whether `charset` is one
/// of the UTF-8 ones (see [`is_utf8`]), as a caller may have found once per column.
pub fn text_value_in(utf8: bool, charset: &str, bytes: Vec<u8>) -> Result<Value, String> {
    // ASCII reads the same in every supported charset but the UTF-16 ones.
    Ok(Value::Text(
        if utf8 || (bytes.is_ascii() && !matches!(charset, "ucs2" | "utf16" | "utf16le")) {
            String::from_utf8(bytes).map_err(|_| format!("bytes that are not valid {charset}"))?
        } else {
            decode_text(charset, &bytes)?
        },
    ))
}

/// Converts a value read over the text protocol (the snapshot, in a utf8mb4 session);
/// `None` is NULL.
pub fn from_text(col: &MyColumn, raw: Option<&[u8]>) -> Result<Value, String> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    let text = || std::str::from_utf8(raw).map_err(|_| "not UTF-8 text".to_string());
    Ok(match &col.kind {
        Kind::Int { bits, unsigned } => {
            let v: i128 = text()?
                .parse()
                .map_err(|_| format!("unreadable integer {raw:?}"))?;
            int_value(*bits, *unsigned, v)?
        }
        Kind::Decimal => Value::Numeric(text()?.to_string()),
        Kind::Float => Value::Float32(text()?.parse().map_err(|_| "unreadable float")?),
        Kind::Double => Value::Float64(text()?.parse().map_err(|_| "unreadable double")?),
        Kind::Bit { bits } => bit_value(*bits, raw),
        // The server converts text results to the session's character set (utf8mb4).
        Kind::Text { .. } => Value::Text(text()?.to_string()),
        Kind::Binary => Value::Bytes(raw.to_vec()),
        Kind::Date => match parse_datetime_text(text()?)? {
            Some((days, _)) => Value::Date(i32::try_from(days).map_err(|_| "date out of range")?),
            None => Value::Null,
        },
        Kind::Time => {
            let (neg, us) = parse_time_text(text()?)?;
            interval(neg, us)
        }
        Kind::DateTime => match parse_datetime_text(text()?)? {
            Some((days, us)) => Value::Timestamp(days * 86_400_000_000 + us),
            None => Value::Null,
        },
        // The snapshot session runs with time_zone = '+00:00'.
        Kind::Timestamp => match parse_datetime_text(text()?)? {
            Some((days, us)) => Value::TimestampTz(days * 86_400_000_000 + us),
            None => Value::Null,
        },
        Kind::Year => Value::Int16(text()?.parse().map_err(|_| "unreadable year")?),
        Kind::Enum { .. } => Value::Enum(text()?.to_string()),
        Kind::Set { .. } => Value::Text(text()?.to_string()),
        Kind::Json => Value::Json(text()?.to_string()),
    })
}

/// Converts a value decoded from a binlog rows event (taking its bytes without copying).
pub fn from_binlog(col: &MyColumn, value: BinlogValue<'_>) -> Result<Value, String> {
    let v = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            let json =
                serde_json::Value::try_from(j).map_err(|e| format!("unreadable JSON: {e}"))?;
            return Ok(Value::Json(json.to_string()));
        }
        BinlogValue::JsonDiff(_) => {
            return Err(
                "partial JSON update (binlog_row_value_options=PARTIAL_JSON): set binlog_row_value_options to ''".into(),
            )
        }
    };
    let unreadable = |what: &str| format!("unreadable {what} for {}", col.column_type);
    Ok(match (&col.kind, v) {
        (_, MyValue::NULL) => Value::Null,
        (Kind::Int { bits, unsigned }, MyValue::Int(i)) => {
            int_value(*bits, *unsigned, i128::from(i))?
        }
        (Kind::Int { bits, unsigned }, MyValue::UInt(u)) => {
            int_value(*bits, *unsigned, i128::from(u))?
        }
        (Kind::Decimal, MyValue::Bytes(b)) => {
            Value::Numeric(String::from_utf8(b).map_err(|_| unreadable("decimal"))?)
        }
        (Kind::Float, MyValue::Float(f)) => Value::Float32(f),
        (Kind::Float, MyValue::Double(f)) => Value::Float32(f as f32),
        (Kind::Double, MyValue::Double(f)) => Value::Float64(f),
        (Kind::Double, MyValue::Float(f)) => Value::Float64(f64::from(f)),
        (Kind::Bit { bits }, MyValue::Bytes(b)) => bit_value(*bits, &b),
        (Kind::Text { charset }, MyValue::Bytes(b)) => text_value(charset, b)?,
        (Kind::Json, MyValue::Bytes(b)) => {
            Value::Json(String::from_utf8(b).map_err(|_| "JSON text is not UTF-8")?)
        }
        (Kind::Binary, MyValue::Bytes(b)) => Value::Bytes(b),
        (Kind::Date, MyValue::Date(y, m, d, ..)) => {
            if m == 0 || d == 0 {
                Value::Null
            } else {
                let days = days_from_civil(i64::from(y), u32::from(m), u32::from(d));
                Value::Date(i32::try_from(days).map_err(|_| unreadable("date"))?)
            }
        }
        (Kind::DateTime, MyValue::Date(y, m, d, h, mi, s, us)) => {
            if m == 0 || d == 0 {
                Value::Null
            } else {
                let days = days_from_civil(i64::from(y), u32::from(m), u32::from(d));
                let tod = (i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)) * 1_000_000
                    + i64::from(us);
                Value::Timestamp(days * 86_400_000_000 + tod)
            }
        }
        // TIMESTAMP2 arrives as "seconds[.micros]" since the epoch (UTC); 0 is the zero value.
        (Kind::Timestamp, MyValue::Bytes(b)) => {
            let s = std::str::from_utf8(&b).map_err(|_| unreadable("timestamp"))?;
            let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
            let sec: i64 = sec.parse().map_err(|_| unreadable("timestamp"))?;
            let us: i64 = frac.parse().map_err(|_| unreadable("timestamp"))?;
            if sec == 0 && us == 0 {
                Value::Null
            } else {
                Value::TimestampTz(sec * 1_000_000 + us)
            }
        }
        (Kind::Timestamp, MyValue::Int(sec)) => {
            if sec == 0 {
                Value::Null
            } else {
                Value::TimestampTz(sec * 1_000_000)
            }
        }
        (Kind::Time, MyValue::Time(neg, days, h, m, s, us)) => {
            let micros =
                ((i64::from(days) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s))
                    * 1_000_000
                    + i64::from(us);
            interval(neg, micros)
        }
        (Kind::Year, MyValue::Bytes(b)) => {
            let y: i16 = std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unreadable("year"))?;
            // Year 0 is stored as 0 and decoded as 1900 + 0.
            Value::Int16(if y == 1900 { 0 } else { y })
        }
        (Kind::Year, MyValue::Int(y)) => Value::Int16(y as i16),
        (Kind::Enum { labels }, MyValue::Int(i)) => match usize::try_from(i) {
            // Index 0 is the empty string MySQL stores for an invalid value.
            Ok(0) => Value::Enum(String::new()),
            Ok(n) if n <= labels.len() => Value::Enum(labels[n - 1].clone()),
            _ => {
                return Err(format!(
                    "enum index {i} beyond the labels of {}",
                    col.column_type
                ))
            }
        },
        (Kind::Set { members }, MyValue::Bytes(b)) => {
            let mut mask = 0u64;
            for (i, byte) in b.iter().take(8).enumerate() {
                mask |= u64::from(*byte) << (8 * i);
            }
            set_value(members, mask)
        }
        (_, v) => {
            return Err(format!(
                "unexpected binlog value {v:?} for {}",
                col.column_type
            ))
        }
    })
}

/// Whether text in `charset` is UTF-8 as it is.
/// Whether text in `charset` is UTF-8 (ASCII is a subset).
pub fn is_utf8(charset: &str) -> bool {
    matches!(charset, "utf8" | "utf8mb3" | "utf8mb4" | "ascii")
}

/// Converts an error message about column `col` into a capture error.
pub fn value_error(table: &str, col: &MyColumn, message: String) -> CaptureError {
    CaptureError::Decode(format!("{table}.{}: {message}", col.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: &str, column_type: &str) -> MyColumn {
        let (kind, ty) = describe(
            "c",
            data_type,
            column_type,
            Some("utf8mb4"),
            Some(10),
            Some(2),
            false,
        )
        .unwrap();
        MyColumn {
            name: "c".into(),
            column_type: column_type.into(),
            kind,
            ty,
            nullable: true,
            default: None,
        }
    }

    #[test]
    fn unsigned_integers_keep_their_value() {
        let c = col("bigint", "bigint(20) unsigned");
        assert_eq!(
            c.ty,
            ColumnType::Numeric {
                precision: Some(20),
                scale: Some(0)
            }
        );
        assert_eq!(
            from_binlog(&c, BinlogValue::Value(MyValue::Int(-1))).unwrap(),
            Value::Numeric(u64::MAX.to_string())
        );
        assert_eq!(
            from_text(&c, Some(b"18446744073709551615")).unwrap(),
            Value::Numeric(u64::MAX.to_string())
        );
        let c = col("tinyint", "tinyint(3) unsigned");
        assert_eq!(
            from_binlog(&c, BinlogValue::Value(MyValue::Int(-1))).unwrap(),
            Value::Int16(255)
        );
        let c = col("int", "int(10) unsigned");
        assert_eq!(
            from_binlog(&c, BinlogValue::Value(MyValue::Int(-2))).unwrap(),
            Value::Int64(4_294_967_294)
        );
    }

    #[test]
    fn dates_times_and_zero_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let d = col("date", "date");
        assert_eq!(from_text(&d, Some(b"0000-00-00")).unwrap(), Value::Null);
        assert_eq!(from_text(&d, Some(b"2024-00-10")).unwrap(), Value::Null);
        assert_eq!(from_text(&d, Some(b"1970-01-02")).unwrap(), Value::Date(1));
        let t = col("time", "time(3)");
        assert_eq!(
            from_text(&t, Some(b"-838:59:59.500")).unwrap(),
            Value::Interval(Interval {
                months: 0,
                days: 0,
                micros: -(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 500_000
            })
        );
        let ts = col("timestamp", "timestamp(6)");
        assert_eq!(
            from_binlog(
                &ts,
                BinlogValue::Value(MyValue::Bytes(b"1.000250".to_vec()))
            )
            .unwrap(),
            Value::TimestampTz(1_000_250)
        );
        assert_eq!(
            from_text(&ts, Some(b"1970-01-01 00:00:01.000250")).unwrap(),
            Value::TimestampTz(1_000_250)
        );
    }

    #[test]
    fn enums_sets_bits_and_charsets() {
        let e = col("enum", "enum('a','it''s')");
        assert_eq!(
            from_binlog(&e, BinlogValue::Value(MyValue::Int(2))).unwrap(),
            Value::Enum("it's".into())
        );
        let s = col("set", "set('x','y','z')");
        assert_eq!(
            from_binlog(&s, BinlogValue::Value(MyValue::Bytes(vec![0b101]))).unwrap(),
            Value::Text("x,z".into())
        );
        let (kind, ty) = describe("c", "bit", "bit(1)", None, Some(1), None, false).unwrap();
        assert_eq!(ty, ColumnType::Bool);
        let b = MyColumn {
            name: "c".into(),
            column_type: "bit(1)".into(),
            kind,
            ty,
            nullable: true,
            default: None,
        };
        assert_eq!(from_text(&b, Some(&[1])).unwrap(), Value::Bool(true));
        let (kind, _) = describe(
            "c",
            "varchar",
            "varchar(5)",
            Some("latin1"),
            None,
            None,
            false,
        )
        .unwrap();
        let l = MyColumn {
            name: "c".into(),
            column_type: "varchar(5)".into(),
            kind,
            ty: ColumnType::Text,
            nullable: true,
            default: None,
        };
        assert_eq!(
            from_binlog(
                &l,
                BinlogValue::Value(MyValue::Bytes(vec![0x63, 0x61, 0x66, 0xe9]))
            )
            .unwrap(),
            Value::Text("café".into())
        );
        assert!(
            describe("c", "geometry", "geometry", None, None, None, false)
                .unwrap_err()
                .contains("not supported")
        );
    }
}
