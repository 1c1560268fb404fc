//! The PostgreSQL sink.
//!
//! # Design
//!
//! One [`PostgresSink`] owns one connection. A source transaction becomes one database
//! transaction: `BEGIN`, the applied events, then the source's watermark row in
//! `tributary.watermarks` and `COMMIT` in a single round trip.
//!
//! Per table, events are folded into one net effect per primary key (`plan`), encoded as
//! staging rows in COPY text format (`stage`, `copy`, values via
//! [`tributary_schemas::pg_text`]) and executed set-based (`apply`): `COPY` into a
//! temporary staging table, then one `DELETE ... USING`, one `INSERT ... SELECT ... ON
//! CONFLICT DO UPDATE` and one `UPDATE ... FROM` per set of sent columns for rows with
//! unchanged TOAST values, which keep their stored values. Truncates and key changes that
//! leave columns unsent are barriers that flush first. Batches hold at most `batch_rows`
//! keys (and about 64 MiB of row data), so memory per `apply` call is bounded. One batch
//! is written by a spawned task while the next is folded and encoded (`sink`), so client
//! CPU work overlaps the server's. Target tables are created and extended on first use of
//! each schema version (`ddl`): additive evolution only, nothing is dropped.
//!
//! # Failure model
//!
//! Every statement runs inside the caller's transaction, so a failure at any point leaves
//! the target and the watermark as they were once the caller rolls back. Errors are
//! classified by [`SinkError::is_transient`](crate::SinkError::is_transient): a lost
//! connection, a serialization failure or a deadlock is worth retrying (the sink
//! reconnects on the next `begin`); constraint and type errors are definite. The last
//! batch of an `apply` may still be written when the call returns; its error comes with
//! the next call, and after any failed call the transaction can only be rolled back
//! (`commit` is refused, so a partial transaction is never committed). After a
//! rollback all cached table state is dropped and rebuilt from the catalog, since DDL of
//! the rolled-back transaction is gone too. Replays are harmless: the caller skips what is
//! at or below the watermark, and every statement is an idempotent upsert, delete or
//! update by key.

mod admin;
mod apply;
mod config;
mod copy;
mod ddl;
mod merge_state;
mod sink;
mod stage;
mod watermark;

pub use admin::digest_sql;
pub use config::{
    PostgresSinkConfig, DEFAULT_APPLICATION_NAME, DEFAULT_BATCH_ROWS, DEFAULT_CONNECT_TIMEOUT,
    MAX_BATCH_ROWS,
};
pub use sink::PostgresSink;

use crate::kind::{with_database, AdminSession, KindConfig};
use crate::{Sink, SinkError};
use async_trait::async_trait;
use tokio_postgres::config::Host;
use tributary_schemas::{DatabaseIdentity, TableId};

#[async_trait]
impl KindConfig for PostgresSinkConfig {
    fn url(&self) -> &str {
        &self.url
    }

    fn validate(&self) -> Result<(), SinkError> {
        PostgresSinkConfig::validate(self)
    }

    fn identity(&self) -> Option<DatabaseIdentity> {
        let pg = self.connection().ok()?;
        let host = match pg.get_hosts().first()? {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(p) => p.display().to_string(),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let db = pg.get_dbname().or(pg.get_user())?;
        Some(DatabaseIdentity::new("postgres", &host, port, db))
    }

    fn protocol(&self) -> &'static str {
        "postgres"
    }

    /// One watermark table per database: the source's own name serves.
    fn restore_watermark_key(&self, _source: &str) -> Option<String> {
        None
    }

    fn in_database(&self, database: &str) -> (String, Option<String>) {
        (
            with_database(&self.url, database),
            self.target_schema.clone(),
        )
    }

    fn batch_rows(&self) -> usize {
        self.batch_rows
    }

    fn target_table(&self, table: &TableId) -> TableId {
        PostgresSinkConfig::target_table(self, table)
    }

    async fn connect(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(PostgresSink::connect(self.clone()).await?))
    }

    async fn session(&self) -> Result<Box<dyn AdminSession>, SinkError> {
        Ok(Box::new(admin::Session::open(self).await?))
    }
}
