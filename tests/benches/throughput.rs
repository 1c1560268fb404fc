//! Throughput benchmark (not a test): prints rows/s of Tributary next to the reference
//! tools measured in the same run on the same data.
//!
//! 1. Capture: 1M pgbench-style row updates are written while capture is stopped; then
//!    Tributary's capture (pgoutput decode, Avro encode, publish to tansu, acknowledged)
//!    catches up from its slot, and `pg_recvlogical` reads a second slot over the same WAL
//!    to /dev/null. Both are timed until they reach the same end LSN.
//! 2. Apply: 1M upserts through the PostgreSQL sink versus a server-side
//!    `INSERT … ON CONFLICT` from a staging table holding the same rows.
//!
//! 3. MariaDB snapshot: 1M rows copied in primary-key chunks into tansu, next to
//!    `mariadb-dump --single-transaction` of the same table to /dev/null. Then MariaDB
//!    capture: 1M row updates in the binlog while capture is stopped; Tributary's MySQL capture (binlog decode, typed values, Avro encode, publish to tansu,
//!    acknowledged) catches up from its checkpoint, and `mariadb-binlog
//!    --read-from-remote-server` reads the same binlog range to /dev/null, once as is
//!    (row events printed as base64) and once with `--verbose` (row events decoded).
//!
//! 4. MySQL apply: 1M upserts through the MySQL sink into MariaDB versus a server-side
//!    `INSERT … ON DUPLICATE KEY UPDATE` from a staging table holding the same rows.
//!
//! 5. Merged apply: the same upserts into a table under conflict resolution (`abalance` a
//!    counter, the other columns last-writer-wins): lock the rows' merge states, fold,
//!    write the merged rows, store the states, in the sink transaction; next to the plain
//!    apply of the same events in the same run.
//!
//! 6. Backup: a snapshot of a pgbench-style table (ROWS rows) into a local store, next to
//!    `pg_dump -Fc` of the same database (MB/s of the table's size; three turns each, the
//!    ratio of the medians; BACKUP_TOML adds `[backup]` settings); the snapshot restored
//!    into a fresh database, and `pg_restore` of the dump into another; and the replay of
//!    ROWS archived insert events into a fresh database (events/s).
//!
//! Run with `cargo bench -p tributary-tests --bench throughput` (ROWS=... to change the size,
//! BENCH=capture, BENCH=apply, BENCH=mariadb, BENCH=mysql-apply, BENCH=merge or BENCH=backup for one part,
//! KAFKA_COMPRESSION=zstd (or none, snappy) for another codec than the default lz4).

use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tributary_capture::postgres::{PostgresCapture, PostgresSourceConfig};
use tributary_capture::publisher::Publisher;
use tributary_capture::state::StateStore;
use tributary_pipeline::conflict::{self, ConflictConfig, Conflicts, Mode};
use tributary_pipeline::merge::{DeletePolicy, Strategy, TablePolicy};
use tributary_schemas::{
    ChangeEvent, Column, ColumnType, Op, Position, Row, TableId, TableSchema, TxMeta, Value,
};
use tributary_sinks::postgres::{PostgresSink, PostgresSinkConfig};
use tributary_sinks::{MySqlSink, MySqlSinkConfig, Sink};
use tributary_tests::{Kafka, MariaDb, Postgres};
use tributary_transport::kafka::{KafkaProducer, KafkaSettings};

/// The allocator the `tributary` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The producer settings for `kafka`, with `KAFKA_COMPRESSION` as the codec when set.
fn kafka_settings(kafka: &Kafka) -> KafkaSettings {
    let mut settings = KafkaSettings::new(kafka.bootstrap());
    if let Ok(codec) = std::env::var("KAFKA_COMPRESSION") {
        println!("kafka compression: {codec}");
        settings.properties.insert("compression.type".into(), codec);
    }
    settings
}

/// How often a timed wait checks its state: the finer, the less the wait adds to the time.
const FINE: Duration = Duration::from_millis(2);

async fn current_lsn(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0))
}

fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').expect("lsn");
    (u64::from_str_radix(hi, 16).expect("hex") << 32) | u64::from_str_radix(lo, 16).expect("hex")
}

async fn capture_bench(rows: i64) -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let kafka = Kafka::start().await?;
    let db = pg.create_database("bench").await?;
    pg.execute(
        &db,
        &format!(
            "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
             INSERT INTO pgbench_accounts SELECT g, g / 100000, 0, '' FROM generate_series(1, {rows}) g;"
        ),
    )
    .await?;
    let client = pg.client(&db).await?;
    let state = tempfile::tempdir()?;
    let store = StateStore::open(&state.path().join("capture"))?;
    let mut source = PostgresSourceConfig::new(pg.url(&db));
    source.heartbeat_secs = 0;
    let producer: Arc<dyn tributary_transport::Producer> =
        Arc::new(KafkaProducer::connect(&kafka_settings(&kafka)).await?);

    // Initial snapshot, then stop.
    let run_capture = |store: StateStore,
                       producer: Arc<dyn tributary_transport::Producer>,
                       source: PostgresSourceConfig| {
        let publisher = Publisher::new(producer, "bench", "bench");
        let acked = publisher.acked();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            PostgresCapture::new("bench", source, store, publisher)
                .run(shutdown)
                .await
        });
        (stop, acked, task)
    };
    let started = Instant::now();
    let (stop, _acked, task) = run_capture(store.clone(), producer.clone(), source.clone());
    tributary_tests::wait_until_every(
        "snapshot finished",
        Duration::from_secs(1800),
        FINE,
        || async {
            Ok(matches!(
                store.snapshot("bench")?,
                Some(tributary_capture::state::SnapshotState::Done { .. })
            ))
        },
    )
    .await?;
    let snapshot_secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await??;

    // The reference reads the same WAL from a slot of its own.
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('bench_recvlogical', 'pgoutput')",
            &[],
        )
        .await?;
    for chunk in 0..10 {
        let (lo, hi) = (chunk * rows / 10 + 1, (chunk + 1) * rows / 10);
        client
            .batch_execute(&format!("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN {lo} AND {hi}"))
            .await?;
    }
    // Everything up to `end` is the workload; one more tiny transaction commits after it
    // so the capture has a commit at or beyond `end` to acknowledge.
    let end = current_lsn(&client).await?;
    let end_lsn = parse_lsn(&end);
    client
        .batch_execute("UPDATE pgbench_accounts SET abalance = abalance WHERE aid = 1")
        .await?;

    let started = Instant::now();
    let (stop, acked, task) = run_capture(store, producer, source);
    let mut a = acked.clone();
    a.wait_for(|a| a.token.is_some_and(|t| t >= end_lsn))
        .await?;
    let ours = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await??;

    let reference = time_tool(
        tokio::process::Command::new(pg.bin_dir().join("pg_recvlogical")).args([
            "-d",
            &pg.url(&db),
            "--slot",
            "bench_recvlogical",
            "--start",
            "--endpos",
            &end,
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=tributary_bench",
            "-f",
            "/dev/null",
            "--no-loop",
        ]),
        "pg_recvlogical",
    )
    .await?;
    println!(
        "snapshot: {rows} rows in {snapshot_secs:.2}s = {:.0} rows/s (Kafka acknowledged)",
        rows as f64 / snapshot_secs
    );
    println!(
        "capture: {rows} updated rows in {ours:.2}s = {:.0} rows/s | pg_recvlogical {reference:.2}s = {:.0} rows/s | ratio {:.2}",
        rows as f64 / ours,
        rows as f64 / reference,
        reference / ours
    );
    Ok(())
}

/// Runs a reference tool with its output discarded; the seconds it took.
async fn time_tool(command: &mut tokio::process::Command, name: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = command
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {name}"))?;
    anyhow::ensure!(status.success(), "{name} failed");
    Ok(started.elapsed().as_secs_f64())
}

async fn mariadb_capture_bench(rows: i64) -> anyhow::Result<()> {
    use tributary_capture::mysql::{MySqlCapture, MySqlSourceConfig};
    let maria = MariaDb::start().await?;
    let kafka = Kafka::start().await?;
    let db = maria.create_database("bench").await?;
    maria
        .execute(
            &db,
            &format!(
                "CREATE TABLE accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
                 INSERT INTO accounts SELECT seq, seq DIV 100000, 0, '' FROM seq_1_to_{rows};"
            ),
        )
        .await?;
    let state = tempfile::tempdir()?;
    let store = StateStore::open(&state.path().join("capture"))?;
    let mut source = MySqlSourceConfig::new(maria.url(&db));
    source.include = vec![format!("{db}.*")];
    let producer: Arc<dyn tributary_transport::Producer> =
        Arc::new(KafkaProducer::connect(&kafka_settings(&kafka)).await?);
    let run_capture_to = |producer: Arc<dyn tributary_transport::Producer>,
                          store: StateStore,
                          source: MySqlSourceConfig| {
        let publisher = Publisher::new(producer, "mbench", "mbench");
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            MySqlCapture::new("mbench", source, store, publisher)
                .run(shutdown)
                .await
        });
        (stop, task)
    };
    let run_capture = |store: StateStore, source: MySqlSourceConfig| {
        run_capture_to(producer.clone(), store, source)
    };
    // Initial snapshot (primary-key chunks into tansu), then stop; next to mariadb-dump of
    // the same table.
    let started = Instant::now();
    let (stop, task) = run_capture(store.clone(), source.clone());
    tributary_tests::wait_until_every(
        "snapshot finished",
        Duration::from_secs(1800),
        FINE,
        || async { Ok(store.binlog_checkpoint("mbench")?.is_some()) },
    )
    .await?;
    let snapshot = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await??;
    let dump = time_tool(
        tokio::process::Command::new("mariadb-dump").args([
            "--host=127.0.0.1",
            &format!("--port={}", maria.port()),
            "--user=root",
            "--password=root",
            "--single-transaction",
            &db,
            "accounts",
        ]),
        "mariadb-dump",
    )
    .await?;
    println!(
        "mariadb snapshot: {rows} rows in {snapshot:.2}s = {:.0} rows/s | mariadb-dump --single-transaction {dump:.2}s = {:.0} rows/s (ratio {:.2})",
        rows as f64 / snapshot,
        rows as f64 / dump,
        dump / snapshot
    );

    let (file, start) = maria.binlog_end().await?;
    let before = store
        .binlog_checkpoint("mbench")?
        .context("checkpoint after the snapshot")?;
    for chunk in 0..10 {
        let (lo, hi) = (chunk * rows / 10 + 1, (chunk + 1) * rows / 10);
        maria
            .execute(
                &db,
                &format!(
                    "UPDATE accounts SET abalance = abalance + 1 WHERE aid BETWEEN {lo} AND {hi}"
                ),
            )
            .await?;
    }
    let (end_file, end) = maria.binlog_end().await?;
    anyhow::ensure!(end_file == file, "the binlog rotated during the benchmark");

    // Seconds a capture into `producer` takes from the stored checkpoint to the binlog end.
    let catch_up = async |producer: Arc<dyn tributary_transport::Producer>,
                          what: &str|
           -> anyhow::Result<f64> {
        let started = Instant::now();
        let (stop, task) = run_capture_to(producer, store.clone(), source.clone());
        tributary_tests::wait_until_every(what, Duration::from_secs(1800), FINE, || async {
            Ok(store
                .binlog_checkpoint("mbench")?
                .is_some_and(|cp| cp.file == file && cp.pos >= end))
        })
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        let _ = stop.send(true);
        task.await??;
        Ok(seconds)
    };
    let ours = catch_up(producer.clone(), "capture caught up").await?;

    // The same catch-up into the embedded log: separates decoding and encoding from Kafka.
    store.set_binlog_checkpoint("mbench", &before)?;
    let log = tempfile::tempdir()?;
    let embedded: Arc<dyn tributary_transport::Producer> = Arc::new(
        tributary_transport::log::EmbeddedProducer::open(log.path())?,
    );
    let ours_embedded = catch_up(embedded, "embedded capture caught up").await?;
    println!(
        "mariadb capture into the embedded log: {rows} rows in {ours_embedded:.2}s = {:.0} rows/s",
        rows as f64 / ours_embedded
    );

    let mut reference = Vec::new();
    for verbose in [false, true] {
        let mut command = tokio::process::Command::new("mariadb-binlog");
        command.args([
            "--read-from-remote-server",
            "--host=127.0.0.1",
            &format!("--port={}", maria.port()),
            "--user=root",
            "--password=root",
            &format!("--start-position={start}"),
            &format!("--stop-position={end}"),
            &file,
        ]);
        if verbose {
            command.arg("--verbose");
        }
        reference.push(time_tool(&mut command, "mariadb-binlog").await?);
    }
    println!(
        "mariadb capture: {rows} updated rows in {ours:.2}s = {:.0} rows/s | mariadb-binlog {:.2}s = {:.0} rows/s (ratio {:.2}) | mariadb-binlog --verbose {:.2}s = {:.0} rows/s (ratio {:.2})",
        rows as f64 / ours,
        reference[0],
        rows as f64 / reference[0],
        reference[0] / ours,
        reference[1],
        rows as f64 / reference[1],
        reference[1] / ours,
    );
    Ok(())
}

async fn apply_bench(rows: i64) -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.create_database("apply").await?;
    let client = pg.client(&db).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE staging (aid int, bid int, abalance int, filler char(84));
             INSERT INTO staging SELECT g, g / 100000, 1, '' FROM generate_series(1, {rows}) g;
             CREATE TABLE public.reference (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
             INSERT INTO public.reference SELECT aid, bid, 0, filler FROM staging;"
        ))
        .await?;
    // VACUUM cannot share the implicit transaction of a multi-statement batch.
    client.batch_execute("VACUUM ANALYZE staging").await?;
    client.batch_execute("VACUUM ANALYZE reference").await?;
    let started = Instant::now();
    client
        .batch_execute(
            "INSERT INTO reference SELECT * FROM staging ON CONFLICT (aid) DO UPDATE SET bid = EXCLUDED.bid, abalance = EXCLUDED.abalance, filler = EXCLUDED.filler",
        )
        .await?;
    let reference = started.elapsed().as_secs_f64();

    let mut sink = PostgresSink::connect(PostgresSinkConfig {
        url: pg.url(&db),
        target_schema: None,
        batch_rows: 5000,
    })
    .await?;
    let ours = upsert_through(&mut sink, rows, None).await?;
    println!(
        "apply: {rows} upserts in {ours:.2}s = {:.0} rows/s | server-side INSERT … ON CONFLICT from staging {reference:.2}s = {:.0} rows/s | ratio {:.2}",
        rows as f64 / ours,
        rows as f64 / reference,
        reference / ours
    );
    let check: i64 = client
        .query_one(
            "SELECT count(*) FROM bench.accounts WHERE abalance = 1",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(check == rows, "all rows upserted ({check})");
    Ok(())
}

/// `bench.accounts`, pgbench's accounts table as a source schema.
fn accounts_schema() -> TableSchema {
    let column = |name: &str, ty: ColumnType, source_type: &str, nullable: bool| Column {
        name: name.into(),
        ty,
        source_type: source_type.into(),
        nullable,
        missing: None,
    };
    TableSchema {
        table: TableId::new("bench", "accounts"),
        columns: vec![
            column("aid", ColumnType::Int32, "integer", false),
            column("bid", ColumnType::Int32, "integer", true),
            column("abalance", ColumnType::Int32, "integer", true),
            column("filler", ColumnType::Text, "character(84)", true),
        ],
        primary_key: vec![0],
        version: 1,
    }
}

/// Inserts `rows` accounts through `sink` (not timed), then upserts all of them with a
/// new balance in transactions of 100k rows; returns the seconds the upserts took. With
/// `merge`, every batch goes through the merge under that policy, as the apply loop does
/// for a table under `[[conflicts]]`.
async fn upsert_through(
    sink: &mut dyn Sink,
    rows: i64,
    merge: Option<&TablePolicy>,
) -> anyhow::Result<f64> {
    let schema = accounts_schema();
    let event = |aid: i64, balance: i32, op: Op| account_event(&schema, aid, balance, op);
    let mut seconds = 0.0;
    for (balance, op) in [(0, Op::Insert), (1, Op::Update)] {
        let started = Instant::now();
        let mut aid = 1;
        while aid <= rows {
            sink.begin().await?;
            let mut in_tx = 0;
            while in_tx < 100_000 && aid <= rows {
                let batch: Vec<ChangeEvent> = (aid..(aid + 5000).min(rows + 1))
                    .map(|a| event(a, balance, op))
                    .collect();
                aid += batch.len() as i64;
                in_tx += batch.len();
                let Some(policy) = merge else {
                    sink.apply(&schema, &batch).await?;
                    continue;
                };
                let keys = conflict::keys(&schema, &batch);
                let stored = sink
                    .merge_states()
                    .context("the sink keeps merge states")?
                    .lock_merge_states(&schema, &keys)
                    .await?;
                let merged = conflict::merge(&schema, policy, &batch, Mode::Apply, &keys, stored)?;
                sink.apply(&schema, &merged.writes).await?;
                sink.merge_states()
                    .context("the sink keeps merge states")?
                    .store_merge_states(&schema, &merged.states)
                    .await?;
            }
            sink.commit("bench", Position::pg(1 + balance as u64, aid as u64))
                .await?;
        }
        seconds = started.elapsed().as_secs_f64();
    }
    Ok(seconds)
}

/// Account `aid` of `schema` with `balance`, inserted or (from balance 0) updated.
fn account_event(schema: &TableSchema, aid: i64, balance: i32, op: Op) -> ChangeEvent {
    let p = Position::pg(1 + (balance as u64), aid as u64);
    let row = |balance: i32| {
        Row(vec![
            Value::Int32(aid as i32),
            Value::Int32((aid / 100000) as i32),
            Value::Int32(balance),
            Value::Text(" ".repeat(84)),
        ])
    };
    ChangeEvent {
        source: "bench".into(),
        table: schema.table.clone(),
        schema_version: 1,
        op,
        key: vec![Value::Int32(aid as i32)],
        before: (op == Op::Update).then(|| row(0)),
        after: Some(row(balance)),
        position: p,
        tx: TxMeta {
            id: None,
            commit_ts_micros: 1 + i64::from(balance),
            first: p,
        },
        origin: None,
    }
}

/// The merged apply (see the module documentation, part 5) next to the plain one.
async fn merge_apply_bench(rows: i64) -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let config = |db: &str| PostgresSinkConfig {
        url: pg.url(db),
        target_schema: None,
        batch_rows: 5000,
    };
    let plain_db = pg.create_database("plain").await?;
    let conflicts = Conflicts::new(
        &[ConflictConfig {
            table: "bench.accounts".into(),
            columns: [("abalance".to_string(), Strategy::Counter)].into(),
            delete: DeletePolicy::UpdateWins,
            priority_source: None,
        }],
        &["bench"],
    )
    .map_err(anyhow::Error::msg)?;
    let policy = conflicts
        .policy(&accounts_schema())?
        .context("the table merges")?;
    let plain = upsert_through(
        &mut PostgresSink::connect(config(&plain_db)).await?,
        rows,
        None,
    )
    .await?;
    let merged_db = pg.create_database("merged").await?;
    let merged = upsert_through(
        &mut PostgresSink::connect(config(&merged_db)).await?,
        rows,
        Some(&policy),
    )
    .await?;
    println!(
        "merged apply: {rows} updates in {merged:.2}s = {:.0} rows/s | plain apply of the same events {plain:.2}s = {:.0} rows/s | ratio {:.2}",
        rows as f64 / merged,
        rows as f64 / plain,
        plain / merged
    );
    let check: i64 = pg
        .client(&merged_db)
        .await?
        .query_one(
            "SELECT count(*) FROM bench.accounts WHERE abalance = 1",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        check == rows,
        "every merged row counted its update ({check})"
    );
    Ok(())
}

/// Apply into MariaDB through the MySQL sink versus a server-side `INSERT … ON DUPLICATE
/// KEY UPDATE` from a staging table holding the same rows.
async fn mysql_apply_bench(rows: i64) -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    let db = maria.create_database("apply").await?;
    maria
        .execute(
            &db,
            &format!(
                "CREATE TABLE staging (aid int, bid int, abalance int, filler char(84)) ENGINE=InnoDB;
                 INSERT INTO staging SELECT seq, seq DIV 100000, 1, '' FROM seq_1_to_{rows};
                 CREATE TABLE reference (aid int PRIMARY KEY, bid int, abalance int, filler char(84)) ENGINE=InnoDB;
                 INSERT INTO reference SELECT aid, bid, 0, filler FROM staging;
                 ANALYZE TABLE staging, reference;"
            ),
        )
        .await?;
    let started = Instant::now();
    maria
        .execute(
            &db,
            "INSERT INTO reference SELECT * FROM staging ON DUPLICATE KEY UPDATE bid = VALUES(bid), abalance = VALUES(abalance), filler = VALUES(filler)",
        )
        .await?;
    let reference = started.elapsed().as_secs_f64();
    let mut sink = MySqlSink::connect(MySqlSinkConfig::new(maria.url(&db))).await?;
    let ours = upsert_through(&mut sink, rows, None).await?;
    println!(
        "mysql apply: {rows} upserts in {ours:.2}s = {:.0} rows/s | server-side INSERT … ON DUPLICATE KEY UPDATE from staging {reference:.2}s = {:.0} rows/s | ratio {:.2}",
        rows as f64 / ours,
        rows as f64 / reference,
        reference / ours
    );
    let check = maria
        .query(&db, "SELECT count(*) FROM accounts WHERE abalance = 1")
        .await?;
    anyhow::ensure!(
        check.trim() == rows.to_string(),
        "all rows upserted ({check})"
    );
    Ok(())
}

/// Restores source `bench` of `config` into `target`; the seconds it took and the report.
async fn timed_restore(
    config: &tributary::Config,
    options: &tributary_snapshot::RestoreOptions,
    target: &str,
) -> anyhow::Result<(f64, tributary_snapshot::RestoreReport)> {
    let started = Instant::now();
    let (_, report) =
        tributary::commands::restore::restore(config, Some("bench"), options, Some(target), None)
            .await?;
    Ok((started.elapsed().as_secs_f64(), report))
}

/// The backup benchmark (see the module documentation, part 6).
async fn backup_bench(rows: i64) -> anyhow::Result<()> {
    use tributary_snapshot::{ArchiveSink, BackupConfig, RestoreOptions, Target};
    let pg = Postgres::start().await?;
    let db = pg.create_database("backup").await?;
    let client = pg.client(&db).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
             INSERT INTO pgbench_accounts SELECT g, g / 100000, 0, '' FROM generate_series(1, {rows}) g;"
        ))
        .await?;
    client
        .batch_execute("VACUUM ANALYZE pgbench_accounts")
        .await?;
    let bytes: i64 = client
        .query_one("SELECT pg_table_size('pgbench_accounts')", &[])
        .await?
        .get(0);
    let mb = bytes as f64 / 1e6;
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    let config = tributary::Config::parse(
        &format!(
            "state_dir = {:?}\n[sources.bench]\nkind = \"postgres\"\nurl = {:?}\n[backup]\nstore = {:?}\n{}\n",
            dir.path().join("state"),
            pg.url(&db),
            store_dir,
            // More [backup] settings to try, as TOML lines (`zstd_level = 1`).
            std::env::var("BACKUP_TOML").unwrap_or_default()
        ),
        |_| None,
    )
    .map_err(|e| anyhow::anyhow!(e))?;

    // pg_dump and the snapshot take turns, three times each (a run of a small table is
    // well under a second, and one run alone is noisy), each after a checkpoint; the
    // ratio is of the medians.
    let dump = dir.path().join("dump.Fc");
    let (mut dumps, mut snaps) = (Vec::new(), Vec::new());
    let mut stored = 0;
    for round in 1..=3 {
        client.batch_execute("CHECKPOINT").await?;
        let dump_secs = time_tool(
            tokio::process::Command::new(pg.bin_dir().join("pg_dump"))
                .arg("-Fc")
                .arg("-f")
                .arg(&dump)
                .arg(pg.url(&db)),
            "pg_dump",
        )
        .await?;
        client.batch_execute("CHECKPOINT").await?;
        let started = Instant::now();
        let cpu = cpu_secs();
        let taken = tributary::backup::snapshot_create(&config, Some("bench"), None).await?;
        let snap_secs = started.elapsed().as_secs_f64();
        let snap_cpu = cpu_secs() - cpu;
        stored = taken[0].bytes;
        println!(
            "snapshot run {round}: {snap_secs:.2}s = {:.0} MB/s, {snap_cpu:.2} CPU s in this process | pg_dump -Fc {dump_secs:.2}s = {:.0} MB/s | ratio {:.2}",
            mb / snap_secs,
            mb / dump_secs,
            dump_secs / snap_secs
        );
        dumps.push(dump_secs);
        snaps.push(snap_secs);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (dump_secs, snap_secs) = (median(&mut dumps), median(&mut snaps));
    let dump_bytes = std::fs::metadata(&dump)?.len();
    println!(
        "snapshot: table of {mb:.0} MB ({rows} rows), median {snap_secs:.2}s = {:.0} MB/s, {stored} bytes stored | pg_dump -Fc median {dump_secs:.2}s = {:.0} MB/s, {dump_bytes} bytes | ratio {:.2}",
        mb / snap_secs,
        mb / dump_secs,
        dump_secs / snap_secs
    );

    let restore_into = |name: &'static str| {
        let pg = &pg;
        async move {
            let target = pg.create_database(name).await?;
            anyhow::Ok(target)
        }
    };
    let fresh = restore_into("from_dump").await?;
    let pg_restore_secs = time_tool(
        tokio::process::Command::new(pg.bin_dir().join("pg_restore"))
            .arg("-d")
            .arg(pg.url(&fresh))
            .arg(&dump),
        "pg_restore",
    )
    .await?;
    let fresh = restore_into("from_snapshot").await?;
    let options = RestoreOptions {
        target: Target::Latest,
        tables: Vec::new(),
        max_tx_events: 100_000,
        batch_rows: 5_000,
        copy_decoder: Some(tributary_capture::postgres::relations::decode_copy_line),
    };
    let (restore_secs, report) = timed_restore(&config, &options, &pg.url(&fresh)).await?;
    anyhow::ensure!(report.snapshot_rows == rows as u64, "{report:?}");
    println!(
        "restore of the snapshot: {rows} rows in {restore_secs:.2}s = {:.0} rows/s | pg_restore of the dump {pg_restore_secs:.2}s = {:.0} rows/s | ratio {:.2}",
        rows as f64 / restore_secs,
        rows as f64 / pg_restore_secs,
        pg_restore_secs / restore_secs
    );

    // An archive of `rows` insert events of another source, replayed.
    let schema = accounts_schema();
    let backup = BackupConfig::at(store_dir.display().to_string());
    let mut archive = ArchiveSink::open(&backup, &dir.path().join("state"), "bench").await?;
    let started = Instant::now();
    let mut aid = 1;
    while aid <= rows {
        archive.begin().await?;
        let batch: Vec<ChangeEvent> = (aid..(aid + 10_000).min(rows + 1))
            .map(|a| account_event(&schema, a, 0, Op::Insert))
            .collect();
        aid += batch.len() as i64;
        archive.apply(&schema, &batch).await?;
        let last = batch.last().map(|e| e.position).expect("a batch");
        archive.commit("bench", last).await?;
    }
    archive.seal().await?;
    let archive_secs = started.elapsed().as_secs_f64();
    // Without snapshots: only the archive.
    for s in tributary_snapshot::list_snapshots(&tributary_snapshot::Store::open(&backup)?, "bench")
        .await?
    {
        for o in &s.objects {
            std::fs::remove_file(store_dir.join(&o.name))?;
        }
        std::fs::remove_file(store_dir.join(
            tributary_snapshot::snapshots::snapshot_manifest_name("bench", &s.id),
        ))?;
    }
    let fresh = restore_into("from_archive").await?;
    let (replay_secs, report) = timed_restore(&config, &options, &pg.url(&fresh)).await?;
    anyhow::ensure!(report.events == rows as u64, "{report:?}");
    println!(
        "restore replay: {rows} archived events in {replay_secs:.2}s = {:.0} events/s (target 100000) | pg_restore of the dump {:.0} rows/s | ratio {:.2} (archiving them took {archive_secs:.2}s = {:.0} events/s)",
        rows as f64 / replay_secs,
        rows as f64 / pg_restore_secs,
        pg_restore_secs / replay_secs,
        rows as f64 / archive_secs
    );
    Ok(())
}

/// CPU seconds (user and system) this process has used, from `/proc/self/stat` (ticks of
/// 1/100 s); 0 where there is none.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, the 12th and 13th after the state.
    (ticks(11) + ticks(12)) / 100.0
}

/// `GET /metrics` of a run with 2 sources of 200 tables each (every operation counted),
/// 3 sinks taking both, and their tasks: the time of each of 200 scrapes over HTTP, as
/// the control plane serves them (the target: under 50 ms).
async fn metrics_bench() -> anyhow::Result<()> {
    use tributary::board::{Board, State};
    use tributary::server::metrics::{CaptureView, MetricsView};
    let board = Board::default();
    let mut view = MetricsView {
        board: board.clone(),
        ..Default::default()
    };
    for source in ["hq", "store"] {
        let stats = Arc::new(tributary_capture::stats::CaptureStats::default());
        let topics: Vec<(String, [u64; 5])> = (0..200)
            .map(|t| (format!("{source}.public.table_{t:03}"), [10, 20, 3, 1, 100]))
            .collect();
        stats.transaction(chrono::Utc::now().timestamp_micros(), &topics);
        view.capture.insert(
            source.to_string(),
            CaptureView {
                prefix: source.to_string(),
                stats,
            },
        );
        board.register(&format!("capture {source}"));
        board.set(&format!("capture {source}"), State::Running, None);
        for sink in ["office", "shop", "archive"] {
            let key = format!("{sink}/{source}");
            let stats = Arc::new(tributary_pipeline::apply::ApplyStats::default());
            for i in 0..100 {
                stats.batch_seconds.observe(f64::from(i) / 1000.0);
            }
            view.apply.insert(key.clone(), stats);
            board.register(&format!("apply {key}"));
            board.set(&format!("apply {key}"), State::Running, None);
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = tributary::server::api::router(
        &tributary::config::ApiConfig::default(),
        view,
        tributary::server::registry::router(Default::default()),
    )?;
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(tributary::server::api::serve(listener, router, shutdown));
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..200 {
        let started = Instant::now();
        let text = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        bytes = text.len();
        anyhow::ensure!(text.contains("table_199"), "every table in the scrape");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "metrics: GET /metrics of 400 tables x 5 operations, 6 apply loops, 8 tasks ({bytes} bytes): median {:.2} ms, p99 {:.2} ms, max {:.2} ms over 200 scrapes (target < 50 ms)",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rows: i64 = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` probes bench targets; nothing to list.
        return Ok(());
    }
    // RUST_LOG=info shows the stages' own logs (their times) beside the figures.
    tributary_tests::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let only = std::env::var("BENCH").unwrap_or_default();
    runtime.block_on(async {
        if only.is_empty() || only == "capture" {
            capture_bench(rows).await.context("capture benchmark")?;
        }
        if only.is_empty() || only == "apply" {
            apply_bench(rows).await.context("apply benchmark")?;
        }
        if only.is_empty() || only == "mysql-apply" {
            mysql_apply_bench(rows)
                .await
                .context("MySQL apply benchmark")?;
        }
        if only.is_empty() || only == "merge" {
            merge_apply_bench(rows)
                .await
                .context("merged apply benchmark")?;
        }
        if only.is_empty() || only == "backup" {
            backup_bench(rows).await.context("backup benchmark")?;
        }
        if only.is_empty() || only == "metrics" {
            metrics_bench().await.context("metrics benchmark")?;
        }
        if only.is_empty() || only == "mariadb" {
            mariadb_capture_bench(rows)
                .await
                .context("MariaDB capture benchmark")?;
        }
        anyhow::Ok(())
    })?;
    println!(
        "peak RSS of the benchmark process: {} MiB",
        tributary_tests::peak_rss_mib().unwrap_or(0)
    );
    Ok(())
}
