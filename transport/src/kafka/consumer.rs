//! Readers over Kafka: one consumer per group, one split partition queue per topic.
//!
//! Topics are assigned incrementally as the apply loop meets them (a transaction marker
//! names the data topics). A reader resumes after the group's committed offset by reading
//! from the start and skipping the records before it (see `KafkaConsumer::reader`). Every topic Tributary writes has one partition, so a
//! topic is totally ordered. Offsets are committed explicitly, never automatically.

use super::{check_reachable, KafkaSettings, TracingContext};
use crate::TransportError;
use crate::{Consumed, Consumer, TopicReader};
use async_trait::async_trait;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

type Inner = StreamConsumer<TracingContext>;

/// A consumer group on Kafka.
pub struct KafkaConsumer {
    group: Arc<Inner>,
    settings: KafkaSettings,
}

fn kafka_err(context: impl Into<String>, e: rdkafka::error::KafkaError) -> TransportError {
    TransportError::Kafka {
        context: context.into(),
        message: e.to_string(),
    }
}

fn create(settings: &KafkaSettings, group: &str) -> Result<Arc<Inner>, TransportError> {
    let consumer: Inner = settings
        .client_config(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("fetch.wait.max.ms", "50"),
            ("queued.max.messages.kbytes", "32768"),
        ])
        .create_with_context(TracingContext)
        .map_err(|e| kafka_err("creating consumer", e))?;
    let consumer = Arc::new(consumer);
    // The main queue must be polled to serve events; all messages come through the split
    // partition queues.
    let main = consumer.clone();
    tokio::spawn(async move {
        loop {
            match main.recv().await {
                Ok(m) => tracing::warn!(
                    topic = m.topic(),
                    offset = m.offset(),
                    "message on the main consumer queue ignored"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(consumer)
}

impl KafkaConsumer {
    /// Joins consumer group `group` (manual assignment, explicit commits).
    pub async fn connect(settings: &KafkaSettings, group: &str) -> Result<Self, TransportError> {
        let consumer = create(settings, group)?;
        let probe = consumer.clone();
        check_reachable(settings, move |t| probe.fetch_metadata(None, t).map(|_| ())).await?;
        Ok(KafkaConsumer {
            group: consumer,
            settings: settings.clone(),
        })
    }

    fn open(
        consumer: &Arc<Inner>,
        topic: &str,
        resume_at: Option<u64>,
    ) -> Result<Box<dyn TopicReader>, TransportError> {
        let offset = Offset::Beginning;
        let queue =
            consumer
                .split_partition_queue(topic, 0)
                .ok_or_else(|| TransportError::Kafka {
                    context: format!("reading {topic}"),
                    message: "invalid topic name".into(),
                })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, offset)
            .map_err(|e| kafka_err(format!("assigning {topic}"), e))?;
        consumer
            .incremental_assign(&tpl)
            .map_err(|e| kafka_err(format!("assigning {topic}"), e))?;
        Ok(Box::new(KafkaReader {
            topic: topic.to_string(),
            queue,
            resume_at,
        }))
    }
}

struct KafkaReader {
    topic: String,
    queue: StreamPartitionQueue<TracingContext>,
    /// The committed offset resumed from; records before it are skipped.
    resume_at: Option<u64>,
}

#[async_trait]
impl TopicReader for KafkaReader {
    async fn next(&mut self, wait: Option<Duration>) -> Result<Option<Consumed>, TransportError> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let received = match deadline {
                Some(d) => match tokio::time::timeout_at(d, self.queue.recv()).await {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                },
                None => self.queue.recv().await,
            };
            if let (Ok(m), Some(from)) = (&received, self.resume_at) {
                if (m.offset() as u64) < from {
                    continue;
                }
                self.resume_at = None;
            }
            match received {
                Ok(m) => {
                    return Ok(Some(Consumed {
                        topic: self.topic.clone(),
                        offset: m.offset() as u64,
                        next_offset: m.offset() as u64 + 1,
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    }))
                }
                // The capture creates topics when it first writes them; until then there
                // is simply nothing to read.
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition))
                | Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopic)) => {
                    let nap = tokio::time::Instant::now() + Duration::from_millis(200);
                    tokio::time::sleep_until(deadline.map_or(nap, |d| d.min(nap))).await;
                }
                Err(e) => return Err(kafka_err(format!("reading {}", self.topic), e)),
            }
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn reader(&self, topic: &str) -> Result<Box<dyn TopicReader>, TransportError> {
        // Resume by reading from the start and skipping what lies before the committed
        // offset: a fetch that starts inside a record batch is served by Kafka but not by
        // every Kafka-protocol broker (tansu 0.6 returns nothing), which would stall the
        // reader. The cost is one pass over the retained part of the topic per restart.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let group = self.group.clone();
        let committed = tokio::task::spawn_blocking(move || {
            group.committed_offsets(tpl, Duration::from_secs(30))
        })
        .await
        .map_err(|e| TransportError::Kafka {
            context: format!("reading the committed offset of {topic}"),
            message: e.to_string(),
        })?
        .map_err(|e| kafka_err(format!("reading the committed offset of {topic}"), e))?;
        let resume_at = committed
            .elements()
            .first()
            .map(|e| e.offset())
            .and_then(|o| match o {
                Offset::Offset(n) if n > 0 => Some(n as u64),
                _ => None,
            });
        Self::open(&self.group, topic, resume_at)
    }

    async fn reader_from_start(&self, topic: &str) -> Result<Box<dyn TopicReader>, TransportError> {
        // A group of its own, so the main group's assignment and commits stay untouched.
        let consumer = create(
            &self.settings,
            &format!("tributary-reader-{}", std::process::id()),
        )?;
        Self::open(&consumer, topic, None)
    }

    async fn commit(&self, offsets: &[(String, u64)]) -> Result<(), TransportError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, offset) in offsets {
            tpl.add_partition_offset(topic, 0, Offset::Offset(*offset as i64))
                .map_err(|e| kafka_err(format!("committing {topic}"), e))?;
        }
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || group.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| TransportError::Kafka {
                context: "committing offsets".into(),
                message: e.to_string(),
            })?
            .map_err(|e| kafka_err("committing offsets", e))
    }
}
