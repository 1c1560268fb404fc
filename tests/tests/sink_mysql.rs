//! The MySQL sink against a real MariaDB: table creation, every operation, unchanged
//! TOAST values, key changes, truncate, schema evolution (also inside a transaction),
//! type round trips, values MySQL cannot hold, replays, watermark atomicity and
//! connection errors. Every scenario asserts the table contents read back from the server.

use anyhow::Context;
use tributary_schemas::{ColumnType, Interval, Position, TableId, TableSchema, Value};
use tributary_sinks::{MySqlSink, MySqlSinkConfig, Sink, SinkError};
use tributary_tests::MariaDb;

mod common;
use common::events::*;

/// Every row of a query as the `mariadb` client prints it (NULL as `NULL`).
async fn rows(maria: &MariaDb, db: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let out = maria.query(db, sql).await?;
    Ok(out
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

async fn sink(maria: &MariaDb, db: &str, batch_rows: usize) -> anyhow::Result<MySqlSink> {
    let mut config = MySqlSinkConfig::new(maria.url(db));
    config.batch_rows = batch_rows;
    Ok(MySqlSink::connect(config).await?)
}

/// Applies `events` in one transaction committed at `position`.
async fn transaction(
    sink: &mut MySqlSink,
    schema: &TableSchema,
    events: &[tributary_schemas::ChangeEvent],
    position: Position,
) -> anyhow::Result<()> {
    sink.begin().await?;
    sink.apply(schema, events).await?;
    sink.commit(SOURCE, position).await?;
    Ok(())
}

/// The docs table with long documents abbreviated to their start and length.
const DOCS: &str =
    "SELECT id, name, IFNULL(CONCAT(LEFT(doc, 12), '…', CHAR_LENGTH(doc)), 'NULL'), \
                    score FROM docs ORDER BY id";

#[tokio::test]
async fn changes_are_applied_and_unchanged_values_kept() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let db = maria.create_database("sink_ops").await?;
    let mut sink = sink(&maria, &db, 5_000).await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    let big = "x".repeat(100_000);

    // Inserts create the table in the URL's database with mapped types and the key.
    let inserts = vec![
        ev.insert(doc_row(1, "one", Some(&big), 1.5)),
        ev.insert(doc_row(2, "two", Some(&big), 2.5)),
        ev.insert(doc_row(3, "three", Some("small"), 3.5)),
    ];
    transaction(&mut sink, &schema, &inserts, Position::pg(100, 3)).await?;
    assert_eq!(
        rows(
            &maria,
            &db,
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'docs' ORDER BY ORDINAL_POSITION"
        )
        .await?,
        expect(&[
            &["id", "bigint(20)", "NO", "PRI"],
            &["name", "varchar(40)", "YES", ""],
            &["doc", "longtext", "YES", ""],
            &["score", "double", "YES", ""],
        ])
    );
    assert_eq!(
        rows(
            &maria,
            &db,
            "SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'docs'"
        )
        .await?,
        expect(&[&["InnoDB", "utf8mb4_nopad_bin"]])
    );
    assert_eq!(
        rows(&maria, &db, DOCS).await?,
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
        rows(&maria, &db, DOCS).await?,
        expect(&[
            &["1", "uno", "replaced…8", "10"],
            &["2", "dos", "xxxxxxxxxxxx…100000", "20"],
        ])
    );

    // Key changes: with an unchanged value of a row only the target has (updated in
    // place), and of a row inserted earlier in the same batch (merged).
    let moves = vec![
        ev.insert(doc_row(5, "five", Some("fifth"), 5.0)),
        ev.rekey(vec![Value::Int64(2)], doc_row(20, "twenty", None, 200.0)),
        ev.update(doc_row(20, "twenty!", None, 201.0)),
        ev.rekey(vec![Value::Int64(5)], doc_row(50, "fifty", None, 500.0)),
        ev.update(doc_row(1, "one again", None, 11.0)),
    ];
    transaction(&mut sink, &schema, &moves, Position::pg(102, 5)).await?;
    assert_eq!(
        rows(&maria, &db, DOCS).await?,
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
        rows(&maria, &db, DOCS).await?,
        expect(&[&["8", "eight", "e…1", "8"]])
    );
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(103, 3)));
    Ok(())
}

#[tokio::test]
async fn small_batches_and_keys_that_differ_in_case_or_spaces() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
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
        let db = maria.create_database("sink_batches").await?;
        let mut sink = sink(&maria, &db, batch_rows).await?;
        transaction(&mut sink, &schema, &events, Position::pg(1, 1)).await?;
        results.push(rows(&maria, &db, DOCS).await?);
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
    let db = maria.create_database("sink_keys").await?;
    let mut sink = sink(&maria, &db, 5_000).await?;
    let codes = ["a", "A", "a "].map(|c| c.to_string());
    let inserts: Vec<_> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| ev.insert(vec![text(c), Value::Int32(i as i32)]))
        .collect();
    transaction(&mut sink, &keyed, &inserts, Position::pg(1, 1)).await?;
    let deletes = vec![ev.delete(vec![text("a ")])];
    transaction(&mut sink, &keyed, &deletes, Position::pg(2, 1)).await?;
    assert_eq!(
        rows(&maria, &db, "SELECT HEX(code), n FROM codes ORDER BY n").await?,
        expect(&[&["61", "0"], &["41", "1"]])
    );
    Ok(())
}

#[tokio::test]
async fn new_columns_are_added_outside_the_data_transaction() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let db = maria.create_database("sink_evolve").await?;
    let mut config = MySqlSinkConfig::new(maria.url(&db));
    config.target_schema = Some(format!("{db}_replica"));
    let replica = format!("{db}_replica");
    let mut sink = MySqlSink::connect(config).await?;

    let v1 = docs_schema(1);
    assert!(
        !sink.ready_for(&v1),
        "nothing is prepared before the first use"
    );
    let mut ev1 = Events::new(&v1);
    let first = vec![ev1.insert(doc_row(1, "one", Some("d"), 1.0))];
    transaction(&mut sink, &v1, &first, Position::pg(1, 1)).await?;
    assert!(sink.ready_for(&v1));

    // Version 2 adds a column; its rows that existed before hold a value ('missing').
    let mut v2 = docs_schema(2);
    v2.columns[4].missing = Some("old".into());
    assert!(!sink.ready_for(&v2));
    let mut ev2 = Events::new(&v2);
    let second = vec![ev2.insert(vec![
        Value::Int64(2),
        Value::Null,
        text("d2"),
        Value::Float64(2.0),
        text("new"),
    ])];
    transaction(&mut sink, &v2, &second, Position::pg(2, 1)).await?;
    // Old-version events still apply (the new column is left alone).
    let third = vec![ev1.insert(doc_row(3, "three", Some("d3"), 3.0))];
    transaction(&mut sink, &v1, &third, Position::pg(3, 1)).await?;

    // A version with another column in the middle of a transaction that already wrote:
    // the rows come through, the watermark commits with the transaction.
    let mut v3 = docs_schema(2);
    v3.version = 3;
    v3.columns
        .push(column("extra", ColumnType::Int32, "integer", true));
    let mut ev3 = Events::new(&v3);
    sink.begin().await?;
    sink.apply(
        &v2,
        &[ev2.insert(vec![
            Value::Int64(4),
            text("four"),
            Value::Null,
            Value::Null,
            text("t4"),
        ])],
    )
    .await?;
    sink.apply(
        &v3,
        &[ev3.insert(vec![
            Value::Int64(5),
            text("five"),
            Value::Null,
            Value::Null,
            text("t5"),
            Value::Int32(55),
        ])],
    )
    .await?;
    sink.commit(SOURCE, Position::pg(4, 2)).await?;

    assert_eq!(
        rows(
            &maria,
            &replica,
            "SELECT id, name, doc, score, tag, extra FROM docs ORDER BY id"
        )
        .await?,
        expect(&[
            &["1", "one", "d", "1", "old", "NULL"],
            &["2", "NULL", "d2", "2", "new", "NULL"],
            &["3", "three", "d3", "3", "NULL", "NULL"],
            &["4", "four", "NULL", "NULL", "t4", "NULL"],
            &["5", "five", "NULL", "NULL", "t5", "55"],
        ])
    );
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(4, 2)));
    assert_eq!(
        rows(
            &maria,
            "",
            &format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'")
        )
        .await?,
        expect(&[&["0"]]),
        "the target_schema setting is honoured"
    );
    Ok(())
}

/// One column of the all-types table: definition, the MariaDB type it must get, and three
/// values with the text the `mariadb` client must print for each (through `expr`, where
/// `{}` stands for the column).
struct TypeCase {
    name: &'static str,
    ty: ColumnType,
    source_type: &'static str,
    target_type: &'static str,
    expr: &'static str,
    values: [(Value, &'static str); 3],
}

#[rustfmt::skip]
fn type_cases() -> Vec<TypeCase> {
    let numeric = |p, s| ColumnType::Numeric { precision: p, scale: s };
    let iv = |months, days, micros| Value::Interval(Interval { months, days, micros });
    vec![
        TypeCase { name: "b", ty: ColumnType::Bool, source_type: "boolean", target_type: "tinyint(1)", expr: "{}",
            values: [(Value::Bool(true), "1"), (Value::Bool(false), "0"), (Value::Null, "NULL")] },
        TypeCase { name: "i2", ty: ColumnType::Int16, source_type: "smallint", target_type: "smallint(6)", expr: "{}",
            values: [(Value::Int16(i16::MIN), "-32768"), (Value::Int16(i16::MAX), "32767"), (Value::Int16(0), "0")] },
        TypeCase { name: "i4", ty: ColumnType::Int32, source_type: "integer", target_type: "int(11)", expr: "{}",
            values: [(Value::Int32(i32::MIN), "-2147483648"), (Value::Int32(i32::MAX), "2147483647"), (Value::Null, "NULL")] },
        TypeCase { name: "i8", ty: ColumnType::Int64, source_type: "bigint", target_type: "bigint(20)", expr: "{}",
            values: [(Value::Int64(i64::MIN), "-9223372036854775808"), (Value::Int64(i64::MAX), "9223372036854775807"), (Value::Int64(-1), "-1")] },
        TypeCase { name: "u8", ty: numeric(Some(20), Some(0)), source_type: "bigint(20) unsigned", target_type: "bigint(20) unsigned", expr: "{}",
            values: [(Value::Numeric("18446744073709551615".into()), "18446744073709551615"), (Value::Numeric("0".into()), "0"), (Value::Null, "NULL")] },
        TypeCase { name: "f4", ty: ColumnType::Float32, source_type: "real", target_type: "float", expr: "{} = CAST(0.1 AS FLOAT)",
            values: [(Value::Float32(0.1), "1"), (Value::Float32(-0.5), "0"), (Value::Null, "NULL")] },
        TypeCase { name: "f8", ty: ColumnType::Float64, source_type: "double precision", target_type: "double", expr: "{}",
            values: [(Value::Float64(0.1), "0.1"), (Value::Float64(-1.5e300), "-1.5e300"), (Value::Float64(5e-324), "5e-324")] },
        TypeCase { name: "dec", ty: numeric(Some(12), Some(4)), source_type: "numeric(12,4)", target_type: "decimal(12,4)", expr: "{}",
            values: [(Value::Numeric("-12345678.1234".into()), "-12345678.1234"), (Value::Numeric("0.5".into()), "0.5000"), (Value::Null, "NULL")] },
        TypeCase { name: "num", ty: numeric(None, None), source_type: "numeric", target_type: "decimal(65,30)", expr: "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {}))",
            values: [(Value::Numeric("12345678901234567890123456789012345.123456789012345678901234567891".into()), "12345678901234567890123456789012345.123456789012345678901234567891"), (Value::Numeric("-1".into()), "-1"), (Value::Numeric("0.000000000000000000000000000001".into()), "0.000000000000000000000000000001")] },
        TypeCase { name: "vc", ty: ColumnType::Text, source_type: "varchar(10)", target_type: "varchar(10)", expr: "{}",
            values: [(text("héllo ✓"), "héllo ✓"), (text(""), ""), (text("it's"), "it's")] },
        TypeCase { name: "txt", ty: ColumnType::Text, source_type: "text", target_type: "longtext", expr: "HEX({})",
            values: [(text("a\\b\n'\"%_"), "615C620A2722255F"), (text("😀"), "F09F9880"), (Value::Null, "NULL")] },
        TypeCase { name: "by", ty: ColumnType::Bytes, source_type: "bytea", target_type: "longblob", expr: "HEX({})",
            values: [(Value::Bytes(vec![0, 1, 0xff, b'\'']), "0001FF27"), (Value::Bytes(vec![]), ""), (Value::Null, "NULL")] },
        TypeCase { name: "bits", ty: ColumnType::Bytes, source_type: "bit(12)", target_type: "bit(12)", expr: "BIN({})",
            values: [(Value::Bytes(vec![0x0f, 0xff]), "111111111111"), (Value::Bytes(vec![0, 1]), "1"), (Value::Null, "NULL")] },
        TypeCase { name: "d", ty: ColumnType::Date, source_type: "date", target_type: "date", expr: "{}",
            values: [(Value::Date(0), "1970-01-01"), (Value::Date(-719_528), "0000-01-01"), (Value::Date(2_932_896), "9999-12-31")] },
        TypeCase { name: "t", ty: ColumnType::Time, source_type: "time", target_type: "time(6)", expr: "{}",
            values: [(Value::Time(0), "00:00:00.000000"), (Value::Time(86_399_999_999), "23:59:59.999999"), (Value::Null, "NULL")] },
        TypeCase { name: "ts", ty: ColumnType::Timestamp, source_type: "timestamp without time zone", target_type: "datetime(6)", expr: "{}",
            values: [(Value::Timestamp(1_700_000_000_123_456), "2023-11-14 22:13:20.123456"), (Value::Timestamp(-1), "1969-12-31 23:59:59.999999"), (Value::Null, "NULL")] },
        TypeCase { name: "tz", ty: ColumnType::TimestampTz, source_type: "timestamp with time zone", target_type: "datetime(6)", expr: "{}",
            values: [(Value::TimestampTz(0), "1970-01-01 00:00:00.000000"), (Value::TimestampTz(253_402_300_799_999_999), "9999-12-31 23:59:59.999999"), (Value::Null, "NULL")] },
        TypeCase { name: "iv", ty: ColumnType::Interval, source_type: "time(2)", target_type: "time(6)", expr: "{}",
            values: [(iv(0, 0, -3_020_399_990_000), "-838:59:59.990000"), (iv(0, 1, 1), "24:00:00.000001"), (Value::Null, "NULL")] },
        TypeCase { name: "u", ty: ColumnType::Uuid, source_type: "uuid", target_type: "char(36)", expr: "{}",
            values: [(Value::Uuid([0xab; 16]), "abababab-abab-abab-abab-abababababab"), (Value::Uuid([0; 16]), "00000000-0000-0000-0000-000000000000"), (Value::Null, "NULL")] },
        TypeCase { name: "j", ty: ColumnType::Json { binary: true }, source_type: "jsonb", target_type: "longtext", expr: "JSON_EXTRACT({}, '$.a')",
            values: [(Value::Json(r#"{"a": [1, "x'y"]}"#.into()), r#"[1, "x'y"]"#), (Value::Json(r#"{"a": null}"#.into()), "null"), (Value::Null, "NULL")] },
        TypeCase { name: "e", ty: ColumnType::Enum { name: "e".into() }, source_type: "enum('x','y z')", target_type: "enum('x','y z')", expr: "{}",
            values: [(Value::Enum("x".into()), "x"), (Value::Enum("y z".into()), "y z"), (Value::Null, "NULL")] },
        TypeCase { name: "pe", ty: ColumnType::Enum { name: "mood".into() }, source_type: "mood", target_type: "varchar(255)", expr: "{}",
            values: [(Value::Enum("happy".into()), "happy"), (Value::Enum("sad".into()), "sad"), (Value::Null, "NULL")] },
        TypeCase { name: "s", ty: ColumnType::Text, source_type: "set('Red','b')", target_type: "set('Red','b')", expr: "{}",
            values: [(text("Red,b"), "Red,b"), (text(""), ""), (text("b"), "b")] },
        TypeCase { name: "arr", ty: ColumnType::Array { element: Box::new(ColumnType::Int32) }, source_type: "integer[]", target_type: "longtext", expr: "{}",
            values: [(Value::Array(vec![Value::Int32(1), Value::Null]), "[1,null]"), (Value::Array(vec![]), "[]"), (Value::Null, "NULL")] },
    ]
}

#[tokio::test]
async fn every_column_type_round_trips() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let db = maria.create_database("sink_types").await?;
    let cases = type_cases();
    let mut columns = vec![column("id", ColumnType::Int32, "integer", false)];
    columns.extend(
        cases
            .iter()
            .map(|c| column(c.name, c.ty.clone(), c.source_type, true)),
    );
    let schema = TableSchema {
        table: TableId::new("public", "types"),
        columns,
        primary_key: vec![0],
        version: 1,
    };
    let mut ev = Events::new(&schema);
    let events: Vec<_> = (0..3)
        .map(|i| {
            let mut row = vec![Value::Int32(i as i32)];
            row.extend(cases.iter().map(|c| c.values[i].0.clone()));
            ev.insert(row)
        })
        .collect();
    let mut sink = sink(&maria, &db, 5_000).await?;
    transaction(&mut sink, &schema, &events, Position::pg(1, 1)).await?;

    for case in &cases {
        let got = rows(
            &maria,
            &db,
            &format!(
                "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = 'types' AND COLUMN_NAME = '{}'",
                case.name
            ),
        )
        .await?;
        assert_eq!(got, expect(&[&[case.target_type]]), "type of {}", case.name);
        let expr = case.expr.replace("{}", &format!("`{}`", case.name));
        let got = rows(
            &maria,
            &db,
            &format!("SELECT {expr} FROM types ORDER BY id"),
        )
        .await?;
        let want: Vec<&[&str]> = case
            .values
            .iter()
            .map(|(_, t)| std::slice::from_ref(t))
            .collect();
        assert_eq!(got, expect(&want), "values of {}", case.name);
    }
    Ok(())
}

#[tokio::test]
async fn replays_watermarks_and_values_mysql_cannot_hold() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let db = maria.create_database("sink_replay").await?;
    let mut sink = sink(&maria, &db, 5_000).await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    let first = vec![
        ev.insert(doc_row(1, "one", Some("d1"), 1.0)),
        ev.insert(doc_row(2, "two", Some("d2"), 2.0)),
    ];
    transaction(&mut sink, &schema, &first, Position::pg(10, 2)).await?;
    // The same events again are harmless.
    transaction(&mut sink, &schema, &first, Position::pg(10, 2)).await?;
    let once = rows(&maria, &db, DOCS).await?;
    assert_eq!(once.len(), 2);

    // Nothing of an open transaction is visible, neither data nor watermark.
    sink.begin().await?;
    sink.apply(&schema, &[ev.insert(doc_row(5, "five", Some("d5"), 5.0))])
        .await?;
    assert_eq!(rows(&maria, &db, DOCS).await?, once);
    assert_eq!(
        rows(
            &maria,
            &db,
            "SELECT position FROM tributary.watermarks WHERE source = 'src'"
        )
        .await?,
        expect(&[&[r#"{"kind":"postgres","lsn":10,"seq":2}"#]])
    );
    sink.rollback().await?;
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(10, 2)));
    assert_eq!(rows(&maria, &db, DOCS).await?, once);

    // A value MySQL cannot store exactly is refused with its column and position, before
    // anything of the batch is written; the transaction can only be rolled back.
    sink.begin().await?;
    let nan = ev.insert(doc_row(6, "six", Some("d6"), f64::NAN));
    let at = nan.position;
    let err = sink.apply(&schema, &[nan]).await.unwrap_err();
    assert!(
        matches!(&err, SinkError::TypeMismatch { column, position, .. } if column == "score" && **position == at),
        "{err}"
    );
    assert!(err.to_string().contains("NaN"), "{err}");
    assert!(!err.is_transient());
    let err = sink.commit(SOURCE, Position::pg(11, 1)).await.unwrap_err();
    assert!(matches!(err, SinkError::Protocol(_)), "{err}");
    sink.rollback().await?;

    // The server's own refusals are definite errors naming the table.
    sink.begin().await?;
    let long = ev.insert(doc_row(7, &"n".repeat(41), Some("d7"), 7.0));
    let err = sink.apply(&schema, &[long]).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains(&format!("{db}.docs")) && err.to_string().contains("1406"),
        "{err}"
    );
    sink.rollback().await?;

    // A lost connection is transient; the retried transaction reconnects.
    let eight = [ev.insert(doc_row(8, "eight", Some("d8"), 8.0))];
    sink.begin().await?;
    sink.apply(&schema, &eight).await?;
    let ids = maria
        .query(
            "",
            &format!(
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE DB = '{db}' AND ID <> CONNECTION_ID()"
            ),
        )
        .await?;
    for id in ids.lines() {
        maria.execute("", &format!("KILL {id}")).await?;
    }
    let err = sink
        .commit(SOURCE, Position::pg(12, 1))
        .await
        .expect_err("the session is gone");
    assert!(err.is_transient(), "{err}");
    sink.rollback().await?;
    transaction(&mut sink, &schema, &eight, Position::pg(12, 1)).await?;
    assert_eq!(
        rows(&maria, &db, "SELECT id FROM docs ORDER BY id").await?,
        expect(&[&["1"], &["2"], &["8"]])
    );

    // Watermarks are per source and survive a new connection.
    drop(sink);
    let mut again = self::sink(&maria, &db, 5_000).await?;
    assert_eq!(again.watermark(SOURCE).await?, Some(Position::pg(12, 1)));
    assert_eq!(again.watermark("other").await?, None);
    Ok(())
}

/// Applies `event` in a new transaction, which must fail; rolls back and returns the error.
async fn refused(
    sink: &mut MySqlSink,
    schema: &TableSchema,
    event: tributary_schemas::ChangeEvent,
) -> SinkError {
    sink.begin().await.expect("begin");
    let err = sink
        .apply(schema, &[event])
        .await
        .expect_err("the apply is refused");
    sink.rollback().await.expect("rollback");
    err
}

#[tokio::test]
async fn bad_setups_are_named() -> anyhow::Result<()> {
    let err = MySqlSink::connect(MySqlSinkConfig::new("mysql://u:p@127.0.0.1:1/db"))
        .await
        .err()
        .context("connecting to a closed port must fail")?;
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(err.is_transient(), "{err}");

    let maria = MariaDb::start().await?;
    let db = maria.create_database("sink_setup").await?;
    let wrong = maria.url(&db).replace("root:root@", "root:wrong@");
    let err = MySqlSink::connect(MySqlSinkConfig::new(wrong))
        .await
        .err()
        .context("a wrong password must fail")?;
    assert!(err.to_string().contains("Access denied"), "{err}");
    assert!(!err.is_transient(), "{err}");

    // A table the sink cannot apply to transactionally, and a table without a key.
    maria
        .execute(&db, "CREATE TABLE docs (id bigint PRIMARY KEY, name varchar(40), doc text, score double) ENGINE=MyISAM")
        .await?;
    let mut sink = sink(&maria, &db, 5_000).await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);
    let err = refused(
        &mut sink,
        &schema,
        ev.insert(doc_row(1, "one", Some("d"), 1.0)),
    )
    .await;
    assert!(
        err.to_string().contains("MyISAM") && err.to_string().contains("InnoDB"),
        "{err}"
    );
    let mut keyless = schema.clone();
    keyless.primary_key.clear();
    let err = refused(
        &mut sink,
        &keyless,
        ev.insert(doc_row(1, "one", Some("d"), 1.0)),
    )
    .await;
    assert!(matches!(err, SinkError::NoPrimaryKey { .. }), "{err}");
    assert_eq!(sink.watermark(SOURCE).await?, None);

    // Existing tables whose keys would make an upsert hit another row.
    maria
        .execute(
            &db,
            "DROP TABLE docs; CREATE TABLE docs (id bigint, name varchar(40), doc text, score double, PRIMARY KEY (id, name));",
        )
        .await?;
    let mut sink = self::sink(&maria, &db, 5_000).await?;
    let err = refused(
        &mut sink,
        &schema,
        ev.insert(doc_row(1, "one", Some("d"), 1.0)),
    )
    .await;
    assert!(err.to_string().contains("primary key (id, name)"), "{err}");
    maria
        .execute(
            &db,
            "ALTER TABLE docs DROP PRIMARY KEY, ADD PRIMARY KEY (id), ADD UNIQUE INDEX by_name (name);",
        )
        .await?;
    let mut sink = self::sink(&maria, &db, 5_000).await?;
    let err = refused(
        &mut sink,
        &schema,
        ev.insert(doc_row(1, "one", Some("d"), 1.0)),
    )
    .await;
    assert!(err.to_string().contains("unique index by_name"), "{err}");
    maria
        .execute(&db, "ALTER TABLE docs DROP INDEX by_name")
        .await?;

    // A row larger than the server accepts is a definite error that says what to raise.
    maria
        .execute("", "SET GLOBAL max_allowed_packet = 65536")
        .await?;
    let mut sink = self::sink(&maria, &db, 5_000).await?;
    maria
        .execute("", "SET GLOBAL max_allowed_packet = 16777216")
        .await?;
    sink.begin().await?;
    let big = "b".repeat(100_000);
    let rows = [
        ev.insert(doc_row(1, "one", Some("small"), 1.0)),
        ev.insert(doc_row(2, "two", Some(&big), 2.0)),
    ];
    let err = sink.apply(&schema, &rows).await.unwrap_err();
    assert!(
        err.to_string().contains("max_allowed_packet") && !err.is_transient(),
        "{err}"
    );
    sink.rollback().await?;
    Ok(())
}
