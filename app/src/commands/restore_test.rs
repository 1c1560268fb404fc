//! `tributary snapshot verify --restore-test`: restores each archived source into a
//! scratch database, reads every table back, and compares it with what the archive says.

use crate::backup::restore_options;
use crate::commands::restore::target_sink;
use crate::config::Config;
use std::collections::BTreeMap;
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

/// `snapshot verify --restore-test`: restores each archived source (or only `only`) to
/// its newest archived instant (newest snapshot, then the archive) into a new database on
/// scratch server `scratch` (a sink of any kind), reads every restored table back through
/// that sink, and compares row counts and content checksums with what the archive says. The scratch
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
        // Read every restored table back through the sink, as the source's types.
        let mut tables = BTreeMap::new();
        for schema in test.tables() {
            let t = &schema.table;
            let restored = target.target_table(t);
            if let Some(other) = tables.insert(restored.clone(), schema.clone()) {
                return Err(PipelineError::Config(format!(
                    "source {source}: tables {} and {t} both restore into {restored}; a MySQL restore test needs table names unique across the source's databases",
                    other.table
                )));
            }
        }
        let mut session = target.session().await.map_err(scratch_failed)?;
        for (restored, schema) in &tables {
            // Keeping a row can fail only on local disk; that error is the one to report.
            let mut spool_error = None;
            let mut keep = |row| match test.observe(&schema.table, schema, &row) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let text = e.to_string();
                    spool_error = Some(e);
                    Err(SinkError::Protocol(text))
                }
            };
            let read = session.read_table(restored, schema, &mut keep).await;
            if let Some(e) = spool_error {
                return Err(e.into());
            }
            read.map_err(|e| {
                PipelineError::Config(format!(
                    "--scratch {:?}: reading {restored} back (kept in database {database}): {e}",
                    server.redacted_url()
                ))
            })?;
        }
        drop(session);
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
