//! Administration of a PostgreSQL sink's server outside the apply path (see
//! [`crate::admin`]).

use super::ddl::{quote_ident as ident, quote_table};
use super::sink::open;
use super::PostgresSinkConfig;
use crate::kind::{select_in_key_order, AdminSession, RowReader};
use crate::SinkError;
use async_trait::async_trait;
use futures::TryStreamExt;
use tokio_postgres::{Client, SimpleQueryMessage};
use tributary_schemas::pg_text::{parse_text, OUTPUT_SETTINGS};
use tributary_schemas::{Position, Row, TableId, TableSchema};

/// A connection for administrative statements.
pub(crate) struct Session {
    client: Client,
    address: String,
}

impl Session {
    /// Connects to the URL's database.
    pub(crate) async fn open(config: &PostgresSinkConfig) -> Result<Self, SinkError> {
        let (client, address) = open(config).await?;
        Ok(Session { client, address })
    }

    /// Whether the database holds the watermark table (a sink has written there).
    async fn has_watermarks(&mut self) -> Result<bool, SinkError> {
        let row = self
            .client
            .query_one(
                "SELECT to_regclass('tributary.watermarks') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| SinkError::postgres("looking for watermarks", &self.address, e))?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl AdminSession for Session {
    /// Runs `sql` (one or more statements, outside a transaction).
    async fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        self.client.batch_execute(sql).await.map_err(|e| {
            SinkError::postgres("running an administrative statement", &self.address, e)
        })
    }

    fn quote_ident(&self, name: &str) -> String {
        ident(name)
    }

    /// Drops database `name`, closing sessions still in it (those of a restore may linger
    /// a moment).
    async fn drop_database(&mut self, name: &str) -> Result<(), SinkError> {
        self.execute(&format!("DROP DATABASE {} WITH (FORCE)", ident(name)))
            .await
    }

    /// The watermark of `source`, read only (`None` also when no sink wrote here yet).
    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        if !self.has_watermarks().await? {
            return Ok(None);
        }
        super::watermark::read(&self.client, source).await
    }

    /// Deletes the watermarks stored under `keys`, when the database has any.
    async fn forget_watermarks(&mut self, keys: &[String]) -> Result<(), SinkError> {
        if !self.has_watermarks().await? {
            return Ok(());
        }
        self.client
            .execute(
                "DELETE FROM tributary.watermarks WHERE source = ANY($1)",
                &[&keys],
            )
            .await
            .map(drop)
            .map_err(|e| SinkError::postgres("forgetting watermarks", &self.address, e))
    }

    /// Row count and the md5 of every row's text, in the text's order, of `table`.
    async fn table_digest(&mut self, table: &str) -> Result<(i64, String), SinkError> {
        let row = self
            .client
            .query_one(&digest_sql(table), &[])
            .await
            .map_err(|e| SinkError::postgres("reading a table's digest", &self.address, e))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Reads `table` as PostgreSQL prints it under [`OUTPUT_SETTINGS`], a row at a time.
    async fn read_table(
        &mut self,
        table: &TableId,
        schema: &TableSchema,
        each: RowReader<'_>,
    ) -> Result<(), SinkError> {
        // The simple protocol returns every value in its type's text output, as the
        // capture reads it (a `::text` cast would not: it drops `character(n)` padding).
        let sql = select_in_key_order(schema, &quote_table(table), ident, |_, c| c);
        let failed = |e| SinkError::postgres("reading a table back", &self.address, e);
        let settings: String = OUTPUT_SETTINGS
            .iter()
            .map(|(k, v)| format!("SET {k} = '{v}';"))
            .collect();
        self.client.batch_execute(&settings).await.map_err(failed)?;
        let messages = self.client.simple_query_raw(&sql).await.map_err(failed)?;
        futures::pin_mut!(messages);
        let unreadable = |cause: String| SinkError::Driver {
            action: "reading a table back",
            table: table.to_string(),
            cause,
        };
        while let Some(message) = messages.try_next().await.map_err(failed)? {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let mut values = Vec::with_capacity(schema.columns.len());
            for (i, column) in schema.columns.iter().enumerate() {
                let text = row.try_get(i).map_err(|e| unreadable(e.to_string()))?;
                values.push(match text {
                    None => tributary_schemas::Value::Null,
                    Some(text) => parse_text(&column.name, &column.ty, text)
                        .map_err(|e| unreadable(e.to_string()))?,
                });
            }
            each(Row(values))?;
        }
        Ok(())
    }
}

/// The query of `table`'s row count and the md5 of every row's text in the text's order.
pub fn digest_sql(table: &str) -> String {
    format!(
        "SELECT count(*), coalesce(md5(string_agg(whole_row::text, '|' ORDER BY whole_row::text)), '') FROM {table} AS whole_row"
    )
}
