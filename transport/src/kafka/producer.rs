//! The Kafka transport (rdkafka with its vendored librdkafka).
//!
//! The producer is idempotent (no duplicates or reordering from retries) and compresses
//! batches with lz4, which costs the producer less CPU than zstd (`compression.type` in
//! the transport's `properties` picks another codec). `message.timeout.ms` defaults to 0 (never give up): while the brokers are
//! unreachable records wait in librdkafka's bounded queue, sending then waits for room,
//! and nothing is acknowledged upstream, so an outage delays capture but loses nothing.
//!
//! Records are handed to librdkafka by a thread of their own, a batch at a time through a
//! small bounded channel: producing (topic lookup, partitioning, copying, locking) was a
//! fifth of the capture thread's time, and it now runs beside it. One thread keeps the
//! order in which batches were sent.

use crate::TransportError;
use crate::{Delivery, Producer, Record};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Batches waiting for the producing thread.
const QUEUED_BATCHES: usize = 4;

/// Default time allowed to reach the brokers at start-up.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 15;

/// How to reach Kafka.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Replication factor of the topics Tributary creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Seconds allowed to reach the brokers at start-up.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Extra librdkafka properties, applied last (e.g. `security.protocol`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_replication() -> i32 {
    1
}

fn default_connect_timeout() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}

/// Whether librdkafka property `key` holds a secret (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, …).
fn secret_property(key: &str) -> bool {
    ["password", "secret", "token"]
        .iter()
        .any(|word| key.to_ascii_lowercase().contains(word))
}

impl std::fmt::Debug for KafkaSettings {
    /// Shows every setting, the values of secret properties as `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if secret_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("replication_factor", &self.replication_factor)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("properties", &properties)
            .finish()
    }
}

impl KafkaSettings {
    /// Settings for `brokers` with defaults for the rest.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            replication_factor: default_replication(),
            connect_timeout_secs: default_connect_timeout(),
            properties: BTreeMap::new(),
        }
    }

    /// A librdkafka configuration with the brokers and the extra properties.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config.set_log_level(RDKafkaLogLevel::Warning);
        config
    }
}

/// Routes librdkafka's errors and logs to `tracing`.
#[derive(Debug, Clone, Default)]
pub struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "kafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "kafka: {message}"),
            _ => tracing::debug!(facility = fac, "kafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, "kafka client error: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for TracingContext {}

/// What the records of one batch share: how many are not yet delivered, and who waits.
///
/// Each record carries a reference as its delivery opaque, so a delivery report costs
/// one atomic decrement, with no copy of the message and no allocation.
pub struct BatchAck {
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Result<(), TransportError>>>>,
}

impl BatchAck {
    fn finish(&self, result: Result<(), TransportError>) {
        let sender = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sender) = sender {
            let _ = sender.send(result);
        }
    }
}

impl ProducerContext for TracingContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        match result {
            Ok(_) => {
                if ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    ack.finish(Ok(()));
                }
            }
            // The first failure settles the batch; later reports find it settled.
            Err((e, message)) => ack.finish(Err(kafka_error(
                &format!("delivering to {}", message.topic()),
                e.clone(),
            ))),
        }
    }
}

/// Runs `probe` (a blocking metadata request given the timeout) and names the brokers if
/// it fails.
pub async fn check_reachable<F>(settings: &KafkaSettings, probe: F) -> Result<(), TransportError>
where
    F: FnOnce(Duration) -> Result<(), KafkaError> + Send + 'static,
{
    let timeout = Duration::from_secs(settings.connect_timeout_secs);
    tokio::task::spawn_blocking(move || probe(timeout))
        .await
        .map_err(|e| TransportError::Kafka {
            context: "metadata request".into(),
            message: e.to_string(),
        })?
        .map_err(|e| TransportError::Kafka {
            context: format!(
                "cannot reach brokers {} (waited {}s)",
                settings.brokers, settings.connect_timeout_secs
            ),
            message: e.to_string(),
        })
}

pub(crate) fn kafka_error(context: &str, e: KafkaError) -> TransportError {
    TransportError::Kafka {
        context: context.into(),
        message: e.to_string(),
    }
}

/// An idempotent, lz4-compressing Kafka producer.
pub struct KafkaProducer {
    /// Batches for the producing thread, with what their delivery waits on.
    batches: mpsc::Sender<(Vec<Record>, Arc<BatchAck>)>,
    admin: AdminClient<TracingContext>,
    replication: i32,
    known_topics: Mutex<HashSet<String>>,
}

impl KafkaProducer {
    /// Creates the producer and checks the brokers are reachable.
    pub async fn connect(settings: &KafkaSettings) -> Result<Self, TransportError> {
        let config = settings.client_config(&[
            ("enable.idempotence", "true"),
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "0"),
            ("queue.buffering.max.messages", "200000"),
            ("queue.buffering.max.kbytes", "65536"),
            ("batch.size", "1000000"),
        ]);
        let producer: ThreadedProducer<TracingContext> = config
            .create_with_context(TracingContext)
            .map_err(|e| kafka_error("creating producer", e))?;
        let admin: AdminClient<TracingContext> = config
            .create_with_context(TracingContext)
            .map_err(|e| kafka_error("creating admin client", e))?;
        // A client without a polling thread, only to ask for metadata.
        let probe: BaseProducer<TracingContext> = config
            .create_with_context(TracingContext)
            .map_err(|e| kafka_error("creating producer", e))?;
        check_reachable(settings, move |t| {
            probe.client().fetch_metadata(None, t).map(|_| ())
        })
        .await?;
        let (batches, rx) = mpsc::channel(QUEUED_BATCHES);
        std::thread::Builder::new()
            .name("kafka-produce".into())
            .spawn(move || produce_loop(producer, rx))
            .map_err(|e| TransportError::Kafka {
                context: "starting the producing thread".into(),
                message: e.to_string(),
            })?;
        Ok(KafkaProducer {
            batches,
            admin,
            replication: settings.replication_factor,
            known_topics: Mutex::new(HashSet::new()),
        })
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), TransportError> {
        let missing: Vec<&String> = {
            let known = self.known_topics.lock().expect("not poisoned");
            topics.iter().filter(|t| !known.contains(*t)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(self.replication)))
            .collect();
        let results = self
            .admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .map_err(|e| kafka_error("creating topics", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(TransportError::Kafka {
                        context: format!("creating topic {topic}"),
                        message: code.to_string(),
                    })
                }
            }
        }
        self.known_topics
            .lock()
            .expect("not poisoned")
            .extend(missing.into_iter().cloned());
        Ok(())
    }

    async fn send_batch(&self, records: Vec<Record>) -> Result<Delivery, TransportError> {
        let (done, settled) = oneshot::channel();
        let ack = Arc::new(BatchAck {
            remaining: AtomicUsize::new(records.len()),
            done: Mutex::new(Some(done)),
        });
        if records.is_empty() {
            ack.finish(Ok(()));
        } else {
            self.batches
                .send((records, ack))
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(Box::pin(async move {
            settled.await.map_err(|_| TransportError::Closed)?
        }))
    }
}

/// The producing thread: hands each batch's records to librdkafka in order. After a
/// failure it produces nothing more and settles every later batch with that failure, so no
/// record reaches Kafka after a gap. It ends once the producer is dropped and the batches
/// already queued are handled (or at once while librdkafka's queue is full); librdkafka's
/// own drop then purges what was never delivered.
fn produce_loop(
    producer: ThreadedProducer<TracingContext>,
    mut batches: mpsc::Receiver<(Vec<Record>, Arc<BatchAck>)>,
) {
    let mut failed: Option<String> = None;
    while let Some((records, ack)) = batches.blocking_recv() {
        if let Some(message) = &failed {
            ack.finish(Err(TransportError::Kafka {
                context: "producing after an earlier failure".into(),
                message: message.clone(),
            }));
            continue;
        }
        if let Err(e) = produce(&producer, &records, &ack, &batches) {
            failed = Some(e.to_string());
            ack.finish(Err(e));
        }
    }
}

/// Queues `records` in librdkafka, waiting while its bounded queue is full (unless the
/// producer is dropped meanwhile).
fn produce(
    producer: &ThreadedProducer<TracingContext>,
    records: &[Record],
    ack: &Arc<BatchAck>,
    batches: &mpsc::Receiver<(Vec<Record>, Arc<BatchAck>)>,
) -> Result<(), TransportError> {
    // Taken once the queue is first full (not for every record).
    let mut waiting: Option<(std::time::Instant, std::time::Instant)> = None;
    for record in records {
        loop {
            let mut base =
                BaseRecord::with_opaque_to(&record.topic, ack.clone()).payload(&record.value);
            if let Some(k) = &record.key {
                base = base.key(k);
            }
            match producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if batches.is_closed() {
                        return Err(TransportError::Closed);
                    }
                    // Backpressure: the bounded queue is full until the brokers catch up.
                    let now = std::time::Instant::now();
                    let (started, warned_at) = waiting.get_or_insert((now, now));
                    if warned_at.elapsed() >= Duration::from_secs(10) {
                        *warned_at = now;
                        tracing::warn!(topic = %record.topic, waited_s = started.elapsed().as_secs(), "kafka queue full, waiting for the brokers");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(kafka_error(&format!("producing to {}", record.topic), e))
                }
            }
        }
    }
    Ok(())
}
