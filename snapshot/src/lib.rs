//! Continuous backup: the archived event log (segments of Avro object container files,
//! zstd-compressed, sha256-checksummed, listed in hash-chained manifests) in a local
//! directory or an S3-compatible store, and its verification.

pub mod archive;
mod crypt;
mod error;
pub mod ocf;
pub mod restore;
pub mod retention;
pub mod snapshots;
mod store;
pub mod verify;

pub use archive::{ArchiveSink, Manifest};
pub use error::BackupError;
pub use restore::{restore, RestoreOptions, RestoreReport, Target};
pub use retention::{parse_age, prune, PruneReport, Retention};
pub use snapshots::{list_snapshots, SnapshotManifest, SnapshotWriter};
pub use store::{BackupConfig, Store};
pub use verify::{verify_archive, verify_snapshot, ArchiveReport};
