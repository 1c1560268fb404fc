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

fn corrupt(store: &Store, object: &str, message: impl Into<String>) -> BackupError {
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
        return Ok(Vec::new());
    };
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
        link = m.prev.clone().map(|p| (p, name.clone()));
        out.push(m);
    }
    out.reverse();
    if let Some(first) = out.first() {
        if first.seq != 0 || first.from.is_some() {
            return Err(corrupt(
                store,
                &manifest_name(source, first.seq),
                "the chain starts here but this is not the archive's first segment",
            ));
        }
    }
    Ok(out)
}

/// Reads object `entry` and checks its size, sha256 and framing; returns its bytes.
pub async fn read_object(store: &Store, entry: &ObjectEntry) -> Result<bytes::Bytes, BackupError> {
    let bytes = store.get(&entry.name).await?.ok_or_else(|| {
        corrupt(
            store,
            &entry.name,
            "missing, though its segment's manifest lists it",
        )
    })?;
    if bytes.len() as u64 != entry.bytes {
        return Err(corrupt(
            store,
            &entry.name,
            format!(
                "holds {} bytes but the manifest says {}",
                bytes.len(),
                entry.bytes
            ),
        ));
    }
    let sha = sha256_hex(&bytes);
    if sha != entry.sha256 {
        return Err(corrupt(
            store,
            &entry.name,
            format!(
                "sha256 is {sha} but the manifest says {}: the object is damaged",
                entry.sha256
            ),
        ));
    }
    Ok(bytes)
}

/// The events of object `entry` of source `source`, in order, all checks made.
pub async fn read_events(
    store: &Store,
    source: &str,
    entry: &ObjectEntry,
) -> Result<Vec<ChangeEvent>, BackupError> {
    Ok(read_table_events(store, source, entry).await?.1)
}

/// The table version of object `entry` and its events, in order, all checks made.
pub async fn read_table_events(
    store: &Store,
    source: &str,
    entry: &ObjectEntry,
) -> Result<(TableSchema, Vec<ChangeEvent>), BackupError> {
    let bytes = read_object(store, entry).await?;
    let bad = |e: &dyn std::fmt::Display| corrupt(store, &entry.name, e.to_string());
    let mut container = ocf::open(&bytes).map_err(|e| bad(&e))?;
    let schemas = AvroSchemas::from_value_text(source, &container.schema).map_err(|e| bad(&e))?;
    let mut events = Vec::with_capacity(entry.events as usize);
    while let Some((count, datums)) = container.next_block().map_err(|e| bad(&e))? {
        let mut rest = datums.as_slice();
        for _ in 0..count {
            events.push(decode_value_from(&schemas, &mut rest).map_err(|e| bad(&e))?);
        }
        if !rest.is_empty() {
            return Err(bad(&"a block holds more bytes than its datums"));
        }
    }
    if events.len() as u64 != entry.events {
        return Err(bad(&format!(
            "holds {} events but the manifest says {}",
            events.len(),
            entry.events
        )));
    }
    Ok((schemas.table, events))
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
            let read = read_events(store, source, entry).await?;
            events += read.len() as u64;
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
