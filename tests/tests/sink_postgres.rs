//! What only the PostgreSQL sink does, against a real server: loading COPY text, copying
//! new rows straight into the target, and its throughput against a server-side upsert.
//! The contract every sink keeps is in `sink_contract.rs`, run for PostgreSQL too.

use tributary_schemas::{ChangeEvent, Position};
use tributary_sinks::{CopyLoad, PostgresSink, PostgresSinkConfig, Sink};
use tributary_tests::Postgres;

mod common;
use common::backend::postgres::query;
use common::backend::transaction;
use common::events::*;

async fn sink(pg: &Postgres, db: &str, batch_rows: usize) -> anyhow::Result<PostgresSink> {
    let mut config = PostgresSinkConfig::new(pg.url(db));
    config.batch_rows = batch_rows;
    Ok(PostgresSink::connect(config).await?)
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
        query(
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
        query(&client, &audit("id BETWEEN 2 AND 201")).await?,
        expect(&[&["INSERT", "COPY", "200"]])
    );

    // Inserts of keys the target has (150..=201) are refused whole and upserted; the
    // next batch of new rows waits out the refusal the staged way too.
    let mut again = inserts(&mut ev, 150..=249, "again");
    again.extend(inserts(&mut ev, 300..=399, "later"));
    transaction(&mut sink, &schema, &again, Position::pg(3, 1)).await?;
    assert_eq!(
        query(
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
        query(&client, &audit("id >= 1000")).await?,
        expect(&[&["INSERT", "COPY", "320"], &["INSERT", "INSERT", "80"]])
    );

    assert_eq!(
        query(
            &client,
            "SELECT count(*), count(*) FILTER (WHERE name LIKE 'again %'), min(id), max(id) \
             FROM docs"
        )
        .await?,
        expect(&[&["749", "100", "1", "1399"]])
    );
    assert_eq!(
        query(
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
        assert_eq!(query(&client, differences).await?, expect(&[&["0"]]));
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
