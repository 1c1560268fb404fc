//! Retention: which snapshots and archive segments are kept.
//!
//! `max_age` is the restore window: every instant within it must stay restorable, so the
//! newest snapshot taken before the window opens (the *anchor*) is kept with every newer
//! one, and so is every archive segment after it. `max_backups` keeps only the newest
//! snapshots; when that would delete the anchor the window needs, pruning stops with an
//! error naming both settings instead of losing the window. Without `max_age`, the oldest
//! snapshot `max_backups` keeps is the anchor.
//!
//! Segments wholly at or before the anchor's position are pruned; `START.json` then names
//! the first segment kept and the snapshot that covers what went before, so `verify`
//! accepts the shortened chain and a restore knows where the window begins. A snapshot's
//! manifest is deleted before its objects, so a half-deleted snapshot is never listed.

use crate::config::Retention;
use crate::error::BackupError;
use crate::manifests::{manifest_name, read_start, start_name, Manifest, Start};
use crate::snapshots::{list_snapshots, snapshot_manifest_name, SnapshotManifest};
use crate::store::Store;
use crate::verify::chain;

/// What pruning did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots deleted.
    pub snapshots: Vec<String>,
    /// Archive segments deleted.
    pub segments: u64,
    /// Objects deleted (snapshot and segment objects and manifests).
    pub objects: u64,
    /// The anchor snapshot: the oldest restorable instant is its consistent point.
    pub anchor: Option<String>,
}

impl Retention {
    /// Among snapshots taken at `times` (oldest first), the oldest one to keep (older ones
    /// go): with `max_age`, the newest taken before the window opens at `now_micros`
    /// (`None`: the window reaches back before every one); with `max_backups` alone, the
    /// first of the newest that many. `Err((max_backups, anchor))` when `max_backups`
    /// would delete the snapshot the window needs.
    pub fn anchor(&self, times: &[i64], now_micros: i64) -> Result<Option<usize>, (usize, usize)> {
        let anchor = match self.max_age_secs {
            Some(age) => {
                let opens = now_micros.saturating_sub((age as i64).saturating_mul(1_000_000));
                times.iter().rposition(|&t| t <= opens)
            }
            None => self
                .max_backups
                .map(|n| times.len().saturating_sub(n.max(1))),
        };
        match (anchor, self.max_backups) {
            (Some(a), Some(n)) if times.len() - a > n => Err((n, a)),
            _ => Ok(anchor),
        }
    }
}

/// The error of a `max_backups` that would delete `what`, which the window needs.
pub(crate) fn retention_conflict(n: usize, what: &str) -> BackupError {
    BackupError::Config(format!(
        "backup.max_backups = {n} would delete {what}, which backup.max_age needs to restore the oldest instants of its window; raise max_backups or shorten max_age"
    ))
}

/// Applies `retention` to source `source`'s snapshots and archive at `now_micros`
/// (`dry`: only reports).
pub async fn prune(
    store: &Store,
    source: &str,
    retention: Retention,
    now_micros: i64,
    dry: bool,
) -> Result<PruneReport, BackupError> {
    let mut report = PruneReport::default();
    if retention.max_backups.is_none() && retention.max_age_secs.is_none() {
        return Ok(report);
    }
    let snapshots = list_snapshots(store, source).await?;
    let times: Vec<i64> = snapshots.iter().map(|s| s.consistent_at_micros).collect();
    let Some(anchor) = retention.anchor(&times, now_micros).map_err(|(n, kept)| {
        retention_conflict(
            n,
            &format!("snapshot {} of source {source}", snapshots[kept].id),
        )
    })?
    else {
        // The window reaches back before every snapshot: everything is needed.
        return Ok(report);
    };
    let base: &SnapshotManifest = &snapshots[anchor];
    report.anchor = Some(base.id.clone());
    // The chain as it is, before anything is deleted.
    let manifests: Vec<Manifest> = chain(store, source).await?;
    // Segments wholly covered by the anchor; the newest is always kept, for the chain
    // to go on from.
    let keep_from = manifests
        .iter()
        .position(|m| m.to > base.position)
        .unwrap_or(manifests.len().saturating_sub(1));
    let covered = &manifests[..keep_from];
    // START.json names the anchor before any snapshot it named before is deleted, and
    // before the segments go: a stop half way leaves a chain that verifies.
    let had_start = read_start(store, source).await?.is_some();
    if !dry && (had_start || !covered.is_empty()) {
        if let Some(first_kept) = manifests.get(keep_from) {
            let start = serde_json::to_vec_pretty(&Start {
                seq: first_kept.seq,
                snapshot: base.id.clone(),
            })
            .map_err(|e| BackupError::Config(e.to_string()))?;
            store.put(&start_name(source), start.into()).await?;
        }
    }
    for old in &snapshots[..anchor] {
        report.snapshots.push(old.id.clone());
        report.objects += old.objects.len() as u64 + 1;
        if !dry {
            store
                .delete(&snapshot_manifest_name(source, &old.id))
                .await?;
            for o in &old.objects {
                store.delete(&o.name).await?;
            }
        }
    }
    for m in covered {
        report.segments += 1;
        report.objects += m.objects.len() as u64 + 1;
        if dry {
            continue;
        }
        for o in &m.objects {
            store.delete(&o.name).await?;
        }
        store.delete(&manifest_name(source, m.seq)).await?;
    }
    Ok(report)
}
