//! Configuration of a PostgreSQL source.

use crate::error::CaptureError;
use crate::filter;
use serde::Deserialize;
use tributary_schemas::SecretUrl;

/// Default number of snapshot rows per snapshot transaction.
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 10_000;
/// Default seconds between heartbeats on an idle database.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 10;

/// A PostgreSQL source (`[sources.<name>]` with `kind = "postgres"`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// Connection URL, `postgres://user:password@host:port/database`.
    pub url: SecretUrl,
    /// Prefix of this source's topics (`<prefix>.<schema>.<table>`). Default: the source name.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// Publication to use; created and kept in line with the table filters when missing.
    /// Default `tributary_<source>`.
    #[serde(default)]
    pub publication: Option<String>,
    /// Logical replication slot. Default `tributary_<source>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// Tables to capture as `schema.table` patterns (`*` matches any run of characters).
    /// Default: every table outside the system schemas.
    #[serde(default)]
    pub include: Vec<String>,
    /// Tables to leave out, same patterns; applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Rows per snapshot transaction.
    #[serde(default = "default_chunk")]
    pub snapshot_chunk_rows: usize,
    /// Seconds between heartbeats that keep the slot moving on an idle database; 0 disables.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
}

fn default_chunk() -> usize {
    DEFAULT_SNAPSHOT_CHUNK_ROWS
}

fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_SECS
}

impl PostgresSourceConfig {
    /// A configuration with defaults for `url`.
    pub fn new(url: impl Into<SecretUrl>) -> Self {
        PostgresSourceConfig {
            url: url.into(),
            topic_prefix: None,
            publication: None,
            slot: None,
            include: Vec::new(),
            exclude: Vec::new(),
            snapshot_chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS,
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
        }
    }

    /// The topic prefix for source `source`.
    pub fn prefix(&self, source: &str) -> String {
        self.topic_prefix
            .clone()
            .unwrap_or_else(|| source.to_string())
    }

    /// The publication name for source `source`.
    pub fn publication_name(&self, source: &str) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("tributary_{}", ident_part(source)))
    }

    /// The slot name for source `source`.
    pub fn slot_name(&self, source: &str) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("tributary_{}", ident_part(source)))
    }

    /// Checks the values; errors name the key.
    pub fn validate(&self, key_path: &str) -> Result<(), CaptureError> {
        let bad =
            |key: &str, why: String| Err(CaptureError::Setup(format!("{key_path}.{key}: {why}")));
        if let Err(e) = self.url.expose().parse::<tokio_postgres::Config>() {
            return bad("url", format!("not a PostgreSQL URL: {e}"));
        }
        if let Some(prefix) = &self.topic_prefix {
            if prefix.is_empty()
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return bad(
                    "topic_prefix",
                    format!("{prefix:?} may only hold letters, digits, '.', '_' and '-'"),
                );
            }
        }
        if self.snapshot_chunk_rows == 0 {
            return bad("snapshot_chunk_rows", "must be at least 1".into());
        }
        if let Some(slot) = &self.slot {
            if slot.is_empty()
                || slot.len() > 63
                || !slot
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return bad(
                    "slot",
                    format!("{slot:?} is not a valid slot name (lower-case letters, digits and _, at most 63)"),
                );
            }
        }
        filter::check_patterns(key_path, "schema", &self.include, &self.exclude)
    }

    /// Whether table `schema.name` is captured.
    pub fn captures(&self, schema: &str, name: &str) -> bool {
        filter::selected(&self.include, &self.exclude, schema, name)
    }
}

/// A name part usable inside an identifier: lower-case letters, digits and `_`.
fn ident_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_apply_include_then_exclude() {
        let mut c = PostgresSourceConfig::new("postgres://u@h/db");
        assert!(c.captures("public", "medicines"));
        c.include = vec!["public.*".into(), "sales.order*".into()];
        c.exclude = vec!["public.tmp_*".into()];
        assert!(c.captures("public", "medicines"));
        assert!(!c.captures("public", "tmp_load"));
        assert!(c.captures("sales", "orders"));
        assert!(!c.captures("sales", "returns"));
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = PostgresSourceConfig::new("not a url");
        let e = c.validate("sources.head_office").unwrap_err().to_string();
        assert!(e.starts_with("sources.head_office.url:"), "{e}");
        c.url = "postgres://u@h/db".into();
        c.slot = Some("Bad-Slot".into());
        let e = c.validate("sources.x").unwrap_err().to_string();
        assert!(e.starts_with("sources.x.slot:"), "{e}");
        assert_eq!(c.slot_name("x"), "Bad-Slot");
        assert_eq!(
            PostgresSourceConfig::new("u").slot_name("Head Office"),
            "tributary_head_office"
        );
    }
}
