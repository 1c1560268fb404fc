//! The restore test of `tributary snapshot verify --restore-test`: a restore into a
//! scratch database, checked table by table against what the archive says.
//!
//! While the restore runs, a [`RestoreSink`] in front of the real sink folds every event it
//! applies into the expected contents of each table (key → row), kept in a temporary
//! on-disk tree so memory stays bounded whatever the size. After it, the caller reads the
//! scratch tables back (through the sink's `admin::Session::read_table`) into
//! [`RestoreTest::observe`], and [`RestoreTest::compare`] gives, per table, the row counts
//! and content checksums on both sides, and the first keys that differ.
//!
//! Values are compared in a canonical text form per kind of value (all integer widths
//! alike, enumeration labels as text, JSON with its keys sorted), so a column the target
//! stores in a near type (an enum as text) still compares equal when it holds the same
//! value. Columns are compared by name, over the table's newest version: a row written
//! before a column was added holds NULL there, as the target does.

use crate::error::BackupError;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tributary_schemas::{ChangeEvent, Op, Position, Row, TableId, TableSchema, Value};
use tributary_sinks::{CopyLoad, Sink, SinkError};

/// Differences listed per table at most.
const SHOWN: usize = 3;

/// A row: column name → canonical value.
type Canon = BTreeMap<String, String>;

/// The canonical text of `v` (`None` for a value the source did not send).
fn canonical(v: &Value) -> Option<String> {
    Some(match v {
        Value::Unchanged => return None,
        Value::Null => "null".into(),
        Value::Bool(b) => format!("b:{b}"),
        Value::Int16(i) => format!("i:{i}"),
        Value::Int32(i) => format!("i:{i}"),
        Value::Int64(i) => format!("i:{i}"),
        Value::Float32(f) => format!("f:{f}"),
        Value::Float64(f) => format!("f:{f}"),
        Value::Numeric(n) => format!("n:{n}"),
        Value::Text(s) | Value::Enum(s) => format!("s:{s}"),
        Value::Bytes(b) => format!("x:{}", hex::encode(b)),
        Value::Date(d) => format!("d:{d}"),
        Value::Time(t) => format!("t:{t}"),
        Value::Timestamp(t) => format!("ts:{t}"),
        Value::TimestampTz(t) => format!("tz:{t}"),
        Value::Interval(i) => format!("iv:{}:{}:{}", i.months, i.days, i.micros),
        Value::Uuid(u) => format!("u:{}", hex::encode(u)),
        Value::Json(j) => match serde_json::from_str::<serde_json::Value>(j) {
            // serde_json's maps are sorted: one text per document.
            Ok(doc) => format!("j:{doc}"),
            Err(_) => format!("j?:{j}"),
        },
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| canonical(i).unwrap_or_default())
                .collect();
            format!("a:{}", serde_json::Value::from(items))
        }
    })
}

/// The key text of `row` of `schema` (its primary key's canonical values; every column
/// when it has none).
fn key_text(schema: &TableSchema, row: &Row) -> String {
    let all: Vec<usize>;
    let key = if schema.primary_key.is_empty() {
        all = (0..schema.columns.len()).collect();
        &all
    } else {
        &schema.primary_key
    };
    key.iter()
        .map(|&i| row.0.get(i).and_then(canonical).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

fn tree_key(table: &TableId, key: &str) -> Vec<u8> {
    format!("{}\u{1f}{}\u{1e}{key}", table.schema, table.name).into_bytes()
}

fn table_prefix(table: &TableId) -> Vec<u8> {
    format!("{}\u{1f}{}\u{1e}", table.schema, table.name).into_bytes()
}

/// One table's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    /// The source table.
    pub table: TableId,
    /// Rows the archive says it holds.
    pub expected_rows: u64,
    /// Rows the restored table holds.
    pub restored_rows: u64,
    /// Content checksum of what the archive says (sha256-based, order independent).
    pub expected_checksum: String,
    /// Content checksum of the restored table.
    pub restored_checksum: String,
    /// The first differences, by key.
    pub differences: Vec<String>,
}

impl TableCheck {
    /// Whether the restored table holds what the archive says.
    pub fn ok(&self) -> bool {
        self.expected_rows == self.restored_rows
            && self.expected_checksum == self.restored_checksum
            && self.differences.is_empty()
    }
}

/// The state of one restore test (see the module documentation).
pub struct RestoreTest {
    _dir: tempfile::TempDir,
    expected: sled::Tree,
    observed: sled::Tree,
    /// Each table's newest version seen, and its column names.
    newest: BTreeMap<TableId, (TableSchema, Vec<String>)>,
}

impl RestoreTest {
    /// A new test, its trees in a temporary directory.
    pub fn new() -> Result<Self, BackupError> {
        let dir = tempfile::tempdir().map_err(|e| spool("a temporary directory", e))?;
        let db = sled::Config::new()
            .path(dir.path())
            .temporary(true)
            .open()
            .map_err(|e| spool(&dir.path().display().to_string(), e))?;
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|e| spool(&dir.path().display().to_string(), e))
        };
        Ok(RestoreTest {
            expected: open("expected")?,
            observed: open("observed")?,
            newest: BTreeMap::new(),
            _dir: dir,
        })
    }

    fn canon_of(schema: &TableSchema, row: &Row, old: Option<&Canon>) -> Canon {
        schema
            .columns
            .iter()
            .zip(&row.0)
            .map(|(c, v)| {
                let text = canonical(v)
                    .or_else(|| old.and_then(|o| o.get(&c.name).cloned()))
                    .unwrap_or_else(|| "null".into());
                (c.name.clone(), text)
            })
            .collect()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Canon>, BackupError> {
        match self
            .expected
            .get(key)
            .map_err(|e| spool("the expected rows", e))?
        {
            None => Ok(None),
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        }
    }

    fn put(tree: &sled::Tree, key: Vec<u8>, row: &Canon) -> Result<(), BackupError> {
        let bytes = serde_json::to_vec(row).map_err(|e| spool("a row", e))?;
        tree.insert(key, bytes).map_err(|e| spool("the rows", e))?;
        Ok(())
    }

    /// Folds `events` of table version `schema`, as the restore applies them.
    pub fn expect(
        &mut self,
        schema: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), BackupError> {
        let table = &schema.table;
        if self.newest.get(table).is_none_or(|(s, _)| s != schema) {
            let names = schema.columns.iter().map(|c| c.name.clone()).collect();
            self.newest.insert(table.clone(), (schema.clone(), names));
        }
        for event in events {
            match event.op {
                Op::Read | Op::Insert | Op::Update => {
                    let Some(after) = &event.after else { continue };
                    let key = tree_key(table, &key_text(schema, after));
                    let old_key = event
                        .before
                        .as_ref()
                        .map(|b| tree_key(table, &key_text(schema, b)))
                        .filter(|k| *k != key);
                    let old = match &old_key {
                        Some(k) => self.get(k)?,
                        None => self.get(&key)?,
                    };
                    if let Some(k) = old_key {
                        self.expected
                            .remove(k)
                            .map_err(|e| spool("the expected rows", e))?;
                    }
                    let row = Self::canon_of(schema, after, old.as_ref());
                    Self::put(&self.expected, key, &row)?;
                }
                Op::Delete => {
                    if let Some(before) = &event.before {
                        self.expected
                            .remove(tree_key(table, &key_text(schema, before)))
                            .map_err(|e| spool("the expected rows", e))?;
                    }
                }
                Op::Truncate => {
                    for key in self.expected.scan_prefix(table_prefix(table)).keys() {
                        let key = key.map_err(|e| spool("the expected rows", e))?;
                        self.expected
                            .remove(key)
                            .map_err(|e| spool("the expected rows", e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Records a row read back from the restored table that stands for source table
    /// `table`; `schema` is the one its values were read as.
    pub fn observe(
        &mut self,
        table: &TableId,
        schema: &TableSchema,
        row: &Row,
    ) -> Result<(), BackupError> {
        let key = tree_key(table, &key_text(schema, row));
        Self::put(&self.observed, key, &Self::canon_of(schema, row, None))
    }

    /// The tables the restore wrote, each in its newest version.
    pub fn tables(&self) -> Vec<TableSchema> {
        self.newest.values().map(|(s, _)| s.clone()).collect()
    }

    /// Compares every table the restore wrote.
    pub fn compare(&self) -> Result<Vec<TableCheck>, BackupError> {
        let mut out = Vec::new();
        for (table, (_, columns)) in &self.newest {
            let prefix = table_prefix(table);
            let mut expected = Side::new(self.expected.scan_prefix(&prefix), columns);
            let mut restored = Side::new(self.observed.scan_prefix(&prefix), columns);
            let show =
                |key: &[u8]| String::from_utf8_lossy(&key[prefix.len()..]).replace('\u{1f}', ", ");
            let mut differences = Vec::new();
            loop {
                // The smaller key goes first; equal keys go together.
                let (ka, kb) = (expected.peek()?, restored.peek()?);
                let (take_a, take_b) = match (&ka, &kb) {
                    (None, None) => break,
                    (Some(x), Some(y)) => (x <= y, y <= x),
                    (a, _) => (a.is_some(), a.is_none()),
                };
                let row_a = if take_a { expected.take()? } else { None };
                let row_b = if take_b { restored.take()? } else { None };
                if differences.len() >= SHOWN {
                    continue;
                }
                match (row_a, row_b) {
                    (Some((k, x)), Some((_, y))) if x != y => differences.push(format!(
                        "key ({}): the archive says ({}), the restore holds ({})",
                        show(&k),
                        x.replace('\u{1f}', ", "),
                        y.replace('\u{1f}', ", ")
                    )),
                    (Some((k, _)), None) => {
                        differences.push(format!("key ({}): missing from the restore", show(&k)))
                    }
                    (None, Some((k, _))) => differences.push(format!(
                        "key ({}): in the restore but not in the archive",
                        show(&k)
                    )),
                    _ => {}
                }
            }
            out.push(TableCheck {
                table: table.clone(),
                expected_rows: expected.count,
                restored_rows: restored.count,
                expected_checksum: format!("{:032x}", expected.sum),
                restored_checksum: format!("{:032x}", restored.sum),
                differences,
            });
        }
        Ok(out)
    }
}

/// One side of a comparison: rows in key order, projected on the newest columns,
/// counted and summed as they are taken.
struct Side<'a> {
    rows: std::iter::Peekable<sled::Iter>,
    columns: &'a [String],
    count: u64,
    /// The wrapping sum of each row's hash (sha256 of key and values, first 16 bytes).
    sum: u128,
}

impl<'a> Side<'a> {
    fn new(rows: sled::Iter, columns: &'a [String]) -> Self {
        Side {
            rows: rows.peekable(),
            columns,
            count: 0,
            sum: 0,
        }
    }

    fn peek(&mut self) -> Result<Option<sled::IVec>, BackupError> {
        match self.rows.peek() {
            None => Ok(None),
            Some(Ok((k, _))) => Ok(Some(k.clone())),
            Some(Err(e)) => Err(spool("the rows", e)),
        }
    }

    /// The next row: its key and projected values.
    fn take(&mut self) -> Result<Option<(sled::IVec, String)>, BackupError> {
        let Some(next) = self.rows.next() else {
            return Ok(None);
        };
        let (key, value) = next.map_err(|e| spool("the rows", e))?;
        let row: Canon = serde_json::from_slice(&value).unwrap_or_default();
        let projected = self
            .columns
            .iter()
            .map(|c| row.get(c).map_or("null", String::as_str))
            .collect::<Vec<_>>()
            .join("\u{1f}");
        let digest = Sha256::new()
            .chain_update(&key)
            .chain_update([0x1e])
            .chain_update(&projected)
            .finalize();
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(
            digest[..16].try_into().expect("16 bytes"),
        ));
        self.count += 1;
        Ok(Some((key, projected)))
    }
}

fn spool(what: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::Spool {
        path: format!("restore test: {what}"),
        message: e.to_string(),
    }
}

/// The sink a restore writes through: the target's sink, with the watermark kept under
/// another key when `watermark_key` says so, and what it applies folded into a
/// [`RestoreTest`] when there is one.
pub struct RestoreSink<'a> {
    /// The target's sink.
    pub inner: &'a mut (dyn Sink + 'a),
    /// The key the target keeps the source's watermark under (default the source's name).
    pub watermark_key: Option<String>,
    /// The restore test the events go into too.
    pub test: Option<&'a mut RestoreTest>,
}

impl RestoreSink<'_> {
    /// The key of `source`'s watermark (or of another key of it, `<source>#<what>`).
    fn key(&self, source: &str) -> String {
        match (&self.watermark_key, source.split_once('#')) {
            (None, _) => source.to_string(),
            (Some(k), None) => k.clone(),
            (Some(k), Some((_, what))) => format!("{k}#{what}"),
        }
    }
}

#[async_trait]
impl Sink for RestoreSink<'_> {
    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        let key = self.key(source);
        self.inner.watermark(&key).await
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        self.inner.begin().await
    }

    fn ready_for(&self, table: &TableSchema) -> bool {
        self.inner.ready_for(table)
    }

    async fn apply(
        &mut self,
        table: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        if let Some(test) = self.test.as_deref_mut() {
            test.expect(table, events)
                .map_err(|e| SinkError::Protocol(e.to_string()))?;
        }
        self.inner.apply(table, events).await
    }

    fn copy_load(&mut self) -> Option<&mut dyn CopyLoad> {
        if self.test.is_some() {
            // The test folds events: the rows come as events.
            return None;
        }
        self.inner.copy_load()
    }

    async fn commit_data(&mut self) -> Result<(), SinkError> {
        self.inner.commit_data().await
    }

    async fn commit(&mut self, source: &str, position: Position) -> Result<(), SinkError> {
        let key = self.key(source);
        self.inner.commit(&key, position).await
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        self.inner.rollback().await
    }

    async fn idle(&mut self) -> Result<(), SinkError> {
        self.inner.idle().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_schemas::{Column, ColumnType, TxMeta};

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
            version: cols.len() as u32,
        }
    }

    fn event(op: Op, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
        ChangeEvent {
            source: "s".into(),
            table: TableId::new("public", "t"),
            schema_version: 1,
            op,
            key: Vec::new(),
            before: before.map(Row),
            after: after.map(Row),
            position: Position::pg(1, 1),
            tx: TxMeta {
                id: None,
                commit_ts_micros: 0,
                first: Position::pg(1, 1),
            },
            origin: None,
        }
    }

    #[test]
    fn folds_events_and_names_the_first_differences() {
        let v1 = schema(&["id", "qty"]);
        let v2 = schema(&["id", "qty", "note"]);
        let mut t = RestoreTest::new().unwrap();
        let i = Value::Int32;
        t.expect(
            &v1,
            &[
                event(Op::Read, None, Some(vec![i(1), i(10)])),
                event(Op::Insert, None, Some(vec![i(2), i(20)])),
                event(Op::Insert, None, Some(vec![i(3), i(30)])),
                // A key change, and an update that leaves qty out.
                event(
                    Op::Update,
                    Some(vec![i(3), Value::Null]),
                    Some(vec![i(4), i(31)]),
                ),
                event(Op::Delete, Some(vec![i(2), Value::Null]), None),
            ],
        )
        .unwrap();
        t.expect(
            &v2,
            &[event(
                Op::Update,
                None,
                Some(vec![i(1), Value::Unchanged, i(7)]),
            )],
        )
        .unwrap();
        // What a target holding the same rows reads back (qty of 4 as a bigint).
        let back = schema(&["id", "qty", "note"]);
        let table = TableId::new("public", "t");
        t.observe(&table, &back, &Row(vec![i(1), i(10), i(7)]))
            .unwrap();
        t.observe(
            &table,
            &back,
            &Row(vec![i(4), Value::Int64(31), Value::Null]),
        )
        .unwrap();
        let checks = t.compare().unwrap();
        assert_eq!(checks.len(), 1);
        assert!(checks[0].ok(), "{checks:?}");
        assert_eq!(checks[0].expected_rows, 2);

        // A wrong value and an extra row are named by key.
        t.observe(&table, &back, &Row(vec![i(4), i(32), Value::Null]))
            .unwrap();
        t.observe(&table, &back, &Row(vec![i(9), i(1), Value::Null]))
            .unwrap();
        let check = &t.compare().unwrap()[0];
        assert!(!check.ok());
        assert_eq!((check.expected_rows, check.restored_rows), (2, 3));
        assert_ne!(check.expected_checksum, check.restored_checksum);
        assert_eq!(check.differences.len(), 2, "{check:?}");
        assert!(
            check.differences[0].contains("i:4") && check.differences[0].contains("i:32"),
            "{check:?}"
        );
        assert!(
            check.differences[1].contains("not in the archive"),
            "{check:?}"
        );
    }

    #[test]
    fn json_compares_by_content_and_truncate_empties() {
        assert_eq!(
            canonical(&Value::Json(r#"{"b": 1, "a": [1, 2]}"#.into())),
            canonical(&Value::Json(r#"{"a":[1,2],"b":1}"#.into()))
        );
        assert_eq!(
            canonical(&Value::Enum("x".into())),
            canonical(&Value::Text("x".into()))
        );
        let v1 = schema(&["id", "qty"]);
        let mut t = RestoreTest::new().unwrap();
        t.expect(
            &v1,
            &[
                event(
                    Op::Insert,
                    None,
                    Some(vec![Value::Int32(1), Value::Int32(1)]),
                ),
                event(Op::Truncate, None, None),
            ],
        )
        .unwrap();
        let check = &t.compare().unwrap()[0];
        assert!(check.ok() && check.expected_rows == 0, "{check:?}");
    }
}
