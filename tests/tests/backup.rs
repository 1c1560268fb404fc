//! The event-log archive, end to end: PostgreSQL → embedded log → archive segments in an
//! S3-compatible store (a private s3s-fs) or a local directory.
//!
//! A load of inserts, updates and deletes on two tables, with a schema change and a
//! restart of Tributary half way, must come out of the store whole: every event once, in
//! commit order, folding to the source's final contents; the objects are standard Avro
//! container files; and a damaged, missing or changed object makes verification fail,
//! naming it.

use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tributary::backup;
use tributary::commands::{restore, restore_test};
use tributary::Config;
use tributary_schemas::{ChangeEvent, Op, Position, Value};
use tributary_snapshot::archive::{manifest_name, Manifest};
use tributary_snapshot::verify::{chain, read_events};
use tributary_snapshot::{
    list_snapshots, verify_archive, verify_snapshot, BackupConfig, BackupError, RestoreOptions,
    Store, Target,
};
use tributary_tests::{wait_until, MariaDb, Postgres, Running, S3};

const DDL: &str =
    "CREATE TABLE medicines (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, medicine int NOT NULL, qty int NOT NULL);
INSERT INTO medicines SELECT i, 'medicine ' || i, 100 FROM generate_series(1, 100) i;";

/// [`DDL`] for MariaDB.
const MARIA_DDL: &str =
    "CREATE TABLE medicines (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, medicine int NOT NULL, qty int NOT NULL);
INSERT INTO medicines SELECT seq, CONCAT('medicine ', seq), 100 FROM seq_1_to_100;";

/// Rows every round of the load changes: 20 orders inserted, 10 medicines updated.
const PER_ROUND: u64 = 30;

/// One round of the load, as one transaction.
fn round(r: i64) -> String {
    format!(
        "BEGIN;
INSERT INTO orders SELECT i, 1 + i % 100, 1 + i % 5 FROM generate_series({a}, {b}) i;
UPDATE medicines SET qty = qty - 1 WHERE id % 10 = {m};
COMMIT;",
        a = r * 20 + 1,
        b = r * 20 + 20,
        m = r % 10
    )
}

fn config(state: &Path, source_url: &str, backup: &str) -> Config {
    let text = format!(
        "state_dir = {state:?}\n[transport]\nkind = \"embedded\"\n\n[sources.hq]\nkind = \"postgres\"\nurl = {source_url:?}\nheartbeat_secs = 1\n\n[backup]\n{backup}segment_seconds = 1\nsegment_bytes = 8192\n"
    );
    Config::parse(&text, |_| None).expect("test configuration is valid")
}

/// Every archived event of source `hq`, in archive order, after a full verification.
async fn archived(store: &Store) -> Result<Vec<ChangeEvent>, BackupError> {
    verify_archive(store, "hq").await?;
    let mut out = Vec::new();
    for m in chain(store, "hq").await? {
        let mut events = Vec::new();
        for entry in &m.objects {
            events.extend(read_events(store, "hq", entry).await?);
        }
        // A segment's objects are one per table version: their events merge by position.
        events.sort_by_key(|e| e.position);
        out.extend(events);
    }
    Ok(out)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int32(i) => i.to_string(),
        Value::Text(t) => t.clone(),
        other => format!("{other:?}"),
    }
}

/// The tables the events fold to: table → key → row, as `a|b|c` text.
fn fold(events: &[ChangeEvent]) -> Tables {
    let mut tables = Tables::new();
    for e in events {
        let rows = tables.entry(e.table.name.clone()).or_default();
        let key = e.key.iter().map(text).collect::<Vec<_>>().join("|");
        match (e.op, &e.after) {
            (Op::Delete, _) => {
                rows.remove(&key);
            }
            (Op::Truncate, _) => rows.clear(),
            (_, Some(after)) => {
                let row = after.0.iter().map(text).collect::<Vec<_>>().join("|");
                rows.insert(key, row);
            }
            (_, None) => {}
        }
    }
    tables
}

/// The tables of database `db` in the same shape as [`fold`]: each row's values in column
/// order, `NULL` for nulls.
async fn source_tables(pg: &Postgres, db: &str) -> anyhow::Result<Tables> {
    let client = pg.client(db).await?;
    let mut tables = BTreeMap::new();
    for table in ["medicines", "orders"] {
        let sql = format!(
            "SELECT t.id::text, (SELECT string_agg(coalesce(value, 'NULL'), '|' ORDER BY n) FROM json_each_text(row_to_json(t)) WITH ORDINALITY AS c(key, value, n)) FROM {table} t"
        );
        let rows: BTreeMap<String, String> = client
            .query(&sql, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        tables.insert(table.to_string(), rows);
    }
    Ok(tables)
}

/// Table → key → row text.
type Tables = BTreeMap<String, BTreeMap<String, String>>;

/// The source's contents at an instant, and that instant (RFC 3339).
async fn instant(pg: &Postgres, db: &str) -> anyhow::Result<(String, Tables)> {
    let client = pg.client(db).await?;
    let at: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await?
        .get(0);
    Ok((at, source_tables(pg, db).await?))
}

/// Waits until the archive of `hq` verifies and holds `events` events.
async fn wait_for_events(store: &Store, events: u64) -> anyhow::Result<()> {
    wait_for_source_events(store, "hq", events).await
}

/// Runs the load with a restart half way and two manual snapshots, checks what the
/// store holds, and restores three instants, each checked against the source's contents
/// then.
async fn archive_scenario(pg: &Postgres, src: &str, backup_toml: &str) -> anyhow::Result<Scenario> {
    let state = tempfile::tempdir()?;
    let backup: BackupConfig = toml::from_str(backup_toml)?;
    let store = Store::open(&backup)?;
    let url = pg.url(src);

    let running = Running::start(config(state.path(), &url, backup_toml), false);
    // The initial snapshot's 100 rows first, so every later change is an event of its own.
    wait_for_events(&store, 100).await?;
    let mut instants = Vec::new();
    let cfg = config(state.path(), &url, backup_toml);
    for r in 0..10 {
        pg.execute(src, &round(r)).await?;
        if r == 4 {
            instants.push(instant(pg, src).await?);
        }
        if r == 7 {
            // A manual snapshot under load.
            backup::snapshot_create(&cfg, Some("hq"), None).await?;
        }
    }
    wait_for_events(&store, 100 + 10 * PER_ROUND).await?;
    running.stop().await?;

    // Changes while Tributary is down, a schema change among them.
    pg.execute(src, "ALTER TABLE medicines ADD COLUMN note text")
        .await?;
    for r in 10..15 {
        pg.execute(src, &round(r)).await?;
    }
    instants.push(instant(pg, src).await?);
    // A snapshot while Tributary is down (it needs only the source).
    backup::snapshot_create(&cfg, Some("hq"), None).await?;
    let running = Running::start(config(state.path(), &url, backup_toml), false);
    for r in 15..20 {
        pg.execute(src, &round(r)).await?;
    }
    pg.execute(
        src,
        "BEGIN; UPDATE medicines SET note = 'recalled' WHERE id <= 5; DELETE FROM orders WHERE id % 4 = 0; COMMIT;",
    )
    .await?;
    // 5 notes, 100 orders deleted.
    instants.push(instant(pg, src).await?);
    let total = 100 + 20 * PER_ROUND + 5 + 100;
    wait_for_events(&store, total).await?;
    if backup.snapshot_schedule.is_some() {
        // Besides the two manual snapshots, at least one scheduled one.
        wait_until("a scheduled snapshot", Duration::from_secs(60), || async {
            Ok(tributary_snapshot::list_snapshots(&store, "hq")
                .await?
                .len()
                >= 3)
        })
        .await?;
        // And every file set in at least two ticks of the schedule.
        for set in backup.files.keys() {
            wait_until(
                "scheduled files snapshots",
                Duration::from_secs(60),
                || async {
                    Ok(tributary_snapshot::list_file_snapshots(&store, set)
                        .await?
                        .len()
                        >= 2)
                },
            )
            .await?;
        }
    }
    running.stop().await?;

    let events = archived(&store).await?;
    assert_eq!(events.len() as u64, total);
    // Each event once, in commit order.
    let positions: Vec<Position> = events.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "archived events out of order or repeated"
    );
    assert_eq!(fold(&events), source_tables(pg, src).await?);
    let manifests = chain(&store, "hq").await?;
    assert!(
        manifests.len() >= 3,
        "expected several segments, got {}",
        manifests.len()
    );
    // Both versions of medicines were archived, each in objects of its own.
    let versions: std::collections::BTreeSet<u32> = manifests
        .iter()
        .flat_map(|m| &m.objects)
        .filter(|o| o.table.name == "medicines")
        .map(|o| o.schema_version)
        .collect();
    assert!(versions.len() >= 2, "schema versions: {versions:?}");

    // Each instant restored into a fresh database equals the source then.
    let config = cfg;
    let mut reports = Vec::new();
    for (i, (at, expected)) in instants.iter().enumerate() {
        let (db, report) = restore_hq(&config, pg, "restored", at).await?;
        // The last instant follows the last change: the report says the archive ends first.
        assert_eq!(
            report.archive_ends_before_target,
            i == instants.len() - 1,
            "{at}: {report:?}"
        );
        assert_eq!(&source_tables(pg, &db).await?, expected, "restored to {at}");
        reports.push(report);
    }
    Ok(Scenario {
        store,
        config,
        instants,
        reports,
    })
}

/// What [`archive_scenario`] leaves.
struct Scenario {
    store: Store,
    config: Config,
    /// Three instants and the source's contents then.
    instants: Vec<(String, Tables)>,
    /// The restore of each instant.
    reports: Vec<tributary_snapshot::RestoreReport>,
}

/// The row count of `table` (keyed `id`) in `db`, and the md5 of every `id:<column>` in
/// key order.
async fn digest(
    pg: &Postgres,
    db: &str,
    table: &str,
    column: &str,
) -> anyhow::Result<(i64, String)> {
    let row = pg
        .client(db)
        .await?
        .query_one(
            &format!(
                "SELECT count(*), md5(string_agg(id || ':' || {column}, ',' ORDER BY id)) FROM {table}"
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Restores source `hq` of `config` to `at` (RFC 3339 or `latest`) into a new database of
/// `pg` named after `prefix`; returns the database and the report.
async fn restore_hq(
    config: &Config,
    pg: &Postgres,
    prefix: &str,
    at: &str,
) -> anyhow::Result<(String, tributary_snapshot::RestoreReport)> {
    let db = pg.create_database(prefix).await?;
    let (_, report) =
        restore::restore(config, Some("hq"), &options(at), Some(&pg.url(&db)), None).await?;
    Ok((db, report))
}

fn options(at: &str) -> RestoreOptions {
    RestoreOptions {
        target: Target::parse(at).expect("an RFC 3339 instant"),
        tables: Vec::new(),
        max_tx_events: 10_000,
        batch_rows: 5_000,
        copy_decoder: Some(tributary_capture::postgres::relations::decode_copy_line),
    }
}

/// The `op` of every record of an object, read with `apache_avro` (any Avro tool reads
/// the segments).
fn avro_ops(bytes: &[u8]) -> Vec<String> {
    apache_avro::Reader::new(bytes)
        .expect("a standard Avro container")
        .map(|r| match r.expect("a readable record") {
            apache_avro::types::Value::Record(fields) => fields
                .into_iter()
                .find_map(|(name, v)| match (name.as_str(), v) {
                    ("op", apache_avro::types::Value::String(op)) => Some(op),
                    _ => None,
                })
                .expect("an op field"),
            other => panic!("not a record: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_into_s3_survives_a_restart_and_verify_names_damage() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let src = pg.create_database("src").await?;
    pg.execute(&src, DDL).await?;
    let s3 = S3::start().await?;
    let Scenario {
        store,
        config,
        instants,
        reports,
    } = archive_scenario(&pg, &src, &s3.backup_toml("prod")).await?;
    // The first instant precedes both snapshots: the archive alone restores it; the
    // second follows the first snapshot, the third the second.
    let snapshots = tributary_snapshot::list_snapshots(&store, "hq").await?;
    assert_eq!(snapshots.len(), 2);
    let used: Vec<Option<&str>> = reports.iter().map(|r| r.snapshot.as_deref()).collect();
    assert_eq!(
        used,
        [
            None,
            Some(snapshots[0].id.as_str()),
            Some(snapshots[1].id.as_str())
        ]
    );
    assert!(reports[1].snapshot_rows >= 100 && reports[2].snapshot_rows >= 100);
    for snap in &snapshots {
        assert_eq!(
            tributary_snapshot::verify_snapshot(
                &store,
                "hq",
                snap,
                Some(tributary_capture::postgres::relations::decode_copy_line)
            )
            .await?,
            snap.rows
        );
    }
    // A PostgreSQL snapshot holds the server's COPY text in zstd frames, as pg_dump
    // does: the zstd tool reads an object back, one line per row.
    for object in &snapshots[1].objects {
        assert_eq!(object.format, tributary_snapshot::ObjectFormat::PgCopyText);
        assert!(object.name.ends_with(".copy.zst"), "{}", object.name);
        let stored = store.get(&object.name).await?.expect("listed");
        let mut zstd = tokio::process::Command::new("zstd")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut stdin = zstd.stdin.take().expect("piped");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, &stored).await?;
        drop(stdin);
        let text = zstd.wait_with_output().await?;
        assert!(text.status.success(), "zstd -dc {}", object.name);
        assert_eq!(
            text.stdout.iter().filter(|&&b| b == b'\n').count() as u64,
            object.rows,
            "{}",
            object.name
        );
    }
    // A restore cut short while loading a snapshot leaves that snapshot's marker and no
    // watermark (simulated here by deleting the watermark of a finished restore): a rerun
    // that would start from another snapshot is refused, naming the one loaded; the same
    // rerun finishes, exact.
    let cut = pg.create_database("cut_short").await?;
    let cut_url = pg.url(&cut);
    let restore_cut = |at: &str| {
        let options = options(at);
        let (config, url) = (&config, &cut_url);
        async move { restore::restore(config, Some("hq"), &options, Some(url), None).await }
    };
    restore_cut(&instants[1].0).await?;
    pg.execute(&cut, "DELETE FROM tributary.watermarks WHERE source = 'hq'")
        .await?;
    let e = restore_cut(&instants[2].0).await.unwrap_err().to_string();
    assert!(
        e.contains("cut short") && e.contains(&snapshots[0].id),
        "{e}"
    );
    let (_, again) = restore_cut(&instants[1].0).await?;
    assert_eq!(again.snapshot.as_deref(), Some(snapshots[0].id.as_str()));
    assert_eq!(source_tables(&pg, &cut).await?, instants[1].1, "rerun");
    // The restore test: a new scratch database holds, table by table, what the archive
    // says (a schema change happened on the way), and is dropped after.
    let tested = restore_test::restore_test(&config, Some("hq"), &pg.url("postgres")).await?;
    assert_eq!(tested.len(), 1);
    let t = &tested[0];
    assert!(t.ok(), "{t:?}");
    assert_eq!(t.report.snapshot.as_deref(), Some(snapshots[1].id.as_str()));
    let counts: Vec<(String, u64)> = t
        .tables
        .iter()
        .map(|c| (c.table.to_string(), c.restored_rows))
        .collect();
    let last = &instants[2].1;
    assert_eq!(
        counts,
        [
            (
                "public.medicines".to_string(),
                last["medicines"].len() as u64
            ),
            ("public.orders".to_string(), last["orders"].len() as u64)
        ]
    );
    let left = pg
        .client("postgres")
        .await?
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'tributary_restore_test%'",
            &[],
        )
        .await?
        .get::<_, i64>(0);
    assert_eq!(left, 0, "the scratch database is dropped");

    // Any Avro tool reads the segments.
    let manifests = chain(&store, "hq").await?;
    let first = &manifests[0].objects[0];
    let bytes = store.get_required(&first.name).await?;
    let ops = avro_ops(&bytes);
    assert_eq!(ops.len() as u64, first.events);
    assert!(ops
        .iter()
        .all(|op| ["r", "c", "u", "d"].contains(&op.as_str())));

    // Retention: a window reaching back to the first snapshot cannot keep one snapshot.
    let window = tributary_snapshot::Retention {
        max_backups: Some(1),
        max_age_secs: Some(1),
    };
    let opens_at_first = snapshots[0].consistent_at_micros + 1_000_000;
    let e = tributary_snapshot::prune(&store, "hq", window, opens_at_first, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_backups") && e.contains(&snapshots[0].id),
        "{e}"
    );
    assert_eq!(
        tributary_snapshot::list_snapshots(&store, "hq")
            .await?
            .len(),
        2
    );
    verify_archive(&store, "hq").await?;

    // A PostgreSQL source restored into MariaDB, one table, to the second instant.
    let maria = MariaDb::start().await?;
    let db = maria.create_database("restored").await?;
    let (at, expected) = &instants[1];
    let mut only_orders = options(at);
    only_orders.tables = vec!["public.ord*".into()];
    let (_, report) =
        restore::restore(&config, None, &only_orders, Some(&maria.url(&db)), None).await?;
    assert_eq!(report.tables.keys().collect::<Vec<_>>(), ["public.orders"]);
    let rows: BTreeMap<String, String> = maria
        .query(
            &db,
            "SELECT id, CONCAT_WS('|', id, medicine, qty) FROM orders",
        )
        .await?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(&rows, &expected["orders"]);

    // One flipped byte of a segment object.
    // In the last segment, which every restore to the end reads.
    let object = &manifests[manifests.len() - 1].objects[0];
    let path = s3.bucket_dir().join("prod").join(&object.name);
    let good = std::fs::read(&path)?;
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    std::fs::write(&path, &bad)?;
    let e = verify_archive(&store, "hq").await.unwrap_err().to_string();
    assert!(
        e.contains(&object.name) && e.contains("sha256"),
        "unexpected error: {e}"
    );
    // A missing segment object.
    std::fs::remove_file(&path)?;
    let e = verify_archive(&store, "hq").await.unwrap_err().to_string();
    assert!(
        e.contains(&object.name) && e.contains("missing"),
        "unexpected error: {e}"
    );
    // A restore through it stops, naming it, before writing anything of that segment.
    let db = pg.create_database("damaged").await?;
    let e = restore::restore(&config, None, &options("latest"), Some(&pg.url(&db)), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&object.name), "unexpected error: {e}");
    std::fs::write(&path, &good)?;
    verify_archive(&store, "hq").await?;

    // A manifest changed to hide an object is caught by the chain.
    let name = manifest_name("hq", manifests[1].seq);
    let mut m: Manifest = serde_json::from_slice(&store.get_required(&name).await?)?;
    m.objects.pop();
    m.events = m.objects.iter().map(|o| o.events).sum();
    store
        .put(&name, serde_json::to_vec_pretty(&m)?.into())
        .await?;
    let e = verify_archive(&store, "hq").await.unwrap_err().to_string();
    assert!(
        e.contains(&name) && e.contains("sha256"),
        "unexpected error: {e}"
    );
    // A missing manifest breaks the chain.
    store.delete(&name).await?;
    let e = verify_archive(&store, "hq").await.unwrap_err().to_string();
    assert!(
        e.contains(&name) && e.contains("missing"),
        "unexpected error: {e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_into_a_directory_encrypted_with_scheduled_snapshots() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let src = pg.create_database("src").await?;
    pg.execute(&src, DDL).await?;
    let dir = tempfile::tempdir()?;
    // Encrypted (age), with snapshots every 2 s besides.
    let key = dir.path().join("key.txt");
    write_age_key(&key)?;
    let store_dir = dir.path().join("store");
    // A file set beside the database: a directory of documents and a SQLite database
    // that a writer fills, one row per transaction, all through the scheduled snapshots.
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("letters"))?;
    std::fs::write(docs.join("letters/supplier.txt"), "Dear supplier,\n")?;
    std::fs::write(docs.join("prices.csv"), "id,price\n1,9.5\n".repeat(5000))?;
    let pos_db = dir.path().join("pos.db");
    let sqlite = rusqlite::Connection::open(&pos_db)?;
    sqlite.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INT NOT NULL);",
    )?;
    let selling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seller = {
        let selling = selling.clone();
        std::thread::spawn(move || -> rusqlite::Result<i64> {
            let mut id = 0;
            while selling.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                sqlite.execute("INSERT INTO sales VALUES (?1, ?1 % 7)", [id])?;
            }
            Ok(id)
        })
    };
    let Scenario {
        store,
        config,
        instants,
        reports,
    } = archive_scenario(
        &pg,
        &src,
        &format!(
            "store = {store_dir:?}\nage_identity_file = {key:?}\nsnapshot_schedule = \"*/2 * * * * *\"\nfiles = {{ docs = {{ paths = [{docs:?}], sqlite = [{pos_db:?}] }} }}\n"
        ),
    )
    .await?;
    selling.store(false, std::sync::atomic::Ordering::Relaxed);
    let sold = seller.join().expect("the writer thread")?;
    let files = tributary_snapshot::list_file_snapshots(&store, "docs").await?;
    // One per tick of the schedule, beside the source's (which has a manual one too).
    assert!(
        files.len() >= 2,
        "scheduled files snapshots: {}",
        files.len()
    );
    let into = dir.path().join("restored");
    let report =
        backup::files_restore(&config, "docs", &Target::parse("latest")?, Some(&into), &[]).await?;
    assert_eq!(report.snapshot, files.last().expect("some").id);
    assert_eq!((report.files, report.others), (3, 2), "{report:?}");
    let back = |p: &Path| into.join(p.strip_prefix("/").expect("absolute"));
    for f in ["letters/supplier.txt", "prices.csv"] {
        assert_eq!(
            std::fs::read(back(&docs.join(f)))?,
            std::fs::read(docs.join(f))?,
            "{f}"
        );
    }
    // The database copy is consistent: it passes SQLite's check and holds exactly the
    // sales of the transactions committed before it, 1..=n with no gap.
    let restored = rusqlite::Connection::open(back(&pos_db))?;
    let check: String = restored.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    let (n, max): (i64, i64) = restored.query_row(
        "SELECT count(*), coalesce(max(id), 0) FROM sales",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert!(
        n == max && n > 0 && n <= sold,
        "{n} rows, max id {max}, {sold} sold"
    );
    tributary_snapshot::verify_files(&store, files.last().expect("some")).await?;
    // Stored encrypted, named in messages with the wrong key.
    let manifests = chain(&store, "hq").await?;
    let object = &manifests[0].objects[0];
    assert!(std::fs::read(store_dir.join(&object.name))?.starts_with(b"age-encryption.org/v1"));
    let wrong = dir.path().join("wrong.txt");
    write_age_key(&wrong)?;
    let mut with_wrong: BackupConfig = toml::from_str(&format!("store = {store_dir:?}"))?;
    with_wrong.age_identity_file = Some(wrong);
    let e = verify_archive(&Store::open(&with_wrong)?, "hq")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&object.name) && e.contains("wrong key"),
        "unexpected error: {e}"
    );
    let pack = &files[0].packs[0];
    let e = tributary_snapshot::verify_files(&Store::open(&with_wrong)?, &files[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&pack.name) && e.contains("wrong key"),
        "unexpected error: {e}"
    );

    let snapshots = tributary_snapshot::list_snapshots(&store, "hq").await?;
    assert!(
        snapshots.len() > 2,
        "scheduled snapshots: {}",
        snapshots.len()
    );
    assert!(reports.iter().any(|r| r.snapshot.is_some()));
    let head = store.get_required("archive/hq/HEAD.json").await?;
    assert!(std::str::from_utf8(&head)?.contains("sha256"));

    // Retention keeping one snapshot: the others go, with the segments before it.
    let one = tributary_snapshot::Retention {
        max_backups: Some(1),
        max_age_secs: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let pruned = tributary_snapshot::prune(&store, "hq", one, now, false).await?;
    assert!(
        pruned.segments > 0 && !pruned.snapshots.is_empty(),
        "{pruned:?}"
    );
    assert!(!store_dir.join(&object.name).exists());
    let left = tributary_snapshot::list_snapshots(&store, "hq").await?;
    assert_eq!(left.len(), 1);
    verify_archive(&store, "hq").await?;
    // The end (the last instant's contents: nothing changed after it) still restores,
    // from the one snapshot left (a scheduled one may follow the last instant, so only
    // instants after it are in the window); the first instant is out of the window now.
    let expected = &instants[2].1;
    let (db, report) = restore_hq(&config, &pg, "after_prune", "latest").await?;
    assert_eq!(report.snapshot.as_deref(), Some(left[0].id.as_str()));
    assert_eq!(&source_tables(&pg, &db).await?, expected);
    let db = pg.create_database("before_window").await?;
    let e = restore::restore(
        &config,
        Some("hq"),
        &options(&instants[0].0),
        Some(&pg.url(&db)),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("pruned"), "{e}");

    // A second pruning after a new snapshot moves the start again, and the chain
    // still verifies.
    backup::snapshot_create(&config, Some("hq"), None).await?;
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let again = tributary_snapshot::prune(&store, "hq", one, later, false).await?;
    assert_eq!(again.snapshots, [left[0].id.clone()]);
    verify_archive(&store, "hq").await?;

    // Without HEAD.json the chain has no head: named, not taken for an empty archive.
    std::fs::remove_file(store_dir.join("archive/hq/HEAD.json"))?;
    let e = verify_archive(&store, "hq").await.unwrap_err().to_string();
    assert!(e.contains("HEAD.json") && e.contains("missing"), "{e}");
    Ok(())
}

/// Writes a new age identity file (as `age-keygen` would) at `path`.
fn write_age_key(path: &Path) -> anyhow::Result<()> {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    std::fs::write(
        path,
        format!(
            "# public key: {}\n{}\n",
            identity.to_public(),
            identity.to_string().expose_secret()
        ),
    )?;
    Ok(())
}

/// The MariaDB tables of `db` in the shape of [`fold`] (no NULLs in this load).
async fn mariadb_tables(maria: &MariaDb, db: &str) -> anyhow::Result<Tables> {
    let mut tables = Tables::new();
    for (table, sql) in [
        (
            "medicines",
            "SELECT id, CONCAT_WS('|', id, name, qty) FROM medicines",
        ),
        (
            "orders",
            "SELECT id, CONCAT_WS('|', id, medicine, qty) FROM orders",
        ),
    ] {
        let rows = maria
            .query(db, sql)
            .await?
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tables.insert(table.to_string(), rows);
    }
    Ok(tables)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_archive_restores_binlog_positions_into_postgres() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let maria = MariaDb::start().await?;
    let pg = Postgres::start().await?;
    let db = maria.create_database("store").await?;
    maria.execute(&db, MARIA_DDL).await?;
    let state = tempfile::tempdir()?;
    let store_dir = state.path().join("store");
    let text = format!(
        "state_dir = {:?}\n[transport]\nkind = \"embedded\"\n\n[sources.store]\nkind = \"mysql\"\nurl = {:?}\ninclude = [\"{db}.*\"]\nheartbeat_secs = 1\n\n[backup]\nstore = {store_dir:?}\nsegment_seconds = 1\nsegment_bytes = 8192\nsnapshot_schedule = \"*/3 * * * * *\"\n",
        state.path(),
        maria.url(&db)
    );
    let config = Config::parse(&text, |_| None).map_err(anyhow::Error::msg)?;
    let store = Store::open(config.backup.as_ref().expect("a [backup] section"))?;
    let source_rounds = |r: i64| {
        format!(
            "INSERT INTO orders SELECT seq, 1 + seq % 100, 1 + seq % 5 FROM seq_{a}_to_{b}; UPDATE medicines SET qty = qty - 1 WHERE id % 10 = {m};",
            a = r * 20 + 1,
            b = r * 20 + 20,
            m = r % 10
        )
    };
    let running = Running::start(config.clone(), false);
    wait_for_source_events(&store, "store", 100).await?;
    let mut instants = Vec::new();
    // An XA transaction prepared before a manual snapshot and committed after it: its rows
    // are not in the snapshot, and come from the archive at its XA COMMIT.
    let mut xa = mysql_async::Conn::from_url(maria.url(&db)).await?;
    let mut manual = None;
    for r in 0..12 {
        maria.execute(&db, &source_rounds(r)).await?;
        if r == 5 {
            for sql in [
                "XA START 'straddle'",
                "UPDATE medicines SET name = CONCAT(name, ' (xa)') WHERE id <= 3",
                "XA END 'straddle'",
                "XA PREPARE 'straddle'",
            ] {
                xa.query_drop(sql).await?;
            }
            let taken = backup::snapshot_create(&config, Some("store"), None).await?;
            assert_eq!(taken.len(), 1, "{taken:?}");
            assert_eq!(taken[0].rows, 100 + 6 * 20, "{:?}", taken[0]);
            manual = Some(taken.into_iter().next().expect("one"));
            // (Committed before the next round: its row locks would stop the round's
            // full-scan UPDATE.)
            xa.query_drop("XA COMMIT 'straddle'").await?;
        }
        if r % 4 == 3 {
            let (file, pos) = maria.binlog_end().await?;
            let seq: u32 = file.rsplit('.').next().unwrap_or("0").parse()?;
            instants.push((
                format!("mysql:{seq}:{pos}"),
                mariadb_tables(&maria, &db).await?,
            ));
        }
    }
    // 12 rounds of 2 transactions: 20 inserts and 10 updates each; 3 XA updates.
    wait_for_source_events(&store, "store", 100 + 12 * PER_ROUND + 3).await?;
    drop(xa);
    // The schedule (every 3 s) took snapshots of its own while the load ran, each
    // consistent with one binlog position.
    wait_until(
        "two scheduled snapshots beside the manual one",
        Duration::from_secs(30),
        || async { Ok(list_snapshots(&store, "store").await?.len() >= 3) },
    )
    .await?;
    running.stop().await?;
    // The restore test into a scratch database on the same server, twice: the second,
    // into another database of that server, starts from the beginning too (the server's
    // one watermark table keys restores by database). Then into a PostgreSQL server: the
    // rows are read back through the sink, as the source's types, whatever the kind.
    for scratch in [maria.url(""), maria.url(""), pg.url("postgres")] {
        let tested = restore_test::restore_test(&config, Some("store"), &scratch).await?;
        assert!(tested.len() == 1 && tested[0].ok(), "{tested:?}");
        assert_eq!(
            tested[0]
                .tables
                .iter()
                .map(|t| t.restored_rows)
                .sum::<u64>(),
            100 + 12 * 20
        );
    }
    let manual = manual.expect("taken");
    assert_eq!(
        verify_snapshot(
            &store,
            "store",
            &manual,
            Some(tributary_capture::postgres::relations::decode_copy_line)
        )
        .await?,
        manual.rows,
        "{manual:?}"
    );
    for (n, (at, expected)) in instants.iter().enumerate() {
        let target = pg.create_database("restored").await?;
        let (_, report) = restore::restore(
            &config,
            None,
            &options(at),
            Some(&pg.url(&target)),
            Some("public".into()),
        )
        .await?;
        if n > 0 {
            // After the manual snapshot: restored from it (or a later scheduled one).
            assert!(report.snapshot.is_some(), "{at}: {report:?}");
        }
        assert!(
            report.events > 0 || report.snapshot_rows > 0,
            "{at}: {report:?}"
        );
        assert_eq!(
            &source_tables(&pg, &target).await?,
            expected,
            "restored to {at}: {report:?}"
        );
    }
    Ok(())
}

/// Waits until source `source`'s archive verifies and holds `events` events.
async fn wait_for_source_events(store: &Store, source: &str, events: u64) -> anyhow::Result<()> {
    wait_until(
        &format!("{events} events of {source} archived and verified"),
        Duration::from_secs(60),
        || async {
            match verify_archive(store, source).await {
                Ok(r) => Ok(r.events == events),
                Err(e) => Err(anyhow::anyhow!(e)),
            }
        },
    )
    .await
}

/// A table of 8 MB or more is copied by `snapshot_sessions` sessions at once, one range
/// of pages each, all in the slot's exported snapshot: the snapshot holds every row once
/// (rows deleted, and rows updated onto other pages, before it included), and a restore
/// gives the table back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_table_is_copied_in_page_ranges_by_several_sessions() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let src = pg.create_database("src").await?;
    pg.execute(
        &src,
        "CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL); \
         INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 100000) g; \
         DELETE FROM big WHERE id % 7 = 0; \
         UPDATE big SET v = 'moved ' || id WHERE id % 11 = 0",
    )
    .await?;
    let (rows, checksum) = digest(&pg, &src, "big", "v").await?;
    let pages: i64 = pg
        .client(&src)
        .await?
        .query_one("SELECT pg_relation_size('big') / 8192", &[])
        .await?
        .get(0);
    assert!(pages >= 1024, "the table has {pages} pages");
    let state = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let config = config(
        state.path(),
        &pg.url(&src),
        &format!("store = {:?}\nsnapshot_sessions = 3\n", dir.path()),
    );
    let taken = backup::snapshot_create(&config, Some("hq"), None).await?;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].rows, rows as u64);
    let store = Store::open(config.backup.as_ref().expect("configured"))?;
    assert_eq!(
        verify_snapshot(
            &store,
            "hq",
            &taken[0],
            Some(tributary_capture::postgres::relations::decode_copy_line)
        )
        .await?,
        rows as u64
    );
    let (restored, report) = restore_hq(&config, &pg, "restored", "latest").await?;
    assert_eq!(report.snapshot_rows, rows as u64, "{report:?}");
    assert_eq!(digest(&pg, &restored, "big", "v").await?, (rows, checksum));
    Ok(())
}

/// One transaction whose archive object is larger than `memory_object_bytes`: sealed
/// through a file, encrypted a piece at a time, uploaded to S3 in parts; verify and
/// restore read it back through temporary files; a damaged byte in it is still named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_memory_goes_to_s3_in_parts() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let src = pg.create_database("src").await?;
    pg.execute(
        &src,
        "CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL); \
         INSERT INTO docs VALUES (0, 'before')",
    )
    .await?;
    let s3 = S3::start().await?;
    let state = tempfile::tempdir()?;
    let key = state.path().join("age.key");
    write_age_key(&key)?;
    let backup_toml = format!(
        "{}memory_object_bytes = 1048576\nage_identity_file = {key:?}\n",
        s3.backup_toml("big")
    );
    let backup: BackupConfig = toml::from_str(&backup_toml)?;
    let store = Store::open(&backup)?;
    let running = Running::start(config(state.path(), &pg.url(&src), &backup_toml), false);
    wait_for_events(&store, 1).await?;
    // 10000 rows of 2 KiB of hex digits in one transaction: about 20 MiB of events,
    // 10 MiB or more compressed (hex digits hold 4 bits a byte), encrypted.
    pg.execute(
        &src,
        "INSERT INTO docs SELECT g, (SELECT string_agg(md5(random()::text || g || i), '') \
         FROM generate_series(1, 64) i) FROM generate_series(1, 10000) g",
    )
    .await?;
    wait_for_events(&store, 10_001).await?;
    running.stop().await?;

    let manifests = chain(&store, "hq").await?;
    let big = manifests
        .iter()
        .flat_map(|m| &m.objects)
        .find(|o| o.events == 10_000)
        .expect("the transaction's object");
    assert!(
        big.bytes > 10 << 20,
        "{} bytes: not several 5 MiB parts",
        big.bytes
    );
    verify_archive(&store, "hq").await?;
    let expected = digest(&pg, &src, "docs", "body").await?;
    assert_eq!(expected.0, 10_001);
    let cfg = config(state.path(), &pg.url(&src), &backup_toml);
    let (restored, report) = restore_hq(&cfg, &pg, "restored", "latest").await?;
    assert_eq!(report.events, 10_001, "{report:?}");
    assert_eq!(digest(&pg, &restored, "docs", "body").await?, expected);

    // One flipped byte in the middle of it.
    let path = s3.bucket_dir().join("big").join(&big.name);
    let mut bytes = std::fs::read(&path)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes)?;
    let e = verify_archive(&store, "hq").await.unwrap_err().to_string();
    assert!(
        e.contains(&big.name) && e.contains("sha256"),
        "unexpected error: {e}"
    );
    Ok(())
}
