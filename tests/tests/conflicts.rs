//! Conflict resolution end to end: PostgreSQL (head office) and MariaDB (a store) edit the
//! same rows at the same time, both ways through one Tributary, with a third sink taking
//! both. Quantities are counters (every sale on either side counts), the other columns
//! last-writer-wins; after the writes stop the three databases hold the same rows, and
//! Tributary writes nothing more than the new changes need (no echo loop). Tributary
//! restarts halfway through.

use std::sync::atomic::Ordering;
use std::time::Duration;
use tributary::commands::conflicts as queue;
use tributary::Config;
use tributary_schemas::Value;
use tributary_tests::{wait_until, MariaDb, Postgres, Running};

const ROWS: i64 = 10;
/// How many of Tributary's statements on `items` wait for a lock in this database: its
/// write, or, when the store's table version reaches the head office for the first time
/// at that moment, the sink's schema change before it (`ALTER TABLE … items …`).
const WAITING_WRITE: &str = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
     WHERE NOT l.granted AND a.datname = current_database() \
     AND (a.query LIKE 'INSERT INTO %items%' OR a.query LIKE 'ALTER TABLE %items%')";
/// Every other session of the database: state, what it waits for, its query.
const ACTIVITY: &str = "SELECT format('%s %s/%s granted=%s %s', a.state, a.wait_event_type, a.wait_event, \
     coalesce(bool_and(l.granted)::text, '-'), left(a.query, 200)) FROM pg_stat_activity a \
     LEFT JOIN pg_locks l USING (pid) WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
     GROUP BY a.pid, a.state, a.wait_event_type, a.wait_event, a.query";
const START_QTY: i64 = 1_000;
/// Transactions per side, in rounds run concurrently on both sides.
const ROUNDS: usize = 6;
const PER_ROUND: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_on_both_sides_converge_with_counted_quantities() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let maria = MariaDb::start().await?;
    let hq = pg.create_database("hq").await?;
    let replica = pg.create_database("replica").await?;
    let store = maria.create_database("store").await?;
    let three = Three {
        pg: &pg,
        hq: &hq,
        replica: &replica,
        maria: &maria,
        store: &store,
    };
    let mut seed = String::from(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL, qty int NOT NULL);
         ALTER TABLE items REPLICA IDENTITY FULL;",
    );
    for id in 1..=ROWS {
        seed.push_str(&format!(
            "INSERT INTO items VALUES ({id}, 'medicine {id}', 10.00, {START_QTY});"
        ));
    }
    pg.execute(&hq, &seed).await?;
    maria
        .execute(
            &store,
            "CREATE TABLE items (id int PRIMARY KEY, name varchar(100) NOT NULL, price decimal(10,2) NOT NULL, qty int NOT NULL)",
        )
        .await?;
    let state = tempfile::tempdir()?;
    let (hook, notifications) = webhook().await?;
    let text = format!(
        "state_dir = {:?}\nnotify_conflicts = \"http://{hook}/conflicts\"\n[transport]\nkind = \"embedded\"\n\n\
         [sources.hq]\nkind = \"postgres\"\nurl = {:?}\ninclude = [\"public.items\"]\nheartbeat_secs = 1\n\n\
         [sources.store]\nkind = \"mysql\"\nurl = {:?}\ninclude = [\"{store}.items\"]\nheartbeat_secs = 1\n\n\
         [sinks.to_store]\nkind = \"mysql\"\nurl = {:?}\n\n\
         [sinks.to_hq]\nkind = \"postgres\"\nurl = {:?}\nsources = [\"store\"]\ntarget_schema = \"public\"\n\n\
         [sinks.replica]\nkind = \"postgres\"\nurl = {:?}\ntarget_schema = \"public\"\n\n\
         [[conflicts]]\ntable = \"*.items\"\ncolumns = {{ qty = \"counter\", name = \"manual\" }}\n",
        state.path(),
        pg.url(&hq),
        maria.url(&store),
        maria.url(&store),
        pg.url(&hq),
        pg.url(&replica),
    );
    let config = Config::parse(&text, |_| None).map_err(anyhow::Error::msg)?;
    // Each sink writing into a captured database also folds that database's changes.
    assert_eq!(
        config.loops("to_hq"),
        [("store".to_string(), false), ("hq".to_string(), true)]
    );
    let mut running = Running::start(config.clone(), false);

    let initial: Vec<String> = (1..=ROWS)
        .map(|id| format!("{id}:medicine {id}:10.00:{START_QTY}"))
        .collect();
    three
        .wait(
            "all three hold the rows",
            &running,
            str::to_string,
            |seen| seen.iter().all(|rows| *rows == initial),
        )
        .await?;
    // The store's capture has taken its snapshot once it streams the binlog (its binlog
    // dump shows in the server's process list). A sale made before that snapshot would be
    // in it only, as a row image, and the merge takes a later source's snapshot image as
    // no change (its counters' deltas are unknown).
    wait_until(
        "the store's capture streaming the binlog",
        Duration::from_secs(60),
        || async {
            let dumps = maria
                .query(
                    &store,
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
                )
                .await?;
            Ok(dumps.trim() != "0")
        },
    )
    .await?;

    // Both sides sell and reprice the same rows at the same time. Each statement is a
    // transaction of its own.
    let mut sold = vec![0i64; ROWS as usize + 1];
    for round in 0..ROUNDS {
        if round == ROUNDS / 2 {
            // Halfway, Tributary restarts: the merge states live in the sinks, and the
            // merge goes on from them.
            running.stop().await?;
            running = Running::start(config.clone(), false);
        }
        let mut at_hq = String::new();
        let mut at_store = String::new();
        for i in 0..PER_ROUND {
            let id = (i as i64 % ROWS) + 1;
            let n = round * PER_ROUND + i;
            // (One simple query is one transaction in PostgreSQL unless it says otherwise.)
            at_hq.push_str(&format!(
                "BEGIN; UPDATE items SET qty = qty - 1, price = {}.25 WHERE id = {id}; COMMIT;",
                10 + n % 7
            ));
            at_store.push_str(&format!(
                "UPDATE items SET qty = qty - 2, name = 'store name {n}' WHERE id = {id};"
            ));
            sold[id as usize] += 3;
        }
        let (a, b) = tokio::join!(pg.execute(&hq, &at_hq), maria.execute(&store, &at_store));
        a?;
        b?;
    }
    // A sale at the head office that the store's next merged write overwrites: the head
    // office's transaction holds the row while Tributary's write of the store's sale
    // waits for it, so that write cannot count the head office's sale, and the sale is
    // folded into the merge only afterwards.
    three
        .at_once(
            "UPDATE items SET qty = qty - 5 WHERE id = 1",
            "UPDATE items SET qty = qty - 7 WHERE id = 1",
        )
        .await?;
    sold[1] += 12;

    // Rows each side inserts on its own.
    pg.execute(&hq, "INSERT INTO items VALUES (100, 'hq only', 1.00, 5)")
        .await?;
    maria
        .execute(
            &store,
            "INSERT INTO items VALUES (200, 'store only', 2.00, 7)",
        )
        .await?;

    // Every sale counts, on all three.
    let want_qty: Vec<String> = (1..=ROWS)
        .map(|id| format!("{id}:{}", START_QTY - sold[id as usize]))
        .chain(["100:5".to_string(), "200:7".to_string()])
        .collect();
    let id_qty = |r: &str| {
        let fields: Vec<&str> = r.split(':').collect();
        format!("{}:{}", fields[0], fields[fields.len() - 1])
    };
    three
        .wait(
            "every sale counted on all three",
            &running,
            id_qty,
            |seen| seen.iter().all(|rows| *rows == want_qty),
        )
        .await?;
    // And the three hold the same rows (each price and name is one side's last write).
    let converged = three.same(&running).await?;
    assert_eq!(converged.len(), ROWS as usize + 2);
    let merged: u64 = running
        .stats
        .values()
        .map(|s| s.conflicts.load(Ordering::Relaxed))
        .sum();
    assert!(
        merged > 0,
        "concurrent edits of the same rows were resolved as conflicts"
    );
    // The conflict log holds each of them with both versions and the strategy applied.
    let mut logged = 0;
    for entry in std::fs::read_dir(state.path().join("conflicts"))? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".conflicts.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(path)?.lines() {
            let record: serde_json::Value = serde_json::from_str(line)?;
            assert!(
                record["change"].is_object() && record["result"].is_object(),
                "{record}"
            );
            assert!(
                record["table"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(".items")),
                "{record}"
            );
            if record["columns"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["column"] == "qty" && c["strategy"] == "counter")
            }) {
                logged += 1;
            }
        }
    }
    assert!(logged > 0, "counted sales are in the conflict log");
    // And the webhook was told of them.
    wait_until(
        "a conflict notification",
        Duration::from_secs(30),
        || async {
            let bodies = notifications.lock().expect("not poisoned");
            Ok(bodies.iter().any(|b| {
                b["sink"].is_string()
                    && b["conflicts"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|r| r["table"].as_str().is_some_and(|t| t.ends_with(".items")))
                    })
            }))
        },
    )
    .await?;

    // Both sides rename the same medicine at once (the head office's transaction is
    // open while the store's rename is written into it): the name is a `manual` column,
    // so the conflict waits in the queue with both names, and the last writer's name
    // stands meanwhile.
    three
        .at_once(
            "UPDATE items SET name = 'hq name' WHERE id = 3",
            "UPDATE items SET name = 'store name' WHERE id = 3",
        )
        .await?;
    // A queued value's text (empty for anything but text).
    let names = |v: &Option<Value>| match v {
        Some(Value::Text(t)) => t.clone(),
        _ => String::new(),
    };
    let queued = std::sync::Mutex::new(None);
    wait_until(
        "the rename conflict is queued",
        Duration::from_secs(60),
        || async {
            let found = queue::waiting(&config)?.into_iter().find(|e| {
                e.column == "name"
                    && e.key.get("id") == Some(&Value::Int32(3))
                    && [&e.current, &e.incoming]
                        .iter()
                        .all(|v| ["hq name", "store name"].contains(&names(v).as_str()))
            });
            let done = found.is_some();
            *queued.lock().expect("not poisoned") = found;
            Ok(done)
        },
    )
    .await?;
    let entry = queued
        .into_inner()
        .expect("not poisoned")
        .expect("found above");
    let mut pair = [names(&entry.current), names(&entry.incoming)];
    pair.sort();
    assert_eq!(pair, ["hq name", "store name"], "{entry:?}");
    let rows = three.same(&running).await?;
    let standing = rows
        .iter()
        .find(|r| r.starts_with("3:"))
        .and_then(|r| r.split(':').nth(1))
        .unwrap_or_default()
        .to_string();
    // A person keeps the other name: it is written at the source and reaches all three.
    let (take, chosen) = if names(&entry.incoming) == standing {
        ("current", names(&entry.current))
    } else {
        ("incoming", names(&entry.incoming))
    };
    queue::resolve(&config, &entry.id, take).await?;
    three
        .wait(
            "the choice reached all three",
            &running,
            str::to_string,
            |seen| {
                seen.iter()
                    .all(|rows| rows.iter().any(|r| r.starts_with(&format!("3:{chosen}:"))))
            },
        )
        .await?;
    assert!(
        queue::waiting(&config)?
            .iter()
            .all(|e| !(e.column == "name" && e.key.get("id") == Some(&Value::Int32(3)))),
        "the resolved conflict left the queue"
    );

    // No loop: a new row costs exactly two writes (into the store and into the replica),
    // and no echo starts more. The first sentinel drains what the load left in flight.
    three.sentinel(&running, 1000).await?;
    let before = total_writes(&running);
    three.sentinel(&running, 1001).await?;
    assert_eq!(
        total_writes(&running) - before,
        2,
        "one new row is written once into each sink that lacks it"
    );
    running.stop().await?;
    Ok(())
}

/// Rows written by every apply loop, merged or not.
fn total_writes(running: &Running) -> u64 {
    running
        .stats
        .values()
        .map(|s| s.merged_rows.load(Ordering::Relaxed))
        .sum()
}

/// The three databases that must converge.
#[derive(Clone, Copy)]
struct Three<'a> {
    pg: &'a Postgres,
    hq: &'a str,
    replica: &'a str,
    maria: &'a MariaDb,
    store: &'a str,
}

impl Three<'_> {
    /// Waits until the three hold the same rows; returns them.
    async fn same(&self, running: &Running) -> anyhow::Result<Vec<String>> {
        let [rows, _, _] = self
            .wait(
                "the three hold the same rows",
                running,
                str::to_string,
                |seen| seen[0] == seen[1] && seen[1] == seen[2],
            )
            .await?;
        Ok(rows)
    }

    /// Runs `at_hq` in a head-office transaction that stays open until Tributary's
    /// write of `at_store` (run at the store meanwhile) waits for it, then commits: two
    /// edits of the same row, each made without the other.
    async fn at_once(&self, at_hq: &str, at_store: &str) -> anyhow::Result<()> {
        let held = self.pg.client(self.hq).await?;
        held.batch_execute(&format!("BEGIN; {at_hq}")).await?;
        self.maria.execute(self.store, at_store).await?;
        let watcher = self.pg.client(self.hq).await?;
        let waited = wait_until(
            "Tributary's write waits for the head office's transaction",
            Duration::from_secs(60),
            || async {
                let waiting: i64 = watcher.query_one(WAITING_WRITE, &[]).await?.get(0);
                Ok(waiting > 0)
            },
        )
        .await;
        if let Err(e) = waited {
            // What every session of the database was doing, to tell why.
            let activity: Vec<String> = watcher
                .query(ACTIVITY, &[])
                .await?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            return Err(e.context(format!("sessions of the head office: {activity:#?}")));
        }
        held.batch_execute("COMMIT").await?;
        Ok(())
    }

    /// Inserts row `id` at the head office and waits until it reached the store and the
    /// replica, and the store's capture brought Tributary's write back to the loops that
    /// read the store (which must write nothing for it).
    async fn sentinel(&self, running: &Running, id: i64) -> anyhow::Result<()> {
        let Three {
            pg,
            hq,
            replica,
            maria,
            store,
        } = *self;
        let echoes = |key: &str| running.stats[key].echoes.load(Ordering::Relaxed);
        let (own, third) = (echoes("to_store/store"), echoes("replica/store"));
        pg.execute(
            hq,
            &format!("INSERT INTO items VALUES ({id}, 'sentinel', 1.00, 1)"),
        )
        .await?;
        wait_until(
            "the sentinel went round",
            Duration::from_secs(90),
            || async {
                anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
                let in_store = maria
                    .query(
                        store,
                        &format!("SELECT count(*) FROM items WHERE id = {id}"),
                    )
                    .await?
                    .trim()
                    == "1";
                let in_replica = pg
                    .client(replica)
                    .await?
                    .query_one(&format!("SELECT count(*) FROM items WHERE id = {id}"), &[])
                    .await?
                    .get::<_, i64>(0)
                    == 1;
                let folded = pg
                    .client(hq)
                    .await?
                    .query_one(
                        "SELECT count(*) FROM tributary.merge_state WHERE key = $1",
                        &[&format!("[\"{id}\"]")],
                    )
                    .await?
                    .get::<_, i64>(0)
                    == 1;
                Ok(in_store
                    && in_replica
                    && folded
                    && echoes("to_store/store") > own
                    && echoes("replica/store") > third)
            },
        )
        .await
    }

    /// `id:name:price:qty` of every row, by id, in each of the three databases.
    async fn contents(&self) -> anyhow::Result<[Vec<String>; 3]> {
        let Three {
            pg,
            hq,
            replica,
            maria,
            store,
        } = *self;
        let pg_rows = |db: String| async move {
            let rows: Vec<String> = pg
                .client(&db)
                .await?
                .query(
                    "SELECT id || ':' || name || ':' || price || ':' || qty FROM items ORDER BY id",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            anyhow::Ok(rows)
        };
        let maria_rows: Vec<String> = maria
            .query(
                store,
                "SELECT concat(id, ':', name, ':', price, ':', qty) FROM items ORDER BY id",
            )
            .await?
            .lines()
            .map(str::to_string)
            .collect();
        Ok([
            pg_rows(hq.to_string()).await?,
            maria_rows,
            pg_rows(replica.to_string()).await?,
        ])
    }

    /// Waits until `done` holds for the three databases' rows (see [`Three::contents`]), each
    /// mapped by `view`; returns the last rows seen.
    async fn wait(
        &self,
        what: &str,
        running: &Running,
        view: impl Fn(&str) -> String,
        done: impl Fn(&[Vec<String>; 3]) -> bool,
    ) -> anyhow::Result<[Vec<String>; 3]> {
        let last = std::sync::Mutex::new(None);
        wait_until(what, Duration::from_secs(120), || async {
            anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
            let seen = self
                .contents()
                .await?
                .map(|rows| rows.iter().map(|r| view(r)).collect::<Vec<_>>());
            let ok = done(&seen);
            *last.lock().expect("not poisoned") = Some(seen);
            Ok(ok)
        })
        .await
        .map_err(|e| {
            e.context(format!(
                "last seen {:?}",
                last.lock().expect("not poisoned")
            ))
        })?;
        Ok(last
            .into_inner()
            .expect("not poisoned")
            .expect("set by the wait"))
    }
}

/// A webhook endpoint on a free port: every POST's JSON body is kept; answers 200.
async fn webhook() -> anyhow::Result<(
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if data.len() < end + 4 + length {
                        continue;
                    }
                    let body = &data[end + 4..end + 4 + length];
                    if let Ok(json) = serde_json::from_slice(body) {
                        kept.lock().expect("not poisoned").push(json);
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    data.drain(..end + 4 + length);
                }
            });
        }
    });
    Ok((address, bodies))
}
