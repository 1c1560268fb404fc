//! Point-in-time restore from the archived event log: the events of a source, up to a
//! commit time or a source position, replayed in commit order into a database through a
//! sink (PostgreSQL or MySQL, whatever the source was), whole transactions only.
//!
//! Every object read is verified (size, sha256, framing) and the manifest chain with it,
//! so a damaged archive stops the restore naming the object; nothing is skipped. The
//! target keeps the source's watermark like any sink, so a restore that stopped half way
//! goes on where it stopped when run again, and an apply loop can continue from it.

use crate::error::BackupError;
use crate::manifests::Manifest;
use crate::object::read_checked;
use crate::snapshots::{list_snapshots, read_snapshot_object, RowBlock, SnapshotManifest};
use crate::store::Store;
use crate::verify::chain;
use std::collections::{BTreeMap, VecDeque};
use tributary_schemas::{ChangeEvent, Position, TableSchema};
use tributary_sinks::Sink;

/// How far to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Transactions committed at or before this time (microseconds since the Unix epoch).
    Time(i64),
    /// Events at or before this position.
    Position(Position),
    /// Everything archived.
    Latest,
}

impl Target {
    /// Reads `text`: an RFC 3339 time, `latest`, or a position: `pg:<LSN>` (or a bare
    /// `<hi>/<lo>` LSN), `mysql:<file number>:<offset>`, each optionally with `#<seq>`
    /// (without it, the whole transaction at that position is included).
    pub fn parse(text: &str) -> Result<Target, BackupError> {
        let text = text.trim();
        if text == "latest" {
            return Ok(Target::Latest);
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
            return Ok(Target::Time(t.timestamp_micros()));
        }
        let bad = || {
            BackupError::Config(format!(
                "--to {text:?}: not an RFC 3339 time (2026-12-01T10:00:00Z), `latest`, pg:<LSN> or mysql:<file>:<offset>"
            ))
        };
        // Without `#<seq>`, the whole transaction at that position is included.
        Position::parse(text, u64::MAX)
            .map(Target::Position)
            .ok_or_else(bad)
    }

    fn includes(&self, event: &ChangeEvent) -> bool {
        // The capture's initial copy is one consistent state: its rows carry the copy's
        // own times, so a target never cuts through them.
        if event.op == tributary_schemas::Op::Read {
            return true;
        }
        match self {
            Target::Time(t) => event.tx.commit_ts_micros <= *t,
            Target::Position(p) => event.position <= *p,
            Target::Latest => true,
        }
    }
}

/// What a restore did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Segments read.
    pub segments: u64,
    /// Source transactions applied.
    pub transactions: u64,
    /// Events applied.
    pub events: u64,
    /// Events per table (`schema.table`).
    pub tables: BTreeMap<String, u64>,
    /// Events the target already held (at or below its watermark), skipped.
    pub already: u64,
    /// The last position applied.
    pub last_position: Option<Position>,
    /// Its commit time, microseconds.
    pub last_commit_micros: Option<i64>,
    /// The archive ends before the target: everything archived was restored.
    pub archive_ends_before_target: bool,
    /// The snapshot the restore started from, if any.
    pub snapshot: Option<String>,
    /// Rows loaded from it.
    pub snapshot_rows: u64,
}

/// Restore options.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// How far.
    pub target: Target,
    /// Only tables matching one of these `schema.table` patterns (`*` wildcards); empty:
    /// all.
    pub tables: Vec<String>,
    /// Events per sink transaction when several source transactions are ready.
    pub max_tx_events: usize,
    /// Events per `Sink::apply` call.
    pub batch_rows: usize,
    /// Parses snapshots' PostgreSQL COPY text.
    pub copy_decoder: Option<crate::snapshots::CopyDecoder>,
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| {
                    text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..])
                })
        }
    }
}

/// Restores `source`'s archive from `store` into `sink` (`None`: a dry run that reads and
/// verifies everything it would apply and reports it).
pub async fn restore(
    store: &Store,
    source: &str,
    options: &RestoreOptions,
    mut sink: Option<&mut dyn Sink>,
) -> Result<RestoreReport, BackupError> {
    let manifests: Vec<Manifest> = chain(store, source).await?;
    let mut report = RestoreReport::default();
    let mut watermark = match sink.as_deref_mut() {
        Some(s) => s.watermark(source).await.map_err(|e| sink_err(source, e))?,
        None => None,
    };
    let wanted =
        |table: &str| options.tables.is_empty() || options.tables.iter().any(|p| glob(p, table));
    // A target that holds nothing of this source yet starts from the newest snapshot
    // before the target.
    if watermark.is_none() {
        let snapshots = list_snapshots(store, source).await?;
        let base = snapshots.iter().rfind(|s| match options.target {
            Target::Time(t) => s.consistent_at_micros <= t,
            Target::Position(p) => s.position <= p,
            Target::Latest => true,
        });
        if let Some(s) = sink.as_deref_mut() {
            begin_snapshot_load(s, source, &snapshots, base).await?;
        }
        if let Some(snap) = base {
            report.snapshot_rows =
                load_snapshot(store, source, snap, &wanted, sink.as_deref_mut(), options).await?;
            report.snapshot = Some(snap.id.clone());
            watermark = Some(snap.position);
        }
    }
    // Retention may have pruned the archive's start: it then follows a snapshot only.
    if let Some(from) = manifests.first().and_then(|m| m.from) {
        if watermark.is_none_or(|w| w < from) {
            return Err(BackupError::Config(format!(
                "source {source}: the archive's older segments were pruned by retention and no snapshot before {target:?} covers them; the oldest restorable instant is the oldest snapshot's (tributary snapshot list)",
                target = options.target
            )));
        }
    }
    let mut batch = Batch::default();
    let mut reached = false;
    let mut progress = std::time::Instant::now();
    for m in &manifests {
        if watermark.is_some_and(|w| m.to <= w) {
            report.already += m.events;
            continue;
        }
        // Each object (one per table version) is read one block at a time, and the
        // objects' events are merged back into commit order: memory holds one block per
        // object, whatever the segment's size.
        let mut objects = Vec::new();
        for entry in &m.objects {
            if wanted(&entry.table.to_string()) {
                objects.push(read_checked(store, source, entry.into()).await?);
            }
        }
        let tables: Vec<TableSchema> = objects.iter().map(|o| o.table().clone()).collect();
        let mut streams = objects
            .iter()
            .map(|o| o.blocks())
            .collect::<Result<Vec<_>, _>>()?;
        let mut heads: Vec<VecDeque<ChangeEvent>> = vec![VecDeque::new(); streams.len()];
        report.segments += 1;
        loop {
            for (head, stream) in heads.iter_mut().zip(streams.iter_mut()) {
                while head.is_empty() {
                    match stream.next() {
                        Some(block) => *head = block?.into(),
                        None => break,
                    }
                }
            }
            let Some(t) = (0..heads.len())
                .filter(|i| !heads[*i].is_empty())
                .min_by_key(|i| heads[*i][0].position)
            else {
                break;
            };
            let event = heads[t].pop_front().expect("not empty");
            if !options.target.includes(&event) {
                reached = true;
                break;
            }
            if watermark.is_some_and(|w| event.position <= w) {
                report.already += 1;
                continue;
            }
            if batch.last_tx != Some(event.tx.first) {
                // A transaction boundary: commit when the batch is big enough.
                if batch.events >= options.max_tx_events {
                    batch
                        .commit(source, sink.as_deref_mut(), &tables, options)
                        .await?;
                }
                batch.last_tx = Some(event.tx.first);
                report.transactions += 1;
            }
            *report.tables.entry(event.table.to_string()).or_default() += 1;
            report.events += 1;
            if progress.elapsed().as_secs() >= 10 {
                progress = std::time::Instant::now();
                tracing::info!(source, events = report.events, at = %event.position, "restore progress");
            }
            report.last_position = Some(event.position);
            report.last_commit_micros = Some(event.tx.commit_ts_micros);
            batch
                .push(source, sink.as_deref_mut(), &tables, options, t, event)
                .await?;
        }
        if batch.events > 0 {
            batch
                .commit(source, sink.as_deref_mut(), &tables, options)
                .await?;
        }
        if reached {
            break;
        }
    }
    report.archive_ends_before_target = !reached && options.target != Target::Latest;
    Ok(report)
}

/// The watermark key under which a target records the snapshot it is loading from
/// `source` (its position), before the first row: a load cut short leaves it, with the
/// target's tables holding part of that snapshot and no watermark.
pub fn snapshot_load_key(source: &str) -> String {
    format!("{source}#snapshot")
}

/// Before a restore that starts from `base` (or from the archive's start: `None`) loads
/// anything into a target holding no watermark of `source`: refuses when an earlier
/// restore was cut short while loading another snapshot, whose rows would stay beside
/// the new ones, and records `base` otherwise.
async fn begin_snapshot_load(
    sink: &mut (dyn Sink + '_),
    source: &str,
    snapshots: &[SnapshotManifest],
    base: Option<&SnapshotManifest>,
) -> Result<(), BackupError> {
    let key = snapshot_load_key(source);
    let err = |e| sink_err(source, e);
    let loading = sink.watermark(&key).await.map_err(err)?;
    if let Some(p) = loading {
        if base.map(|b| b.position) != Some(p) {
            let id = snapshots
                .iter()
                .find(|s| s.position == p)
                .map_or_else(|| format!("at {p}"), |s| s.id.clone());
            return Err(BackupError::Target(format!(
                "restoring source {source}: the target holds part of snapshot {id}, loaded by a restore that was cut short, and this restore {}: its rows would stay beside the new ones. Run the restore again with a --to that starts from snapshot {id} (then a later --to), or restore into a new database",
                match base {
                    Some(b) => format!("starts from snapshot {}", b.id),
                    None => "starts from the archive's first event".to_string(),
                }
            )));
        }
        return Ok(());
    }
    if let Some(b) = base {
        sink.begin().await.map_err(err)?;
        sink.commit(&key, b.position).await.map_err(err)?;
    }
    Ok(())
}

/// Loads snapshot `snap`'s tables that are `wanted` into `sink` (none: only reads and
/// verifies them), committing every `max_tx_events` rows without a watermark and storing
/// the snapshot's position as the watermark at the end: a restore stopped half way loads
/// the snapshot again (its rows are upserts) when run again. Returns the rows.
async fn load_snapshot(
    store: &Store,
    source: &str,
    snap: &SnapshotManifest,
    wanted: &dyn Fn(&str) -> bool,
    mut sink: Option<&mut (dyn Sink + '_)>,
    options: &RestoreOptions,
) -> Result<u64, BackupError> {
    let err = |e| sink_err(source, e);
    if let Some(s) = sink.as_deref_mut() {
        s.begin().await.map_err(err)?;
    }
    let mut rows = 0u64;
    let mut in_tx = 0usize;
    for object in &snap.objects {
        if !wanted(&object.table.to_string()) {
            continue;
        }
        let checked = read_snapshot_object(store, snap, object).await?;
        let table = checked.table().clone();
        let mut object_rows = 0;
        for block in checked.blocks()? {
            let block = block?;
            // COPY text goes into the target as it is when the sink can take it (the
            // rows are new there); otherwise it is parsed into events.
            if let (RowBlock::CopyText(lines, n), Some(s)) = (&block, sink.as_deref_mut()) {
                let copied = match s.copy_load() {
                    Some(c) => c.load_copy_text(&table, lines).await.map_err(err)?,
                    None => false,
                };
                if copied {
                    object_rows += n;
                    loaded(s, &mut in_tx, *n as usize, options.max_tx_events)
                        .await
                        .map_err(err)?;
                    continue;
                }
            }
            let events = checked.decode(block, options.copy_decoder, object_rows)?;
            object_rows += events.len() as u64;
            let Some(s) = sink.as_deref_mut() else {
                continue;
            };
            for chunk in events.chunks(options.batch_rows.max(1)) {
                s.apply(&table, chunk).await.map_err(err)?;
                loaded(s, &mut in_tx, chunk.len(), options.max_tx_events)
                    .await
                    .map_err(err)?;
            }
        }
        rows += object_rows;
        tracing::info!(source, snapshot = snap.id, table = %object.table, rows, "snapshot object restored");
    }
    if let Some(s) = sink {
        s.commit(source, snap.position).await.map_err(err)?;
    }
    Ok(rows)
}

/// After `rows` more rows went into the open transaction of a snapshot load (`in_tx` so
/// far): commits it and opens the next once it holds `max_tx_events`.
async fn loaded(
    sink: &mut (dyn Sink + '_),
    in_tx: &mut usize,
    rows: usize,
    max_tx_events: usize,
) -> Result<(), tributary_sinks::SinkError> {
    *in_tx += rows;
    if *in_tx >= max_tx_events {
        sink.commit_data().await?;
        sink.begin().await?;
        *in_tx = 0;
    }
    Ok(())
}

fn sink_err(source: &str, e: tributary_sinks::SinkError) -> BackupError {
    BackupError::Target(format!("restoring source {source}: {e}"))
}

/// The open sink transaction of a restore: events are applied in runs of one table
/// (at most `batch_rows`) as they come, so memory holds one run, and committed at source
/// transaction boundaries once `max_tx_events` are in.
#[derive(Default)]
struct Batch {
    /// The run not applied yet: its table's index in the segment's table list.
    run: Option<(usize, Vec<ChangeEvent>)>,
    /// Events in the open sink transaction.
    events: usize,
    /// Whether the sink transaction is open.
    open: bool,
    last_tx: Option<Position>,
    last: Option<Position>,
}

impl Batch {
    async fn push(
        &mut self,
        source: &str,
        sink: Option<&mut (dyn Sink + '_)>,
        tables: &[TableSchema],
        options: &RestoreOptions,
        table: usize,
        event: ChangeEvent,
    ) -> Result<(), BackupError> {
        self.last = Some(event.position);
        self.events += 1;
        match &mut self.run {
            Some((t, run)) if *t == table && run.len() < options.batch_rows.max(1) => {
                run.push(event);
                return Ok(());
            }
            _ => {}
        }
        self.apply_run(source, sink, tables).await?;
        self.run = Some((table, vec![event]));
        Ok(())
    }

    async fn apply_run(
        &mut self,
        source: &str,
        sink: Option<&mut (dyn Sink + '_)>,
        tables: &[TableSchema],
    ) -> Result<(), BackupError> {
        let Some((t, run)) = self.run.take() else {
            return Ok(());
        };
        let Some(sink) = sink else {
            return Ok(());
        };
        let err = |e| sink_err(source, e);
        if !self.open {
            sink.begin().await.map_err(err)?;
            self.open = true;
        }
        if let Err(e) = sink.apply(&tables[t], &run).await {
            let _ = sink.rollback().await;
            self.open = false;
            return Err(err(e));
        }
        Ok(())
    }

    async fn commit(
        &mut self,
        source: &str,
        mut sink: Option<&mut (dyn Sink + '_)>,
        tables: &[TableSchema],
        _options: &RestoreOptions,
    ) -> Result<(), BackupError> {
        self.apply_run(source, sink.as_deref_mut(), tables).await?;
        self.events = 0;
        let (Some(sink), Some(last), true) = (sink, self.last, self.open) else {
            return Ok(());
        };
        self.open = false;
        if let Err(e) = sink.commit(source, last).await {
            let _ = sink.rollback().await;
            return Err(sink_err(source, e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("2026-12-01T10:00:00Z").unwrap(),
            Target::Time(1_796_119_200_000_000)
        );
        assert_eq!(
            Target::parse("pg:0/16B3748").unwrap(),
            Target::Position(Position::pg(0x16B3748, u64::MAX))
        );
        assert_eq!(
            Target::parse("1/0#3").unwrap(),
            Target::Position(Position::pg(1 << 32, 3))
        );
        assert_eq!(
            Target::parse("mysql:3:1234").unwrap(),
            Target::Position(Position::mysql(3, 1234, u64::MAX))
        );
        assert_eq!(Target::parse("latest").unwrap(), Target::Latest);
        for bad in ["yesterday", "pg:xyz", "mysql:3", "1/2#x", "100000000/0"] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn table_patterns() {
        assert!(glob("public.*", "public.orders"));
        assert!(glob("*.orders", "store.orders"));
        assert!(glob("*", "a.b"));
        assert!(!glob("public.orders", "public.order"));
        assert!(!glob("*.orders", "public.medicines"));
    }
}
