//! Conflict resolution in the apply loop: which tables merge (`[[conflicts]]`), and the
//! merge of one table's events with the states the sink keeps.
//!
//! A table that a `[[conflicts]]` entry matches is never written event by event. For each
//! batch the apply loop locks the batch's rows' merge states in the sink (in the sink
//! transaction), folds every event into its row's [`RowState`] and writes each touched
//! row's merged image whole (or deletes it), then stores the states in the same
//! transaction as the rows and the watermark. Every apply loop into a sink merges into the
//! same states, so the sink converges on the same rows whatever order the sources'
//! changes arrive in.
//!
//! A sink that writes into a captured database (bidirectional sync) also folds that
//! database's own changes (`own`): they are already in it, so it writes only when the
//! merged row differs from the row the change left. Its capture reads back Tributary's
//! writes too; such an echo changes no state, but when the merged row moved on since the
//! sink's last write of the row (a local change the sink overwrote, folded later), the
//! merged row is written again. Each write happens only when the merged row differs from
//! the last one written, so nothing loops.
//!
//! Every change whose image lost is a [`ConflictRecord`] for the conflict log, and every
//! concurrent edit of a `manual` column a [`QueuedConflict`] for the queue (`records`).

mod records;

pub use records::{ConflictRecord, LostColumn, Named, QueuedConflict, Resolution, Take};

use crate::error::PipelineError;
use crate::merge::{Change, DeletePolicy, RowState, Strategy, TablePolicy};
use records::{manual_conflicts, record};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use tributary_schemas::{ChangeEvent, ColumnType, Op, Row, Stamp, TableSchema, Value};

/// One `[[conflicts]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConflictConfig {
    /// The tables it applies to: `schema.table`, `schema.*`, `*.table` or `*` (the schema
    /// is the source's: a PostgreSQL schema or a MySQL database).
    pub table: String,
    /// Strategy per column; the others are `lww`.
    #[serde(default)]
    pub columns: BTreeMap<String, Strategy>,
    /// Whether a delete or a concurrent update wins.
    #[serde(default)]
    pub delete: DeletePolicy,
    /// The source whose values win `source_priority` columns.
    #[serde(default)]
    pub priority_source: Option<String>,
}

/// The conflict settings of a pipeline.
#[derive(Debug, Clone, Default)]
pub struct Conflicts(Vec<ConflictConfig>);

impl Conflicts {
    /// Checks `entries` against the configured source names; errors name the entry
    /// (`conflicts[i]`) and what is wrong.
    pub fn new(entries: &[ConflictConfig], sources: &[&str]) -> Result<Conflicts, String> {
        for (i, c) in entries.iter().enumerate() {
            let at = format!("conflicts[{i}]");
            let pattern_ok = c.table == "*"
                || c.table
                    .split_once('.')
                    .is_some_and(|(s, t)| !s.is_empty() && !t.is_empty());
            if !pattern_ok {
                return Err(format!(
                    "{at}.table = {:?}: expected \"schema.table\", \"schema.*\", \"*.table\" or \"*\"",
                    c.table
                ));
            }
            let prioritised = c
                .columns
                .iter()
                .find(|(_, s)| **s == Strategy::SourcePriority);
            match (&c.priority_source, prioritised) {
                (None, Some((column, _))) => {
                    return Err(format!(
                        "{at}.columns.{column} = \"source_priority\" needs {at}.priority_source (the source that wins)"
                    ))
                }
                (Some(s), _) if !sources.contains(&s.as_str()) => {
                    return Err(format!(
                        "{at}.priority_source: no source named {s:?} is configured"
                    ))
                }
                _ => {}
            }
        }
        Ok(Conflicts(entries.to_vec()))
    }

    /// Whether no table merges.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The merge policy of `table` (the first entry that matches it), or `None` when its
    /// events are applied as they come. A column the entry names that the table lacks, or
    /// whose type does not fit its strategy, is a configuration error.
    pub fn policy(&self, table: &TableSchema) -> Result<Option<TablePolicy>, PipelineError> {
        let id = &table.table;
        let Some((i, entry)) = self.0.iter().enumerate().find(|(_, c)| {
            c.table == "*"
                || c.table.split_once('.').is_some_and(|(s, t)| {
                    (s == "*" || s == id.schema) && (t == "*" || t == id.name)
                })
        }) else {
            return Ok(None);
        };
        let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        for (column, strategy) in &entry.columns {
            let Some(c) = table.columns.iter().find(|c| &c.name == column) else {
                return Err(PipelineError::Config(format!(
                    "conflicts[{i}].columns.{column}: table {id} has no column {column:?} (its columns: {})",
                    names.join(", ")
                )));
            };
            let fits = match strategy {
                Strategy::Counter => {
                    matches!(
                        c.ty,
                        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64
                    )
                }
                Strategy::Set => matches!(c.ty, ColumnType::Array { .. }),
                Strategy::Lww | Strategy::SourcePriority | Strategy::Manual => true,
            };
            if !fits {
                return Err(PipelineError::Config(format!(
                    "conflicts[{i}].columns.{column}: a {} column must be {}, but {id}.{column} is {}",
                    strategy_name(*strategy),
                    if *strategy == Strategy::Counter { "an integer" } else { "an array" },
                    c.ty.describe()
                )));
            }
            if table
                .primary_key
                .iter()
                .any(|k| table.columns[*k].name == *column)
                && *strategy != Strategy::Lww
            {
                return Err(PipelineError::Config(format!(
                    "conflicts[{i}].columns.{column}: {id}.{column} is part of the primary key, which does not merge"
                )));
            }
        }
        Ok(Some(TablePolicy {
            columns: table
                .columns
                .iter()
                .map(|c| entry.columns.get(&c.name).copied().unwrap_or_default())
                .collect(),
            names: names.iter().map(|n| n.to_string()).collect(),
            delete: entry.delete,
            priority_source: entry.priority_source.clone(),
        }))
    }
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Lww => "lww",
        Strategy::SourcePriority => "source_priority",
        Strategy::Manual => "manual",
        Strategy::Counter => "counter",
        Strategy::Set => "set",
    }
}

/// What the sink keeps per merged row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    state: RowState,
    /// Digest of the merged row the sink last wrote (`""` for a delete).
    #[serde(default)]
    written: Option<String>,
}

/// The outcome of merging a batch.
#[derive(Debug, Default)]
pub struct Merged {
    /// The rows to write (inserts holding the merged row, or deletes), one per row.
    pub writes: Vec<ChangeEvent>,
    /// The states to store, `(key, state)`.
    pub states: Vec<(String, String)>,
    /// Changes whose own row image lost to another source's (a conflict was resolved).
    pub conflicts: u64,
    /// Each such change, for the conflict log.
    pub records: Vec<ConflictRecord>,
    /// Concurrent edits of `manual` columns, for the conflict queue.
    pub manual: Vec<QueuedConflict>,
}

/// The conflict log: every change the merge did not take as it came, with what it
/// brought and what the row became, one JSON object per line in
/// `<dir>/<sink>-<source>.conflicts.jsonl`.
#[derive(Debug)]
pub struct ConflictLog {
    path: std::path::PathBuf,
}

impl ConflictLog {
    /// The log of loop `name` under `dir`.
    pub fn new(dir: &std::path::Path, name: &str) -> Self {
        ConflictLog {
            path: dir.join(format!("{name}.conflicts.jsonl")),
        }
    }

    /// The conflict queue of loop `name` under `dir`: concurrent edits of `manual`
    /// columns, waiting for a person (`tributary conflicts`).
    pub fn queue(dir: &std::path::Path, name: &str) -> Self {
        ConflictLog {
            path: dir.join(format!("{name}.manual.jsonl")),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends `records` ([`ConflictRecord`]s to a log, [`QueuedConflict`]s to a queue),
    /// one line each, and syncs the file.
    pub fn append<T: Serialize>(&self, records: &[T]) -> Result<(), PipelineError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for r in records {
            let line = serde_json::to_string(r).map_err(|e| PipelineError::Io {
                path: self.path.display().to_string(),
                message: format!("a record cannot be written as JSON: {e}"),
            })?;
            text.push_str(&line);
            text.push('\n');
        }
        crate::dead_letter::append_synced(&self.path, &text)
    }
}

/// The key text (the sink's merge-state key) of every row `events` touch, in first-touch
/// order, without repeats.
pub fn keys(table: &TableSchema, events: &[ChangeEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in events {
        for key in touched(table, e) {
            if seen.insert(key.clone()) {
                out.push(key);
            }
        }
    }
    out
}

/// The key texts an event touches: its row's, and its old key's when an update moved it.
fn touched(table: &TableSchema, e: &ChangeEvent) -> Vec<String> {
    let mut keys = Vec::new();
    if e.op == Op::Truncate {
        return keys;
    }
    keys.push(key_text(&e.key));
    if let Some(old) = old_key(table, e) {
        keys.push(key_text(&old));
    }
    keys
}

/// The old key of an update that changed its row's key.
fn old_key(table: &TableSchema, e: &ChangeEvent) -> Option<Vec<Value>> {
    if e.op != Op::Update {
        return None;
    }
    let before = e.before.as_ref()?;
    let old: Vec<Value> = table
        .primary_key
        .iter()
        .map(|i| before.0.get(*i).cloned().unwrap_or(Value::Null))
        .collect();
    let moved = old
        .iter()
        .zip(&e.key)
        .any(|(o, n)| !matches!(o, Value::Unchanged | Value::Null) && canonical(o) != canonical(n));
    moved.then_some(old)
}

/// A key as text that is the same whichever source it came from (`[1,"a"]`).
pub fn key_text(key: &[Value]) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|v| canonical(v).unwrap_or_default())
        .collect();
    serde_json::to_string(&parts).unwrap_or_default()
}

/// A value as text that is the same whichever database it came from (integers of any
/// width, booleans as 0/1, decimals without trailing zeros); `None` for a value the source
/// did not send.
fn canonical(value: &Value) -> Option<String> {
    Some(match value {
        Value::Unchanged => return None,
        Value::Null => "\u{0}null".into(),
        Value::Bool(b) => u8::from(*b).to_string(),
        Value::Int16(v) => v.to_string(),
        Value::Int32(v) => v.to_string(),
        Value::Int64(v) => v.to_string(),
        Value::Float32(v) => f64::from(*v).to_string(),
        Value::Float64(v) => v.to_string(),
        Value::Numeric(s) => {
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.')
            } else {
                s.as_str()
            };
            if s == "-0" {
                "0".into()
            } else {
                s.to_string()
            }
        }
        Value::Text(s) | Value::Enum(s) => s.clone(),
        // Key order and spacing differ between databases.
        Value::Json(s) => serde_json::from_str::<serde_json::Value>(s)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| s.clone()),
        Value::Uuid(b) => uuid::Uuid::from_bytes(*b).hyphenated().to_string(),
        Value::Timestamp(v) | Value::TimestampTz(v) => v.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    })
}

/// Whether `merged` (or its absence) is what `image` (or its absence) holds, comparing
/// only the values `image` sent.
fn same_row(merged: Option<&Row>, image: Option<&Row>) -> bool {
    match (merged, image) {
        (None, None) => true,
        (Some(m), Some(i)) => {
            m.0.iter()
                .zip(&i.0)
                .all(|(m, i)| matches!(i, Value::Unchanged) || canonical(m) == canonical(i))
        }
        _ => false,
    }
}

/// Digest of a merged row (or of a deleted one).
fn digest(row: Option<&Row>) -> String {
    let Some(row) = row else {
        return String::new();
    };
    let mut h = Sha256::new();
    for v in &row.0 {
        h.update(canonical(v).unwrap_or_default().as_bytes());
        h.update([0x1f]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Where the events being merged come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A source the sink applies.
    Apply,
    /// The database the sink writes into (see the module documentation).
    Own,
    /// The dead-letter queue, replayed after a fix: older than what their sources
    /// delivered since.
    Replay,
}

/// One row's share of an event: key, operation, before and after images.
type Part<'a> = (Vec<Value>, Op, Option<&'a Row>, Option<&'a Row>);

/// Folds `events` (one table's, no truncates) into the states `stored` (per key of
/// [`keys`], as the sink returned them) under `policy`.
pub fn merge(
    table: &TableSchema,
    policy: &TablePolicy,
    events: &[ChangeEvent],
    mode: Mode,
    keys: &[String],
    stored: Vec<Option<String>>,
) -> Result<Merged, PipelineError> {
    let own = mode == Mode::Own;
    struct Entry {
        stored: Stored,
        changed: bool,
        write: bool,
        /// The last event that touched it, and the order of that touch.
        last: usize,
        touched: usize,
        key: Vec<Value>,
    }
    let mut rows: HashMap<&str, Entry> = HashMap::with_capacity(keys.len());
    for (key, state) in keys.iter().zip(stored) {
        let stored = match state {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                PipelineError::Inconsistent(format!(
                    "the merge state of {} key {key} in the sink cannot be read ({e})",
                    table.table
                ))
            })?,
            None => Stored::default(),
        };
        rows.insert(
            key.as_str(),
            Entry {
                stored,
                changed: false,
                write: false,
                last: 0,
                touched: 0,
                key: Vec::new(),
            },
        );
    }
    let mut merged = Merged::default();
    let mut touches = 0;
    for (index, e) in events.iter().enumerate() {
        let echo = e.written_by_tributary().is_some();
        let stamp = Stamp {
            micros: e.tx.commit_ts_micros,
            logical: 0,
        };
        // An update that moved its row's key deletes the old row and inserts the new one.
        let mut parts: Vec<Part<'_>> = Vec::new();
        if let Some(old) = old_key(table, e) {
            parts.push((old, Op::Delete, e.before.as_ref(), None));
            parts.push((e.key.clone(), Op::Insert, None, e.after.as_ref()));
        } else {
            parts.push((e.key.clone(), e.op, e.before.as_ref(), e.after.as_ref()));
        }
        for (key, op, before, after) in parts {
            let text = key_text(&key);
            let entry = rows.get_mut(text.as_str()).ok_or_else(|| {
                PipelineError::Inconsistent(format!(
                    "key {text} of {} was not locked before the merge",
                    table.table
                ))
            })?;
            entry.last = index;
            touches += 1;
            entry.touched = touches;
            entry.key = key;
            let image = if op == Op::Delete { None } else { after };
            if echo && own {
                // Tributary's own write read back: when the merged row moved on since the
                // last write, write it again.
                // (A row never written has nothing to correct.)
                if !entry.write {
                    let now = entry.stored.state.row(policy);
                    entry.write = entry
                        .stored
                        .written
                        .as_deref()
                        .is_some_and(|w| w != digest(now.as_ref()));
                }
                continue;
            }
            let change = Change {
                source: &e.source,
                position: e.position,
                stamp,
                op,
                before,
                after,
            };
            let manual = op == Op::Update && policy.columns.contains(&Strategy::Manual);
            // Before the change: the row, and who wrote each column.
            let prev = if manual {
                entry.stored.state.row(policy).map(|row| {
                    let writers: Vec<Option<String>> = (0..policy.columns.len())
                        .map(|i| entry.stored.state.writer(policy, i).map(str::to_string))
                        .collect();
                    (row, writers)
                })
            } else {
                None
            };
            // An update of a row the merge has no state for (conflict resolution was
            // configured after the row was copied): its before image is the row as it was,
            // older than any change.
            if op == Op::Update && entry.stored.state.is_new() {
                if let Some(before) = before {
                    entry.stored.state.seed(policy, before).map_err(|m| {
                        PipelineError::Rejected(format!(
                            "the row before {} of {} key {text} at {} cannot be merged: column {}: {}",
                            op.code(),
                            table.table,
                            e.position,
                            table.columns.get(m.column).map_or("?", |c| c.name.as_str()),
                            m.message
                        ))
                    })?;
                }
            }
            let taken = if mode == Mode::Replay {
                entry.stored.state.apply_replayed(policy, &change)
            } else {
                entry.stored.state.apply(policy, &change)
            };
            let taken = taken.map_err(|m| {
                PipelineError::Rejected(format!(
                    "{} of {} key {text} at {} cannot be merged: column {}: {}",
                    op.code(),
                    table.table,
                    e.position,
                    table.columns.get(m.column).map_or("?", |c| c.name.as_str()),
                    m.message
                ))
            })?;
            if !taken {
                // Already merged (a duplicate delivery): the row was written then.
                continue;
            }
            entry.changed = true;
            let now = entry.stored.state.row(policy);
            if let (Some((prev, writers)), Some(before), Some(after)) = (&prev, before, after) {
                merged.manual.extend(manual_conflicts(
                    table,
                    policy,
                    &change,
                    &entry.key,
                    (prev, writers),
                    (before, after),
                    now.as_ref(),
                ));
            }
            let agrees = same_row(now.as_ref(), image);
            if !agrees {
                merged.conflicts += 1;
                merged
                    .records
                    .push(record(table, policy, &change, &text, image, now.as_ref()));
            }
            // A change of the sink's own database is already in it: write only when the
            // merge gives another row.
            entry.write |= !own || !agrees;
        }
    }
    let mut order: Vec<(&str, Entry)> = rows.into_iter().collect();
    order.sort_by_key(|(_, e)| e.touched);
    for (key, mut entry) in order {
        if entry.write {
            let row = entry.stored.state.row(policy).map(|r| fit(table, r));
            entry.stored.written = Some(digest(row.as_ref()));
            entry.changed = true;
            let base = &events[entry.last];
            merged.writes.push(ChangeEvent {
                // A full image to upsert, as an update without a before image: the row may
                // be in the target already, so it is not an insert (which a sink may copy
                // straight in as a new row).
                op: if row.is_some() {
                    Op::Update
                } else {
                    Op::Delete
                },
                key: entry.key.clone(),
                before: None,
                after: row,
                origin: None,
                ..base.clone()
            });
        }
        if entry.changed {
            let text = serde_json::to_string(&entry.stored).map_err(|e| {
                PipelineError::Inconsistent(format!(
                    "the merge state of {} key {key} cannot be written ({e})",
                    table.table
                ))
            })?;
            merged.states.push((key.to_string(), text));
        }
    }
    Ok(merged)
}

/// `row` with each value in its column's type where another source's type of the same
/// value differs (an `int` counted from a source whose column is a `bigint`, a boolean
/// from a `tinyint`).
fn fit(table: &TableSchema, row: Row) -> Row {
    Row(row
        .0
        .into_iter()
        .zip(&table.columns)
        .map(|(v, c)| {
            let int = match &v {
                Value::Int16(x) => Some(i64::from(*x)),
                Value::Int32(x) => Some(i64::from(*x)),
                Value::Int64(x) => Some(*x),
                Value::Bool(b) => Some(i64::from(*b)),
                _ => None,
            };
            let fitted = match (&c.ty, int, &v) {
                (ColumnType::Int16, Some(x), _) => i16::try_from(x).ok().map(Value::Int16),
                (ColumnType::Int32, Some(x), _) => i32::try_from(x).ok().map(Value::Int32),
                (ColumnType::Int64, Some(x), _) => Some(Value::Int64(x)),
                (ColumnType::Bool, Some(x), _) => Some(Value::Bool(x != 0)),
                (ColumnType::Numeric { .. }, Some(x), _) => Some(Value::Numeric(x.to_string())),
                (ColumnType::Float64, _, Value::Float32(f)) => Some(Value::Float64(f64::from(*f))),
                _ => None,
            };
            fitted.unwrap_or(v)
        })
        .collect())
}

/// Table `public.items` of `columns`, keyed by the first: the tests' table.
#[cfg(test)]
fn items_table(columns: &[(&str, ColumnType)]) -> TableSchema {
    TableSchema {
        table: tributary_schemas::TableId::new("public", "items"),
        columns: columns
            .iter()
            .map(|(name, ty)| tributary_schemas::Column {
                name: name.to_string(),
                ty: ty.clone(),
                source_type: String::new(),
                nullable: false,
                missing: None,
            })
            .collect(),
        primary_key: vec![0],
        version: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_schemas::{Position, TableId, TxMeta};

    fn table() -> TableSchema {
        items_table(&[
            ("id", ColumnType::Int32),
            ("name", ColumnType::Text),
            ("qty", ColumnType::Int32),
        ])
    }

    fn conflicts() -> Conflicts {
        Conflicts::new(
            &[ConflictConfig {
                table: "*.items".into(),
                columns: [("qty".to_string(), Strategy::Counter)].into(),
                delete: DeletePolicy::UpdateWins,
                priority_source: None,
            }],
            &["hq", "store"],
        )
        .unwrap()
    }

    fn row(id: i32, name: &str, qty: i32) -> Row {
        Row(vec![
            Value::Int32(id),
            Value::Text(name.into()),
            Value::Int32(qty),
        ])
    }

    /// An event of `source` at `(lsn, micros)`: `before → after`.
    fn event(
        source: &str,
        lsn: u64,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
    ) -> ChangeEvent {
        let key = after.as_ref().or(before.as_ref()).unwrap().0[..1].to_vec();
        ChangeEvent {
            source: source.into(),
            table: TableId::new("public", "items"),
            schema_version: 1,
            op,
            key,
            before,
            after,
            position: Position::pg(lsn, 1),
            tx: TxMeta {
                id: None,
                commit_ts_micros: lsn as i64,
                first: Position::pg(lsn, 1),
            },
            origin: None,
        }
    }

    /// An update of `source` at `lsn`.
    fn update(source: &str, lsn: u64, before: Row, after: Row) -> ChangeEvent {
        event(source, lsn, Op::Update, Some(before), Some(after))
    }

    /// Merges `events` the way the apply loop does, against `states` (the sink's table).
    fn run(states: &mut HashMap<String, String>, events: &[ChangeEvent], mode: Mode) -> Merged {
        let table = table();
        let policy = conflicts().policy(&table).unwrap().unwrap();
        let keys = keys(&table, events);
        let stored = keys.iter().map(|k| states.get(k).cloned()).collect();
        let merged = merge(&table, &policy, events, mode, &keys, stored).unwrap();
        for (k, s) in &merged.states {
            states.insert(k.clone(), s.clone());
        }
        merged
    }

    fn written(merged: &Merged) -> Vec<Option<Row>> {
        merged.writes.iter().map(|w| w.after.clone()).collect()
    }

    #[test]
    fn both_sources_sales_count_and_a_duplicate_writes_nothing() {
        let mut states = HashMap::new();
        let insert = event("hq", 1, Op::Insert, None, Some(row(1, "a", 10)));
        run(&mut states, std::slice::from_ref(&insert), Mode::Apply);
        let hq_sale = update("hq", 2, row(1, "a", 10), row(1, "a", 9));
        let store_sale = update("store", 3, row(1, "a", 10), row(1, "b", 8));
        let m = run(&mut states, std::slice::from_ref(&store_sale), Mode::Apply);
        assert_eq!(written(&m), [Some(row(1, "b", 8))]);
        let m = run(&mut states, &[hq_sale], Mode::Apply);
        // 10 - 1 - 2, and the store's later name.
        assert_eq!(written(&m), [Some(row(1, "b", 7))]);
        assert_eq!(m.conflicts, 1, "the hq change's own image lost");
        let m = run(&mut states, &[store_sale], Mode::Apply);
        assert!(m.writes.is_empty() && m.states.is_empty(), "{m:?}");
    }

    /// The sink's own database: a change that the merge leaves as it is is not written
    /// back; a change the merge alters is; and the echo of a write the merge has since
    /// moved past is written again, once.
    #[test]
    fn the_own_database_is_written_only_where_the_merge_differs() {
        let mut states = HashMap::new();
        let insert = event("hq", 1, Op::Insert, None, Some(row(1, "a", 10)));
        let m = run(&mut states, &[insert], Mode::Own);
        assert!(m.writes.is_empty(), "already in the database: {m:?}");
        // The store's sale arrives first and is written: 8.
        let store_sale = update("store", 5, row(1, "a", 10), row(1, "a", 8));
        assert_eq!(
            written(&run(&mut states, &[store_sale], Mode::Apply)),
            [Some(row(1, "a", 8))]
        );
        // The database's own sale (committed before the write above) is folded: 7.
        let local = update("hq", 2, row(1, "a", 10), row(1, "a", 9));
        assert_eq!(
            written(&run(&mut states, &[local], Mode::Own)),
            [Some(row(1, "a", 7))]
        );
        // Its echo (8) comes after: the last write (7) is what the merge holds.
        let mut echo = update("hq", 6, row(1, "a", 9), row(1, "a", 8));
        echo.origin = Some("tributary/to_hq/store".into());
        assert!(run(&mut states, &[echo], Mode::Own).writes.is_empty());

        // A rename from the store is written; a newer local rename, committed before that
        // write but folded after it, agrees with its own image so is not written; the
        // echo of the store's rename then shows the database holds the older name, and
        // the merged row is written again, once.
        let renamed = update("store", 20, row(1, "a", 7), row(1, "s", 7));
        assert_eq!(
            written(&run(&mut states, &[renamed], Mode::Apply)),
            [Some(row(1, "s", 7))]
        );
        let local = update("hq", 30, row(1, "a", 7), row(1, "h", 7));
        assert!(run(&mut states, &[local], Mode::Own).writes.is_empty());
        let mut echo = update("hq", 31, row(1, "h", 7), row(1, "s", 7));
        echo.origin = Some("tributary/to_hq/store".into());
        assert_eq!(
            written(&run(&mut states, &[echo.clone()], Mode::Own)),
            [Some(row(1, "h", 7))]
        );
        echo.position = Position::pg(32, 1);
        echo.after = Some(row(1, "h", 7));
        assert!(run(&mut states, &[echo], Mode::Own).writes.is_empty());
    }

    /// A change replayed from the dead-letter queue after newer ones: its sale counts,
    /// its older name loses to the newer one, and a second replay changes nothing.
    #[test]
    fn a_replayed_change_counts_once_and_does_not_overwrite_newer_values() {
        let mut states = HashMap::new();
        run(
            &mut states,
            &[event("hq", 1, Op::Insert, None, Some(row(1, "a", 10)))],
            Mode::Apply,
        );
        let newer = update("hq", 5, row(1, "a", 10), row(1, "new", 9));
        run(&mut states, &[newer], Mode::Apply);
        let rejected = update("hq", 3, row(1, "a", 10), row(1, "old", 8));
        let m = run(&mut states, std::slice::from_ref(&rejected), Mode::Apply);
        assert!(
            m.writes.is_empty(),
            "below the source's position: a duplicate in the stream"
        );
        let m = run(&mut states, std::slice::from_ref(&rejected), Mode::Replay);
        assert_eq!(written(&m), [Some(row(1, "new", 7))]);
        let m = run(&mut states, &[rejected], Mode::Replay);
        assert!(m.writes.is_empty() && m.states.is_empty(), "{m:?}");
    }

    /// Conflict resolution configured after rows were copied: an update of a row without
    /// state starts from its before image, and an echo of a row never written by the
    /// merge writes nothing.
    #[test]
    fn rows_without_state_start_from_the_before_image() {
        let mut states = HashMap::new();
        let sale = update("store", 7, row(1, "a", 10), row(1, "a", 8));
        assert_eq!(
            written(&run(&mut states, &[sale], Mode::Apply)),
            [Some(row(1, "a", 8))]
        );
        let local = update("hq", 8, row(1, "a", 10), row(1, "a", 9));
        assert_eq!(
            written(&run(&mut states, &[local], Mode::Own)),
            [Some(row(1, "a", 7))]
        );
        let mut echo = update("hq", 9, row(2, "b", 1), row(2, "b", 2));
        echo.origin = Some("tributary/to_hq/store".into());
        let m = run(&mut states, &[echo], Mode::Own);
        assert!(m.writes.is_empty(), "{m:?}");
    }

    #[test]
    fn a_key_change_moves_the_merged_row() {
        let mut states = HashMap::new();
        run(
            &mut states,
            &[event("hq", 1, Op::Insert, None, Some(row(1, "a", 10)))],
            Mode::Apply,
        );
        let moved = update("hq", 2, row(1, "a", 10), row(2, "a", 10));
        let m = run(&mut states, &[moved], Mode::Apply);
        let ops: Vec<(Op, String)> = m.writes.iter().map(|w| (w.op, key_text(&w.key))).collect();
        assert_eq!(
            ops,
            [
                (Op::Delete, "[\"1\"]".to_string()),
                (Op::Update, "[\"2\"]".to_string())
            ]
        );
    }

    #[test]
    fn keys_and_values_compare_across_databases() {
        assert_eq!(key_text(&[Value::Int32(7)]), key_text(&[Value::Int64(7)]));
        assert_eq!(
            canonical(&Value::Numeric("10.50".into())),
            canonical(&Value::Numeric("10.5".into()))
        );
        assert_eq!(canonical(&Value::Bool(true)), canonical(&Value::Int16(1)));
        assert_ne!(
            canonical(&Value::Null),
            canonical(&Value::Text("null".into()))
        );
        let fitted = fit(
            &table(),
            Row(vec![
                Value::Int64(1),
                Value::Text("a".into()),
                Value::Int64(3),
            ]),
        );
        assert_eq!(fitted, row(1, "a", 3));
    }

    #[test]
    fn bad_settings_name_the_entry() {
        let entry = |table: &str, column: &str, strategy: Strategy| ConflictConfig {
            table: table.into(),
            columns: [(column.to_string(), strategy)].into(),
            delete: DeletePolicy::UpdateWins,
            priority_source: None,
        };
        let err = Conflicts::new(&[entry("items", "qty", Strategy::Counter)], &[]).unwrap_err();
        assert!(err.starts_with("conflicts[0].table"), "{err}");
        let err =
            Conflicts::new(&[entry("*.items", "qty", Strategy::SourcePriority)], &[]).unwrap_err();
        assert!(err.contains("priority_source"), "{err}");
        let mut named = entry("*.items", "qty", Strategy::SourcePriority);
        named.priority_source = Some("nope".into());
        let err = Conflicts::new(&[named], &["hq"]).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
        for (column, strategy, want) in [
            ("stock", Strategy::Lww, "has no column \"stock\""),
            ("name", Strategy::Counter, "must be an integer"),
            ("qty", Strategy::Set, "must be an array"),
            ("id", Strategy::Counter, "primary key"),
        ] {
            let c = Conflicts::new(&[entry("public.*", column, strategy)], &[]).unwrap();
            let err = c.policy(&table()).unwrap_err().to_string();
            assert!(err.contains(want), "{column}: {err}");
        }
        let c = Conflicts::new(&[entry("other.*", "qty", Strategy::Counter)], &[]).unwrap();
        assert!(c.policy(&table()).unwrap().is_none());
    }
}
