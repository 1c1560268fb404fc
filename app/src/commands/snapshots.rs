//! `tributary snapshot create | prune | list | verify`: what the `[backup]` store holds, as
//! typed reports the command line prints.

use crate::backup;
use crate::commands::restore_test::{restore_test, RestoreTestResult};
use crate::config::Config;
use std::fmt;
use tributary_pipeline::PipelineError;
use tributary_snapshot::{
    ArchiveReport, FilesManifest, PruneReport, SnapshotManifest, Store, TableCheck,
};

/// The store and what `--source` selects in it: archived sources and file sets.
struct Selection {
    store: Store,
    sources: Vec<String>,
    sets: Vec<String>,
}

fn select(config: &Config, only: Option<&str>) -> Result<Selection, PipelineError> {
    Ok(Selection {
        store: Store::open(config.backup_section()?)?,
        sources: config.archived_selection(only)?,
        sets: config.file_sets(only),
    })
}

/// What `snapshot create` took, and the error that stopped it, if one did.
#[derive(Debug)]
pub struct CreateReport {
    /// One files snapshot per file set.
    pub files: Vec<FilesManifest>,
    /// One snapshot per archived source.
    pub snapshots: Vec<SnapshotManifest>,
    /// The error that stopped it (what was taken before it is reported all the same).
    pub error: Option<PipelineError>,
}

/// Takes a snapshot of each file set and each archived source (or only `only`), until
/// one fails.
pub async fn create(config: &Config, only: Option<&str>) -> Result<CreateReport, PipelineError> {
    let sel = select(config, only)?;
    let mut report = CreateReport {
        files: Vec::new(),
        snapshots: Vec::new(),
        error: None,
    };
    for set in &sel.sets {
        match backup::files_snapshot_create(config, Some(set)).await {
            Ok(taken) => report.files.extend(taken),
            Err(e) => return Ok(report.failed(e)),
        }
    }
    for source in &sel.sources {
        match backup::snapshot_create(config, Some(source), None).await {
            Ok(taken) => report.snapshots.extend(taken),
            Err(e) => return Ok(report.failed(e)),
        }
    }
    Ok(report)
}

impl CreateReport {
    fn failed(mut self, e: PipelineError) -> Self {
        self.error = Some(e);
        self
    }
}

impl fmt::Display for CreateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.files {
            writeln!(
                f,
                "files snapshot {} of set {}: {} entries, {} bytes ({} stored in {} objects)",
                m.id,
                m.set,
                m.files.len(),
                m.bytes,
                m.stored_bytes,
                m.packs.len()
            )?;
        }
        for m in &self.snapshots {
            writeln!(
                f,
                "snapshot {} of {}: {} rows, {} bytes in {} objects, at {}",
                m.id,
                m.source,
                m.rows,
                m.bytes,
                m.objects.len(),
                m.position
            )?;
        }
        Ok(())
    }
}

/// What `snapshot prune` deleted (or, dry, would delete).
#[derive(Debug, Clone)]
pub struct PruneReports {
    /// Whether nothing was deleted.
    pub dry: bool,
    /// Each file set's report.
    pub sets: Vec<(String, PruneReport)>,
    /// Each archived source's report.
    pub sources: Vec<(String, PruneReport)>,
}

/// Applies the retention settings to each file set and archived source (or only `only`).
pub async fn prune(
    config: &Config,
    only: Option<&str>,
    dry: bool,
) -> Result<PruneReports, PipelineError> {
    let sets = config.file_sets(only);
    let (sets, sources) = backup::prune(config, only, dry)
        .await?
        .into_iter()
        .partition(|(name, _)| sets.contains(name));
    Ok(PruneReports { dry, sets, sources })
}

impl fmt::Display for PruneReports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry { "would delete" } else { "deleted" };
        for (name, r) in &self.sets {
            writeln!(
                f,
                "set {name}: {verb} {} files snapshots [{}], {} objects; the oldest kept is {}",
                r.snapshots.len(),
                r.snapshots.join(", "),
                r.objects,
                r.anchor
                    .as_deref()
                    .unwrap_or("the oldest (no retention setting applies)")
            )?;
        }
        for (name, r) in &self.sources {
            let oldest = match &r.anchor {
                Some(id) => format!("snapshot {id}"),
                None => "the archive's start (no retention setting applies)".to_string(),
            };
            writeln!(
                f,
                "{name}: {verb} {} snapshots [{}] and {} archive segments, {} objects; the oldest restorable instant is {oldest}",
                r.snapshots.len(),
                r.snapshots.join(", "),
                r.segments,
                r.objects,
            )?;
        }
        Ok(())
    }
}

/// What `snapshot list` finds in the store.
#[derive(Debug, Clone)]
pub struct ListReport {
    /// Each file set's snapshots, oldest first.
    pub sets: Vec<(String, Vec<FilesManifest>)>,
    /// Each archived source's snapshots, oldest first.
    pub sources: Vec<(String, Vec<SnapshotManifest>)>,
}

/// Lists the snapshots of each file set and archived source (or only `only`).
pub async fn list(config: &Config, only: Option<&str>) -> Result<ListReport, PipelineError> {
    let sel = select(config, only)?;
    let mut report = ListReport {
        sets: Vec::new(),
        sources: Vec::new(),
    };
    for set in sel.sets {
        let found = tributary_snapshot::list_file_snapshots(&sel.store, &set).await?;
        report.sets.push((set, found));
    }
    for source in sel.sources {
        let found = tributary_snapshot::list_snapshots(&sel.store, &source).await?;
        report.sources.push((source, found));
    }
    Ok(report)
}

impl fmt::Display for ListReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (set, found) in &self.sets {
            for m in found {
                writeln!(
                    f,
                    "set {set} {}: {} entries, {} bytes ({} stored), finished {}",
                    m.id,
                    m.files.len(),
                    m.bytes,
                    m.stored_bytes,
                    m.finished_at
                )?;
            }
        }
        for (name, found) in &self.sources {
            for m in found {
                writeln!(
                    f,
                    "{name} {}: {} rows, {} bytes, at {}, finished {}",
                    m.id, m.rows, m.bytes, m.position, m.finished_at
                )?;
            }
        }
        Ok(())
    }
}

/// What `snapshot verify` checked of one archived source.
#[derive(Debug)]
pub struct SourceChecked {
    /// The source.
    pub source: String,
    /// Its archive.
    pub archive: ArchiveReport,
    /// Each snapshot checked, with its count of rows.
    pub snapshots: Vec<(SnapshotManifest, u64)>,
}

/// What `snapshot verify` checked, in order, and the damage that stopped it, if any.
#[derive(Debug)]
pub struct VerifyReport {
    /// Each files snapshot checked, with its count of files.
    pub files: Vec<(FilesManifest, u64)>,
    /// Each archived source checked.
    pub sources: Vec<SourceChecked>,
    /// The restore tests, when asked for.
    pub restore_tests: Vec<RestoreTestResult>,
    /// The damage or failure that stopped the verification.
    pub error: Option<PipelineError>,
}

impl VerifyReport {
    /// Whether every restore test checked out.
    pub fn ok(&self) -> bool {
        self.restore_tests.iter().all(RestoreTestResult::ok)
    }

    /// The report so far, stopped by `e`.
    fn failed(mut self, e: PipelineError) -> Self {
        self.error = Some(e);
        self
    }
}

/// Re-reads everything the store holds for each file set and archived source (or only
/// `only`) and, with `scratch`, restore-tests each source on that server; the first
/// damage stops it.
pub async fn verify(
    config: &Config,
    only: Option<&str>,
    scratch: Option<&str>,
) -> Result<VerifyReport, PipelineError> {
    let sel = select(config, only)?;
    let mut report = VerifyReport {
        files: Vec::new(),
        sources: Vec::new(),
        restore_tests: Vec::new(),
        error: None,
    };
    for set in &sel.sets {
        let snapshots = match tributary_snapshot::list_file_snapshots(&sel.store, set).await {
            Ok(s) => s,
            Err(e) => return Ok(report.failed(e.into())),
        };
        for m in snapshots {
            match tributary_snapshot::verify_files(&sel.store, &m).await {
                Ok(files) => report.files.push((m, files)),
                Err(e) => return Ok(report.failed(e.into())),
            }
        }
    }
    for name in &sel.sources {
        match verify_source(&sel.store, name, &mut report.sources).await {
            Ok(()) => {}
            Err(e) => return Ok(report.failed(e)),
        }
    }
    if let Some(scratch) = scratch {
        for name in &sel.sources {
            match restore_test(config, Some(name), scratch).await {
                Ok(tested) => report.restore_tests.extend(tested),
                Err(e) => return Ok(report.failed(e)),
            }
        }
    }
    Ok(report)
}

/// Verifies source `name`'s archive and snapshots into `out` (what was checked before a
/// damage is kept there).
async fn verify_source(
    store: &Store,
    name: &str,
    out: &mut Vec<SourceChecked>,
) -> Result<(), PipelineError> {
    let archive = tributary_snapshot::verify_archive(store, name).await?;
    out.push(SourceChecked {
        source: name.to_string(),
        archive,
        snapshots: Vec::new(),
    });
    let checked = out.last_mut().expect("pushed above");
    for snap in tributary_snapshot::list_snapshots(store, name).await? {
        let rows = tributary_snapshot::verify_snapshot(
            store,
            name,
            &snap,
            Some(tributary_capture::decode_copy_line),
        )
        .await?;
        checked.snapshots.push((snap, rows as u64));
    }
    Ok(())
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (m, files) in &self.files {
            writeln!(
                f,
                "files snapshot {} {}: OK: {} objects, {files} files, {} bytes",
                m.set,
                m.id,
                m.packs.len(),
                m.bytes
            )?;
        }
        for c in &self.sources {
            let (name, r) = (&c.source, &c.archive);
            match &r.to {
                None => writeln!(f, "archive {name}: OK: empty (nothing archived yet)")?,
                Some(to) => writeln!(
                    f,
                    "archive {name}: OK: {} segments, {} objects, {} events, {} bytes, from {} to {to}",
                    r.segments,
                    r.objects,
                    r.events,
                    r.bytes,
                    r.from
                        .map_or("the source's first event".to_string(), |p| format!("after {p}")),
                )?,
            }
            for (snap, rows) in &c.snapshots {
                writeln!(
                    f,
                    "snapshot {name} {}: OK: {} objects, {rows} rows, at {}",
                    snap.id,
                    snap.objects.len(),
                    snap.position
                )?;
            }
        }
        for r in &self.restore_tests {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RestoreTestResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "restore test {}: {} snapshot rows{} and {} archived events restored into {}",
            self.source,
            self.report.snapshot_rows,
            self.report
                .snapshot
                .as_deref()
                .map(|s| format!(" (snapshot {s})"))
                .unwrap_or_default(),
            self.report.events,
            self.database
        )?;
        for t in &self.tables {
            write_check(f, t)?;
        }
        Ok(())
    }
}

fn write_check(f: &mut fmt::Formatter<'_>, t: &TableCheck) -> fmt::Result {
    let verdict = if t.ok() { "OK" } else { "DIFFERS" };
    writeln!(
        f,
        "  {} {verdict}: {} rows, checksum {} (the archive says {} rows, checksum {})",
        t.table, t.restored_rows, t.restored_checksum, t.expected_rows, t.expected_checksum
    )?;
    for d in &t.differences {
        writeln!(f, "    {d}")?;
    }
    Ok(())
}
