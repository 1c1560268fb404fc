//! Folding a table's events into one net effect per primary key.
//!
//! Events of one `apply` call are folded, in order, into a [`Batch`]: for every key the
//! batch remembers only what the row must look like after the batch, relative to the
//! target's state before it:
//!
//! - [`Effect::Upsert`]: the row must equal this full image (insert, snapshot read, update
//!   with every column sent, or an update whose unsent columns an earlier full image in the
//!   same batch supplies);
//! - [`Effect::Patch`]: the row, if it exists, gets the sent columns; columns marked
//!   [`Value::Unchanged`] (unchanged TOAST values) keep what the target has;
//! - [`Effect::Delete`]: the row must not exist.
//!
//! Effects on distinct keys commute, so a batch can be executed as a few set-based
//! statements in any order. Two events cannot be folded and need a *barrier* instead: a
//! truncate (which supersedes everything pending, so the batch is discarded) and an
//! update that changes the key while leaving columns unsent and whose old row is not in
//! the batch (the old row's values live only in the target, so the batch is flushed and the
//! row is updated in place, see [`Folded::Rekey`]).
//!
//! Malformed events (wrong width, value of the wrong type, missing key) are definite
//! errors naming the table, the event's position and the column.

use crate::error::SinkError;
use std::borrow::Cow;
use std::collections::HashMap;
use tributary_schemas::pg_text::write_text;
use tributary_schemas::{ChangeEvent, Op, Row, TableSchema, Value};

/// What a batch does to one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect<'a> {
    /// The row must equal this full image.
    Upsert(Cow<'a, [Value]>),
    /// The row, if present, gets every column that is not [`Value::Unchanged`].
    Patch(Cow<'a, [Value]>),
    /// The row must not exist.
    Delete,
}

/// One key's net effect.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry<'a> {
    /// Primary-key values, in key order.
    pub key: Vec<Value>,
    /// What to do.
    pub effect: Effect<'a>,
    /// Whether the key's first event in the batch made a new row (an insert or a snapshot
    /// read): the target, if it agrees with the source, has no row with this key yet.
    pub fresh: bool,
}

/// The outcome of folding one event.
#[derive(Debug, PartialEq)]
pub(crate) enum Folded {
    /// The event is part of the batch.
    Batched,
    /// The table must be truncated now; the pending batch was discarded.
    Truncate,
    /// The pending batch must be flushed, then the row keyed `old_key` updated in place
    /// with every sent column of `row` (which holds the new key).
    Rekey {
        /// The key the row has in the target.
        old_key: Vec<Value>,
        /// The new image, with [`Value::Unchanged`] for unsent columns.
        row: Vec<Value>,
    },
}

/// Net effects per key, in the order keys were first seen; rows borrow from the events
/// unless merging made new ones.
#[derive(Debug, Default)]
pub(crate) struct Batch<'a> {
    entries: Vec<Entry<'a>>,
    index: HashMap<KeyId, usize>,
    bytes: usize,
}

impl<'a> Batch<'a> {
    /// The effects, in first-seen key order.
    pub(crate) fn entries(&self) -> &[Entry<'a>] {
        &self.entries
    }

    /// Whether nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the batch reached `max_rows` keys or `max_bytes` of (estimated) data.
    pub(crate) fn is_full(&self, max_rows: usize, max_bytes: usize) -> bool {
        self.entries.len() >= max_rows || self.bytes >= max_bytes
    }

    /// Empties the batch.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
        self.bytes = 0;
    }

    /// Folds `event` into the batch.
    pub(crate) fn fold(
        &mut self,
        table: &TableSchema,
        event: &'a ChangeEvent,
    ) -> Result<Folded, SinkError> {
        if event.table != table.table {
            return Err(invalid(
                table,
                event,
                format!("belongs to table {}", event.table),
            ));
        }
        match event.op {
            Op::Truncate => {
                self.clear();
                Ok(Folded::Truncate)
            }
            Op::Insert | Op::Read => {
                let after = checked_after(table, event)?;
                if let Some(i) = after.iter().position(|v| matches!(v, Value::Unchanged)) {
                    return Err(invalid(
                        table,
                        event,
                        format!("column {} is unchanged in a new row", table.columns[i].name),
                    ));
                }
                let (key, row) = new_key(table, event, after)?;
                self.set(key, Effect::Upsert(row), true);
                Ok(Folded::Batched)
            }
            Op::Update => self.fold_update(table, event),
            Op::Delete => {
                let key = deleted_key(table, event)?;
                self.bytes += approx_size(&key);
                self.set(key, Effect::Delete, false);
                Ok(Folded::Batched)
            }
        }
    }

    fn fold_update(
        &mut self,
        table: &TableSchema,
        event: &'a ChangeEvent,
    ) -> Result<Folded, SinkError> {
        let after = checked_after(table, event)?;
        let (key, row) = new_key(table, event, after)?;
        let old_key = event
            .before
            .as_ref()
            .and_then(|before| key_of(table, &before.0))
            .unwrap_or_else(|| key.clone());
        let partial = row.iter().any(|v| matches!(v, Value::Unchanged));
        let pending = self.get(&old_key);
        if old_key != key {
            // The key changed: the old row goes, the new one comes, unless unsent columns
            // must be carried over from a row this batch knows nothing about.
            let row = match (partial, pending) {
                (false, _) => row,
                (true, Some(Effect::Upsert(full))) => fill_unchanged(row, full),
                (true, _) => {
                    return Ok(Folded::Rekey {
                        old_key,
                        row: row.into_owned(),
                    })
                }
            };
            self.set(old_key, Effect::Delete, false);
            self.set(key, Effect::Upsert(row), false);
            return Ok(Folded::Batched);
        }
        let effect = match (partial, pending) {
            (false, _) => Effect::Upsert(row),
            (true, None) => Effect::Patch(row),
            (true, Some(Effect::Upsert(full))) => Effect::Upsert(fill_unchanged(row, full)),
            (true, Some(Effect::Patch(earlier))) => Effect::Patch(fill_unchanged(row, earlier)),
            // Updating a row this batch deleted changes nothing.
            (true, Some(Effect::Delete)) => return Ok(Folded::Batched),
        };
        self.set(key, effect, false);
        Ok(Folded::Batched)
    }

    fn get(&self, key: &[Value]) -> Option<&Effect<'a>> {
        self.index
            .get(&KeyId::of(key))
            .map(|&i| &self.entries[i].effect)
    }

    /// Sets `key`'s effect; `fresh` says whether a key not in the batch yet makes a new row.
    fn set(&mut self, key: Vec<Value>, effect: Effect<'a>, fresh: bool) {
        if let Effect::Upsert(row) | Effect::Patch(row) = &effect {
            self.bytes += approx_size(row);
        }
        let id = KeyId::of(&key);
        match self.index.get(&id) {
            Some(&i) => self.entries[i].effect = effect,
            None => {
                self.index.insert(id, self.entries.len());
                self.entries.push(Entry { key, effect, fresh });
            }
        }
    }
}

/// The after-image of `event`, checked against the table's columns.
fn checked_after<'a>(
    table: &TableSchema,
    event: &'a ChangeEvent,
) -> Result<&'a [Value], SinkError> {
    let Some(Row(after)) = &event.after else {
        return Err(invalid(table, event, "has no new row image".into()));
    };
    if after.len() != table.columns.len() {
        return Err(invalid(
            table,
            event,
            format!(
                "row has {} values for {} columns",
                after.len(),
                table.columns.len()
            ),
        ));
    }
    for (value, column) in after.iter().zip(&table.columns) {
        if !value.fits(&column.ty) {
            return Err(SinkError::TypeMismatch {
                table: table.table.to_string(),
                position: Box::new(event.position),
                column: column.name.clone(),
                value: value.describe(),
                ty: column.ty.describe(),
            });
        }
    }
    Ok(after)
}

/// The key of a row image, unless a key column is NULL or unsent.
fn key_of(table: &TableSchema, row: &[Value]) -> Option<Vec<Value>> {
    table
        .primary_key
        .iter()
        .map(|&i| match row.get(i) {
            Some(Value::Null | Value::Unchanged) | None => None,
            Some(v) => Some(v.clone()),
        })
        .collect()
}

/// `event.key` when it is a complete key.
fn event_key(table: &TableSchema, event: &ChangeEvent) -> Option<Vec<Value>> {
    let complete = event.key.len() == table.primary_key.len()
        && event
            .key
            .iter()
            .all(|v| !matches!(v, Value::Null | Value::Unchanged));
    complete.then(|| event.key.clone())
}

/// The key of the new row image (from the row, else from `event.key`), and the row with
/// that key in its key columns.
fn new_key<'a>(
    table: &TableSchema,
    event: &ChangeEvent,
    row: &'a [Value],
) -> Result<(Vec<Value>, Cow<'a, [Value]>), SinkError> {
    if let Some(key) = key_of(table, row) {
        return Ok((key, Cow::Borrowed(row)));
    }
    let key = event_key(table, event)
        .ok_or_else(|| invalid(table, event, "has no complete primary key".into()))?;
    let mut row = row.to_vec();
    for (&i, value) in table.primary_key.iter().zip(&key) {
        row[i] = value.clone();
    }
    Ok((key, Cow::Owned(row)))
}

/// The key a delete removes: `event.key`, else the key columns of the old image.
fn deleted_key(table: &TableSchema, event: &ChangeEvent) -> Result<Vec<Value>, SinkError> {
    event_key(table, event)
        .or_else(|| event.before.as_ref().and_then(|b| key_of(table, &b.0)))
        .ok_or_else(|| invalid(table, event, "deletes a row without a primary key".into()))
}

/// `newer` with its unsent columns taken from `older` (which may itself leave some unsent).
fn fill_unchanged<'a>(newer: Cow<'_, [Value]>, older: &[Value]) -> Cow<'a, [Value]> {
    let filled = newer
        .iter()
        .zip(older)
        .map(|(value, old)| match value {
            Value::Unchanged => old.clone(),
            other => other.clone(),
        })
        .collect();
    Cow::Owned(filled)
}

/// A hashable identity of a key: the integer itself for the common single-integer key,
/// else an unambiguous text form (length-prefixed PostgreSQL text of each value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyId {
    Int(i64),
    Text(String),
}

impl KeyId {
    fn of(key: &[Value]) -> KeyId {
        match key {
            [Value::Int16(v)] => KeyId::Int(i64::from(*v)),
            [Value::Int32(v)] => KeyId::Int(i64::from(*v)),
            [Value::Int64(v)] => KeyId::Int(*v),
            _ => {
                let mut out = String::new();
                let mut part = String::new();
                for value in key {
                    part.clear();
                    write_text(value, &mut part);
                    out.push_str(&part.len().to_string());
                    out.push(':');
                    out.push_str(&part);
                }
                KeyId::Text(out)
            }
        }
    }
}

/// A rough size in bytes of row data held in memory.
fn approx_size(values: &[Value]) -> usize {
    values
        .iter()
        .map(|v| match v {
            Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Enum(s) => s.len() + 24,
            Value::Bytes(b) => b.len() + 24,
            Value::Array(items) => approx_size(items) + 24,
            _ => 24,
        })
        .sum()
}

fn invalid(table: &TableSchema, event: &ChangeEvent, reason: String) -> SinkError {
    SinkError::InvalidEvent {
        table: table.table.to_string(),
        position: event.position,
        reason,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
