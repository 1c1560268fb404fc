//! Administration of a sink's server outside the apply path, for any kind: scratch
//! databases for restore tests, forgetting a restore's watermarks, a table's digest, and
//! the watermarks `tributary status` shows.

use crate::config::SinkConfig;
use crate::{mysql, postgres, SinkError};
use serde::Serialize;
use tributary_schemas::Position;

/// How far a sink has applied one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceWatermark {
    /// The source.
    pub source: String,
    /// The position of the last event applied (`None`: nothing applied yet), or why it
    /// could not be read.
    pub applied: Result<Option<Position>, String>,
}

/// One sink's part of `tributary status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStatus {
    /// The sink's name.
    pub sink: String,
    /// Its URL, password hidden.
    pub url: String,
    /// Each source it applies (empty when unreachable).
    pub sources: Vec<SourceWatermark>,
    /// Why the sink could not be reached, if it could not.
    pub unreachable: Option<String>,
}

impl std::fmt::Display for SinkStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.sink;
        if let Some(e) = &self.unreachable {
            return write!(f, "sink {name}: unreachable at {}: {e}", self.url);
        }
        if self.sources.is_empty() {
            return write!(f, "sink {name}: applies no source");
        }
        for (i, w) in self.sources.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let source = &w.source;
            match &w.applied {
                Ok(Some(p)) => write!(f, "sink {name}: source {source} applied up to {p}")?,
                Ok(None) => write!(f, "sink {name}: source {source}: nothing applied yet")?,
                Err(e) => write!(f, "sink {name}: source {source}: {e}")?,
            }
        }
        Ok(())
    }
}

impl SinkConfig {
    /// The watermark of each of `sources` in sink `name`.
    pub async fn status(&self, name: &str, sources: &[&str]) -> SinkStatus {
        let mut status = SinkStatus {
            sink: name.to_string(),
            url: self.redacted_url(),
            sources: Vec::new(),
            unreachable: None,
        };
        // Read only: asking must not create the sink's tables, nor need the rights to.
        let mut session = match self.session().await {
            Ok(s) => s,
            Err(e) => {
                status.unreachable = Some(e.to_string());
                return status;
            }
        };
        for source in sources {
            status.sources.push(SourceWatermark {
                source: source.to_string(),
                applied: session.watermark(source).await.map_err(|e| e.to_string()),
            });
        }
        status
    }

    /// A connection to the URL's database for administrative statements.
    pub async fn session(&self) -> Result<Session, SinkError> {
        Ok(Session(match self {
            SinkConfig::Postgres(c) => Kind::Postgres(postgres::Session::open(c).await?),
            SinkConfig::Mysql(c) => Kind::Mysql(mysql::Session::open(c).await?),
        }))
    }

    /// Creates database `name` on this sink's server, and returns the sink that writes
    /// into it.
    pub async fn create_database(&self, name: &str) -> Result<SinkConfig, SinkError> {
        self.session().await?.create_database(name).await?;
        Ok(self.in_database(name))
    }
}

/// A connection to a sink's database for administrative statements.
pub struct Session(Kind);

enum Kind {
    Postgres(postgres::Session),
    Mysql(mysql::Session),
}

impl Session {
    /// Runs `sql`: one or more statements of this database's dialect.
    pub async fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        match &mut self.0 {
            Kind::Postgres(s) => s.execute(sql).await,
            Kind::Mysql(s) => s.execute(sql).await,
        }
    }

    /// Creates database `name` on this server.
    pub async fn create_database(&mut self, name: &str) -> Result<(), SinkError> {
        match &mut self.0 {
            Kind::Postgres(s) => s.create_database(name).await,
            Kind::Mysql(s) => s.create_database(name).await,
        }
    }

    /// Drops database `name` on this server.
    pub async fn drop_database(&mut self, name: &str) -> Result<(), SinkError> {
        match &mut self.0 {
            Kind::Postgres(s) => s.drop_database(name).await,
            Kind::Mysql(s) => s.drop_database(name).await,
        }
    }

    /// The watermark of `source` (`None`: nothing applied yet), read without creating
    /// anything.
    pub async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        match &mut self.0 {
            Kind::Postgres(s) => s.watermark(source).await,
            Kind::Mysql(s) => s.watermark(source).await,
        }
    }

    /// Deletes the watermarks kept under `keys`.
    pub async fn forget_watermarks(&mut self, keys: &[String]) -> Result<(), SinkError> {
        match &mut self.0 {
            Kind::Postgres(s) => s.forget_watermarks(keys).await,
            Kind::Mysql(s) => s.forget_watermarks(keys).await,
        }
    }

    /// Row count and a digest of the whole content of `table` (comparable between two
    /// databases of the same kind).
    pub async fn table_digest(&mut self, table: &str) -> Result<(i64, String), SinkError> {
        match &mut self.0 {
            Kind::Postgres(s) => s.table_digest(table).await,
            Kind::Mysql(s) => s.table_digest(table).await,
        }
    }
}
