//! Row images of ROWS events, decoded with a per-table layout prepared once.
//!
//! mysql_common decodes each binlog value well, but its row iterator, for every row, parses
//! the TABLE_MAP's optional metadata again, finds each column's type metadata by walking
//! the list from the start, and builds named column descriptions: that was most of the
//! capture's time. Here the per-column context (type, metadata, signedness) is prepared
//! once per TABLE_MAP shape, the row framing (column bitmaps, NULL bitmaps) is read here,
//! and each value goes through mysql_common's value decoder.

use super::binlog_shape::MapShape;
use super::catalog::MyTable;
use super::types;
use mysql_async::binlog::events::RowsEventData;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;
use tributary_schemas::{Row, Value};

/// How to read the values of one table's rows.
#[derive(Debug, Clone)]
pub struct RowLayout {
    columns: Vec<(ColumnType, Vec<u8>, bool)>,
}

/// A row's images: `(before, after)`.
pub type RowPair = (Option<Row>, Option<Row>);

impl RowLayout {
    /// The layout of rows following a TABLE_MAP of `shape`.
    pub fn new(shape: &MapShape) -> Self {
        RowLayout {
            columns: shape
                .columns
                .iter()
                .map(|c| (c.ty, c.meta.clone(), c.unsigned.unwrap_or(false)))
                .collect(),
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
        for (i, ((ty, meta, unsigned), column)) in
            self.columns.iter().zip(&table.columns).enumerate()
        {
            if nulls[i / 8] & (1 << (i % 8)) != 0 {
                values.push(Value::Null);
                continue;
            }
            let raw: BinlogValue<'_> = buf
                .parse((*ty, meta.as_slice(), *unsigned, false))
                .map_err(|e| format!("{}: {e}", column.name))?;
            values.push(
                types::from_binlog(column, raw).map_err(|m| format!("{}: {m}", column.name))?,
            );
        }
        Ok(Row(values))
    }
}
