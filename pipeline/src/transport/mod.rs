//! Reading topics: per-topic readers over Kafka or the embedded log, with offsets
//! committed per consumer group.
//!
//! The apply loop reads the transaction-marker topic and, for each marker, exactly the
//! listed number of events from each data topic, so it needs one reader per topic rather
//! than one merged stream. Offsets are committed only after the sink committed what they
//! cover; on restart a reader resumes from the committed offset (or the beginning).

pub mod embedded;
pub mod kafka;

use async_trait::async_trait;
use std::time::Duration;
use tributary_capture::TransportError;

/// One record read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Topic read.
    pub topic: String,
    /// Offset of the record.
    pub offset: u64,
    /// Offset to commit once this record is processed (the next one's).
    pub next_offset: u64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Vec<u8>,
}

/// Reads one topic in order.
#[async_trait]
pub trait TopicReader: Send {
    /// The next record, waiting at most `wait` (forever when `None`); `None` on timeout.
    async fn next(&mut self, wait: Option<Duration>) -> Result<Option<Consumed>, TransportError>;
}

/// Opens readers and commits offsets.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// A reader of `topic` starting at the group's committed offset, or the beginning.
    async fn reader(&self, topic: &str) -> Result<Box<dyn TopicReader>, TransportError>;
    /// A reader of `topic` from its beginning whose position is never committed.
    async fn reader_from_start(&self, topic: &str) -> Result<Box<dyn TopicReader>, TransportError>;
    /// Commits, per topic, the offset of the next record to read.
    async fn commit(&self, offsets: &[(String, u64)]) -> Result<(), TransportError>;
}
