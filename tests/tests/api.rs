//! The control plane's HTTP server in a run: the health checks without a token, the
//! readiness of every task (and which one is not, when a sink's server goes away), and
//! the tokens guarding everything else (401 without a valid one, 403 for a read token on
//! what changes state, 413 for a body over the limit), and `/metrics` under a write load.

use std::time::Duration;
use tributary::runtime::Roles;
use tributary::Config;
use tributary_tests::{free_port, wait_until, Postgres, Running};

mod common;

const READ: &str = "read-token-0123456789";
const OPS: &str = "ops-token-0123456789ab";

/// The tests' `[[api.tokens]]`: `monitoring` (read, `READ`) and `ops` (operate, `OPS`).
const TOKENS: &str =
    "[[api.tokens]]\nname = \"monitoring\"\nrole = \"read\"\nsecret = \"${READ_TOKEN}\"\n\
     [[api.tokens]]\nname = \"ops\"\nrole = \"operate\"\nsecret = \"${OPS_TOKEN}\"\n";

/// Starts the capture, the control plane and (when `pipeline`) the apply loops of
/// configuration `text`, with the tokens' secrets in `READ_TOKEN` and `OPS_TOKEN`.
fn start(text: &str, pipeline: bool) -> anyhow::Result<Running> {
    let config = Config::parse(text, |name| match name {
        "READ_TOKEN" => Some(READ.into()),
        "OPS_TOKEN" => Some(OPS.into()),
        _ => None,
    })
    .map_err(anyhow::Error::msg)?;
    Ok(Running::start_roles(
        config,
        Roles {
            capture: true,
            pipeline,
            registry: false,
            api: true,
        },
    ))
}

/// GET `path` with `token` (if any): the status and the JSON body.
async fn get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut request = http.get(format!("{base}{path}"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_tokens() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let source = Postgres::start().await?;
    let sink = Postgres::start().await?;
    let src = source.create_database("api").await?;
    source
        .execute(
            &src,
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
        )
        .await?;
    let dst = sink.create_database("api").await?;
    let state = tempfile::tempdir()?;
    let port = free_port();
    let text = format!(
        "state_dir = {:?}\n[sources.hq]\nkind = \"postgres\"\nurl = {:?}\n\
         [sinks.replica]\nkind = \"postgres\"\nurl = {:?}\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 1024\n\
         {TOKENS}\
         [backup]\nstore = {:?}\nsnapshot_schedule = \"*/2 * * * * *\"\n",
        state.path(),
        source.url(&src),
        sink.url(&dst),
        state.path().join("backups"),
    );
    let running = start(&text, true)?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // The health checks need no token; the run is ready once every task runs.
    wait_until(
        "the control plane answers",
        Duration::from_secs(30),
        || async {
            Ok(get(&http, &base, "/healthz", None)
                .await
                .is_ok_and(|(s, _)| s == 200))
        },
    )
    .await?;
    wait_until("every task runs", Duration::from_secs(60), || async {
        Ok(get(&http, &base, "/readyz", None).await?.0 == 200)
    })
    .await?;

    // Everything else needs a valid token.
    let (status, body) = get(&http, &base, "/subjects", None).await?;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("Bearer")),
        "{body}"
    );
    assert_eq!(
        get(&http, &base, "/subjects", Some("wrong-token-0123456789"))
            .await?
            .0,
        401
    );
    assert_eq!(
        get(&http, &base, "/subjects", Some(&READ[..READ.len() - 1]))
            .await?
            .0,
        401
    );
    let (status, body) = get(&http, &base, "/subjects", Some(READ)).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array(), "{body}");
    let unknown = http.get(format!("{base}/no-such-route")).send().await?;
    assert_eq!(
        unknown.status().as_u16(),
        401,
        "no route is told apart without a token"
    );

    // A read token may not change state; an operate token may, within the body limit.
    let post = |token: &'static str, body: String| {
        http.post(format!("{base}/subjects/hq.public.t-value/versions"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let small = r#"{"schema": "\"string\""}"#.to_string();
    let refused = post(READ, small.clone()).await?;
    assert_eq!(refused.status().as_u16(), 403);
    let body: serde_json::Value = refused.json().await?;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("monitoring")),
        "{body}"
    );
    let allowed = post(OPS, small).await?.status().as_u16();
    assert!(
        ![401, 403, 413].contains(&allowed),
        "operate token got {allowed}"
    );
    let large = format!(r#"{{"schema": "{}"}}"#, "x".repeat(4096));
    assert_eq!(post(OPS, large).await?.status().as_u16(), 413);
    // The same without a Content-Length (chunked), on a route that reads no body.
    for (path, size) in [
        ("/api/v1/tasks/capture%20hq/restart", 4096),
        ("/subjects/x/versions", 4096),
    ] {
        let status = chunked_post(port, path, OPS, size).await?;
        assert!(status.contains(" 413 "), "{path}: {status}");
    }
    let small_chunked = chunked_post(port, "/api/v1/tasks/capture%20hq/restart", OPS, 10).await?;
    assert!(
        small_chunked.contains(" 409 "),
        "within the limit: {small_chunked}"
    );

    // The scheduled snapshots show in the metrics: the newest one's time and the rounds.
    wait_until(
        "a scheduled snapshot in the metrics",
        Duration::from_secs(60),
        || async {
            let s = scrape(&http, &base, READ).await?;
            Ok(value(
                &s,
                "tributary_backup_last_snapshot_timestamp_seconds",
                &[("name", "hq")],
            )
            .is_some_and(|t| t > 1.7e9)
                && value(
                    &s,
                    "tributary_backup_runs_total",
                    &[("kind", "sources"), ("result", "ok")],
                )
                .is_some_and(|n| n >= 1.0)
                && value(&s, "tributary_backup_next_run_timestamp_seconds", &[]).is_some())
        },
    )
    .await?;
    let s = scrape(&http, &base, READ).await?;
    assert_eq!(
        value(&s, "tributary_task_up", &[("task", "archive hq")]),
        Some(1.0)
    );

    // The sink's server goes away: its apply loop retries, and readiness names it.
    drop(sink);
    // A change to apply, so the loop finds out.
    source.execute(&src, "INSERT INTO t VALUES (2)").await?;
    wait_until(
        "readiness names the failing apply loop",
        Duration::from_secs(60),
        || async {
            let (status, body) = get(&http, &base, "/readyz", None).await?;
            let (_, tasks) = get(&http, &base, "/api/v1/tasks", Some(READ)).await?;
            let task = &tasks["apply replica/hq"];
            Ok(status == 503
                && body["tasks"]["apply replica/hq"] == "retrying"
                && body["tasks"].get("capture hq").is_none()
                && task["state"] == "retrying"
                && task["error"].as_str().is_some_and(|e| !e.is_empty()))
        },
    )
    .await?;
    assert_eq!(
        get(&http, &base, "/healthz", None).await?.0,
        200,
        "alive all the same"
    );
    // Its next attempts fail to connect: it stays retrying (never shown running while
    // not connected), and no attempt counts as a restart.
    let (_, tasks) = get(&http, &base, "/api/v1/tasks", Some(READ)).await?;
    let first_since = tasks["apply replica/hq"]["since"].clone();
    let restarts = tasks["apply replica/hq"]["restarts"].clone();
    wait_until(
        "another attempt failed",
        Duration::from_secs(30),
        || async {
            let (_, tasks) = get(&http, &base, "/api/v1/tasks", Some(READ)).await?;
            Ok(tasks["apply replica/hq"]["since"] != first_since)
        },
    )
    .await?;
    let (_, tasks) = get(&http, &base, "/api/v1/tasks", Some(READ)).await?;
    assert_eq!(tasks["apply replica/hq"]["state"], "retrying", "{tasks}");
    assert_eq!(tasks["apply replica/hq"]["restarts"], restarts, "{tasks}");
    running.stop().await?;
    Ok(())
}

/// POSTs `size` bytes to `path` as one chunk of a chunked body (no Content-Length);
/// the response's status line.
async fn chunked_post(port: u16, path: &str, token: &str, size: usize) -> anyhow::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{size:x}\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&vec![b' '; size]).await?;
    stream.write_all(b"\r\n0\r\n\r\n").await?;
    let mut status = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut status)
        .await?;
    Ok(status)
}

/// `/metrics` with `token`, parsed by a Prometheus text parser.
async fn scrape(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> anyhow::Result<prometheus_parse::Scrape> {
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(prometheus_parse::Scrape::parse(
        text.lines().map(|l| Ok(l.to_string())),
    )?)
}

/// The value of series `name` whose labels include `labels` (summed over the others);
/// None when there is no such series.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        if labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// The apply loops of the load scenario, as (sink, source).
const LOOPS: [(&str, &str); 3] = [("office", "hq"), ("office", "store"), ("shop", "hq")];

/// A PostgreSQL and a MariaDB source into a PostgreSQL and a MariaDB sink, over the
/// transport `kafka` chooses: under a write load the counters rise from one scrape to the
/// next; after it every apply loop has applied every event and its lag is back under a
/// second, the capture lags are small, every task is up and the run is ready.
async fn metrics_under_load(kafka: bool) -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let maria = tributary_tests::MariaDb::start().await?;
    let transport = common::e2e::Transport::start(kafka).await?;
    let hq = pg.create_database("hq").await?;
    let office = pg.create_database("office").await?;
    let store = maria.create_database("store").await?;
    let shop = maria.create_database("shop").await?;
    pg.execute(
        &hq,
        "CREATE TABLE sales (id int PRIMARY KEY, qty int NOT NULL);",
    )
    .await?;
    maria
        .execute(
            &store,
            "CREATE TABLE stock (id int PRIMARY KEY, qty int NOT NULL);",
        )
        .await?;
    let state = tempfile::tempdir()?;
    let port = free_port();
    let text = format!(
        "state_dir = {:?}\n{}\n\
         [sources.hq]\nkind = \"postgres\"\nurl = {:?}\n\
         [sources.store]\nkind = \"mysql\"\nurl = {:?}\ninclude = [\"{store}.*\"]\nheartbeat_secs = 1\n\
         [sinks.office]\nkind = \"postgres\"\nurl = {:?}\n\
         [sinks.shop]\nkind = \"mysql\"\nurl = {:?}\nsources = [\"hq\"]\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\n\
         {TOKENS}",
        state.path(),
        transport.toml(),
        pg.url(&hq),
        maria.url(&store),
        pg.url(&office),
        maria.url(&shop),
    );
    let running = start(&text, true)?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until("every task runs", Duration::from_secs(90), || async {
        Ok(get(&http, &base, "/readyz", None)
            .await
            .is_ok_and(|(s, _)| s == 200))
    })
    .await?;

    // A first row on each source, applied everywhere: the initial snapshots are over, and
    // every event from here on is streamed.
    pg.execute(&hq, "INSERT INTO sales VALUES (0, 0)").await?;
    maria
        .execute(&store, "INSERT INTO stock VALUES (0, 0)")
        .await?;
    wait_until(
        "the first rows applied",
        Duration::from_secs(60),
        || async {
            let s = scrape(&http, &base, READ).await?;
            Ok(LOOPS.iter().all(|(sink, source)| {
                value(
                    &s,
                    "tributary_apply_events_total",
                    &[("sink", sink), ("source", source)],
                )
                .is_some_and(|v| v >= 1.0)
            }))
        },
    )
    .await?;
    let before = scrape(&http, &base, READ).await?;
    let base_value =
        |name: &str, labels: &[(&str, &str)]| value(&before, name, labels).unwrap_or(0.0);

    // The load: transactions of inserts and updates on both sources, while scraping.
    const ROUNDS: i32 = 40;
    let load = {
        let (pg_url, maria_url) = (pg.url(&hq), maria.url(&store));
        tokio::spawn(async move {
            let (client, connection) =
                tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let pool = mysql_async::Pool::new(maria_url.as_str());
            let mut conn = pool.get_conn().await?;
            use mysql_async::prelude::Queryable;
            for round in 0..ROUNDS {
                let (from, to) = (round * 25 + 1, round * 25 + 25);
                client
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO sales SELECT g, 1 FROM generate_series({from}, {to}) g;
                         UPDATE sales SET qty = qty + 1 WHERE id BETWEEN {from} AND {from} + 4; COMMIT;"
                    ))
                    .await?;
                conn.query_drop(format!(
                    "INSERT INTO stock SELECT seq, 1 FROM seq_{from}_to_{to}"
                ))
                .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(conn);
            pool.disconnect().await?;
            anyhow::Ok(())
        })
    };
    // Events each apply loop must apply: 25 inserts and 5 updates a round from hq, 25
    // inserts from store.
    let load_events = |source: &str| f64::from(ROUNDS) * if source == "hq" { 30.0 } else { 25.0 };
    let expected = |sink: &str, source: &str| {
        base_value(
            "tributary_apply_events_total",
            &[("sink", sink), ("source", source)],
        ) + load_events(source)
    };

    // Two scrapes during the load: every counter of the load rises from one to the next.
    let first = std::sync::Mutex::new(None);
    wait_until(
        "a scrape during the load with every loop applying",
        Duration::from_secs(60),
        || async {
            let s = scrape(&http, &base, READ).await?;
            let started = LOOPS.iter().all(|(sink, source)| {
                value(
                    &s,
                    "tributary_apply_events_total",
                    &[("sink", sink), ("source", source)],
                )
                .is_some_and(|v| {
                    v > base_value(
                        "tributary_apply_events_total",
                        &[("sink", sink), ("source", source)],
                    ) && v < expected(sink, source)
                })
            });
            if started {
                *first.lock().expect("not poisoned") = Some(s);
            }
            Ok(started)
        },
    )
    .await?;
    let first = first
        .into_inner()
        .expect("not poisoned")
        .expect("set when the wait succeeded");
    let rising = |earlier: &prometheus_parse::Scrape, later: &prometheus_parse::Scrape| {
        let mut all = vec![
            (
                "tributary_capture_events_total",
                vec![("source", "hq"), ("op", "insert")],
            ),
            (
                "tributary_capture_events_total",
                vec![("source", "store"), ("op", "insert")],
            ),
            (
                "tributary_capture_transactions_total",
                vec![("source", "hq")],
            ),
        ];
        for (sink, source) in LOOPS {
            all.push((
                "tributary_apply_events_total",
                vec![("sink", sink), ("source", source)],
            ));
            all.push((
                "tributary_apply_transactions_total",
                vec![("sink", sink), ("source", source)],
            ));
        }
        all.into_iter()
            .filter(|(name, labels)| {
                value(later, name, labels).unwrap_or(0.0)
                    <= value(earlier, name, labels).unwrap_or(0.0)
            })
            .map(|(name, labels)| format!("{name}{labels:?}"))
            .collect::<Vec<_>>()
    };
    let second = std::sync::Mutex::new(None);
    let max_lag = std::sync::Mutex::new(0.0f64);
    wait_until(
        "a later scrape with every counter risen",
        Duration::from_secs(60),
        || async {
            let s = scrape(&http, &base, READ).await?;
            for (sink, source) in LOOPS {
                let lag = value(
                    &s,
                    "tributary_apply_lag_seconds",
                    &[("sink", sink), ("source", source)],
                );
                let mut max = max_lag.lock().expect("not poisoned");
                *max = max.max(lag.unwrap_or(0.0));
            }
            let flat = rising(&first, &s);
            let done = flat.is_empty();
            if done {
                *second.lock().expect("not poisoned") = Some(s);
            } else {
                tracing::info!(?flat, "not risen yet");
            }
            Ok(done)
        },
    )
    .await?;
    let second = second
        .into_inner()
        .expect("not poisoned")
        .expect("set when the wait succeeded");
    let max_lag = max_lag.into_inner().expect("not poisoned");
    assert!(max_lag > 0.0, "an apply lag above 0 during the load");
    assert!(
        !load.is_finished(),
        "the load ended before the counters were seen rising during it; make it longer"
    );
    load.await??;

    // After the load: every event applied, lags back under a second, every task up.
    wait_until(
        "every loop applied the load and its lag fell under 1 s",
        Duration::from_secs(90),
        || async {
            let s = scrape(&http, &base, READ).await?;
            let waiting: Vec<_> = LOOPS
                .iter()
                .filter(|(sink, source)| {
                    let labels = [("sink", *sink), ("source", *source)];
                    value(&s, "tributary_apply_events_total", &labels)
                        != Some(expected(sink, source))
                        || !value(&s, "tributary_apply_lag_seconds", &labels)
                            .is_some_and(|l| l < 1.0)
                })
                .map(|(sink, source)| {
                    let labels = [("sink", *sink), ("source", *source)];
                    format!(
                        "{sink}/{source}: events {:?} of {}, lag {:?}",
                        value(&s, "tributary_apply_events_total", &labels),
                        expected(sink, source),
                        value(&s, "tributary_apply_lag_seconds", &labels)
                    )
                })
                .collect();
            anyhow::ensure!(waiting.is_empty(), "{waiting:?}");
            Ok(true)
        },
    )
    .await?;
    let last = scrape(&http, &base, READ).await?;
    for (sink, source) in LOOPS {
        let labels = [("sink", sink), ("source", source)];
        assert!(
            value(&last, "tributary_apply_batch_seconds_count", &labels).is_some_and(|n| n >= 1.0),
            "no batch duration for {sink}/{source}"
        );
        assert!(
            value(
                &last,
                "tributary_apply_last_commit_timestamp_seconds",
                &labels
            )
            .is_some(),
            "no last commit time for {sink}/{source}"
        );
    }
    for source in ["hq", "store"] {
        let lag = value(
            &last,
            "tributary_capture_lag_seconds",
            &[("source", source)],
        );
        assert!(
            lag.is_some_and(|l| (0.0..5.0).contains(&l)),
            "capture lag of {source}: {lag:?}"
        );
    }
    assert_eq!(
        value(
            &last,
            "tributary_capture_events_total",
            &[
                ("source", "hq"),
                ("table", "public.sales"),
                ("op", "update")
            ]
        ),
        Some(
            base_value(
                "tributary_capture_events_total",
                &[("source", "hq"), ("op", "update")]
            ) + f64::from(ROUNDS) * 5.0
        ),
        "updates captured from hq, by table and operation"
    );
    let stock = format!("{store}.stock");
    let stock_inserts = [
        ("source", "store"),
        ("table", stock.as_str()),
        ("op", "insert"),
    ];
    assert_eq!(
        value(&last, "tributary_capture_events_total", &stock_inserts),
        Some(base_value("tributary_capture_events_total", &stock_inserts) + load_events("store")),
        "inserts captured from store, by table and operation"
    );
    for task in [
        "capture hq",
        "capture store",
        "apply office/hq",
        "apply office/store",
        "apply shop/hq",
    ] {
        assert_eq!(
            value(&last, "tributary_task_up", &[("task", task)]),
            Some(1.0),
            "{task}"
        );
    }
    assert!(value(&last, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    assert!(value(&last, "process_open_fds", &[]).is_some_and(|v| v > 0.0));
    assert!(second.samples.len() >= first.samples.len());
    assert_eq!(get(&http, &base, "/readyz", None).await?.0, 200);
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await?
            .status()
            .as_u16(),
        401,
        "metrics need a token"
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_under_load_on_the_embedded_log() -> anyhow::Result<()> {
    metrics_under_load(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_under_load_on_kafka() -> anyhow::Result<()> {
    metrics_under_load(true).await
}

/// Rows of `t` in `db`, as `id:v` sorted by id.
async fn rows(pg: &Postgres, db: &str) -> anyhow::Result<String> {
    let client = pg.client(db).await?;
    let rows = client
        .query("SELECT id, v FROM t ORDER BY id", &[])
        .await
        // The sink creates the table with its first row.
        .unwrap_or_default();
    Ok(rows
        .iter()
        .map(|r| format!("{}:{}", r.get::<_, i32>(0), r.get::<_, String>(1)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// One sink refuses a value (a check constraint): only its apply loop fails, shown
/// `failed` in `/readyz` and `/metrics`, with its error in `/api/v1/tasks`, while the other
/// sink goes on applying. A restart request needs an operate token; once the constraint
/// is gone, the restarted loop catches up and both sinks equal the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_refusing_a_value_fails_alone_and_restarts_on_request() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let src = pg.create_database("src").await?;
    let good = pg.create_database("good").await?;
    let bad = pg.create_database("bad").await?;
    pg.execute(
        &src,
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); INSERT INTO t VALUES (1, 'a');",
    )
    .await?;
    pg.execute(
        &bad,
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL CONSTRAINT no_poison CHECK (v <> 'poison'));",
    )
    .await?;
    let state = tempfile::tempdir()?;
    let port = free_port();
    let text = format!(
        "state_dir = {:?}\n[sources.hq]\nkind = \"postgres\"\nurl = {:?}\n\
         [sinks.good]\nkind = \"postgres\"\nurl = {:?}\n\
         [sinks.bad]\nkind = \"postgres\"\nurl = {:?}\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\n\
         {TOKENS}",
        state.path(),
        pg.url(&src),
        pg.url(&good),
        pg.url(&bad),
    );
    let running = start(&text, true)?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(
        "both sinks hold the first row",
        Duration::from_secs(60),
        || async { Ok(rows(&pg, &good).await? == "1:a" && rows(&pg, &bad).await? == "1:a") },
    )
    .await?;

    // The poisoned row: the bad sink's loop fails, within 5 s, and alone.
    pg.execute(&src, "INSERT INTO t VALUES (2, 'poison')")
        .await?;
    let failed_at = std::time::Instant::now();
    wait_until(
        "the bad sink's loop is failed, naming the constraint",
        Duration::from_secs(30),
        || async {
            let (status, body) = get(&http, &base, "/readyz", None).await?;
            let (_, tasks) = get(&http, &base, "/api/v1/tasks", Some(READ)).await?;
            let task = &tasks["apply bad/hq"];
            Ok(status == 503
                && body["tasks"]["apply bad/hq"] == "failed"
                && body["tasks"].as_object().is_some_and(|t| t.len() == 1)
                && !body.to_string().contains("no_poison")
                && task["state"] == "failed"
                && task["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("no_poison")))
        },
    )
    .await?;
    let took = failed_at.elapsed();
    assert!(took < Duration::from_secs(5), "failed shown after {took:?}");
    let (_, tasks) = get(&http, &base, "/api/v1/tasks", Some(READ)).await?;
    assert_eq!(tasks["apply bad/hq"]["state"], "failed", "{tasks}");
    assert_eq!(tasks["apply good/hq"]["state"], "running", "{tasks}");
    assert_eq!(tasks["capture hq"]["state"], "running", "{tasks}");
    let metrics = scrape(&http, &base, READ).await?;
    assert_eq!(
        value(
            &metrics,
            "tributary_task_failed",
            &[("task", "apply bad/hq")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&metrics, "tributary_task_up", &[("task", "apply good/hq")]),
        Some(1.0)
    );

    // The good sink goes on applying, its counters rising.
    let applied = |s: &prometheus_parse::Scrape| {
        value(
            s,
            "tributary_apply_events_total",
            &[("sink", "good"), ("source", "hq")],
        )
        .unwrap_or(0.0)
    };
    let before = applied(&metrics);
    for id in 3..=5 {
        pg.execute(&src, &format!("INSERT INTO t VALUES ({id}, 'x{id}')"))
            .await?;
        wait_until(
            "the good sink applies the next row",
            Duration::from_secs(30),
            || async { Ok(rows(&pg, &good).await?.ends_with(&format!("{id}:x{id}"))) },
        )
        .await?;
    }
    assert!(applied(&scrape(&http, &base, READ).await?) >= before + 3.0);
    assert_eq!(
        rows(&pg, &bad).await?,
        "1:a",
        "nothing past the refused row"
    );

    // A restart needs an operate token, and a failed task.
    let restart = |task: &str, token: &'static str| {
        http.post(format!(
            "{base}/api/v1/tasks/{}/restart",
            task.replace(' ', "%20").replace('/', "%2F")
        ))
        .bearer_auth(token)
        .send()
    };
    assert_eq!(restart("apply bad/hq", READ).await?.status().as_u16(), 403);
    assert_eq!(restart("apply good/hq", OPS).await?.status().as_u16(), 409);
    assert_eq!(restart("no such task", OPS).await?.status().as_u16(), 404);

    // The value is allowed now: a restart catches the bad sink up.
    pg.execute(&bad, "ALTER TABLE t DROP CONSTRAINT no_poison")
        .await?;
    let response = restart("apply bad/hq", OPS).await?;
    assert_eq!(response.status().as_u16(), 202);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["by"], "ops", "{body}");
    wait_until(
        "both sinks equal the source",
        Duration::from_secs(60),
        || async {
            let want = rows(&pg, &src).await?;
            Ok(rows(&pg, &good).await? == want && rows(&pg, &bad).await? == want)
        },
    )
    .await?;
    wait_until("every task runs again", Duration::from_secs(30), || async {
        Ok(get(&http, &base, "/readyz", None).await?.0 == 200)
    })
    .await?;
    let (_, tasks) = get(&http, &base, "/api/v1/tasks", Some(READ)).await?;
    assert_eq!(tasks["apply bad/hq"]["restarts"], 1, "{tasks}");
    running.stop().await?;
    Ok(())
}

/// Without any token configured the control plane listens on loopback only, and lets
/// local callers in: the metrics and the API answer without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_loopback_callers_need_none() -> anyhow::Result<()> {
    tributary_tests::init_tracing();
    let pg = Postgres::start().await?;
    let src = pg.create_database("src").await?;
    pg.execute(&src, "CREATE TABLE t (id int PRIMARY KEY);")
        .await?;
    let state = tempfile::tempdir()?;
    let port = free_port();
    let text = format!(
        "state_dir = {:?}\n[sources.hq]\nkind = \"postgres\"\nurl = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n",
        state.path(),
        pg.url(&src),
    );
    let running = start(&text, false)?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the capture runs", Duration::from_secs(60), || async {
        Ok(get(&http, &base, "/readyz", None)
            .await
            .is_ok_and(|(s, _)| s == 200))
    })
    .await?;
    let (status, tasks) = get(&http, &base, "/api/v1/tasks", None).await?;
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks["capture hq"]["state"], "running", "{tasks}");
    let response = http.get(format!("{base}/metrics")).send().await?;
    assert_eq!(response.status().as_u16(), 200);
    let restart = http
        .post(format!("{base}/api/v1/tasks/capture%20hq/restart"))
        .send()
        .await?;
    assert_eq!(
        restart.status().as_u16(),
        409,
        "a running task: nothing to restart"
    );
    // With no token configured, a presented one changes nothing.
    assert_eq!(
        get(&http, &base, "/api/v1/tasks", Some("anything-at-all-123"))
            .await?
            .0,
        200
    );
    running.stop().await?;
    Ok(())
}
