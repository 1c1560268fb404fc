//! File sets: listed files and directories (configuration, documents) and SQLite database
//! files, backed up together as one files snapshot, as the old job module backed up files
//! beside its dumps.
//!
//! A files snapshot walks its set's paths (directories recursively, symbolic links kept as
//! links), and copies each SQLite database through SQLite's online backup API, so a
//! database written while it is copied is still a consistent one. Every file is cut into
//! pieces of at most `snapshot_object_bytes`, each piece a zstd frame; frames are packed
//! into objects of about that size (sealed when encryption is on), so many small files
//! make few objects and a huge file never sits whole in memory. The manifest, written
//! last, lists every file (path, kind, mode, modification time, size, sha256 of its
//! content, and where its pieces are) and every pack (size and sha256 as stored).
//!
//! Store layout: `files/<set>/<id>/<n>.pack` and `files/<set>/<id>/manifest.json`, where
//! `<id>` is the UTC time it was taken (`20261202T020000Z`), so names sort by age.

use crate::config::{FileSetConfig, Retention};
use crate::error::BackupError;
use crate::object::{corrupt, read_stored, sha256_hex};
use crate::retention::{retention_conflict, PruneReport};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What a manifest entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A SQLite database, copied with the online backup API.
    Sqlite,
    /// A directory (restored with its mode, even when empty).
    Dir,
    /// A symbolic link (restored as a link to the same target).
    Symlink,
}

/// A piece of a file: one zstd frame inside a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The pack's index in [`FilesManifest::packs`].
    pub pack: usize,
    /// Where the frame starts in the pack (after decryption).
    pub offset: u64,
    /// The frame's length.
    pub len: u64,
}

/// One file of a files snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The absolute path it was read from.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Content size in bytes (0 for directories and links).
    pub size: u64,
    /// sha256 of the content, hex (empty for directories and links).
    pub sha256: String,
    /// A link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The content's pieces, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Piece>,
}

/// One pack object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    /// Object name.
    pub name: String,
    /// Size as stored.
    pub bytes: u64,
    /// sha256 as stored, hex.
    pub sha256: String,
}

/// A complete files snapshot's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesManifest {
    /// Format version.
    pub format: u32,
    /// The set.
    pub set: String,
    /// The snapshot's id (its directory).
    pub id: String,
    /// When it started, microseconds since the Unix epoch: restoring to an instant takes
    /// the newest snapshot started at or before it.
    pub taken_at_micros: i64,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// Content bytes (before compression).
    pub bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// The files, directories and links, in walk order (a directory before its content).
    pub files: Vec<FileEntry>,
    /// The packs.
    pub packs: Vec<Pack>,
}

/// Name of files snapshot `id`'s manifest.
pub fn files_manifest_name(set: &str, id: &str) -> String {
    format!("files/{set}/{id}/manifest.json")
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::Spool {
        path: path.display().to_string(),
        message: format!("{what}: {e}"),
    }
}

/// Packs zstd frames into objects and uploads them.
struct Packer<'a> {
    store: &'a Store,
    prefix: String,
    limit: usize,
    open: Vec<u8>,
    packs: Vec<Pack>,
    stored_bytes: u64,
}

impl Packer<'_> {
    /// Appends `frame`; returns where it is.
    async fn add(&mut self, frame: &[u8]) -> Result<Piece, BackupError> {
        if !self.open.is_empty() && self.open.len() + frame.len() > self.limit {
            self.flush().await?;
        }
        let piece = Piece {
            pack: self.packs.len(),
            offset: self.open.len() as u64,
            len: frame.len() as u64,
        };
        self.open.extend_from_slice(frame);
        Ok(piece)
    }

    async fn flush(&mut self) -> Result<(), BackupError> {
        if self.open.is_empty() {
            return Ok(());
        }
        let name = format!("{}/{:06}.pack", self.prefix, self.packs.len());
        let stored = self.store.seal(std::mem::take(&mut self.open))?;
        let pack = Pack {
            name: name.clone(),
            bytes: stored.len() as u64,
            sha256: sha256_hex(&stored),
        };
        self.store.put(&name, stored.into()).await?;
        self.stored_bytes += pack.bytes;
        self.packs.push(pack);
        Ok(())
    }
}

/// The entries a set's paths name, walked: `(path to read, entry)`; a path that is missing
/// or unreadable is an error naming it.
fn walk(config: &FileSetConfig, set: &str) -> Result<Vec<(PathBuf, FileEntry)>, BackupError> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    // The SQLite databases are copied apart, consistently: their files (and a WAL or
    // journal beside them, which would be replayed into the copy on opening it) are not
    // taken again as plain files.
    let apart: Vec<PathBuf> = config
        .sqlite
        .iter()
        .flat_map(|db| {
            ["", "-wal", "-shm", "-journal"].map(|suffix| {
                let mut p = db.clone().into_os_string();
                p.push(suffix);
                PathBuf::from(p)
            })
        })
        .collect();
    let entry = |path: &Path, meta: &std::fs::Metadata| -> Option<FileEntry> {
        let kind = if meta.file_type().is_symlink() {
            FileKind::Symlink
        } else if meta.is_dir() {
            FileKind::Dir
        } else if meta.is_file() {
            FileKind::File
        } else {
            tracing::warn!(set, path = %path.display(), "neither a file, a directory nor a symbolic link: sockets, devices and pipes are not backed up");
            return None;
        };
        let target = match kind {
            FileKind::Symlink => Some(
                std::fs::read_link(path)
                    .map_or_else(|_| String::new(), |t| t.display().to_string()),
            ),
            _ => None,
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        Some(FileEntry {
            path: path.display().to_string(),
            kind,
            mode: meta.permissions().mode() & 0o7777,
            mtime,
            size: if kind == FileKind::File {
                meta.len()
            } else {
                0
            },
            sha256: String::new(),
            target,
            pieces: Vec::new(),
        })
    };
    for root in &config.paths {
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name();
        for next in walker {
            let item = next.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                io_error(&path, &format!("backup.files.{set}"), e)
            })?;
            if apart.iter().any(|p| p == item.path()) {
                continue;
            }
            let meta = item
                .metadata()
                .map_err(|e| io_error(item.path(), "reading metadata", e))?;
            out.extend(entry(item.path(), &meta).map(|e| (item.path().to_path_buf(), e)));
        }
    }
    for db in &config.sqlite {
        let meta = std::fs::metadata(db)
            .map_err(|e| io_error(db, &format!("backup.files.{set}: the sqlite database"), e))?;
        if !meta.is_file() {
            return Err(io_error(
                db,
                &format!("backup.files.{set}: the sqlite database"),
                "not a file",
            ));
        }
        if let Some(mut e) = entry(db, &meta) {
            e.kind = FileKind::Sqlite;
            out.push((db.clone(), e));
        }
    }
    Ok(out)
}

/// A consistent copy of SQLite database `db` in `dir`, made with the online backup API.
fn sqlite_copy(db: &Path, dir: &Path) -> Result<PathBuf, BackupError> {
    let copy = dir.join("sqlite-copy.db");
    let _ = std::fs::remove_file(&copy);
    let src = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| io_error(db, "opening the SQLite database", e))?;
    let failed =
        |e: rusqlite::Error| io_error(db, "copying the SQLite database (online backup)", e);
    let mut dst = rusqlite::Connection::open(&copy).map_err(failed)?;
    let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(failed)?;
    // Every page in one step, under one read transaction: a copy of one instant, which
    // writers (in WAL mode) do not wait for, and which their commits cannot restart, as
    // they would a copy made a few pages at a time.
    let started = std::time::Instant::now();
    loop {
        match backup.step(-1).map_err(failed)? {
            rusqlite::backup::StepResult::Done => break,
            _ if started.elapsed() > std::time::Duration::from_secs(60) => {
                return Err(io_error(
                    db,
                    "copying the SQLite database (online backup)",
                    "the database stayed locked for 60 s",
                ))
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    drop(backup);
    drop(dst);
    Ok(copy)
}

/// Takes a files snapshot of set `set` into `store`: zstd at `level`, pieces and packs of
/// about `object_bytes`. Logs progress every 10 s.
pub async fn snapshot_files(
    store: &Store,
    set: &str,
    config: &FileSetConfig,
    level: i32,
    object_bytes: usize,
) -> Result<FilesManifest, BackupError> {
    config.validate(set).map_err(BackupError::Config)?;
    let now = chrono::Utc::now();
    let id = now.format("%Y%m%dT%H%M%S%.6fZ").to_string();
    let walk_config = config.clone();
    let walk_set = set.to_string();
    let entries = tokio::task::spawn_blocking(move || walk(&walk_config, &walk_set))
        .await
        .map_err(|e| BackupError::Config(format!("walking backup.files.{set}: {e}")))??;
    let scratch = tempfile::tempdir()
        .map_err(|e| io_error(Path::new("a temporary directory"), "creating", e))?;
    let mut packer = Packer {
        store,
        prefix: format!("files/{set}/{id}"),
        limit: object_bytes.max(1 << 16),
        open: Vec::new(),
        packs: Vec::new(),
        stored_bytes: 0,
    };
    let piece_bytes = packer.limit;
    let mut files = Vec::with_capacity(entries.len());
    let mut bytes = 0u64;
    let started = std::time::Instant::now();
    let mut told = started;
    for (path, mut entry) in entries {
        if !matches!(entry.kind, FileKind::File | FileKind::Sqlite) {
            files.push(entry);
            continue;
        }
        let read_from = match entry.kind {
            FileKind::Sqlite => {
                let (db, dir) = (path.clone(), scratch.path().to_path_buf());
                tokio::task::spawn_blocking(move || sqlite_copy(&db, &dir))
                    .await
                    .map_err(|e| io_error(&path, "copying the SQLite database", e))??
            }
            _ => path.clone(),
        };
        let mut file = std::fs::File::open(&read_from)
            .map_err(|e| io_error(&path, "opening for the backup", e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            // One piece: read and compressed off the async threads.
            let (f, h, frame, n) = tokio::task::spawn_blocking(move || {
                let mut plain = Vec::new();
                let n = (&mut file)
                    .take(piece_bytes as u64)
                    .read_to_end(&mut plain)?;
                hasher.update(&plain);
                let frame = if n == 0 {
                    Vec::new()
                } else {
                    zstd::bulk::compress(&plain, level)?
                };
                Ok::<_, std::io::Error>((file, hasher, frame, n))
            })
            .await
            .map_err(|e| io_error(&path, "reading", e))?
            .map_err(|e| io_error(&path, "reading", e))?;
            (file, hasher) = (f, h);
            if n == 0 {
                break;
            }
            size += n as u64;
            entry.pieces.push(packer.add(&frame).await?);
            if told.elapsed() >= std::time::Duration::from_secs(10) {
                told = std::time::Instant::now();
                tracing::info!(set, file = %path.display(), bytes = bytes + size, elapsed_s = started.elapsed().as_secs(), "files snapshot progress");
            }
        }
        entry.size = size;
        entry.sha256 = hex::encode(hasher.finalize());
        bytes += size;
        files.push(entry);
    }
    packer.flush().await?;
    let manifest = FilesManifest {
        format: 1,
        set: set.to_string(),
        id: id.clone(),
        taken_at_micros: now.timestamp_micros(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        bytes,
        stored_bytes: packer.stored_bytes,
        files,
        packs: packer.packs,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Config(format!("encoding the files manifest: {e}")))?;
    store
        .put(&files_manifest_name(set, &id), json.into())
        .await?;
    tracing::info!(
        set,
        snapshot = id,
        files = manifest.files.len(),
        bytes,
        stored = manifest.stored_bytes,
        "files snapshot taken"
    );
    Ok(manifest)
}

/// The complete files snapshots of set `set`, oldest first.
pub async fn list_file_snapshots(
    store: &Store,
    set: &str,
) -> Result<Vec<FilesManifest>, BackupError> {
    let mut out: Vec<FilesManifest> = crate::snapshots::manifests_under(
        store,
        &format!("files/{set}/"),
        "a files snapshot manifest",
    )
    .await?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Reads pack `index` of `manifest`, checked against its size and sha256, decrypted.
async fn read_pack(
    store: &Store,
    manifest: &FilesManifest,
    index: usize,
) -> Result<Vec<u8>, BackupError> {
    let pack = manifest.packs.get(index).ok_or_else(|| {
        corrupt(
            store,
            &files_manifest_name(&manifest.set, &manifest.id),
            format!("a file names pack {index}, which it does not list"),
        )
    })?;
    read_stored(store, &pack.name, pack.bytes, &pack.sha256).await
}

/// What [`read_files`] hands the content to.
trait FileSink {
    /// The next piece of file `i`'s content.
    fn piece(&mut self, i: usize, content: &[u8]) -> Result<(), BackupError>;
    /// File `i` is complete, its size and sha256 checked.
    fn done(&mut self, i: usize) -> Result<(), BackupError>;
}

/// Counts the files checked.
struct Count(u64);

impl FileSink for Count {
    fn piece(&mut self, _: usize, _: &[u8]) -> Result<(), BackupError> {
        Ok(())
    }

    fn done(&mut self, _: usize) -> Result<(), BackupError> {
        self.0 += 1;
        Ok(())
    }
}

/// Goes through every wanted file of `manifest` in order, handing each piece's content
/// to `out`, then telling it the file is done once its size and sha256 are checked.
/// Holds one pack in memory.
async fn read_files(
    store: &Store,
    manifest: &FilesManifest,
    wanted: impl Fn(&FileEntry) -> bool,
    out: &mut dyn FileSink,
) -> Result<(), BackupError> {
    let mut cached: Option<(usize, Vec<u8>)> = None;
    for (i, file) in manifest.files.iter().enumerate() {
        if !matches!(file.kind, FileKind::File | FileKind::Sqlite) || !wanted(file) {
            continue;
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        for piece in &file.pieces {
            if cached.as_ref().is_none_or(|(n, _)| *n != piece.pack) {
                cached = Some((piece.pack, read_pack(store, manifest, piece.pack).await?));
            }
            let (_, pack) = cached.as_ref().expect("just read");
            let name = &manifest.packs[piece.pack].name;
            let frame = usize::try_from(piece.offset)
                .ok()
                .zip(usize::try_from(piece.offset + piece.len).ok())
                .and_then(|(a, b)| pack.get(a..b))
                .ok_or_else(|| {
                    corrupt(
                        store,
                        name,
                        format!("{} has a piece past the pack's end", file.path),
                    )
                })?;
            let plain = zstd::stream::decode_all(frame)
                .map_err(|e| corrupt(store, name, format!("a piece of {}: {e}", file.path)))?;
            hasher.update(&plain);
            size += plain.len() as u64;
            out.piece(i, &plain)?;
        }
        let sha = hex::encode(hasher.finalize());
        if size != file.size || sha != file.sha256 {
            return Err(corrupt(
                store,
                &files_manifest_name(&manifest.set, &manifest.id),
                format!(
                    "{} restores to {size} bytes with sha256 {sha}, but the manifest says {} bytes with sha256 {}",
                    file.path, file.size, file.sha256
                ),
            ));
        }
        out.done(i)?;
    }
    Ok(())
}

/// Verifies files snapshot `manifest`: every pack's size and sha256, and every file's
/// content against its size and sha256. Returns the files checked.
pub async fn verify_files(store: &Store, manifest: &FilesManifest) -> Result<u64, BackupError> {
    let mut count = Count(0);
    read_files(store, manifest, |_| true, &mut count).await?;
    Ok(count.0)
}

/// What a files restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesRestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// Files (and SQLite databases) written.
    pub files: u64,
    /// Directories and links made.
    pub others: u64,
    /// Content bytes written.
    pub bytes: u64,
}

/// Where `path` (absolute) goes under `into`.
fn destination(into: &Path, path: &str) -> PathBuf {
    into.join(path.trim_start_matches('/'))
}

/// Writes restored files: each under a temporary name, renamed once complete.
struct Writer<'a> {
    manifest: &'a FilesManifest,
    into: &'a Path,
    dry: bool,
    /// The file being written.
    open: Option<(usize, std::fs::File)>,
    report: &'a mut FilesRestoreReport,
}

impl Writer<'_> {
    /// File `i`'s temporary name and final path.
    fn paths(&self, i: usize) -> (PathBuf, PathBuf) {
        let path = destination(self.into, &self.manifest.files[i].path);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tributary-restore");
        (path.with_file_name(name), path)
    }
}

impl FileSink for Writer<'_> {
    fn piece(&mut self, i: usize, content: &[u8]) -> Result<(), BackupError> {
        self.report.bytes += content.len() as u64;
        if self.dry {
            return Ok(());
        }
        let (tmp, _) = self.paths(i);
        if self.open.as_ref().is_none_or(|(n, _)| *n != i) {
            let file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, "creating", e))?;
            self.open = Some((i, file));
        }
        let (_, file) = self.open.as_mut().expect("just opened");
        file.write_all(content)
            .map_err(|e| io_error(&tmp, "writing", e))
    }

    fn done(&mut self, i: usize) -> Result<(), BackupError> {
        use std::os::unix::fs::PermissionsExt;
        self.report.files += 1;
        if self.dry {
            return Ok(());
        }
        let (tmp, path) = self.paths(i);
        let file = match self.open.take() {
            Some((n, file)) if n == i => file,
            // An empty file has no pieces.
            _ => std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, "creating", e))?,
        };
        let entry = &self.manifest.files[i];
        let when =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.mtime.max(0) as u64);
        file.set_modified(when)
            .map_err(|e| io_error(&tmp, "setting the modification time", e))?;
        file.sync_all().map_err(|e| io_error(&tmp, "writing", e))?;
        drop(file);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(entry.mode))
            .map_err(|e| io_error(&tmp, "setting the mode", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, "renaming into place", e))
    }
}

/// Restores files snapshot `manifest` under directory `into` (each file at its absolute
/// path below it: `/etc/app.toml` → `<into>/etc/app.toml`), with modes and modification
/// times; only the paths `only` starts with, when given. `dry`: checks everything and
/// writes nothing. A file is written under a temporary name and renamed once its
/// content checks out.
pub async fn restore_files(
    store: &Store,
    manifest: &FilesManifest,
    into: &Path,
    only: &[String],
    dry: bool,
) -> Result<FilesRestoreReport, BackupError> {
    use std::os::unix::fs::PermissionsExt;
    let wanted =
        |f: &FileEntry| only.is_empty() || only.iter().any(|p| f.path.starts_with(p.as_str()));
    let mut report = FilesRestoreReport {
        snapshot: manifest.id.clone(),
        ..Default::default()
    };
    // Every file lands below `into`: a manifest naming a path with `..` (changed by hand,
    // or by someone with write access to the store) is refused before anything is written.
    if let Some(bad) = manifest.files.iter().find(|f| {
        !Path::new(&f.path).is_absolute()
            || Path::new(&f.path)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    }) {
        return Err(corrupt(
            store,
            &files_manifest_name(&manifest.set, &manifest.id),
            format!(
                "names {:?}, which is not an absolute path without `..`",
                bad.path
            ),
        ));
    }
    if !dry {
        for entry in manifest.files.iter().filter(|f| wanted(f)) {
            let path = destination(into, &entry.path);
            match entry.kind {
                FileKind::Dir => {
                    std::fs::create_dir_all(&path).map_err(|e| io_error(&path, "creating", e))?;
                    report.others += 1;
                }
                // Links are made after the files, so no file is written through one.
                FileKind::Symlink => {}
                FileKind::File | FileKind::Sqlite => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| io_error(parent, "creating", e))?;
                    }
                }
            }
        }
    }
    let mut writer = Writer {
        manifest,
        into,
        dry,
        open: None,
        report: &mut report,
    };
    read_files(store, manifest, wanted, &mut writer).await?;
    if !dry {
        for entry in manifest
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Symlink && wanted(f))
        {
            let path = destination(into, &entry.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error(parent, "creating", e))?;
            }
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(&path);
            }
            std::os::unix::fs::symlink(entry.target.as_deref().unwrap_or(""), &path)
                .map_err(|e| io_error(&path, "making the link", e))?;
            report.others += 1;
        }
        // Directories last, deepest first: their modes may forbid writing into them.
        for entry in manifest
            .files
            .iter()
            .rev()
            .filter(|f| f.kind == FileKind::Dir && wanted(f))
        {
            let path = destination(into, &entry.path);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
                .map_err(|e| io_error(&path, "setting the mode", e))?;
        }
    }
    Ok(report)
}

/// Applies `retention` to set `set`'s files snapshots at `now_micros` (`dry`: only
/// reports): with `max_age`, the newest snapshot taken before the window opens and every
/// newer one stay; with `max_backups`, the newest that many. A `max_backups` that would
/// delete a snapshot the window needs is an error, and nothing is deleted.
pub async fn prune_files(
    store: &Store,
    set: &str,
    retention: Retention,
    now_micros: i64,
    dry: bool,
) -> Result<PruneReport, BackupError> {
    let mut report = PruneReport::default();
    let snapshots = list_file_snapshots(store, set).await?;
    let times: Vec<i64> = snapshots.iter().map(|s| s.taken_at_micros).collect();
    let Some(anchor) = retention.anchor(&times, now_micros).map_err(|(n, a)| {
        retention_conflict(
            n,
            &format!("files snapshot {} of set {set}", snapshots[a].id),
        )
    })?
    else {
        return Ok(report);
    };
    report.anchor = Some(snapshots[anchor].id.clone());
    for old in &snapshots[..anchor] {
        report.snapshots.push(old.id.clone());
        report.objects += old.packs.len() as u64 + 1;
        if !dry {
            // The manifest first: a stop half way leaves no listed snapshot with packs gone.
            store.delete(&files_manifest_name(set, &old.id)).await?;
            for p in &old.packs {
                store.delete(&p.name).await?;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackupConfig;

    #[tokio::test]
    async fn a_set_round_trips_with_links_modes_times_and_a_sqlite_database() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("docs/empty")).unwrap();
        std::fs::write(data.join("docs/a.txt"), "hello").unwrap();
        std::fs::write(data.join("docs/empty.txt"), "").unwrap();
        // Bigger than a piece: spans several packs.
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(data.join("docs/big.bin"), &big).unwrap();
        std::fs::set_permissions(
            data.join("docs/a.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("a.txt", data.join("docs/link")).unwrap();
        // The database sits in a walked directory too: it is taken once, by the backup
        // API, and its WAL is not taken at all.
        let db = data.join("docs/pos.db");
        let writer = rusqlite::Connection::open(&db).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE sales (id INTEGER PRIMARY KEY, qty INT); INSERT INTO sales VALUES (1, 5), (2, 7);")
            .unwrap();
        assert!(data.join("docs/pos.db-wal").exists());
        let store = Store::open(&BackupConfig::at(
            dir.path().join("store").display().to_string(),
        ))
        .unwrap();
        let set = FileSetConfig {
            paths: vec![data.join("docs")],
            sqlite: vec![db.clone()],
        };
        let m = snapshot_files(&store, "docs", &set, 3, 1 << 16)
            .await
            .unwrap();
        assert!(m.packs.len() > 1, "{m:?}");
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths.iter().filter(|p| p.contains("pos.db")).count(),
            1,
            "{paths:?}"
        );
        assert_eq!(verify_files(&store, &m).await.unwrap(), 4);
        assert_eq!(
            list_file_snapshots(&store, "docs").await.unwrap(),
            vec![m.clone()]
        );

        let into = dir.path().join("restored");
        let r = restore_files(&store, &m, &into, &[], false).await.unwrap();
        assert_eq!((r.files, r.others), (4, 3), "{r:?}");
        let back = |p: &Path| destination(&into, &p.display().to_string());
        assert_eq!(
            std::fs::read(back(&data.join("docs/big.bin"))).unwrap(),
            big
        );
        assert_eq!(
            std::fs::read_to_string(back(&data.join("docs/a.txt"))).unwrap(),
            "hello"
        );
        assert_eq!(
            std::fs::read(back(&data.join("docs/empty.txt"))).unwrap(),
            b""
        );
        assert!(back(&data.join("docs/empty")).is_dir());
        let meta = std::fs::metadata(back(&data.join("docs/a.txt"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        let secs =
            |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let original = std::fs::metadata(data.join("docs/a.txt")).unwrap();
        assert_eq!(
            secs(meta.modified().unwrap()),
            secs(original.modified().unwrap())
        );
        assert_eq!(
            std::fs::read_link(back(&data.join("docs/link"))).unwrap(),
            PathBuf::from("a.txt")
        );
        let c = rusqlite::Connection::open(back(&db)).unwrap();
        let total: i64 = c
            .query_row("SELECT sum(qty) FROM sales", [], |r| r.get(0))
            .unwrap();
        assert_eq!(total, 12);

        // A damaged pack is named, by verify and by restore.
        let victim = &m.packs[1].name;
        let path = dir.path().join("store").join(victim);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let e = verify_files(&store, &m).await.unwrap_err().to_string();
        assert!(e.contains(victim.as_str()) && e.contains("damaged"), "{e}");
        let e = restore_files(&store, &m, &dir.path().join("again"), &[], false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(victim.as_str()), "{e}");
        // A manifest naming a path that climbs out of the target is refused.
        let mut climbing = m.clone();
        climbing.files[1].path = "/../../etc/passwd".into();
        let e = restore_files(&store, &climbing, &dir.path().join("x"), &[], true)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("without `..`"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&BackupConfig::at(
            dir.path().join("store").display().to_string(),
        ))
        .unwrap();
        let gone = dir.path().join("gone");
        let set = FileSetConfig {
            paths: vec![gone.clone()],
            sqlite: vec![],
        };
        let e = snapshot_files(&store, "s", &set, 3, 1 << 20)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&gone.display().to_string()), "{e}");
        let relative = FileSetConfig {
            paths: vec![PathBuf::from("etc")],
            sqlite: vec![],
        };
        assert!(relative
            .validate("s")
            .unwrap_err()
            .contains("not an absolute path"));
    }

    #[tokio::test]
    async fn pruning_keeps_what_the_window_needs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let store = Store::open(&BackupConfig::at(
            dir.path().join("store").display().to_string(),
        ))
        .unwrap();
        let set = FileSetConfig {
            paths: vec![dir.path().join("f")],
            sqlite: vec![],
        };
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(snapshot_files(&store, "s", &set, 3, 1 << 20).await.unwrap());
        }
        let keep_two = Retention {
            max_backups: Some(2),
            max_age_secs: None,
        };
        let now = chrono::Utc::now().timestamp_micros();
        let r = prune_files(&store, "s", keep_two, now, true).await.unwrap();
        assert_eq!(r.snapshots, vec![taken[0].id.clone()]);
        assert_eq!(
            list_file_snapshots(&store, "s").await.unwrap().len(),
            3,
            "dry run"
        );
        prune_files(&store, "s", keep_two, now, false)
            .await
            .unwrap();
        assert_eq!(
            list_file_snapshots(&store, "s").await.unwrap(),
            taken[1..].to_vec()
        );
        // A window reaching back before the newest but one needs two; one is too few.
        let conflict = Retention {
            max_backups: Some(1),
            max_age_secs: Some(0),
        };
        let later = taken[2].taken_at_micros - 1;
        let e = prune_files(&store, "s", conflict, later, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_backups = 1") && e.contains(&taken[1].id),
            "{e}"
        );
    }
}
