//! `tributary restore`: point-in-time restore of an archived source into a database.

use crate::backup::{files_restore, restore_options};
use crate::config::Config;
use tributary_pipeline::PipelineError;
use tributary_sinks::{Sink, SinkConfig};

/// Restores the archive of `source` (default: the only archived source) into the
/// database at `target` (`postgres://…` or `mysql://…`; `None`: a dry run), tables into
/// `target_schema` when given. Returns the source's name and what was done.
pub async fn restore(
    config: &Config,
    source: Option<&str>,
    options: &tributary_snapshot::RestoreOptions,
    target: Option<&str>,
    target_schema: Option<String>,
) -> Result<(String, tributary_snapshot::RestoreReport), PipelineError> {
    let backup = config.backup_section()?;
    let source = match config.archived_selection(source)?.as_slice() {
        [one] => one.clone(),
        several => {
            return Err(PipelineError::Config(format!(
                "several sources are archived ({}): name one with --source",
                several.join(", ")
            )))
        }
    };
    let store = tributary_snapshot::Store::open(backup)?;
    let mut sink = match target {
        None => None,
        Some(url) => {
            let target = SinkConfig::from_url(url, target_schema, options.batch_rows, "--target")?;
            Some(target_sink(&target, &source).await?)
        }
    };
    let mut wrapped = sink
        .as_mut()
        .map(|(inner, key)| tributary_snapshot::RestoreSink {
            inner: inner.as_mut(),
            watermark_key: key.clone(),
            test: None,
        });
    let report = tributary_snapshot::restore(
        &store,
        &source,
        options,
        wrapped.as_mut().map(|s| s as &mut dyn Sink),
    )
    .await?;
    Ok((source, report))
}

/// The sink a restore writes through into database `url` (postgres:// or mysql://), and
/// the key its watermark is kept under (see `SinkConfig::restore_watermark_key`).
pub(crate) async fn target_sink(
    target: &SinkConfig,
    source: &str,
) -> Result<(Box<dyn Sink>, Option<String>), PipelineError> {
    Ok((
        target.connect().await?,
        target.restore_watermark_key(source),
    ))
}

/// What `tributary restore` is asked to do.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// How far: a time, `latest`, or a source position (as given).
    pub to: String,
    /// The database (or, for a file set, the directory) to restore into; `None`: a dry
    /// run.
    pub target: Option<String>,
    /// The archived source or file set (default: the only archived source).
    pub source: Option<String>,
    /// Only these tables (or, for a file set, paths).
    pub tables: Vec<String>,
    /// Schema (MySQL: database) every table is restored into.
    pub target_schema: Option<String>,
}

/// What `tributary restore` did (or, dry, would do); serialised with `kind` (`files` or
/// `source`) beside the variant's fields.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestoreOutcome {
    /// A file set restored under a directory.
    Files {
        /// The file set.
        set: String,
        /// How far, as asked.
        to: String,
        /// The directory, unless dry.
        into: Option<std::path::PathBuf>,
        /// What was written.
        report: tributary_snapshot::FilesRestoreReport,
    },
    /// A source restored into a database.
    Source {
        /// The source.
        source: String,
        /// How far, as asked.
        to: String,
        /// Whether nothing was written.
        dry: bool,
        /// Seconds it took.
        seconds: f64,
        /// What was applied.
        report: tributary_snapshot::RestoreReport,
    },
}

/// Restores a file set or an archived source as `request` says.
pub async fn run(
    config: &Config,
    request: &RestoreRequest,
) -> Result<RestoreOutcome, PipelineError> {
    let to = tributary_snapshot::Target::parse(&request.to)?;
    if let Some(set) = request
        .source
        .as_deref()
        .filter(|s| config.file_sets(Some(s)).len() == 1)
    {
        if request.target_schema.is_some() {
            return Err(PipelineError::Config(format!(
                "--target-schema: file set {set} is restored into a directory (--target), not a schema"
            )));
        }
        let into = request.target.as_deref().map(std::path::Path::new);
        let report = files_restore(config, set, &to, into, &request.tables).await?;
        return Ok(RestoreOutcome::Files {
            set: set.to_string(),
            to: request.to.clone(),
            into: into.map(|p| p.to_path_buf()),
            report,
        });
    }
    let options = restore_options(to, request.tables.clone());
    let started = std::time::Instant::now();
    let (source, report) = restore(
        config,
        request.source.as_deref(),
        &options,
        request.target.as_deref(),
        request.target_schema.clone(),
    )
    .await?;
    Ok(RestoreOutcome::Source {
        source,
        to: request.to.clone(),
        dry: request.target.is_none(),
        seconds: started.elapsed().as_secs_f64(),
        report,
    })
}

impl std::fmt::Display for RestoreOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreOutcome::Files {
                set,
                to,
                into,
                report: r,
            } => writeln!(
                f,
                "restore of file set {set} to {to}: from files snapshot {}: {} {} files ({} bytes) and {} directories and links{}",
                r.snapshot,
                if into.is_none() { "would write" } else { "wrote" },
                r.files,
                r.bytes,
                r.others,
                into.as_ref().map(|d| format!(" under {}", d.display())).unwrap_or_default()
            ),
            RestoreOutcome::Source {
                source,
                to,
                dry,
                seconds,
                report: r,
            } => {
                writeln!(
                    f,
                    "restore of {source} to {to}: {} {} events in {} transactions from {} segments in {seconds:.1} s ({} already in the target)",
                    if *dry { "would apply" } else { "applied" },
                    r.events,
                    r.transactions,
                    r.segments,
                    r.already
                )?;
                for (table, n) in &r.tables {
                    writeln!(f, "  {table}: {n} events")?;
                }
                if let (Some(p), Some(t)) = (r.last_position, r.last_commit_micros) {
                    let at = chrono::DateTime::from_timestamp_micros(t)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    writeln!(f, "  last: {p}, committed {at}")?;
                }
                if r.archive_ends_before_target {
                    writeln!(
                        f,
                        "  note: the archive ends before {to}; everything archived was restored"
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_outcome_serialises_with_its_kind() {
        let outcome = RestoreOutcome::Source {
            source: "hq".into(),
            to: "latest".into(),
            dry: true,
            seconds: 1.5,
            report: tributary_snapshot::RestoreReport {
                segments: 2,
                transactions: 3,
                events: 4,
                tables: [("public.items".to_string(), 4)].into(),
                last_position: Some(tributary_schemas::Position::pg(7, 1)),
                ..Default::default()
            },
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["kind"], "source");
        assert_eq!(json["source"], "hq");
        assert_eq!(json["dry"], true);
        assert_eq!(json["seconds"], 1.5);
        assert_eq!(json["report"]["events"], 4);
        assert_eq!(json["report"]["tables"]["public.items"], 4);
        assert_eq!(json["report"]["last_position"]["kind"], "postgres");

        let files = RestoreOutcome::Files {
            set: "etc".into(),
            to: "latest".into(),
            into: Some("/restore".into()),
            report: tributary_snapshot::FilesRestoreReport {
                snapshot: "f1".into(),
                files: 3,
                others: 1,
                bytes: 10,
            },
        };
        let json = serde_json::to_value(&files).unwrap();
        assert_eq!(json["kind"], "files");
        assert_eq!(json["into"], "/restore");
        assert_eq!(json["report"]["files"], 3);
    }
}
