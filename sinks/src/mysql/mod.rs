//! The MySQL / MariaDB sink.
//!
//! # Design
//!
//! One [`MySqlSink`] owns one connection. A source transaction becomes one InnoDB
//! transaction: `START TRANSACTION`, the applied events, then the source's watermark row
//! in `tributary.watermarks` and `COMMIT` in a single round trip.
//!
//! Per table, events are folded into one net effect per primary key (the same folding as
//! the PostgreSQL sink), then sent as SQL text: multi-row `INSERT ... ON DUPLICATE KEY
//! UPDATE` for full rows, `DELETE ... WHERE key IN (...)` for deletes, and one `UPDATE`
//! per row whose unchanged (TOAST) columns were not sent. A truncate is a `DELETE` of
//! every row, since MySQL's `TRUNCATE` commits. Statements stay under the server's
//! `max_allowed_packet`; batches hold at most `batch_rows` keys.
//!
//! The session uses `utf8mb4`, `time_zone = '+00:00'` (timestamps are written in UTC),
//! strict mode, `NO_BACKSLASH_ESCAPES` and `NO_AUTO_VALUE_ON_ZERO` (a 0 key stays 0).
//! Values MySQL cannot hold exactly (NaN, infinite dates, decimals with more digits than
//! the column, intervals with months) are refused with the event's position instead of
//! being rounded.
//!
//! # Schema changes
//!
//! MySQL commits every DDL statement implicitly, so creating or extending a table cannot
//! be part of the data transaction. When a table version needs DDL and the open
//! transaction has written nothing yet, the sink rolls it back (losing nothing), runs the
//! DDL, and starts a new one. The apply loop asks [`Sink::ready_for`](crate::Sink) until
//! it has applied something of a source transaction, and commits the source transactions
//! it grouped so far first, so a new table or column met at the start of a source
//! transaction falls between two commits. When the sink meets one later in a source
//! transaction (a second table of a multi-table transaction whose version is new, or
//! PostgreSQL DDL between DML in one transaction), it commits what that transaction wrote
//! so far before the DDL: those rows are visible early, and the watermark is not moved,
//! so after a crash there the transaction is applied again from its start
//! (upserts and deletes by key are idempotent). This is logged as a warning.
//!
//! # Failure model
//!
//! Like the PostgreSQL sink: lost connections, deadlocks and lock wait timeouts are
//! transient (roll back, reconnect on the next `begin`, retry); constraint, type and
//! privilege errors are definite.

mod admin;
mod config;
mod ddl;
mod literal;
mod merge_state;
mod read;
mod sink;

pub use config::{MySqlSinkConfig, DEFAULT_BATCH_ROWS};
pub use sink::MySqlSink;

use crate::kind::{with_database, AdminSession, KindConfig};
use crate::{Sink, SinkError};
use async_trait::async_trait;
use tributary_schemas::{DatabaseIdentity, TableId};

#[async_trait]
impl KindConfig for MySqlSinkConfig {
    fn url(&self) -> &str {
        &self.url
    }

    fn validate(&self) -> Result<(), SinkError> {
        MySqlSinkConfig::validate(self)
    }

    fn identity(&self) -> Option<DatabaseIdentity> {
        let o = self.opts().ok()?;
        Some(DatabaseIdentity::new(
            "mysql",
            o.ip_or_hostname(),
            o.tcp_port(),
            o.db_name()?,
        ))
    }

    fn protocol(&self) -> &'static str {
        "mysql"
    }

    /// One `tributary.watermarks` table serves every database of the server: a restore
    /// keeps its watermark under `<source>@<database>`.
    fn restore_watermark_key(&self, source: &str) -> Option<String> {
        self.target_schema
            .clone()
            .or_else(|| self.opts().ok()?.db_name().map(str::to_string))
            .filter(|d| !d.is_empty())
            .map(|db| format!("{source}@{db}"))
    }

    fn in_database(&self, database: &str) -> (String, Option<String>) {
        (
            with_database(&self.url, database),
            Some(database.to_string()),
        )
    }

    fn batch_rows(&self) -> usize {
        self.batch_rows
    }

    fn target_table(&self, table: &TableId) -> TableId {
        MySqlSinkConfig::target_table(self, table)
    }

    async fn connect(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(MySqlSink::connect(self.clone()).await?))
    }

    async fn session(&self) -> Result<Box<dyn AdminSession>, SinkError> {
        Ok(Box::new(admin::Session::open(self).await?))
    }
}
