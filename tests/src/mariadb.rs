//! A private MariaDB 10.11 server for one test.
//!
//! Design: `mariadb-install-db` creates the system tables in a fresh temp dir, then `mariadbd
//! --no-defaults` (no my.cnf is read) runs as a child with a row-based binary log
//! (`--log-bin --binlog-format=ROW --binlog-row-image=FULL --server-id=1`) and relaxed
//! durability. Once the server answers on its own socket, root gets the password `root` for
//! `localhost` and `127.0.0.1` (mysql_native_password, which every client library speaks), and
//! a password login over TCP must report our socket, so a port taken by someone else is
//! noticed. Name resolution is off: TCP clients are matched as `root@127.0.0.1`.
//!
//! SQL goes through the `mariadb` command-line client, so the harness needs no MySQL driver.
//! Drop SIGKILLs the server and deletes the temp dir.

use crate::port::free_port;
use crate::process::{self, ServerProcess, Startup, PORT_ATTEMPTS};
use anyhow::{anyhow, bail, Context};
use rustix::process::Signal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

/// Root's password over TCP.
const ROOT_PASSWORD: &str = "root";

/// How long the server may take to answer on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Directories searched for the server programs besides PATH.
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// Gives root its password for TCP logins; run over the socket right after startup.
const BOOTSTRAP_SQL: &str = "
    ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('root');
    CREATE USER IF NOT EXISTS root@'127.0.0.1';
    ALTER USER root@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('root');
    GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
    FLUSH PRIVILEGES;";

/// A private MariaDB server, killed and deleted on drop.
pub struct MariaDb {
    /// The server.
    process: ServerProcess,
    /// The TCP port on 127.0.0.1.
    port: u16,
    /// The `mariadb` command-line client.
    client: PathBuf,
    /// Counter that makes database names unique.
    databases: AtomicU64,
    /// Holds the data, the binary log, the socket and the log; deleted after the process stops.
    _dir: TempDir,
}

impl MariaDb {
    /// Starts a private MariaDB (mariadb-install-db + mariadbd --no-defaults) with a ROW binary log on 127.0.0.1:<free port>.
    ///
    /// Binary log: `--log-bin --binlog-format=ROW --server-id=1 --binlog-row-image=FULL`. The
    /// socket lives in the temp dir; root's password over TCP is `root`.
    pub async fn start() -> anyhow::Result<MariaDb> {
        Self::start_on(std::iter::repeat_with(free_port).take(PORT_ATTEMPTS)).await
    }

    /// Starts the server on the first of `ports` that it can bind.
    pub(crate) async fn start_on(ports: impl IntoIterator<Item = u16>) -> anyhow::Result<MariaDb> {
        let server = program(&["mariadbd", "mysqld"])?;
        let install_db = program(&["mariadb-install-db", "mysql_install_db"])?;
        let client = program(&["mariadb", "mysql"])?;
        let dir = tempfile::Builder::new()
            .prefix("tributary-maria-")
            .tempdir()
            .context("creating a temp dir for MariaDB")?;
        let data = dir.path().join("data");
        let socket = dir.path().join("mariadb.sock");
        install(&install_db, dir.path(), &data).await?;

        let mut last_log = String::new();
        let mut attempts = 0;
        for port in ports {
            attempts += 1;
            let mut command = process::server_command(&server, None, "KILL");
            command.arg("--no-defaults");
            if process::running_as_root() {
                command.arg("--user=root");
            }
            command
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!(
                    "--pid-file={}",
                    dir.path().join("mariadb.pid").display()
                ))
                .arg(format!("--tmpdir={}", dir.path().display()))
                .arg(format!("--log-bin={}", dir.path().join("binlog").display()))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--binlog-format=ROW",
                ])
                .args([
                    "--server-id=1",
                    "--binlog-row-image=FULL",
                    "--innodb-flush-log-at-trx-commit=0",
                ])
                .args(["--sync-binlog=0", "--max-connections=200"])
                .current_dir(dir.path());
            let log = dir.path().join("mariadb.log");
            let mut process = ServerProcess::spawn("mariadbd", command, &log, Signal::KILL)?;
            let startup = process
                .await_ready(READY_TIMEOUT, || ping(&client, &socket))
                .await
                .with_context(|| format!("starting MariaDB ({})", server.display()))?;
            match startup {
                Startup::Ready => {
                    let maria = MariaDb {
                        process,
                        port,
                        client,
                        databases: AtomicU64::new(0),
                        _dir: dir,
                    };
                    maria.bootstrap(&socket).await?;
                    tracing::debug!(port, "private mariadb ready");
                    return Ok(maria);
                }
                Startup::PortInUse(tail) => {
                    tracing::debug!(port, attempts, "mariadb port taken, retrying on another");
                    last_log = tail;
                }
            }
        }
        bail!("MariaDB found no free port in {attempts} attempts; its log ends with:\n{last_log}")
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` for root: "mysql://root:root@127.0.0.1:PORT/<db>".
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root:{ROOT_PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL through the `mariadb` client binary in db (an empty `db` selects none).
    pub async fn execute(&self, db: &str, sql: &str) -> anyhow::Result<()> {
        self.query(db, sql).await.map(drop)
    }

    /// Runs SQL through the `mariadb` client binary in db and returns its output: tab-separated rows, no header line.
    pub async fn query(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        run_client(&self.client, Target::Tcp(self.port), db, sql)
            .await
            .with_context(|| format!("running in {db:?}: {}", process::abbreviate(sql)))
    }

    /// `(file, position)` of the end of the binlog (`SHOW MASTER STATUS`).
    pub async fn binlog_end(&self) -> anyhow::Result<(String, u64)> {
        let out = self.query("", "SHOW MASTER STATUS").await?;
        let mut fields = out.split('\t');
        let file = fields.next().context("binlog file")?.to_string();
        let pos = fields.next().context("binlog position")?.trim().parse()?;
        Ok((file, pos))
    }

    /// `(file, end position)` of the `nth` event (from 0) whose `SHOW BINLOG EVENTS` line
    /// contains `needle`.
    pub async fn binlog_event_end(
        &self,
        needle: &str,
        nth: usize,
    ) -> anyhow::Result<(String, u64)> {
        let events = self.query("", "SHOW BINLOG EVENTS").await?;
        let line = events
            .lines()
            .filter(|l| l.contains(needle))
            .nth(nth)
            .with_context(|| format!("event {nth} with {needle:?} in the binlog:\n{events}"))?;
        let fields: Vec<&str> = line.split('\t').collect();
        let pos = fields.get(4).context("End_log_pos")?.parse()?;
        Ok((fields[0].to_string(), pos))
    }

    /// Creates a database and returns its name (unique name generated from `prefix`).
    pub async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
        let stem: String = prefix
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
        let name = format!("{stem}_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        self.execute("", &format!("CREATE DATABASE `{name}`"))
            .await?;
        Ok(name)
    }

    /// Sets root's password, then checks that a password login over TCP reaches this server.
    async fn bootstrap(&self, socket: &Path) -> anyhow::Result<()> {
        run_client(&self.client, Target::Socket(socket), "", BOOTSTRAP_SQL)
            .await
            .context("giving root its password")?;
        let served = self
            .query("", "SELECT @@socket")
            .await
            .context("logging in over TCP")?;
        if Path::new(served.trim()) != socket {
            bail!(
                "port {} is served by another MariaDB (socket {})",
                self.port,
                served.trim()
            );
        }
        Ok(())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.process.stop();
    }
}

/// Where the client connects.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// The unix socket, as root without a password (only before bootstrap).
    Socket(&'a Path),
    /// 127.0.0.1:PORT as root with its password.
    Tcp(u16),
}

/// Runs `sql` (fed on stdin) through the `mariadb` client and returns its stdout.
async fn run_client(
    client: &Path,
    target: Target<'_>,
    db: &str,
    sql: &str,
) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(client);
    command.args([
        "--no-defaults",
        "--batch",
        "--skip-column-names",
        "--user=root",
        // Statements and results are UTF-8 whatever the machine's locale.
        "--default-character-set=utf8mb4",
    ]);
    match target {
        Target::Socket(socket) => {
            command
                .arg("--protocol=SOCKET")
                .arg(format!("--socket={}", socket.display()));
            command.env_remove("MYSQL_PWD");
        }
        Target::Tcp(port) => {
            command
                .args(["--protocol=TCP", "--host=127.0.0.1"])
                .arg(format!("--port={port}"));
            command.env("MYSQL_PWD", ROOT_PASSWORD);
        }
    }
    if !db.is_empty() {
        command.arg(format!("--database={db}"));
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", client.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("the client has no stdin"))?;
    let input = sql.to_owned();
    let writer = tokio::spawn(async move { stdin.write_all(input.as_bytes()).await });
    let output = child
        .wait_with_output()
        .await
        .context("waiting for the mariadb client")?;
    let written = writer.await.context("feeding the mariadb client")?;
    if !output.status.success() {
        bail!(
            "the mariadb client failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    written.context("feeding SQL to the mariadb client")?;
    String::from_utf8(output.stdout).context("the mariadb client printed invalid UTF-8")
}

/// Checks that the server answers on its socket.
async fn ping(client: &Path, socket: &Path) -> anyhow::Result<()> {
    run_client(client, Target::Socket(socket), "", "SELECT 1")
        .await
        .map(drop)
}

/// Creates the system tables in `data`.
async fn install(install_db: &Path, dir: &Path, data: &Path) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(install_db);
    command.arg("--no-defaults");
    if process::running_as_root() {
        command.arg("--user=root");
    }
    let output = command
        .arg(format!("--datadir={}", data.display()))
        // The bootstrap server's temporary tables go to this server's directory: in the
        // shared /tmp, installs running in parallel have removed each other's.
        .arg(format!("--tmpdir={}", dir.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", install_db.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            install_db.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Finds the first of `names` on PATH or in the usual sbin directories.
fn program(names: &[&str]) -> anyhow::Result<PathBuf> {
    names
        .iter()
        .find_map(|name| process::find_program(name, &SBIN_DIRS))
        .ok_or_else(|| {
            anyhow!(
                "{} not found on PATH nor in {SBIN_DIRS:?}; run scripts/install-deps.sh",
                names[0]
            )
        })
}

#[cfg(test)]
mod tests {
    use super::MariaDb;
    use crate::port::free_port;
    use std::net::TcpListener;

    #[tokio::test]
    async fn a_taken_port_is_skipped() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let maria = MariaDb::start_on([taken_port, free_port()]).await.unwrap();
        assert_ne!(maria.port(), taken_port);
        assert_eq!(maria.query("", "SELECT 1").await.unwrap(), "1\n");
    }
}
