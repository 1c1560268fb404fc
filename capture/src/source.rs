//! A configured source of any kind: the one place that matches on a source kind.
//!
//! The application holds a [`SourceConfig`] per `[sources.<name>]` table of its
//! configuration file and asks it for everything kind-specific: checking the settings,
//! running the capture agent, copying the tables for a backup snapshot, reading tables back
//! for a restore test, the source's progress for `tributary status`, and writing a
//! person's choice back for the conflict queue. Adding a source kind means a folder beside
//! `postgres/` and `mysql/` and one variant here.

use crate::admin::{SourceProgress, SourceStatus, WriteBack};
use crate::error::CaptureError;
use crate::mysql::{self, MySqlCapture, MySqlSourceConfig};
use crate::postgres::{self, PostgresCapture, PostgresSourceConfig};
use crate::publisher::Publisher;
use crate::snapshot::SnapshotOutput;
use crate::state::StateStore;
use serde::Deserialize;
use tokio::sync::watch;
use tributary_schemas::{redact_url, Position};

/// A source, by kind (`kind = "postgres"` or `kind = "mysql"` in the configuration).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// PostgreSQL through logical replication.
    Postgres(PostgresSourceConfig),
    /// MySQL or MariaDB through the binary log.
    Mysql(MySqlSourceConfig),
}

/// A consistent copy of a source's tables: where the source's log goes on after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedTables {
    /// Every transaction before this position is in the copy; the copy's rows sort just
    /// below it.
    pub position: Position,
    /// The server's clock at the copy's consistent point (microseconds since the Unix
    /// epoch): every copied transaction committed before it.
    pub at_micros: i64,
}

impl SourceConfig {
    /// A source of the kind `url`'s scheme names (`postgres://`, `postgresql://`,
    /// `mysql://`, `mariadb://`), capturing the tables `include` names, with defaults for
    /// everything else; `flag` names the option the URL came from in errors.
    pub fn from_url(url: &str, include: Vec<String>, flag: &str) -> Result<Self, CaptureError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut c = PostgresSourceConfig::new(url);
            c.include = include;
            Ok(SourceConfig::Postgres(c))
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let mut c = MySqlSourceConfig::new(url.replacen("mariadb://", "mysql://", 1));
            c.include = include;
            Ok(SourceConfig::Mysql(c))
        } else {
            Err(CaptureError::Setup(format!(
                "{flag} {:?}: give a postgres:// or mysql:// URL",
                redact_url(url)
            )))
        }
    }

    /// The topic prefix of source `name`.
    pub fn prefix(&self, name: &str) -> String {
        match self {
            SourceConfig::Postgres(c) => c.prefix(name),
            SourceConfig::Mysql(c) => c.prefix(name),
        }
    }

    /// Checks the settings; errors start with `key_path` and the bad key.
    pub fn validate(&self, key_path: &str) -> Result<(), CaptureError> {
        match self {
            SourceConfig::Postgres(c) => c.validate(key_path),
            SourceConfig::Mysql(c) => c.validate(key_path),
        }
    }

    /// The wire protocol of the source's server (`"postgres"`, `"mysql"`): values restored
    /// into a database of the same protocol compare exactly.
    pub fn protocol(&self) -> &'static str {
        match self {
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
        }
    }

    /// The source's URL.
    pub fn url(&self) -> &str {
        match self {
            SourceConfig::Postgres(c) => c.url.expose(),
            SourceConfig::Mysql(c) => c.url.expose(),
        }
    }

    /// The source's URL, password hidden.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url())
    }

    /// Runs the capture agent of source `name` until `shutdown` turns true: the initial
    /// snapshot when there is none yet, then the change stream, into `publisher`.
    pub async fn run(
        &self,
        name: &str,
        store: StateStore,
        publisher: Publisher,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), CaptureError> {
        match self {
            SourceConfig::Postgres(c) => {
                PostgresCapture::new(name, c.clone(), store, publisher)
                    .run(shutdown)
                    .await
            }
            SourceConfig::Mysql(c) => {
                MySqlCapture::new(name, c.clone(), store, publisher)
                    .run(shutdown)
                    .await
            }
        }
    }

    /// Copies the tables source `name` captures into `out`, consistent with one position
    /// of its log (a backup snapshot); PostgreSQL copies a large table in `sessions`
    /// page ranges at once. Table versions are registered in `store`.
    pub async fn copy_tables(
        &self,
        name: &str,
        store: &StateStore,
        sessions: usize,
        out: &mut (dyn SnapshotOutput + '_),
    ) -> Result<CopiedTables, CaptureError> {
        match self {
            SourceConfig::Postgres(c) => {
                let (lsn, at_micros) = postgres::stream::copy_tables(
                    name,
                    c,
                    store,
                    c.snapshot_chunk_rows,
                    sessions,
                    out,
                )
                .await?;
                // Every transaction committed before the consistent point is in the
                // copy, and the copy's rows sit just below it, as the initial snapshot's
                // do.
                Ok(CopiedTables {
                    position: Position::pg(lsn.saturating_sub(1), u64::MAX),
                    at_micros,
                })
            }
            SourceConfig::Mysql(c) => {
                let copy = mysql::copy_tables(name, c, store, out).await?;
                // Every transaction before the binlog position is in the copy; the events
                // of the next one are numbered after it.
                let file = mysql::file_seq(&copy.start.file)?;
                Ok(CopiedTables {
                    position: Position::mysql(file, copy.start.pos, u64::MAX),
                    at_micros: copy.at_micros,
                })
            }
        }
    }

    /// How far the capture of source `name` has come, as its server tells it.
    pub async fn status(&self, name: &str) -> SourceStatus {
        let (server, progress) = match self {
            SourceConfig::Postgres(c) => ("PostgreSQL", postgres::admin::progress(name, c).await),
            SourceConfig::Mysql(_) => ("MySQL/MariaDB", SourceProgress::LocalCheckpoint),
        };
        SourceStatus {
            source: name.to_string(),
            server,
            url: self.redacted_url(),
            progress,
        }
    }

    /// Writes `change` into the source database as an ordinary update, so it reaches
    /// every sink like any other change; returns the rows it changed.
    pub async fn write_back(&self, change: &WriteBack<'_>) -> Result<u64, CaptureError> {
        match self {
            SourceConfig::Postgres(c) => postgres::admin::write_back(c, change).await,
            SourceConfig::Mysql(c) => mysql::admin::write_back(c, change).await,
        }
    }
}
