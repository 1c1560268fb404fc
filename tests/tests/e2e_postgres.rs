//! PostgreSQL → (embedded log | tansu) → every sink kind, end to end, in process.
//!
//! The scenario of a PostgreSQL source is written once, generic over the sink's
//! [`Backend`], and runs into PostgreSQL (on both transports) and MySQL (on the embedded
//! log): every operation, every type the sink kind can hold ([`Backend::postgres_types`]),
//! key changes, deletes, unchanged TOAST values, new columns (also in the middle of a
//! transaction), truncate, a restart that applies nothing twice, and `tributary status`.
//! After each step every table of the sink must be the source's (`Scene::converge_whole`).
//! A sink kind joins by one more entry in `for_every_sink!`. The other tests are about the
//! transport (memory under a huge transaction, a broker outage, the registry endpoint)
//! and run PostgreSQL to PostgreSQL.

use anyhow::Context;
use std::time::Duration;
use tributary::commands::status;
use tributary_capture::{SourceProgress, SourceStatus};
use tributary_sinks::{SinkStatus, SourceWatermark};
use tributary_tests::{table_digest, wait_until, Running};

mod common;
use common::backend::mariadb::Maria;
use common::backend::postgres::Pg;
use common::backend::Backend;
use common::e2e::{Scene, SINK};

/// A PostgreSQL source running `ddl`, into a sink of kind `B`.
async fn scene<B: Backend>(kafka: bool, ddl: &str) -> anyhow::Result<Scene<Pg, B>> {
    Scene::new(kafka, ddl, |_| String::new()).await
}

/// A table of 1000 orders, beside the types table.
const ORDERS: &str = "
CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(10,2), note text);
INSERT INTO orders SELECT g, 'customer ' || g, g * 1.5, NULL FROM generate_series(1, 1000) g;
";

common::e2e::for_every_sink!(
    scenario,
    [
        postgres_embedded: Pg on false,
        postgres_kafka: Pg on true,
        mariadb_embedded: Maria on false,
    ]
);

async fn scenario<B: Backend>(kafka: bool) -> anyhow::Result<()> {
    let scene = scene::<B>(kafka, &format!("{}{ORDERS}", B::postgres_types())).await?;
    let tables = ["all_types", "orders"];
    let running = scene.start();
    // Initial snapshot.
    scene.converge_whole(&tables, &running).await?;

    // Inserts, updates (including a primary-key change), deletes, in several transactions.
    scene
        .source_execute(
            "INSERT INTO orders SELECT g, 'late ' || g, g, 'n' FROM generate_series(1001, 1100) g;
             UPDATE orders SET amount = amount + 1 WHERE id % 3 = 0;
             BEGIN; UPDATE orders SET id = 5000 WHERE id = 7; DELETE FROM orders WHERE id BETWEEN 10 AND 20; COMMIT;
             INSERT INTO all_types (id, t, ai) VALUES (4, 'four', '{4}');
             UPDATE all_types SET id = 40, i4 = 44 WHERE id = 2;",
        )
        .await?;
    scene.converge_whole(&tables, &running).await?;

    // Unchanged TOAST values: updating other columns must keep the big value in the sink,
    // also when the key changes.
    scene
        .source_execute(
            "UPDATE all_types SET i2 = 7 WHERE id = 1; UPDATE all_types SET id = 100 WHERE id = 1;",
        )
        .await?;
    scene.converge_whole(&tables, &running).await?;
    let big = scene.sink_rows("all_types", &["id", "length(big)"]).await?;
    assert!(
        big.contains(&vec!["100".to_string(), "600000".to_string()]),
        "the unchanged TOAST value survived: {big:?}"
    );

    // New columns: one with a default the existing rows take, then one added in the middle
    // of a transaction that also writes rows before and after it.
    scene
        .source_execute(
            "ALTER TABLE orders ADD COLUMN priority int DEFAULT 3;
             INSERT INTO orders (id, customer, priority) VALUES (9000, 'new', 1);
             UPDATE orders SET priority = 2 WHERE id = 5;
             BEGIN; INSERT INTO orders (id, customer) VALUES (9001, 'before');
               ALTER TABLE orders ADD COLUMN shelf text;
               INSERT INTO orders (id, customer, shelf) VALUES (9002, 'after', 'B7'); COMMIT;",
        )
        .await?;
    scene.converge_whole(&tables, &running).await?;

    // Truncate.
    scene
        .source_execute(
            "TRUNCATE orders; INSERT INTO orders (id, customer) VALUES (1, 'after truncate');",
        )
        .await?;
    scene.converge_whole(&tables, &running).await?;
    running.stop().await?;

    // Restart: resumes from the slot, nothing applied twice (contents still equal after
    // more changes), changes made while stopped arrive.
    scene
        .source_execute("INSERT INTO orders (id, customer) VALUES (2, 'while stopped')")
        .await?;
    let running = scene.start();
    scene
        .source_execute(
            "INSERT INTO orders (id, customer) VALUES (3, 'after restart');
             UPDATE orders SET amount = 5 WHERE id = 1;",
        )
        .await?;
    scene.converge_whole(&tables, &running).await?;
    status_is_read_only(&scene).await?;
    running.stop().await
}

/// `tributary status` while the scene runs: the slot is read and confirmed, the sink has
/// applied the source; a sink that cannot be reached is reported as such; asking creates
/// nothing.
async fn status_is_read_only<B: Backend>(scene: &Scene<Pg, B>) -> anyhow::Result<()> {
    let mut config = scene.config.clone();
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
    let sink = config.sinks.get_mut(SINK).expect("the sink");
    sink.url = format!("{}://u:secret@127.0.0.1:1/db", B::SCHEME)
        .as_str()
        .into();
    let text = status::report(&config).await.to_string();
    let unreachable = format!(
        "sink dst: unreachable at {}://u:***@127.0.0.1:1/db",
        B::SCHEME
    );
    assert!(text.contains(&unreachable), "{text}");

    // Asking creates nothing: in a database no sink wrote into, nothing is applied yet,
    // and no watermark table appears. (A kind that keeps one watermark table for the
    // whole server is asked on a server of its own.)
    let own;
    let server = if B::WATERMARKS_PER_DATABASE {
        &scene.sink
    } else {
        own = B::start().await?;
        &own
    };
    let fresh = server.create_database("fresh").await?;
    let sink = config.sinks.get_mut(SINK).expect("the sink");
    sink.url = server.url(&fresh).as_str().into();
    let text = status::report(&config).await.to_string();
    assert!(
        text.contains("sink dst: source src: nothing applied yet"),
        "{text}"
    );
    let created = server.tables(&fresh, "tributary").await?;
    assert!(created.is_empty(), "status created {created:?}");
    Ok(())
}

/// Waits until `table` has the same row count and digest in source and sink (read on
/// the servers: a million rows are not fetched).
async fn converge_digest(
    scene: &Scene<Pg, Pg>,
    table: &str,
    running: &Running,
) -> anyhow::Result<()> {
    let source = scene.source.client(&scene.src).await?;
    let sink = scene.sink.client(&scene.dst).await?;
    wait_until("sink equals source", Duration::from_secs(180), || async {
        anyhow::ensure!(!running.task.is_finished(), "the pipeline stopped");
        let want = table_digest(&source, table).await?;
        Ok(table_digest(&sink, table).await.ok() == Some(want))
    })
    .await
}

async fn scenario_huge_transaction(kafka: bool, rows: i64) -> anyhow::Result<()> {
    let scene = scene::<Pg>(
        kafka,
        "CREATE TABLE readings (id bigint PRIMARY KEY, sensor text, value double precision)",
    )
    .await?;
    let running = scene.start();
    scene
        .source_execute(&format!("INSERT INTO readings SELECT g, 'sensor-' || (g % 100), g / 7.0 FROM generate_series(1, {rows}) g"))
        .await?;
    converge_digest(&scene, "readings", &running).await?;
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
    let scene = scene::<Pg>(
        true,
        "CREATE TABLE stock (id int PRIMARY KEY, qty int); INSERT INTO stock VALUES (1, 10);",
    )
    .await?;
    let running = scene.start();
    scene.converge_whole(&["stock"], &running).await?;

    let kafka = scene.transport.kafka();
    kafka.pause()?;
    for batch in 0..10 {
        scene
            .source_execute(&format!("INSERT INTO stock SELECT g, g FROM generate_series({} , {}) g; UPDATE stock SET qty = qty - 1 WHERE id = 1;", 2 + batch * 100, 101 + batch * 100))
            .await?;
    }
    let source = scene.source.client(&scene.src).await?;
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
    scene.converge_whole(&["stock"], &running).await?;
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
    let scene = scene::<Pg>(
        true,
        "CREATE TABLE medicines (id int PRIMARY KEY, name text, price numeric(10,2));
         INSERT INTO medicines VALUES (1, 'aspirin', 3.50);",
    )
    .await?;
    let port = tributary_tests::free_port();
    let mut config = scene.config.clone();
    config.registry = Some(tributary::config::RegistryConfig {
        listen: ([127, 0, 0, 1], port).into(),
    });
    let running = Running::start(config, true);
    scene.converge_whole(&["medicines"], &running).await?;

    let kafka = scene.transport.kafka();
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
