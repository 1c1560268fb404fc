//! Administration of a MySQL/MariaDB sink's server outside the apply path (see
//! [`crate::admin`]).

use super::config::address;
use super::sink::{open, read_watermark};
use super::MySqlSinkConfig;
use crate::SinkError;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tributary_schemas::Position;

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

    /// Runs `sql` (one or more statements).
    pub(crate) async fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        let done = self.conn.query_drop(sql).await;
        done.map_err(self.failed("running an administrative statement"))
    }

    /// Creates database `name`.
    pub(crate) async fn create_database(&mut self, name: &str) -> Result<(), SinkError> {
        self.execute(&format!("CREATE DATABASE {}", ident(name)))
            .await
    }

    /// Drops database `name`.
    pub(crate) async fn drop_database(&mut self, name: &str) -> Result<(), SinkError> {
        self.execute(&format!("DROP DATABASE {}", ident(name)))
            .await
    }

    /// The watermark of `source`, read only (`None` also when no sink wrote on this
    /// server yet).
    pub(crate) async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
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
    pub(crate) async fn forget_watermarks(&mut self, keys: &[String]) -> Result<(), SinkError> {
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
    pub(crate) async fn table_digest(&mut self, table: &str) -> Result<(i64, String), SinkError> {
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
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
