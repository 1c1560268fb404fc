//! What only the MySQL sink does, against a real MariaDB: the storage engine and collation
//! of the tables it creates, values MySQL cannot hold, and existing tables or server
//! settings it cannot apply to. The contract every sink keeps is in `sink_contract.rs`,
//! run for MariaDB too.

use tributary_schemas::{ChangeEvent, Position, TableSchema};
use tributary_sinks::{MySqlSink, MySqlSinkConfig, Sink, SinkError};
use tributary_tests::MariaDb;

mod common;
use common::backend::mariadb::query;
use common::backend::transaction;
use common::events::*;

async fn sink(maria: &MariaDb, db: &str, batch_rows: usize) -> anyhow::Result<MySqlSink> {
    let mut config = MySqlSinkConfig::new(maria.url(db));
    config.batch_rows = batch_rows;
    Ok(MySqlSink::connect(config).await?)
}

/// Applies `event` in a new transaction, which must fail; rolls back and returns the error.
async fn refused(sink: &mut MySqlSink, schema: &TableSchema, event: ChangeEvent) -> SinkError {
    sink.begin().await.expect("begin");
    let err = sink
        .apply(schema, &[event])
        .await
        .expect_err("the apply is refused");
    sink.rollback().await.expect("rollback");
    err
}

/// Existing tables and server settings the sink cannot apply to, and values MySQL cannot
/// hold, are refused with errors that name them.
#[tokio::test]
async fn bad_setups_and_values_mysql_cannot_hold_are_named() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let schema = docs_schema(1);
    let mut ev = Events::new(&schema);

    // A table the sink cannot apply to transactionally, and a table without a key.
    let db = maria.create_database("sink_setup").await?;
    maria
        .execute(&db, "CREATE TABLE docs (id bigint PRIMARY KEY, name varchar(40), doc text, score double) ENGINE=MyISAM")
        .await?;
    let mut sink = self::sink(&maria, &db, 5_000).await?;
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

    // The sink creates its tables in InnoDB (transactional), with a binary collation
    // without padding (keys a PostgreSQL source tells apart stay apart).
    let db = maria.create_database("sink_values").await?;
    let mut sink = self::sink(&maria, &db, 5_000).await?;
    let one = [ev.insert(doc_row(1, "one", Some("d1"), 1.0))];
    transaction(&mut sink, &schema, &one, Position::pg(10, 1)).await?;
    assert_eq!(
        query(
            &maria,
            &db,
            "SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'docs'"
        )
        .await?,
        expect(&[&["InnoDB", "utf8mb4_nopad_bin"]])
    );

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
    assert_eq!(sink.watermark(SOURCE).await?, Some(Position::pg(10, 1)));
    assert_eq!(
        query(&maria, &db, "SELECT id FROM docs").await?,
        expect(&[&["1"]])
    );
    Ok(())
}
