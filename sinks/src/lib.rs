//! Sinks: downstream databases that apply source transactions atomically and idempotently.
//!
//! A sink receives the events of one source transaction, grouped per table and in source
//! order, between [`Sink::begin`] and [`Sink::commit`]. It applies them in a single
//! database transaction together with the source's *watermark*: the position of the last
//! event applied. Delivery to the sink is at-least-once; because the watermark commits
//! atomically with the data, a caller that skips events at or below the watermark gets
//! exactly-once effect. Applying is additionally idempotent (upserts and deletes by primary
//! key), so repeating a batch inside a transaction is harmless.
//!
//! Failures are classified by [`SinkError::is_transient`]: after a transient error the
//! caller rolls back and retries the same transaction; a definite error will repeat.
//!
//! The [`Sink`] trait is a small core; abilities only some sinks have (merge states,
//! loading COPY text, tagging writes as Tributary's own) are [`MergeStates`], [`CopyLoad`]
//! and [`OriginTag`], which a sink offers through [`Sink::merge_states`],
//! [`Sink::copy_load`] and [`Sink::origin_tag`].
//!
//! Implementations: [`postgres`] and [`mysql`] (MySQL and MariaDB), one folder per kind.
//! [`SinkConfig`] is the one place that matches on a kind: it builds a sink from its
//! configuration or URL; [`admin`] does what operators and restore tests need of a sink's
//! server outside the apply path.

pub mod admin;
mod capability;
mod config;
mod error;
mod kind;
pub mod mysql;
mod plan;
pub mod postgres;

use async_trait::async_trait;
use tributary_schemas::{ChangeEvent, Position, TableSchema};

pub use admin::{SinkStatus, SourceWatermark};
pub use capability::{CopyLoad, MergeStates, OriginTag};
pub use config::{database_identity, SinkConfig, SinkKind};
pub use error::{ServerDetail, SinkError};
pub use mysql::{MySqlSink, MySqlSinkConfig};
pub use postgres::{PostgresSink, PostgresSinkConfig};

/// A downstream database that applies source transactions atomically and idempotently.
///
/// # Contract
///
/// - Delivery is **at-least-once**: after a crash or a transient error the caller replays
///   events it may already have delivered. The sink stores, in the same database
///   transaction as the data, the position of the last applied event of each source (its
///   watermark). Before applying, the caller reads [`Sink::watermark`] and skips every event
///   at or below it; that makes delivery exactly-once in effect.
/// - A transaction is `begin`, any number of `apply` calls (one table per call, several
///   calls per table for large source transactions), then `commit` with the position of the
///   last event. Nothing is visible downstream before `commit` returns, and a failed or
///   missing `commit` leaves data and watermark as they were.
/// - `apply` is idempotent: upserts and deletes by primary key, so re-applying the same
///   events within or across transactions leaves the same state.
/// - `apply` may return while its last batch is still being written (so the caller can
///   prepare the next one meanwhile); an error of that write is returned by the next
///   `apply`, `commit` or `watermark` call of the same transaction.
/// - After any error inside a transaction the transaction is unusable: the caller calls
///   [`Sink::rollback`] (or drops the sink) and, if [`SinkError::is_transient`], retries.
/// - Calls are sequential (`&mut self`); a sink owns one connection and is not shared.
/// - [`Sink::commit_data`] commits without moving the watermark, for changes replayed
///   from the dead-letter queue (they lie below it).
#[async_trait]
pub trait Sink: Send {
    /// Highest position applied from `source`, if any.
    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError>;

    /// Opens a transaction.
    async fn begin(&mut self) -> Result<(), SinkError>;

    /// Whether events of `table` can be applied in the open transaction without a schema
    /// change the database would commit on its own.
    ///
    /// Sinks with transactional DDL (PostgreSQL) always are. A sink whose DDL commits
    /// implicitly (MySQL) is ready once it has prepared that table version; before the
    /// first event of a source transaction the caller commits what it grouped so far
    /// when the sink is not ready, so the schema change falls between two commits.
    fn ready_for(&self, table: &TableSchema) -> bool {
        let _ = table;
        true
    }

    /// Applies events of one table (all with the given schema) inside the open transaction,
    /// in order.
    ///
    /// Called repeatedly within one transaction for large source transactions (bounded
    /// batches).
    async fn apply(&mut self, table: &TableSchema, events: &[ChangeEvent])
        -> Result<(), SinkError>;

    /// Stores `position` as the watermark of `source` and commits.
    async fn commit(&mut self, source: &str, position: Position) -> Result<(), SinkError>;

    /// Commits without storing a watermark (changes replayed from the dead-letter queue,
    /// which lie below it).
    async fn commit_data(&mut self) -> Result<(), SinkError>;

    /// Rolls back the open transaction, if any.
    async fn rollback(&mut self) -> Result<(), SinkError>;

    /// Called between sink transactions, and about twice a second while no events
    /// arrive: for work that waits for no transaction to be open (the archive seals its
    /// open segment when it is old enough).
    async fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Its merge states, when this sink keeps them beside the rows (tables that merge
    /// the changes of several sources need them).
    fn merge_states(&mut self) -> Option<&mut dyn MergeStates> {
        None
    }

    /// Its COPY text loading, when this sink takes PostgreSQL `COPY` text as it is.
    fn copy_load(&mut self) -> Option<&mut dyn CopyLoad> {
        None
    }

    /// Its origin tagging, when this sink can mark its writes as Tributary's own.
    fn origin_tag(&mut self) -> Option<&mut dyn OriginTag> {
        None
    }
}

/// The position stored as `source`'s watermark (JSON text, whatever the kind), or an error
/// saying the stored text is not one.
pub(crate) fn parse_watermark(source: &str, text: &str) -> Result<Position, SinkError> {
    serde_json::from_str(text).map_err(|e| SinkError::Watermark {
        source_name: source.to_string(),
        reason: format!("{text} is not a position: {e}"),
    })
}
