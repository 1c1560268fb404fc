//! What a sink kind implements, in its folder, for [`SinkConfig`](crate::SinkConfig) to hand it every
//! question: [`KindConfig`] (its configuration) and [`AdminSession`] (its administrative
//! connection).

use crate::{Sink, SinkError};
use async_trait::async_trait;
use tributary_schemas::{Column, DatabaseIdentity, Position, Row, TableId, TableSchema};

/// What a kind's configuration does; [`SinkConfig`](crate::SinkConfig) hands every question to its kind.
#[async_trait]
pub(crate) trait KindConfig: Send + Sync {
    /// The connection URL.
    fn url(&self) -> &str;
    /// Checks every field; the error names the first bad one.
    fn validate(&self) -> Result<(), SinkError>;
    /// The database the URL connects to.
    fn identity(&self) -> Option<DatabaseIdentity>;
    /// The wire protocol of the kind's servers (`"postgres"`, `"mysql"`).
    fn protocol(&self) -> &'static str;
    /// The key a restore of `source` keeps its watermark under (`None`: the source's
    /// name); see [`SinkConfig::restore_watermark_key`](crate::SinkConfig::restore_watermark_key).
    fn restore_watermark_key(&self, source: &str) -> Option<String>;
    /// The URL and target schema of this sink's server writing every table into
    /// database `database` (see [`SinkConfig::in_database`](crate::SinkConfig::in_database)).
    fn in_database(&self, database: &str) -> (String, Option<String>);
    /// Rows per statement at most.
    fn batch_rows(&self) -> usize;
    /// The table source table `table` is written to.
    fn target_table(&self, table: &TableId) -> TableId;
    /// Connects (and creates the sink's bookkeeping tables when they are missing).
    async fn connect(&self) -> Result<Box<dyn Sink>, SinkError>;
    /// A connection to the URL's database for administrative statements.
    async fn session(&self) -> Result<Box<dyn AdminSession>, SinkError>;
}

/// What a kind's administrative connection does (implemented in the kind's folder).
#[async_trait]
pub(crate) trait AdminSession: Send {
    /// Runs `sql`: one or more statements of this database's dialect.
    async fn execute(&mut self, sql: &str) -> Result<(), SinkError>;
    /// `name` quoted as an identifier of this database's dialect.
    fn quote_ident(&self, name: &str) -> String;
    /// Creates database `name` on this server.
    async fn create_database(&mut self, name: &str) -> Result<(), SinkError> {
        let sql = format!("CREATE DATABASE {}", self.quote_ident(name));
        self.execute(&sql).await
    }
    /// Drops database `name` on this server.
    async fn drop_database(&mut self, name: &str) -> Result<(), SinkError> {
        let sql = format!("DROP DATABASE {}", self.quote_ident(name));
        self.execute(&sql).await
    }
    /// The watermark of `source` (`None`: nothing applied yet), read without creating
    /// anything.
    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError>;
    /// Deletes the watermarks kept under `keys`.
    async fn forget_watermarks(&mut self, keys: &[String]) -> Result<(), SinkError>;
    /// Row count and a digest of the whole content of `table`.
    async fn table_digest(&mut self, table: &str) -> Result<(i64, String), SinkError>;
    /// See [`Session::read_table`](crate::admin::Session::read_table).
    async fn read_table(
        &mut self,
        table: &TableId,
        schema: &TableSchema,
        each: RowReader<'_>,
    ) -> Result<(), SinkError>;
}

/// Where [`Session::read_table`] hands each row.
pub type RowReader<'a> = &'a mut (dyn FnMut(Row) -> Result<(), SinkError> + Send);

/// `SELECT` of every column of `schema` (each as `column` spells it, given the column
/// and its quoted name) from `table` (quoted), in key order: its primary key's columns,
/// else all of them, each quoted by `quote`.
pub(crate) fn select_in_key_order(
    schema: &TableSchema,
    table: &str,
    quote: impl Fn(&str) -> String,
    column: impl Fn(&Column, String) -> String,
) -> String {
    let names = |i: &usize| quote(&schema.columns[*i].name);
    let all: Vec<usize> = (0..schema.columns.len()).collect();
    let key = if schema.primary_key.is_empty() {
        &all
    } else {
        &schema.primary_key
    };
    let columns: Vec<String> = all
        .iter()
        .map(|i| column(&schema.columns[*i], names(i)))
        .collect();
    let order: Vec<String> = key.iter().map(names).collect();
    format!(
        "SELECT {} FROM {table} ORDER BY {}",
        columns.join(", "),
        order.join(", ")
    )
}

/// `url` naming database `db` instead of its own.
pub(crate) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
