//! Turns change events into records, closes transactions with a [`TxEnd`] marker and
//! reports which source positions are durable.
//!
//! Records are sent to the transport in batches (one [`Delivery`] per batch); each
//! batch's delivery goes into a bounded FIFO awaited by an acknowledger task in order. A
//! transaction's marker is sent only once every delivery queued before it resolved, so a
//! marker in the transport always means its events (and their schemas) are durable there:
//! a crash, or a transport that loses the tail of one topic but not another (Kafka
//! partitions are independent), never leaves a marker whose events are missing.
//! Markers are pipelined (the next transaction's events are not held back while a marker
//! is in flight). A transaction's acknowledgement token (the PostgreSQL commit end LSN) is
//! released only after its marker is durable: that token is what the source may confirm
//! upstream (slot feedback). A failed delivery stops acknowledgements for good and
//! surfaces as an error, so the capture restarts from the last confirmed position and
//! nothing is skipped. The FIFOs' bounds plus the transport's queue bound the memory in
//! flight whatever the transaction size.

use crate::error::CaptureError;
use crate::stats::{op_index, CaptureStats};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tributary_schemas::{
    encode_key, encode_tx_end, encode_value, schema_id, AvroSchemas, ChangeEvent, Position,
    SchemaId, TopicCount, TxEnd, TX_END_SCHEMA,
};
use tributary_transport::topics::{
    schema_topic, table_topic, transactions_topic, RegisteredSchema,
};
use tributary_transport::TransportError;
use tributary_transport::{Delivery, Producer, Record};

/// Records that may be in flight before `event` waits.
const IN_FLIGHT: usize = 65_536;
/// Records sent to the transport together (one delivery and one wake-up per batch).
const BATCH: usize = 256;

enum Pending {
    /// A batch of records sent; resolves when all are durable.
    Delivery(Delivery),
    /// A transaction marker, to send once everything before it is durable.
    Marker(Record),
    /// A position: everything before it is durable once reached.
    Mark { mark: u64, token: Option<u64> },
}

/// What the first acknowledger stage hands to the second, in order.
enum Sent {
    Marker(Delivery),
    Mark { mark: u64, token: Option<u64> },
}

/// What the acknowledger has confirmed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acked {
    /// Highest mark whose preceding deliveries all resolved.
    pub mark: u64,
    /// Highest acknowledgement token released.
    pub token: Option<u64>,
    /// Set when a delivery failed; nothing after it is acknowledged.
    pub failed: Option<String>,
}

impl Acked {
    /// The acknowledgement `acked` holds after `changed` (what its `changed()` returned),
    /// or the error that ends a capture: the publisher stopped, or a delivery failed.
    pub fn take(
        acked: &mut watch::Receiver<Acked>,
        changed: Result<(), watch::error::RecvError>,
    ) -> Result<Acked, CaptureError> {
        if changed.is_err() {
            return Err(CaptureError::Replication("publisher stopped".into()));
        }
        let a = acked.borrow_and_update().clone();
        if let Some(message) = a.failed {
            return Err(CaptureError::Replication(format!(
                "publishing failed: {message}"
            )));
        }
        Ok(a)
    }
}

struct OpenTx {
    id: Option<u64>,
    commit_ts_micros: i64,
    first: Position,
    last: Position,
    /// Events per topic and operation (in [`OPS`](crate::stats::OPS) order), in
    /// first-written order; the topics are the `ready` ones, so the same topic is the same
    /// allocation and compares by pointer.
    topics: Vec<(Arc<str>, [u64; 5])>,
}

/// Publishes one source's events.
pub struct Publisher {
    producer: Arc<dyn Producer>,
    source: String,
    prefix: String,
    registered: HashSet<SchemaId>,
    topics: HashSet<String>,
    /// The topic of each value schema whose topic exists and whose schemas are registered.
    ready: HashMap<SchemaId, Arc<str>>,
    /// The last entry of `ready` used: consecutive events mostly share a table.
    last_ready: Option<(SchemaId, Arc<str>)>,
    open: Option<OpenTx>,
    pending: mpsc::Sender<Pending>,
    /// Records not yet sent to the transport (at most `BATCH`).
    batch: Vec<Record>,
    acked: watch::Receiver<Acked>,
    next_mark: u64,
    stats: Arc<CaptureStats>,
    on_connected: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Publisher {
    /// A publisher for `source` writing topics under `prefix`.
    pub fn new(producer: Arc<dyn Producer>, source: &str, prefix: &str) -> Self {
        let (pending, rx) = mpsc::channel(IN_FLIGHT / BATCH);
        let (ack_tx, acked) = watch::channel(Acked::default());
        // A weak reference: the transport (and the embedded log's lock) is released when the
        // publisher goes, not when its acknowledger notices.
        tokio::spawn(acknowledge(rx, Arc::downgrade(&producer), ack_tx));
        Publisher {
            producer,
            source: source.into(),
            prefix: prefix.into(),
            registered: HashSet::new(),
            topics: HashSet::new(),
            ready: HashMap::new(),
            last_ready: None,
            open: None,
            pending,
            batch: Vec::with_capacity(BATCH),
            acked,
            next_mark: 0,
            stats: Arc::default(),
            on_connected: None,
        }
    }

    /// This publisher, calling `f` when its capture has connected to the source.
    pub fn on_connected(mut self, f: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_connected = Some(f);
        self
    }

    /// Called by the capture once it is connected to its source and has checked it.
    pub fn connected(&self) {
        if let Some(f) = &self.on_connected {
            f();
        }
    }

    /// This publisher, counting into `stats`.
    pub fn with_stats(mut self, stats: Arc<CaptureStats>) -> Self {
        self.stats = stats;
        self
    }

    /// A receiver of acknowledgement progress.
    pub fn acked(&self) -> watch::Receiver<Acked> {
        self.acked.clone()
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn push(&mut self, record: Record) -> Result<(), CaptureError> {
        self.batch.push(record);
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the records gathered so far and hands their delivery to the acknowledger.
    async fn flush(&mut self) -> Result<(), CaptureError> {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            let delivery = self.producer.send_batch(batch).await?;
            self.pending
                .send(Pending::Delivery(delivery))
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    async fn ensure_topic(&mut self, topic: &str) -> Result<(), CaptureError> {
        if !self.topics.contains(topic) {
            self.producer.ensure_topics(&[topic.to_string()]).await?;
            self.topics.insert(topic.to_string());
        }
        Ok(())
    }

    async fn register(
        &mut self,
        id: SchemaId,
        subject: String,
        text: &str,
    ) -> Result<(), CaptureError> {
        if self.registered.contains(&id) {
            return Ok(());
        }
        let topic = schema_topic(&self.prefix);
        self.ensure_topic(&topic).await?;
        let value = serde_json::to_vec(&RegisteredSchema {
            id,
            subject,
            schema: text.to_string(),
        })
        .expect("serialising a schema record");
        self.push(Record {
            topic: topic.into(),
            key: Some(id.to_string().into_bytes()),
            value,
        })
        .await?;
        self.registered.insert(id);
        Ok(())
    }

    /// The topic of `event`'s table, created with its schemas registered on first use.
    async fn ready_topic(
        &mut self,
        schemas: &AvroSchemas,
        event: &ChangeEvent,
    ) -> Result<Arc<str>, CaptureError> {
        let topic = match self.ready.get(&schemas.value_id) {
            Some(topic) => topic.clone(),
            None => {
                let topic = table_topic(&self.prefix, &event.table.schema, &event.table.name);
                self.ensure_topic(&topic).await?;
                self.register(schemas.key_id, format!("{topic}-key"), &schemas.key_text)
                    .await?;
                self.register(
                    schemas.value_id,
                    format!("{topic}-value"),
                    &schemas.value_text,
                )
                .await?;
                // Every schema version of a table shares one allocation of its topic name.
                let topic: Arc<str> = match self.ready.values().find(|t| ***t == *topic) {
                    Some(t) => t.clone(),
                    None => topic.into(),
                };
                self.ready.insert(schemas.value_id, topic.clone());
                topic
            }
        };
        self.last_ready = Some((schemas.value_id, topic.clone()));
        Ok(topic)
    }

    /// Publishes one event of the open transaction (opening it with the event's position).
    pub async fn event(
        &mut self,
        schemas: &AvroSchemas,
        event: &ChangeEvent,
    ) -> Result<(), CaptureError> {
        let topic = match &self.last_ready {
            Some((id, topic)) if *id == schemas.value_id => topic.clone(),
            _ => self.ready_topic(schemas, event).await?,
        };
        let key = if event.key.is_empty() {
            None
        } else {
            Some(encode_key(schemas, &event.key)?)
        };
        let value = encode_value(schemas, event)?;
        let open = self.open.get_or_insert_with(|| OpenTx {
            id: event.tx.id,
            commit_ts_micros: event.tx.commit_ts_micros,
            first: event.position,
            last: event.position,
            topics: Vec::new(),
        });
        open.last = event.position;
        let op = op_index(event.op);
        match open.topics.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &topic)) {
            Some((_, counts)) => counts[op] += 1,
            None => {
                let mut counts = [0; 5];
                counts[op] = 1;
                open.topics.push((topic.clone(), counts));
            }
        }
        self.push(Record { topic, key, value }).await
    }

    /// Closes the open transaction with its marker (if it had events) and queues `token`
    /// to be released once everything so far is durable. Returns the mark to wait for.
    pub async fn commit(&mut self, token: Option<u64>) -> Result<u64, CaptureError> {
        if let Some(open) = self.open.take() {
            self.stats.transaction(open.commit_ts_micros, &open.topics);
            let end = TxEnd {
                source: self.source.clone(),
                id: open.id,
                commit_ts_micros: open.commit_ts_micros,
                first: open.first,
                last: open.last,
                topics: open
                    .topics
                    .into_iter()
                    .map(|(topic, counts)| TopicCount {
                        topic: topic.to_string(),
                        count: counts.iter().sum(),
                    })
                    .collect(),
            };
            let topic = transactions_topic(&self.prefix);
            self.ensure_topic(&topic).await?;
            self.register(
                schema_id(TX_END_SCHEMA),
                format!("{topic}-value"),
                TX_END_SCHEMA,
            )
            .await?;
            let marker = Record {
                topic: topic.into(),
                key: None,
                value: encode_tx_end(&end)?,
            };
            self.flush().await?;
            self.pending
                .send(Pending::Marker(marker))
                .await
                .map_err(|_| TransportError::Closed)?;
        }
        self.next_mark += 1;
        let mark = self.next_mark;
        self.flush().await?;
        self.pending
            .send(Pending::Mark { mark, token })
            .await
            .map_err(|_| TransportError::Closed)?;
        Ok(mark)
    }

    /// Whether a transaction is open (events published, marker not yet written).
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Waits until everything up to `mark` is durable.
    pub async fn wait_for(&self, mark: u64) -> Result<(), CaptureError> {
        let mut acked = self.acked.clone();
        let state = acked
            .wait_for(|a| a.mark >= mark || a.failed.is_some())
            .await
            .map_err(|_| TransportError::Closed)?
            .clone();
        match state.failed {
            Some(message) => Err(CaptureError::Replication(format!(
                "publishing failed, nothing after the last durable transaction was confirmed: {message}"
            ))),
            None => Ok(()),
        }
    }
}

/// First stage: awaits deliveries in order and sends each marker once everything before
/// it is durable; hands marker deliveries and marks to the second stage.
async fn acknowledge(
    mut rx: mpsc::Receiver<Pending>,
    producer: std::sync::Weak<dyn Producer>,
    tx: watch::Sender<Acked>,
) {
    let (sent_tx, sent_rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(acknowledge_markers(sent_rx, tx.clone()));
    let fail = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "delivery failed; acknowledgements stop here");
        tx.send_modify(|a| a.failed = Some(e.to_string()));
    };
    while let Some(p) = rx.recv().await {
        let sent = match p {
            Pending::Delivery(d) => {
                if let Err(e) = d.await {
                    return fail(&e);
                }
                continue;
            }
            Pending::Marker(record) => {
                let Some(producer) = producer.upgrade() else {
                    return fail(&TransportError::Closed);
                };
                match producer.send(record).await {
                    Ok(d) => Sent::Marker(d),
                    Err(e) => return fail(&e),
                }
            }
            Pending::Mark { mark, token } => Sent::Mark { mark, token },
        };
        if sent_tx.send(sent).await.is_err() {
            return;
        }
    }
}

/// Second stage: awaits marker deliveries in order and releases marks.
async fn acknowledge_markers(mut rx: mpsc::Receiver<Sent>, tx: watch::Sender<Acked>) {
    while let Some(s) = rx.recv().await {
        match s {
            Sent::Marker(d) => {
                if let Err(e) = d.await {
                    tracing::error!(error = %e, "delivery of a transaction marker failed; acknowledgements stop here");
                    tx.send_modify(|a| a.failed = Some(e.to_string()));
                    return;
                }
            }
            Sent::Mark { mark, token } => tx.send_modify(|a| {
                a.mark = mark;
                if token.is_some() {
                    a.token = token;
                }
            }),
        }
    }
}
