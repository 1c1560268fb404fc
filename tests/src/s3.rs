//! A private S3-compatible server (s3s-fs) for one test.
//!
//! Design: `s3s-fs` serves a temp directory over the S3 API on 127.0.0.1:<free port>, with
//! static credentials; each subdirectory of its root is a bucket, so the harness creates the
//! bucket as a directory. It is ready when its port answers HTTP. Drop kills it and deletes
//! the directory.

use crate::port::free_port;
use crate::process::{self, ServerProcess, Startup, PORT_ATTEMPTS};
use anyhow::{bail, Context};
use rustix::process::Signal;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// Where `scripts/install-deps.sh` installs s3s-fs, relative to the home directory.
const CACHED_BINARY: &str = ".cache/tributary/s3s-fs/bin/s3s-fs";

/// The bucket every test server has.
pub const BUCKET: &str = "backups";

/// The server's access key.
pub const ACCESS_KEY: &str = "tributary-test";

/// The server's secret key.
pub const SECRET_KEY: &str = "tributary-test-secret";

/// A private s3s-fs process, killed on drop.
pub struct S3 {
    _process: ServerProcess,
    port: u16,
    dir: TempDir,
}

impl S3 {
    /// Starts s3s-fs with bucket [`BUCKET`]. The binary is `$S3S_FS_BIN`, else
    /// `~/.cache/tributary/s3s-fs/bin/s3s-fs`, else `s3s-fs` on PATH.
    pub async fn start() -> anyhow::Result<S3> {
        let binary = process::find_installed("s3s-fs", "S3S_FS_BIN", CACHED_BINARY)?;
        let dir = tempfile::Builder::new()
            .prefix("tributary-s3-")
            .tempdir()
            .context("creating a temp dir for s3s-fs")?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(BUCKET))?;
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut command = process::server_command(&binary, None, "KILL");
            command
                .arg("--host")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string())
                .arg("--access-key")
                .arg(ACCESS_KEY)
                .arg("--secret-key")
                .arg(SECRET_KEY)
                .arg(&root)
                .env("RUST_LOG", "warn");
            let log = dir.path().join("s3s-fs.log");
            let mut process = ServerProcess::spawn("s3s-fs", command, &log, Signal::KILL)?;
            match process
                .await_ready(Duration::from_secs(20), || probe(port))
                .await
                .with_context(|| format!("starting s3s-fs ({})", binary.display()))?
            {
                Startup::Ready => {
                    return Ok(S3 {
                        _process: process,
                        port,
                        dir,
                    })
                }
                Startup::PortInUse(tail) => last_log = tail,
            }
        }
        bail!("s3s-fs found no free port; its log ends with:\n{last_log}")
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding the objects of [`BUCKET`] (object `a/b` is `bucket_dir()/a/b`):
    /// tests damage objects through it.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("root").join(BUCKET)
    }

    /// The `[backup]` settings of a store at `s3://backups/<prefix>` on this server.
    pub fn backup_toml(&self, prefix: &str) -> String {
        format!(
            "store = \"s3://{BUCKET}/{prefix}\"\ns3_endpoint = {:?}\ns3_access_key_id = {ACCESS_KEY:?}\ns3_secret_access_key = {SECRET_KEY:?}\n",
            self.endpoint()
        )
    }
}

async fn probe(port: u16) -> anyhow::Result<()> {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    Ok(())
}
