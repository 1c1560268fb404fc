//! `tributary snapshot verify --restore-test`: restores each archived source into a
//! scratch database, reads every table back, and compares it with what the archive says.

use crate::backup::restore_options;
use crate::commands::restore::target_sink;
use crate::config::Config;
use std::collections::BTreeMap;
use tributary_capture::snapshot::SnapshotOutput;
use tributary_capture::state::StateStore;
use tributary_capture::{CaptureError, SourceConfig};
use tributary_pipeline::PipelineError;
use tributary_sinks::{SinkConfig, SinkError};

/// One source's restore test: the restore's report and each table's check.
#[derive(Debug)]
pub struct RestoreTestResult {
    /// The source.
    pub source: String,
    /// The scratch database restored into (dropped when every table checked out).
    pub database: String,
    /// What the restore did.
    pub report: tributary_snapshot::RestoreReport,
    /// Each table's counts, checksums and first differences.
    pub tables: Vec<tributary_snapshot::TableCheck>,
}

impl RestoreTestResult {
    /// Whether every table holds what the archive says.
    pub fn ok(&self) -> bool {
        self.tables.iter().all(|t| t.ok())
    }
}

/// Where the rows read back from a restore test's scratch database go.
struct ReadBack<'a> {
    test: &'a mut tributary_snapshot::RestoreTest,
    /// Restored table → the source table it stands for.
    tables: BTreeMap<tributary_schemas::TableId, tributary_schemas::TableId>,
}

#[async_trait::async_trait]
impl SnapshotOutput for ReadBack<'_> {
    async fn event(
        &mut self,
        schemas: &tributary_schemas::AvroSchemas,
        event: &tributary_schemas::ChangeEvent,
    ) -> Result<(), CaptureError> {
        let (Some(table), Some(row)) = (self.tables.get(&event.table), &event.after) else {
            return Ok(());
        };
        self.test
            .observe(table, &schemas.table, row)
            .map_err(|e| CaptureError::Setup(e.to_string()))
    }
}

/// `snapshot verify --restore-test`: restores each archived source (or only `only`) to
/// its newest archived instant (newest snapshot, then the archive) into a new database on
/// scratch server `scratch` (of the source's kind), reads every restored table back, and
/// compares row counts and content checksums with what the archive says. The scratch
/// database is dropped when everything checks out, and kept for a look otherwise.
pub async fn restore_test(
    config: &Config,
    only: Option<&str>,
    scratch: &str,
) -> Result<Vec<RestoreTestResult>, PipelineError> {
    let backup = config.backup_section()?;
    let store = tributary_snapshot::Store::open(backup)?;
    let server = SinkConfig::from_url(scratch, None, 5_000, "--scratch")?;
    let scratch_failed =
        |e: SinkError| PipelineError::Config(format!("--scratch {:?}: {e}", server.redacted_url()));
    let mut out = Vec::new();
    for source in config.archived_selection(only)? {
        let source_config = &config.sources[&source];
        if source_config.protocol() != server.protocol() {
            return Err(PipelineError::Config(format!(
                "--scratch {:?}: source {source} is a {} source; a restore test restores into a scratch server of the same kind, so values compare exactly",
                server.redacted_url(),
                source_config.protocol()
            )));
        }
        let database = format!(
            "tributary_restore_test_{}_{}",
            // (At most 63 bytes in all: PostgreSQL cuts longer names.)
            source
                .to_ascii_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                .chars()
                .take(16)
                .collect::<String>(),
            chrono::Utc::now().format("%Y%m%d%H%M%S%6f")
        );
        let target = server
            .create_database(&database)
            .await
            .map_err(scratch_failed)?;
        let options = restore_options(tributary_snapshot::Target::Latest, Vec::new());
        let mut test = tributary_snapshot::RestoreTest::new()?;
        let (mut sink, watermark_key) = target_sink(&target, &source).await?;
        let report = {
            let mut tap = tributary_snapshot::RestoreSink {
                inner: sink.as_mut(),
                watermark_key: watermark_key.clone(),
                test: Some(&mut test),
            };
            tributary_snapshot::restore(&store, &source, &options, Some(&mut tap)).await?
        };
        drop(sink);
        // Read every restored table back, as a capture of the scratch database would.
        let mut tables = BTreeMap::new();
        for t in test.tables() {
            let restored = target.target_table(&t);
            if let Some(other) = tables.insert(restored.clone(), t.clone()) {
                return Err(PipelineError::Config(format!(
                    "source {source}: tables {other} and {t} both restore into {restored}; a MySQL restore test needs table names unique across the source's databases"
                )));
            }
        }
        let include: Vec<String> = tables
            .keys()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        let state_dir = tempfile::tempdir().map_err(|e| PipelineError::Io {
            path: "a scratch directory".into(),
            message: e.to_string(),
        })?;
        let state = StateStore::open(state_dir.path())?;
        let mut back = ReadBack {
            test: &mut test,
            tables,
        };
        if !include.is_empty() {
            SourceConfig::from_url(target.url(), include, "--scratch")?
                .read_tables(&source, &state, &mut back)
                .await?;
        }
        let result = RestoreTestResult {
            source: source.clone(),
            database: database.clone(),
            report,
            tables: test.compare()?,
        };
        if result.ok() {
            let mut session = server.session().await.map_err(scratch_failed)?;
            session
                .drop_database(&database)
                .await
                .map_err(scratch_failed)?;
            // The restore's watermark rows, when the server keeps them outside the
            // database (see `SinkConfig::restore_watermark_key`).
            if let Some(key) = watermark_key {
                let load = tributary_snapshot::restore::snapshot_load_key(&key);
                session
                    .forget_watermarks(&[key, load])
                    .await
                    .map_err(scratch_failed)?;
            }
        }
        out.push(result);
    }
    Ok(out)
}
