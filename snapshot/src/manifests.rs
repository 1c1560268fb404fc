//! The archive's manifests: one per sealed segment, listing its objects, each holding the
//! sha256 of its predecessor, so they form a hash chain; `HEAD.json` names the newest and
//! its sha256, and `START.json`, once retention has pruned the oldest segments, names the
//! first one kept and the snapshot that holds what came before. The archive writes them,
//! retention moves `START.json`, and verify and restore walk the chain
//! ([`crate::verify::chain`]).
//!
//! Store layout, per source:
//! - `archive/<source>/manifests/<seq>.json`
//! - `archive/<source>/HEAD.json`
//! - `archive/<source>/START.json`

use crate::error::BackupError;
use crate::object::{corrupt, Expected};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use tributary_schemas::{Position, TableId};

/// One object of a segment: a table version's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Object name in the store.
    pub name: String,
    /// The table.
    pub table: TableId,
    /// The table's schema version.
    pub schema_version: u32,
    /// Events in it.
    pub events: u64,
    /// Size of the object.
    pub bytes: u64,
    /// Its sha256, hex.
    pub sha256: String,
    /// Position of its first event.
    pub first_position: Position,
    /// Position of its last event.
    pub last_position: Position,
    /// Commit time of its first event, microseconds since the Unix epoch.
    pub first_commit_micros: i64,
    /// Commit time of its last event.
    pub last_commit_micros: i64,
}

/// The previous manifest, as a manifest or `HEAD.json` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Its sequence number.
    pub seq: u64,
    /// The sha256 of its bytes, hex.
    pub sha256: String,
    /// The last position it covers.
    pub to: Position,
}

/// One sealed segment's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this manifest.
    pub format: u32,
    /// The source.
    pub source: String,
    /// Sequence number, from 0, one more than the previous manifest's.
    pub seq: u64,
    /// When it was sealed (RFC 3339).
    pub sealed_at: String,
    /// The segment holds every event after `from` (exclusive; `None`: from the source's
    /// first event) up to `to` (inclusive).
    pub from: Option<Position>,
    /// See `from`.
    pub to: Position,
    /// Events in the segment.
    pub events: u64,
    /// Source transactions in the segment.
    pub transactions: u64,
    /// Commit time of the first event, microseconds since the Unix epoch.
    pub first_commit_micros: i64,
    /// Commit time of the last event.
    pub last_commit_micros: i64,
    /// The segment's objects.
    pub objects: Vec<ObjectEntry>,
    /// The previous manifest.
    pub prev: Option<Link>,
}

/// `HEAD.json`: the newest manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The newest manifest.
    pub manifest: Link,
}

/// Object name of source `source`'s `HEAD.json`.
pub fn head_name(source: &str) -> String {
    format!("archive/{source}/HEAD.json")
}

/// Object name of manifest `seq`.
pub fn manifest_name(source: &str, seq: u64) -> String {
    format!("archive/{source}/manifests/{seq:012}.json")
}

/// Reads source `source`'s `HEAD.json`, if any.
pub async fn read_head(store: &Store, source: &str) -> Result<Option<Head>, BackupError> {
    store.get_json(&head_name(source), "a HEAD record").await
}

/// `START.json`: the archive's chain starts at `seq`; what came before was pruned and is
/// covered by snapshot `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The first segment kept.
    pub seq: u64,
    /// The snapshot that holds everything before it.
    pub snapshot: String,
}

/// Name of source `source`'s `START.json`.
pub fn start_name(source: &str) -> String {
    format!("archive/{source}/START.json")
}

/// Reads source `source`'s `START.json`, if any.
pub async fn read_start(store: &Store, source: &str) -> Result<Option<Start>, BackupError> {
    store.get_json(&start_name(source), "a START record").await
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
