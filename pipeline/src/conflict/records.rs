//! What the merge leaves for people to read: the conflict log (`*.conflicts.jsonl`), the
//! conflict queue (`*.manual.jsonl`) and its resolutions (`resolved.jsonl`), one JSON
//! object per line.
//!
//! These files outlive a release, so their shape is fixed: the fields of each type are
//! declared in alphabetical order, because the `serde_json::json!` objects these types
//! replaced wrote their keys sorted (the workspace does not enable serde_json's
//! `preserve_order`), and column values are written through `serde_json::Value`
//! ([`as_json_value`]) as they were then. A line written before reads back, and a line
//! written now is byte for byte what the old code wrote.

use super::{canonical, key_text};
use crate::merge::{Change, DeletePolicy, Strategy, TablePolicy};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use tributary_schemas::{Row, TableSchema, Value};

/// A row's values by column name.
pub type Named = BTreeMap<String, Value>;

/// A change the merge did not take as it came: one line of the conflict log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The row image the change brought (`None`: a delete).
    #[serde(serialize_with = "as_json_value")]
    pub change: Option<Named>,
    /// The columns whose value in the change lost, with the strategy that decided.
    pub columns: Vec<LostColumn>,
    /// The change's commit time, Unix microseconds.
    pub commit_ts_micros: i64,
    /// Whether a delete or a concurrent update wins in the table.
    pub delete_policy: DeletePolicy,
    /// The row's key as the sink keeps its merge state (`["1"]`).
    pub key: String,
    /// The change's operation code (`c`, `u`, `d`).
    pub op: String,
    /// The change's position in its source.
    pub position: String,
    /// The row the merge made (`None`: deleted).
    #[serde(serialize_with = "as_json_value")]
    pub result: Option<Named>,
    /// The source the change came from.
    pub source: String,
    /// The table, `schema.table`.
    pub table: String,
}

/// A column whose value in a change lost to another source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostColumn {
    /// The column.
    pub column: String,
    /// Its merge strategy.
    pub strategy: Strategy,
}

/// A concurrent edit of a `manual` column, waiting for a person: one line of a conflict
/// queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedConflict {
    /// The column both sources edited.
    pub column: String,
    /// The commit time of the queued change, Unix microseconds.
    pub commit_ts_micros: i64,
    /// The column's value before the change, another source's.
    #[serde(serialize_with = "as_json_value")]
    pub current: Option<Value>,
    /// The source that wrote `current`.
    pub current_from: Option<String>,
    /// The queue file the entry was read from (`<sink>-<source>.manual.jsonl`: which sink
    /// met it); never written into the queue itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `table:key:column:position`, the same in every sink that met the conflict.
    pub id: String,
    /// The value the change brought.
    #[serde(serialize_with = "as_json_value")]
    pub incoming: Option<Value>,
    /// The row's primary key, by column name.
    #[serde(serialize_with = "as_json_value")]
    pub key: Named,
    /// The change's position in its source.
    pub position: String,
    /// The column's value after the merge.
    #[serde(serialize_with = "as_json_value")]
    pub result: Option<Value>,
    /// The source the change came from.
    pub source: String,
    /// The table, `schema.table`.
    pub table: String,
}

impl QueuedConflict {
    /// The value a person chose by `take`.
    pub fn value(&self, take: Take) -> Option<&Value> {
        match take {
            Take::Current => self.current.as_ref(),
            Take::Incoming => self.incoming.as_ref(),
        }
    }
}

/// Which of a queued conflict's values a person chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Take {
    /// The value before the queued change.
    Current,
    /// The value the queued change brought.
    Incoming,
}

impl Take {
    /// The choice named `name` (`current` or `incoming`).
    pub fn parse(name: &str) -> Option<Take> {
        match name {
            "current" => Some(Take::Current),
            "incoming" => Some(Take::Incoming),
            _ => None,
        }
    }
}

impl std::fmt::Display for Take {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Take::Current => "current",
            Take::Incoming => "incoming",
        })
    }
}

/// A person's choice for a queued conflict, written into its source: one line of
/// `resolved.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// The column.
    pub column: String,
    /// The queued conflict's id.
    pub id: String,
    /// The row's primary key, by column name.
    #[serde(serialize_with = "as_json_value")]
    pub key: Named,
    /// When it was written, Unix microseconds; queued entries of the same table name, key
    /// and column committed before it are settled.
    pub resolved_at_micros: i64,
    /// The table, `schema.table`, as the source names it.
    pub table: String,
    /// Which value was chosen.
    pub took: Take,
    /// The value written.
    #[serde(serialize_with = "as_json_value")]
    pub value: Value,
    /// The source it was written into.
    pub written_to: String,
}

/// Serialises `value` as `serde_json::to_value` renders it: object keys sorted (an
/// `Interval`'s fields too) and `f32` widened to `f64`, as the `json!` objects these
/// types replaced wrote column values.
fn as_json_value<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// A conflict log entry: `change` brought `image`, the merge made `merged` of the row
/// whose key text is `key`.
pub(super) fn record(
    table: &TableSchema,
    policy: &TablePolicy,
    change: &Change<'_>,
    key: &str,
    image: Option<&Row>,
    merged: Option<&Row>,
) -> ConflictRecord {
    let named = |row: Option<&Row>| -> Option<Named> {
        row.map(|r| {
            table
                .columns
                .iter()
                .zip(&r.0)
                .map(|(c, v)| (c.name.clone(), v.clone()))
                .collect()
        })
    };
    let columns = match (image, merged) {
        (Some(i), Some(m)) => table
            .columns
            .iter()
            .enumerate()
            .filter(|(n, _)| {
                let (a, b) = (i.0.get(*n), m.0.get(*n));
                !matches!(a, Some(Value::Unchanged))
                    && a.and_then(canonical) != b.and_then(canonical)
            })
            .map(|(n, c)| LostColumn {
                column: c.name.clone(),
                strategy: policy.columns.get(n).copied().unwrap_or_default(),
            })
            .collect(),
        _ => Vec::new(),
    };
    ConflictRecord {
        change: named(image),
        columns,
        commit_ts_micros: change.stamp.micros,
        delete_policy: policy.delete,
        key: key.to_string(),
        op: change.op.code().to_string(),
        position: change.position.to_string(),
        result: named(merged),
        source: change.source.to_string(),
        table: table.table.to_string(),
    }
}

/// The `manual` columns `change` edited (before and after differ) without seeing the
/// value another source gave the column last (its before value is not that value, nor is
/// its new one): one conflict queue entry each, with both values. (A source's edit over
/// a value of its own is no conflict, even when Tributary's write of an older merge
/// showed it another before value.)
pub(super) fn manual_conflicts(
    table: &TableSchema,
    policy: &TablePolicy,
    change: &Change<'_>,
    key: &[Value],
    (prev, writers): (&Row, &[Option<String>]),
    (before, after): (&Row, &Row),
    now: Option<&Row>,
) -> Vec<QueuedConflict> {
    let key_columns: Named = table
        .primary_key
        .iter()
        .zip(key)
        .map(|(i, v)| (table.columns[*i].name.clone(), v.clone()))
        .collect();
    policy
        .columns
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            let (b, a, p) = (before.0.get(*i), after.0.get(*i), prev.0.get(*i));
            **s == Strategy::Manual
                && writers
                    .get(*i)
                    .is_some_and(|w| w.as_deref().is_some_and(|w| w != change.source))
                && !matches!(b, Some(Value::Unchanged) | None)
                && !matches!(a, Some(Value::Unchanged) | None)
                && b.and_then(canonical) != a.and_then(canonical)
                && b.and_then(canonical) != p.and_then(canonical)
                && a.and_then(canonical) != p.and_then(canonical)
        })
        .map(|(i, _)| {
            let column = &table.columns[i].name;
            QueuedConflict {
                column: column.clone(),
                commit_ts_micros: change.stamp.micros,
                current: prev.0.get(i).cloned(),
                current_from: writers.get(i).cloned().flatten(),
                file: None,
                id: format!(
                    "{}:{}:{}:{}",
                    table.table,
                    key_text(key),
                    column,
                    change.position
                ),
                incoming: after.0.get(i).cloned(),
                key: key_columns.clone(),
                position: change.position.to_string(),
                result: now.and_then(|r| r.0.get(i)).cloned(),
                source: change.source.to_string(),
                table: table.table.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The lines written now against the lines the `json!` code wrote for the same change
    //! (copied here from its shape: keys sorted, values through `serde_json::Value`).

    use super::*;
    use tributary_schemas::{ColumnType, Interval, Op, Position, Stamp};

    fn table() -> TableSchema {
        crate::conflict::items_table(&[
            ("id", ColumnType::Int32),
            ("name", ColumnType::Text),
            ("ratio", ColumnType::Float32),
            ("span", ColumnType::Interval),
        ])
    }

    fn policy() -> TablePolicy {
        TablePolicy {
            columns: vec![
                Strategy::Lww,
                Strategy::Manual,
                Strategy::Lww,
                Strategy::Lww,
            ],
            names: ["id", "name", "ratio", "span"].map(String::from).to_vec(),
            delete: DeletePolicy::UpdateWins,
            priority_source: None,
        }
    }

    /// A row with an `f32` and an interval: the values whose JSON `to_value` changes.
    fn row(name: &str) -> Row {
        Row(vec![
            Value::Int32(1),
            Value::Text(name.into()),
            Value::Float32(0.1),
            Value::Interval(Interval {
                months: 1,
                days: 2,
                micros: 3,
            }),
        ])
    }

    fn change<'a>(before: &'a Row, after: &'a Row) -> Change<'a> {
        Change {
            source: "store",
            position: Position::pg(0x2a, 1),
            stamp: Stamp {
                micros: 1_700_000_000_000_000,
                logical: 0,
            },
            op: Op::Update,
            before: Some(before),
            after: Some(after),
        }
    }

    /// Asserts `written` is `old`, as text (the bytes on disk) and as JSON, and reads back.
    fn same_line<T>(written: &T, old: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let text = serde_json::to_string(written).unwrap();
        assert_eq!(text, old);
        let new: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(new, serde_json::from_str::<serde_json::Value>(old).unwrap());
        assert_eq!(&serde_json::from_str::<T>(old).unwrap(), written);
    }

    const ROW_HQ: &str = r#"{"id":{"Int32":1},"name":{"Text":"hq name"},"ratio":{"Float32":0.10000000149011612},"span":{"Interval":{"days":2,"micros":3,"months":1}}}"#;

    #[test]
    fn a_conflict_record_is_the_line_json_wrote() {
        let (before, image, merged) = (row("old"), row("store name"), row("hq name"));
        let c = change(&before, &image);
        let written = record(
            &table(),
            &policy(),
            &c,
            "[\"1\"]",
            Some(&image),
            Some(&merged),
        );
        let old = format!(
            r#"{{"change":{},"columns":[{{"column":"name","strategy":"manual"}}],"commit_ts_micros":1700000000000000,"delete_policy":"update_wins","key":"[\"1\"]","op":"u","position":"{}","result":{ROW_HQ},"source":"store","table":"public.items"}}"#,
            ROW_HQ.replace("hq name", "store name"),
            c.position
        );
        same_line(&written, &old);
        let deleted = record(&table(), &policy(), &c, "[\"1\"]", None, None);
        assert_eq!(
            serde_json::to_value(&deleted).unwrap()["change"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn a_queued_conflict_is_the_line_json_wrote() {
        let (before, after, prev) = (row("old"), row("store name"), row("hq name"));
        let c = change(&before, &after);
        let writers = vec![Some("hq".to_string()); 4];
        let queued = manual_conflicts(
            &table(),
            &policy(),
            &c,
            &[Value::Int32(1)],
            (&prev, &writers),
            (&before, &after),
            Some(&prev),
        );
        assert_eq!(queued.len(), 1, "only the manual column: {queued:?}");
        let p = c.position;
        let old = format!(
            r#"{{"column":"name","commit_ts_micros":1700000000000000,"current":{{"Text":"hq name"}},"current_from":"hq","id":"public.items:[\"1\"]:name:{p}","incoming":{{"Text":"store name"}},"key":{{"id":{{"Int32":1}}}},"position":"{p}","result":{{"Text":"hq name"}},"source":"store","table":"public.items"}}"#
        );
        same_line(&queued[0], &old);
        // The file it was read from is reported, never written into the queue.
        let read = QueuedConflict {
            file: Some("to_hq-store.manual.jsonl".into()),
            ..queued[0].clone()
        };
        assert_eq!(
            serde_json::to_value(&read).unwrap()["file"],
            "to_hq-store.manual.jsonl"
        );
    }

    #[test]
    fn a_resolution_is_the_line_json_wrote() {
        let resolution = Resolution {
            column: "name".into(),
            id: "public.items:[\"1\"]:name:pg:0/2A#1".into(),
            key: [("id".to_string(), Value::Int32(1))].into(),
            resolved_at_micros: 1_700_000_000_000_001,
            table: "public.items".into(),
            took: Take::Incoming,
            value: Value::Float32(0.1),
            written_to: "store".into(),
        };
        same_line(
            &resolution,
            r#"{"column":"name","id":"public.items:[\"1\"]:name:pg:0/2A#1","key":{"id":{"Int32":1}},"resolved_at_micros":1700000000000001,"table":"public.items","took":"incoming","value":{"Float32":0.10000000149011612},"written_to":"store"}"#,
        );
    }
}
