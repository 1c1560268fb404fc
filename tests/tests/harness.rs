//! Self-test of the harness: each private server starts, is configured as promised, and goes
//! away on drop.

use anyhow::Context;
use std::net::TcpStream;
use std::time::Duration;
use tributary_tests::{free_port, Kafka, MariaDb, Postgres};

/// True when something accepts TCP connections on 127.0.0.1:`port`.
fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

#[tokio::test]
async fn postgres_is_logical_and_checks_passwords() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    assert_ne!(pg.port(), 5432);
    assert_eq!(
        pg.url("x"),
        format!("postgres://postgres:postgres@127.0.0.1:{}/x", pg.port())
    );
    assert!(pg.bin_dir().join("pg_recvlogical").exists());

    let client = pg.client("postgres").await?;
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    assert_eq!(wal_level, "logical");
    let slots: String = client
        .query_one("SHOW max_replication_slots", &[])
        .await?
        .get(0);
    assert_eq!(slots, "32");
    let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
    assert_eq!(fsync, "off");

    let wrong = format!("postgres://postgres:wrong@127.0.0.1:{}/postgres", pg.port());
    let error = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .err()
        .context("a wrong password was accepted")?;
    let code = error.as_db_error().map(|db| db.code().clone());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{error}"
    );

    let db = pg.create_database("harness-self test").await?;
    let other = pg.create_database("harness-self test").await?;
    assert_ne!(db, other);
    pg.execute(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    )
    .await?;
    let count: i64 = pg
        .client(&db)
        .await?
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(count, 2);
    let (by_url, connection) = tokio_postgres::connect(&pg.url(&db), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    by_url
        .query_one("SELECT 1 FROM t WHERE id = 2", &[])
        .await?;
    assert!(pg.execute(&db, "SELECT * FROM missing").await.is_err());

    let port = pg.port();
    drop((client, by_url));
    drop(pg);
    assert!(!accepts(port), "postgres still listens after drop");
    Ok(())
}

#[tokio::test]
async fn mariadb_logs_rows() -> anyhow::Result<()> {
    let maria = MariaDb::start().await?;
    assert_ne!(maria.port(), 3306);
    assert_eq!(
        maria.url("x"),
        format!("mysql://root:root@127.0.0.1:{}/x", maria.port())
    );

    let format = maria
        .query("", "SHOW VARIABLES LIKE 'binlog_format'")
        .await?;
    assert_eq!(format.trim(), "binlog_format\tROW");
    let image = maria
        .query("", "SELECT @@binlog_row_image, @@log_bin, @@server_id")
        .await?;
    assert_eq!(image.trim(), "FULL\t1\t1");

    let db = maria.create_database("harness").await?;
    maria.execute(&db, "CREATE TABLE t (id INT PRIMARY KEY, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');").await?;
    assert_eq!(
        maria
            .query(&db, "SELECT id, name FROM t ORDER BY id")
            .await?,
        "1\ta\n2\tb\n"
    );
    let error = maria
        .execute(&db, "SELECT * FROM missing")
        .await
        .expect_err("the table does not exist");
    assert!(format!("{error:#}").contains("doesn't exist"), "{error:#}");

    let wrong = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-h127.0.0.1",
            "-uroot",
            "-pwrong",
            "-e",
            "SELECT 1",
        ])
        .arg(format!("-P{}", maria.port()))
        .output()?;
    assert!(!wrong.status.success(), "a wrong password was accepted");

    let port = maria.port();
    drop(maria);
    assert!(!accepts(port), "mariadb still listens after drop");
    Ok(())
}

#[tokio::test]
async fn kafka_pauses_and_resumes() -> anyhow::Result<()> {
    let kafka = Kafka::start().await?;
    assert_eq!(kafka.bootstrap(), format!("127.0.0.1:{}", kafka.port()));
    assert!(accepts(kafka.port()));

    kafka.pause()?;
    assert!(kafka.is_paused());
    // A stopped broker still completes TCP handshakes (the kernel does), but never answers.
    let mut stream = tokio::net::TcpStream::connect(kafka.bootstrap()).await?;
    let answered = tokio::time::timeout(
        Duration::from_millis(500),
        api_versions_round_trip(&mut stream),
    )
    .await;
    assert!(answered.is_err(), "a paused broker answered: {answered:?}");

    kafka.resume()?;
    assert!(!kafka.is_paused());
    // The request sent while paused is answered once the broker runs again.
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .context("the resumed broker did not answer the pending request")??;
    let mut fresh = tokio::net::TcpStream::connect(kafka.bootstrap()).await?;
    api_versions_round_trip(&mut fresh).await?;

    let port = kafka.port();
    kafka.pause()?;
    drop(kafka);
    assert!(!accepts(port), "tansu still listens after drop");
    Ok(())
}

#[test]
fn free_ports_are_free() {
    let a = free_port();
    let b = free_port();
    assert!(std::net::TcpListener::bind(("127.0.0.1", a)).is_ok());
    assert!(std::net::TcpListener::bind(("127.0.0.1", b)).is_ok());
}

/// Sends an ApiVersions v0 request and reads the whole response.
async fn api_versions_round_trip(stream: &mut tokio::net::TcpStream) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let client_id = b"harness";
    let mut request = Vec::new();
    request.extend_from_slice(&18_i16.to_be_bytes());
    request.extend_from_slice(&0_i16.to_be_bytes());
    request.extend_from_slice(&1_i32.to_be_bytes());
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    stream
        .write_all(&(request.len() as i32).to_be_bytes())
        .await?;
    stream.write_all(&request).await?;
    read_response(stream).await
}

/// Reads one response to the request with correlation id 1.
async fn read_response(stream: &mut tokio::net::TcpStream) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let size = stream.read_i32().await?;
    let mut body = vec![0; usize::try_from(size)?];
    stream.read_exact(&mut body).await?;
    anyhow::ensure!(
        body[..4] == 1_i32.to_be_bytes(),
        "the response answers another request"
    );
    Ok(())
}
