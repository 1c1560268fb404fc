//! A private tansu broker (Kafka protocol) for one test.
//!
//! Design: tansu runs as a child process with in-memory storage
//! (`tansu broker --storage-engine memory://tansu/`), listening on and advertising
//! `tcp://127.0.0.1:<free port>`, with a cluster id unique to this broker. It is ready when a
//! Metadata request (written by hand in [`metadata`], so the harness needs no librdkafka)
//! returns that cluster id. tansu keeps nothing on disk; its temp dir holds only its log.
//!
//! Failure model: [`Kafka::pause`] SIGSTOPs the broker, which then accepts TCP connections
//! (the kernel completes the handshake) but never answers, as a hung broker would;
//! [`Kafka::resume`] SIGCONTs it. Drop resumes a paused broker, SIGKILLs it and reaps it.
//! tansu 0.6 does not exit cleanly when its port is taken (a worker panics), so the harness
//! recognises the bind error in its log and retries on another port.

mod metadata;

use crate::port::free_port;
use crate::process::{self, ServerProcess, Startup, PORT_ATTEMPTS};
use anyhow::{bail, Context};
use rustix::process::Signal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;

/// How long the broker may take to answer a Metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The storage engine: in memory, nothing on disk.
const STORAGE_ENGINE: &str = "memory://tansu/";

/// Where `scripts/install-deps.sh` installs tansu, relative to the home directory.
const CACHED_BINARY: &str = ".cache/tributary/tansu/bin/tansu";

/// Environment variables tansu reads as defaults for its flags; removed so none leaks in.
const TANSU_ENV: [&str; 7] = [
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
];

/// Counter that makes cluster ids unique within this process.
static BROKERS: AtomicU64 = AtomicU64::new(0);

/// A private tansu broker process, killed on drop.
pub struct Kafka {
    /// The broker.
    process: ServerProcess,
    /// The TCP port on 127.0.0.1.
    port: u16,
    /// True while the broker is SIGSTOPped.
    paused: AtomicBool,
    /// Holds the broker's log; deleted after the process stops.
    _dir: TempDir,
}

impl Kafka {
    /// Starts tansu with `--storage-engine memory://tansu/` listening on 127.0.0.1:<free port> (advertised the same).
    ///
    /// The binary is `$TANSU_BIN`, else `~/.cache/tributary/tansu/bin/tansu` (also looked for
    /// under /root), else `tansu` on PATH.
    pub async fn start() -> anyhow::Result<Kafka> {
        Self::start_on(std::iter::repeat_with(free_port).take(PORT_ATTEMPTS)).await
    }

    /// Starts the server on the first of `ports` that it can bind.
    pub(crate) async fn start_on(ports: impl IntoIterator<Item = u16>) -> anyhow::Result<Kafka> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("tributary-tansu-")
            .tempdir()
            .context("creating a temp dir for tansu")?;
        let cluster_id = format!(
            "tributary-{}-{}",
            std::process::id(),
            BROKERS.fetch_add(1, Ordering::Relaxed)
        );

        let mut last_log = String::new();
        let mut attempts = 0;
        for port in ports {
            attempts += 1;
            let url = format!("tcp://127.0.0.1:{port}");
            let mut command = process::server_command(&binary, None, "KILL");
            command
                .arg("broker")
                .arg(format!("--listener-url={url}"))
                .arg(format!("--advertised-listener-url={url}"))
                .arg(format!("--storage-engine={STORAGE_ENGINE}"))
                .arg(format!("--cluster-id={cluster_id}"))
                .current_dir(dir.path())
                .env("NO_COLOR", "1");
            for name in TANSU_ENV {
                command.env_remove(name);
            }
            let log = dir.path().join("tansu.log");
            let mut process = ServerProcess::spawn("tansu", command, &log, Signal::KILL)?;
            let startup = process
                .await_ready(READY_TIMEOUT, || probe(port, &cluster_id))
                .await
                .with_context(|| format!("starting tansu ({})", binary.display()))?;
            match startup {
                Startup::Ready => {
                    tracing::debug!(port, %cluster_id, "private tansu ready");
                    return Ok(Kafka {
                        process,
                        port,
                        paused: AtomicBool::new(false),
                        _dir: dir,
                    });
                }
                Startup::PortInUse(tail) => {
                    tracing::debug!(port, attempts, "tansu port taken, retrying on another");
                    last_log = tail;
                }
            }
        }
        bail!("tansu found no free port in {attempts} attempts; its log ends with:\n{last_log}")
    }

    /// The bootstrap address: "127.0.0.1:PORT".
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGSTOPs the broker (a simulated outage: connections hang); returns once it has stopped.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.process.suspend()?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// SIGCONTs a paused broker.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.process.unsuspend()?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// True while the broker is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if self.is_paused() {
            if let Err(error) = self.resume() {
                tracing::warn!(error = %format!("{error:#}"), "cannot resume tansu before stopping it");
            }
        }
        self.process.stop();
    }
}

/// Asks the broker on `port` for metadata and checks that it is ours.
async fn probe(port: u16, cluster_id: &str) -> anyhow::Result<()> {
    let metadata = metadata::fetch(&format!("127.0.0.1:{port}")).await?;
    if metadata.cluster_id.as_deref() != Some(cluster_id) {
        bail!(
            "port {port} is served by another broker (cluster id {:?})",
            metadata.cluster_id
        );
    }
    if !metadata
        .brokers
        .iter()
        .any(|broker| broker.port == i32::from(port))
    {
        bail!(
            "the broker does not advertise port {port}: {:?}",
            metadata.brokers
        );
    }
    Ok(())
}

/// Finds the tansu binary: `$TANSU_BIN`, the cache under $HOME and /root, then PATH.
fn find_binary() -> anyhow::Result<PathBuf> {
    process::find_installed("tansu", "TANSU_BIN", CACHED_BINARY)
}

#[cfg(test)]
mod tests {
    use super::Kafka;
    use crate::port::free_port;
    use std::net::TcpListener;

    #[tokio::test]
    async fn a_taken_port_is_skipped() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let kafka = Kafka::start_on([taken_port, free_port()]).await.unwrap();
        assert_ne!(kafka.port(), taken_port);
    }

    #[tokio::test]
    async fn only_taken_ports_is_an_error_quoting_the_log() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let error = Kafka::start_on([taken_port])
            .await
            .err()
            .expect("the only port is taken");
        let text = format!("{error:#}");
        assert!(text.contains("no free port in 1 attempts"), "{text}");
        assert!(text.contains("AddrInUse"), "{text}");
    }
}
