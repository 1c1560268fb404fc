//! Continuous backup: the archived event log (segments of Avro object container files,
//! zstd-compressed, sha256-checksummed, listed in hash-chained manifests) in a local
//! directory or an S3-compatible store, and its verification; snapshots of sources and of
//! file sets (directories, SQLite databases); retention; point-in-time restore.

pub mod archive;
mod config;
mod crypt;
mod error;
pub mod files;
pub mod manifests;
pub mod object;
pub mod ocf;
pub mod restore;
pub mod restore_test;
pub mod retention;
pub mod snapshots;
mod store;
pub mod verify;

pub use archive::ArchiveSink;
pub use config::{parse_age, BackupConfig, FileSetConfig, Retention};
pub use error::BackupError;
pub use files::{
    list_file_snapshots, prune_files, restore_files, snapshot_files, verify_files, FilesManifest,
    FilesRestoreReport,
};
pub use manifests::Manifest;
pub use restore::{restore, RestoreOptions, RestoreReport, Target};
pub use restore_test::{RestoreSink, RestoreTest, TableCheck};
pub use retention::{prune, PruneReport};
pub use snapshots::{
    list_snapshots, CopyDecoder, ObjectFormat, SnapshotManifest, SnapshotObject, SnapshotWriter,
};
pub use store::Store;
pub use verify::{verify_archive, verify_snapshot, ArchiveReport};
