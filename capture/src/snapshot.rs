//! Where an engine's snapshot rows go, whatever the engine.
//!
//! Every source engine copies its tables the same way from the outside: one `Read` event
//! per row, grouped in chunks (snapshot transactions) so sinks apply the load in bounded
//! steps, then a wait until everything is durable. The destination is a
//! [`SnapshotOutput`]: the [`Publisher`] for a capture's initial snapshot, or a backup or a
//! read-back outside this crate. An output that fails returns the error to the copy, which
//! stops; what is durable by then is whatever the output had made durable, and the
//! engine's snapshot module decides how a new attempt resumes or starts over.

use crate::error::CaptureError;
use crate::publisher::Publisher;
use tributary_schemas::{AvroSchemas, ChangeEvent, TableSchema};

/// Where snapshot rows go: the publisher (the capture's initial snapshot) or a backup.
#[async_trait::async_trait]
pub trait SnapshotOutput: Send {
    /// One event (a row read, or a truncate) of the open chunk.
    async fn event(
        &mut self,
        schemas: &AvroSchemas,
        event: &ChangeEvent,
    ) -> Result<(), CaptureError>;
    /// Closes the open chunk (a snapshot transaction), which holds events.
    async fn close_chunk(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
    /// After the last chunk: returns once everything is durable.
    async fn finish(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
    /// Whether it takes each table's rows as the server's COPY text
    /// ([`SnapshotOutput::copy_text`]) instead of one event per row: a backup stores that
    /// text as it comes, as `pg_dump` does, and parses it only when restoring.
    fn wants_copy_text(&self) -> bool {
        false
    }
    /// Whole lines (each ending in a newline) of `table`'s `COPY ... TO STDOUT` text
    /// output, holding `rows` rows, under the capture's session settings.
    async fn copy_text(
        &mut self,
        table: &TableSchema,
        lines: &[u8],
        rows: u64,
    ) -> Result<(), CaptureError> {
        let _ = (lines, rows);
        Err(CaptureError::Setup(format!(
            "table {}: this snapshot output takes no COPY text",
            table.table
        )))
    }
}

#[async_trait::async_trait]
impl SnapshotOutput for Publisher {
    async fn event(
        &mut self,
        schemas: &AvroSchemas,
        event: &ChangeEvent,
    ) -> Result<(), CaptureError> {
        Publisher::event(self, schemas, event).await
    }

    async fn close_chunk(&mut self) -> Result<(), CaptureError> {
        self.commit(None).await.map(drop)
    }

    async fn finish(&mut self) -> Result<(), CaptureError> {
        let mark = self.commit(None).await?;
        self.wait_for(mark).await
    }
}

/// Microseconds since the Unix epoch now: the commit time of snapshot transactions.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
