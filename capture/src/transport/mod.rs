//! Where captured events go: Kafka or the embedded on-disk log.
//!
//! Both transports offer the same contract: [`Producer::send_batch`] queues records in
//! order (waiting when the transport's bounded queue is full, which slows the source down)
//! and returns one [`Delivery`] that resolves once every one of them is durable
//! (acknowledged by all in-sync Kafka replicas, or fsynced to the log), or as soon as one
//! failed. Records of one topic keep their order. One delivery per batch, not per record,
//! keeps the bookkeeping off the per-record path.

pub mod kafka;
pub mod log;

use crate::error::TransportError;
use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
