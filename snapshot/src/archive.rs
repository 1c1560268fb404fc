//! The event-log archive: every event a source captured, in commit order, in segments.
//!
//! An [`ArchiveSink`] takes one source's transactions like any sink (the pipeline's apply
//! loop feeds it, so ordering, completeness and restarts work as for a database). Events
//! are spooled durably under the state directory: one file per table version, holding
//! zstd-compressed Avro blocks, flushed and synced at every commit, with the watermark in
//! `spool.json`. When the open segment is big or old enough it is *sealed*: each file
//! becomes an Avro object container (the table version's envelope schema in its header)
//! in the store, then a manifest that lists them with their sha256, sizes, event counts and
//! position ranges, and holds the sha256 of the previous manifest; then `HEAD.json`, which
//! names the newest manifest and its sha256 (both in [`crate::manifests`]). The manifests form a hash chain, and each
//! covers the positions after its predecessor's end up to its own: a changed, missing or
//! reordered object, or a gap, is found by [`crate::verify`].
//!
//! Store layout, per source:
//! - `archive/<source>/segments/<seq>/<n>-<schema>.<table>.avro`
//! - `archive/<source>/manifests/<seq>.json`
//! - `archive/<source>/HEAD.json`

use crate::config::BackupConfig;
use crate::error::BackupError;
use crate::manifests::no_orphan_manifests;
/// The manifests the archive seals, defined in [`crate::manifests`].
pub use crate::manifests::{
    head_name, manifest_name, read_head, Head, Link, Manifest, ObjectEntry,
};
use crate::object::{container_header, safe, sha256_hex};
use crate::ocf;
use crate::store::Store;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tributary_schemas::{encode_value, AvroSchemas, ChangeEvent, Position, TableId, TableSchema};
use tributary_sinks::{Sink, SinkError};

/// The suffix of an object's file being sealed, next to its spool file.
const STORED_SUFFIX: &str = ".stored";
/// Datums buffered per file before a block is written (the last block of a commit may
/// be smaller).
const BLOCK_BYTES: usize = 1 << 20;

/// A spool file: the open segment's events of one table version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpoolFile {
    file: String,
    table: TableId,
    schema_version: u32,
    value_text: String,
    sync: String,
    /// Durable length.
    bytes: u64,
    events: u64,
    first_position: Option<Position>,
    last_position: Option<Position>,
    first_commit_micros: i64,
    last_commit_micros: i64,
}

impl SpoolFile {
    /// Its container's sync marker (kept as hex in `spool.json`).
    fn sync_marker(&self, dir: &Path) -> Result<ocf::Sync, BackupError> {
        hex::decode(&self.sync)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| spool_err(&dir.join(&self.file), "bad sync marker in spool.json"))
    }
}

/// Writes an object as stored to file `out`: `header`, then the first `len` bytes of spool
/// file `blocks`, encrypted when `store` encrypts, a piece at a time (whatever the size of
/// the transactions in it). Returns the object's size and sha256.
fn write_stored_file(
    store: &Store,
    header: &[u8],
    blocks: &Path,
    len: u64,
    out: &Path,
) -> Result<(u64, String), BackupError> {
    let mut input = std::fs::File::open(blocks).map_err(|e| spool_err(blocks, e))?;
    let actual = input.metadata().map_err(|e| spool_err(blocks, e))?.len();
    if actual < len {
        return Err(spool_err(
            blocks,
            format!("holds {actual} bytes but {len} were committed: the spool was damaged"),
        ));
    }
    let file = std::fs::File::create(out).map_err(|e| spool_err(out, e))?;
    let hashing =
        crate::store::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let mut writer = store.seal_to(hashing)?;
    writer.write_all(header).map_err(|e| spool_err(out, e))?;
    std::io::copy(&mut (&mut input).take(len), &mut writer).map_err(|e| spool_err(out, e))?;
    let hashing = writer.finish().map_err(|e| spool_err(out, e))?;
    let (mut file, size, sha256) = hashing.finish();
    file.flush().map_err(|e| spool_err(out, e))?;
    Ok((size, sha256))
}

/// `spool.json`: the open segment and the archive's watermark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Spool {
    /// The sequence number the open segment will be sealed under.
    seq: u64,
    prev: Option<Link>,
    /// The last position archived (spooled or sealed).
    watermark: Option<Position>,
    /// Wall time the open segment's first event was spooled, microseconds.
    opened_micros: Option<i64>,
    transactions: u64,
    last_tx: Option<Position>,
    files: Vec<SpoolFile>,
}

/// Datums of one file not yet written.
#[derive(Default)]
struct Pending {
    datums: Vec<u8>,
    count: u64,
}

/// Archives one source's events (see the module documentation).
pub struct ArchiveSink {
    source: String,
    store: Store,
    dir: PathBuf,
    segment_bytes: u64,
    segment_seconds: u64,
    level: i32,
    /// As durable on disk.
    spool: Spool,
    /// The open transaction's view (`None`: no transaction open).
    next: Option<Spool>,
    pending: HashMap<usize, Pending>,
    /// Schemas per table version, and the spool file index in `next`.
    schemas: HashMap<(TableId, u32), (Arc<AvroSchemas>, ocf::Sync)>,
    /// A seal failed: no transaction is taken until one succeeds, so a segment the store
    /// may hold in part never grows under the same sequence number.
    seal_failed: bool,
    /// The archive went on from the store's `HEAD.json`, with no spool on this machine.
    resumed_from_store: bool,
}

fn spool_err(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::Spool {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn to_sink(e: BackupError) -> SinkError {
    let cause = e.to_string();
    if e.is_transient() {
        SinkError::ConnectionLost {
            action: "archiving",
            table: "the backup store".into(),
            cause,
        }
    } else {
        SinkError::Driver {
            action: "archiving",
            table: "the event log".into(),
            cause,
        }
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| spool_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| spool_err(&tmp, e))?;
    f.sync_all().map_err(|e| spool_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| spool_err(path, e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| spool_err(dir, e))?;
    }
    Ok(())
}

impl ArchiveSink {
    /// Opens the archive of `source`: its spool under `state_dir/archive/<source>`, and the
    /// store `config` names. A spool whose segment the store already holds (a stop between
    /// sealing and clearing the spool) is cleared; with no spool, the archive goes on
    /// after the store's newest manifest.
    pub async fn open(
        config: &BackupConfig,
        state_dir: &Path,
        source: &str,
    ) -> Result<Self, BackupError> {
        let store = Store::open(config)?;
        let dir = state_dir.join("archive").join(safe(source));
        std::fs::create_dir_all(&dir).map_err(|e| spool_err(&dir, e))?;
        let meta = dir.join("spool.json");
        let spool: Option<Spool> = match std::fs::read(&meta) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| spool_err(&meta, e))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(spool_err(&meta, e)),
        };
        let head = read_head(&store, source).await?;
        let mut sink = ArchiveSink {
            source: source.to_string(),
            store,
            dir,
            segment_bytes: config.segment_bytes,
            segment_seconds: config.segment_seconds,
            level: config.zstd_level,
            spool: Spool::default(),
            next: None,
            pending: HashMap::new(),
            schemas: HashMap::new(),
            seal_failed: false,
            resumed_from_store: false,
        };
        match (spool, head) {
            (Some(spool), Some(head)) if head.manifest.seq >= spool.seq => {
                if head.manifest.seq > spool.seq {
                    return Err(BackupError::Corrupt {
                        store: sink.store.describe().to_string(),
                        object: head_name(source),
                        message: format!(
                            "names manifest {} but this machine's spool ({}) is at segment {}: another Tributary archives source {source} into the same store, or the spool is older than the store",
                            head.manifest.seq,
                            sink.dir.display(),
                            spool.seq
                        ),
                    });
                }
                // Sealed, but the spool was not cleared before a stop. (After a failed seal
                // no transaction enters the spool until a seal succeeds, so it holds
                // exactly the sealed segment.)
                if spool.watermark != Some(head.manifest.to) {
                    return Err(BackupError::Corrupt {
                        store: sink.store.describe().to_string(),
                        object: head_name(source),
                        message: format!(
                            "names segment {} up to {}, but this machine's spool ({}) holds that segment up to {}: clearing it would lose events; move the spool aside and compare",
                            head.manifest.seq,
                            head.manifest.to,
                            sink.dir.display(),
                            spool.watermark.map_or("nothing".to_string(), |p| p.to_string())
                        ),
                    });
                }
                sink.spool = spool;
                sink.cleared(head.manifest)?;
            }
            (Some(spool), _) => {
                sink.spool = spool;
                sink.truncate_to_durable()?;
            }
            (None, Some(head)) => {
                sink.resumed_from_store = true;
                sink.cleared(head.manifest)?;
            }
            (None, None) => {
                no_orphan_manifests(&sink.store, source).await?;
                sink.write_spool()?;
            }
        }
        Ok(sink)
    }

    /// The spool after sealing `link`: empty, the next sequence number.
    fn cleared(&mut self, link: Link) -> Result<(), BackupError> {
        for f in &self.spool.files {
            let path = self.dir.join(&f.file);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(spool_err(&path, e)),
            }
        }
        self.spool = Spool {
            seq: link.seq + 1,
            watermark: Some(self.spool.watermark.unwrap_or(link.to).max(link.to)),
            prev: Some(link),
            ..Spool::default()
        };
        self.schemas.clear();
        self.write_spool()
    }

    /// Cuts every spool file back to its durable length (a stop during a commit leaves
    /// blocks past it), and removes files no durable commit knows.
    fn truncate_to_durable(&mut self) -> Result<(), BackupError> {
        let known: Vec<&str> = self.spool.files.iter().map(|f| f.file.as_str()).collect();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| spool_err(&self.dir, e))? {
            let entry = entry.map_err(|e| spool_err(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = name.ends_with(".blocks") && !known.contains(&name.as_str());
            if stale || name.ends_with(STORED_SUFFIX) {
                std::fs::remove_file(entry.path()).map_err(|e| spool_err(&entry.path(), e))?;
            }
        }
        for f in &self.spool.files {
            let path = self.dir.join(&f.file);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| spool_err(&path, e))?;
            let len = file.metadata().map_err(|e| spool_err(&path, e))?.len();
            if len < f.bytes {
                return Err(spool_err(
                    &path,
                    format!(
                        "holds {len} bytes but {} were committed: the spool was damaged",
                        f.bytes
                    ),
                ));
            }
            if len > f.bytes {
                file.set_len(f.bytes).map_err(|e| spool_err(&path, e))?;
                file.sync_all().map_err(|e| spool_err(&path, e))?;
            }
        }
        Ok(())
    }

    fn write_spool(&self) -> Result<(), BackupError> {
        let bytes = serde_json::to_vec_pretty(&self.spool).map_err(|e| spool_err(&self.dir, e))?;
        write_atomically(&self.dir.join("spool.json"), &bytes)
    }

    /// The spool file of `table`'s version in the open transaction, created when new.
    fn file_for(&mut self, table: &TableSchema) -> Result<usize, BackupError> {
        let key = (table.table.clone(), table.version);
        if !self.schemas.contains_key(&key) {
            let schemas = Arc::new(AvroSchemas::generate(&self.source, table)?);
            let sync = ocf::new_sync();
            self.schemas.insert(key.clone(), (schemas, sync));
        }
        let (schemas, sync) = &self.schemas[&key];
        let next = self.next.as_mut().expect("a transaction is open");
        if let Some(i) = next
            .files
            .iter()
            .position(|f| f.table == table.table && f.value_text == schemas.value_text)
        {
            return Ok(i);
        }
        let i = next.files.len();
        let file = format!(
            "{i:03}-{}.{}.v{}.blocks",
            safe(&table.table.schema),
            safe(&table.table.name),
            table.version
        );
        let path = self.dir.join(&file);
        std::fs::File::create(&path).map_err(|e| spool_err(&path, e))?;
        next.files.push(SpoolFile {
            file,
            table: table.table.clone(),
            schema_version: table.version,
            value_text: schemas.value_text.clone(),
            sync: hex::encode(sync),
            bytes: 0,
            events: 0,
            first_position: None,
            last_position: None,
            first_commit_micros: 0,
            last_commit_micros: 0,
        });
        Ok(i)
    }

    /// Compresses file `i`'s pending datums into a block and appends it to the file.
    fn write_block(&mut self, i: usize) -> Result<(), BackupError> {
        let Some(p) = self.pending.get_mut(&i) else {
            return Ok(());
        };
        if p.count == 0 {
            return Ok(());
        }
        let next = self.next.as_mut().expect("a transaction is open");
        let f = &mut next.files[i];
        let sync = f.sync_marker(&self.dir)?;
        let block = ocf::block(&p.datums, p.count, self.level, &sync)
            .map_err(|e| spool_err(&self.dir, e))?;
        let path = self.dir.join(&f.file);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| spool_err(&path, e))?;
        file.write_all(&block).map_err(|e| spool_err(&path, e))?;
        f.bytes += block.len() as u64;
        p.datums.clear();
        p.count = 0;
        Ok(())
    }

    fn due(&self) -> bool {
        let size: u64 = self.spool.files.iter().map(|f| f.bytes).sum();
        let events: u64 = self.spool.files.iter().map(|f| f.events).sum();
        events > 0
            && (size >= self.segment_bytes
                || self.spool.opened_micros.is_some_and(|t| {
                    now_micros().saturating_sub(t) >= (self.segment_seconds as i64) * 1_000_000
                }))
    }

    /// Seals the open segment into the store if it holds events.
    pub async fn seal(&mut self) -> Result<Option<Manifest>, BackupError> {
        let events: u64 = self.spool.files.iter().map(|f| f.events).sum();
        let Some(to) = self.spool.watermark.filter(|_| events > 0) else {
            return Ok(None);
        };
        let seq = self.spool.seq;
        // An earlier attempt may have stored this segment whole but failed to say so.
        if let Some(head) = read_head(&self.store, &self.source).await? {
            if head.manifest.seq == seq && head.manifest.to == to {
                self.cleared(head.manifest)?;
                return Ok(None);
            }
        }
        let mut objects = Vec::new();
        for (i, f) in self.spool.files.iter().enumerate() {
            let (Some(first_position), Some(last_position)) = (f.first_position, f.last_position)
            else {
                continue;
            };
            if f.events == 0 {
                continue;
            }
            let header = container_header(
                &self.source,
                (&f.table, f.schema_version, &f.value_text),
                ("tributary.segment", seq.to_string()),
                &f.sync_marker(&self.dir)?,
            );
            // The object is written to a file next to the spool and uploaded from it, so
            // a segment holding one huge transaction never sits in memory whole.
            let blocks = self.dir.join(&f.file);
            let stored = self.dir.join(format!("{}{STORED_SUFFIX}", f.file));
            let (bytes, sha256) = {
                let (store, stored, len) = (self.store.clone(), stored.clone(), f.bytes);
                tokio::task::spawn_blocking(move || {
                    write_stored_file(&store, &header, &blocks, len, &stored)
                })
                .await
                .map_err(|e| spool_err(&self.dir, e))??
            };
            let name = format!(
                "archive/{}/segments/{seq:012}/{i:03}-{}.{}.avro",
                self.source,
                safe(&f.table.schema),
                safe(&f.table.name)
            );
            objects.push(ObjectEntry {
                name: name.clone(),
                table: f.table.clone(),
                schema_version: f.schema_version,
                events: f.events,
                bytes,
                sha256,
                first_position,
                last_position,
                first_commit_micros: f.first_commit_micros,
                last_commit_micros: f.last_commit_micros,
            });
            let put = self.store.put_file(&name, &stored).await;
            if let Err(e) = std::fs::remove_file(&stored) {
                tracing::warn!(file = %stored.display(), error = %e, "removing a sealed object's file failed");
            }
            put?;
        }
        let manifest = Manifest {
            format: 1,
            source: self.source.clone(),
            seq,
            sealed_at: chrono::Utc::now().to_rfc3339(),
            from: self.spool.prev.as_ref().map(|p| p.to),
            to,
            events,
            transactions: self.spool.transactions,
            first_commit_micros: objects
                .iter()
                .map(|o| o.first_commit_micros)
                .min()
                .unwrap_or(0),
            last_commit_micros: objects
                .iter()
                .map(|o| o.last_commit_micros)
                .max()
                .unwrap_or(0),
            objects,
            prev: self.spool.prev.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| spool_err(&self.dir, e))?;
        let link = Link {
            seq,
            sha256: sha256_hex(&bytes),
            to,
        };
        self.store
            .put(&manifest_name(&self.source, seq), bytes.into())
            .await?;
        let head = serde_json::to_vec_pretty(&Head {
            manifest: link.clone(),
        })
        .map_err(|e| spool_err(&self.dir, e))?;
        self.store
            .put(&head_name(&self.source), head.into())
            .await?;
        tracing::info!(source = self.source, seq, events, to = %to, "archive segment sealed");
        self.cleared(link)?;
        Ok(Some(manifest))
    }
}

impl ArchiveSink {
    /// Seals when due; a failure leaves the segment in the spool (durable) for the next
    /// try, so the transaction that made it due stays committed.
    async fn seal_or_warn(&mut self) {
        match self.seal().await {
            Ok(_) => self.seal_failed = false,
            Err(e) => {
                self.seal_failed = true;
                tracing::warn!(source = self.source, error = %e, "sealing an archive segment failed; it stays in the spool, and no transaction is archived until a seal succeeds");
            }
        }
    }

    /// Whether the archive went on from the store's `HEAD.json` with no spool on this
    /// machine: events spooled elsewhere and never sealed are then not in the archive,
    /// unless the transport delivers them again.
    pub fn resumed_from_store(&self) -> bool {
        self.resumed_from_store
    }
}

#[async_trait]
impl Sink for ArchiveSink {
    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        if source != self.source {
            return Err(SinkError::Protocol(format!(
                "the archive of source {} was asked for the watermark of {source}",
                self.source
            )));
        }
        Ok(self.spool.watermark)
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        if self.seal_failed {
            // Transient: the loop backs off and tries again.
            self.seal().await.map_err(to_sink)?;
            self.seal_failed = false;
        }
        self.next = Some(self.spool.clone());
        self.pending.clear();
        Ok(())
    }

    async fn apply(
        &mut self,
        table: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        if self.next.is_none() {
            return Err(SinkError::Protocol("apply outside a transaction".into()));
        }
        let i = self.file_for(table).map_err(to_sink)?;
        let schemas = self.schemas[&(table.table.clone(), table.version)]
            .0
            .clone();
        for event in events {
            let framed = encode_value(&schemas, event).map_err(|e| SinkError::InvalidEvent {
                table: table.table.to_string(),
                position: event.position,
                reason: e.to_string(),
            })?;
            let next = self.next.as_mut().expect("checked above");
            if next.last_tx != Some(event.tx.first) {
                next.last_tx = Some(event.tx.first);
                next.transactions += 1;
            }
            if next.opened_micros.is_none() {
                next.opened_micros = Some(now_micros());
            }
            let f = &mut next.files[i];
            f.events += 1;
            if f.first_position.is_none() {
                f.first_position = Some(event.position);
                f.first_commit_micros = event.tx.commit_ts_micros;
            }
            f.last_position = Some(event.position);
            f.last_commit_micros = event.tx.commit_ts_micros;
            let p = self.pending.entry(i).or_default();
            // Without the 5-byte frame (magic byte and schema id).
            p.datums.extend_from_slice(&framed[5..]);
            p.count += 1;
            if p.datums.len() >= BLOCK_BYTES {
                self.write_block(i).map_err(to_sink)?;
            }
        }
        Ok(())
    }

    async fn commit(&mut self, source: &str, position: Position) -> Result<(), SinkError> {
        if source != self.source {
            return Err(SinkError::Protocol(format!(
                "the archive of source {} was given a commit of {source}",
                self.source
            )));
        }
        let touched: Vec<usize> = self.pending.keys().copied().collect();
        for &i in &touched {
            self.write_block(i).map_err(to_sink)?;
        }
        let mut next = self
            .next
            .take()
            .ok_or_else(|| SinkError::Protocol("commit outside a transaction".into()))?;
        for &i in &touched {
            let path = self.dir.join(&next.files[i].file);
            std::fs::File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(|e| to_sink(spool_err(&path, e)))?;
        }
        next.watermark = Some(position);
        let before = std::mem::replace(&mut self.spool, next);
        if let Err(e) = self.write_spool() {
            self.spool = before;
            return Err(to_sink(e));
        }
        self.pending.clear();
        if self.due() {
            self.seal_or_warn().await;
        }
        Ok(())
    }

    async fn commit_data(&mut self) -> Result<(), SinkError> {
        Err(SinkError::Protocol(format!(
            "the archive of source {} keeps transactions in position order only: it takes no transaction without a position",
            self.source
        )))
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        self.next = None;
        self.pending.clear();
        self.truncate_to_durable().map_err(to_sink)
    }

    async fn idle(&mut self) -> Result<(), SinkError> {
        if self.next.is_none() && self.due() {
            self.seal_or_warn().await;
        }
        Ok(())
    }
}
