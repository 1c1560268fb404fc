//! Administration of a MySQL/MariaDB sink's server outside the apply path (see
//! [`crate::admin`]).

use super::config::address;
use super::ddl::{quote_ident as ident, quote_table};
use super::sink::{open, read_watermark};
use super::MySqlSinkConfig;
use crate::kind::{select_in_key_order, AdminSession, RowReader};
use crate::SinkError;
use async_trait::async_trait;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tributary_schemas::{ColumnType, Position, Row, TableId, TableSchema};

/// A connection for administrative statements, with the sink's session settings.
pub(crate) struct Session {
    conn: Conn,
    address: String,
}

impl Session {
    /// Connects to the URL's server (and database, when it names one).
    pub(crate) async fn open(config: &MySqlSinkConfig) -> Result<Self, SinkError> {
        let address = address(&config.opts()?);
        Ok(Session {
            conn: open(config, &address).await?,
            address,
        })
    }

    fn failed(&self, action: &'static str) -> impl Fn(mysql_async::Error) -> SinkError + '_ {
        move |e| SinkError::mysql(action, &self.address, e)
    }
}

#[async_trait]
impl AdminSession for Session {
    /// Runs `sql` (one or more statements).
    async fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        let done = self.conn.query_drop(sql).await;
        done.map_err(self.failed("running an administrative statement"))
    }

    fn quote_ident(&self, name: &str) -> String {
        ident(name)
    }

    /// The watermark of `source`, read only (`None` also when no sink wrote on this
    /// server yet).
    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        let exists: Result<Option<u8>, _> = self
            .conn
            .query_first(
                "SELECT 1 FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = 'tributary' AND TABLE_NAME = 'watermarks'",
            )
            .await;
        if exists
            .map_err(self.failed("looking for watermarks"))?
            .is_none()
        {
            return Ok(None);
        }
        read_watermark(&mut self.conn, source).await
    }

    /// Deletes the watermarks stored under `keys` (one `tributary.watermarks` table
    /// serves every database of the server).
    async fn forget_watermarks(&mut self, keys: &[String]) -> Result<(), SinkError> {
        for key in keys {
            let done = self
                .conn
                .exec_drop("DELETE FROM tributary.watermarks WHERE source = ?", (key,))
                .await;
            done.map_err(self.failed("forgetting watermarks"))?;
        }
        Ok(())
    }

    /// Row count and the md5 of every row's text (its columns joined by `|`), in the
    /// text's order, of `table` (`database.table`, or a table of the URL's database).
    async fn table_digest(&mut self, table: &str) -> Result<(i64, String), SinkError> {
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s.to_string()), n.to_string()),
            None => (None, table.to_string()),
        };
        let columns: Result<Vec<String>, _> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (schema.clone(), name.clone()),
            )
            .await;
        let columns = columns.map_err(self.failed("reading a table's columns"))?;
        let fields: Vec<String> = columns
            .iter()
            .map(|c| format!("COALESCE(CAST({} AS CHAR), '\\N')", ident(c)))
            .collect();
        let qualified = match &schema {
            Some(s) => format!("{}.{}", ident(s), ident(&name)),
            None => ident(&name),
        };
        self.execute("SET SESSION group_concat_max_len = 1073741824")
            .await?;
        let digest: Result<Option<(i64, String)>, _> = self
            .conn
            .query_first(format!(
                "SELECT COUNT(*), COALESCE(MD5(GROUP_CONCAT(r ORDER BY r SEPARATOR '|')), '') \
                 FROM (SELECT CONCAT_WS('|', {}) AS r FROM {qualified}) AS whole_rows",
                fields.join(", ")
            ))
            .await;
        Ok(digest
            .map_err(self.failed("reading a table's digest"))?
            .unwrap_or_default())
    }

    /// Reads `table` over the text protocol, a row at a time (see `read`).
    async fn read_table(
        &mut self,
        table: &TableId,
        schema: &TableSchema,
        each: RowReader<'_>,
    ) -> Result<(), SinkError> {
        // The server prints a FLOAT with six digits; the double it is keeps every bit.
        let sql = select_in_key_order(schema, &quote_table(table), ident, |column, c| match column
            .ty
        {
            ColumnType::Float32 => format!("CAST({c} AS DOUBLE)"),
            _ => c,
        });
        let failed = |e| SinkError::mysql("reading a table back", &self.address, e);
        let mut result = self.conn.query_iter(sql).await.map_err(failed)?;
        let Some(mut rows) = result.stream::<mysql_async::Row>().await.map_err(failed)? else {
            return Ok(());
        };
        while let Some(row) = rows.next().await {
            let row = row.map_err(failed)?;
            let mut values = Vec::with_capacity(schema.columns.len());
            for (i, column) in schema.columns.iter().enumerate() {
                // The text protocol sends every value as bytes, NULL as NULL.
                let raw = match row.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => Ok(Some(b.as_slice())),
                    Some(mysql_async::Value::NULL) => Ok(None),
                    other => Err(format!("the server sent {other:?}, not text")),
                };
                values.push(
                    raw.and_then(|raw| super::read::value(column, raw))
                        .map_err(|reason| SinkError::Driver {
                            action: "reading a table back",
                            table: table.to_string(),
                            cause: format!("column {}: {reason}", column.name),
                        })?,
                );
            }
            each(Row(values))?;
        }
        Ok(())
    }
}
