//! Configuration of the MySQL sink.

use crate::error::SinkError;
use mysql_async::Opts;
use serde::{Deserialize, Serialize};
use std::fmt;
use tributary_schemas::TableId;

/// Default number of rows (net changes) per batch.
pub const DEFAULT_BATCH_ROWS: usize = 5_000;
/// Largest accepted `batch_rows`.
const MAX_BATCH_ROWS: usize = 1_000_000;

/// Where and how the MySQL sink writes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlSinkConfig {
    /// `mysql://user:pass@host:port[/database]`.
    pub url: String,
    /// Database that receives every table. When unset: the URL's database, else each
    /// source table's schema (database) name.
    #[serde(default)]
    pub target_schema: Option<String>,
    /// Most net row changes per batch (bounds memory per `apply`).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

fn default_batch_rows() -> usize {
    DEFAULT_BATCH_ROWS
}

impl MySqlSinkConfig {
    /// A configuration for `url` with defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        MySqlSinkConfig {
            url: url.into(),
            target_schema: None,
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SinkError> {
        self.opts()?;
        if self.batch_rows == 0 || self.batch_rows > MAX_BATCH_ROWS {
            return Err(invalid(
                "batch_rows",
                format!(
                    "must be between 1 and {MAX_BATCH_ROWS}, got {}",
                    self.batch_rows
                ),
            ));
        }
        if let Some(db) = &self.target_schema {
            if db.is_empty() || db.chars().count() > 64 || db.ends_with(' ') {
                return Err(invalid(
                    "target_schema",
                    format!("{db:?} is not a valid MySQL database name (1 to 64 characters)"),
                ));
            }
        }
        Ok(())
    }

    /// Where rows of the source table `source` land: the `target_schema` database, else
    /// the URL's, else the source's own schema name.
    pub fn target_table(&self, source: &TableId) -> TableId {
        let db = self
            .target_schema
            .clone()
            .or_else(|| self.opts().ok()?.db_name().map(str::to_string))
            .unwrap_or_else(|| source.schema.clone());
        TableId::new(&db, &source.name)
    }

    /// The parsed URL.
    pub(crate) fn opts(&self) -> Result<Opts, SinkError> {
        if self.url.trim().is_empty() {
            return Err(invalid("url", "is empty"));
        }
        Opts::from_url(&self.url).map_err(|e| invalid("url", format!("is not a MySQL URL: {e}")))
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> SinkError {
    SinkError::Config {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `host:port` of the URL, for messages.
pub(crate) fn address(opts: &Opts) -> String {
    format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port())
}

impl fmt::Debug for MySqlSinkConfig {
    /// Shows the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlSinkConfig")
            .field("url", &tributary_schemas::redact_url(&self.url))
            .field("target_schema", &self.target_schema)
            .field("batch_rows", &self.batch_rows)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_named() {
        let err = MySqlSinkConfig::new("postgres://x").validate().unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
        let mut config = MySqlSinkConfig::new("mysql://u:p@h:3306/db");
        config.validate().unwrap();
        config.batch_rows = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("batch_rows"));
        config.batch_rows = 10;
        config.target_schema = Some(String::new());
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("target_schema"));
    }

    #[test]
    fn debug_hides_the_password() {
        let text = format!("{:?}", MySqlSinkConfig::new("mysql://u:secret@h:3306/db"));
        assert!(
            !text.contains("secret") && text.contains("u:***@h:3306/db"),
            "{text}"
        );
    }
}
