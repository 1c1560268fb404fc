//! The transport: where captured events travel from a capture agent to the apply loops,
//! Kafka (any Kafka-protocol broker) or the embedded on-disk log, both sides of each, and
//! the names of the topics a source uses.
//!
//! # Writing
//!
//! Both transports offer the same contract: [`Producer::send_batch`] queues records in
//! order (waiting when the transport's bounded queue is full, which slows the source down)
//! and returns one [`Delivery`] that resolves once every one of them is durable
//! (acknowledged by all in-sync Kafka replicas, or fsynced to the log), or as soon as one
//! failed. Records of one topic keep their order. One delivery per batch, not per record,
//! keeps the bookkeeping off the per-record path.
//!
//! # Reading
//!
//! Per-topic readers over Kafka or the embedded log, with offsets committed per consumer
//! group.
//!
//! The apply loop reads the transaction-marker topic and, for each marker, exactly the
//! listed number of events from each data topic, so it needs one reader per topic rather
//! than one merged stream. Offsets are committed only after the sink committed what they
//! cover; on restart a reader resumes from the committed offset (or the beginning).

mod config;
mod error;
pub mod kafka;
pub mod log;
pub mod topics;

pub use config::{EmbeddedConfig, TransportConfig};
pub use error::TransportError;

use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination topic (shared: a publisher hands the same name to many records).
    pub topic: Arc<str>,
    /// Message key (the Avro-encoded primary key), if any.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Vec<u8>,
}

/// Resolves when a sent record is durable.
pub type Delivery = Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send>>;

/// Publishes records.
#[async_trait]
pub trait Producer: Send + Sync {
    /// Makes sure the topics exist (one partition each, so a topic is totally ordered).
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), TransportError>;
    /// Queues records in order; the returned future resolves when all are durable.
    async fn send_batch(&self, records: Vec<Record>) -> Result<Delivery, TransportError>;
    /// Queues one record; the returned future resolves when it is durable.
    async fn send(&self, record: Record) -> Result<Delivery, TransportError> {
        self.send_batch(vec![record]).await
    }
}

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
