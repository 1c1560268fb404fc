//! Administration of a sink's server outside the apply path, for any kind: scratch
//! databases for restore tests, forgetting a restore's watermarks, a table's digest, and
//! the watermarks `tributary status` shows.

use crate::kind::{AdminSession, RowReader};
use crate::SinkError;
use serde::Serialize;
use tributary_schemas::{Position, TableId, TableSchema};

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

/// A connection to a sink's database for administrative statements.
pub struct Session(Box<dyn AdminSession>);

impl Session {
    pub(crate) fn new(kind: Box<dyn AdminSession>) -> Self {
        Session(kind)
    }

    /// Runs `sql`: one or more statements of this database's dialect.
    pub async fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        self.0.execute(sql).await
    }

    /// Creates database `name` on this server.
    pub async fn create_database(&mut self, name: &str) -> Result<(), SinkError> {
        self.0.create_database(name).await
    }

    /// Drops database `name` on this server.
    pub async fn drop_database(&mut self, name: &str) -> Result<(), SinkError> {
        self.0.drop_database(name).await
    }

    /// The watermark of `source` (`None`: nothing applied yet), read without creating
    /// anything.
    pub async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        self.0.watermark(source).await
    }

    /// Deletes the watermarks kept under `keys`.
    pub async fn forget_watermarks(&mut self, keys: &[String]) -> Result<(), SinkError> {
        self.0.forget_watermarks(keys).await
    }

    /// Row count and a digest of the whole content of `table` (comparable between two
    /// databases of the same kind).
    pub async fn table_digest(&mut self, table: &str) -> Result<(i64, String), SinkError> {
        self.0.table_digest(table).await
    }

    /// Every row of `table` (in this sink's database), in key order, handed to `each`:
    /// the columns are those of `schema` (the source table it stands for, newest version)
    /// and each value is read as its column's type there, so rows compare with the
    /// source's whatever types this kind stored them as. A value that does not read back
    /// as its type is an error naming the table and column. Rows stream: memory holds one.
    pub async fn read_table(
        &mut self,
        table: &TableId,
        schema: &TableSchema,
        each: RowReader<'_>,
    ) -> Result<(), SinkError> {
        self.0.read_table(table, schema, each).await
    }
}
