//! Reading the archive back with every check: the manifest chain from `HEAD.json` down
//! (each manifest's sha256 as its successor names it), gap-free coverage (each segment
//! starts where its predecessor ended), and each object's size, sha256, container framing
//! and event count (read as [`crate::object`] reads every object). Every failure names the
//! object.

use crate::error::BackupError;
use crate::manifests::{
    head_name, manifest_name, no_orphan_manifests, read_head, read_start, start_name, Link,
    Manifest, ObjectEntry,
};
use crate::object::{corrupt, read_checked, sha256_hex};
use crate::snapshots::{
    list_snapshots, read_snapshot_object, snapshot_manifest_name, CopyDecoder, SnapshotManifest,
};
use crate::store::Store;
use tributary_schemas::{ChangeEvent, Position};

/// What a verified archive holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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

/// The manifests of `source`'s archive, oldest first, each checked against the link its
/// successor (or `HEAD.json`) holds, and their coverage checked gap-free. Objects are
/// not read.
pub async fn chain(store: &Store, source: &str) -> Result<Vec<Manifest>, BackupError> {
    let Some(head) = read_head(store, source).await? else {
        no_orphan_manifests(store, source).await?;
        return Ok(Vec::new());
    };
    let start = read_start(store, source).await?;
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
                let snapshots = list_snapshots(store, source).await?;
                let covered = snapshots.iter().any(|snap| {
                    snap.id == s.snapshot && first.from.is_none_or(|f| f <= snap.position)
                });
                if !covered {
                    return Err(corrupt(
                        store,
                        &start_name(source),
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
    snap: &SnapshotManifest,
    decoder: Option<CopyDecoder>,
) -> Result<u64, BackupError> {
    let mut rows = 0;
    for object in &snap.objects {
        let checked = read_snapshot_object(store, snap, object).await?;
        let mut object_rows = 0;
        for block in checked.blocks()? {
            object_rows += checked.decode(block?, decoder, object_rows)?.len() as u64;
        }
        rows += object_rows;
    }
    if rows != snap.rows {
        return Err(corrupt(
            store,
            &snapshot_manifest_name(source, &snap.id),
            format!("says {} rows but its objects hold {rows}", snap.rows),
        ));
    }
    Ok(rows)
}
