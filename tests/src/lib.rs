//! Real-service test harness: private PostgreSQL, MariaDB and tansu (Kafka protocol) servers.
//!
//! Every test starts its own servers from the binaries installed on the machine, on free
//! ports of 127.0.0.1 and in temporary directories; nothing here touches the system services
//! (5432, 3306) or their configuration. `scripts/install-deps.sh` installs the binaries.
//!
//! Design: each server type ([`Postgres`], [`MariaDb`], [`Kafka`]) owns one child process and
//! its temp dir. `start()` returns only once the server answers a real request that proves it
//! is *our* server (its data directory, socket or cluster id), so a port stolen between
//! [`free_port`] and the bind cannot go unnoticed; a failed bind is retried on another port.
//! Tests then wait for observable state with [`wait_until`], never with fixed sleeps.
//!
//! Failure model: dropping a server stops its process and deletes its temp dir. If the test
//! process dies without running destructors (a nextest timeout, an abort), the kernel signals
//! the servers because they are launched with a parent-death signal; only the temp dir is
//! then left behind. That signal fires when the *thread* that started a server exits, so start
//! servers from the test itself (or a task of its runtime), never from `spawn_blocking`, and
//! do not share one server between tests through a static. Startup failures carry the tail of
//! the server's log.

mod kafka;
mod mariadb;
mod port;
mod postgres;
mod process;
mod running;
mod s3;
mod wait;

pub use kafka::Kafka;
pub use mariadb::MariaDb;
pub use port::free_port;
pub use postgres::{table_digest, Postgres};
pub use running::Running;
pub use s3::{ACCESS_KEY, BUCKET, S3, SECRET_KEY};
pub use wait::{wait_until, wait_until_every};

/// Peak resident memory of this process in MiB (`VmHWM`); each nextest test runs in its
/// own process, so this is the test's peak.
pub fn peak_rss_mib() -> anyhow::Result<u64> {
    use anyhow::Context;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kib / 1024)
}

/// Sends this test's `tracing` output to the test writer, filtered by `RUST_LOG` (nextest
/// prints it when the test fails). Calling it again does nothing.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
