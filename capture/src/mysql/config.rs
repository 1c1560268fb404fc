//! Configuration of a MySQL/MariaDB source.

use crate::error::CaptureError;
use crate::filter;
use serde::Deserialize;
use tributary_schemas::SecretUrl;

/// Default number of snapshot rows per snapshot transaction.
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 10_000;
/// Default seconds between server heartbeats on an idle binlog.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 10;
/// Databases never captured.
pub const SYSTEM_DATABASES: [&str; 4] =
    ["mysql", "information_schema", "performance_schema", "sys"];

/// A MySQL or MariaDB source (`[sources.<name>]` with `kind = "mysql"`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MySqlSourceConfig {
    /// Connection URL, `mysql://user:password@host:port/database` (the database is optional).
    pub url: SecretUrl,
    /// Prefix of this source's topics (`<prefix>.<database>.<table>`). Default: the source name.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// Server id this capture registers with as a replica; unique among the server's
    /// replicas. Default: derived from the source name (in 1_000_000..2_000_000).
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Tables to capture as `database.table` patterns (`*` matches any run of characters).
    /// Default: every table outside the system databases.
    #[serde(default)]
    pub include: Vec<String>,
    /// Tables to leave out, same patterns; applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Rows per snapshot transaction.
    #[serde(default = "default_chunk")]
    pub snapshot_chunk_rows: usize,
    /// Seconds between the server's heartbeats on an idle binlog; 0 disables.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// How a restart finds its place: the binlog file and offset of the checkpoint
    /// (`position`, default), or the GTID state stored with it (`gtid`, MariaDB; survives
    /// a failover to a replica or binlog renaming).
    #[serde(default)]
    pub resume_from: ResumeFrom,
}

/// How a MySQL/MariaDB capture resumes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResumeFrom {
    /// Binlog file and offset.
    #[default]
    Position,
    /// GTID state (MariaDB `domain-server-seq` list).
    Gtid,
}

fn default_chunk() -> usize {
    DEFAULT_SNAPSHOT_CHUNK_ROWS
}

fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_SECS
}

impl MySqlSourceConfig {
    /// A configuration with defaults for `url`.
    pub fn new(url: impl Into<SecretUrl>) -> Self {
        MySqlSourceConfig {
            url: url.into(),
            topic_prefix: None,
            server_id: None,
            include: Vec::new(),
            exclude: Vec::new(),
            snapshot_chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS,
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
            resume_from: ResumeFrom::Position,
        }
    }

    /// The topic prefix for source `source`.
    pub fn prefix(&self, source: &str) -> String {
        self.topic_prefix
            .clone()
            .unwrap_or_else(|| source.to_string())
    }

    /// The replica server id for source `source`.
    pub fn server_id_for(&self, source: &str) -> u32 {
        self.server_id.unwrap_or_else(|| {
            // FNV-1a of the name: stable across runs and machines.
            let mut h: u32 = 0x811c_9dc5;
            for b in source.bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            1_000_000 + h % 1_000_000
        })
    }

    /// Checks the values; errors name `key_path.<key>`.
    pub fn validate(&self, key_path: &str) -> Result<(), CaptureError> {
        let bad = |key: &str, message: String| {
            Err(CaptureError::Setup(format!("{key_path}.{key}: {message}")))
        };
        if let Err(e) = mysql_async::Opts::from_url(self.url.expose()) {
            return bad(
                "url",
                format!("not a MySQL URL (mysql://user:password@host:port/database): {e}"),
            );
        }
        if self.server_id == Some(0) {
            return bad("server_id", "must not be 0 (0 means no replication)".into());
        }
        if self.snapshot_chunk_rows == 0 {
            return bad("snapshot_chunk_rows", "must be at least 1".into());
        }
        filter::check_patterns(key_path, "database", &self.include, &self.exclude)
    }

    /// Whether table `database.name` is captured.
    pub fn captures(&self, database: &str, name: &str) -> bool {
        if SYSTEM_DATABASES.contains(&database.to_ascii_lowercase().as_str()) {
            return false;
        }
        filter::selected(&self.include, &self.exclude, database, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_validation() {
        let mut c = MySqlSourceConfig::new("mysql://root@127.0.0.1:3306/shop");
        assert!(c.validate("sources.store").is_ok());
        assert!(c.captures("shop", "sales"));
        assert!(!c.captures("mysql", "user"));
        c.exclude = vec!["shop.tmp_*".into()];
        assert!(!c.captures("shop", "tmp_x"));
        c.include = vec!["shop".into()];
        let e = c.validate("sources.store").unwrap_err().to_string();
        assert!(e.starts_with("sources.store.include:"), "{e}");
        c.include.clear();
        c.url = "postgres://x".into();
        let e = c.validate("sources.store").unwrap_err().to_string();
        assert!(e.starts_with("sources.store.url:"), "{e}");
        let a = MySqlSourceConfig::new("u").server_id_for("store-1");
        assert_eq!(a, MySqlSourceConfig::new("u").server_id_for("store-1"));
        assert!((1_000_000..2_000_000).contains(&a));
        assert_ne!(a, MySqlSourceConfig::new("u").server_id_for("store-2"));
    }
}
