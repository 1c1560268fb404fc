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
//! Implementations: [`postgres`] and [`mysql`] (MySQL and MariaDB).

mod error;
pub mod mysql;
mod plan;
pub mod postgres;

use async_trait::async_trait;
use tributary_schemas::{ChangeEvent, Position, TableSchema};

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
#[async_trait]
pub trait Sink: Send {
    /// Highest position applied from `source`, if any.
    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError>;

    /// Opens a transaction.
    async fn begin(&mut self) -> Result<(), SinkError>;

    /// Marks every later write as Tributary's own, under `name`, so a capture of this
    /// database knows them and a bidirectional setup does not send them back (PostgreSQL:
    /// a replication origin; MySQL: a row of `tributary.echo` written first in each
    /// transaction).
    async fn tag_origin(&mut self, name: &str) -> Result<(), SinkError> {
        let _ = name;
        Ok(())
    }

    /// Whether the writes carry the name [`Sink::tag_origin`] gave (a sink without the
    /// rights to tag them warns and writes untagged).
    fn tagged(&self) -> bool {
        true
    }

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

    /// Locks, until the open transaction ends, the merge states of rows `keys` (the
    /// pipeline's key texts) of the table `table` is written to, and returns each one's
    /// stored state (`None` for a row never merged) in `keys` order.
    ///
    /// Conflict resolution reads a row's state, merges a change into it, writes the row
    /// and stores the state, all in the transaction that also stores the watermark: the
    /// state and the row never disagree, and apply loops of other sources into the same
    /// sink wait for the lock instead of merging into a stale state.
    async fn lock_merge_states(
        &mut self,
        table: &TableSchema,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, SinkError> {
        let _ = keys;
        Err(SinkError::Protocol(format!(
            "this sink keeps no merge state, so {} cannot be merged",
            table.table
        )))
    }

    /// Stores merge states `(key, state)` of `table`'s target in the open transaction.
    async fn store_merge_states(
        &mut self,
        table: &TableSchema,
        states: &[(String, String)],
    ) -> Result<(), SinkError> {
        let _ = states;
        Err(SinkError::Protocol(format!(
            "this sink keeps no merge state, so {} cannot be merged",
            table.table
        )))
    }

    /// Forgets every merge state of `table`'s target (after a truncate) in the open
    /// transaction.
    async fn clear_merge_states(&mut self, table: &TableSchema) -> Result<(), SinkError> {
        Err(SinkError::Protocol(format!(
            "this sink keeps no merge state, so {} cannot be merged",
            table.table
        )))
    }

    /// Commits without storing a watermark (changes replayed from the dead-letter queue,
    /// which lie below it).
    async fn commit_data(&mut self) -> Result<(), SinkError> {
        Err(SinkError::Protocol(
            "this sink cannot commit without a watermark".into(),
        ))
    }

    /// Loads `lines`, whole lines of PostgreSQL `COPY ... TO STDOUT` text output holding
    /// rows of `table` (in its column order, printed with `DateStyle=ISO`,
    /// `IntervalStyle=iso_8601`, `TimeZone=UTC`), into the open transaction as new rows,
    /// as they are, when this sink can. `Ok(false)`: it did not load them and the
    /// transaction is as it was (the caller applies them as events instead): the sink
    /// takes no COPY text, or the target refused it (a row already there, a value its
    /// column does not take).
    async fn load_copy_text(
        &mut self,
        table: &TableSchema,
        lines: &[u8],
    ) -> Result<bool, SinkError> {
        let _ = (table, lines);
        Ok(false)
    }

    /// Stores `position` as the watermark of `source` and commits.
    async fn commit(&mut self, source: &str, position: Position) -> Result<(), SinkError>;

    /// Rolls back the open transaction, if any.
    async fn rollback(&mut self) -> Result<(), SinkError>;

    /// Called between sink transactions, and about twice a second while no events
    /// arrive: for work that waits for no transaction to be open (the archive seals its
    /// open segment when it is old enough).
    async fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
