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
    /// Rows of XA transactions held until their commit.
    xa_rows: sled::Tree,
    /// The XA runs whose prepare was read, and where each ended.
    xa_runs: sled::Tree,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        // A store just dropped in this process keeps its file lock until sled's flusher
        // thread lets go of it, a moment later: a locked store is tried again for 2 s
        // before it is taken for another capture's.
        let started = std::time::Instant::now();
        let db = loop {
            match sled::Config::new()
                .path(path)
                .mode(sled::Mode::LowSpace)
                .open()
            {
                // (sled reports the lock as an error of kind `Other` naming it.)
                Err(sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && started.elapsed() < std::time::Duration::from_secs(2) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => {
                    break opened.map_err(|e| CaptureError::State {
                        path: path.display().to_string(),
                        message: format!(
                            "{e} (is another capture running with the same state_dir?)"
                        ),
                    })?
                }
            }
        };
        let tree = |name: &str| {
            db.open_tree(name).map_err(|e| CaptureError::State {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        Ok(StateStore {
            xa_rows: tree(XA_ROWS)?,
            xa_runs: tree(XA_RUNS)?,
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

/// One row change of an XA transaction, held from its XA PREPARE until its XA COMMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRow {
    /// The row's table.
    pub table: TableId,
    /// The schema version the value was encoded with.
    pub version: u32,
    /// The Avro-encoded change event (its position is replaced when it is published).
    pub value: Vec<u8>,
}

impl HeldRow {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.value.len() + 64);
        out.extend_from_slice(&self.version.to_be_bytes());
        for part in [&self.table.schema, &self.table.name] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&self.value);
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<HeldRow> {
        let (version, mut rest) = bytes.split_first_chunk::<4>()?;
        let mut part = || -> Option<String> {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_be_bytes(*len) as usize;
            let text = std::str::from_utf8(tail.get(..len)?).ok()?.to_string();
            rest = &tail[len..];
            Some(text)
        };
        let (schema, name) = (part()?, part()?);
        Some(HeldRow {
            table: TableId::new(schema, name),
            version: u32::from_be_bytes(*version),
            value: rest.to_vec(),
        })
    }
}

/// Where one run of an XA transaction is held: binlog file number and offset of its
/// first event group. An xid may be reused once its transaction ended, so each run is
/// kept apart.
pub type XaRun = (u32, u64);

/// Held XA rows: `source 0 xid 0 run seq` → [`HeldRow`].
const XA_ROWS: &str = "xa_rows";
/// XA runs read up to their prepare: `source 0 xid 0 run` → empty while prepared, or the
/// binlog position (file number, offset) of the XA COMMIT or XA ROLLBACK that ended it.
const XA_RUNS: &str = "xa_runs";

fn source_prefix(source: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + 1);
    key.extend_from_slice(source.as_bytes());
    key.push(0);
    key
}

fn xa_prefix(source: &str, xid: &str) -> Vec<u8> {
    let mut key = source_prefix(source);
    key.extend_from_slice(xid.as_bytes());
    key.push(0);
    key
}

fn position_bytes(at: (u32, u64)) -> [u8; 12] {
    let mut out = [0; 12];
    out[..4].copy_from_slice(&at.0.to_be_bytes());
    out[4..].copy_from_slice(&at.1.to_be_bytes());
    out
}

fn position_of(bytes: &[u8]) -> Option<(u32, u64)> {
    let bytes: &[u8; 12] = bytes.try_into().ok()?;
    let (file, pos) = bytes.split_at(4);
    Some((
        u32::from_be_bytes(file.try_into().ok()?),
        u64::from_be_bytes(pos.try_into().ok()?),
    ))
}

fn xa_run_key(source: &str, xid: &str, run: XaRun) -> Vec<u8> {
    let mut key = xa_prefix(source, xid);
    key.extend_from_slice(&position_bytes(run));
    key
}

/// The xid and run of a key of either XA tree, given the length of its source prefix and
/// of what follows the run (8 for a row's number, 0 for a run).
fn xa_key_parts(key: &[u8], source_len: usize, tail: usize) -> Option<(String, XaRun)> {
    let run_at = key.len().checked_sub(tail + 12)?;
    let xid = key.get(source_len..run_at.checked_sub(1)?)?;
    Some((
        String::from_utf8(xid.to_vec()).ok()?,
        position_of(&key[run_at..run_at + 12])?,
    ))
}

impl StateStore {
    /// Starts holding the rows of run `run` of XA transaction `xid`, dropping what an
    /// earlier reading of the same run left.
    pub fn xa_begin(&self, source: &str, xid: &str, run: XaRun) -> Result<(), CaptureError> {
        let rows = &self.xa_rows;
        for key in rows.scan_prefix(xa_run_key(source, xid, run)).keys() {
            rows.remove(key.map_err(|e| self.err(e))?)
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Holds row change `seq` (from 1) of run `run` of XA transaction `xid`.
    pub fn xa_hold(
        &self,
        source: &str,
        xid: &str,
        run: XaRun,
        seq: u64,
        row: &HeldRow,
    ) -> Result<(), CaptureError> {
        let mut key = xa_run_key(source, xid, run);
        key.extend_from_slice(&seq.to_be_bytes());
        self.xa_rows
            .insert(key, row.to_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records that run `run` of XA transaction `xid` is prepared: its rows are complete.
    /// (They are durable with the next checkpoint, which is stored only after this.)
    pub fn xa_prepared(&self, source: &str, xid: &str, run: XaRun) -> Result<(), CaptureError> {
        self.xa_runs
            .insert(xa_run_key(source, xid, run), &[])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The prepared run of XA transaction `xid` that its XA COMMIT or XA ROLLBACK at
    /// binlog position `at` ends, marked as ended there: the oldest run not ended yet, or
    /// the one this same statement ended when it is read again after a restart. `None`
    /// when this capture never read the transaction's prepare.
    pub fn xa_end(
        &self,
        source: &str,
        xid: &str,
        at: (u32, u64),
    ) -> Result<Option<XaRun>, CaptureError> {
        let at = position_bytes(at);
        for entry in self.xa_runs.scan_prefix(xa_prefix(source, xid)) {
            let (key, ended) = entry.map_err(|e| self.err(e))?;
            if ended.is_empty() || *ended == at {
                self.xa_runs.insert(&key, &at).map_err(|e| self.err(e))?;
                return Ok(position_of(&key[key.len() - 12..]));
            }
        }
        Ok(None)
    }

    /// Up to `limit` held rows of run `run` of XA transaction `xid` after row `after`, in
    /// order, with their numbers.
    pub fn xa_rows(
        &self,
        source: &str,
        xid: &str,
        run: XaRun,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, HeldRow)>, CaptureError> {
        let prefix = xa_run_key(source, xid, run);
        let mut from = prefix.clone();
        from.extend_from_slice(&(after + 1).to_be_bytes());
        let mut out = Vec::new();
        for entry in self.xa_rows.range(from..).take(limit) {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            if !key.starts_with(&prefix) || key.len() != prefix.len() + 8 {
                break;
            }
            let seq = u64::from_be_bytes(key[prefix.len()..].try_into().expect("8 bytes"));
            let row = HeldRow::from_bytes(&value)
                .ok_or_else(|| self.err(format!("held XA row {seq} of {xid} is damaged")))?;
            out.push((seq, row));
        }
        Ok(out)
    }

    /// Drops run `run` of XA transaction `xid`: committed and durable in the transport,
    /// or rolled back.
    pub fn xa_release(&self, source: &str, xid: &str, run: XaRun) -> Result<(), CaptureError> {
        self.xa_begin(source, xid, run)?;
        self.xa_runs
            .remove(xa_run_key(source, xid, run))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Drops the runs a capture resuming at binlog position `checkpoint` no longer needs:
    /// those ended at or before it (a stop between storing a checkpoint and releasing
    /// them), and those starting before it but never prepared (a stop mid-transaction,
    /// or a one-phase run). Returns how many runs went.
    pub fn xa_sweep(&self, source: &str, checkpoint: (u32, u64)) -> Result<usize, CaptureError> {
        let prefix = source_prefix(source);
        let mut gone = Vec::new();
        for entry in self.xa_runs.scan_prefix(&prefix) {
            let (key, ended) = entry.map_err(|e| self.err(e))?;
            if position_of(&ended).is_some_and(|end| end <= checkpoint) {
                gone.extend(xa_key_parts(&key, prefix.len(), 0));
            }
        }
        let mut last: Option<(String, XaRun)> = None;
        for key in self.xa_rows.scan_prefix(&prefix).keys() {
            let key = key.map_err(|e| self.err(e))?;
            let Some(parts) = xa_key_parts(&key, prefix.len(), 8) else {
                continue;
            };
            if last.as_ref() == Some(&parts) {
                continue;
            }
            let prepared = self
                .xa_runs
                .contains_key(xa_run_key(source, &parts.0, parts.1))
                .map_err(|e| self.err(e))?;
            if !prepared && parts.1 < checkpoint {
                gone.push(parts.clone());
            }
            last = Some(parts);
        }
        for (xid, run) in &gone {
            self.xa_release(source, xid, *run)?;
        }
        Ok(gone.len())
    }

    /// Drops every held run of `source` (a new snapshot starts).
    pub fn xa_forget(&self, source: &str) -> Result<(), CaptureError> {
        let prefix = source_prefix(source);
        for tree in [&self.xa_rows, &self.xa_runs] {
            for key in tree.scan_prefix(&prefix).keys() {
                tree.remove(key.map_err(|e| self.err(e))?)
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// The xids of XA transactions that were prepared when `source`'s snapshot started
    /// and ended before its copy began: their rows are in the copy, and their XA COMMIT in
    /// the stream has no run.
    pub fn xa_settled(&self, source: &str) -> Result<Vec<String>, CaptureError> {
        Ok(self
            .get(&format!("xa_settled/{source}"))?
            .unwrap_or_default())
    }

    /// Records the xids [`StateStore::xa_settled`] gives.
    pub fn set_xa_settled(&self, source: &str, xids: &[String]) -> Result<(), CaptureError> {
        self.put(&format!("xa_settled/{source}"), &xids)
    }

    /// The binlog position (file number, end offset) up to which an XA COMMIT of a
    /// prepare `source`'s stream never read ended before its snapshot's copy began.
    pub fn xa_settled_until(&self, source: &str) -> Result<Option<(u32, u64)>, CaptureError> {
        Ok(self
            .get::<Option<(u32, u64)>>(&format!("xa_settled_until/{source}"))?
            .flatten())
    }

    /// Records the position [`StateStore::xa_settled_until`] gives.
    pub fn set_xa_settled_until(
        &self,
        source: &str,
        end: Option<(u32, u64)>,
    ) -> Result<(), CaptureError> {
        self.put(&format!("xa_settled_until/{source}"), &end)
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
    fn a_store_let_go_of_meanwhile_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path()).unwrap();
        // Another owner lets go of the store while this one waits for it: the store is
        // locked when the open starts, and free a moment later.
        let owner = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        StateStore::open(dir.path()).unwrap();
        owner.join().unwrap();
        // Held for good, the store is another capture's: that is an error naming it.
        let held = StateStore::open(dir.path()).unwrap();
        let e = StateStore::open(dir.path()).map(drop).unwrap_err();
        assert!(e.to_string().contains("another capture"), "{e}");
        drop(held);
    }

    #[test]
    fn xa_runs_are_held_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let row = |n: u8| HeldRow {
            table: TableId::new("shop", "t"),
            version: 3,
            value: vec![0, n, 255],
        };
        let a = "X'61',X'',1";
        let (first, second) = ((1, 400), (2, 90));
        let rows = |store: &StateStore, run: XaRun| {
            let mut seen = Vec::new();
            loop {
                let after = seen.last().map(|(s, _)| *s).unwrap_or(0);
                let chunk = store.xa_rows("s", a, run, after, 100).unwrap();
                if chunk.is_empty() {
                    return seen;
                }
                seen.extend(chunk);
            }
        };
        {
            let store = StateStore::open(dir.path()).unwrap();
            store.xa_begin("s", a, first).unwrap();
            // 256 rows: numbers whose last byte is 0 and 255 keep their order.
            for seq in 1..=256u64 {
                store.xa_hold("s", a, first, seq, &row(seq as u8)).unwrap();
            }
            store.xa_prepared("s", a, first).unwrap();
            // Another transaction, another source.
            store
                .xa_hold("s", "X'62',X'',1", (2, 50), 1, &row(9))
                .unwrap();
            store.xa_hold("t", a, first, 1, &row(9)).unwrap();
            store.xa_prepared("t", a, first).unwrap();
            store.db.flush().unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let held = rows(&store, first);
        assert_eq!(held.len(), 256);
        assert!(held
            .iter()
            .enumerate()
            .all(|(i, (seq, r))| *seq == i as u64 + 1 && *r == row(*seq as u8)));
        // Its commit at (2, 10) ends the first run; the xid is reused and prepared again.
        assert_eq!(store.xa_end("s", a, (2, 10)).unwrap(), Some(first));
        store.xa_begin("s", a, second).unwrap();
        store.xa_hold("s", a, second, 1, &row(7)).unwrap();
        store.xa_begin("s", a, second).unwrap();
        store.xa_hold("s", a, second, 1, &row(8)).unwrap();
        store.xa_prepared("s", a, second).unwrap();
        // Read again after a restart, the first commit still finds the first run; a new
        // commit finds the second.
        assert_eq!(store.xa_end("s", a, (2, 10)).unwrap(), Some(first));
        assert_eq!(store.xa_end("s", a, (2, 300)).unwrap(), Some(second));
        assert_eq!(rows(&store, second), vec![(1, row(8))]);
        // No run for a transaction whose prepare was not read.
        assert_eq!(store.xa_end("s", "X'62',X'',1", (2, 10)).unwrap(), None);
        // Resuming at (2, 10): the first run ended there and goes; the second stays, and so
        // do the unprepared rows of X'62' (after the checkpoint) and source t's.
        assert_eq!(store.xa_sweep("s", (2, 10)).unwrap(), 1);
        assert!(rows(&store, first).is_empty());
        assert_eq!(rows(&store, second), vec![(1, row(8))]);
        assert_eq!(store.xa_sweep("s", (1, 400)).unwrap(), 0);
        // Past the unprepared run's start it goes too, with the ended second run.
        assert_eq!(store.xa_sweep("s", (3, 4)).unwrap(), 2);
        assert!(store
            .xa_rows("s", "X'62',X'',1", (2, 50), 0, 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            store.xa_rows("t", a, first, 0, 10).unwrap(),
            vec![(1, row(9))]
        );
        store.xa_release("t", a, first).unwrap();
        assert_eq!(store.xa_end("t", a, (9, 9)).unwrap(), None);
        store.xa_hold("t", a, first, 1, &row(9)).unwrap();
        store.xa_forget("t").unwrap();
        assert!(store.xa_rows("t", a, first, 0, 10).unwrap().is_empty());
        store.set_xa_settled("s", &[a.to_string()]).unwrap();
        assert_eq!(store.xa_settled("s").unwrap(), vec![a.to_string()]);
        assert!(store.xa_settled("t").unwrap().is_empty());
        assert_eq!(store.xa_settled_until("s").unwrap(), None);
        store.set_xa_settled_until("s", Some((3, 1234))).unwrap();
        assert_eq!(store.xa_settled_until("s").unwrap(), Some((3, 1234)));
        store.set_xa_settled_until("s", None).unwrap();
        assert_eq!(store.xa_settled_until("s").unwrap(), None);
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
