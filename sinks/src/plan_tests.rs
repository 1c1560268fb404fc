//! Unit tests of the folding rules.

use super::*;
use std::borrow::Cow;
use tributary_schemas::{Column, ColumnType, Position, TableId, TxMeta};

fn table() -> TableSchema {
    let col = |name: &str, ty| Column {
        name: name.into(),
        ty,
        source_type: String::new(),
        nullable: true,
        missing: None,
    };
    TableSchema {
        table: TableId::new("public", "t"),
        columns: vec![
            col("id", ColumnType::Int32),
            col("name", ColumnType::Text),
            col("doc", ColumnType::Text),
        ],
        primary_key: vec![0],
        version: 1,
    }
}

fn event(op: Op, key: i32, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
    ChangeEvent {
        source: "src".into(),
        table: TableId::new("public", "t"),
        schema_version: 1,
        op,
        key: vec![Value::Int32(key)],
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

fn row(id: i32, name: &str, doc: Option<&str>) -> Vec<Value> {
    vec![
        Value::Int32(id),
        Value::Text(name.into()),
        doc.map_or(Value::Unchanged, |d| Value::Text(d.into())),
    ]
}

fn insert(id: i32, name: &str, doc: &str) -> ChangeEvent {
    event(Op::Insert, id, None, Some(row(id, name, Some(doc))))
}

fn update(id: i32, name: &str, doc: Option<&str>) -> ChangeEvent {
    event(Op::Update, id, None, Some(row(id, name, doc)))
}

/// Folds `events` and returns the owned net effects and each event's outcome.
fn fold_all(events: &[ChangeEvent]) -> (Vec<(Vec<Value>, Effect<'static>)>, Vec<Folded>) {
    let mut batch = Batch::default();
    let folded = events
        .iter()
        .map(|e| batch.fold(&table(), e).expect("valid event"))
        .collect();
    let effects = batch
        .entries()
        .iter()
        .map(|e| {
            let effect = match &e.effect {
                Effect::Upsert(row) => Effect::Upsert(Cow::Owned(row.to_vec())),
                Effect::Patch(row) => Effect::Patch(Cow::Owned(row.to_vec())),
                Effect::Delete => Effect::Delete,
            };
            (e.key.clone(), effect)
        })
        .collect();
    (effects, folded)
}

fn upsert(row: Vec<Value>) -> Effect<'static> {
    Effect::Upsert(Cow::Owned(row))
}

fn patch(row: Vec<Value>) -> Effect<'static> {
    Effect::Patch(Cow::Owned(row))
}

fn key(id: i32) -> Vec<Value> {
    vec![Value::Int32(id)]
}

#[test]
fn later_events_replace_earlier_ones_per_key() {
    let (batch, _) = fold_all(&[
        insert(1, "a", "x"),
        insert(2, "b", "y"),
        update(1, "a2", Some("x2")),
        event(Op::Delete, 2, None, None),
    ]);
    assert_eq!(
        batch,
        vec![
            (key(1), upsert(row(1, "a2", Some("x2")))),
            (key(2), Effect::Delete),
        ]
    );
}

#[test]
fn an_insert_after_a_delete_upserts() {
    let (batch, _) = fold_all(&[event(Op::Delete, 1, None, None), insert(1, "a", "x")]);
    assert_eq!(batch, vec![(key(1), upsert(row(1, "a", Some("x"))))]);
}

#[test]
fn unchanged_columns_patch_or_merge_into_an_earlier_full_row() {
    let (batch, _) = fold_all(&[update(1, "a", None)]);
    assert_eq!(batch, vec![(key(1), patch(row(1, "a", None)))]);

    let (batch, _) = fold_all(&[insert(1, "a", "x"), update(1, "b", None)]);
    assert_eq!(batch, vec![(key(1), upsert(row(1, "b", Some("x"))))]);

    let (batch, _) = fold_all(&[update(1, "a", Some("x")), update(1, "b", None)]);
    assert_eq!(batch, vec![(key(1), upsert(row(1, "b", Some("x"))))]);

    let (batch, _) = fold_all(&[update(1, "a", None), update(1, "b", None)]);
    assert_eq!(batch, vec![(key(1), patch(row(1, "b", None)))]);

    let (batch, _) = fold_all(&[event(Op::Delete, 1, None, None), update(1, "b", None)]);
    assert_eq!(batch, vec![(key(1), Effect::Delete)]);
}

#[test]
fn a_full_key_change_deletes_the_old_key() {
    let before = vec![Value::Int32(1), Value::Null, Value::Null];
    let (batch, folded) = fold_all(&[event(
        Op::Update,
        2,
        Some(before),
        Some(row(2, "a", Some("x"))),
    )]);
    assert_eq!(folded, vec![Folded::Batched]);
    assert_eq!(
        batch,
        vec![
            (key(1), Effect::Delete),
            (key(2), upsert(row(2, "a", Some("x")))),
        ]
    );
}

#[test]
fn a_partial_key_change_is_a_barrier_unless_the_old_row_is_pending() {
    let before = vec![Value::Int32(1), Value::Null, Value::Null];
    let rekey = event(Op::Update, 2, Some(before), Some(row(2, "a", None)));

    let (batch, folded) = fold_all(&[insert(5, "e", "z"), rekey.clone()]);
    assert_eq!(
        folded[1],
        Folded::Rekey {
            old_key: key(1),
            row: row(2, "a", None)
        }
    );
    assert_eq!(batch.len(), 1, "the rekey is not part of the batch");

    let (batch, folded) = fold_all(&[insert(1, "o", "x"), rekey]);
    assert_eq!(folded[1], Folded::Batched);
    assert_eq!(
        batch,
        vec![
            (key(1), Effect::Delete),
            (key(2), upsert(row(2, "a", Some("x")))),
        ]
    );
}

#[test]
fn same_key_in_before_is_not_a_key_change() {
    let before = row(1, "old", Some("x"));
    let (batch, _) = fold_all(&[event(Op::Update, 1, Some(before), Some(row(1, "a", None)))]);
    assert_eq!(batch, vec![(key(1), patch(row(1, "a", None)))]);
}

#[test]
fn truncate_discards_the_pending_batch() {
    let truncate = ChangeEvent {
        key: vec![],
        ..event(Op::Truncate, 0, None, None)
    };
    let (batch, folded) = fold_all(&[insert(1, "a", "x"), truncate, insert(2, "b", "y")]);
    assert_eq!(folded[1], Folded::Truncate);
    assert_eq!(batch, vec![(key(2), upsert(row(2, "b", Some("y"))))]);
}

#[test]
fn delete_keys_come_from_the_old_image_when_the_event_has_none() {
    let mut delete = event(Op::Delete, 0, Some(row(7, "a", Some("x"))), None);
    delete.key.clear();
    let (batch, _) = fold_all(&[delete]);
    assert_eq!(batch, vec![(key(7), Effect::Delete)]);
}

#[test]
fn malformed_events_are_definite_errors() {
    let mut batch = Batch::default();
    let short = event(Op::Insert, 1, None, Some(vec![Value::Int32(1)]));
    let err = batch.fold(&table(), &short).unwrap_err();
    assert!(matches!(err, SinkError::InvalidEvent { .. }), "{err}");

    let wrong = event(
        Op::Insert,
        1,
        None,
        Some(vec![Value::Text("1".into()), Value::Null, Value::Null]),
    );
    let err = batch.fold(&table(), &wrong).unwrap_err();
    assert!(
        matches!(&err, SinkError::TypeMismatch { column, .. } if column == "id"),
        "{err}"
    );

    let unchanged_insert = event(Op::Insert, 1, None, Some(row(1, "a", None)));
    assert!(batch.fold(&table(), &unchanged_insert).is_err());

    let mut keyless = event(Op::Delete, 1, None, None);
    keyless.key.clear();
    assert!(batch.fold(&table(), &keyless).is_err());
    assert!(!err.is_transient());
}

#[test]
fn fullness_counts_keys_and_bytes() {
    let events = [
        insert(1, "a", "x"),
        insert(1, "b", "y"),
        insert(2, "c", "z"),
    ];
    let mut batch = Batch::default();
    for e in &events {
        batch.fold(&table(), e).unwrap();
    }
    assert!(batch.is_full(2, usize::MAX));
    assert!(!batch.is_full(3, usize::MAX));
    assert!(batch.is_full(3, 10));
}
