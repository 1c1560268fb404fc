//! MySQL/MariaDB at either end, in process: MariaDB (binlog, ROW) → (embedded log |
//! tansu) → PostgreSQL or MariaDB, and PostgreSQL → MariaDB.
//!
//! After each step the sink must equal the source: every row of every table, each column
//! rendered to the same text on both sides by a pair of SQL expressions (one per dialect;
//! a MariaDB sink is read with the MariaDB expression).

use anyhow::Context;
use std::time::Duration;
use tributary::Config;
use tributary_tests::{wait_until, Kafka, MariaDb, Postgres, Running};

/// `(MariaDB expression, PostgreSQL expression)` rendering one column the same way.
const ITEMS: &[(&str, &str)] = &[
    ("id", "id"),
    ("name", "name"),
    ("latin", "latin"),
    // MariaDB drops CHAR's trailing spaces; PostgreSQL's character(n) shows them.
    ("code", "rtrim(code)"),
    ("label", "rtrim(label)"),
    ("tiny", "tiny"),
    ("mid", "mid"),
    ("umid", "umid"),
    ("qty", "qty"),
    ("big", "big"),
    ("price", "price"),
    ("ratio", "ratio"),
    ("f", "f"),
    ("flag+0", "flag::int"),
    ("bits+0", "get_byte(bits, 0) * 256 + get_byte(bits, 1)"),
    // Zero dates become NULL (documented rule).
    ("if(born = '0000-00-00', NULL, born)", "born"),
    ("at_dt", "at_dt"),
    (
        "date_format(at_ts, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(at_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    ),
    (
        "round(time_to_sec(dur) * 1000000)",
        "round(extract(epoch from dur) * 1000000)",
    ),
    (
        "round(time_to_sec(dur2) * 100)",
        "round(extract(epoch from dur2) * 100)",
    ),
    ("yr", "yr"),
    ("kind", "kind"),
    ("tags", "tags"),
    ("doc", "doc"),
    ("hex(blobby)", "upper(encode(blobby, 'hex'))"),
];

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
  (1, 'aspirin 500mg', 'café', 'çà', 'Aspirin – 500 mg, 20 Tabletten, ñandú ☃', -5, -8388608, 16777215, 65535, 18446744073709551615, 123456789.125, 0.25, 1.5, b'1', b'101010101010',
   '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123', '-838:59:59.000001', '838:59:59.99', 2024, 'it''s', 'otc,cold',
   '{\"a\": [1, 2]}', x'DEADBEEF'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, 'zero date', 'x', '', repeat('ü', 100), 0, -4399376, 12377840, 0, 0, 0, 0, 0, b'0', b'0', '0000-00-00', '1970-01-01 00:00:00.000001', '1970-01-01 00:00:01.500', '-00:00:01', '-12:00:00', 1901, 'tablet', '', '[]', x'');
INSERT INTO stock SELECT 1, seq, seq FROM seq_1_to_50;
";

/// Where the pipeline writes.
enum SinkSide {
    Postgres(Postgres),
    /// A second MariaDB server.
    Maria(MariaDb),
}

struct Scene {
    maria: MariaDb,
    sink: SinkSide,
    _kafka: Option<Kafka>,
    db: String,
    dst: String,
    config: Config,
    _state: tempfile::TempDir,
}

impl Scene {
    /// A MariaDB source running `ddl`, with more `[sources.store]` settings (TOML
    /// lines), over tansu when `kafka`, into a MariaDB sink when `maria_sink`, else
    /// PostgreSQL.
    async fn with_source_settings(
        kafka: bool,
        ddl: &str,
        settings: &str,
        maria_sink: bool,
    ) -> anyhow::Result<Self> {
        // RUST_LOG=info shows what capture and pipeline do (nextest prints it on failure).
        tributary_tests::init_tracing();
        let maria = MariaDb::start().await?;
        let sink = if maria_sink {
            SinkSide::Maria(MariaDb::start().await?)
        } else {
            SinkSide::Postgres(Postgres::start().await?)
        };
        let kafka = if kafka {
            Some(Kafka::start().await?)
        } else {
            None
        };
        let db = maria.create_database("shop").await?;
        maria.execute(&db, ddl).await?;
        let (dst, sink_kind, sink_url) = match &sink {
            SinkSide::Postgres(pg) => {
                let dst = pg.create_database("dst").await?;
                let url = pg.url(&dst);
                (dst, "postgres", url)
            }
            SinkSide::Maria(m) => {
                let dst = m.create_database("dst").await?;
                let url = m.url(&dst);
                (dst, "mysql", url)
            }
        };
        let state = tempfile::tempdir()?;
        let transport = match &kafka {
            Some(k) => format!(
                "[transport]\nkind = \"kafka\"\nbrokers = \"{}\"\n",
                k.bootstrap()
            ),
            None => "[transport]\nkind = \"embedded\"\n".into(),
        };
        let text = format!(
            "state_dir = {:?}\n{transport}\n[sources.store]\nkind = \"mysql\"\nurl = {:?}\ninclude = [\"{db}.*\"]\nheartbeat_secs = 1\n{settings}\n\n[sinks.dst]\nkind = \"{sink_kind}\"\nurl = {:?}\n",
            state.path(),
            maria.url(&db),
            sink_url,
        );
        let config = Config::parse(&text, |_| None).map_err(anyhow::Error::msg)?;
        Ok(Scene {
            maria,
            sink,
            _kafka: kafka,
            db,
            dst,
            config,
            _state: state,
        })
    }

    fn start(&self) -> Running {
        Running::start(self.config.clone(), false)
    }

    /// The rows of `table` in the source, one tab-separated line each.
    async fn source_rows(&self, table: &str, columns: &[(&str, &str)]) -> anyhow::Result<String> {
        let exprs: Vec<&str> = columns.iter().map(|c| c.0).collect();
        self.maria
            .query(
                &self.db,
                &format!(
                    "SET time_zone = '+00:00'; SELECT {} FROM {table} ORDER BY 1, 2",
                    exprs.join(", ")
                ),
            )
            .await
    }

    /// The rows of `table` in the sink, rendered like [`Scene::source_rows`].
    async fn sink_rows(&self, table: &str, columns: &[(&str, &str)]) -> anyhow::Result<String> {
        let pg = match &self.sink {
            SinkSide::Maria(m) => {
                let exprs: Vec<&str> = columns.iter().map(|c| c.0).collect();
                return m
                    .query(
                        &self.dst,
                        &format!(
                            "SET time_zone = '+00:00'; SELECT {} FROM {table} ORDER BY 1, 2",
                            exprs.join(", ")
                        ),
                    )
                    .await;
            }
            SinkSide::Postgres(pg) => pg,
        };
        let exprs: Vec<String> = columns
            .iter()
            .map(|c| format!("coalesce(({})::text, 'NULL')", c.1))
            .collect();
        let client = pg.client(&self.dst).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT concat_ws(E'\\t', {}) FROM {}.{table} ORDER BY 1",
                    exprs.join(", "),
                    self.db
                ),
                &[],
            )
            .await?;
        let mut out = String::new();
        for r in rows {
            out.push_str(&r.get::<_, String>(0));
            out.push('\n');
        }
        Ok(out)
    }

    /// The PostgreSQL sink (scenarios that check it directly).
    fn pg(&self) -> &Postgres {
        match &self.sink {
            SinkSide::Postgres(pg) => pg,
            SinkSide::Maria(_) => panic!("this scene writes to MariaDB"),
        }
    }

    /// Waits until every listed table has the same rows on both sides.
    async fn converge(
        &self,
        tables: &[(&str, &[(&str, &str)])],
        running: &Running,
    ) -> anyhow::Result<()> {
        converge_rows(tables.len(), running, |i| {
            let (table, columns) = tables[i];
            async move {
                let want = self.source_rows(table, columns).await?;
                let have = self.sink_rows(table, columns).await.unwrap_or_default();
                Ok((table.to_string(), want, have))
            }
        })
        .await
    }
}

/// Waits until, for each of `count` tables, `rows(i)` gives the same lines (in any order)
/// for source and sink: `(table, source rows, sink rows)`. Fails early when the pipeline
/// stopped, and with the last difference on timeout.
async fn converge_rows<F, Fut>(count: usize, running: &Running, rows: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(String, String, String)>>,
{
    let last = std::sync::Mutex::new(String::new());
    let outcome = wait_until("sink equals source", Duration::from_secs(120), || async {
        anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
        for i in 0..count {
            let (table, want, have) = rows(i).await?;
            if sorted(&want) != sorted(&have) {
                *last.lock().expect("not poisoned") =
                    format!("{table}:\nsource:\n{want}\nsink:\n{have}");
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await;
    if outcome.is_err() && running.task.is_finished() {
        anyhow::bail!("the pipeline stopped: {:?}", outcome);
    }
    outcome.with_context(|| format!("last difference: {}", last.lock().expect("not poisoned")))
}

/// Lines in a stable order (the two databases collate differently).
fn sorted(s: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = s.lines().collect();
    lines.sort_unstable();
    lines
}

const STOCK: &[(&str, &str)] = &[("store", "store"), ("item", "item"), ("qty", "qty")];

/// A small `stock` table of 20 rows.
const STOCK_DDL: &str =
    "CREATE TABLE stock (store int, item int, qty int NOT NULL, PRIMARY KEY (store, item));
     INSERT INTO stock SELECT 1, seq, seq FROM seq_1_to_20;";

async fn scenario(kafka: bool, maria_sink: bool) -> anyhow::Result<()> {
    let scene = Scene::with_source_settings(kafka, ITEMS_DDL, "", maria_sink).await?;
    let tables: &[(&str, &[(&str, &str)])] = &[("items", ITEMS), ("stock", STOCK)];
    let running = scene.start();
    // Initial snapshot.
    scene.converge(tables, &running).await?;

    // Inserts, updates (including a primary-key change), deletes, a multi-table
    // transaction, in several transactions.
    scene
        .maria
        .execute(
            &scene.db,
            "SET time_zone = '+00:00';
             INSERT INTO items (id, name, qty, big, price, at_ts, dur, kind, tags) VALUES
               (4, 'ibuprofen', 7, 9223372036854775808, -0.001, '2038-01-19 03:14:07.999', '12:00:00', 'syrup', 'rx');
             UPDATE items SET name = 'aspirin 1g', label = 'Aspirin 1 g  ', code = 'x', price = price + 1, born = '1999-12-31' WHERE id = 1;
             UPDATE items SET id = 40 WHERE id = 4;
             DELETE FROM items WHERE id = 2;
             BEGIN; UPDATE stock SET qty = qty - 1 WHERE store = 1 AND item <= 10; DELETE FROM stock WHERE item > 45;
               INSERT INTO items (id, name) VALUES (5, 'in a transaction'); COMMIT;",
        )
        .await?;
    scene.converge(tables, &running).await?;

    // A new column mid-stream, with a default the existing rows take.
    scene
        .maria
        .execute(
            &scene.db,
            "ALTER TABLE stock ADD COLUMN shelf varchar(10) DEFAULT 'A1';
             INSERT INTO stock (store, item, qty, shelf) VALUES (2, 1, 3, 'B7');
             UPDATE stock SET shelf = 'C2' WHERE store = 1 AND item = 2;",
        )
        .await?;
    let stock2: &[(&str, &str)] = &[
        ("store", "store"),
        ("item", "item"),
        ("qty", "qty"),
        ("shelf", "shelf"),
    ];
    scene
        .converge(&[("items", ITEMS), ("stock", stock2)], &running)
        .await?;

    // More DDL mid-stream: tables created and filled; once they arrived, a dropped column
    // (the sink keeps it, new rows leave it NULL), a dropped table (the sink keeps its
    // copy) and a truncated one (logged as a statement: the sink empties its copy). The
    // steps are apart because the capture reads table shapes from the current catalog: a
    // table dropped before the capture reached its rows stops the capture with an error
    // (see the README), which `bad_input::mariadb_bad_setups_are_named` checks.
    scene
        .maria
        .execute(
            &scene.db,
            "CREATE TABLE scratch (id int PRIMARY KEY); INSERT INTO scratch VALUES (1);
             CREATE TABLE suppliers (id int PRIMARY KEY, name varchar(40) NOT NULL, rating decimal(3,1));
             INSERT INTO suppliers VALUES (1, 'Acme', 4.5), (2, 'Pharma & Co', NULL);
             UPDATE suppliers SET rating = 5.0 WHERE id = 2;",
        )
        .await?;
    let suppliers: &[(&str, &str)] = &[("id", "id"), ("name", "name"), ("rating", "rating")];
    let scratch: &[(&str, &str)] = &[("id", "id"), ("id", "id")];
    scene
        .converge(
            &[
                ("stock", stock2),
                ("suppliers", suppliers),
                ("scratch", scratch),
            ],
            &running,
        )
        .await?;
    scene
        .maria
        .execute(
            &scene.db,
            "ALTER TABLE items DROP COLUMN latin;
             UPDATE items SET name = concat(name, '!') WHERE id = 1;
             INSERT INTO items (id, name) VALUES (7, 'after drop');
             DROP TABLE scratch;
             TRUNCATE TABLE suppliers;
             INSERT INTO suppliers VALUES (3, 'after truncate', 1.0);",
        )
        .await?;
    let items2: Vec<(&str, &str)> = ITEMS.iter().copied().filter(|c| c.0 != "latin").collect();
    scene
        .converge(
            &[
                ("items", &items2),
                ("stock", stock2),
                ("suppliers", suppliers),
            ],
            &running,
        )
        .await?;
    running.stop().await?;

    // Restart: resumes from the checkpoint; changes made while stopped arrive, nothing
    // is applied twice.
    scene
        .maria
        .execute(&scene.db, "UPDATE stock SET qty = qty + 100 WHERE store = 1 AND item = 3; INSERT INTO items (id, name) VALUES (6, 'while stopped');")
        .await?;
    let running = scene.start();
    scene
        .maria
        .execute(
            &scene.db,
            "UPDATE stock SET qty = qty + 1000 WHERE store = 1 AND item = 3;",
        )
        .await?;
    scene
        .converge(
            &[
                ("items", &items2),
                ("stock", stock2),
                ("suppliers", suppliers),
            ],
            &running,
        )
        .await?;
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_postgres_embedded() -> anyhow::Result<()> {
    scenario(false, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_postgres_kafka() -> anyhow::Result<()> {
    scenario(true, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_mariadb_kafka() -> anyhow::Result<()> {
    scenario(true, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_mariadb_embedded() -> anyhow::Result<()> {
    scenario(false, true).await
}

/// One MariaDB transaction of 1M rows streams through with bounded memory: capture,
/// pipeline and sink share this process, and its peak RSS stays far below the data size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_mariadb() -> anyhow::Result<()> {
    million_rows(false).await
}

/// The same into a MariaDB sink: one InnoDB transaction of 1M rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_mariadb_to_mariadb() -> anyhow::Result<()> {
    million_rows(true).await
}

async fn million_rows(maria_sink: bool) -> anyhow::Result<()> {
    let scene = Scene::with_source_settings(
        false,
        "CREATE TABLE readings (id bigint PRIMARY KEY, sensor varchar(20), value double, note varchar(100))",
        "",
        maria_sink,
    )
    .await?;
    let running = scene.start();
    scene
        .maria
        .execute(
            &scene.db,
            "INSERT INTO readings SELECT seq, concat('sensor-', seq % 100), seq / 8, repeat('x', 80) FROM seq_1_to_1000000",
        )
        .await?;
    let columns: &[(&str, &str)] = &[
        ("count(*)", "count(*)"),
        ("sum(id)", "sum(id)"),
        ("sum(length(sensor))", "sum(length(sensor))"),
        ("sum(value)", "sum(value)"),
    ];
    // One aggregate row per side: the sink holds every row with the source's values.
    let outcome = wait_until("the 1M-row transaction arrived", Duration::from_secs(300), || async {
        anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
        let want = scene.source_rows("readings", columns).await?;
        if maria_sink {
            return Ok(scene.sink_rows("readings", columns).await.ok() == Some(want));
        }
        let client = scene.pg().client(&scene.dst).await?;
        let have = match client
            .query_one(
                &format!(
                    "SELECT concat_ws(E'\\t', count(*), sum(id), sum(length(sensor)), sum(value)) FROM {}.readings",
                    scene.db
                ),
                &[],
            )
            .await
        {
            Ok(r) => format!("{}\n", r.get::<_, String>(0)),
            Err(_) => return Ok(false),
        };
        Ok(want == have)
    })
    .await;
    outcome?;
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
    let scene =
        Scene::with_source_settings(false, STOCK_DDL, "resume_from = \"gtid\"", false).await?;
    let tables: &[(&str, &[(&str, &str)])] = &[("stock", STOCK)];
    let running = scene.start();
    scene
        .maria
        .execute(&scene.db, "UPDATE stock SET qty = qty + 1 WHERE item <= 5")
        .await?;
    scene.converge(tables, &running).await?;
    running.stop().await?;

    let store =
        tributary_capture::state::StateStore::open(&scene.config.state_dir.join("capture"))?;
    let mut checkpoint = store
        .binlog_checkpoint("store")?
        .context("a checkpoint after streaming")?;
    let gtid = checkpoint
        .gtid
        .clone()
        .context("the checkpoint holds a GTID state")?;
    assert!(gtid.starts_with("0-1-"), "{gtid}");
    checkpoint.file = "binlog.999999".into();
    checkpoint.pos = 4;
    store.set_binlog_checkpoint("store", &checkpoint)?;
    drop(store);

    scene
        .maria
        .execute(
            &scene.db,
            "UPDATE stock SET qty = qty * 10 WHERE item = 7; FLUSH BINARY LOGS; DELETE FROM stock WHERE item = 8; INSERT INTO stock VALUES (2, 1, 1);",
        )
        .await?;
    let running = scene.start();
    scene.converge(tables, &running).await?;
    running.stop().await
}

/// A two-phase XA transaction reaches the sink at its XA COMMIT, whole, and not before;
/// one rolled back after its prepare never does. Their rows are held in the capture's
/// state from the prepare on, so a capture restarted between prepare and commit (its
/// checkpoint past the prepares) still publishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_xa_transactions_flow_at_their_commit() -> anyhow::Result<()> {
    let scene = Scene::with_source_settings(false, STOCK_DDL, "", false).await?;
    let tables: &[(&str, &[(&str, &str)])] = &[("stock", STOCK)];
    let running = scene.start();
    scene.converge(tables, &running).await?;
    // One session per prepared transaction (a session stays tied to its prepared one).
    for sql in [
        "XA START 'sale'; UPDATE stock SET qty = qty - 1 WHERE store = 1 AND item IN (1, 2, 3);
         INSERT INTO stock VALUES (9, 9, 9); XA END 'sale'; XA PREPARE 'sale';",
        "XA START 'void'; DELETE FROM stock WHERE store = 1 AND item = 10; XA END 'void'; XA PREPARE 'void';",
        "UPDATE stock SET qty = 100 WHERE store = 1 AND item = 5;",
    ] {
        scene.maria.execute(&scene.db, sql).await?;
    }
    // The later update arrives; the prepared rows, which the source does not show yet,
    // must not.
    scene.converge(tables, &running).await?;
    running.stop().await?;
    let (file, prepared) = scene
        .maria
        .binlog_event_end("XA PREPARE X'766f6964'", 0)
        .await?;
    let store =
        tributary_capture::state::StateStore::open(&scene.config.state_dir.join("capture"))?;
    let checkpoint = store
        .binlog_checkpoint("store")?
        .context("a checkpoint after streaming")?;
    drop(store);
    assert!(
        checkpoint.file == file && checkpoint.pos > prepared,
        "the checkpoint {checkpoint:?} is past the prepares (the last ends at {file}:{prepared})"
    );

    scene
        .maria
        .execute(
            &scene.db,
            "XA COMMIT 'sale'; XA ROLLBACK 'void';
             XA START 'one'; UPDATE stock SET qty = 7 WHERE store = 1 AND item = 6; XA END 'one'; XA COMMIT 'one' ONE PHASE;",
        )
        .await?;
    let want = scene.source_rows("stock", STOCK).await?;
    assert!(
        want.contains("1\t1\t0\n") && want.contains("9\t9\t9\n") && want.contains("1\t10\t10\n"),
        "the source shows the committed sale and the rolled-back delete:\n{want}"
    );
    let running = scene.start();
    scene.converge(tables, &running).await?;
    running.stop().await
}

/// An XA transaction prepared when the snapshot starts: the snapshot waits until it ends
/// before copying, so the copy holds its rows, and the stream passes its XA COMMIT by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_waits_for_prepared_xa_transactions() -> anyhow::Result<()> {
    let scene = Scene::with_source_settings(false, STOCK_DDL, "", false).await?;
    let tables: &[(&str, &[(&str, &str)])] = &[("stock", STOCK)];
    scene
        .maria
        .execute(
            &scene.db,
            "XA START 'early'; UPDATE stock SET qty = 0 WHERE store = 1 AND item = 1;
             INSERT INTO stock VALUES (3, 3, 3); XA END 'early'; XA PREPARE 'early';",
        )
        .await?;
    let recovers = || async {
        let out = scene
            .maria
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
    scene.maria.execute(&scene.db, "XA COMMIT 'early'").await?;
    scene.converge(tables, &running).await?;
    running.stop().await
}

/// With `binlog_row_metadata = FULL`, a capture that was away while tables changed decodes
/// each row with the shape the binlog gives at its position, not the current catalog's:
/// same-typed columns reordered, a column added, and a table of every type dropped after
/// its last rows (the sink keeps them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_behind_ddl_decodes_with_the_binlogs_shapes() -> anyhow::Result<()> {
    let scene = Scene::with_source_settings(false, ITEMS_DDL, "", false).await?;
    scene
        .maria
        .execute("", "SET GLOBAL binlog_row_metadata = 'FULL'")
        .await?;
    let tables: &[(&str, &[(&str, &str)])] = &[("items", ITEMS), ("stock", STOCK)];
    let running = scene.start();
    scene.converge(tables, &running).await?;
    running.stop().await?;

    // While the capture is away.
    let witness = scene.maria.create_database("witness").await?;
    scene
        .maria
        .execute(
            &scene.db,
            &format!(
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
    scene.converge(&[("stock", STOCK)], &running).await?;
    let exprs: Vec<&str> = ITEMS.iter().map(|c| c.0).collect();
    let witness_sql = format!(
        "SET time_zone = '+00:00'; SELECT {} FROM items ORDER BY 1, 2",
        exprs.join(", ")
    );
    converge_rows(1, &running, |_| async {
        let want = scene.maria.query(&witness, &witness_sql).await?;
        let have = scene.sink_rows("items", ITEMS).await.unwrap_or_default();
        Ok(("items (dropped at the source)".to_string(), want, have))
    })
    .await?;
    running.stop().await
}

/// Without `binlog_row_metadata = FULL` (MariaDB's default), a capture that was away while
/// a table gained and lost columns decodes the rows written before with the shapes it saw
/// before, and the sink converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_behind_ddl_uses_earlier_shapes_without_full_metadata() -> anyhow::Result<()> {
    let scene = Scene::with_source_settings(false, STOCK_DDL, "", false).await?;
    let tables: &[(&str, &[(&str, &str)])] = &[("stock", STOCK)];
    let running = scene.start();
    scene.converge(tables, &running).await?;
    running.stop().await?;

    // While the capture is away: rows in the old shape, then two changes of shape.
    scene
        .maria
        .execute(
            &scene.db,
            "INSERT INTO stock VALUES (2, 1, 5), (2, 2, 6);
             UPDATE stock SET qty = qty * 2 WHERE store = 1 AND item <= 3;
             ALTER TABLE stock ADD COLUMN note varchar(20) DEFAULT 'n';
             INSERT INTO stock VALUES (2, 3, 7, 'x');
             DELETE FROM stock WHERE store = 1 AND item = 20;",
        )
        .await?;
    let running = scene.start();
    scene.converge(tables, &running).await?;
    running.stop().await
}

/// With `log_bin_compress = ON`, MariaDB writes compressed QUERY and ROWS events: the
/// capture inflates them, so inserts, updates and deletes of every type and DDL written
/// compressed reach the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_binlog_events_are_read() -> anyhow::Result<()> {
    let scene = Scene::with_source_settings(false, ITEMS_DDL, "", false).await?;
    let running = scene.start();
    scene
        .converge(&[("items", ITEMS), ("stock", STOCK)], &running)
        .await?;
    // Every statement and rows event whose statement or row data has 10 bytes or more is
    // compressed from here on.
    scene
        .maria
        .execute(
            "",
            "SET GLOBAL log_bin_compress = ON; SET GLOBAL log_bin_compress_min_len = 10",
        )
        .await?;
    scene
        .maria
        .execute(
            &scene.db,
            "SET time_zone = '+00:00';
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
    let (file, _) = scene.maria.binlog_end().await?;
    let events = scene
        .maria
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
    let stock = &[
        ("store", "store"),
        ("item", "item"),
        ("qty", "qty"),
        ("note", "note"),
    ];
    scene
        .converge(&[("items", ITEMS), ("stock", stock)], &running)
        .await?;
    running.stop().await
}

/// `(PostgreSQL expression, MariaDB expression)` rendering one column of `meds` the same
/// way in a PostgreSQL source and a MariaDB sink.
const MEDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("b::int", "b"),
    ("i2", "i2"),
    ("i8", "i8"),
    ("f8", "f8"),
    ("n", "n"),
    (
        "trim_scale(nu)",
        "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM nu))",
    ),
    ("md5(t)", "md5(t)"),
    ("vc", "vc"),
    ("upper(encode(by, 'hex'))", "hex(`by`)"),
    ("d", "d"),
    (
        "round(extract(epoch from tm) * 1000000)",
        "round(time_to_sec(tm) * 1000000)",
    ),
    (
        "to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US')",
        "date_format(ts, '%Y-%m-%d %H:%i:%s.%f')",
    ),
    (
        "to_char(tstz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        "date_format(tstz, '%Y-%m-%d %H:%i:%s.%f')",
    ),
    (
        "round(extract(epoch from iv) * 1000000)",
        "round(time_to_sec(iv) * 1000000)",
    ),
    ("u", "u"),
    ("jb->>'a'", "json_unquote(json_extract(jb, '$.a'))"),
    ("array_to_json(ai)", "ai"),
    ("m", "m"),
    ("md5(big)", "md5(big)"),
];

const MEDS_DDL: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE meds (
  id int PRIMARY KEY, b bool, i2 int2, i8 int8, f8 float8, n numeric(12,3), nu numeric,
  t text, vc varchar(20), by bytea, d date, tm time, ts timestamp, tstz timestamptz, iv interval,
  u uuid, jb jsonb, ai int[], m mood, big text);
ALTER TABLE meds ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO meds VALUES
 (1, true, -32768, -9223372036854775808, 1.25, 123456789.123, 12345678901234567890.000000000000000000000000000001,
  'héllo, "wörld" \ end', 'varchar', '\x00ff10', '2024-02-29', '23:59:59.999999',
  '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+05:30', '1 day 02:03:04.000005',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": "x''y"}', '{1,NULL,-3}', 'happy', repeat('toast ', 100000)),
 (2, false, 0, 0, 0, 0, -1, '', '', '\x', '0001-01-01', '00:00', '1970-01-01 00:00', '9999-12-31 23:59:59.999999+00',
  '-838:59:59', '00000000-0000-0000-0000-000000000000', '{}', '{}', 'sad', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(10,2), note text);
INSERT INTO orders SELECT g, 'customer ' || g, g * 1.5, NULL FROM generate_series(1, 1000) g;
"#;

/// PostgreSQL → MariaDB: every type MySQL can hold, every operation, unchanged TOAST
/// values, new columns (also in the middle of a source transaction), truncate, restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mariadb() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let maria = MariaDb::start().await?;
    let src = pg.create_database("src").await?;
    pg.execute(&src, MEDS_DDL).await?;
    let dst = maria.create_database("dst").await?;
    let state = tempfile::tempdir()?;
    let text = format!(
        "state_dir = {:?}\n[transport]\nkind = \"embedded\"\n\n[sources.head]\nkind = \"postgres\"\nurl = {:?}\nheartbeat_secs = 1\n\n[sinks.store]\nkind = \"mysql\"\nurl = {:?}\n",
        state.path(),
        pg.url(&src),
        maria.url(&dst),
    );
    let config = Config::parse(&text, |_| None).map_err(anyhow::Error::msg)?;
    let start = || Running::start(config.clone(), false);
    let source = pg.client(&src).await?;
    let orders = || {
        vec![
            ("id", "id"),
            ("customer", "customer"),
            ("amount", "amount"),
            ("note", "note"),
        ]
    };
    let both = || vec![("meds", MEDS.to_vec()), ("orders", orders())];

    let running = start();
    converge_to_mariadb(&source, &maria, &dst, both(), &running).await?;

    pg.execute(
        &src,
        "INSERT INTO orders SELECT g, 'late ' || g, g, 'n' FROM generate_series(1001, 1100) g;
         UPDATE orders SET amount = amount + 1 WHERE id % 3 = 0;
         BEGIN; UPDATE orders SET id = 5000 WHERE id = 7; DELETE FROM orders WHERE id BETWEEN 10 AND 20; COMMIT;
         INSERT INTO meds (id, t, ai) VALUES (4, 'four', '{4}');
         UPDATE meds SET id = 40, i2 = 44 WHERE id = 2;
         UPDATE meds SET i2 = 7 WHERE id = 1; UPDATE meds SET id = 100 WHERE id = 1;",
    )
    .await?;
    converge_to_mariadb(&source, &maria, &dst, both(), &running).await?;
    let big = maria
        .query(&dst, "SELECT length(big) FROM meds WHERE id = 100")
        .await?;
    assert_eq!(big.trim(), "600000", "the unchanged TOAST value survived");

    // New columns: one with a default the existing rows take, then one added in the middle
    // of a transaction that also writes rows before and after it.
    pg.execute(
        &src,
        "ALTER TABLE orders ADD COLUMN priority int DEFAULT 3;
         INSERT INTO orders (id, customer, priority) VALUES (9000, 'new', 1);
         BEGIN; INSERT INTO orders (id, customer) VALUES (9001, 'before');
           ALTER TABLE orders ADD COLUMN shelf text;
           INSERT INTO orders (id, customer, shelf) VALUES (9002, 'after', 'B7'); COMMIT;",
    )
    .await?;
    let mut orders2 = orders();
    orders2.extend([("priority", "priority"), ("shelf", "shelf")]);
    converge_to_mariadb(
        &source,
        &maria,
        &dst,
        vec![("meds", MEDS.to_vec()), ("orders", orders2.clone())],
        &running,
    )
    .await?;

    pg.execute(
        &src,
        "TRUNCATE orders; INSERT INTO orders (id, customer) VALUES (1, 'after truncate');",
    )
    .await?;
    converge_to_mariadb(
        &source,
        &maria,
        &dst,
        vec![("meds", MEDS.to_vec()), ("orders", orders2.clone())],
        &running,
    )
    .await?;
    running.stop().await?;

    // Restart: nothing applied twice, changes made while stopped arrive.
    pg.execute(
        &src,
        "INSERT INTO orders (id, customer) VALUES (2, 'while stopped')",
    )
    .await?;
    let running = start();
    pg.execute(&src, "UPDATE orders SET amount = 5 WHERE id = 1")
        .await?;
    converge_to_mariadb(
        &source,
        &maria,
        &dst,
        vec![("meds", MEDS.to_vec()), ("orders", orders2)],
        &running,
    )
    .await?;
    running.stop().await
}

/// Waits until every listed table has the same rows in the PostgreSQL source and the
/// MariaDB sink (columns rendered by `(PostgreSQL, MariaDB)` expression pairs).
async fn converge_to_mariadb(
    source: &tokio_postgres::Client,
    maria: &MariaDb,
    dst: &str,
    tables: Vec<(&'static str, Vec<(&'static str, &'static str)>)>,
    running: &Running,
) -> anyhow::Result<()> {
    converge_rows(tables.len(), running, |i| {
        let (table, columns) = (tables[i].0, &tables[i].1);
        async move {
            let exprs: Vec<String> = columns
                .iter()
                .map(|c| format!("coalesce(({})::text, 'NULL')", c.0))
                .collect();
            let mut want = String::new();
            let sql = format!(
                "SELECT concat_ws(E'\\t', {}) FROM {table}",
                exprs.join(", ")
            );
            for r in source.query(&sql, &[]).await? {
                want.push_str(&r.get::<_, String>(0));
                want.push('\n');
            }
            let exprs: Vec<&str> = columns.iter().map(|c| c.1).collect();
            let have = maria
                .query(dst, &format!("SELECT {} FROM {table}", exprs.join(", ")))
                .await
                .unwrap_or_default();
            Ok((table.to_string(), want, have))
        }
    })
    .await
}
