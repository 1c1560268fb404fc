//! MySQL/MariaDB sources, in process: MariaDB (binlog, ROW) → (embedded log | tansu) →
//! every sink kind.
//!
//! The scenario of a MariaDB source is written once, generic over the sink's [`Backend`],
//! and runs into PostgreSQL and MariaDB on both transports (`end_to_end`). After each
//! step the sink must equal the source: every row of every compared table, each column
//! rendered to the same text on both sides by the expressions the sink's backend gives
//! for the column's MariaDB type (`Scene::converge`). The other tests are about the
//! capture (huge transactions, GTID resumption, XA, DDL the capture was away for,
//! compressed events) and write to PostgreSQL unless they say otherwise. PostgreSQL →
//! MySQL runs in `e2e_postgres::end_to_end`.

use anyhow::Context;
use std::time::Duration;
use tributary_schemas::TableId;
use tributary_tests::wait_until;

mod common;
use common::backend::mariadb::Maria;
use common::backend::postgres::Pg;
use common::backend::Backend;
use common::e2e::{Pair, Scene, SOURCE};

/// A table of every MariaDB type with typical, edge, zero and NULL values, and a
/// `stock` table of 50 rows with a two-column key.
const ITEMS_DDL: &str = "
SET time_zone = '+00:00';
CREATE TABLE items (
  id int PRIMARY KEY,
  name varchar(40) CHARACTER SET utf8mb4,
  latin varchar(20) CHARACTER SET latin1,
  code char(4) CHARACTER SET latin1,
  label char(100) CHARACTER SET utf8mb4,
  tiny tinyint,
  mid mediumint,
  umid mediumint unsigned,
  qty smallint unsigned,
  big bigint unsigned,
  price decimal(12,3),
  ratio double,
  f float,
  flag bit(1),
  bits bit(12),
  born date,
  at_dt datetime(6),
  at_ts timestamp(3) NULL DEFAULT NULL,
  dur time(6),
  dur2 time(2),
  yr year,
  kind enum('tablet','syrup','it''s'),
  tags set('otc','rx','cold'),
  doc json,
  blobby blob
);
CREATE TABLE stock (store int, item int, qty int NOT NULL, PRIMARY KEY (store, item));
INSERT INTO items VALUES
  (1, 'aspirin 500mg', 'café', 'çà', 'Aspirin – 500 mg, 20 Tabletten, ñandú ☃', -5, -8388608, 16777215, 65535, 18446744073709551615, 123456789.125, 0.25, 0.12345678, b'1', b'101010101010',
   '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123', '-838:59:59.000001', '838:59:59.99', 2024, 'it''s', 'otc,cold',
   '{\"a\": [1, 2]}', x'DEADBEEF'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, 'zero date', 'x', '', repeat('ü', 100), 0, -4399376, 12377840, 0, 0, 0, 0, 0, b'0', b'0', '0000-00-00', '1970-01-01 00:00:00.000001', '1970-01-01 00:00:01.500', '-00:00:01', '-12:00:00', 1901, 'tablet', '', '[]', x'');
INSERT INTO stock SELECT 1, seq, seq FROM seq_1_to_50;
";

/// A small `stock` table of 20 rows.
const STOCK_DDL: &str =
    "CREATE TABLE stock (store int, item int, qty int NOT NULL, PRIMARY KEY (store, item));
     INSERT INTO stock SELECT 1, seq, seq FROM seq_1_to_20;";

/// A MariaDB source of its database's tables running `ddl`, with more source `settings`
/// (TOML lines), over tansu when `kafka`, into a sink of kind `B`.
async fn scene<B: Backend>(
    kafka: bool,
    ddl: &str,
    settings: &str,
) -> anyhow::Result<Scene<Maria, B>> {
    Scene::new(kafka, ddl, |db| {
        format!("include = [\"{db}.*\"]\n{settings}")
    })
    .await
}

common::e2e::for_every_sink!(
    scenario,
    [
        postgres_embedded: Pg on false,
        postgres_kafka: Pg on true,
        mariadb_embedded: Maria on false,
        mariadb_kafka: Maria on true,
    ]
);

async fn scenario<B: Backend>(kafka: bool) -> anyhow::Result<()> {
    let scene = scene::<B>(kafka, ITEMS_DDL, "").await?;
    let tables = ["items", "stock"];
    let running = scene.start();
    // Initial snapshot.
    scene.converge(&tables, &running).await?;

    // Inserts, updates (including a primary-key change), deletes, a multi-table
    // transaction, in several transactions.
    scene.source_execute("SET time_zone = '+00:00';
             INSERT INTO items (id, name, qty, big, price, at_ts, dur, kind, tags) VALUES
               (4, 'ibuprofen', 7, 9223372036854775808, -0.001, '2038-01-19 03:14:07.999', '12:00:00', 'syrup', 'rx');
             UPDATE items SET name = 'aspirin 1g', label = 'Aspirin 1 g  ', code = 'x', price = price + 1, born = '1999-12-31' WHERE id = 1;
             UPDATE items SET id = 40 WHERE id = 4;
             DELETE FROM items WHERE id = 2;
             BEGIN; UPDATE stock SET qty = qty - 1 WHERE store = 1 AND item <= 10; DELETE FROM stock WHERE item > 45;
               INSERT INTO items (id, name) VALUES (5, 'in a transaction'); COMMIT;",
        )
        .await?;
    scene.converge(&tables, &running).await?;

    // A new column mid-stream, with a default the existing rows take.
    scene
        .source_execute(
            "ALTER TABLE stock ADD COLUMN shelf varchar(10) DEFAULT 'A1';
             INSERT INTO stock (store, item, qty, shelf) VALUES (2, 1, 3, 'B7');
             UPDATE stock SET shelf = 'C2' WHERE store = 1 AND item = 2;",
        )
        .await?;
    scene.converge(&tables, &running).await?;

    // More DDL mid-stream: tables created and filled; once they arrived, a dropped column
    // (the sink keeps it, new rows leave it NULL), a dropped table (the sink keeps its
    // copy) and a truncated one (logged as a statement: the sink empties its copy). The
    // steps are apart because the capture reads table shapes from the current catalog: a
    // table dropped before the capture reached its rows stops the capture with an error
    // (see the README), which `bad_input::mariadb_bad_setups_are_named` checks.
    scene.source_execute("CREATE TABLE scratch (id int PRIMARY KEY); INSERT INTO scratch VALUES (1);
             CREATE TABLE suppliers (id int PRIMARY KEY, name varchar(40) NOT NULL, rating decimal(3,1));
             INSERT INTO suppliers VALUES (1, 'Acme', 4.5), (2, 'Pharma & Co', NULL);
             UPDATE suppliers SET rating = 5.0 WHERE id = 2;",
        )
        .await?;
    scene
        .converge(&["stock", "suppliers", "scratch"], &running)
        .await?;
    scene
        .source_execute(
            "ALTER TABLE items DROP COLUMN latin;
             UPDATE items SET name = concat(name, '!') WHERE id = 1;
             INSERT INTO items (id, name) VALUES (7, 'after drop');
             DROP TABLE scratch;
             TRUNCATE TABLE suppliers;
             INSERT INTO suppliers VALUES (3, 'after truncate', 1.0);",
        )
        .await?;
    scene
        .converge(&["items", "stock", "suppliers"], &running)
        .await?;
    running.stop().await?;

    // Restart: resumes from the checkpoint; changes made while stopped arrive, nothing
    // is applied twice.
    scene.source_execute("UPDATE stock SET qty = qty + 100 WHERE store = 1 AND item = 3; INSERT INTO items (id, name) VALUES (6, 'while stopped');")
        .await?;
    let running = scene.start();
    scene
        .source_execute("UPDATE stock SET qty = qty + 1000 WHERE store = 1 AND item = 3;")
        .await?;
    scene
        .converge(&["items", "stock", "suppliers"], &running)
        .await?;
    running.stop().await
}

/// One MariaDB transaction of 1M rows streams through with bounded memory: capture,
/// pipeline and sink share this process, and its peak RSS stays far below the data size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_mariadb() -> anyhow::Result<()> {
    million_rows::<Pg>().await
}

/// The same into a MariaDB sink: one InnoDB transaction of 1M rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_mariadb_to_mariadb() -> anyhow::Result<()> {
    million_rows::<Maria>().await
}

async fn million_rows<B: Backend>() -> anyhow::Result<()> {
    let scene = scene::<B>(
        false,
        "CREATE TABLE readings (id bigint PRIMARY KEY, sensor varchar(20), value double, note varchar(100))",
        "",
    )
    .await?;
    let running = scene.start();
    scene
        .source_execute(
            "INSERT INTO readings SELECT seq, concat('sensor-', seq % 100), seq / 8, repeat('x', 80) FROM seq_1_to_1000000",
        )
        .await?;
    // One aggregate row per side (the same expressions in every kind): the sink holds
    // every row with the source's values.
    let aggregates = &["count(*)", "sum(id)", "sum(length(sensor))", "sum(value)"];
    wait_until(
        "the 1M-row transaction arrived",
        Duration::from_secs(300),
        || async {
            anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
            let want = scene.source_rows("readings", aggregates).await?;
            Ok(scene.sink_rows("readings", aggregates).await.ok() == Some(want))
        },
    )
    .await?;
    running.stop().await?;
    let peak = tributary_tests::peak_rss_mib()?;
    assert!(
        peak < 512,
        "peak RSS of the whole test process was {peak} MiB"
    );
    Ok(())
}

/// With `resume_from = "gtid"` a restart finds its place by the GTID state alone: the
/// stored file and offset are made useless, the binlog rotates meanwhile, and every change
/// still arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_the_gtid_state() -> anyhow::Result<()> {
    let scene = scene::<Pg>(false, STOCK_DDL, "resume_from = \"gtid\"").await?;
    let tables = ["stock"];
    let running = scene.start();
    scene
        .source_execute("UPDATE stock SET qty = qty + 1 WHERE item <= 5")
        .await?;
    scene.converge(&tables, &running).await?;
    running.stop().await?;

    let store =
        tributary_capture::state::StateStore::open(&scene.config.state_dir.join("capture"))?;
    let mut checkpoint = store
        .binlog_checkpoint(SOURCE)?
        .context("a checkpoint after streaming")?;
    let gtid = checkpoint
        .gtid
        .clone()
        .context("the checkpoint holds a GTID state")?;
    assert!(gtid.starts_with("0-1-"), "{gtid}");
    checkpoint.file = "binlog.999999".into();
    checkpoint.pos = 4;
    store.set_binlog_checkpoint(SOURCE, &checkpoint)?;
    drop(store);

    scene.source_execute("UPDATE stock SET qty = qty * 10 WHERE item = 7; FLUSH BINARY LOGS; DELETE FROM stock WHERE item = 8; INSERT INTO stock VALUES (2, 1, 1);",
        )
        .await?;
    let running = scene.start();
    scene.converge(&tables, &running).await?;
    running.stop().await
}

/// A two-phase XA transaction reaches the sink at its XA COMMIT, whole, and not before;
/// one rolled back after its prepare never does. Their rows are held in the capture's
/// state from the prepare on, so a capture restarted between prepare and commit (its
/// checkpoint past the prepares) still publishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_xa_transactions_flow_at_their_commit() -> anyhow::Result<()> {
    let scene = scene::<Pg>(false, STOCK_DDL, "").await?;
    let tables = ["stock"];
    let running = scene.start();
    scene.converge(&tables, &running).await?;
    // One session per prepared transaction (a session stays tied to its prepared one).
    for sql in [
        "XA START 'sale'; UPDATE stock SET qty = qty - 1 WHERE store = 1 AND item IN (1, 2, 3);
         INSERT INTO stock VALUES (9, 9, 9); XA END 'sale'; XA PREPARE 'sale';",
        "XA START 'void'; DELETE FROM stock WHERE store = 1 AND item = 10; XA END 'void'; XA PREPARE 'void';",
        "UPDATE stock SET qty = 100 WHERE store = 1 AND item = 5;",
    ] {
        scene.source_execute(sql).await?;
    }
    // The later update arrives; the prepared rows, which the source does not show yet,
    // must not.
    scene.converge(&tables, &running).await?;
    running.stop().await?;
    let (file, prepared) = scene
        .source
        .binlog_event_end("XA PREPARE X'766f6964'", 0)
        .await?;
    let store =
        tributary_capture::state::StateStore::open(&scene.config.state_dir.join("capture"))?;
    let checkpoint = store
        .binlog_checkpoint(SOURCE)?
        .context("a checkpoint after streaming")?;
    drop(store);
    assert!(
        checkpoint.file == file && checkpoint.pos > prepared,
        "the checkpoint {checkpoint:?} is past the prepares (the last ends at {file}:{prepared})"
    );

    scene.source_execute("XA COMMIT 'sale'; XA ROLLBACK 'void';
             XA START 'one'; UPDATE stock SET qty = 7 WHERE store = 1 AND item = 6; XA END 'one'; XA COMMIT 'one' ONE PHASE;",
        )
        .await?;
    let want = scene
        .source_rows("stock", &["store", "item", "qty"])
        .await?;
    assert!(
        [["1", "1", "0"], ["9", "9", "9"], ["1", "10", "10"]]
            .iter()
            .all(|row| want.contains(&row.map(str::to_string).to_vec())),
        "the source shows the committed sale and the rolled-back delete: {want:?}"
    );
    let running = scene.start();
    scene.converge(&tables, &running).await?;
    running.stop().await
}

/// An XA transaction prepared when the snapshot starts: the snapshot waits until it ends
/// before copying, so the copy holds its rows, and the stream passes its XA COMMIT by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_waits_for_prepared_xa_transactions() -> anyhow::Result<()> {
    let scene = scene::<Pg>(false, STOCK_DDL, "").await?;
    let tables = ["stock"];
    scene
        .source_execute(
            "XA START 'early'; UPDATE stock SET qty = 0 WHERE store = 1 AND item = 1;
             INSERT INTO stock VALUES (3, 3, 3); XA END 'early'; XA PREPARE 'early';",
        )
        .await?;
    let recovers = || async {
        let out = scene
            .source
            .query("", "SHOW GLOBAL STATUS LIKE 'Com_xa_recover'")
            .await?;
        let count = out.split('\t').nth(1).context("Com_xa_recover")?.trim();
        anyhow::Ok(count.parse::<u64>()?)
    };
    let before = recovers().await?;
    let running = scene.start();
    // It lists the prepared transactions before and after taking its position, then
    // again while it waits.
    wait_until("the snapshot waits", Duration::from_secs(60), || async {
        anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
        Ok(recovers().await? >= before + 3)
    })
    .await?;
    scene.source_execute("XA COMMIT 'early'").await?;
    scene.converge(&tables, &running).await?;
    running.stop().await
}

/// With `binlog_row_metadata = FULL`, a capture that was away while tables changed decodes
/// each row with the shape the binlog gives at its position, not the current catalog's:
/// same-typed columns reordered, a column added, and a table of every type dropped after
/// its last rows (the sink keeps them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_behind_ddl_decodes_with_the_binlogs_shapes() -> anyhow::Result<()> {
    let scene = scene::<Pg>(false, ITEMS_DDL, "").await?;
    scene
        .source
        .execute("", "SET GLOBAL binlog_row_metadata = 'FULL'")
        .await?;
    let tables = ["items", "stock"];
    let running = scene.start();
    scene.converge(&tables, &running).await?;
    running.stop().await?;

    // While the capture is away.
    let witness = scene.source.create_database("witness").await?;
    scene.source_execute(&format!(
                "SET time_zone = '+00:00';
                 INSERT INTO stock VALUES (3, 1, 7), (3, 2, 8);
                 ALTER TABLE stock MODIFY qty int NOT NULL AFTER store;
                 INSERT INTO stock (store, item, qty) VALUES (3, 3, 9);
                 UPDATE stock SET qty = qty + 100 WHERE store = 3 AND item = 1;
                 ALTER TABLE stock ADD COLUMN note varchar(20) DEFAULT 'n';
                 INSERT INTO stock VALUES (3, 10, 4, 'x');
                 INSERT INTO items SELECT id + 10, name, latin, code, label, tiny, mid, umid, qty, big, price, ratio, f, flag, bits, born,
                   at_dt, at_ts, dur, dur2, yr, kind, tags, doc, blobby FROM items;
                 UPDATE items SET name = 'changed', tags = 'rx' WHERE id = 11;
                 DELETE FROM items WHERE id = 2;
                 CREATE TABLE {witness}.items AS SELECT * FROM items;
                 DROP TABLE items;"
            ),
        )
        .await?;
    let running = scene.start();
    scene.converge(&["stock"], &running).await?;
    // The items table, dropped at the source, compared with its copy in the witness.
    let witnessed = Pair {
        source_db: witness.clone(),
        source: TableId::new(&witness, "items"),
        sink: scene.pair("items").sink,
    };
    scene.converge_pairs(&[witnessed], false, &running).await?;
    running.stop().await
}

/// Without `binlog_row_metadata = FULL` (MariaDB's default), a capture that was away while
/// a table gained and lost columns decodes the rows written before with the shapes it saw
/// before, and the sink converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_behind_ddl_uses_earlier_shapes_without_full_metadata() -> anyhow::Result<()> {
    let scene = scene::<Pg>(false, STOCK_DDL, "").await?;
    let tables = ["stock"];
    let running = scene.start();
    scene.converge(&tables, &running).await?;
    running.stop().await?;

    // While the capture is away: rows in the old shape, then two changes of shape.
    scene
        .source_execute(
            "INSERT INTO stock VALUES (2, 1, 5), (2, 2, 6);
             UPDATE stock SET qty = qty * 2 WHERE store = 1 AND item <= 3;
             ALTER TABLE stock ADD COLUMN note varchar(20) DEFAULT 'n';
             INSERT INTO stock VALUES (2, 3, 7, 'x');
             DELETE FROM stock WHERE store = 1 AND item = 20;",
        )
        .await?;
    let running = scene.start();
    scene.converge(&tables, &running).await?;
    running.stop().await
}

/// With `log_bin_compress = ON`, MariaDB writes compressed QUERY and ROWS events: the
/// capture inflates them, so inserts, updates and deletes of every type and DDL written
/// compressed reach the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_binlog_events_are_read() -> anyhow::Result<()> {
    let scene = scene::<Pg>(false, ITEMS_DDL, "").await?;
    let running = scene.start();
    scene.converge(&["items", "stock"], &running).await?;
    // Every statement and rows event whose statement or row data has 10 bytes or more is
    // compressed from here on.
    scene
        .source
        .execute(
            "",
            "SET GLOBAL log_bin_compress = ON; SET GLOBAL log_bin_compress_min_len = 10",
        )
        .await?;
    scene.source_execute("SET time_zone = '+00:00';
             INSERT INTO items SELECT id + 10, name, latin, code, label, tiny, mid, umid, qty, big, price, ratio, f, flag, bits, born,
               at_dt, at_ts, dur, dur2, yr, kind, tags, doc, blobby FROM items;
             UPDATE items SET name = 'changed', tags = 'rx', blobby = repeat(x'00ff', 3000) WHERE id = 11;
             DELETE FROM items WHERE id = 2;
             ALTER TABLE stock ADD COLUMN note varchar(40) DEFAULT 'added while compressed';
             INSERT INTO stock SELECT 2, seq, seq * 3, repeat('n', seq) FROM seq_1_to_30;
             UPDATE stock SET qty = qty + 1 WHERE store = 1;
             DELETE FROM stock WHERE item > 25;",
        )
        .await?;
    let (file, _) = scene.source.binlog_end().await?;
    let events = scene
        .source
        .query("", &format!("SHOW BINLOG EVENTS IN '{file}'"))
        .await?;
    for kind in [
        "Query_compressed",
        "Write_rows_compressed",
        "Update_rows_compressed",
        "Delete_rows_compressed",
    ] {
        assert!(
            events.contains(kind),
            "no {kind} event in the binlog:\n{events}"
        );
    }
    scene.converge(&["items", "stock"], &running).await?;
    running.stop().await
}
