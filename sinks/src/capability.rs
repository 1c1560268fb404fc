//! Abilities a sink may offer beyond the core of [`Sink`](crate::Sink): merge states
//! (conflict resolution), loading PostgreSQL `COPY` text as it is (restores), and tagging
//! its writes as Tributary's own (bidirectional sync). A sink offers one by returning
//! itself from the matching `Sink` method; callers that need an ability a sink lacks say
//! so in their own words, instead of meeting an error at the first call.

use crate::SinkError;
use async_trait::async_trait;
use tributary_schemas::TableSchema;

/// Merge states kept beside the rows, in the sink's transaction.
#[async_trait]
pub trait MergeStates: Send {
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
    ) -> Result<Vec<Option<String>>, SinkError>;

    /// Stores merge states `(key, state)` of `table`'s target in the open transaction.
    async fn store_merge_states(
        &mut self,
        table: &TableSchema,
        states: &[(String, String)],
    ) -> Result<(), SinkError>;

    /// Forgets every merge state of `table`'s target (after a truncate) in the open
    /// transaction.
    async fn clear_merge_states(&mut self, table: &TableSchema) -> Result<(), SinkError>;
}

/// Loading PostgreSQL `COPY` text into the open transaction.
#[async_trait]
pub trait CopyLoad: Send {
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
    ) -> Result<bool, SinkError>;
}

/// Marking the sink's writes as Tributary's own.
#[async_trait]
pub trait OriginTag: Send {
    /// Marks every later write as Tributary's own, under `name`, so a capture of this
    /// database knows them and a bidirectional setup does not send them back (PostgreSQL:
    /// a replication origin; MySQL: a row of `tributary.echo` written first in each
    /// transaction).
    async fn tag_origin(&mut self, name: &str) -> Result<(), SinkError>;

    /// Whether the writes carry the name [`OriginTag::tag_origin`] gave (a sink without the
    /// rights to tag them warns and writes untagged).
    fn tagged(&self) -> bool;
}
