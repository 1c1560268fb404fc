//! Administration of a PostgreSQL sink's server outside the apply path (see
//! [`crate::admin`]).

use super::sink::open;
use super::PostgresSinkConfig;
use crate::SinkError;
use tokio_postgres::Client;
use tributary_schemas::Position;

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

    /// Runs `sql` (one or more statements, outside a transaction).
    pub(crate) async fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        self.client.batch_execute(sql).await.map_err(|e| {
            SinkError::postgres("running an administrative statement", &self.address, e)
        })
    }

    /// Creates database `name`.
    pub(crate) async fn create_database(&mut self, name: &str) -> Result<(), SinkError> {
        self.execute(&format!("CREATE DATABASE {}", ident(name)))
            .await
    }

    /// Drops database `name`, closing sessions still in it (those of a restore may linger
    /// a moment).
    pub(crate) async fn drop_database(&mut self, name: &str) -> Result<(), SinkError> {
        self.execute(&format!("DROP DATABASE {} WITH (FORCE)", ident(name)))
            .await
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

    /// The watermark of `source`, read only (`None` also when no sink wrote here yet).
    pub(crate) async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        if !self.has_watermarks().await? {
            return Ok(None);
        }
        super::watermark::read(&self.client, source).await
    }

    /// Deletes the watermarks stored under `keys`, when the database has any.
    pub(crate) async fn forget_watermarks(&mut self, keys: &[String]) -> Result<(), SinkError> {
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
    pub(crate) async fn table_digest(&mut self, table: &str) -> Result<(i64, String), SinkError> {
        let row = self
            .client
            .query_one(&digest_sql(table), &[])
            .await
            .map_err(|e| SinkError::postgres("reading a table's digest", &self.address, e))?;
        Ok((row.get(0), row.get(1)))
    }
}

/// The query of `table`'s row count and the md5 of every row's text in the text's order.
pub fn digest_sql(table: &str) -> String {
    format!(
        "SELECT count(*), coalesce(md5(string_agg(whole_row::text, '|' ORDER BY whole_row::text)), '') FROM {table} AS whole_row"
    )
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
