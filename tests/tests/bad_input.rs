//! Bad input gets a clear error naming what is wrong, loses nothing, and does not spin.

use anyhow::Context;
use std::time::Duration;
use tokio::sync::watch;
use tributary::runtime::{self, Roles};
use tributary::Config;
use tributary_schemas::{encode_tx_end, Position, TopicCount, TxEnd};
use tributary_tests::table_digest;
use tributary_tests::{free_port, wait_until, MariaDb, Postgres};
use tributary_transport::kafka::{KafkaProducer, KafkaSettings};
use tributary_transport::log::EmbeddedProducer;
use tributary_transport::{Producer, Record};

fn config(state: &std::path::Path, source_url: &str, sink_url: &str) -> Config {
    let text = format!(
        "state_dir = {state:?}\n[sources.src]\nkind = \"postgres\"\nurl = {source_url:?}\n[sinks.dst]\nkind = \"postgres\"\nurl = {sink_url:?}\n"
    );
    Config::parse(&text, |_| None).expect("valid test configuration")
}

/// Runs capture and pipeline and returns the error they stop with (they must stop).
async fn run_to_error(config: Config) -> String {
    let (_stop, shutdown) = watch::channel(false);
    let stats = runtime::stats_for(&config);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        runtime::run(
            config,
            Roles {
                capture: true,
                pipeline: false,
                registry: false,
                api: false,
            },
            stats,
            shutdown,
        ),
    )
    .await
    .expect("a definite error stops the run instead of retrying forever");
    outcome.expect_err("the run fails").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_named() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("src").await?;
    let state = tempfile::tempdir()?;
    let url = pg.url(&db).replace("postgres:postgres@", "postgres:wrong@");
    let err = run_to_error(config(state.path(), &url, &pg.url(&db))).await;
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port())), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rights_and_missing_keys_are_named() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("src").await?;
    pg.execute(
        &db,
        "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (a int);
         CREATE ROLE clerk LOGIN PASSWORD 'clerk'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO clerk;",
    )
    .await?;
    let state = tempfile::tempdir()?;
    // A table without a primary key.
    let err = run_to_error(config(state.path(), &pg.url(&db), &pg.url(&db))).await;
    assert!(
        err.contains("public.loose") && err.contains("no primary key"),
        "{err}"
    );

    // A role without the REPLICATION attribute.
    pg.execute(&db, "DROP TABLE loose").await?;
    let clerk = pg.url(&db).replace("postgres:postgres@", "clerk:clerk@");
    let err = run_to_error(config(state.path(), &clerk, &pg.url(&db))).await;
    assert!(err.contains("ALTER ROLE clerk REPLICATION"), "{err}");

    // Replication allowed, but not creating the publication (tables owned by postgres).
    pg.execute(&db, "ALTER ROLE clerk REPLICATION").await?;
    let err = run_to_error(config(state.path(), &clerk, &pg.url(&db))).await;
    assert!(
        err.contains("publication") && err.contains("CREATE PUBLICATION"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_named() -> anyhow::Result<()> {
    let port = free_port();
    let mut settings = KafkaSettings::new(format!("127.0.0.1:{port}"));
    settings.connect_timeout_secs = 3;
    let started = std::time::Instant::now();
    let err = KafkaProducer::connect(&settings)
        .await
        .err()
        .expect("no broker there")
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot reach"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_goes_to_dead_letters_and_the_rest_applies() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let src = pg.create_database("src").await?;
    let dst = pg.create_database("dst").await?;
    pg.execute(
        &src,
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one');",
    )
    .await?;
    let state = tempfile::tempdir()?;
    let cfg = config(state.path(), &pg.url(&src), &pg.url(&dst));
    let log_dir = cfg.log_dir();

    // Capture first, alone, so the snapshot is in the log.
    let (stop, shutdown) = watch::channel(false);
    let capture = tokio::spawn(runtime::run(
        cfg.clone(),
        Roles {
            capture: true,
            pipeline: false,
            registry: false,
            api: false,
        },
        runtime::stats_for(&cfg),
        shutdown,
    ));
    let tx_log = log_dir.join("src.transactions.log");
    wait_until("snapshot in the log", Duration::from_secs(60), || async {
        Ok(tx_log.exists())
    })
    .await?;
    let _ = stop.send(true);
    capture.await??;

    // A foreign writer appends a garbage message, announced by a transaction marker far
    // beyond anything the capture will write.
    {
        // The capture's writer lets the lock go once its queue is written.
        let producer = EmbeddedProducer::open_when_free(&log_dir, Duration::from_secs(10)).await?;
        let far = Position::pg(u64::MAX / 2, 1);
        producer
            .send(Record {
                topic: "src.public.items".into(),
                key: None,
                value: b"\x00\x00\x00\x00\x01garbage".to_vec(),
            })
            .await?
            .await?;
        let end = TxEnd {
            source: "src".into(),
            id: None,
            commit_ts_micros: 0,
            first: far,
            last: far,
            topics: vec![TopicCount {
                topic: "src.public.items".into(),
                count: 1,
            }],
        };
        producer
            .send(Record {
                topic: "src.transactions".into(),
                key: None,
                value: encode_tx_end(&end)?,
            })
            .await?
            .await?;
    }
    let (_stop, shutdown) = watch::channel(false);
    let run = tokio::spawn(runtime::run(
        cfg.clone(),
        Roles {
            capture: false,
            pipeline: true,
            registry: false,
            api: false,
        },
        runtime::stats_for(&cfg),
        shutdown,
    ));
    let dead = state
        .path()
        .join("dead-letters")
        .join("dst-src.dead-letters.jsonl");
    wait_until("dead letter recorded", Duration::from_secs(60), || async {
        Ok(std::fs::read_to_string(&dead)
            .map(|s| s.contains("src.public.items"))
            .unwrap_or(false))
    })
    .await?;
    let text = std::fs::read_to_string(&dead)?;
    assert!(
        text.contains("schema id 1") || text.contains("avro"),
        "reason recorded: {text}"
    );
    let sink = pg.client(&dst).await?;
    let source = pg.client(&src).await?;
    wait_until("the good row applied", Duration::from_secs(60), || async {
        Ok(table_digest(&sink, "items").await.ok() == Some(table_digest(&source, "items").await?))
    })
    .await?;
    assert!(
        !run.is_finished(),
        "the pipeline keeps running after a bad message"
    );
    run.abort();
    Ok(())
}

fn mysql_config(state: &std::path::Path, source_url: &str, sink_url: &str) -> Config {
    let text = format!(
        "state_dir = {state:?}\n[sources.src]\nkind = \"mysql\"\nurl = {source_url:?}\n[sinks.dst]\nkind = \"postgres\"\nurl = {sink_url:?}\n"
    );
    Config::parse(&text, |_| None).expect("valid test configuration")
}

/// Runs the capture of `config` until its initial snapshot is in the log, then stops it
/// cleanly. The snapshot's marker is in the log once the snapshot's rows are durable, so
/// the stop leaves the checkpoint at the snapshot's binlog position.
async fn snapshot_then_stop(config: &Config) -> anyhow::Result<()> {
    let (stop, shutdown) = watch::channel(false);
    let running = tokio::spawn(runtime::run(
        config.clone(),
        Roles {
            capture: true,
            pipeline: false,
            registry: false,
            api: false,
        },
        runtime::stats_for(config),
        shutdown,
    ));
    let marker_log = config.log_dir().join("src.transactions.log");
    wait_until(
        "the snapshot is in the log",
        Duration::from_secs(60),
        || async { Ok(marker_log.exists()) },
    )
    .await?;
    let _ = stop.send(true);
    running.await??;
    Ok(())
}

/// MariaDB: wrong password, a table without a key, missing rights, a binlog that is not
/// ROW, and a checkpoint whose binlog was purged, each named with what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_bad_setups_are_named() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let maria = MariaDb::start().await?;
    let pg = Postgres::start().await?;
    let dst = pg.create_database("dst").await?;
    let db = maria.create_database("shop").await?;
    maria
        .execute(
            &db,
            "CREATE TABLE keyed (id int PRIMARY KEY); INSERT INTO keyed VALUES (1); CREATE TABLE loose (a int);",
        )
        .await?;
    let state = tempfile::tempdir()?;
    let sink = pg.url(&dst);

    let wrong = maria.url(&db).replace("root:root@", "root:wrong@");
    let err = run_to_error(mysql_config(state.path(), &wrong, &sink)).await;
    assert!(
        err.contains("Access denied") && err.contains("password"),
        "{err}"
    );

    let err = run_to_error(mysql_config(state.path(), &maria.url(&db), &sink)).await;
    assert!(
        err.contains(&format!("{db}.loose")) && err.contains("no primary key"),
        "{err}"
    );
    maria.execute(&db, "DROP TABLE loose").await?;

    maria
        .execute(
            &db,
            "CREATE USER clerk IDENTIFIED BY 'clerk'; GRANT SELECT ON *.* TO clerk;",
        )
        .await?;
    let clerk = maria.url(&db).replace("root:root@", "clerk:clerk@");
    let err = run_to_error(mysql_config(state.path(), &clerk, &sink)).await;
    assert!(err.contains("REPLICATION"), "{err}");

    // A server setting the capture refuses, set and then put back.
    let config = mysql_config(state.path(), &maria.url(&db), &sink);
    maria
        .execute("", "SET GLOBAL binlog_format = 'STATEMENT'")
        .await?;
    let err = run_to_error(config.clone()).await;
    assert!(
        err.contains("binlog_format is STATEMENT") && err.contains("ROW"),
        "{err}"
    );
    maria
        .execute("", "SET GLOBAL binlog_format = 'ROW'")
        .await?;

    // A finished snapshot, then changes while the capture is away.
    snapshot_then_stop(&config).await?;

    // A table created, filled and dropped while the capture was away: its rows cannot be
    // decoded any more, which stops the capture with a message instead of skipping them.
    maria
        .execute(
            &db,
            "CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone VALUES (1); DROP TABLE gone;",
        )
        .await?;
    let err = run_to_error(config.clone()).await;
    assert!(
        err.contains(&format!("{db}.gone")) && err.contains("exclude"),
        "{err}"
    );

    // The server skips a binlog that a dump thread still reads, and the stopped capture's
    // dump thread lingers until it next writes to its closed socket: end it, purge again,
    // until none of the binlogs that existed at the stop is left.
    let before = maria.query("", "SHOW BINARY LOGS").await?;
    let old: Vec<String> = before
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect();
    assert!(!old.is_empty(), "binlogs listed: {before:?}");
    maria.execute("", "FLUSH BINARY LOGS").await?;
    wait_until(
        "the binlogs of the checkpoint are purged",
        Duration::from_secs(60),
        || async {
            let dumps = maria
                .query(
                    "",
                    "SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%'",
                )
                .await?;
            for id in dumps.lines().filter(|l| !l.trim().is_empty()) {
                // The thread may end by itself meanwhile.
                let _ = maria.execute("", &format!("KILL {}", id.trim())).await;
            }
            maria
                .execute("", "PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY")
                .await?;
            let now = maria.query("", "SHOW BINARY LOGS").await?;
            Ok(!now
                .lines()
                .filter_map(|l| l.split('\t').next())
                .any(|f| old.iter().any(|o| o == f)))
        },
    )
    .await?;
    let err = run_to_error(config).await;
    assert!(err.contains("1236") && err.contains("purged"), "{err}");
    Ok(())
}

/// A MariaDB source capturing database `db` (table `t`, one row) but not `other` (table
/// `u`), its initial snapshot taken and the capture stopped; the sink is never reached.
struct ShopAndOther {
    maria: MariaDb,
    db: String,
    other: String,
    state: tempfile::TempDir,
    config: Config,
}

impl ShopAndOther {
    async fn snapshotted() -> anyhow::Result<Self> {
        tributary_tests::init_tracing();
        let maria = MariaDb::start().await?;
        let db = maria.create_database("shop").await?;
        let other = maria.create_database("other").await?;
        maria
            .execute(
                &db,
                "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (0)",
            )
            .await?;
        maria
            .execute(&other, "CREATE TABLE u (id int PRIMARY KEY)")
            .await?;
        let state = tempfile::tempdir()?;
        let text = format!(
            "state_dir = {:?}\n[sources.src]\nkind = \"mysql\"\nurl = {:?}\ninclude = [\"{db}.*\"]\n\
             [sinks.dst]\nkind = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1/none\"\n",
            state.path(),
            maria.url(&db)
        );
        let config = Config::parse(&text, |_| None).map_err(anyhow::Error::msg)?;
        snapshot_then_stop(&config).await?;
        Ok(ShopAndOther {
            maria,
            db,
            other,
            state,
            config,
        })
    }
}

/// `file:end_pos` (as capture errors name positions) of the `nth` event (from 0) whose
/// `SHOW BINLOG EVENTS` line contains `needle`.
async fn binlog_event_end(maria: &MariaDb, needle: &str, nth: usize) -> anyhow::Result<String> {
    let (file, pos) = maria.binlog_event_end(needle, nth).await?;
    Ok(format!("{file}:{pos}"))
}

/// An XA COMMIT whose XA PREPARE the capture never read (here the checkpoint is moved
/// past the prepare) stops the stream, naming the transaction and the position: its rows
/// are nowhere the capture could take them from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_xa_commit_without_its_prepare_is_named() -> anyhow::Result<()> {
    let ShopAndOther {
        maria,
        db,
        state: _state,
        config,
        ..
    } = ShopAndOther::snapshotted().await?;
    maria
        .execute(
            &db,
            "XA START 'late'; INSERT INTO t VALUES (2); XA END 'late'; XA PREPARE 'late';",
        )
        .await?;
    let (file, pos) = maria.binlog_event_end("XA PREPARE X'6c617465'", 0).await?;
    let store = tributary_capture::state::StateStore::open(&config.state_dir.join("capture"))?;
    let mut checkpoint = store.binlog_checkpoint("src")?.context("a checkpoint")?;
    (checkpoint.file, checkpoint.pos) = (file, pos);
    store.set_binlog_checkpoint("src", &checkpoint)?;
    drop(store);
    maria.execute(&db, "XA COMMIT 'late'").await?;
    let at = binlog_event_end(&maria, "XA COMMIT X'6c617465'", 0).await?;
    let err = run_to_error(config).await;
    assert!(
        err.contains(&format!(
            "XA COMMIT of X'6c617465',X'',1 at {at}: this capture never read"
        )) && err.contains("take a new snapshot"),
        "{err}"
    );
    Ok(())
}

/// A `LOAD DATA` that a session logged as a statement (its rows are not in the binlog)
/// passes when its table is not captured, and stops the capture naming the event and the
/// setting when it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_statement_logged_load_data_is_named() -> anyhow::Result<()> {
    let ShopAndOther {
        maria,
        db,
        other,
        state,
        config,
    } = ShopAndOther::snapshotted().await?;
    let csv = state.path().join("rows.csv");
    std::fs::write(&csv, "1\n2\n3\n")?;
    let csv = format!("{:?}", csv.display().to_string());
    maria
        .execute(
            &other,
            &format!(
                "SET SESSION binlog_format = 'STATEMENT';
                 LOAD DATA INFILE {csv} INTO TABLE u;
                 LOAD DATA INFILE {csv} INTO TABLE {db}.t;"
            ),
        )
        .await?;
    let at = binlog_event_end(&maria, "Execute_load_query", 1).await?;
    let err = run_to_error(config).await;
    assert!(
        err.contains(&format!("binlog event at {at}: a LOAD DATA statement"))
            && err.contains("binlog_format = ROW"),
        "{err}"
    );
    Ok(())
}

/// A change a session logged as a statement (it overrode the ROW format) passes when it
/// touches only tables the source does not capture, and stops the capture, naming the
/// statement and the setting, when it may touch a captured one: its rows are not in the
/// binlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_statement_logged_changes_of_captured_tables_are_named() -> anyhow::Result<()> {
    let ShopAndOther {
        maria,
        db,
        other,
        state: _state,
        config,
    } = ShopAndOther::snapshotted().await?;
    maria
        .execute(
            &db,
            &format!(
                "SET SESSION binlog_format = 'STATEMENT';
                 INSERT INTO {other}.u VALUES (1);
                 INSERT INTO t VALUES (7);"
            ),
        )
        .await?;
    let at = binlog_event_end(&maria, "INSERT INTO t VALUES (7)", 0).await?;
    let err = run_to_error(config).await;
    assert!(
        err.contains(&format!("a statement-logged INSERT at {at} "))
            && err.contains("INSERT INTO t VALUES (7)")
            && err.contains("binlog_format"),
        "{err}"
    );
    Ok(())
}
