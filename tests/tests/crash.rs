//! kill -9 of the capture and of the pipeline processes at random moments under a steady
//! write load; after restarts the sink equals the source.

use anyhow::Context;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tributary_tests::table_digest;
use tributary_tests::{free_port, wait_until, Kafka, MariaDb, Postgres};

/// The `tributary` binary next to this test's target directory (built by scripts/test.sh).
fn tributary_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary location")?;
    let bin = dir.join("tributary");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: run `cargo build -p tributary` first (scripts/test.sh does)",
        bin.display()
    );
    Ok(bin)
}

fn spawn(role: &str, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let level = std::env::var("CRASH_TEST_LOG").unwrap_or_else(|_| "info".into());
    spawn_logging(role, config, log, &level)
}

fn spawn_logging(role: &str, config: &Path, log: &Path, level: &str) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(tributary_bin()?)
        .args(["--config", config.to_str().context("utf-8 path")?, role])
        // The capture and the pipeline each serve a control plane: on ports of their own.
        .args(["--api-listen", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()?)
}

async fn scenario(kafka: bool) -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let broker = if kafka {
        Some(Kafka::start().await?)
    } else {
        None
    };
    let src = pg.create_database("src").await?;
    let dst = pg.create_database("dst").await?;
    pg.execute(
        &src,
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, touched timestamptz);
         INSERT INTO accounts SELECT g, 0, now() FROM generate_series(1, 200) g;
         CREATE TABLE ledger (id bigserial PRIMARY KEY, account int, delta int, note text);",
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let mut processes = Processes::start(
        dir.path(),
        broker.as_ref(),
        &format!("kind = \"postgres\"\nurl = {:?}\n", pg.url(&src)),
        &format!("kind = \"postgres\"\nurl = {:?}\n", pg.url(&dst)),
    )?;

    // Steady writes: each transaction moves money and appends to the ledger.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let client = pg.client(&src).await?;
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                let (a, b, d) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(1..=200),
                        rng.random_range(1..=200),
                        rng.random_range(1..100),
                    )
                };
                client
                    .batch_execute(&format!(
                        "BEGIN; UPDATE accounts SET balance = balance - {d}, touched = now() WHERE id = {a};
                         UPDATE accounts SET balance = balance + {d}, touched = now() WHERE id = {b};
                         INSERT INTO ledger (account, delta, note) VALUES ({a}, -{d}, 'tx {n}'), ({b}, {d}, 'tx {n}'); COMMIT;"
                    ))
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        })
    };

    processes.crash_rounds().await?;
    writing.store(false, Ordering::Relaxed);
    let transactions = writer.await??;
    assert!(
        transactions > 50,
        "the load ran ({transactions} transactions)"
    );

    let source = pg.client(&src).await?;
    let sink = pg.client(&dst).await?;
    let outcome = wait_until(
        "sink equals source after the crashes",
        Duration::from_secs(240),
        || async {
            for t in ["accounts", "ledger"] {
                if table_digest(&sink, t).await.ok() != Some(table_digest(&source, t).await?) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await;
    processes.stop(outcome.is_err());
    if let (Err(_), Some(k)) = (&outcome, &broker) {
        dump_topic(&k.bootstrap(), "src.public.accounts").await?;
        dump_topic(&k.bootstrap(), "src.transactions").await?;
    }
    outcome?;
    let total: i64 = sink
        .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
        .await?
        .get(0);
    assert_eq!(total, 0, "money is conserved in the sink");
    Ok(())
}

/// Capture and pipeline as two `tributary` processes sharing one configuration file,
/// each logging to a file of its own.
/// Runs the statements `statement(n)` gives for n = 0, 1, … on MariaDB at `url` while
/// `writing` holds; ends with how many ran.
fn mariadb_writer(
    url: String,
    writing: Arc<AtomicBool>,
    statement: impl Fn(u64) -> String + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    use mysql_async::prelude::Queryable;
    tokio::spawn(async move {
        let mut conn = mysql_async::Conn::from_url(url).await?;
        let mut n = 0u64;
        while writing.load(Ordering::Relaxed) {
            conn.query_drop(statement(n)).await?;
            n += 1;
        }
        anyhow::Ok(n)
    })
}

struct Processes {
    config: PathBuf,
    capture_log: PathBuf,
    pipeline_log: PathBuf,
    capture: Child,
    pipeline: Child,
}

impl Processes {
    /// Writes `<dir>/tributary.toml` (source `src` and sink `dst` from the `source` and
    /// `sink` TOML lines, Kafka when `broker` is given, else the embedded log) and starts
    /// both.
    fn start(dir: &Path, broker: Option<&Kafka>, source: &str, sink: &str) -> anyhow::Result<Self> {
        let transport = match broker {
            Some(k) => format!(
                "[transport]\nkind = \"kafka\"\nbrokers = \"{}\"\n",
                k.bootstrap()
            ),
            None => "[transport]\nkind = \"embedded\"\n".into(),
        };
        let config = dir.join("tributary.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\n{transport}\n[sources.src]\n{source}\n[sinks.dst]\n{sink}",
                dir.join("state"),
            ),
        )?;
        let capture_log = dir.join("capture.log");
        let pipeline_log = dir.join("pipeline.log");
        Ok(Processes {
            capture: spawn("capture", &config, &capture_log)?,
            pipeline: spawn("pipeline", &config, &pipeline_log)?,
            config,
            capture_log,
            pipeline_log,
        })
    }

    /// Six rounds: wait a random moment, kill -9 the capture (even rounds) or the pipeline
    /// (odd rounds), and start it again.
    async fn crash_rounds(&mut self) -> anyhow::Result<()> {
        for round in 0..6 {
            let pause = Duration::from_millis(rand::rng().random_range(500..2500));
            tokio::time::sleep(pause).await;
            let (role, victim, log) = if round % 2 == 0 {
                ("capture", &mut self.capture, &self.capture_log)
            } else {
                ("pipeline", &mut self.pipeline, &self.pipeline_log)
            };
            victim.kill()?; // SIGKILL
            victim.wait()?;
            *victim = spawn(role, &self.config, log)?;
        }
        Ok(())
    }

    /// Kills both; prints their logs when the test `failed`.
    fn stop(mut self, failed: bool) {
        let _ = self.capture.kill();
        let _ = self.pipeline.kill();
        if failed {
            for (role, log) in [
                ("capture", &self.capture_log),
                ("pipeline", &self.pipeline_log),
            ] {
                eprintln!(
                    "{role} log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }
}

/// Prints offset and position of every record of a topic (diagnostics on failure).
async fn dump_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use tributary_transport::Consumer as _;
    let settings = tributary_transport::kafka::KafkaSettings::new(brokers);
    let consumer =
        tributary_transport::kafka::KafkaConsumer::connect(&settings, "crash-dump").await?;
    let mut reader = consumer.reader_from_start(topic).await?;
    let mut schemas =
        tributary_pipeline::registry::SchemaCache::open(&consumer, "src", "src").await?;
    while let Some(r) = reader.next(Some(Duration::from_secs(3))).await? {
        let position = if topic.ends_with(".transactions") {
            tributary_schemas::decode_tx_end(&r.value)
                .map(|e| format!("end {}..{}", e.first, e.last))
                .unwrap_or_else(|e| e.to_string())
        } else {
            let (id, datum) = tributary_schemas::unframe(&r.value)?;
            let s = schemas.get(id).await?;
            tributary_schemas::decode_value(&s, datum)
                .map(|e| e.position.to_string())
                .unwrap_or_else(|e| e.to_string())
        };
        eprintln!("DUMP {topic} {} {position}", r.offset);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_capture_and_pipeline_embedded() -> anyhow::Result<()> {
    scenario(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_capture_and_pipeline_kafka() -> anyhow::Result<()> {
    scenario(true).await
}

/// The same for a MariaDB source: transfers between accounts and ledger inserts, written
/// through mysql_async while capture and pipeline are killed; afterwards the sink
/// (PostgreSQL, or a second MariaDB when `maria_sink`) holds exactly the source's rows.
async fn scenario_mariadb(kafka: bool, maria_sink: bool) -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let pg = Postgres::start().await?;
    let maria_dst = if maria_sink {
        Some(MariaDb::start().await?)
    } else {
        None
    };
    let broker = if kafka {
        Some(Kafka::start().await?)
    } else {
        None
    };
    let src = maria.create_database("src").await?;
    let (dst, sink) = match &maria_dst {
        Some(m) => {
            let dst = m.create_database("dst").await?;
            let sink = format!("kind = \"mysql\"\nurl = {:?}\n", m.url(&dst));
            (dst, sink)
        }
        None => {
            let dst = pg.create_database("dst").await?;
            let sink = format!("kind = \"postgres\"\nurl = {:?}\n", pg.url(&dst));
            (dst, sink)
        }
    };
    maria
        .execute(
            &src,
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, touched datetime(6));
             INSERT INTO accounts SELECT seq, 0, now(6) FROM seq_1_to_200;
             CREATE TABLE ledger (id bigint AUTO_INCREMENT PRIMARY KEY, account int, delta int, note varchar(40));",
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let mut processes = Processes::start(
        dir.path(),
        broker.as_ref(),
        &format!(
            "kind = \"mysql\"\nurl = {:?}\ninclude = [\"{src}.*\"]\nheartbeat_secs = 1\n",
            maria.url(&src)
        ),
        &sink,
    )?;

    let writing = Arc::new(AtomicBool::new(true));
    let writer = mariadb_writer(maria.url(&src), writing.clone(), |n| {
        let (a, b, d) = {
            let mut rng = rand::rng();
            (
                rng.random_range(1..=200),
                rng.random_range(1..=200),
                rng.random_range(1..100),
            )
        };
        let changes = format!(
            "UPDATE accounts SET balance = balance - {d}, touched = now(6) WHERE id = {a};
             UPDATE accounts SET balance = balance + {d}, touched = now(6) WHERE id = {b};
             INSERT INTO ledger (account, delta, note) VALUES ({a}, -{d}, 'tx {n}'), ({b}, {d}, 'tx {n}');"
        );
        // Every fourth a two-phase XA transaction that commits, every fourth one that is
        // rolled back after its prepare (the kills land between the phases too).
        match n % 4 {
            1 => format!(
                "XA START 'x{n}'; {changes} XA END 'x{n}'; XA PREPARE 'x{n}'; XA COMMIT 'x{n}';"
            ),
            3 => format!(
                "XA START 'x{n}'; {changes} XA END 'x{n}'; XA PREPARE 'x{n}'; XA ROLLBACK 'x{n}';"
            ),
            _ => format!("BEGIN; {changes} COMMIT;"),
        }
    });
    processes.crash_rounds().await?;
    writing.store(false, Ordering::Relaxed);
    let transactions = writer.await??;
    assert!(
        transactions > 50,
        "the load ran ({transactions} transactions)"
    );

    let queries = [
        (
            "SELECT id, balance, touched FROM accounts ORDER BY id",
            format!("SELECT concat_ws(E'\\t', id, balance, to_char(touched, 'YYYY-MM-DD HH24:MI:SS.US')) FROM {src}.accounts ORDER BY id"),
        ),
        (
            "SELECT id, account, delta, note FROM ledger ORDER BY id",
            format!("SELECT concat_ws(E'\\t', id, account, delta, note) FROM {src}.ledger ORDER BY id"),
        ),
        (
            "SELECT sum(balance) FROM accounts",
            format!("SELECT sum(balance)::text FROM {src}.accounts"),
        ),
    ];
    let sink = pg.client(&dst).await;
    let sink_rows = |source_sql: &'static str, sink_sql: &str| {
        let (sink, maria_dst, dst) = (&sink, &maria_dst, &dst);
        let sink_sql = sink_sql.to_string();
        async move {
            if let Some(m) = maria_dst {
                // A MariaDB sink prints its rows like the source.
                return m.query(dst, source_sql).await;
            }
            let sink = sink.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            let rows = sink.query(sink_sql.as_str(), &[]).await?;
            Ok(rows
                .iter()
                .map(|r| format!("{}\n", r.get::<_, String>(0)))
                .collect::<String>())
        }
    };
    let outcome = wait_until(
        "sink equals source after the crashes",
        Duration::from_secs(240),
        || async {
            for (source_sql, sink_sql) in &queries {
                let want = maria.query(&src, source_sql).await?;
                let Ok(have) = sink_rows(source_sql, sink_sql).await else {
                    return Ok(false);
                };
                if want != have {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await;
    processes.stop(outcome.is_err());
    outcome?;
    // The last query is the sum, equal on both sides; it must be zero.
    let total = maria
        .query(&src, "SELECT sum(balance) FROM accounts")
        .await?;
    assert_eq!(total.trim(), "0", "money is conserved in the sink");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mariadb_capture_and_pipeline_embedded() -> anyhow::Result<()> {
    scenario_mariadb(false, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mariadb_capture_and_pipeline_kafka() -> anyhow::Result<()> {
    scenario_mariadb(true, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mariadb_to_mariadb_capture_and_pipeline_kafka() -> anyhow::Result<()> {
    scenario_mariadb(true, true).await
}

/// kill -9 of the capture twice while it copies a 300k-row table in chunks, under writes
/// that update, delete and insert rows all along: each restart resumes after the last
/// durable chunk (the log says so), and the sink ends equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mariadb_capture_mid_snapshot() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let pg = Postgres::start().await?;
    let src = maria.create_database("src").await?;
    let dst = pg.create_database("dst").await?;
    // A composite key with a text column: chunks continue after (store, item).
    maria
        .execute(
            &src,
            "CREATE TABLE stock (store varchar(8), item int, qty int NOT NULL, note varchar(40),
                                 PRIMARY KEY (store, item));
             INSERT INTO stock SELECT concat('s', seq % 3), seq, seq % 97, concat('n', seq) FROM seq_1_to_300000;",
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[transport]\nkind = \"embedded\"\n\
             [sources.src]\nkind = \"mysql\"\nurl = {:?}\ninclude = [\"{src}.*\"]\nsnapshot_chunk_rows = 1000\n\
             [sinks.dst]\nkind = \"postgres\"\nurl = {:?}\n",
            dir.path().join("state"),
            maria.url(&src),
            pg.url(&dst)
        ),
    )?;
    let capture_log = dir.path().join("capture.log");
    let pipeline_log = dir.path().join("pipeline.log");
    let level = "info,tributary_capture::mysql::snapshot=debug";
    let mut capture = spawn_logging("capture", &config, &capture_log, level)?;
    let mut pipeline = spawn("pipeline", &config, &pipeline_log)?;

    let writing = Arc::new(AtomicBool::new(true));
    let writer = mariadb_writer(maria.url(&src), writing.clone(), |n| {
        let (store, item) = {
            let mut rng = rand::rng();
            (rng.random_range(0..3), rng.random_range(1..=300_000))
        };
        format!(
            "BEGIN; UPDATE stock SET qty = qty + 1, note = 'w{n}' WHERE store = 's{store}' AND item = {item};
             DELETE FROM stock WHERE store = 's{}' AND item = {};
             INSERT INTO stock VALUES ('new', {n}, {n}, 'inserted'); COMMIT;",
            (store + 1) % 3,
            (item * 7) % 300_000 + 1,
        )
    });
    let chunks_in_log = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("snapshot chunk durable")
            .count()
    };
    let mut outcome = Ok(());
    for round in 1..=2 {
        // Kill once this run has made a chunk durable, so it is mid-copy.
        let before = chunks_in_log(&capture_log);
        outcome = wait_until(
            "the capture made a snapshot chunk durable",
            Duration::from_secs(60),
            || async { Ok(chunks_in_log(&capture_log) > before) },
        )
        .await;
        if outcome.is_err() {
            break;
        }
        capture.kill()?; // SIGKILL
        capture.wait()?;
        capture = spawn_logging("capture", &config, &capture_log, level)?;
        let resumed = || {
            std::fs::read_to_string(&capture_log)
                .unwrap_or_default()
                .matches("resuming the interrupted snapshot")
                .count()
        };
        outcome = wait_until(
            "the restarted capture resumes the snapshot",
            Duration::from_secs(60),
            || async { Ok(resumed() >= round) },
        )
        .await;
        if outcome.is_err() {
            break;
        }
    }
    writing.store(false, Ordering::Relaxed);
    let transactions = writer.await??;
    if outcome.is_ok() {
        let sink = pg.client(&dst).await?;
        let sink_sql = format!(
            "SELECT concat_ws(E'\\t', store, item, qty, note) FROM {src}.stock ORDER BY store COLLATE \"C\", item"
        );
        outcome = wait_until(
            "sink equals source after the restarts",
            Duration::from_secs(240),
            || async {
                let want = maria
                    .query(
                        &src,
                        "SELECT store, item, qty, note FROM stock ORDER BY store, item",
                    )
                    .await?;
                let Ok(rows) = sink.query(sink_sql.as_str(), &[]).await else {
                    return Ok(false);
                };
                let have: String = rows
                    .iter()
                    .map(|r| format!("{}\n", r.get::<_, String>(0)))
                    .collect();
                Ok(want == have)
            },
        )
        .await;
    }
    let _ = capture.kill();
    let _ = pipeline.kill();
    if outcome.is_err() {
        for log in [&capture_log, &pipeline_log] {
            eprintln!(
                "{}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
    outcome?;
    assert!(
        transactions > 20,
        "the load ran ({transactions} transactions)"
    );
    Ok(())
}
