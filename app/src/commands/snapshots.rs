//! `tributary snapshot create | prune | list | verify`: what the `[backup]` store holds, as
//! typed reports the command line prints and the HTTP API serialises.

use crate::backup;
use crate::commands::restore_test::{restore_test, RestoreTestResult};
use crate::config::Config;
use serde::{Serialize, Serializer};
use std::fmt;
use tributary_pipeline::PipelineError;
use tributary_snapshot::{
    ArchiveReport, FilesManifest, PruneReport, RestoreReport, SnapshotManifest, Store, TableCheck,
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
#[derive(Debug, Serialize)]
pub struct CreateReport {
    /// One files snapshot per file set.
    pub files: Vec<FilesManifest>,
    /// One snapshot per archived source.
    pub snapshots: Vec<SnapshotManifest>,
    /// The error that stopped it (what was taken before it is reported all the same),
    /// serialised as its message.
    #[serde(serialize_with = "error_text")]
    pub error: Option<PipelineError>,
}

/// Serialises the error that stopped a command as its message (`null`: none did).
pub(crate) fn error_text<S: Serializer>(
    error: &Option<PipelineError>,
    s: S,
) -> Result<S::Ok, S::Error> {
    error.as_ref().map(ToString::to_string).serialize(s)
}

/// Serialises `(name, value)` pairs as one object keyed by name, in their order (each
/// file set and source appears once).
fn by_name<T: Serialize, S: Serializer>(pairs: &[(String, T)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(name, value)| (name, value)))
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
#[derive(Debug, Clone, Serialize)]
pub struct PruneReports {
    /// Whether nothing was deleted.
    pub dry: bool,
    /// Each file set's report (serialised keyed by set).
    #[serde(serialize_with = "by_name")]
    pub sets: Vec<(String, PruneReport)>,
    /// Each archived source's report (serialised keyed by source).
    #[serde(serialize_with = "by_name")]
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
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    /// Each file set's snapshots, oldest first (serialised keyed by set).
    #[serde(serialize_with = "by_name")]
    pub sets: Vec<(String, Vec<FilesManifest>)>,
    /// Each archived source's snapshots, oldest first (serialised keyed by source).
    #[serde(serialize_with = "by_name")]
    pub sources: Vec<(String, Vec<SnapshotManifest>)>,
}

/// Lists the snapshots of each file set and archived source (or only `only`).
pub async fn list(config: &Config, only: Option<&str>) -> Result<ListReport, PipelineError> {
    let (sets, sources) = backup::list_snapshots(config, only).await?;
    Ok(ListReport { sets, sources })
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
#[derive(Debug, Serialize)]
pub struct SourceChecked {
    /// The source.
    pub source: String,
    /// Its archive.
    pub archive: ArchiveReport,
    /// Each snapshot checked, with its count of rows (serialised as `[manifest, rows]`).
    pub snapshots: Vec<(SnapshotManifest, u64)>,
}

/// What `snapshot verify` checked, in order, and the damage that stopped it, if any.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Each files snapshot checked, with its count of files (serialised as
    /// `[manifest, files]`).
    pub files: Vec<(FilesManifest, u64)>,
    /// Each archived source checked.
    pub sources: Vec<SourceChecked>,
    /// The restore tests, when asked for.
    #[serde(serialize_with = "restore_tests")]
    pub restore_tests: Vec<RestoreTestResult>,
    /// The damage or failure that stopped the verification, serialised as its message.
    #[serde(serialize_with = "error_text")]
    pub error: Option<PipelineError>,
}

/// Serialises the restore tests of a [`VerifyReport`]. `RestoreTestResult` and the
/// snapshot crate's `TableCheck` do not implement `Serialize` (their files belong to
/// another change), so this writes their public fields, and each verdict, itself.
fn restore_tests<S: Serializer>(tests: &[RestoreTestResult], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Tested<'a> {
        source: &'a str,
        database: &'a str,
        ok: bool,
        report: &'a RestoreReport,
        tables: Vec<Checked<'a>>,
    }
    #[derive(Serialize)]
    struct Checked<'a> {
        table: String,
        ok: bool,
        expected_rows: u64,
        restored_rows: u64,
        expected_checksum: &'a str,
        restored_checksum: &'a str,
        differences: &'a [String],
    }
    s.collect_seq(tests.iter().map(|t| {
        Tested {
            source: &t.source,
            database: &t.database,
            ok: t.ok(),
            report: &t.report,
            tables: t
                .tables
                .iter()
                .map(|c| Checked {
                    table: c.table.to_string(),
                    ok: c.ok(),
                    expected_rows: c.expected_rows,
                    restored_rows: c.restored_rows,
                    expected_checksum: &c.expected_checksum,
                    restored_checksum: &c.restored_checksum,
                    differences: &c.differences,
                })
                .collect(),
        }
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_schemas::TableId;

    #[test]
    fn a_prune_report_serialises_keyed_by_name() {
        let report = PruneReports {
            dry: true,
            sets: vec![("etc".into(), PruneReport::default())],
            sources: vec![(
                "hq".into(),
                PruneReport {
                    snapshots: vec!["s1".into()],
                    segments: 3,
                    objects: 5,
                    anchor: Some("s2".into()),
                },
            )],
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["dry"], true);
        assert_eq!(json["sets"]["etc"]["segments"], 0);
        assert_eq!(json["sources"]["hq"]["snapshots"][0], "s1");
        assert_eq!(json["sources"]["hq"]["segments"], 3);
        assert_eq!(json["sources"]["hq"]["anchor"], "s2");
    }

    #[test]
    fn a_verify_report_serialises_its_restore_tests_and_error() {
        let check = TableCheck {
            table: TableId::new("public", "items"),
            expected_rows: 3,
            restored_rows: 2,
            expected_checksum: "ab".into(),
            restored_checksum: "cd".into(),
            differences: vec!["key [1]: missing".into()],
        };
        let report = VerifyReport {
            files: Vec::new(),
            sources: vec![SourceChecked {
                source: "hq".into(),
                archive: ArchiveReport {
                    source: "hq".into(),
                    segments: 2,
                    events: 9,
                    ..ArchiveReport::default()
                },
                snapshots: Vec::new(),
            }],
            restore_tests: vec![RestoreTestResult {
                source: "hq".into(),
                database: "restore_test_hq".into(),
                report: RestoreReport {
                    events: 9,
                    ..RestoreReport::default()
                },
                tables: vec![check],
            }],
            error: Some(PipelineError::Inconsistent("segment 3 is damaged".into())),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["sources"][0]["archive"]["segments"], 2);
        assert_eq!(json["sources"][0]["archive"]["events"], 9);
        let tested = &json["restore_tests"][0];
        assert_eq!(tested["database"], "restore_test_hq");
        assert_eq!(tested["ok"], false);
        assert_eq!(tested["report"]["events"], 9);
        assert_eq!(tested["tables"][0]["table"], "public.items");
        assert_eq!(tested["tables"][0]["restored_rows"], 2);
        assert_eq!(tested["tables"][0]["differences"][0], "key [1]: missing");
        assert_eq!(json["error"], "inconsistent stream: segment 3 is damaged");
    }

    #[test]
    fn a_create_report_without_error_serialises_null() {
        let report = CreateReport {
            files: Vec::new(),
            snapshots: Vec::new(),
            error: None,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["error"], serde_json::Value::Null);
        assert_eq!(json["snapshots"], serde_json::json!([]));
    }
}
