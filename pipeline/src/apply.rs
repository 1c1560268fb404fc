//! The apply loop: reassembles source transactions from the topics and applies each one
//! atomically to a sink, exactly once in effect.
//!
//! The loop reads the source's transaction-marker topic. For a marker covering positions
//! `first..=last` with `count` events in topic T, it reads T until it holds `count` events
//! with positions in that range, skipping what is older than `first` (events of a
//! transaction already applied, or of an attempt the capture repeated after a crash) and
//! positions it has already taken (duplicates from a repeated attempt) and positions beyond
//! `last`: a capture that crashed mid-transaction and restarted from its slot leaves the
//! broken-off attempt in the topic, and repeats it, with every later transaction, after
//! the older transactions it replays first. A transaction is applied only once all its
//! events are in hand, never partially.
//!
//! Markers at or below the sink's watermark are dropped without reading their events
//! (later markers skip those events as older than their own first position). Consecutive small
//! transactions share one sink transaction (up to `max_tx_events` events and 200 ms), which keeps each
//! source transaction atomic while making pgbench-style workloads fast. The sink commits
//! the watermark with the data; only then are the offsets committed, so a crash anywhere
//! replays at most what the watermark already covers.

use crate::conflict::{self, ConflictLog, ConflictRecord, Conflicts, QueuedConflict};
use crate::dead_letter::DeadLetters;
use crate::error::PipelineError;
use crate::merge::TablePolicy;
use crate::notify::Notifier;
use crate::registry::SchemaCache;
use crate::validate::{OnFail, Rules};
use prometheus::{Histogram, HistogramOpts};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tributary_schemas::{
    decode_tx_end, decode_value, unframe, AvroSchemas, ChangeEvent, Op, Position, TableId,
    TableSchema, TxEnd,
};
use tributary_sinks::{MergeStates, Sink};
use tributary_transport::topics::transactions_topic;
use tributary_transport::{Consumer, TopicReader};

/// Default events per sink batch.
pub const DEFAULT_BATCH_ROWS: usize = 5_000;
/// Default events after which a sink transaction is committed even if more are ready.
pub const DEFAULT_MAX_TX_EVENTS: usize = 100_000;
/// How often offsets are committed while transactions keep coming.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Longest a sink transaction stays open gathering ready source transactions, so a
/// steady stream is applied with low latency rather than in one ever-growing batch.
const MAX_TX_AGE: Duration = Duration::from_millis(200);

/// Upper bounds (seconds) of the sink-transaction duration histogram's buckets.
const BATCH_SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Progress counters, readable while the loop runs.
#[derive(Debug)]
pub struct ApplyStats {
    /// Events applied to the sink.
    pub events: AtomicU64,
    /// Source transactions applied.
    pub transactions: AtomicU64,
    /// Source transactions skipped as already applied.
    pub skipped: AtomicU64,
    /// Messages sent to the dead-letter file (undecodable, or rejected by a rule).
    pub dead_letters: AtomicU64,
    /// Events a rule with `on_fail = "skip"` dropped.
    pub skipped_by_rules: AtomicU64,
    /// Events Tributary itself wrote (from another source), not applied again.
    pub echoes: AtomicU64,
    /// Rows written with their merged image (tables under `[[conflicts]]`).
    pub merged_rows: AtomicU64,
    /// Merged changes whose own row image lost, wholly or in part, to another source's.
    pub conflicts: AtomicU64,
    /// Commit time (Unix micros) of the last applied transaction.
    pub last_commit_ts_micros: AtomicU64,
    /// True while the loop has nothing left to apply (its last wait for a transaction
    /// found none); false from the moment one arrives until the loop is idle again.
    pub caught_up: AtomicBool,
    /// Commit time (Unix micros) of the oldest source transaction read but not applied
    /// yet; 0 when there is none.
    pub oldest_pending_ts_micros: AtomicI64,
    /// Seconds each sink transaction took, from its first read to its commit.
    pub batch_seconds: Histogram,
}

impl Default for ApplyStats {
    fn default() -> Self {
        let opts = HistogramOpts::new(
            "tributary_apply_batch_seconds",
            "Seconds from the first read of a sink transaction to its commit.",
        )
        .buckets(BATCH_SECONDS_BUCKETS.to_vec());
        ApplyStats {
            events: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            skipped_by_rules: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            merged_rows: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            last_commit_ts_micros: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            oldest_pending_ts_micros: AtomicI64::new(0),
            batch_seconds: Histogram::with_opts(opts)
                .expect("the histogram's name, help and buckets are valid"),
        }
    }
}

/// Settings of one apply loop.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Source name.
    pub source: String,
    /// The source's topic prefix.
    pub prefix: String,
    /// Events per `Sink::apply` call.
    pub batch_rows: usize,
    /// Events per sink transaction when several source transactions are ready.
    pub max_tx_events: usize,
    /// Business rules checked before an event is applied.
    pub rules: Arc<Rules>,
    /// Sources whose changes, written by Tributary into another captured database, this
    /// sink must not apply again: the ones it takes directly, and the ones whose database
    /// it is.
    pub echo_sources: Vec<String>,
    /// Which tables merge, and how.
    pub conflicts: Arc<Conflicts>,
    /// Every event is taken as it was captured, Tributary's own writes too, without
    /// rules: the loop feeds the event-log archive.
    pub archive: bool,
    /// Whether the sink writes into this source's database: its changes are there
    /// already, and only tables that merge take them, into their merge states.
    pub own_database: bool,
    /// Taken by a loop into a sink where some table merges, from `begin` until its sink
    /// transaction ends.
    pub merge_lock: Arc<tokio::sync::Mutex<()>>,
    /// Where resolved conflicts are recorded; `None`: only counted.
    pub conflict_log: Option<Arc<ConflictLog>>,
    /// Where concurrent edits of `manual` columns wait for a person.
    pub manual_queue: Option<Arc<ConflictLog>>,
    /// The webhook resolved conflicts are announced to, and this loop's sink name.
    pub notify: Option<(Notifier, String)>,
}

/// Applies one source's transactions to one sink.
pub struct Applier {
    settings: ApplySettings,
    consumer: Arc<dyn Consumer>,
    tx_reader: Box<dyn TopicReader>,
    readers: HashMap<String, Box<dyn TopicReader>>,
    schemas: SchemaCache,
    sink: Box<dyn Sink>,
    dead: DeadLetters,
    offsets: BTreeMap<String, u64>,
    stats: Arc<ApplyStats>,
    /// Merge policy per table version (`None`: applied as it comes).
    policies: HashMap<(TableId, u32), Option<Arc<TablePolicy>>>,
    /// The sink's merge lock, while a sink transaction is open (when some table merges).
    merging: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Conflicts resolved, and `manual` conflicts queued, in the open sink transaction.
    resolved: (Vec<ConflictRecord>, Vec<QueuedConflict>),
}

impl Applier {
    /// Prepares the loop.
    pub async fn new(
        settings: ApplySettings,
        consumer: Arc<dyn Consumer>,
        sink: Box<dyn Sink>,
        dead: DeadLetters,
        stats: Arc<ApplyStats>,
    ) -> Result<Self, PipelineError> {
        let tx_reader = consumer
            .reader(&transactions_topic(&settings.prefix))
            .await?;
        let schemas =
            SchemaCache::open(consumer.as_ref(), &settings.source, &settings.prefix).await?;
        Ok(Applier {
            settings,
            consumer,
            tx_reader,
            readers: HashMap::new(),
            schemas,
            sink,
            dead,
            offsets: BTreeMap::new(),
            stats,
            policies: HashMap::new(),
            merging: None,
            resolved: Default::default(),
        })
    }

    /// Runs until `shutdown` turns true or an error occurs.
    pub async fn run(&mut self, shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
        let outcome = self.run_loop(shutdown).await;
        // Stopped or failed: whatever the transport holds now waits, so the loop is not
        // caught up until it runs again and finds nothing to read.
        self.stats.caught_up.store(false, Ordering::Relaxed);
        outcome
    }

    async fn run_loop(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
        let mut watermark = self.sink.watermark(&self.settings.source).await?;
        tracing::info!(source = self.settings.source, watermark = ?watermark.map(|p| p.to_string()), "apply loop starting");
        let mut last_commit = Instant::now();
        loop {
            // Wait for the next marker, or shutdown (which wins when both are ready).
            let first = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                record = self.tx_reader.next(Some(Duration::from_millis(500))) => record?,
            };
            let Some(record) = first else {
                // Idle: a good moment to commit offsets.
                self.stats.caught_up.store(true, Ordering::Relaxed);
                self.commit_offsets().await?;
                self.sink.idle().await?;
                last_commit = Instant::now();
                continue;
            };
            self.stats.caught_up.store(false, Ordering::Relaxed);
            let mut pending = Some(record);
            let opened_at = Instant::now();
            let mut open = false;
            let mut events_in_tx = 0usize;
            let mut last_applied: Option<Position> = None;
            let (mut applied_txs, mut last_commit_ts) = (0u64, 0i64);
            while let Some(record) = pending.take() {
                self.offsets
                    .insert(record.topic.clone(), record.next_offset);
                let end = decode_tx_end(&record.value).map_err(|e| {
                    PipelineError::Inconsistent(format!(
                        "transaction marker at {} offset {} cannot be decoded ({e}); the stream cannot be reassembled past it",
                        record.topic, record.offset
                    ))
                })?;
                // Compared with what this sink transaction already holds too: a capture
                // that restarted replays markers, and a replayed one must neither be
                // applied again nor move the watermark back.
                let applied_up_to = watermark.max(last_applied);
                let apply = applied_up_to.is_none_or(|w| end.last > w);
                if apply {
                    // Kept across a failed attempt: it is still the oldest not applied.
                    let _ = self.stats.oldest_pending_ts_micros.compare_exchange(
                        0,
                        end.commit_ts_micros.max(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                if apply && !open {
                    self.begin().await?;
                    open = true;
                }
                // An applied transaction's events need not be read: later markers skip them
                // as older than their own first position.
                let n = if apply {
                    let mut prior = last_applied;
                    self.take_transaction(&end, &mut prior).await?
                } else {
                    0
                };
                if apply {
                    events_in_tx += n;
                    last_applied = Some(end.last);
                    applied_txs += 1;
                    last_commit_ts = last_commit_ts.max(end.commit_ts_micros);
                } else {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
                if events_in_tx < self.settings.max_tx_events && opened_at.elapsed() < MAX_TX_AGE {
                    pending = self.tx_reader.next(Some(Duration::ZERO)).await?;
                }
            }
            if let Some(last) = last_applied {
                self.sink.commit(&self.settings.source, last).await?;
                self.merging = None;
                self.record_conflicts()?;
                watermark = Some(last);
                // Counted once the sink committed: a transaction rolled back by an error
                // is applied again, and counted then.
                self.stats
                    .events
                    .fetch_add(events_in_tx as u64, Ordering::Relaxed);
                self.stats
                    .transactions
                    .fetch_add(applied_txs, Ordering::Relaxed);
                self.stats
                    .last_commit_ts_micros
                    .fetch_max(last_commit_ts.max(0) as u64, Ordering::Relaxed);
                self.stats
                    .batch_seconds
                    .observe(opened_at.elapsed().as_secs_f64());
                self.stats
                    .oldest_pending_ts_micros
                    .store(0, Ordering::Relaxed);
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                self.commit_offsets().await?;
                last_commit = Instant::now();
            }
            self.sink.idle().await?;
        }
        self.commit_offsets().await?;
        Ok(())
    }

    async fn commit_offsets(&mut self) -> Result<(), PipelineError> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(String, u64)> = std::mem::take(&mut self.offsets).into_iter().collect();
        self.consumer.commit(&offsets).await?;
        Ok(())
    }

    async fn reader(&mut self, topic: &str) -> Result<&mut Box<dyn TopicReader>, PipelineError> {
        if !self.readers.contains_key(topic) {
            let reader = self.consumer.reader(topic).await?;
            self.readers.insert(topic.to_string(), reader);
        }
        Ok(self.readers.get_mut(topic).expect("inserted above"))
    }

    /// Reads and applies the events of one transaction; returns how many.
    ///
    /// `prior` is the position of the last source transaction already applied in the
    /// open sink transaction, if any. When this transaction brings a table version the
    /// sink can only prepare outside a transaction (MySQL commits DDL), the earlier ones
    /// are committed first, before anything of this one is applied, so the schema change
    /// falls between two source transactions.
    async fn take_transaction(
        &mut self,
        end: &TxEnd,
        prior: &mut Option<Position>,
    ) -> Result<usize, PipelineError> {
        let mut total = 0;
        let mut applied_any = false;
        for tc in &end.topics {
            let mut taken = 0u64;
            let mut last: Option<Position> = None;
            let mut batch: Vec<ChangeEvent> = Vec::new();
            let mut batch_schema: Option<Arc<AvroSchemas>> = None;
            let mut waiting_since = Instant::now();
            while taken < tc.count {
                let reader = self.reader(&tc.topic).await?;
                let Some(record) = reader.next(Some(Duration::from_secs(30))).await? else {
                    tracing::warn!(
                        topic = tc.topic, have = taken, want = tc.count, first = %end.first, last = %end.last,
                        waited_s = waiting_since.elapsed().as_secs(), "waiting for the events of a transaction"
                    );
                    continue;
                };
                waiting_since = Instant::now();
                self.offsets
                    .insert(record.topic.clone(), record.next_offset);
                let (schemas, mut event) = match self.decode(&record.value).await {
                    Ok(decoded) => decoded,
                    // The archive holds every event or says why it stopped.
                    Err(e) if !e.is_transient() && !self.settings.archive => {
                        self.dead.record(&record, &e.to_string()).await?;
                        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                        taken += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // Older than the transaction: already applied. At or below the last taken:
                // a duplicate from a repeated attempt. Beyond its end: part of an attempt the
                // capture broke off and repeated after a restart; the repetition (which also
                // repeats every later transaction) follows, so keep reading.
                if event.position < end.first
                    || last.is_some_and(|l| event.position <= l)
                    || event.position > end.last
                {
                    tracing::debug!(topic = tc.topic, offset = record.offset, position = %event.position, first = %end.first, last = %end.last, "skipping event outside the transaction");
                    continue;
                }
                last = Some(event.position);
                taken += 1;
                // Written by Tributary from a source this sink takes directly, or from this
                // sink's own database: applying it would echo it.
                let echo = !self.settings.archive
                    && event.written_by_tributary().is_some_and(|s| {
                        s.is_empty() || self.settings.echo_sources.iter().any(|e| e == s)
                    });
                if echo {
                    self.stats.echoes.fetch_add(1, Ordering::Relaxed);
                }
                if self.settings.own_database {
                    // Already in the sink's database: only a merged table takes it (an
                    // echo too, see `conflict`), into its merge states.
                    if self.policy(&schemas.table)?.is_none() {
                        continue;
                    }
                    // Written by another Tributary deployment: a change like a local one.
                    if !echo && event.written_by_tributary().is_some() {
                        event.origin = None;
                    }
                } else if echo {
                    continue;
                }
                let checked = !(self.settings.archive
                    || self.settings.own_database && event.written_by_tributary().is_some());
                let violation = if checked {
                    self.settings.rules.check(&schemas.table, &event)?
                } else {
                    None
                };
                if let Some(v) = violation {
                    match v.on_fail {
                        OnFail::DeadLetter => {
                            self.dead.record_rejected(&record, &v, &event).await?;
                            self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                        }
                        OnFail::Skip => {
                            tracing::warn!(
                                rule = v.rule,
                                reason = v.reason,
                                "event skipped by a rule"
                            );
                            self.stats.skipped_by_rules.fetch_add(1, Ordering::Relaxed);
                        }
                        OnFail::Halt => return Err(PipelineError::Rejected(v.reason)),
                    }
                    continue;
                }
                let new_version = batch_schema
                    .as_ref()
                    .is_none_or(|s| s.value_id != schemas.value_id);
                if new_version && !applied_any && !self.sink.ready_for(&schemas.table) {
                    if let Some(position) = prior.take() {
                        tracing::debug!(table = %schemas.table.table, position = %position, "committing before a table version the sink must prepare");
                        self.sink.commit(&self.settings.source, position).await?;
                        self.record_conflicts()?;
                        self.sink.begin().await?;
                    }
                }
                if batch_schema
                    .as_ref()
                    .is_some_and(|s| s.value_id != schemas.value_id)
                {
                    applied_any |= self.flush(&mut batch, batch_schema.as_deref()).await?;
                }
                batch_schema = Some(schemas);
                batch.push(event);
                if batch.len() >= self.settings.batch_rows {
                    applied_any |= self.flush(&mut batch, batch_schema.as_deref()).await?;
                }
            }
            applied_any |= self.flush(&mut batch, batch_schema.as_deref()).await?;
            total += taken as usize;
        }
        Ok(total)
    }

    /// Applies `batch` (if any) and empties it; returns whether anything was applied.
    async fn flush(
        &mut self,
        batch: &mut Vec<ChangeEvent>,
        schemas: Option<&AvroSchemas>,
    ) -> Result<bool, PipelineError> {
        let mut applied = false;
        if let (false, Some(schemas)) = (batch.is_empty(), schemas) {
            match self.policy(&schemas.table)? {
                Some(policy) => {
                    let mode = if self.settings.own_database {
                        conflict::Mode::Own
                    } else {
                        conflict::Mode::Apply
                    };
                    self.merge(&schemas.table, &policy, batch, mode).await?
                }
                None => self.sink.apply(&schemas.table, batch).await?,
            }
            applied = true;
        }
        batch.clear();
        Ok(applied)
    }

    /// Applies `messages` (events taken out of the stream into the dead-letter queue,
    /// in queue order) in one sink transaction that leaves the watermark as it is;
    /// returns, per message, `None` when it was applied, or why it still was not (it
    /// cannot be decoded, or a rule still rejects it). Merged tables take them at their
    /// own commit time, so newer values keep winning, and once.
    pub async fn replay(
        &mut self,
        messages: &[Vec<u8>],
    ) -> Result<Vec<Option<String>>, PipelineError> {
        let mut outcomes = Vec::with_capacity(messages.len());
        self.begin().await?;
        for message in messages {
            let (schemas, event) = match self.decode(message).await {
                Ok(decoded) => decoded,
                Err(e) if !e.is_transient() => {
                    outcomes.push(Some(e.to_string()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(v) = self.settings.rules.check(&schemas.table, &event)? {
                outcomes.push(Some(v.reason));
                continue;
            }
            let events = std::slice::from_ref(&event);
            match self.policy(&schemas.table)? {
                Some(policy) => {
                    self.merge(&schemas.table, &policy, events, conflict::Mode::Replay)
                        .await?
                }
                None => self.sink.apply(&schemas.table, events).await?,
            }
            outcomes.push(None);
        }
        self.sink.commit_data().await?;
        self.merging = None;
        self.record_conflicts()?;
        Ok(outcomes)
    }

    /// Records the conflicts of the sink transaction just committed: the conflict log,
    /// the `manual` queue and the webhook.
    fn record_conflicts(&mut self) -> Result<(), PipelineError> {
        let (records, manual) = std::mem::take(&mut self.resolved);
        if let Some(log) = &self.settings.conflict_log {
            log.append(&records)?;
        }
        if let Some(queue) = &self.settings.manual_queue {
            queue.append(&manual)?;
        }
        if let Some((notifier, sink)) = &self.settings.notify {
            notifier.send(sink, &self.settings.source, &json_values(&records));
            notifier.send(sink, &self.settings.source, &json_values(&manual));
        }
        Ok(())
    }

    /// Opens a sink transaction. When some table merges, the loops into the sink take
    /// turns from here to the commit: a loop that waited for the merge lock in the middle
    /// of its transaction could hold locks (DDL, rows) the lock holder needs.
    async fn begin(&mut self) -> Result<(), PipelineError> {
        if !self.settings.conflicts.is_empty() && self.merging.is_none() {
            self.merging = Some(self.settings.merge_lock.clone().lock_owned().await);
        }
        self.sink.begin().await?;
        Ok(())
    }

    /// The merge policy of `table`, if it merges.
    fn policy(&mut self, table: &TableSchema) -> Result<Option<Arc<TablePolicy>>, PipelineError> {
        let key = (table.table.clone(), table.version);
        if let Some(p) = self.policies.get(&key) {
            return Ok(p.clone());
        }
        let policy = self.settings.conflicts.policy(table)?.map(Arc::new);
        self.policies.insert(key, policy.clone());
        Ok(policy)
    }

    /// Merges `events` of `table` into the sink's merge states and writes the merged
    /// rows (the sink's merge lock is held since `begin`).
    async fn merge(
        &mut self,
        table: &TableSchema,
        policy: &TablePolicy,
        events: &[ChangeEvent],
        mode: conflict::Mode,
    ) -> Result<(), PipelineError> {
        // Truncates split the batch: the table is emptied and its states forgotten.
        for part in events.split_inclusive(|e| e.op == Op::Truncate) {
            let (rows, truncate) = match part.split_last() {
                Some((last, rest)) if last.op == Op::Truncate => (rest, Some(last)),
                _ => (part, None),
            };
            if !rows.is_empty() {
                let keys = conflict::keys(table, rows);
                let stored = merge_states(self.sink.as_mut(), table)?
                    .lock_merge_states(table, &keys)
                    .await?;
                let merged = conflict::merge(table, policy, rows, mode, &keys, stored)?;
                if !merged.writes.is_empty() {
                    self.sink.apply(table, &merged.writes).await?;
                }
                if !merged.states.is_empty() {
                    merge_states(self.sink.as_mut(), table)?
                        .store_merge_states(table, &merged.states)
                        .await?;
                }
                self.stats
                    .merged_rows
                    .fetch_add(merged.writes.len() as u64, Ordering::Relaxed);
                self.stats
                    .conflicts
                    .fetch_add(merged.conflicts, Ordering::Relaxed);
                // Recorded once the sink transaction commits.
                self.resolved.0.extend(merged.records);
                self.resolved.1.extend(merged.manual);
            }
            if let Some(truncate) = truncate {
                if !self.settings.own_database {
                    self.sink
                        .apply(table, std::slice::from_ref(truncate))
                        .await?;
                }
                // The echo of a truncate this sink applied: its states were cleared then,
                // and rows merged since must keep theirs.
                let echo = mode == conflict::Mode::Own && truncate.written_by_tributary().is_some();
                if !echo {
                    merge_states(self.sink.as_mut(), table)?
                        .clear_merge_states(table)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn decode(
        &mut self,
        message: &[u8],
    ) -> Result<(Arc<AvroSchemas>, ChangeEvent), PipelineError> {
        let (id, datum) = unframe(message)?;
        let schemas = self.schemas.get(id).await?;
        let event = decode_value(&schemas, datum)?;
        Ok((schemas, event))
    }
}

/// The merge states of `sink`: a table that merges needs a sink that keeps them.
fn merge_states<'a>(
    sink: &'a mut dyn Sink,
    table: &TableSchema,
) -> Result<&'a mut dyn MergeStates, PipelineError> {
    sink.merge_states().ok_or_else(|| {
        PipelineError::Config(format!(
            "this sink keeps no merge state, so {} cannot be merged",
            table.table
        ))
    })
}

/// `records` as the webhook body holds them: the same JSON as their lines in the files.
fn json_values<T: serde::Serialize>(records: &[T]) -> Vec<serde_json::Value> {
    records
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    //! The apply loop over a real embedded log, with a sink that records what it is asked
    //! to do (the sink itself is tested against PostgreSQL in `tests/`).
    use super::*;
    use std::sync::Mutex;
    use tributary_capture::publisher::Publisher;
    use tributary_schemas::{Column, ColumnType, Op, Row, TableId, TableSchema, TxMeta, Value};
    use tributary_sinks::SinkError;
    use tributary_transport::log::EmbeddedConsumer;
    use tributary_transport::log::EmbeddedProducer;

    #[derive(Default)]
    struct Recorded {
        /// Keys applied, in order, per committed sink transaction.
        commits: Vec<(Vec<i64>, Position)>,
        open: Vec<i64>,
        watermark: Option<Position>,
        /// Whether the sink must prepare each table version outside a transaction (as
        /// MySQL's), and the versions it has prepared (on first apply).
        ddl_commits: bool,
        prepared: std::collections::HashSet<u32>,
    }

    struct RecordingSink(Arc<Mutex<Recorded>>);

    #[async_trait::async_trait]
    impl Sink for RecordingSink {
        async fn watermark(&mut self, _source: &str) -> Result<Option<Position>, SinkError> {
            Ok(self.0.lock().unwrap().watermark)
        }
        async fn begin(&mut self) -> Result<(), SinkError> {
            self.0.lock().unwrap().open.clear();
            Ok(())
        }
        fn ready_for(&self, table: &TableSchema) -> bool {
            let r = self.0.lock().unwrap();
            !r.ddl_commits || r.prepared.contains(&table.version)
        }
        async fn apply(
            &mut self,
            table: &TableSchema,
            events: &[ChangeEvent],
        ) -> Result<(), SinkError> {
            let mut r = self.0.lock().unwrap();
            r.prepared.insert(table.version);
            for e in events {
                match e.key[0] {
                    Value::Int64(k) => r.open.push(k),
                    ref other => panic!("unexpected key {other:?}"),
                }
            }
            Ok(())
        }
        async fn commit(&mut self, _source: &str, position: Position) -> Result<(), SinkError> {
            let mut r = self.0.lock().unwrap();
            let keys = std::mem::take(&mut r.open);
            r.commits.push((keys, position));
            r.watermark = Some(position);
            Ok(())
        }
        async fn commit_data(&mut self) -> Result<(), SinkError> {
            Err(SinkError::Protocol(
                "the recording sink takes no dead-letter replays".into(),
            ))
        }
        async fn rollback(&mut self) -> Result<(), SinkError> {
            self.0.lock().unwrap().open.clear();
            Ok(())
        }
    }

    fn schema() -> TableSchema {
        TableSchema {
            table: TableId::new("public", "t"),
            columns: vec![Column {
                name: "id".into(),
                ty: ColumnType::Int64,
                source_type: "bigint".into(),
                nullable: false,
                missing: None,
            }],
            primary_key: vec![0],
            version: 1,
        }
    }

    /// Publishes source transaction `lsn` inserting `keys` (positions `lsn:1..`).
    async fn publish(p: &mut Publisher, schemas: &AvroSchemas, lsn: u64, keys: &[i64]) {
        for (i, &k) in keys.iter().enumerate() {
            let mut row = vec![Value::Null; schemas.table.columns.len()];
            row[0] = Value::Int64(k);
            let event = ChangeEvent {
                source: "src".into(),
                table: schemas.table.table.clone(),
                schema_version: schemas.table.version,
                op: Op::Insert,
                key: vec![Value::Int64(k)],
                before: None,
                after: Some(Row(row)),
                position: Position::pg(lsn, i as u64 + 1),
                tx: TxMeta {
                    id: Some(lsn),
                    commit_ts_micros: 0,
                    first: Position::pg(lsn, 1),
                },
                origin: None,
            };
            p.event(schemas, &event).await.unwrap();
        }
        let mark = p.commit(Some(lsn)).await.unwrap();
        p.wait_for(mark).await.unwrap();
    }

    /// Runs an apply loop over the embedded log in `dir/log` into a recording sink that
    /// starts as `sink`, until the sink's watermark reaches `until`; then stops it.
    async fn apply_until(
        dir: &std::path::Path,
        sink: Recorded,
        until: Position,
    ) -> (Arc<Mutex<Recorded>>, Arc<ApplyStats>) {
        let recorded = Arc::new(Mutex::new(sink));
        let consumer = Arc::new(EmbeddedConsumer::open(&dir.join("log"), "g").unwrap());
        let stats = Arc::new(ApplyStats::default());
        let mut applier = Applier::new(
            ApplySettings {
                source: "src".into(),
                prefix: "src".into(),
                batch_rows: DEFAULT_BATCH_ROWS,
                max_tx_events: DEFAULT_MAX_TX_EVENTS,
                rules: Arc::default(),
                echo_sources: Vec::new(),
                archive: false,
                conflicts: Arc::default(),
                own_database: false,
                merge_lock: Arc::default(),
                conflict_log: None,
                manual_queue: None,
                notify: None,
            },
            consumer,
            Box::new(RecordingSink(recorded.clone())),
            DeadLetters::new(&dir.join("dead"), "t"),
            stats.clone(),
        )
        .await
        .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move { applier.run(shutdown).await });
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorded.lock().unwrap().watermark != Some(until) {
            assert!(
                Instant::now() < deadline,
                "the transaction ending at {until} was never applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
        (recorded, stats)
    }

    /// A capture that restarted replays transactions it had already published; when the
    /// originals and the replays are ready together they land in one sink transaction,
    /// and the replays must be neither applied again nor move the watermark back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replayed_transactions_in_one_sink_transaction_are_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let schemas = AvroSchemas::generate("src", &schema()).unwrap();
        let producer = Arc::new(EmbeddedProducer::open(&log).unwrap());
        let mut p = Publisher::new(producer.clone(), "src", "src");
        publish(&mut p, &schemas, 10, &[1, 2]).await;
        publish(&mut p, &schemas, 20, &[3, 4, 5]).await;
        // The restarted capture (a new publisher, as after a supervised restart) repeats
        // transaction 20, then goes on.
        let mut p = Publisher::new(producer, "src", "src");
        publish(&mut p, &schemas, 20, &[3, 4, 5]).await;
        publish(&mut p, &schemas, 30, &[6]).await;
        let (recorded, stats) =
            apply_until(dir.path(), Recorded::default(), Position::pg(30, 1)).await;
        let r = recorded.lock().unwrap();
        let applied: Vec<i64> = r.commits.iter().flat_map(|(k, _)| k.clone()).collect();
        assert_eq!(
            applied,
            vec![1, 2, 3, 4, 5, 6],
            "each row applied once, in order"
        );
        let positions: Vec<Position> = r.commits.iter().map(|(_, p)| *p).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "the watermark only moves forward: {positions:?}"
        );
        assert_eq!(stats.transactions.load(Ordering::Relaxed), 3);
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 1);
    }

    /// A sink whose DDL commits on its own (MySQL) must meet a new table version with no
    /// other source transaction in its open transaction: the loop commits the grouped
    /// ones first, so every sink commit ends on a source transaction boundary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_table_version_starts_a_new_sink_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let v1 = AvroSchemas::generate("src", &schema()).unwrap();
        let mut wider = schema();
        wider.version = 2;
        wider.columns.push(Column {
            name: "extra".into(),
            ty: ColumnType::Int64,
            source_type: "bigint".into(),
            nullable: true,
            missing: None,
        });
        let v2 = AvroSchemas::generate("src", &wider).unwrap();
        let producer = Arc::new(EmbeddedProducer::open(&log).unwrap());
        let mut p = Publisher::new(producer, "src", "src");
        publish(&mut p, &v1, 10, &[1, 2]).await;
        publish(&mut p, &v1, 20, &[3]).await;
        publish(&mut p, &v2, 30, &[4]).await;
        publish(&mut p, &v2, 40, &[5]).await;
        let sink = Recorded {
            ddl_commits: true,
            ..Recorded::default()
        };
        let (recorded, _) = apply_until(dir.path(), sink, Position::pg(40, 1)).await;
        let r = recorded.lock().unwrap();
        let applied: Vec<i64> = r.commits.iter().flat_map(|(k, _)| k.clone()).collect();
        assert_eq!(applied, vec![1, 2, 3, 4, 5]);
        // Version 2 first appears in transaction 30: nothing before it shares its commit.
        let v2_commit = r
            .commits
            .iter()
            .find(|(keys, _)| keys.contains(&4))
            .expect("key 4 committed");
        assert_eq!(v2_commit.0[0], 4, "commits: {:?}", r.commits);
        assert!(
            r.commits
                .iter()
                .any(|(keys, p)| keys.contains(&3) && *p == Position::pg(20, 1)),
            "the transactions before it were committed at their own end: {:?}",
            r.commits
        );
    }
}
