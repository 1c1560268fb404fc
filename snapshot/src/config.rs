//! The `[backup]` settings: the store, how the event log is archived and snapshots are
//! cut, encryption, retention and file sets. Types only, with the checks `validate` makes
//! before anything opens the store; what the settings do lives with the modules that act
//! on them ([`crate::store`], [`crate::archive`], [`crate::retention`], [`crate::files`]).

use crate::crypt::Crypt;
use serde::Deserialize;
use std::path::PathBuf;
use tributary_schemas::Secret;

/// The `[backup]` settings: the store, and how the event log is archived.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Sources whose event log is archived; default all.
    #[serde(default)]
    pub archive_sources: Option<Vec<String>>,
    /// A segment is sealed (uploaded) once its files hold this many bytes…
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// …or once its first event is this old.
    #[serde(default = "default_segment_seconds")]
    pub segment_seconds: u64,
    /// zstd level of segments and snapshots (1–22).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Snapshots: a cron expression (`0 2 * * *`: every day at 02:00 UTC) when `run`
    /// takes them; none: only `tributary snapshot create`.
    #[serde(default)]
    pub snapshot_schedule: Option<String>,
    /// Encryption (age): an identity file (`age-keygen` output); objects are encrypted to
    /// its public keys and decrypted with its secret keys.
    #[serde(default)]
    pub age_identity_file: Option<std::path::PathBuf>,
    /// Encryption (age): the environment variable holding a passphrase.
    #[serde(default)]
    pub age_passphrase_env: Option<String>,
    /// Retention: snapshots kept at most (the oldest beyond go, with the archive
    /// segments only they needed).
    #[serde(default)]
    pub max_backups: Option<usize>,
    /// Retention: the restore window (`30d`, `12h`, `2w`): every instant within it stays
    /// restorable.
    #[serde(default)]
    pub max_age: Option<String>,
    /// Snapshots: a table goes on in a new object past this many bytes.
    #[serde(default = "default_snapshot_object_bytes")]
    pub snapshot_object_bytes: u64,
    /// Objects larger than this are uploaded in parts and read back through temporary
    /// files, so memory holds pieces of them only (at least 1 MiB).
    #[serde(default = "default_memory_object_bytes")]
    pub memory_object_bytes: u64,
    /// Snapshots of PostgreSQL sources: sessions that copy parts of one table at once
    /// (every table of 8 MB or more is cut into this many page ranges).
    #[serde(default = "default_snapshot_sessions")]
    pub snapshot_sessions: usize,
    /// File sets (`[backup.files.<name>]`): directories, files and SQLite databases
    /// snapshotted with the sources.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, FileSetConfig>,
    /// A directory (created when missing), or `s3://bucket[/prefix]`.
    pub store: String,
    /// S3: the endpoint URL of an S3-compatible server (default AWS).
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// S3: the region (default `us-east-1`).
    #[serde(default)]
    pub s3_region: Option<String>,
    /// S3: the access key id (default the `AWS_ACCESS_KEY_ID` environment variable).
    #[serde(default)]
    pub s3_access_key_id: Option<String>,
    /// S3: the secret key (default `AWS_SECRET_ACCESS_KEY`); write it as `${ENV}`.
    #[serde(default)]
    pub s3_secret_access_key: Option<Secret>,
}

/// A `[backup.files.<name>]` set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSetConfig {
    /// Files and directories (recursively) to back up.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// SQLite database files, copied with SQLite's online backup.
    #[serde(default)]
    pub sqlite: Vec<PathBuf>,
}

impl FileSetConfig {
    /// Checks set `name`'s settings.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "backup.files.{name}: a set name is letters, digits, '_' and '-'"
            ));
        }
        if self.paths.is_empty() && self.sqlite.is_empty() {
            return Err(format!(
                "backup.files.{name}: lists no paths and no sqlite databases"
            ));
        }
        for p in self.paths.iter().chain(&self.sqlite) {
            if !p.is_absolute() {
                return Err(format!(
                    "backup.files.{name}: {} is not an absolute path",
                    p.display()
                ));
            }
        }
        Ok(())
    }
}

/// The retention settings (which snapshot they keep: `Retention::anchor` in
/// [`crate::retention`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Snapshots kept at most.
    pub max_backups: Option<usize>,
    /// The restore window, in seconds.
    pub max_age_secs: Option<u64>,
}

/// Reads a duration such as `30d`, `12h`, `90m`, `45s` or `2w`; the number of seconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 30d, 12h, 90m, 45s or 2w"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?}: no number before the unit"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (s, m, h, d or w)"
            ))
        }
    };
    n.checked_mul(unit)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

fn default_segment_bytes() -> u64 {
    64 << 20
}

fn default_segment_seconds() -> u64 {
    300
}

fn default_zstd_level() -> i32 {
    3
}

fn default_memory_object_bytes() -> u64 {
    64 << 20
}

fn default_snapshot_object_bytes() -> u64 {
    64 << 20
}

fn default_snapshot_sessions() -> usize {
    2
}

impl BackupConfig {
    /// Settings for a store at `store` with every other setting at its default.
    pub fn at(store: impl Into<String>) -> Self {
        BackupConfig {
            archive_sources: None,
            segment_bytes: default_segment_bytes(),
            segment_seconds: default_segment_seconds(),
            zstd_level: default_zstd_level(),
            snapshot_schedule: None,
            age_identity_file: None,
            age_passphrase_env: None,
            max_backups: None,
            max_age: None,
            snapshot_object_bytes: default_snapshot_object_bytes(),
            memory_object_bytes: default_memory_object_bytes(),
            snapshot_sessions: default_snapshot_sessions(),
            files: Default::default(),
            store: store.into(),
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
        }
    }

    /// The retention settings, checked.
    pub fn retention(&self) -> Result<Retention, String> {
        if self.max_backups == Some(0) {
            return Err("backup.max_backups: must be at least 1".into());
        }
        let max_age_secs = match &self.max_age {
            None => None,
            Some(text) => Some(parse_age(text).map_err(|e| format!("backup.max_age: {e}"))?),
        };
        Ok(Retention {
            max_backups: self.max_backups,
            max_age_secs,
        })
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=22).contains(&self.zstd_level) {
            return Err(format!(
                "backup.zstd_level: {} is outside 1..=22",
                self.zstd_level
            ));
        }
        if !(1..=64).contains(&self.snapshot_sessions) {
            return Err(format!(
                "backup.snapshot_sessions: {} is outside 1..=64",
                self.snapshot_sessions
            ));
        }
        if self.segment_bytes < 4096 {
            return Err(format!(
                "backup.segment_bytes: {} is below 4096",
                self.segment_bytes
            ));
        }
        if self.memory_object_bytes < 1 << 20 {
            return Err(format!(
                "backup.memory_object_bytes: {} is below 1 MiB (1048576)",
                self.memory_object_bytes
            ));
        }
        if self.segment_seconds == 0 {
            return Err("backup.segment_seconds: must be at least 1".into());
        }
        Crypt::load(
            self.age_identity_file.as_deref(),
            self.age_passphrase_env.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        self.retention()?;
        for (name, set) in &self.files {
            set.validate(name)?;
        }
        if self.store.trim().is_empty() {
            return Err("backup.store is empty: give a directory or s3://bucket/prefix".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("30d"), Ok(30 * 86_400));
        assert_eq!(parse_age("12h"), Ok(12 * 3600));
        assert_eq!(parse_age("2w"), Ok(2 * 604_800));
        assert_eq!(parse_age("45s"), Ok(45));
        for bad in ["30", "d", "3x", "0d", ""] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
