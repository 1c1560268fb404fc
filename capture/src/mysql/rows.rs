//! Row images of ROWS events, decoded with a per-table layout prepared once.
//!
//! mysql_common decodes each binlog value well, but its row iterator, for every row, parses
//! the TABLE_MAP's optional metadata again, finds each column's type metadata by walking
//! the list from the start, and builds named column descriptions: that was most of the
//! capture's time. Here the per-column context (type, metadata, signedness) is prepared
//! once per TABLE_MAP shape, the row framing (column bitmaps, NULL bitmaps) is read here,
//! and each value goes through mysql_common's value decoder, except the two commonest
//! kinds, which are read here directly: integers (fixed-width little-endian) and
//! VARCHAR/CHAR text behind a one- or two-byte length. Text takes the general path's
//! conversion (`types::text_value_in`); integers become the value types
//! `types::int_value` gives, which a unit test checks for every width, signedness and
//! edge.

use super::binlog_shape::MapShape;
use super::catalog::MyTable;
use super::types::{self, Kind};
use mysql_async::binlog::events::RowsEventData;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;
use tributary_schemas::{Row, Value};

/// How to read the values of one table's rows.
#[derive(Debug, Clone)]
pub struct RowLayout {
    columns: Vec<(ColumnType, Vec<u8>, bool)>,
    reads: Vec<Read>,
}

/// How one column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// A little-endian integer of `width` bytes (`unsigned` or not).
    Int { width: usize, unsigned: bool },
    /// Text behind a little-endian length of `len_bytes` bytes, in a UTF-8 charset or not.
    Text { len_bytes: usize, utf8: bool },
    /// Anything else: mysql_common's decoder, then `types::from_binlog`.
    General,
}

impl Read {
    /// The read for a column of binlog type `ty` with type metadata `meta`, of `kind`.
    fn plan(ty: ColumnType, meta: &[u8], kind: &Kind) -> Read {
        use ColumnType as T;
        match (ty, kind) {
            (
                T::MYSQL_TYPE_TINY,
                &Kind::Int {
                    bits: bits @ 8,
                    unsigned,
                },
            )
            | (
                T::MYSQL_TYPE_SHORT,
                &Kind::Int {
                    bits: bits @ 16,
                    unsigned,
                },
            )
            | (
                T::MYSQL_TYPE_INT24,
                &Kind::Int {
                    bits: bits @ 24,
                    unsigned,
                },
            )
            | (
                T::MYSQL_TYPE_LONG,
                &Kind::Int {
                    bits: bits @ 32,
                    unsigned,
                },
            )
            | (
                T::MYSQL_TYPE_LONGLONG,
                &Kind::Int {
                    bits: bits @ 64,
                    unsigned,
                },
            ) => Read::Int {
                width: bits as usize / 8,
                unsigned,
            },
            // VARCHAR: the metadata is the longest length in bytes.
            (T::MYSQL_TYPE_VARCHAR, Kind::Text { charset }) if meta.len() == 2 => Read::Text {
                len_bytes: if u16::from_le_bytes([meta[0], meta[1]]) < 256 {
                    1
                } else {
                    2
                },
                utf8: types::is_utf8(charset),
            },
            // CHAR: the real type, then the low byte of the longest length in bytes. A CHAR
            // longer than 255 bytes keeps the length's bits 8 and 9, inverted, in bits 4
            // and 5 of the real type (MySQL's log_event.cc). ENUM and SET are other real
            // types.
            (T::MYSQL_TYPE_STRING, Kind::Text { charset }) if meta.len() == 2 => {
                let (real, len) = if meta[0] & 0x30 != 0x30 {
                    (
                        meta[0] | 0x30,
                        u16::from(meta[1]) | (u16::from((meta[0] & 0x30) ^ 0x30) << 4),
                    )
                } else {
                    (meta[0], u16::from(meta[1]))
                };
                if real == T::MYSQL_TYPE_STRING as u8 {
                    Read::Text {
                        len_bytes: if len < 256 { 1 } else { 2 },
                        utf8: types::is_utf8(charset),
                    }
                } else {
                    Read::General
                }
            }
            _ => Read::General,
        }
    }
}

/// A row's images: `(before, after)`.
pub type RowPair = (Option<Row>, Option<Row>);

impl RowLayout {
    /// The layout of rows following a TABLE_MAP of `shape`, decoded into rows of `table`.
    pub fn new(shape: &MapShape, table: &MyTable) -> Self {
        let reads = if table.columns.len() == shape.columns.len() {
            shape
                .columns
                .iter()
                .zip(&table.columns)
                .map(|(m, c)| Read::plan(m.ty, &m.meta, &c.kind))
                .collect()
        } else {
            // `decode` refuses such rows anyway.
            vec![Read::General; shape.columns.len()]
        };
        RowLayout {
            columns: shape
                .columns
                .iter()
                .map(|c| (c.ty, c.meta.clone(), c.unsigned.unwrap_or(false)))
                .collect(),
            reads,
        }
    }

    /// Decodes every row of `rows` into rows of `table`.
    pub fn decode(
        &self,
        table: &MyTable,
        rows: &RowsEventData<'_>,
    ) -> Result<Vec<RowPair>, String> {
        if rows.num_columns() as usize != self.columns.len()
            || table.columns.len() != self.columns.len()
        {
            return Err(format!(
                "the rows event has {} columns, its TABLE_MAP {} and the table {}",
                rows.num_columns(),
                self.columns.len(),
                table.columns.len()
            ));
        }
        // FULL row images hold every column.
        let full = |present: Option<&_>| -> Result<bool, String> {
            let Some(present) = present else {
                return Ok(false);
            };
            let present: &bitvec::slice::BitSlice<u8> = present;
            if present.count_ones() == self.columns.len() {
                return Ok(true);
            }
            let missing = present
                .iter()
                .zip(&table.columns)
                .filter(|(p, _)| !**p)
                .map(|(_, c)| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            Err(format!(
                "the row image lacks the columns {missing} (binlog_row_image must be FULL)"
            ))
        };
        let (before, after) = (
            full(rows.columns_before_image())?,
            full(rows.columns_after_image())?,
        );
        let mut buf = ParseBuf(rows.rows_data());
        let mut out = Vec::new();
        while !buf.is_empty() {
            let b = if before {
                Some(self.image(table, &mut buf)?)
            } else {
                None
            };
            let a = if after {
                Some(self.image(table, &mut buf)?)
            } else {
                None
            };
            out.push((b, a));
        }
        Ok(out)
    }

    /// One row image: the NULL bitmap of the present columns, then their values.
    fn image<'a>(&'a self, table: &MyTable, buf: &mut ParseBuf<'a>) -> Result<Row, String> {
        let count = self.columns.len();
        let nulls = buf
            .checked_eat(count.div_ceil(8))
            .ok_or("the row image ends inside its NULL bitmap")?;
        let mut values = Vec::with_capacity(count);
        for (i, (((ty, meta, unsigned), read), column)) in self
            .columns
            .iter()
            .zip(&self.reads)
            .zip(&table.columns)
            .enumerate()
        {
            if nulls[i / 8] & (1 << (i % 8)) != 0 {
                values.push(Value::Null);
                continue;
            }
            let short = || format!("{}: the row image ends inside the value", column.name);
            let value = match *read {
                Read::Int { width, unsigned } => {
                    let raw = buf.checked_eat(width).ok_or_else(short)?;
                    Ok(int_direct(raw, unsigned))
                }
                Read::Text { len_bytes, utf8 } => {
                    let len = buf.checked_eat(len_bytes).ok_or_else(short)?;
                    let len = len
                        .iter()
                        .rev()
                        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                    let bytes = buf.checked_eat(len).ok_or_else(short)?;
                    match &column.kind {
                        Kind::Text { charset } => {
                            types::text_value_in(utf8, charset, bytes.to_vec())
                        }
                        other => Err(format!("text read planned for a {other:?} column")),
                    }
                }
                Read::General => {
                    let raw: BinlogValue<'_> = buf
                        .parse((*ty, meta.as_slice(), *unsigned, false))
                        .map_err(|e| format!("{}: {e}", column.name))?;
                    types::from_binlog(column, raw)
                }
            };
            values.push(value.map_err(|m| format!("{}: {m}", column.name))?);
        }
        Ok(Row(values))
    }
}

/// The value of a little-endian integer column of `raw.len()` bytes, as
/// `types::int_value` gives it (the same types for each width and signedness), without
/// going through a wider integer.
fn int_direct(raw: &[u8], unsigned: bool) -> Value {
    match (raw, unsigned) {
        (&[b], false) => Value::Int16(i16::from(b as i8)),
        (&[b], true) => Value::Int16(i16::from(b)),
        (&[a, b], false) => Value::Int16(i16::from_le_bytes([a, b])),
        (&[a, b], true) => Value::Int32(i32::from(u16::from_le_bytes([a, b]))),
        // Sign extension of 24 bits: the bytes in the high end, shifted back.
        (&[a, b, c], false) => Value::Int32(i32::from_le_bytes([0, a, b, c]) >> 8),
        (&[a, b, c], true) => Value::Int32(i32::from_le_bytes([a, b, c, 0])),
        (&[a, b, c, d], false) => Value::Int32(i32::from_le_bytes([a, b, c, d])),
        (&[a, b, c, d], true) => Value::Int64(i64::from(u32::from_le_bytes([a, b, c, d]))),
        (raw, false) => Value::Int64(read_int(raw, 64, false) as i64),
        (raw, true) => Value::Numeric(read_int(raw, 64, true).to_string()),
    }
}

/// A little-endian integer of `bits` width, sign-extended unless `unsigned`.
fn read_int(raw: &[u8], bits: u32, unsigned: bool) -> i128 {
    let le = raw
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if unsigned {
        i128::from(le)
    } else {
        let shift = 64 - bits;
        i128::from(((le << shift) as i64) >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::value::Value as MyValue;

    /// The direct integer read gives the two's-complement value of every width, both
    /// signednesses and the edges, and agrees with mysql_common's decoder through
    /// `int_value` (which also mends mysql_common 0.37 reading a signed INT24 without sign
    /// extension: -1 as 16777215).
    #[test]
    fn direct_integer_reads_agree_with_mysql_common() {
        use ColumnType as T;
        for (ty, bits) in [
            (T::MYSQL_TYPE_TINY, 8u32),
            (T::MYSQL_TYPE_SHORT, 16),
            (T::MYSQL_TYPE_INT24, 24),
            (T::MYSQL_TYPE_LONG, 32),
            (T::MYSQL_TYPE_LONGLONG, 64),
        ] {
            let width = bits as usize / 8;
            let mut raws: Vec<u64> = vec![0, 1, 2, 0x7f, 0x80, 0xff, 0x1234_5678_9abc_def0];
            raws.extend([
                u64::MAX,
                u64::MAX - 1,
                1u64 << (bits - 1),
                (1u64 << (bits - 1)) - 1,
            ]);
            raws.extend((0..200u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            for raw in raws {
                let bytes = &raw.to_le_bytes()[..width];
                let m = i128::from(raw) & ((1i128 << bits) - 1);
                for unsigned in [false, true] {
                    let kind = Kind::Int { bits, unsigned };
                    assert_eq!(Read::plan(ty, &[], &kind), Read::Int { width, unsigned });
                    let expected = if !unsigned && m >= 1i128 << (bits - 1) {
                        m - (1i128 << bits)
                    } else {
                        m
                    };
                    let direct = read_int(bytes, bits, unsigned);
                    assert_eq!(direct, expected, "{ty:?} {raw:#x} unsigned={unsigned}");
                    assert_eq!(
                        Ok(int_direct(bytes, unsigned)),
                        types::int_value(bits, unsigned, direct),
                        "{ty:?} {raw:#x} unsigned={unsigned}"
                    );
                    // Without signedness metadata mysql_common reads every integer as
                    // signed; `int_value` reinterprets it for an unsigned column.
                    let general: BinlogValue<'_> =
                        ParseBuf(bytes).parse((ty, &[][..], false, false)).unwrap();
                    let BinlogValue::Value(MyValue::Int(i)) = general else {
                        panic!("{general:?}");
                    };
                    assert_eq!(
                        types::int_value(bits, unsigned, direct),
                        types::int_value(bits, unsigned, i128::from(i)),
                        "{ty:?} {raw:#x} unsigned={unsigned}"
                    );
                }
            }
        }
    }

    #[test]
    fn text_reads_are_planned_for_varchar_and_char() {
        use ColumnType as T;
        let text = Kind::Text {
            charset: "utf8mb4".into(),
        };
        let utf8 = true;
        assert_eq!(
            Read::plan(T::MYSQL_TYPE_VARCHAR, &[200, 0], &text),
            Read::Text { len_bytes: 1, utf8 }
        );
        assert_eq!(
            Read::plan(T::MYSQL_TYPE_VARCHAR, &[0x40, 0x01], &text),
            Read::Text { len_bytes: 2, utf8 }
        );
        assert_eq!(
            Read::plan(T::MYSQL_TYPE_STRING, &[0xfe, 84], &text),
            Read::Text { len_bytes: 1, utf8 }
        );
        // char(100) in utf8mb4: 400 bytes (0x190), so bits 8 and 9 go into the real type.
        assert_eq!(
            Read::plan(T::MYSQL_TYPE_STRING, &[0xee, 0x90], &text),
            Read::Text { len_bytes: 2, utf8 }
        );
        // char(255) in utf8mb4: 1020 bytes (0x3fc).
        assert_eq!(
            Read::plan(T::MYSQL_TYPE_STRING, &[0xce, 0xfc], &text),
            Read::Text { len_bytes: 2, utf8 }
        );
        let latin1 = Kind::Text {
            charset: "latin1".into(),
        };
        assert_eq!(
            Read::plan(T::MYSQL_TYPE_STRING, &[0xfe, 10], &latin1),
            Read::Text {
                len_bytes: 1,
                utf8: false
            }
        );
        // An ENUM behind STRING: the general path.
        assert_eq!(
            Read::plan(T::MYSQL_TYPE_STRING, &[0xf7, 1], &text),
            Read::General
        );
        assert_eq!(
            Read::plan(
                T::MYSQL_TYPE_LONG,
                &[],
                &Kind::Int {
                    bits: 64,
                    unsigned: false
                }
            ),
            Read::General
        );
    }
}
