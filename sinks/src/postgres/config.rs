//! Configuration of the PostgreSQL sink.

use crate::error::SinkError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use tokio_postgres::config::Host;
use tributary_schemas::{redact_url, TableId};

/// Default number of rows (net changes) per set-based statement.
pub const DEFAULT_BATCH_ROWS: usize = 5_000;
/// Largest accepted `batch_rows`.
pub const MAX_BATCH_ROWS: usize = 1_000_000;
/// Connect timeout used when the URL sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `application_name` used when the URL sets none.
pub const DEFAULT_APPLICATION_NAME: &str = "tributary-sink";

/// Where and how the PostgreSQL sink writes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Connection string (`postgres://user:pass@host:port/db` or `key=value` form).
    pub url: String,
    /// Schema that receives every table; `None` keeps each source table's schema name.
    #[serde(default)]
    pub target_schema: Option<String>,
    /// Most net row changes sent per set-based statement (bounds memory per `apply`).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

fn default_batch_rows() -> usize {
    DEFAULT_BATCH_ROWS
}

impl PostgresSinkConfig {
    /// A configuration for `url` with defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresSinkConfig {
            url: url.into(),
            target_schema: None,
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SinkError> {
        self.connection()?;
        if self.batch_rows == 0 || self.batch_rows > MAX_BATCH_ROWS {
            return Err(invalid(
                "batch_rows",
                format!(
                    "must be between 1 and {MAX_BATCH_ROWS}, got {}",
                    self.batch_rows
                ),
            ));
        }
        if let Some(schema) = &self.target_schema {
            if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
                return Err(invalid(
                    "target_schema",
                    format!("{schema:?} is not a valid PostgreSQL schema name (1 to 63 bytes)"),
                ));
            }
        }
        Ok(())
    }

    /// The parsed connection settings, with the sink's defaults filled in.
    pub(crate) fn connection(&self) -> Result<tokio_postgres::Config, SinkError> {
        if self.url.trim().is_empty() {
            return Err(invalid("url", "is empty"));
        }
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| invalid("url", format!("cannot be parsed: {e}")))?;
        if config.get_hosts().is_empty() {
            return Err(invalid("url", "names no host"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(DEFAULT_APPLICATION_NAME);
        }
        Ok(config)
    }

    /// Where rows of the source table `source` land.
    pub fn target_table(&self, source: &TableId) -> TableId {
        TableId::new(
            self.target_schema.as_deref().unwrap_or(&source.schema),
            source.name.clone(),
        )
    }
}

impl fmt::Debug for PostgresSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("target_schema", &self.target_schema)
            .field("batch_rows", &self.batch_rows)
            .finish()
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> SinkError {
    SinkError::Config {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `host:port` of every host in `config`, for messages.
pub(crate) fn address(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_field() {
        let field = |c: PostgresSinkConfig| match c.validate() {
            Err(SinkError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(PostgresSinkConfig::new("")), "url");
        assert_eq!(
            field(PostgresSinkConfig::new("postgres://h:notaport/db")),
            "url"
        );
        let mut c = PostgresSinkConfig::new("postgres://u@localhost/db");
        c.batch_rows = 0;
        assert_eq!(field(c.clone()), "batch_rows");
        c.batch_rows = 10;
        c.target_schema = Some(String::new());
        assert_eq!(field(c.clone()), "target_schema");
        c.target_schema = Some("replica".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn defaults_apply_when_deserializing() {
        let c: PostgresSinkConfig = serde_json::from_str(r#"{"url": "postgres://h/db"}"#).unwrap();
        assert_eq!(c.batch_rows, DEFAULT_BATCH_ROWS);
        assert_eq!(c.target_schema, None);
        assert!(serde_json::from_str::<PostgresSinkConfig>(r#"{"url": "x", "bogus": 1}"#).is_err());
    }

    #[test]
    fn address_lists_host_and_port() {
        let c = PostgresSinkConfig::new("postgres://u:p@db.example:6543/x");
        assert_eq!(address(&c.connection().unwrap()), "db.example:6543");
        let c = PostgresSinkConfig::new("host=a,b port=1,2 user=u");
        assert_eq!(address(&c.connection().unwrap()), "a:1,b:2");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = PostgresSinkConfig::new("postgres://u:secret@h:5432/db");
        let text = format!("{c:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("postgres://u:***@h:5432/db"), "{text}");
        assert_eq!(
            tributary_schemas::redact_url("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }

    #[test]
    fn target_schema_overrides_the_source_schema() {
        let mut c = PostgresSinkConfig::new("postgres://h/db");
        let source = TableId::new("shop", "orders");
        assert_eq!(c.target_table(&source), source);
        c.target_schema = Some("replica".into());
        assert_eq!(c.target_table(&source), TableId::new("replica", "orders"));
    }
}
