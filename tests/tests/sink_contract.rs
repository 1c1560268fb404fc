//! The sink contract, written once and run against every sink kind: table creation, every
//! operation, unchanged TOAST values, key changes, truncate, batches of any size, schema
//! evolution (also inside a transaction), type round trips, replays, watermark atomicity,
//! refusals, misuse and connection errors. Every scenario asserts what it reads back from
//! the server.
//!
//! Each scenario is a function generic over a [`Backend`]; `for_every_backend!` makes one
//! test per scenario and backend (`postgres::replays_watermarks_and_refusals`,
//! `mariadb::replays_watermarks_and_refusals`, …), each starting its own server, as the
//! tests per kind did before. A third sink kind runs every scenario by adding its
//! `Backend` (a file beside `common/backend/postgres.rs`) and one entry to the list. Where the kinds
//! legitimately differ, the backend states how (its constants, type cases and refusals)
//! and the scenario asserts that. What only one kind does (COPY loading, MySQL's refusals
//! of values and tables) lives in `sink_postgres.rs` and `sink_mysql.rs`.

use tributary_schemas::{ColumnType, Position, TableId, TableSchema, Value};
use tributary_sinks::SinkError;

mod common;
use common::backend::mariadb::Maria;
use common::backend::postgres::Pg;
use common::backend::{expected_columns, quoted, transaction, Backend};
use common::events::*;

/// Makes one test per scenario in a module per backend.
macro_rules! for_every_backend {
    ([$($module:ident: $backend:ident),* $(,)?], $scenarios:tt) => {
        $(for_every_backend!(@one $module, $backend, $scenarios);)*
    };
    (@one $module:ident, $backend:ident, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario::<super::$backend>().await
                }
            )*
        }
    };
}

for_every_backend!(
    [postgres: Pg, mariadb: Maria],
    [
        changes_are_applied_and_unchanged_values_kept,
        small_batches_and_keys_that_differ_in_case_or_spaces,
        new_columns_of_later_versions_are_added,
        every_column_type_round_trips,
        replays_watermarks_and_refusals,
        misuse_and_bad_events_are_rejected,
        connection_errors_name_the_server_and_the_cause,
    ]
);

async fn changes_are_applied_and_unchanged_values_kept<B: Backend>() -> anyhow::Result<()> {
    let backend = B::start().await?;
    let db = backend.create_database("sink_ops").await?;
    let mut sink = backend.sink(&db, 5_000).await?;
    let schema = docs_schema(1);
    let docs = backend.table_in(&db, &schema.table);
    let mut ev = Events::new(&schema);
    let big = "x".repeat(100_000);

    // Inserts create the table with mapped types and the key.
    let inserts = vec![
        ev.insert(doc_row(1, "one", Some(&big), 1.5)),
        ev.insert(doc_row(2, "two", Some(&big), 2.5)),
        ev.insert(doc_row(3, "three", Some("small"), 3.5)),
    ];
    transaction(sink.as_mut(), &schema, &inserts, Position::pg(100, 3)).await?;
    assert_eq!(
        backend.columns(&db, &docs).await?,
        expected_columns::<B>(&schema)
    );
    assert_eq!(
        backend.docs(&db, &docs).await?,
        expect(&[
            &["1", "one", "xxxxxxxxxxxx…100000", "1.5"],
            &["2", "two", "xxxxxxxxxxxx…100000", "2.5"],
            &["3", "three", "small…5", "3.5"],
        ])
    );

    // A full update, an update with the unchanged TOAST value, a delete.
    let changes = vec![
        ev.update(doc_row(1, "uno", Some("replaced"), 10.0)),
        ev.update(doc_row(2, "dos", None, 20.0)),
        ev.delete(vec![Value::Int64(3)]),
    ];
    transaction(sink.as_mut(), &schema, &changes, Position::pg(101, 3)).await?;
    assert_eq!(
        backend.docs(&db, &docs).await?,
        expect(&[
            &["1", "uno", "replaced…8", "10"],
            &["2", "dos", "xxxxxxxxxxxx…100000", "20"],
        ])
    );

    // Key changes: with an unchanged value of a row only the target has (updated in
    // place), and of a row inserted earlier in the same batch (merged), plus later
    // changes of the moved rows in the same batch.
    let moves = vec![
        ev.insert(doc_row(5, "five", Some("fifth"), 5.0)),
        ev.rekey(vec![Value::Int64(2)], doc_row(20, "twenty", None, 200.0)),
        ev.update(doc_row(20, "twenty!", None, 201.0)),
        ev.rekey(vec![Value::Int64(5)], doc_row(50, "fifty", None, 500.0)),
        ev.update(doc_row(1, "one again", None, 11.0)),
    ];
    transaction(sink.as_mut(), &schema, &moves, Position::pg(102, 5)).await?;
    assert_eq!(
        backend.docs(&db, &docs).await?,
        expect(&[
            &["1", "one again", "replaced…8", "11"],
            &["20", "twenty!", "xxxxxxxxxxxx…100000", "201"],
            &["50", "fifty", "fifth…5", "500"],
        ])
    );

    // Truncate in the middle of a batch: what came before is gone, what follows stays.
    let truncating = vec![
        ev.insert(doc_row(7, "seven", Some("s"), 7.0)),
        ev.truncate(),
        ev.insert(doc_row(8, "eight", Some("e"), 8.0)),
    ];
    transaction(sink.as_mut(), &schema, &truncating, Position::pg(103, 3)).await?;
    assert_eq!(
        backend.docs(&db, &docs).await?,
        expect(&[&["8", "eight", "e…1", "8"]])
    );
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(103, 3)));
    Ok(())
}

async fn small_batches_and_keys_that_differ_in_case_or_spaces<B: Backend>() -> anyhow::Result<()> {
    let backend = B::start().await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    let mut events = Vec::new();
    for id in 1..=40 {
        events.push(ev.insert(doc_row(
            id,
            &format!("n{id}"),
            Some(&format!("d{id}")),
            id as f64,
        )));
    }
    for id in (1..=40).step_by(3) {
        events.push(ev.update(doc_row(id, &format!("u{id}"), None, -(id as f64))));
    }
    for id in (2..=40).step_by(5) {
        events.push(ev.delete(vec![Value::Int64(id)]));
    }
    events.push(ev.rekey(vec![Value::Int64(4)], doc_row(400, "moved", None, 0.5)));
    events.push(ev.insert(doc_row(2, "back", Some("again"), 2.0)));

    let mut results = Vec::new();
    for batch_rows in [1, 3, 5_000] {
        let db = backend.create_database("sink_batches").await?;
        let mut sink = backend.sink(&db, batch_rows).await?;
        transaction(sink.as_mut(), &schema, &events, Position::pg(1, 1)).await?;
        let docs = backend.table_in(&db, &schema.table);
        results.push(backend.docs(&db, &docs).await?);
    }
    assert_eq!(results[0], results[2]);
    assert_eq!(results[1], results[2]);
    let all = &results[2];
    assert_eq!(all.len(), 40 - 8 + 1);
    for row in [
        ["400", "moved", "d4…2", "0.5"],
        ["2", "back", "again…5", "2"],
        ["1", "u1", "d1…2", "-1"],
    ] {
        let row = row.map(String::from).to_vec();
        assert!(all.contains(&row), "{row:?} in {all:?}");
    }

    // Text keys: 'a', 'A' and 'a ' are three rows at a PostgreSQL source.
    let keyed = TableSchema {
        table: TableId::new("public", "codes"),
        columns: vec![
            column("code", ColumnType::Text, "text", false),
            column("n", ColumnType::Int32, "integer", true),
        ],
        primary_key: vec![0],
        version: 1,
    };
    let mut ev = Events::new(&keyed);
    let db = backend.create_database("sink_keys").await?;
    let mut sink = backend.sink(&db, 5_000).await?;
    let codes = ["a", "A", "a "].map(|c| c.to_string());
    let inserts: Vec<_> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| ev.insert(vec![text(c), Value::Int32(i as i32)]))
        .collect();
    transaction(sink.as_mut(), &keyed, &inserts, Position::pg(1, 1)).await?;
    let deletes = vec![ev.delete(vec![text("a ")])];
    transaction(sink.as_mut(), &keyed, &deletes, Position::pg(2, 1)).await?;
    let table = backend.table_in(&db, &keyed.table);
    let rows = backend
        .rows(&db, &table, &quoted::<B>(&["n", "code"]))
        .await?;
    // The codes in hexadecimal, so that a trailing space shows.
    let hex = |code: &str| code.bytes().map(|b| format!("{b:02X}")).collect::<String>();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| vec![hex(&r[1]), r[0].clone()])
        .collect();
    assert_eq!(rows, expect(&[&["61", "0"], &["41", "1"]]));
    Ok(())
}

async fn new_columns_of_later_versions_are_added<B: Backend>() -> anyhow::Result<()> {
    let backend = B::start().await?;
    let db = backend.create_database("sink_evolve").await?;
    let replica = format!("{db}_replica");
    let mut sink = backend.config(&db, Some(&replica), 5_000).connect().await?;

    let v1 = docs_schema(1);
    assert_eq!(
        sink.ready_for(&v1),
        B::TRANSACTIONAL_DDL,
        "nothing is prepared before the first use (unless DDL is transactional)"
    );
    let mut ev1 = Events::new(&v1);
    let first = vec![
        ev1.insert(doc_row(1, "one", Some("d"), 1.0)),
        ev1.insert(doc_row(6, "six", Some("d6"), 6.0)),
    ];
    transaction(sink.as_mut(), &v1, &first, Position::pg(1, 1)).await?;
    assert!(sink.ready_for(&v1));

    // Version 2 adds a column, whose value in the rows that existed before is 'old'
    // ('missing'); the source also relaxed NOT NULL on `name`.
    let mut v2 = docs_schema(2);
    v2.columns[1].nullable = true;
    v2.columns[4].missing = Some("old".into());
    assert_eq!(sink.ready_for(&v2), B::TRANSACTIONAL_DDL);
    let mut ev2 = Events::new(&v2);
    let second = vec![
        ev2.insert(vec![
            Value::Int64(2),
            Value::Null,
            text("d2"),
            Value::Float64(2.0),
            text("new"),
        ]),
        ev2.update(vec![
            Value::Int64(1),
            text("one"),
            Value::Unchanged,
            Value::Float64(1.0),
            text("tagged"),
        ]),
    ];
    transaction(sink.as_mut(), &v2, &second, Position::pg(2, 1)).await?;
    // Events of the old version still apply (the new column is left alone).
    let third = vec![ev1.insert(doc_row(3, "three", Some("d3"), 3.0))];
    transaction(sink.as_mut(), &v1, &third, Position::pg(3, 1)).await?;

    // A version with another column in the middle of a transaction that already wrote:
    // the rows come through, the watermark commits with the transaction.
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.columns
        .push(column("extra", ColumnType::Int32, "integer", true));
    let mut ev3 = Events::new(&v3);
    sink.begin().await?;
    let four = [ev2.insert(vec![
        Value::Int64(4),
        text("four"),
        Value::Null,
        Value::Null,
        text("t4"),
    ])];
    sink.apply(&v2, &four).await?;
    let five = [ev3.insert(vec![
        Value::Int64(5),
        text("five"),
        Value::Null,
        Value::Null,
        text("t5"),
        Value::Int32(55),
    ])];
    sink.apply(&v3, &five).await?;
    sink.commit(SOURCE, Position::pg(4, 2)).await?;

    let docs = TableId::new(&replica, "docs");
    let all = quoted::<B>(&["id", "name", "doc", "score", "tag", "extra"]);
    assert_eq!(
        backend.rows(&db, &docs, &all).await?,
        expect(&[
            &["1", "one", "d", "1", "tagged", "NULL"],
            &["2", "NULL", "d2", "2", "new", "NULL"],
            &["3", "three", "d3", "3", "NULL", "NULL"],
            &["4", "four", "NULL", "NULL", "t4", "NULL"],
            &["5", "five", "NULL", "NULL", "t5", "55"],
            &["6", "six", "d6", "6", "old", "NULL"],
        ])
    );
    assert_eq!(
        backend.columns(&db, &docs).await?,
        expected_columns::<B>(&v3)
    );
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(4, 2)));
    let default = backend.schema_of(&db, &v1.table);
    assert_eq!(
        backend.tables(&db, &default).await?,
        Vec::<String>::new(),
        "the target schema setting is honoured"
    );
    Ok(())
}

async fn every_column_type_round_trips<B: Backend>() -> anyhow::Result<()> {
    let backend = B::start().await?;
    let db = backend.create_database("sink_types").await?;
    let mut sink = backend.sink(&db, 5_000).await?;
    let cases = B::type_cases();
    let mut columns = vec![column("id", ColumnType::Int32, "integer", false)];
    columns.extend(cases.iter().map(|c| c.column.clone()));
    let schema = TableSchema {
        table: TableId::new("types", "all_types"),
        columns,
        primary_key: vec![0],
        version: 1,
    };
    let mut ev = Events::new(&schema);
    let mut events = Vec::new();
    for row in 0..3 {
        let mut values = vec![Value::Int32(row as i32 + 1)];
        values.extend(cases.iter().map(|c| c.values[row].0.clone()));
        events.push(ev.insert(values));
    }
    let mut nulls = vec![Value::Null; schema.columns.len()];
    nulls[0] = Value::Int32(4);
    events.push(ev.insert(nulls));
    transaction(sink.as_mut(), &schema, &events, Position::pg(1, 4)).await?;

    let table = backend.table_in(&db, &schema.table);
    let types = backend.columns(&db, &table).await?;
    assert_eq!(types.len(), cases.len() + 1);
    for (got, case) in types[1..].iter().zip(&cases) {
        assert_eq!(got[0], case.column.name);
        assert_eq!(
            got[1], case.target_type,
            "type of column {}",
            case.column.name
        );
    }

    let mut reads = quoted::<B>(&["id"]);
    reads.extend(
        cases
            .iter()
            .map(|c| c.read.replace("{}", &B::quote(&c.column.name))),
    );
    let got = backend.rows(&db, &table, &reads).await?;
    assert_eq!(got.len(), 4);
    for (row, values) in got.iter().enumerate() {
        assert_eq!(values[0], (row + 1).to_string());
        for (case, value) in cases.iter().zip(&values[1..]) {
            let want = case.values.get(row).map_or("NULL", |(_, text)| text);
            assert_eq!(value, want, "row {}, column {}", row + 1, case.column.name);
        }
    }

    // Read back through the sink's admin session (as a restore test does), every value
    // is the one written, as its column's type.
    let mut session = backend.config(&db, None, 5_000).session().await?;
    let mut back = Vec::new();
    session
        .read_table(&table, &schema, &mut |row| {
            back.push(row);
            Ok(())
        })
        .await?;
    assert_eq!(back.len(), events.len());
    for (row, event) in back.iter().zip(&events) {
        let written = &event.after.as_ref().expect("inserts").0;
        for ((got, want), column) in row.0.iter().zip(written).zip(&schema.columns) {
            assert!(
                same_value(got, want),
                "row {:?}, column {}: read back {got:?}, wrote {want:?}",
                written[0],
                column.name
            );
        }
    }
    Ok(())
}

/// Whether a value read back is the one written: equal, or the same number (a decimal
/// the column pads with zeros, a NaN), the same JSON document (one the server keeps in
/// its own spelling), or the same duration (MySQL's TIME keeps an interval's days as
/// hours; PostgreSQL calls the two equal too).
fn same_value(got: &Value, want: &Value) -> bool {
    let decimal = |n: &str| {
        let n = if n.contains('.') {
            n.trim_end_matches('0').trim_end_matches('.')
        } else {
            n
        };
        if n == "-0" {
            "0".to_string()
        } else {
            n.to_string()
        }
    };
    match (got, want) {
        (Value::Float32(a), Value::Float32(b)) => {
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        }
        (Value::Float64(a), Value::Float64(b)) => {
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        }
        (Value::Numeric(a), Value::Numeric(b)) => decimal(a) == decimal(b),
        (Value::Interval(a), Value::Interval(b)) => {
            let micros = |i: &tributary_schemas::Interval| {
                (i64::from(i.months) * 30 + i64::from(i.days)) as i128 * 86_400_000_000
                    + i128::from(i.micros)
            };
            micros(a) == micros(b)
        }
        (Value::Json(a), Value::Json(b)) => {
            serde_json::from_str::<serde_json::Value>(a).ok()
                == serde_json::from_str::<serde_json::Value>(b).ok()
        }
        (a, b) => a == b,
    }
}

async fn replays_watermarks_and_refusals<B: Backend>() -> anyhow::Result<()> {
    let backend = B::start().await?;
    let db = backend.create_database("sink_replay").await?;
    let mut sink = backend.sink(&db, 5_000).await?;
    let schema = docs_schema(1);
    let docs = backend.table_in(&db, &schema.table);
    let ids = quoted::<B>(&["id"]);
    let mut ev = Events::new(&schema);
    assert_eq!(sink.watermark(SOURCE).await?, None);

    let setup = vec![
        ev.insert(doc_row(1, "one", Some("d1"), 1.0)),
        ev.insert(doc_row(2, "two", Some("d2"), 2.0)),
        ev.insert(doc_row(3, "three", Some("d3"), 3.0)),
    ];
    transaction(sink.as_mut(), &schema, &setup, Position::pg(10, 3)).await?;
    // The same events again are harmless.
    transaction(sink.as_mut(), &schema, &setup, Position::pg(10, 3)).await?;
    assert_eq!(backend.docs(&db, &docs).await?.len(), 3);
    let mixed = vec![
        ev.insert(doc_row(4, "four", Some("d4"), 4.0)),
        ev.update(doc_row(1, "uno", None, 1.1)),
        ev.rekey(vec![Value::Int64(2)], doc_row(22, "moved", None, 2.2)),
        ev.delete(vec![Value::Int64(3)]),
    ];
    transaction(sink.as_mut(), &schema, &mixed, Position::pg(11, 4)).await?;
    let once = backend.docs(&db, &docs).await?;
    assert_eq!(
        once,
        expect(&[
            &["1", "uno", "d1…2", "1.1"],
            &["4", "four", "d4…2", "4"],
            &["22", "moved", "d2…2", "2.2"],
        ])
    );

    // The same batch again, twice within one transaction and once more after it.
    sink.begin().await?;
    sink.apply(&schema, &mixed).await?;
    sink.apply(&schema, &mixed).await?;
    sink.commit(SOURCE, Position::pg(11, 4)).await?;
    transaction(sink.as_mut(), &schema, &mixed, Position::pg(11, 4)).await?;
    assert_eq!(backend.docs(&db, &docs).await?, once);

    // Nothing of an open transaction is visible, neither data nor watermark.
    sink.begin().await?;
    sink.apply(&schema, &[ev.insert(doc_row(5, "five", Some("d5"), 5.0))])
        .await?;
    assert_eq!(backend.docs(&db, &docs).await?, once);
    assert_eq!(
        backend.stored_watermark(&db, SOURCE).await?,
        Some(serde_json::to_value(Position::pg(11, 4))?)
    );
    // A rollback keeps the old watermark and the old rows.
    sink.rollback().await?;
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(11, 4)));
    assert_eq!(backend.docs(&db, &docs).await?, once);

    // The server's refusals are definite errors naming the table; they abort the
    // transaction, and after the rollback the sink works again: the rows of the failed
    // transaction never land.
    for refusal in B::refusals() {
        sink.begin().await?;
        let bad = [
            ev.insert(doc_row(6, "six", Some("d6"), 6.0)),
            ev.insert(refusal.row.clone()),
        ];
        let err = match sink.apply(&schema, &bad).await {
            Err(e) => e,
            // The batch may still be in flight when `apply` returns: its error then
            // comes with the next call of the transaction.
            Ok(()) if B::WRITES_IN_BACKGROUND => sink
                .commit(SOURCE, Position::pg(12, 2))
                .await
                .expect_err("the server refuses the row"),
            Ok(()) => panic!("the refusal comes with the apply"),
        };
        assert!(!err.is_transient(), "{err}");
        assert_eq!(err.sqlstate(), Some(refusal.sqlstate), "{err}");
        let message = err.to_string();
        let table = format!("{}.docs", docs.schema);
        assert!(
            message.contains(&table) && message.contains(refusal.says),
            "{message}"
        );
        sink.rollback().await?;
        assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(11, 4)));
    }
    let eight = [ev.insert(doc_row(8, "eight", Some("d8"), 8.0))];
    transaction(sink.as_mut(), &schema, &eight, Position::pg(12, 1)).await?;
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(12, 1)));
    assert_eq!(
        backend.rows(&db, &docs, &ids).await?,
        expect(&[&["1"], &["4"], &["8"], &["22"]])
    );

    // A connection lost inside a transaction is a transient error; after the rollback the
    // retried transaction reconnects.
    let nine = [ev.insert(doc_row(9, "nine", Some("d9"), 9.0))];
    sink.begin().await?;
    sink.apply(&schema, &nine).await?;
    assert_eq!(backend.end_sink_sessions(&db).await?, 1);
    let err = sink
        .commit(SOURCE, Position::pg(13, 1))
        .await
        .expect_err("the session is gone");
    assert!(err.is_transient(), "{err}");
    sink.rollback().await?;
    transaction(sink.as_mut(), &schema, &nine, Position::pg(13, 1)).await?;
    // Between transactions too: reading the watermark reconnects.
    assert_eq!(backend.end_sink_sessions(&db).await?, 1);
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(13, 1)));
    assert_eq!(
        backend.rows(&db, &docs, &ids).await?,
        expect(&[&["1"], &["4"], &["8"], &["9"], &["22"]])
    );

    // Watermarks are per source and survive a new connection.
    drop(sink);
    let mut again = backend.sink(&db, 5_000).await?;
    assert_eq!(again.watermark(SOURCE).await?, Some(Position::pg(13, 1)));
    assert_eq!(again.watermark("other").await?, None);
    Ok(())
}

async fn misuse_and_bad_events_are_rejected<B: Backend>() -> anyhow::Result<()> {
    let backend = B::start().await?;
    let db = backend.create_database("sink_misuse").await?;
    let mut sink = backend.sink(&db, 5_000).await?;
    let schema = docs_schema(1);
    let docs = backend.table_in(&db, &schema.table);
    let mut ev = Events::new(&schema);
    let insert = ev.insert(doc_row(1, "one", Some("d"), 1.0));

    let err = sink
        .apply(&schema, std::slice::from_ref(&insert))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Protocol(_)), "{err}");
    let err = sink.commit(SOURCE, Position::pg(1, 1)).await.unwrap_err();
    assert!(matches!(err, SinkError::Protocol(_)), "{err}");

    sink.begin().await?;
    let mut keyless = schema.clone();
    keyless.primary_key.clear();
    let err = sink
        .apply(&keyless, std::slice::from_ref(&insert))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::NoPrimaryKey { .. }), "{err}");
    sink.rollback().await?;

    sink.begin().await?;
    sink.apply(&schema, std::slice::from_ref(&insert)).await?;
    let wrong = ev.insert(vec![
        Value::Int64(2),
        Value::Int32(5),
        Value::Null,
        Value::Null,
    ]);
    let err = sink.apply(&schema, &[wrong]).await.unwrap_err();
    assert!(
        matches!(&err, SinkError::TypeMismatch { column, .. } if column == "name"),
        "{err}"
    );
    assert!(!err.is_transient());
    // What was applied before the failure must not be committable.
    let err = sink.commit(SOURCE, Position::pg(1, 1)).await.unwrap_err();
    assert!(matches!(err, SinkError::Protocol(_)), "{err}");
    sink.rollback().await?;
    assert_eq!(sink.watermark(SOURCE).await?, None);
    let tables = backend.tables(&db, &docs.schema).await?;
    if B::TRANSACTIONAL_DDL {
        assert_eq!(
            tables,
            Vec::<String>::new(),
            "the rolled-back transaction created the table and its rows; both are gone"
        );
    } else {
        assert_eq!(tables, ["docs"], "the table was created on its own");
        assert_eq!(
            backend.docs(&db, &docs).await?,
            Vec::<Vec<String>>::new(),
            "the rows of the rolled-back transaction are gone"
        );
    }
    Ok(())
}

async fn connection_errors_name_the_server_and_the_cause<B: Backend>() -> anyhow::Result<()> {
    // Nothing listens on port 1.
    let closed = format!("{}://u:p@127.0.0.1:1/db", B::SCHEME);
    let err = tributary_sinks::SinkConfig::from_url(&closed, None, 5_000, "sink")?
        .connect()
        .await
        .err()
        .expect("connecting to a closed port must fail");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(err.is_transient(), "{message}");

    let backend = B::start().await?;
    let db = backend.create_database("sink_conn").await?;
    let wrong = backend.wrong_password_url(&db);
    let err = tributary_sinks::SinkConfig::from_url(&wrong, None, 5_000, "sink")?
        .connect()
        .await
        .err()
        .expect("a wrong password must fail");
    let message = err.to_string();
    let (says, sqlstate) = B::WRONG_PASSWORD;
    assert!(message.contains(says), "{message}");
    assert_eq!(err.sqlstate(), Some(sqlstate), "{message}");
    assert!(!err.is_transient(), "{message}");

    let err = backend
        .config(&db, None, 0)
        .connect()
        .await
        .err()
        .expect("batch_rows = 0 is invalid");
    assert!(
        matches!(&err, SinkError::Config { field, .. } if field == "batch_rows"),
        "{err}"
    );
    Ok(())
}
