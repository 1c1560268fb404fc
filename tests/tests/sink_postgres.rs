//! The PostgreSQL sink against a real server: table creation, every operation, unchanged
//! TOAST values, key changes, truncate, schema evolution, type round trips, replays,
//! watermark atomicity and connection errors. Every scenario asserts the table contents
//! read back from the server.

use anyhow::Context;
use tokio_postgres::{Client, SimpleQueryMessage};
use tributary_schemas::{
    ChangeEvent, Column, ColumnType, Interval, Position, TableId, TableSchema, Value,
};
use tributary_sinks::{CopyLoad, PostgresSink, PostgresSinkConfig, Sink, SinkError};
use tributary_tests::Postgres;

mod common;
use common::events::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Every row of a query, every value as PostgreSQL prints it (NULL as `NULL`).
async fn table(client: &Client, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let messages = client.simple_query(sql).await.context(sql.to_string())?;
    let row = |r: &tokio_postgres::SimpleQueryRow| -> Vec<String> {
        (0..r.len())
            .map(|i| r.get(i).unwrap_or("NULL").to_string())
            .collect()
    };
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(row(r)),
            _ => None,
        })
        .collect())
}

/// Name, type and NOT NULL flag of every column of `table`, in order.
async fn columns_of(client: &Client, table: &str) -> anyhow::Result<Vec<Vec<String>>> {
    self::table(
        client,
        &format!(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
             WHERE attrelid = '{table}'::regclass AND attnum > 0 ORDER BY attnum"
        ),
    )
    .await
}

async fn sink(pg: &Postgres, db: &str, batch_rows: usize) -> anyhow::Result<PostgresSink> {
    let mut config = PostgresSinkConfig::new(pg.url(db));
    config.batch_rows = batch_rows;
    Ok(PostgresSink::connect(config).await?)
}

/// Applies `events` in one transaction committed at `position`.
async fn transaction(
    sink: &mut PostgresSink,
    schema: &TableSchema,
    events: &[ChangeEvent],
    position: Position,
) -> anyhow::Result<()> {
    sink.begin().await?;
    sink.apply(schema, events).await?;
    sink.commit(SOURCE, position).await?;
    Ok(())
}

/// The docs table with long documents abbreviated to their start and length.
const DOCS: &str = "SELECT id, name, coalesce(left(doc, 12) || '…' || length(doc), 'NULL'), \
                    score FROM public.docs ORDER BY id";

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn changes_are_applied_and_unchanged_values_kept() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_ops").await?;
    let client = pg.client(&db).await?;
    let mut sink = sink(&pg, &db, 5_000).await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    let big = "x".repeat(100_000);

    // Inserts create the table with mapped types and the key.
    let inserts = vec![
        ev.insert(doc_row(1, "one", Some(&big), 1.5)),
        ev.insert(doc_row(2, "two", Some(&big), 2.5)),
        ev.insert(doc_row(3, "three", Some("small"), 3.5)),
    ];
    transaction(&mut sink, &schema, &inserts, Position::pg(100, 3)).await?;
    assert_eq!(
        columns_of(&client, "public.docs").await?,
        expect(&[
            &["id", "bigint", "t"],
            &["name", "character varying(40)", "t"],
            &["doc", "text", "f"],
            &["score", "double precision", "f"],
        ])
    );
    assert_eq!(
        table(
            &client,
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'public.docs'::regclass AND i.indisprimary"
        )
        .await?,
        expect(&[&["id"]])
    );
    assert_eq!(
        table(&client, DOCS).await?,
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
    transaction(&mut sink, &schema, &changes, Position::pg(101, 3)).await?;
    assert_eq!(
        table(&client, DOCS).await?,
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
    transaction(&mut sink, &schema, &moves, Position::pg(102, 5)).await?;
    assert_eq!(
        table(&client, DOCS).await?,
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
    transaction(&mut sink, &schema, &truncating, Position::pg(103, 3)).await?;
    assert_eq!(
        table(&client, DOCS).await?,
        expect(&[&["8", "eight", "e…1", "8"]])
    );
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(103, 3)));
    Ok(())
}

#[tokio::test]
async fn small_batches_give_the_same_result_as_one() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
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
        let db = pg.create_database("sink_batches").await?;
        let mut sink = sink(&pg, &db, batch_rows).await?;
        transaction(&mut sink, &schema, &events, Position::pg(1, 1)).await?;
        results.push(table(&pg.client(&db).await?, DOCS).await?);
    }
    assert_eq!(results[0], results[2]);
    assert_eq!(results[1], results[2]);
    let all = &results[2];
    assert_eq!(all.len(), 40 - 8 + 1);
    assert!(all.contains(&vec![
        "400".into(),
        "moved".into(),
        "d4…2".into(),
        "0.5".into()
    ]));
    assert!(all.contains(&vec![
        "2".into(),
        "back".into(),
        "again…5".into(),
        "2".into()
    ]));
    assert!(all.contains(&vec!["1".into(), "u1".into(), "d1…2".into(), "-1".into()]));
    Ok(())
}

#[tokio::test]
async fn new_columns_of_later_versions_are_added() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_evolve").await?;
    let client = pg.client(&db).await?;
    let mut config = PostgresSinkConfig::new(pg.url(&db));
    config.target_schema = Some("replica".into());
    let mut sink = PostgresSink::connect(config).await?;

    let v1 = docs_schema(1);
    let mut ev1 = Events::new(&v1);
    let first = vec![ev1.insert(doc_row(1, "one", Some("d"), 1.0))];
    transaction(&mut sink, &v1, &first, Position::pg(1, 1)).await?;

    let mut v2 = docs_schema(2);
    // The source also relaxed NOT NULL on `name`.
    v2.columns[1].nullable = true;
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
    transaction(&mut sink, &v2, &second, Position::pg(2, 1)).await?;
    // Events of the old version still apply (the column is left alone).
    let third = vec![ev1.insert(doc_row(3, "three", Some("d3"), 3.0))];
    transaction(&mut sink, &v1, &third, Position::pg(3, 1)).await?;

    assert_eq!(
        table(
            &client,
            "SELECT id, name, doc, score, tag FROM replica.docs ORDER BY id"
        )
        .await?,
        expect(&[
            &["1", "one", "d", "1", "tagged"],
            &["2", "NULL", "d2", "2", "new"],
            &["3", "three", "d3", "3", "NULL"],
        ])
    );
    assert_eq!(
        columns_of(&client, "replica.docs").await?,
        expect(&[
            &["id", "bigint", "t"],
            &["name", "character varying(40)", "f"],
            &["doc", "text", "f"],
            &["score", "double precision", "f"],
            &["tag", "text", "f"],
        ])
    );
    assert!(
        table(
            &client,
            "SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = 'docs'"
        )
        .await?
        .is_empty(),
        "the target schema setting is honoured"
    );
    Ok(())
}

/// One column of the all-types table: its definition, the type the target column must get,
/// and three values with the text PostgreSQL must print for each.
struct TypeCase {
    column: Column,
    target_type: &'static str,
    values: [(Value, &'static str); 3],
}

/// Every column type with typical values, edge values and extremes.
#[rustfmt::skip]
fn type_cases() -> Vec<TypeCase> {
    const DAY: i64 = 86_400_000_000;
    let bc = -719_163 * DAY + 3_600_000_000;
    let uuid = [0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0, 0];
    let array = |element| ColumnType::Array { element: Box::new(element) };
    let numeric = |precision, scale| ColumnType::Numeric { precision, scale };
    let iv = |months, days, micros| Value::Interval(Interval { months, days, micros });
    let case = |name: &str, ty, source: &str, target_type, values| TypeCase { column: column(name, ty, source, true), target_type, values };
    vec![
        case("b", ColumnType::Bool, "boolean", "boolean", [(Value::Bool(true), "t"), (Value::Bool(false), "f"), (Value::Null, "NULL")]),
        case("i16", ColumnType::Int16, "smallint", "smallint", [(Value::Int16(i16::MIN), "-32768"), (Value::Int16(0), "0"), (Value::Int16(i16::MAX), "32767")]),
        case("i64", ColumnType::Int64, "bigint", "bigint", [(Value::Int64(i64::MAX), "9223372036854775807"), (Value::Int64(i64::MIN), "-9223372036854775808"), (Value::Int64(0), "0")]),
        case("f32", ColumnType::Float32, "real", "real", [(Value::Float32(0.1), "0.1"), (Value::Float32(f32::NAN), "NaN"), (Value::Float32(f32::MAX), "3.4028235e+38")]),
        case("f64", ColumnType::Float64, "double precision", "double precision", [(Value::Float64(0.1 + 0.2), "0.30000000000000004"), (Value::Float64(f64::NEG_INFINITY), "-Infinity"), (Value::Float64(5e-324), "5e-324")]),
        case("n", numeric(Some(10), Some(2)), "numeric(10,2)", "numeric(10,2)", [(Value::Numeric("12.3".into()), "12.30"), (Value::Numeric("NaN".into()), "NaN"), (Value::Numeric("-0.01".into()), "-0.01")]),
        case("n_any", numeric(None, None), "numeric", "numeric", [(Value::Numeric("-123456789012345678901234567890.000000001".into()), "-123456789012345678901234567890.000000001"), (Value::Numeric("Infinity".into()), "Infinity"), (Value::Numeric("-Infinity".into()), "-Infinity")]),
        case("t", ColumnType::Text, "character varying(5)", "character varying(5)", [(text("héllo"), "héllo"), (text("a\tb\nc"), "a\tb\nc"), (text("\\\r\\N"), "\\\r\\N")]),
        case("bin", ColumnType::Bytes, "bytea", "bytea", [(Value::Bytes(vec![0, 1, b'\\', 0xff]), "\\x00015cff"), (Value::Bytes(vec![]), "\\x"), (Value::Bytes(vec![b'\t', b'\n']), "\\x090a")]),
        case("d", ColumnType::Date, "date", "date", [(Value::Date(19_723), "2024-01-01"), (Value::Date(-719_163), "0001-12-31 BC"), (Value::Date(i32::MAX), "infinity")]),
        case("tm", ColumnType::Time, "time without time zone", "time without time zone", [(Value::Time(45_296_000_007), "12:34:56.000007"), (Value::Time(DAY), "24:00:00"), (Value::Time(0), "00:00:00")]),
        case("ts", ColumnType::Timestamp, "timestamp without time zone", "timestamp without time zone", [(Value::Timestamp(1_704_067_200_123_456), "2024-01-01 00:00:00.123456"), (Value::Timestamp(bc), "0001-12-31 01:00:00 BC"), (Value::Timestamp(i64::MIN), "-infinity")]),
        case("tstz", ColumnType::TimestampTz, "timestamp with time zone", "timestamp with time zone", [(Value::TimestampTz(1_704_067_200_123_456), "2024-01-01 00:00:00.123456+00"), (Value::TimestampTz(bc), "0001-12-31 01:00:00+00 BC"), (Value::TimestampTz(i64::MAX), "infinity")]),
        case("iv", ColumnType::Interval, "interval", "interval", [(iv(1, 2, 3), "1 mon 2 days 00:00:00.000003"), (iv(-1, 0, -3), "-1 mons -00:00:00.000003"), (iv(i32::MAX, i32::MIN, i64::MIN), "178956970 years 7 mons -2147483648 days -2562047788:00:54.775808")]),
        case("u", ColumnType::Uuid, "uuid", "uuid", [(Value::Uuid(uuid), "550e8400-e29b-41d4-a716-446655440000"), (Value::Uuid([0; 16]), "00000000-0000-0000-0000-000000000000"), (Value::Uuid([0xff; 16]), "ffffffff-ffff-ffff-ffff-ffffffffffff")]),
        case("j", ColumnType::Json { binary: false }, "json", "json", [(Value::Json("{\"b\": 1,  \"a\": [1,2]}".into()), "{\"b\": 1,  \"a\": [1,2]}"), (Value::Json("null".into()), "null"), (Value::Json("\"\\u00e9\\t\"".into()), "\"\\u00e9\\t\"")]),
        case("jb", ColumnType::Json { binary: true }, "jsonb", "jsonb", [(Value::Json("{\"b\": 1, \"a\": [1,2]}".into()), "{\"a\": [1, 2], \"b\": 1}"), (Value::Json("[]".into()), "[]"), (Value::Json("{\"k\": \"\\\\\"}".into()), "{\"k\": \"\\\\\"}")]),
        case("e", ColumnType::Enum { name: "mood".into() }, "mood", "text", [(Value::Enum("happy".into()), "happy"), (Value::Enum("with space".into()), "with space"), (Value::Enum(String::new()), "")]),
        case("arr", array(ColumnType::Int32), "integer[]", "integer[]", [(Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-3)]), "{1,NULL,-3}"), (Value::Array(vec![]), "{}"), (Value::Array(vec![Value::Int32(i32::MIN)]), "{-2147483648}")]),
        case("tarr", array(ColumnType::Text), "text[]", "text[]", [(Value::Array(vec![text("a\"b"), text("c\\d"), text("NULL"), text(""), text("x,y"), Value::Null]), r#"{"a\"b","c\\d","NULL","","x,y",NULL}"#), (Value::Array(vec![Value::Null]), "{NULL}"), (Value::Array(vec![text("{}"), text(" spaced ")]), r#"{"{}"," spaced "}"#)]),
        case("other", ColumnType::Other { name: "point".into() }, "point", "text", [(text("(1,2)"), "(1,2)"), (text(""), ""), (Value::Null, "NULL")]),
    ]
}

#[tokio::test]
async fn every_column_type_round_trips() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_types").await?;
    let client = pg.client(&db).await?;
    let mut sink = sink(&pg, &db, 5_000).await?;
    let cases = type_cases();
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
    transaction(&mut sink, &schema, &events, Position::pg(1, 4)).await?;

    let types = columns_of(&client, "types.all_types").await?;
    assert_eq!(types.len(), cases.len() + 1);
    for (got, case) in types[1..].iter().zip(&cases) {
        assert_eq!(got[0], case.column.name);
        assert_eq!(
            got[1], case.target_type,
            "type of column {}",
            case.column.name
        );
    }

    let got = table(
        &client,
        "SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'; SET DateStyle = 'ISO, YMD'; \
         SELECT * FROM types.all_types ORDER BY id",
    )
    .await?;
    assert_eq!(got.len(), 4);
    for (row, values) in got.iter().enumerate() {
        for (case, value) in cases.iter().zip(&values[1..]) {
            let want = case.values.get(row).map_or("NULL", |(_, text)| text);
            assert_eq!(value, want, "row {}, column {}", row + 1, case.column.name);
        }
    }
    Ok(())
}

#[tokio::test]
async fn replays_and_watermarks() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_replay").await?;
    let client = pg.client(&db).await?;
    let mut sink = sink(&pg, &db, 5_000).await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    assert_eq!(sink.watermark(SOURCE).await?, None);

    let setup = vec![
        ev.insert(doc_row(1, "one", Some("d1"), 1.0)),
        ev.insert(doc_row(2, "two", Some("d2"), 2.0)),
        ev.insert(doc_row(3, "three", Some("d3"), 3.0)),
    ];
    transaction(&mut sink, &schema, &setup, Position::pg(10, 3)).await?;
    let mixed = vec![
        ev.insert(doc_row(4, "four", Some("d4"), 4.0)),
        ev.update(doc_row(1, "uno", None, 1.1)),
        ev.rekey(vec![Value::Int64(2)], doc_row(22, "moved", None, 2.2)),
        ev.delete(vec![Value::Int64(3)]),
    ];
    transaction(&mut sink, &schema, &mixed, Position::pg(11, 4)).await?;
    let once = table(&client, DOCS).await?;
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
    transaction(&mut sink, &schema, &mixed, Position::pg(11, 4)).await?;
    assert_eq!(table(&client, DOCS).await?, once);

    // Nothing of an open transaction is visible, neither data nor watermark.
    sink.begin().await?;
    sink.apply(&schema, &[ev.insert(doc_row(5, "five", Some("d5"), 5.0))])
        .await?;
    assert_eq!(table(&client, DOCS).await?, once);
    assert_eq!(
        table(
            &client,
            "SELECT position->>'lsn', position->>'seq' FROM tributary.watermarks \
             WHERE source = 'src'"
        )
        .await?,
        expect(&[&["11", "4"]])
    );
    // A rollback keeps the old watermark and the old rows.
    sink.rollback().await?;
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(11, 4)));
    assert_eq!(table(&client, DOCS).await?, once);

    // A definite error (NULL into a NOT NULL column) aborts the transaction; after the
    // rollback the sink works again, the failed rows never land.
    sink.begin().await?;
    let bad = vec![
        ev.insert(doc_row(6, "six", Some("d6"), 6.0)),
        ev.insert(vec![Value::Int64(7), Value::Null, Value::Null, Value::Null]),
    ];
    // The batch may still be in flight when `apply` returns: its error then comes with
    // the next call of the transaction.
    let err = match sink.apply(&schema, &bad).await {
        Err(e) => e,
        Ok(()) => sink
            .commit(SOURCE, Position::pg(12, 2))
            .await
            .expect_err("NULL name must be rejected"),
    };
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.sqlstate(), Some("23502"), "{err}");
    assert!(err.to_string().contains("public.docs"), "{err}");
    sink.rollback().await?;
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(11, 4)));
    transaction(
        &mut sink,
        &schema,
        &[ev.insert(doc_row(8, "eight", Some("d8"), 8.0))],
        Position::pg(12, 1),
    )
    .await?;
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(12, 1)));
    assert_eq!(
        table(&client, "SELECT id FROM public.docs ORDER BY id").await?,
        expect(&[&["1"], &["4"], &["8"], &["22"]])
    );

    // A connection lost inside a transaction is a transient error; after the rollback the
    // retried transaction reconnects.
    const TERMINATE: &str = "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
        WHERE application_name = 'tributary-sink' AND datname = current_database()";
    let nine = [ev.insert(doc_row(9, "nine", Some("d9"), 9.0))];
    sink.begin().await?;
    sink.apply(&schema, &nine).await?;
    assert_eq!(table(&client, TERMINATE).await?, expect(&[&["t"]]));
    let err = sink
        .commit(SOURCE, Position::pg(13, 1))
        .await
        .expect_err("the session is gone");
    assert!(err.is_transient(), "{err}");
    sink.rollback().await?;
    transaction(&mut sink, &schema, &nine, Position::pg(13, 1)).await?;
    // Between transactions too.
    assert_eq!(table(&client, TERMINATE).await?, expect(&[&["t"]]));
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(13, 1)));
    assert_eq!(
        table(&client, "SELECT id FROM public.docs ORDER BY id").await?,
        expect(&[&["1"], &["4"], &["8"], &["9"], &["22"]])
    );

    // Watermarks are per source and survive a new connection.
    drop(sink);
    let mut again = self::sink(&pg, &db, 5_000).await?;
    assert_eq!(again.watermark(SOURCE).await?, Some(Position::pg(13, 1)));
    assert_eq!(again.watermark("other").await?, None);
    Ok(())
}

/// COPY text (how a restore loads a PostgreSQL snapshot) goes straight into the target
/// while its rows are new there; a block holding a row already there, or a value a column
/// does not take, is refused whole with the transaction intact, and the caller applies
/// those rows as events.
#[tokio::test]
async fn copy_text_loads_new_rows_and_refuses_the_rest() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_copy").await?;
    let client = pg.client(&db).await?;
    let mut sink = sink(&pg, &db, 5_000).await?;
    let schema = docs_schema(1);
    sink.begin().await?;
    assert!(
        sink.load_copy_text(&schema, b"1\tone\t\\N\t1.5\n2\ttwo\ttab\\there\t2.5\n")
            .await?
    );
    assert!(
        !sink
            .load_copy_text(&schema, b"3\tthree\t\\N\t3\n1\tone again\t\\N\t1\n")
            .await?,
        "a row already there"
    );
    assert!(
        !sink
            .load_copy_text(&schema, b"4\tfour\t\\N\tnot a number\n")
            .await?,
        "a value the column does not take"
    );
    let mut ev = Events::new(&schema);
    let events = [
        ev.insert(doc_row(3, "three", Some("d3"), 3.0)),
        ev.update(doc_row(1, "one again", Some("d1"), 1.0)),
    ];
    sink.apply(&schema, &events).await?;
    sink.commit(SOURCE, Position::pg(10, 1)).await?;
    assert_eq!(
        table(
            &client,
            "SELECT id, name, coalesce(doc, 'NULL'), score FROM public.docs ORDER BY id"
        )
        .await?,
        expect(&[
            &["1", "one again", "d1", "1"],
            &["2", "two", "tab\there", "2.5"],
            &["3", "three", "d3", "3"],
        ])
    );
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(10, 1)));
    Ok(())
}

/// A batch of new rows only goes straight into the target with COPY; a batch holding a
/// key the target already has (it is ahead of the source, as after a restart) is refused
/// whole and upserted the staged way, and so are the next batches for a while; past 32
/// direct copies in one transaction, batches go the staged way (each direct copy is a
/// subtransaction). A trigger records which statement wrote each row.
#[tokio::test]
async fn new_rows_are_copied_straight_in_and_rows_already_there_upserted() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_direct").await?;
    let client = pg.client(&db).await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    let inserts = |ev: &mut Events, ids: std::ops::RangeInclusive<i64>, name: &str| {
        ids.map(|i| ev.insert(doc_row(i, &format!("{name} {i}"), Some("d"), i as f64)))
            .collect::<Vec<_>>()
    };
    let mut sink = sink(&pg, &db, 100).await?;
    let first = inserts(&mut ev, 1..=1, "first");
    transaction(&mut sink, &schema, &first, Position::pg(1, 1)).await?;
    client
        .batch_execute(
            "CREATE TABLE audit (id bigint, op text, statement text);
             CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO audit VALUES (NEW.id, TG_OP, split_part(current_query(), ' ', 1));
                 RETURN NULL;
             END $$;
             CREATE TRIGGER audit AFTER INSERT OR UPDATE ON docs
                 FOR EACH ROW EXECUTE FUNCTION audit();",
        )
        .await?;
    let audit = |ids: &str| {
        format!("SELECT op, statement, count(*) FROM audit WHERE {ids} GROUP BY 1, 2 ORDER BY 1, 2")
    };

    // Two batches of new rows: copied.
    let new = inserts(&mut ev, 2..=201, "new");
    transaction(&mut sink, &schema, &new, Position::pg(2, 1)).await?;
    assert_eq!(
        table(&client, &audit("id BETWEEN 2 AND 201")).await?,
        expect(&[&["INSERT", "COPY", "200"]])
    );

    // Inserts of keys the target has (150..=201) are refused whole and upserted; the
    // next batch of new rows waits out the refusal the staged way too.
    let mut again = inserts(&mut ev, 150..=249, "again");
    again.extend(inserts(&mut ev, 300..=399, "later"));
    transaction(&mut sink, &schema, &again, Position::pg(3, 1)).await?;
    assert_eq!(
        table(
            &client,
            &audit("id >= 150 AND id < 1000 AND statement <> 'COPY'")
        )
        .await?,
        expect(&[&["INSERT", "INSERT", "148"], &["UPDATE", "INSERT", "52"]])
    );
    drop(sink);

    // 40 batches of 10 new rows in one transaction: 32 copied, the rest staged.
    let mut sink = self::sink(&pg, &db, 10).await?;
    let many = inserts(&mut ev, 1000..=1399, "many");
    transaction(&mut sink, &schema, &many, Position::pg(4, 1)).await?;
    assert_eq!(
        table(&client, &audit("id >= 1000")).await?,
        expect(&[&["INSERT", "COPY", "320"], &["INSERT", "INSERT", "80"]])
    );

    assert_eq!(
        table(
            &client,
            "SELECT count(*), count(*) FILTER (WHERE name LIKE 'again %'), min(id), max(id) \
             FROM docs"
        )
        .await?,
        expect(&[&["749", "100", "1", "1399"]])
    );
    assert_eq!(
        table(
            &client,
            "SELECT name FROM docs WHERE id IN (149, 150, 201, 249, 300) ORDER BY id"
        )
        .await?,
        expect(&[
            &["new 149"],
            &["again 150"],
            &["again 201"],
            &["again 249"],
            &["later 300"]
        ])
    );
    Ok(())
}

#[tokio::test]
async fn misuse_and_bad_events_are_rejected() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_misuse").await?;
    let mut sink = sink(&pg, &db, 5_000).await?;
    let schema = docs_schema(1);
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
    let client = pg.client(&db).await?;
    assert_eq!(
        table(&client, "SELECT to_regclass('public.docs') IS NULL").await?,
        expect(&[&["t"]]),
        "the rolled-back transaction created the table and its rows; both are gone"
    );
    Ok(())
}

#[tokio::test]
async fn connection_errors_name_the_server_and_the_cause() -> anyhow::Result<()> {
    // Nothing listens on port 1.
    let err = PostgresSink::connect(PostgresSinkConfig::new("postgres://u:p@127.0.0.1:1/db"))
        .await
        .err()
        .context("connecting to a closed port must fail")?;
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(err.is_transient(), "{message}");

    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_conn").await?;
    let url = pg.url(&db);
    let wrong = url.replace("postgres:postgres@", "postgres:wrong@");
    anyhow::ensure!(wrong != url, "the harness URL carries the password: {url}");
    let err = PostgresSink::connect(PostgresSinkConfig::new(wrong))
        .await
        .err()
        .context("a wrong password must fail")?;
    let message = err.to_string();
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert_eq!(err.sqlstate(), Some("28P01"), "{message}");
    assert!(!err.is_transient(), "{message}");

    let mut config = PostgresSinkConfig::new(url);
    config.batch_rows = 0;
    let err = PostgresSink::connect(config)
        .await
        .err()
        .context("batch_rows = 0 is invalid")?;
    assert!(
        matches!(&err, SinkError::Config { field, .. } if field == "batch_rows"),
        "{err}"
    );
    Ok(())
}

/// Throughput against what the sink is designed to approach: a server-side `INSERT … ON
/// CONFLICT` from an already filled staging table (the sink must reach 60% of it over a
/// round of inserts and a round of updates of 200k rows). Run on a quiet machine with
/// `cargo nextest run --release -p tributary-tests --test sink_postgres --run-ignored only`;
/// debug builds only print the ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn throughput_approaches_a_server_side_upsert() -> anyhow::Result<()> {
    const ROWS: i64 = 200_000;
    let pg = Postgres::start().await?;
    let db = pg.create_database("sink_bench").await?;
    let client = pg.client(&db).await?;
    let mut sink = sink(&pg, &db, 5_000).await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    let doc = "d".repeat(100);
    let (mut sink_total, mut server_total) = (0.0, 0.0);
    for round in 0..2u64 {
        let events: Vec<ChangeEvent> = (0..ROWS)
            .map(|id| {
                let row = doc_row(id, &format!("name {id} {round}"), Some(&doc), id as f64);
                if round == 0 {
                    ev.insert(row)
                } else {
                    ev.update(row)
                }
            })
            .collect();
        let start = std::time::Instant::now();
        sink.begin().await?;
        for chunk in events.chunks(5_000) {
            sink.apply(&schema, chunk).await?;
        }
        sink.commit(SOURCE, Position::pg(round + 1, 1)).await?;
        let sink_time = start.elapsed();
        if round == 0 {
            client
                .batch_execute("CREATE TABLE base (LIKE public.docs INCLUDING ALL)")
                .await?;
        }
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS stage; \
                 CREATE TABLE stage AS SELECT id, 'name ' || id || ' {round}' AS name, \
                     repeat('d', 100) AS doc, id::float8 AS score \
                 FROM generate_series(0, {ROWS} - 1) id; \
                 ANALYZE stage"
            ))
            .await?;
        let start = std::time::Instant::now();
        client
            .batch_execute(
                "INSERT INTO base SELECT * FROM stage ON CONFLICT (id) DO UPDATE \
                 SET name = EXCLUDED.name, doc = EXCLUDED.doc, score = EXCLUDED.score",
            )
            .await?;
        let server_time = start.elapsed();
        sink_total += sink_time.as_secs_f64();
        server_total += server_time.as_secs_f64();
        eprintln!(
            "{}: {ROWS} rows, sink {sink_time:?}, server-side upsert {server_time:?}, \
             relative throughput {:.2}",
            if round == 0 { "inserts" } else { "updates" },
            server_time.as_secs_f64() / sink_time.as_secs_f64()
        );
        let differences = "SELECT count(*) FROM ((TABLE public.docs EXCEPT TABLE base) \
                           UNION ALL (TABLE base EXCEPT TABLE public.docs)) d";
        assert_eq!(table(&client, differences).await?, expect(&[&["0"]]));
    }
    let ratio = server_total / sink_total;
    eprintln!("inserts and updates: relative throughput {ratio:.2}");
    if !cfg!(debug_assertions) {
        assert!(
            ratio >= 0.6,
            "the sink reaches only {ratio:.2} of a server-side upsert"
        );
    }
    Ok(())
}
