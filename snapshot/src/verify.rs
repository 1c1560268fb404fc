//! Reading the archive back with every check: the manifest chain from `HEAD.json` down
//! (each manifest's sha256 as its successor names it), gap-free coverage (each segment
//! starts where its predecessor ended), and each object's size, sha256, container framing
//! and event count. Every failure names the object.

use crate::archive::{
    head_name, manifest_name, read_head, sha256_hex, Link, Manifest, ObjectEntry,
};
use crate::error::BackupError;
use crate::ocf;
use crate::store::Store;
use tributary_schemas::{decode_value_from, AvroSchemas, ChangeEvent, Position, TableSchema};

/// What a verified archive holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The source.
    pub source: String,
    /// Segments (manifests) in the chain.
    pub segments: u64,
    /// Objects read and checked.
    pub objects: u64,
    /// Events in them.
    pub events: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Coverage: after this position (`None`: from the source's first event)…
    pub from: Option<Position>,
    /// …up to this one (`None`: nothing archived yet).
    pub to: Option<Position>,
    /// Commit time of the first archived event, microseconds.
    pub first_commit_micros: Option<i64>,
    /// Commit time of the last archived event.
    pub last_commit_micros: Option<i64>,
}

pub(crate) fn corrupt(store: &Store, object: &str, message: impl Into<String>) -> BackupError {
    BackupError::Corrupt {
        store: store.describe().to_string(),
        object: object.to_string(),
        message: message.into(),
    }
}

/// The manifests of `source`'s archive, oldest first, each checked against the link its
/// successor (or `HEAD.json`) holds, and their coverage checked gap-free. Objects are
/// not read.
pub async fn chain(store: &Store, source: &str) -> Result<Vec<Manifest>, BackupError> {
    let Some(head) = read_head(store, source).await? else {
        no_orphan_manifests(store, source).await?;
        return Ok(Vec::new());
    };
    let start = crate::retention::read_start(store, source).await?;
    let mut out: Vec<Manifest> = Vec::new();
    let mut link: Option<(Link, String)> = Some((head.manifest, head_name(source)));
    while let Some((l, named_by)) = link.take() {
        let name = manifest_name(source, l.seq);
        let bytes = store.get(&name).await?.ok_or_else(|| {
            corrupt(
                store,
                &name,
                format!("missing, though {named_by} names it: the chain is broken"),
            )
        })?;
        let sha = sha256_hex(&bytes);
        if sha != l.sha256 {
            return Err(corrupt(
                store,
                &name,
                format!(
                    "sha256 is {sha} but {named_by} says {}: the manifest was changed",
                    l.sha256
                ),
            ));
        }
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(store, &name, format!("not a manifest: {e}")))?;
        if m.seq != l.seq || m.source != source || m.to != l.to {
            return Err(corrupt(
                store,
                &name,
                format!(
                    "holds segment {} of source {} up to {}, but {named_by} expects segment {} of {source} up to {}",
                    m.seq, m.source, m.to, l.seq, l.to
                ),
            ));
        }
        if m.from != m.prev.as_ref().map(|p| p.to) {
            return Err(corrupt(
                store,
                &name,
                "its coverage does not start where the previous segment ends",
            ));
        }
        // Retention pruned what came before the segment START.json names.
        link = match &start {
            Some(s) if s.seq == m.seq => None,
            _ => m.prev.clone().map(|p| (p, name.clone())),
        };
        out.push(m);
    }
    out.reverse();
    if let Some(first) = out.first() {
        match &start {
            Some(s) if s.seq == first.seq => {
                // What was pruned must be in the snapshot START.json names.
                let snapshots = crate::snapshots::list_snapshots(store, source).await?;
                let covered = snapshots.iter().any(|snap| {
                    snap.id == s.snapshot && first.from.is_none_or(|f| f <= snap.position)
                });
                if !covered {
                    return Err(corrupt(
                        store,
                        &crate::retention::start_name(source),
                        format!(
                            "the archive starts at segment {} after pruning, but snapshot {} that holds what came before is missing",
                            first.seq, s.snapshot
                        ),
                    ));
                }
            }
            _ if first.seq != 0 || first.from.is_some() => {
                return Err(corrupt(
                    store,
                    &manifest_name(source, first.seq),
                    "the chain starts here but this is not the archive's first segment",
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Fails when `source` has manifests but no `HEAD.json` (deleted, or lost): the chain
/// cannot be checked, and starting a new one would overwrite it.
pub async fn no_orphan_manifests(store: &Store, source: &str) -> Result<(), BackupError> {
    let listed = store.list(&format!("archive/{source}/manifests/")).await?;
    if let Some((first, _)) = listed.first() {
        return Err(corrupt(
            store,
            &head_name(source),
            format!(
                "missing, though {} manifests exist (the first is {first}): the chain has no head",
                listed.len()
            ),
        ));
    }
    Ok(())
}

/// What an object must be: its name, size, sha256 and event count.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Object name.
    pub name: &'a str,
    /// Size.
    pub bytes: u64,
    /// sha256, hex.
    pub sha256: &'a str,
    /// Events (rows) in it.
    pub events: u64,
}

impl<'a> From<&'a ObjectEntry> for Expected<'a> {
    fn from(e: &'a ObjectEntry) -> Self {
        Expected {
            name: &e.name,
            bytes: e.bytes,
            sha256: &e.sha256,
            events: e.events,
        }
    }
}

impl<'a> From<&'a crate::snapshots::SnapshotObject> for Expected<'a> {
    fn from(o: &'a crate::snapshots::SnapshotObject) -> Self {
        Expected {
            name: &o.name,
            bytes: o.bytes,
            sha256: &o.sha256,
            events: o.rows,
        }
    }
}

/// An object read whole and found to have its size and sha256; its events are decoded
/// block by block ([`CheckedObject::blocks`]), so memory holds one block of events.
pub struct CheckedObject {
    store: String,
    name: String,
    events: u64,
    plain: Plain,
    schemas: AvroSchemas,
}

/// Where a checked object's plain (decrypted) bytes are.
enum Plain {
    /// In memory.
    Memory(Vec<u8>),
    /// In a temporary file: an object larger than the store's `memory_object_bytes`.
    File(tempfile::TempPath),
}

impl Plain {
    /// A reader of the bytes from the start.
    fn reader(&self) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        Ok(match self {
            Plain::Memory(bytes) => Box::new(bytes.as_slice()),
            Plain::File(path) => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(path)?,
            )),
        })
    }
}

/// Checks object `name` as read (`size` bytes with sha256 `sha`) against the `bytes` and
/// `sha256` its manifest gives.
fn check_stored(
    store: &Store,
    name: &str,
    (size, sha): (u64, &str),
    bytes: u64,
    sha256: &str,
) -> Result<(), BackupError> {
    if size != bytes {
        return Err(corrupt(
            store,
            name,
            format!("holds {size} bytes but the manifest says {bytes}"),
        ));
    }
    if sha != sha256 {
        return Err(corrupt(
            store,
            name,
            format!("sha256 is {sha} but the manifest says {sha256}: the object is damaged"),
        ));
    }
    Ok(())
}

/// Reads data object `name`, checks it against the `bytes` and `sha256` its manifest
/// gives (as stored), and decrypts it.
pub(crate) async fn read_stored(
    store: &Store,
    name: &str,
    bytes: u64,
    sha256: &str,
) -> Result<Vec<u8>, BackupError> {
    let stored = store
        .get(name)
        .await?
        .ok_or_else(|| corrupt(store, name, MISSING))?;
    let sha = sha256_hex(&stored);
    check_stored(store, name, (stored.len() as u64, &sha), bytes, sha256)?;
    store.unseal(name, &stored)
}

const MISSING: &str = "missing, though its manifest lists it";

/// Reads data object `name` as [`read_stored`] does, into memory when it is at most the
/// store's `memory_object_bytes`, else into a temporary file a piece at a time.
async fn read_plain(
    store: &Store,
    name: &str,
    bytes: u64,
    sha256: &str,
) -> Result<Plain, BackupError> {
    if bytes <= store.memory_object_bytes() {
        return Ok(Plain::Memory(
            read_stored(store, name, bytes, sha256).await?,
        ));
    }
    let (file, size, sha) = store
        .get_to_file(name)
        .await?
        .ok_or_else(|| corrupt(store, name, MISSING))?;
    check_stored(store, name, (size, sha.as_str()), bytes, sha256)?;
    Ok(Plain::File(store.unseal_file(name, file).await?))
}

/// Reads object `expected` of source `source` and checks its size, sha256 and header.
pub async fn read_checked(
    store: &Store,
    source: &str,
    expected: Expected<'_>,
) -> Result<CheckedObject, BackupError> {
    let name = expected.name;
    let plain = read_plain(store, name, expected.bytes, expected.sha256).await?;
    let reader = plain
        .reader()
        .map_err(|e| corrupt(store, name, format!("reading it back: {e}")))?;
    let schema = ocf::open(reader)
        .map_err(|e| corrupt(store, name, e.to_string()))?
        .schema;
    let schemas = AvroSchemas::from_value_text(source, &schema)
        .map_err(|e| corrupt(store, name, e.to_string()))?;
    Ok(CheckedObject {
        store: store.describe().to_string(),
        name: name.to_string(),
        events: expected.events,
        plain,
        schemas,
    })
}

impl CheckedObject {
    /// The table version of its events.
    pub fn table(&self) -> &TableSchema {
        &self.schemas.table
    }

    fn bad(&self, message: impl std::fmt::Display) -> BackupError {
        BackupError::Corrupt {
            store: self.store.clone(),
            object: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// Each block's events, in order; the last item checks the total.
    pub fn blocks(&self) -> Result<Blocks<'_>, BackupError> {
        let reader = self
            .plain
            .reader()
            .map_err(|e| self.bad(format!("reading it back: {e}")))?;
        Ok(Blocks {
            container: ocf::open(reader).map_err(|e| self.bad(e))?,
            object: self,
            total: 0,
            done: false,
        })
    }

    /// Every event, in order.
    pub fn events(&self) -> Result<Vec<ChangeEvent>, BackupError> {
        let mut out = Vec::with_capacity(self.events as usize);
        for events in self.blocks()? {
            out.extend(events?);
        }
        Ok(out)
    }
}

/// The blocks of a [`CheckedObject`], decoded.
pub struct Blocks<'a> {
    object: &'a CheckedObject,
    container: ocf::Container<Box<dyn std::io::Read + 'a>>,
    total: u64,
    done: bool,
}

impl Iterator for Blocks<'_> {
    type Item = Result<Vec<ChangeEvent>, BackupError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let o = self.object;
        let mut step = || -> Result<Option<Vec<ChangeEvent>>, BackupError> {
            let Some((count, datums)) = self.container.next_block().map_err(|e| o.bad(e))? else {
                if self.total != o.events {
                    return Err(o.bad(format!(
                        "holds {} events but the manifest says {}",
                        self.total, o.events
                    )));
                }
                return Ok(None);
            };
            let mut rest = datums.as_slice();
            let mut events = Vec::with_capacity(count as usize);
            for _ in 0..count {
                events.push(decode_value_from(&o.schemas, &mut rest).map_err(|e| o.bad(e))?);
            }
            if !rest.is_empty() {
                return Err(o.bad("a block holds more bytes than its datums"));
            }
            self.total += count;
            Ok(Some(events))
        };
        match step() {
            Ok(Some(events)) => Some(Ok(events)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The events of archive object `entry` of source `source`, in order, all checks made.
pub async fn read_events(
    store: &Store,
    source: &str,
    entry: &ObjectEntry,
) -> Result<Vec<ChangeEvent>, BackupError> {
    read_checked(store, source, entry.into()).await?.events()
}

/// Verifies `source`'s whole archive: the chain, coverage, and every object (size,
/// sha256, framing, every event decoded and counted).
pub async fn verify_archive(store: &Store, source: &str) -> Result<ArchiveReport, BackupError> {
    let manifests = chain(store, source).await?;
    let mut report = ArchiveReport {
        source: source.to_string(),
        ..ArchiveReport::default()
    };
    for m in &manifests {
        let mut events = 0;
        for entry in &m.objects {
            let object = read_checked(store, source, entry.into()).await?;
            for read in object.blocks()? {
                events += read?.len() as u64;
            }
            report.objects += 1;
            report.bytes += entry.bytes;
        }
        if events != m.events {
            return Err(corrupt(
                store,
                &manifest_name(source, m.seq),
                format!("says {} events but its objects hold {events}", m.events),
            ));
        }
        report.segments += 1;
        report.events += events;
        report.to = Some(m.to);
        report.first_commit_micros = report
            .first_commit_micros
            .or(Some(m.first_commit_micros))
            .map(|t| t.min(m.first_commit_micros));
        report.last_commit_micros = report.last_commit_micros.max(Some(m.last_commit_micros));
    }
    report.from = manifests.first().and_then(|m| m.from);
    Ok(report)
}

/// Verifies snapshot `snap` of `source`: every object's size, sha256, framing and rows,
/// every row decoded (COPY text with `decoder`).
pub async fn verify_snapshot(
    store: &Store,
    source: &str,
    snap: &crate::snapshots::SnapshotManifest,
    decoder: Option<crate::snapshots::CopyDecoder>,
) -> Result<u64, BackupError> {
    let mut rows = 0;
    for object in &snap.objects {
        let checked = crate::snapshots::read_snapshot_object(store, snap, object).await?;
        let mut object_rows = 0;
        for block in checked.blocks()? {
            object_rows += checked.decode(block?, decoder, object_rows)?.len() as u64;
        }
        rows += object_rows;
    }
    if rows != snap.rows {
        return Err(corrupt(
            store,
            &crate::snapshots::snapshot_manifest_name(source, &snap.id),
            format!("says {} rows but its objects hold {rows}", snap.rows),
        ));
    }
    Ok(rows)
}
