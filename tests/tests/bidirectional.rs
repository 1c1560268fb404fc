//! PostgreSQL ↔ MariaDB both ways through one Tributary: each side's changes reach the
//! other, and Tributary's own writes (tagged with a replication origin in PostgreSQL, and
//! with a first row in `tributary.echo` in MariaDB) are not applied back, so nothing
//! echoes back and forth.

use std::sync::atomic::Ordering;
use std::time::Duration;
use tributary::Config;
use tributary_tests::{wait_until, MariaDb, Postgres, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_mariadb_sync_both_ways_without_echo() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let maria = MariaDb::start().await?;
    let hq = pg.create_database("hq").await?;
    let replica = pg.create_database("replica").await?;
    let store = maria.create_database("store").await?;
    pg.execute(
        &hq,
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int NOT NULL);
         INSERT INTO items VALUES (1, 'aspirin', 10);",
    )
    .await?;
    maria
        .execute(
            &store,
            "CREATE TABLE items (id int PRIMARY KEY, name varchar(100), qty int NOT NULL);
             INSERT INTO items VALUES (101, 'ibuprofen', 20);",
        )
        .await?;
    let state = tempfile::tempdir()?;
    let text = format!(
        "state_dir = {:?}\n[transport]\nkind = \"embedded\"\n\n\
         [sources.hq]\nkind = \"postgres\"\nurl = {:?}\ninclude = [\"public.items\"]\nheartbeat_secs = 1\n\n\
         [sources.store]\nkind = \"mysql\"\nurl = {:?}\ninclude = [\"{store}.items\"]\nheartbeat_secs = 1\n\n\
         [sinks.to_store]\nkind = \"mysql\"\nurl = {:?}\n\n\
         [sinks.to_hq]\nkind = \"postgres\"\nurl = {:?}\nsources = [\"store\"]\ntarget_schema = \"public\"\n\n\
         [sinks.replica]\nkind = \"postgres\"\nurl = {:?}\ntarget_schema = \"public\"\n",
        state.path(),
        pg.url(&hq),
        maria.url(&store),
        maria.url(&store),
        pg.url(&hq),
        pg.url(&replica),
    );
    let config = Config::parse(&text, |_| None).map_err(anyhow::Error::msg)?;
    // to_store takes every source but its own database's.
    assert_eq!(
        config.sinks["to_store"].source_names(&config.sources),
        ["hq"]
    );
    let running = Running::start(config, false);
    let to_hq = running.stats["to_hq/store"].clone();
    let to_store = running.stats["to_store/hq"].clone();

    both_hold(
        &pg,
        &hq,
        &maria,
        &store,
        &running,
        &["1:aspirin:10", "101:ibuprofen:20"],
    )
    .await?;

    // Each side changes its rows and the other's.
    pg.execute(
        &hq,
        "UPDATE items SET qty = 9 WHERE id = 1; INSERT INTO items VALUES (2, 'zinc', 5);",
    )
    .await?;
    maria
        .execute(
            &store,
            "UPDATE items SET qty = 19 WHERE id = 101; INSERT INTO items VALUES (102, 'iron', 7);",
        )
        .await?;
    let want = ["1:aspirin:9", "2:zinc:5", "101:ibuprofen:19", "102:iron:7"];
    both_hold(&pg, &hq, &maria, &store, &running, &want).await?;

    // A sentinel row written in PostgreSQL reaches MariaDB; the store capture reads that
    // write back, and the apply loop into PostgreSQL drops it as Tributary's own: the
    // row in PostgreSQL is never written again (its xmin stays).
    // Both ways, Tributary's earlier writes came back and were dropped: MariaDB's through
    // its `tributary.echo` marker, PostgreSQL's through the replication origin.
    wait_until("echoes both ways", Duration::from_secs(60), || async {
        Ok(to_hq.echoes.load(Ordering::Relaxed) > 0 && to_store.echoes.load(Ordering::Relaxed) > 0)
    })
    .await?;
    let echoes = to_hq.echoes.load(Ordering::Relaxed);
    pg.execute(&hq, "INSERT INTO items VALUES (3, 'sentinel', 1)")
        .await?;
    let client = pg.client(&hq).await?;
    let first = xmin(&client).await?;
    let want = [
        "1:aspirin:9",
        "2:zinc:5",
        "3:sentinel:1",
        "101:ibuprofen:19",
        "102:iron:7",
    ];
    both_hold(&pg, &hq, &maria, &store, &running, &want).await?;
    wait_until(
        "the sentinel's echo is dropped",
        Duration::from_secs(60),
        || async { Ok(to_hq.echoes.load(Ordering::Relaxed) > echoes) },
    )
    .await?;
    assert_eq!(
        xmin(&client).await?,
        first,
        "the sentinel was not written back"
    );
    // The third sink takes each change once, from its own source.
    let want_lines: Vec<String> = want.iter().map(|w| w.to_string()).collect();
    wait_until(
        "the replica holds the rows",
        Duration::from_secs(60),
        || async {
            let rows: Vec<String> = pg
                .client(&replica)
                .await?
                .query(
                    "SELECT id || ':' || name || ':' || qty FROM items ORDER BY id",
                    &[],
                )
                .await
                .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
                .unwrap_or_default();
            Ok(rows == want_lines)
        },
    )
    .await?;
    running.stop().await?;
    Ok(())
}

/// The xmin of the sentinel row: it changes whenever the row is written.
async fn xmin(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    let row = client
        .query_one("SELECT xmin::text FROM items WHERE id = 3", &[])
        .await?;
    Ok(row.get(0))
}

/// Waits until both databases hold exactly `want` (`id:name:qty`, by id).
async fn both_hold(
    pg: &Postgres,
    hq: &str,
    maria: &MariaDb,
    store: &str,
    running: &Running,
    want: &[&str],
) -> anyhow::Result<()> {
    let last = std::sync::Mutex::new(String::new());
    let outcome = wait_until(
        "both sides hold the rows",
        Duration::from_secs(90),
        || async {
            anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
            let client = pg.client(hq).await?;
            let pg_rows: Vec<String> = client
                .query(
                    "SELECT id || ':' || name || ':' || qty FROM items ORDER BY id",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            let maria_rows: Vec<String> = maria
                .query(
                    store,
                    "SELECT concat(id, ':', name, ':', qty) FROM items ORDER BY id",
                )
                .await?
                .lines()
                .map(str::to_string)
                .collect();
            *last.lock().expect("not poisoned") =
                format!("postgres {pg_rows:?}, mariadb {maria_rows:?}");
            Ok(pg_rows == want && maria_rows == want)
        },
    )
    .await;
    outcome.map_err(|e| {
        e.context(format!(
            "want {want:?}; last seen {}",
            last.lock().expect("not poisoned")
        ))
    })
}
