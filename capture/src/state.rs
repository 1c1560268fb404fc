//! Local capture state in sled: snapshot progress and table schema versions.
//!
//! Schema versions must be stable across restarts (sinks cache by table and version), so
//! every distinct shape a table had gets a version number once and keeps it.

use crate::error::CaptureError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tributary_schemas::{TableId, TableSchema};

/// Progress of a source's initial snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SnapshotState {
    /// A snapshot started and did not finish; the next one must first empty the sink tables.
    InProgress,
    /// A MySQL/MariaDB snapshot copying tables in primary-key chunks; it resumes here.
    Chunks(ChunkProgress),
    /// The snapshot finished at this consistent point; stream from the slot.
    Done {
        /// The slot's consistent point.
        lsn: u64,
    },
}

/// How far a chunked MySQL/MariaDB snapshot got, as far as the transport holds it.
///
/// Every chunk is read at or after `start`, and the binlog is streamed from `start` once
/// the copy ends: a row that changed after `start` may be copied in a newer state, and the
/// stream then replays its changes since `start` over it (full row images, applied as
/// upserts), so the sink ends equal to the source. A restarted copy numbers its events
/// above every earlier run's (`run`), so a sink that applied events of the broken-off run
/// beyond the recorded progress never skips a row of the new run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkProgress {
    /// The binlog position of the first consistent read; streaming starts here.
    pub start: BinlogCheckpoint,
    /// Tables copied completely.
    pub done: Vec<TableId>,
    /// The table being copied and the primary key of its last durable row (one value per
    /// key column, as the text protocol gives it).
    pub current: Option<(TableId, Vec<Vec<u8>>)>,
    /// How many times the copy was restarted.
    pub run: u32,
}

/// Where a MySQL/MariaDB capture resumes: the start of the first binlog transaction not
/// yet durable in the transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogCheckpoint {
    /// Binlog file name.
    pub file: String,
    /// Offset in that file.
    pub pos: u64,
    /// GTID of the last transaction before `pos` (MariaDB `domain-server-seq`), if known.
    #[serde(default)]
    pub gtid: Option<String>,
}

/// The capture's local state store.
#[derive(Clone)]
pub struct StateStore {
    db: sled::Db,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| CaptureError::State {
                path: path.display().to_string(),
                message: format!("{e} (is another capture running with the same state_dir?)"),
            })?;
        Ok(StateStore {
            db,
            path: path.to_path_buf(),
        })
    }

    /// An error about the store's contents.
    pub fn invalid(&self, message: String) -> CaptureError {
        self.err(message)
    }

    fn err(&self, e: impl std::fmt::Display) -> CaptureError {
        CaptureError::State {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The value stored under `key`.
    pub(crate) fn get<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CaptureError> {
        match self.db.get(key).map_err(|e| self.err(e))? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.err(e)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`, durably.
    pub(crate) fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), CaptureError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        self.db.insert(key, bytes).map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The snapshot state of `source`.
    pub fn snapshot(&self, source: &str) -> Result<Option<SnapshotState>, CaptureError> {
        self.get(&format!("snapshot/{source}"))
    }

    /// Records the snapshot state of `source`.
    pub fn set_snapshot(&self, source: &str, state: &SnapshotState) -> Result<(), CaptureError> {
        self.put(&format!("snapshot/{source}"), state)
    }

    /// The binlog checkpoint of MySQL source `source`.
    pub fn binlog_checkpoint(
        &self,
        source: &str,
    ) -> Result<Option<BinlogCheckpoint>, CaptureError> {
        self.get(&format!("binlog/{source}"))
    }

    /// Records the binlog checkpoint of MySQL source `source`.
    pub fn set_binlog_checkpoint(
        &self,
        source: &str,
        checkpoint: &BinlogCheckpoint,
    ) -> Result<(), CaptureError> {
        self.put(&format!("binlog/{source}"), checkpoint)
    }

    /// Every shape of `table` given a version so far, newest first.
    pub fn shapes(&self, source: &str, table: &TableId) -> Result<Vec<TableSchema>, CaptureError> {
        let key = format!("schemas/{source}/{}", table_key(table));
        let mut known: Vec<TableSchema> = self.get(&key)?.unwrap_or_default();
        known.sort_by_key(|s| std::cmp::Reverse(s.version));
        Ok(known)
    }

    /// Gives `schema` its stable version: the one an identical shape had before, or the next.
    pub fn version(&self, source: &str, schema: &TableSchema) -> Result<u32, CaptureError> {
        let key = format!("schemas/{source}/{}", table_key(&schema.table));
        let mut known: Vec<TableSchema> = self.get(&key)?.unwrap_or_default();
        if let Some(existing) = known.iter().find(|k| k.same_shape(schema)) {
            return Ok(existing.version);
        }
        let version = known.iter().map(|k| k.version).max().unwrap_or(0) + 1;
        let mut versioned = schema.clone();
        versioned.version = version;
        known.push(versioned);
        self.put(&key, &known)?;
        Ok(version)
    }
}

/// A table's part of a store key.
pub(crate) fn table_key(table: &TableId) -> String {
    format!("{}\u{1f}{}", table.schema, table.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_schemas::{Column, ColumnType};

    fn schema(cols: &[&str]) -> TableSchema {
        TableSchema {
            table: TableId::new("public", "t"),
            columns: cols
                .iter()
                .map(|c| Column {
                    name: c.to_string(),
                    ty: ColumnType::Int32,
                    source_type: "integer".into(),
                    nullable: true,
                    missing: None,
                })
                .collect(),
            primary_key: vec![0],
            version: 0,
        }
    }

    #[test]
    fn versions_are_stable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            assert_eq!(store.version("s", &schema(&["a"])).unwrap(), 1);
            assert_eq!(store.version("s", &schema(&["a", "b"])).unwrap(), 2);
            assert_eq!(store.version("s", &schema(&["a"])).unwrap(), 1);
            store
                .set_snapshot("s", &SnapshotState::Done { lsn: 7 })
                .unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.version("s", &schema(&["a", "b"])).unwrap(), 2);
        assert_eq!(store.version("s", &schema(&["a", "b", "c"])).unwrap(), 3);
        assert_eq!(
            store.snapshot("s").unwrap(),
            Some(SnapshotState::Done { lsn: 7 })
        );
        let progress = SnapshotState::Chunks(ChunkProgress {
            start: BinlogCheckpoint {
                file: "bin.000002".into(),
                pos: 345,
                gtid: Some("0-1-9".into()),
            },
            done: vec![TableId::new("db", "a")],
            current: Some((TableId::new("db", "b"), vec![b"42".to_vec(), vec![0, 255]])),
            run: 2,
        });
        store.set_snapshot("s", &progress).unwrap();
        assert_eq!(store.snapshot("s").unwrap(), Some(progress));
    }
}
