//! A private PostgreSQL 15 server for one test.
//!
//! Design: `initdb` creates a cluster in a fresh temp dir (superuser `postgres`, password
//! `postgres`, scram-sha-256 over TCP so a wrong password really fails, trust on the unix
//! socket, which lives in the temp dir), then `postgres` runs as a child with logical
//! decoding enabled and durability switched off (fsync, synchronous commit, full-page
//! writes): a test server never survives a machine crash, and tests run much faster.
//! PostgreSQL refuses to run as root, so as root the temp dir is given to the `postgres` OS
//! user and both programs run under it.
//!
//! Readiness: the server is ready when a password login over TCP works and `SHOW
//! data_directory` names our cluster (so a port taken by someone else is noticed).
//! Drop sends SIGQUIT (immediate shutdown: the postmaster stops its children and frees its
//! shared memory), then SIGKILL after a grace period, and deletes the temp dir.

use crate::port::free_port;
use crate::process::{self, OsUser, ServerProcess, Startup, PORT_ATTEMPTS};
use anyhow::{bail, Context};
use rustix::process::Signal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use tokio_postgres::NoTls;

/// Where Debian installs the PostgreSQL 15 server programs.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The superuser's name and password.
const SUPERUSER: &str = "postgres";

/// How long the server may take to accept logins.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings passed to the server with `-c`.
const SETTINGS: [&str; 10] = [
    "listen_addresses=127.0.0.1",
    "wal_level=logical",
    "max_replication_slots=32",
    "max_wal_senders=32",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=100",
    "timezone=UTC",
    "log_min_messages=warning",
];

/// A private PostgreSQL server, stopped and deleted on drop.
pub struct Postgres {
    /// The postmaster.
    process: ServerProcess,
    /// The TCP port on 127.0.0.1.
    port: u16,
    /// Directory of the server programs.
    bin_dir: PathBuf,
    /// Counter that makes database names unique.
    databases: AtomicU64,
    /// Holds the cluster, the socket and the log; deleted after the process stops.
    _dir: TempDir,
}

impl Postgres {
    /// Starts a private PostgreSQL 15 on 127.0.0.1:<free port> with wal_level=logical, 32 replication slots and WAL senders, fsync=off.
    ///
    /// Binaries come from /usr/lib/postgresql/15/bin, else `pg_config --bindir`. The superuser
    /// is `postgres` with password `postgres`; TCP logins use scram-sha-256, the unix socket
    /// (in the temp dir) trusts. The time zone is UTC.
    pub async fn start() -> anyhow::Result<Postgres> {
        Self::start_on(std::iter::repeat_with(free_port).take(PORT_ATTEMPTS)).await
    }

    /// Starts the server on the first of `ports` that it can bind.
    pub(crate) async fn start_on(ports: impl IntoIterator<Item = u16>) -> anyhow::Result<Postgres> {
        let bin_dir = find_bin_dir()?;
        let as_root = process::running_as_root();
        // The `postgres` user must reach the temp dir, which $TMPDIR may not allow.
        let parent = if as_root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("tributary-pg-")
            .tempdir_in(parent)
            .context("creating a temp dir for PostgreSQL")?;
        let user = if as_root {
            let user = OsUser::lookup(SUPERUSER).context("PostgreSQL refuses to run as root")?;
            user.chown(dir.path())?;
            Some(user)
        } else {
            None
        };
        let data = dir.path().join("data");
        init_cluster(&bin_dir, dir.path(), &data, user.as_ref()).await?;

        let mut last_log = String::new();
        let mut attempts = 0;
        for port in ports {
            attempts += 1;
            let mut command =
                process::server_command(&bin_dir.join("postgres"), user.as_ref(), "QUIT");
            command
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(dir.path())
                .args(SETTINGS.iter().flat_map(|setting| ["-c", setting]))
                .current_dir(dir.path())
                .env_remove("PGDATA");
            let log = dir.path().join("postgres.log");
            let mut process = ServerProcess::spawn("postgres", command, &log, Signal::QUIT)?;
            let startup = process
                .await_ready(READY_TIMEOUT, || probe(port, &data))
                .await
                .with_context(|| format!("starting PostgreSQL from {}", bin_dir.display()))?;
            match startup {
                Startup::Ready => {
                    tracing::debug!(port, dir = %dir.path().display(), "private postgres ready");
                    return Ok(Postgres {
                        process,
                        port,
                        bin_dir,
                        databases: AtomicU64::new(0),
                        _dir: dir,
                    });
                }
                Startup::PortInUse(tail) => {
                    tracing::debug!(port, attempts, "postgres port taken, retrying on another");
                    last_log = tail;
                }
            }
        }
        bail!(
            "PostgreSQL found no free port in {attempts} attempts; its log ends with:\n{last_log}"
        )
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` for the superuser: "postgres://postgres:postgres@127.0.0.1:PORT/<db>".
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{SUPERUSER}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Creates a database and returns its name (unique name generated from `prefix`).
    pub async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}_{n}", identifier_stem(prefix));
        self.execute("postgres", &format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(name)
    }

    /// Connected tokio_postgres client (connection task spawned) to database `db` as postgres.
    pub async fn client(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        connect(self.port, db)
            .await
            .with_context(|| format!("connecting to database {db:?}"))
    }

    /// Runs SQL (simple query, may contain several statements) in db.
    pub async fn execute(&self, db: &str, sql: &str) -> anyhow::Result<()> {
        let client = self.client(db).await?;
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("running in {db:?}: {}", process::abbreviate(sql)))
    }

    /// Directory of the PostgreSQL binaries (for pg_recvlogical, pgbench, pg_dump in benchmarks).
    pub fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.process.stop();
    }
}

/// Finds the PostgreSQL server programs.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let default = PathBuf::from(DEFAULT_BIN_DIR);
    if process::is_executable(&default.join("postgres")) {
        return Ok(default);
    }
    let output = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output();
    if let Ok(output) = output {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && process::is_executable(&dir.join("postgres")) {
            return Ok(dir);
        }
    }
    bail!("no PostgreSQL server binaries in {DEFAULT_BIN_DIR} nor in `pg_config --bindir`; run scripts/install-deps.sh")
}

/// Creates the cluster in `data` with `initdb`.
async fn init_cluster(
    bin_dir: &Path,
    dir: &Path,
    data: &Path,
    user: Option<&OsUser>,
) -> anyhow::Result<()> {
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, SUPERUSER).context("writing the password file")?;
    if let Some(user) = user {
        user.chown(&pwfile)?;
    }
    let mut command = tokio::process::Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(data)
        .args(["-U", SUPERUSER])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .args(["--no-sync", "--no-instructions"])
        .current_dir(dir)
        .env_remove("PGDATA")
        .kill_on_drop(true);
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    let output = command.output().await.context("running initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Logs in over TCP and checks that the server is the one whose cluster is `data`.
async fn probe(port: u16, data: &Path) -> anyhow::Result<()> {
    let client = connect(port, "postgres").await?;
    let row = client.query_one("SHOW data_directory", &[]).await?;
    let served: String = row.get(0);
    if Path::new(&served) != data {
        bail!("port {port} is served by another PostgreSQL (data directory {served})");
    }
    Ok(())
}

/// Opens a client to `db` over TCP as the superuser and spawns its connection task.
async fn connect(port: u16, db: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(SUPERUSER)
        .dbname(db)
        .connect_timeout(Duration::from_secs(5))
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "test postgres connection ended");
        }
    });
    Ok(client)
}

/// Turns `prefix` into the start of an SQL identifier: lowercase ASCII letters, digits and `_`,
/// starting with a letter, at most 40 characters.
fn identifier_stem(prefix: &str) -> String {
    let mut stem: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if !stem.starts_with(|c: char| c.is_ascii_lowercase()) {
        stem.insert(0, 'd');
    }
    stem
}

/// Row count and a digest of the whole content of `table`, as the demo compares them.
pub async fn table_digest(
    client: &tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<(i64, String)> {
    let row = client
        .query_one(&tributary_sinks::postgres::digest_sql(table), &[])
        .await
        .with_context(|| format!("reading {table}"))?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::{identifier_stem, Postgres};
    use crate::port::free_port;
    use std::net::TcpListener;

    #[tokio::test]
    async fn a_taken_port_is_skipped() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let pg = Postgres::start_on([taken_port, free_port()]).await.unwrap();
        assert_ne!(pg.port(), taken_port);
        pg.execute("postgres", "SELECT 1").await.unwrap();
    }

    #[test]
    fn stems_are_plain_identifiers() {
        assert_eq!(identifier_stem("e2e-Kafka run"), "e2e_kafka_run");
        assert_eq!(identifier_stem("9lives"), "d9lives");
        assert_eq!(identifier_stem(""), "d");
        assert_eq!(identifier_stem(&"x".repeat(100)).len(), 40);
    }
}
