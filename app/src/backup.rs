//! The backup work the schedule and the commands share: snapshots of the archived
//! sources and of the `[backup.files.<set>]` sets, retention, and restoring a file set.

use crate::config::Config;
use tributary_capture::snapshot::SnapshotOutput;
use tributary_capture::state::StateStore;
use tributary_capture::CaptureError;
use tributary_pipeline::PipelineError;

/// How a restore (or a restore test) runs: up to `target`, only `tables` (all when
/// empty), at most 10 000 events per sink transaction and 5 000 rows per batch, the rows
/// of PostgreSQL snapshots read with the capture's own COPY text reader.
pub fn restore_options(
    target: tributary_snapshot::Target,
    tables: Vec<String>,
) -> tributary_snapshot::RestoreOptions {
    tributary_snapshot::RestoreOptions {
        target,
        tables,
        max_tx_events: 10_000,
        batch_rows: 5_000,
        copy_decoder: Some(tributary_capture::decode_copy_line),
    }
}

/// The snapshots in the `[backup]` store of each file set and of each archived source
/// (or only `only`), oldest first, by set and by source.
#[allow(clippy::type_complexity)]
pub async fn list_snapshots(
    config: &Config,
    only: Option<&str>,
) -> Result<
    (
        Vec<(String, Vec<tributary_snapshot::FilesManifest>)>,
        Vec<(String, Vec<tributary_snapshot::SnapshotManifest>)>,
    ),
    PipelineError,
> {
    let store = tributary_snapshot::Store::open(config.backup_section()?)?;
    let mut sets = Vec::new();
    for set in config.file_sets(only) {
        let found = tributary_snapshot::list_file_snapshots(&store, &set).await?;
        sets.push((set, found));
    }
    let mut sources = Vec::new();
    for source in config.archived_selection(only)? {
        let found = tributary_snapshot::list_snapshots(&store, &source).await?;
        sources.push((source, found));
    }
    Ok((sets, sources))
}

/// Takes a files snapshot of each file set (or only `only`) into the `[backup]` store.
pub async fn files_snapshot_create(
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<tributary_snapshot::FilesManifest>, PipelineError> {
    let backup = config.backup_section()?;
    let store = tributary_snapshot::Store::open(backup)?;
    let mut out = Vec::new();
    for set in config.file_sets(only) {
        out.push(
            tributary_snapshot::snapshot_files(
                &store,
                &set,
                &backup.files[&set],
                backup.zstd_level,
                backup.snapshot_object_bytes as usize,
            )
            .await?,
        );
    }
    Ok(out)
}

/// Restores the newest files snapshot of set `set` taken at or before `to` (a time or
/// `latest`) under directory `into`; only paths starting with one of `only`, when given.
pub async fn files_restore(
    config: &Config,
    set: &str,
    to: &tributary_snapshot::Target,
    into: Option<&std::path::Path>,
    only: &[String],
) -> Result<tributary_snapshot::FilesRestoreReport, PipelineError> {
    let store = tributary_snapshot::Store::open(config.backup_section()?)?;
    let at = match to {
        tributary_snapshot::Target::Latest => i64::MAX,
        tributary_snapshot::Target::Time(t) => *t,
        tributary_snapshot::Target::Position(_) => {
            return Err(PipelineError::Config(format!(
                "--to: file set {set} is restored to a time or `latest`, not a source position"
            )))
        }
    };
    let snapshots = tributary_snapshot::list_file_snapshots(&store, set).await?;
    let Some(snap) = snapshots.iter().rev().find(|s| s.taken_at_micros <= at) else {
        return Err(PipelineError::Config(format!(
            "file set {set}: no files snapshot taken at or before that time ({} in the store{})",
            snapshots.len(),
            snapshots
                .first()
                .map(|s| format!(", the oldest {}", s.finished_at))
                .unwrap_or_default()
        )));
    };
    let dry = into.is_none();
    let into = into.unwrap_or(std::path::Path::new("/nonexistent"));
    Ok(tributary_snapshot::restore_files(&store, snap, into, only, dry).await?)
}

/// Where a backup snapshot's rows go: the snapshot writer.
struct SnapshotRows(Option<tributary_snapshot::SnapshotWriter>);

#[async_trait::async_trait]
impl SnapshotOutput for SnapshotRows {
    async fn event(
        &mut self,
        schemas: &tributary_schemas::AvroSchemas,
        event: &tributary_schemas::ChangeEvent,
    ) -> Result<(), CaptureError> {
        let writer = self.0.as_mut().expect("the writer lives until finish");
        writer
            .row(schemas, event)
            .await
            .map_err(|e| CaptureError::Setup(e.to_string()))
    }

    fn wants_copy_text(&self) -> bool {
        true
    }

    async fn copy_text(
        &mut self,
        table: &tributary_schemas::TableSchema,
        lines: &[u8],
        rows: u64,
    ) -> Result<(), CaptureError> {
        let writer = self.0.as_mut().expect("the writer lives until finish");
        writer
            .copy_text(table, lines, rows)
            .await
            .map_err(|e| CaptureError::Setup(e.to_string()))
    }
}

/// Takes a snapshot of each archived source (or only `only`) into the `[backup]` store:
/// its captured tables, consistent with one position of its log. Table versions are
/// registered in `state` (the capture's, when this process runs it) or in a scratch store.
pub async fn snapshot_create(
    config: &Config,
    only: Option<&str>,
    state: Option<&StateStore>,
) -> Result<Vec<tributary_snapshot::SnapshotManifest>, PipelineError> {
    let backup = config.backup_section()?;
    let selected = config.archived_selection(only)?;
    let store = tributary_snapshot::Store::open(backup)?;
    let scratch;
    let state = match state {
        Some(s) => s,
        None => {
            scratch = tempfile::tempdir().map_err(|e| PipelineError::Io {
                path: "a scratch directory".into(),
                message: e.to_string(),
            })?;
            &StateStore::open(scratch.path())?
        }
    };
    let mut out = Vec::new();
    for name in &selected {
        let source = &config.sources[name];
        let mut rows = SnapshotRows(Some(tributary_snapshot::SnapshotWriter::new(
            store.clone(),
            name,
            backup.zstd_level,
            backup.snapshot_object_bytes as usize,
        )));
        let copied = source
            .copy_tables(name, state, backup.snapshot_sessions, &mut rows)
            .await?;
        let writer = rows.0.take().expect("present until here");
        out.push(writer.finish(copied.position, copied.at_micros).await?);
    }
    Ok(out)
}

/// Applies the `[backup]` retention settings to each archived source (or only `only`);
/// `dry`: only reports. Returns each source's report.
pub async fn prune(
    config: &Config,
    only: Option<&str>,
    dry: bool,
) -> Result<Vec<(String, tributary_snapshot::PruneReport)>, PipelineError> {
    let backup = config.backup_section()?;
    let retention = backup.retention().map_err(PipelineError::Config)?;
    let store = tributary_snapshot::Store::open(backup)?;
    let now = chrono::Utc::now().timestamp_micros();
    let mut out = Vec::new();
    for set in config.file_sets(only) {
        let report = tributary_snapshot::prune_files(&store, &set, retention, now, dry).await?;
        if !dry && !report.snapshots.is_empty() {
            tracing::info!(set, snapshots = ?report.snapshots, anchor = ?report.anchor, "retention pruned files snapshots");
        }
        out.push((set, report));
    }
    for name in config.archived_selection(only)? {
        let report = tributary_snapshot::prune(&store, &name, retention, now, dry).await?;
        if !dry && (report.segments > 0 || !report.snapshots.is_empty()) {
            tracing::info!(source = name, snapshots = ?report.snapshots, segments = report.segments, anchor = ?report.anchor, "retention pruned");
        }
        out.push((name, report));
    }
    Ok(out)
}
