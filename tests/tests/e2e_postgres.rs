//! PostgreSQL → (embedded log | tansu) → PostgreSQL, end to end, in process.
//!
//! Each scenario is written once and run for both transports. The sink must equal the
//! source (row count and digest of the full contents of every table) after each step.

use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use tributary::commands::status;
use tributary::Config;
use tributary_capture::{SourceProgress, SourceStatus};
use tributary_sinks::{SinkStatus, SourceWatermark};
use tributary_tests::{table_digest, wait_until, Kafka, Postgres, Running};

/// The transport a scenario runs on.
enum Transport {
    Embedded,
    Kafka(Kafka),
}

impl Transport {
    async fn start(kafka: bool) -> anyhow::Result<Self> {
        Ok(if kafka {
            Transport::Kafka(Kafka::start().await?)
        } else {
            Transport::Embedded
        })
    }

    fn toml(&self) -> String {
        match self {
            Transport::Embedded => "[transport]\nkind = \"embedded\"\n".into(),
            Transport::Kafka(k) => format!(
                "[transport]\nkind = \"kafka\"\nbrokers = \"{}\"\n",
                k.bootstrap()
            ),
        }
    }
}

fn config(state: &Path, transport: &Transport, source_url: &str, sink_url: &str) -> Config {
    let text = format!(
        "state_dir = {state:?}\n{}\n[sources.src]\nkind = \"postgres\"\nurl = {source_url:?}\nheartbeat_secs = 1\n\n[sinks.dst]\nkind = \"postgres\"\nurl = {sink_url:?}\n",
        transport.toml()
    );
    Config::parse(&text, |_| None).expect("test configuration is valid")
}

fn start(config: Config) -> Running {
    Running::start(config, true)
}

/// A private PostgreSQL with a source and a sink database, a transport and a state
/// directory: what every scenario starts from.
struct Scene {
    pg: Postgres,
    transport: Transport,
    src: String,
    dst: String,
    state: tempfile::TempDir,
}

impl Scene {
    /// Starts the servers and runs `ddl` in the source database.
    async fn new(kafka: bool, ddl: &str) -> anyhow::Result<Self> {
        let pg = Postgres::start().await?;
        let transport = Transport::start(kafka).await?;
        let src = pg.create_database("src").await?;
        let dst = pg.create_database("dst").await?;
        pg.execute(&src, ddl).await?;
        Ok(Scene {
            pg,
            transport,
            src,
            dst,
            state: tempfile::tempdir()?,
        })
    }

    /// Starts capture and pipeline from source to sink.
    fn start(&self) -> Running {
        start(config(
            self.state.path(),
            &self.transport,
            &self.pg.url(&self.src),
            &self.pg.url(&self.dst),
        ))
    }
}

/// Waits until every table in `tables` has the same content in both databases.
async fn converge(
    pg: &Postgres,
    src: &str,
    dst: &str,
    tables: &[&str],
    running: &Running,
) -> anyhow::Result<()> {
    let source = pg.client(src).await?;
    let sink = pg.client(dst).await?;
    let outcome = wait_until("sink equals source", Duration::from_secs(180), || async {
        anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
        for t in tables {
            let want = table_digest(&source, t).await?;
            let have = match table_digest(&sink, t).await {
                Ok(h) => h,
                Err(_) => return Ok(false),
            };
            if want != have {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await;
    if outcome.is_err() {
        for t in tables {
            for (side, client) in [("source", &source), ("sink", &sink)] {
                let rows = client
                    .query(
                        &format!("SELECT left(r::text, 400) FROM {t} AS r ORDER BY 1 LIMIT 30"),
                        &[],
                    )
                    .await;
                for row in rows.into_iter().flatten() {
                    eprintln!("{side} {t}: {}", row.get::<_, String>(0));
                }
            }
        }
    }
    outcome
}

const ALL_TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, n2 numeric(12,3),
  t text, vc varchar(20), c char(5), by bytea, d date, tm time, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb, ai int[], at text[], m mood, big text);
ALTER TABLE all_types ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO all_types VALUES
 (1, true, -32768, -2147483648, -9223372036854775808, 3.4028235e38, -1.7976931348623157e308,
  '-123456789012345678901234567890.123456789012345678901234567890', 123456789.123,
  'héllo, "wörld" \ tab	end', 'varchar', 'ab', '\x00ff10', '0044-03-15 BC', '23:59:59.999999',
  '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+05:30', 'P-1Y2M-3DT4H5M6.000007S',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2, {"b": null}]}', '{"z": 1, "a": "x"}',
  '{1,NULL,-3}', '{"a b","c,d","e\"f",NULL,"","NULL"}', 'happy', repeat('toast ', 100000)),
 (2, false, 0, 0, 0, 'NaN', 'Infinity', 'NaN', 0, '', '', '', '\x', 'infinity', '00:00', '-infinity', 'infinity',
  'PT0S', '00000000-0000-0000-0000-000000000000', 'null', '[]', '{}', '{}', 'sad', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(10,2), note text);
INSERT INTO orders SELECT g, 'customer ' || g, g * 1.5, NULL FROM generate_series(1, 1000) g;
"#;

async fn scenario_end_to_end(kafka: bool) -> anyhow::Result<()> {
    let scene = Scene::new(kafka, ALL_TYPES).await?;
    let (pg, src, dst) = (&scene.pg, &scene.src, &scene.dst);
    let running = scene.start();
    let tables = ["all_types", "orders"];
    // Initial snapshot.
    converge(pg, src, dst, &tables, &running).await?;

    // Inserts, updates (including a primary-key change), deletes, in several transactions.
    pg.execute(
        src,
        "INSERT INTO orders SELECT g, 'late ' || g, g, 'n' FROM generate_series(1001, 1100) g;
         UPDATE orders SET amount = amount + 1 WHERE id % 3 = 0;
         BEGIN; UPDATE orders SET id = 5000 WHERE id = 7; DELETE FROM orders WHERE id BETWEEN 10 AND 20; COMMIT;
         INSERT INTO all_types (id, t, ai) VALUES (4, 'four', '{4}');
         UPDATE all_types SET id = 40, i4 = 44 WHERE id = 2;",
    )
    .await?;
    converge(pg, src, dst, &tables, &running).await?;

    // Unchanged TOAST values: updating other columns must keep the big value in the sink,
    // also when the key changes.
    pg.execute(
        src,
        "UPDATE all_types SET i2 = 7 WHERE id = 1; UPDATE all_types SET id = 100 WHERE id = 1;",
    )
    .await?;
    converge(pg, src, dst, &tables, &running).await?;
    let sink = pg.client(dst).await?;
    let big: i32 = sink
        .query_one("SELECT length(big) FROM all_types WHERE id = 100", &[])
        .await?
        .get(0);
    assert_eq!(big, 600_000, "the unchanged TOAST value survived");

    // A new column mid-stream flows to the sink.
    pg.execute(src, "ALTER TABLE orders ADD COLUMN priority int DEFAULT 3; INSERT INTO orders (id, customer, priority) VALUES (9000, 'new', 1); UPDATE orders SET priority = 2 WHERE id = 5;")
        .await?;
    converge(pg, src, dst, &tables, &running).await?;

    // Truncate.
    pg.execute(
        src,
        "TRUNCATE orders; INSERT INTO orders (id, customer) VALUES (1, 'after truncate');",
    )
    .await?;
    converge(pg, src, dst, &tables, &running).await?;
    running.stop().await?;

    // Restart: resumes from the slot, nothing applied twice (contents still equal after
    // more changes).
    pg.execute(
        src,
        "INSERT INTO orders (id, customer) VALUES (2, 'while stopped')",
    )
    .await?;
    let running = scene.start();
    pg.execute(
        src,
        "INSERT INTO orders (id, customer) VALUES (3, 'after restart')",
    )
    .await?;
    converge(pg, src, dst, &tables, &running).await?;

    // `tributary status` while it runs: the slot is read and confirmed, the sink has
    // applied the source; a sink that cannot be reached is reported as such.
    let mut config = config(
        scene.state.path(),
        &scene.transport,
        &pg.url(src),
        &pg.url(dst),
    );
    let report = status::report(&config).await;
    let text = report.to_string();
    assert!(
        matches!(
            &report.sources[..],
            [SourceStatus {
                progress: SourceProgress::Slot {
                    active: true,
                    confirmed: Some(_),
                    ..
                },
                ..
            }]
        ),
        "{text}"
    );
    assert!(
        matches!(
            &report.sinks[..],
            [SinkStatus { sources, unreachable: None, .. }]
                if matches!(&sources[..], [SourceWatermark { applied: Ok(Some(_)), .. }])
        ),
        "{text}"
    );
    assert!(
        text.contains("source src: slot ") && text.contains("sink dst: source src applied up to "),
        "{text}"
    );
    config.sinks.get_mut("dst").expect("the sink").url =
        "postgres://u:secret@127.0.0.1:1/db".into();
    let text = status::report(&config).await.to_string();
    assert!(
        text.contains("sink dst: unreachable at postgres://u:***@127.0.0.1:1/db"),
        "{text}"
    );
    // Asking creates nothing: in a database no sink wrote into, nothing is applied yet,
    // and no watermark table appears.
    let fresh = pg.create_database("fresh").await?;
    config.sinks.get_mut("dst").expect("the sink").url = pg.url(&fresh).as_str().into();
    let text = status::report(&config).await.to_string();
    assert!(
        text.contains("sink dst: source src: nothing applied yet"),
        "{text}"
    );
    let created: bool = pg
        .client(&fresh)
        .await?
        .query_one(
            "SELECT to_regclass('tributary.watermarks') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert!(!created, "status created the watermark table");
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_embedded() -> anyhow::Result<()> {
    scenario_end_to_end(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_kafka() -> anyhow::Result<()> {
    scenario_end_to_end(true).await
}

async fn scenario_huge_transaction(kafka: bool, rows: i64) -> anyhow::Result<()> {
    let scene = Scene::new(
        kafka,
        "CREATE TABLE readings (id bigint PRIMARY KEY, sensor text, value double precision)",
    )
    .await?;
    let (pg, src, dst) = (&scene.pg, &scene.src, &scene.dst);
    let running = scene.start();
    pg.execute(
        src,
        &format!("INSERT INTO readings SELECT g, 'sensor-' || (g % 100), g / 7.0 FROM generate_series(1, {rows}) g"),
    )
    .await?;
    converge(pg, src, dst, &["readings"], &running).await?;
    running.stop().await?;
    let peak = tributary_tests::peak_rss_mib()?;
    assert!(
        peak < 512,
        "peak RSS of the whole test process was {peak} MiB"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_embedded() -> anyhow::Result<()> {
    scenario_huge_transaction(false, 1_000_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_kafka() -> anyhow::Result<()> {
    scenario_huge_transaction(true, 1_000_000).await
}

/// The broker stops answering (SIGSTOP) while changes are captured; when it comes back,
/// everything arrives and nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() -> anyhow::Result<()> {
    let scene = Scene::new(
        true,
        "CREATE TABLE stock (id int PRIMARY KEY, qty int); INSERT INTO stock VALUES (1, 10);",
    )
    .await?;
    let (pg, src, dst) = (&scene.pg, &scene.src, &scene.dst);
    let running = scene.start();
    converge(pg, src, dst, &["stock"], &running).await?;

    let Transport::Kafka(kafka) = &scene.transport else {
        unreachable!("started with Kafka")
    };
    kafka.pause()?;
    for batch in 0..10 {
        pg.execute(
            src,
            &format!("INSERT INTO stock SELECT g, g FROM generate_series({} , {}) g; UPDATE stock SET qty = qty - 1 WHERE id = 1;", 2 + batch * 100, 101 + batch * 100),
        )
        .await?;
    }
    let source = pg.client(src).await?;
    let end: String = source
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    // The capture has received every change while the broker is down.
    wait_until("capture received the changes during the outage", Duration::from_secs(60), || async {
        let row = source
            .query_one("SELECT coalesce(bool_or(sent_lsn >= $1::text::pg_lsn), false) FROM pg_stat_replication", &[&end])
            .await?;
        Ok(row.get::<_, bool>(0))
    })
    .await?;
    anyhow::ensure!(
        !running.task.is_finished(),
        "the pipeline keeps running through the outage"
    );
    kafka.resume()?;
    converge(pg, src, dst, &["stock"], &running).await?;
    running.stop().await
}

/// `GET path` on `127.0.0.1:port` over HTTP/1.1: `(status, body)`.
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response has a head")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP status line")?;
    anyhow::ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked response"
    );
    Ok((status, body.to_string()))
}

/// A consumer that knows nothing of Tributary decodes the messages with the schemas the
/// registry endpoint serves (the Confluent wire format: magic byte, schema id, datum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_endpoint_serves_the_schemas_of_the_messages() -> anyhow::Result<()> {
    use apache_avro::types::Value as Avro;
    let scene = Scene::new(
        true,
        "CREATE TABLE medicines (id int PRIMARY KEY, name text, price numeric(10,2));
         INSERT INTO medicines VALUES (1, 'aspirin', 3.50);",
    )
    .await?;
    let port = tributary_tests::free_port();
    let mut config = config(
        scene.state.path(),
        &scene.transport,
        &scene.pg.url(&scene.src),
        &scene.pg.url(&scene.dst),
    );
    config.registry = Some(tributary::config::RegistryConfig {
        listen: ([127, 0, 0, 1], port).into(),
    });
    let running = start(config);
    converge(&scene.pg, &scene.src, &scene.dst, &["medicines"], &running).await?;

    let Transport::Kafka(kafka) = &scene.transport else {
        unreachable!("started with Kafka")
    };
    let consumer = tributary_transport::kafka::KafkaConsumer::connect(
        &tributary_transport::kafka::KafkaSettings::new(kafka.bootstrap()),
        "registry-test",
    )
    .await?;
    use tributary_transport::Consumer;
    let mut reader = consumer.reader_from_start("src.public.medicines").await?;
    let record = reader
        .next(Some(Duration::from_secs(30)))
        .await?
        .context("the snapshot row is in the topic")?;
    let frame = |bytes: &[u8]| -> anyhow::Result<u32> {
        anyhow::ensure!(bytes.len() > 5 && bytes[0] == 0, "Confluent framing");
        Ok(u32::from_be_bytes(bytes[1..5].try_into()?))
    };
    // The schemas become visible once the follower has read them.
    let value_id = frame(&record.value)?;
    let fetch = |id: u32| async move {
        let (status, body) = http_get(port, &format!("/schemas/ids/{id}")).await?;
        anyhow::ensure!(status == 200, "GET /schemas/ids/{id}: {status} {body}");
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        Ok::<_, anyhow::Error>(apache_avro::Schema::parse_str(
            doc["schema"].as_str().context("a schema field")?,
        )?)
    };
    wait_until(
        "the registry serves the value schema",
        Duration::from_secs(30),
        || async { Ok(fetch(value_id).await.is_ok()) },
    )
    .await?;
    let value_schema = fetch(value_id).await?;
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&value_schema)
        .build()?
        .read_value(&mut &record.value[5..])?;
    let Avro::Record(fields) = value else {
        anyhow::bail!("the value is a record: {value:?}")
    };
    let after = &fields
        .iter()
        .find(|(n, _)| n == "after")
        .context("after")?
        .1;
    let text = format!("{after:?}");
    assert!(
        text.contains("aspirin") && text.contains("Int(1)"),
        "the row decodes: {text}"
    );

    let key = record.key.context("a keyed message")?;
    let key_schema = fetch(frame(&key)?).await?;
    let key_value = apache_avro::reader::datum::GenericDatumReader::builder(&key_schema)
        .build()?
        .read_value(&mut &key[5..])?;
    assert!(format!("{key_value:?}").contains("Int(1)"), "{key_value:?}");

    // The subject listing and the latest version agree with the ids in the messages.
    let (status, body) =
        http_get(port, "/subjects/src.public.medicines-value/versions/latest").await?;
    assert_eq!(status, 200, "{body}");
    let latest: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(latest["id"].as_u64(), Some(u64::from(value_id)));
    let (status, body) = http_get(port, "/schemas/ids/1").await?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("40403"), "{body}");
    running.stop().await
}
