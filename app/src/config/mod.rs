//! `tributary.toml`: one file describing the transport, the sources and the sinks.
//!
//! `${NAME}` anywhere in the file is replaced by the environment variable `NAME` (secrets
//! stay out of the file); an unset variable is an error naming it and its line. Unknown
//! keys are rejected, and every error names the key path (`sources.head_office.url`).
//!
//! ```toml
//! state_dir = ".tributary"
//!
//! [transport]
//! kind = "embedded"            # or "kafka" with brokers = "host:9092"
//!
//! [sources.head_office]
//! kind = "postgres"
//! url = "postgres://tributary:${HEAD_OFFICE_PASSWORD}@db:5432/pharmacy"
//! include = ["public.*"]
//!
//! [sinks.replica]
//! kind = "postgres"
//! url = "postgres://tributary:${REPLICA_PASSWORD}@replica:5432/pharmacy"
//! sources = ["head_office"]
//!
//! [sinks.store_copy]           # MySQL / MariaDB
//! kind = "mysql"
//! url = "mysql://tributary:${STORE_PASSWORD}@store:3306/pharmacy"
//!
//! [registry]                   # optional: Confluent-compatible schema registry endpoint
//! listen = "0.0.0.0:8081"
//! ```

mod api;
mod retry;

pub use api::{ApiConfig, Role, Token, TokenConfig};
pub use retry::{RetryConfig, RetryPolicy};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use tributary_capture::SourceConfig;
use tributary_pipeline::apply::{DEFAULT_BATCH_ROWS, DEFAULT_MAX_TX_EVENTS};
use tributary_pipeline::conflict::{ConflictConfig, Conflicts};
use tributary_pipeline::validate::{RuleConfig, Rules};
use tributary_pipeline::PipelineError;
use tributary_schemas::SecretUrl;
use tributary_sinks::{database_identity, SinkConfig, SinkKind};
use tributary_snapshot::BackupConfig;
pub use tributary_transport::{EmbeddedConfig, TransportConfig};

/// Default directory for local state, relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = ".tributary";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for local state (capture state, embedded log, dead letters).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where events travel between capture and pipeline.
    #[serde(default)]
    pub transport: TransportConfig,
    /// Sources by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Sinks by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkSection>,
    /// The Confluent-compatible schema registry endpoint; not served when absent.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// Business rules every event is checked against before it is applied.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Tables whose rows merge the changes of several sources (conflict resolution).
    #[serde(default)]
    pub conflicts: Vec<ConflictConfig>,
    /// A webhook (http or https URL) that receives every resolved conflict as JSON.
    #[serde(default)]
    pub notify_conflicts: Option<SecretUrl>,
    /// Continuous backup: where the event log is archived.
    #[serde(default)]
    pub backup: Option<BackupConfig>,
    /// The control plane's HTTP server (health, and the API behind tokens).
    #[serde(default)]
    pub api: ApiConfig,
    /// How failed tasks start again.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// The schema registry endpoint (see `registry_server`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Address to listen on, e.g. `"0.0.0.0:8081"`.
    pub listen: std::net::SocketAddr,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// A sink: where it writes (`kind`, `url`, `target_schema`, `batch_rows`, which the sinks
/// crate turns into a [`SinkConfig`]) and what it applies.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Kind of database.
    pub kind: SinkKind,
    /// Connection URL.
    pub url: SecretUrl,
    /// Sources applied to this sink; default all.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Schema (MySQL: database) to write every table into; default the table's source
    /// schema (MySQL: the URL's database, else the source schema).
    #[serde(default)]
    pub target_schema: Option<String>,
    /// Events per batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Events per sink transaction when several source transactions are ready.
    #[serde(default = "default_max_tx_events")]
    pub max_tx_events: usize,
    /// The source whose database this sink writes into (bidirectional sync), when the two
    /// URLs do not show it (different host names for one server).
    #[serde(default)]
    pub database_of: Option<String>,
}

fn default_batch_rows() -> usize {
    DEFAULT_BATCH_ROWS
}

fn default_max_tx_events() -> usize {
    DEFAULT_MAX_TX_EVENTS
}

impl SinkSection {
    /// The sink's database and how it writes there.
    pub fn target(&self) -> SinkConfig {
        SinkConfig::new(
            self.kind,
            self.url.expose(),
            self.target_schema.clone(),
            self.batch_rows,
        )
    }

    /// The sources this sink applies, given all configured sources.
    /// A source named in `database_of` is never among them; by default (no `sources`
    /// list) neither is a source whose own tables this sink would write (its database,
    /// with no `target_schema` moving the tables elsewhere): applying a database's changes
    /// back into it could overwrite newer ones.
    pub fn source_names<'a>(&'a self, all: &'a BTreeMap<String, SourceConfig>) -> Vec<&'a str> {
        let names: Vec<&str> = if self.sources.is_empty() {
            all.keys()
                .map(String::as_str)
                .filter(|n| {
                    self.target_schema.is_some()
                        || !all.get(*n).is_some_and(|s| self.writes_into(n, s))
                })
                .collect()
        } else {
            self.sources.iter().map(String::as_str).collect()
        };
        names
            .into_iter()
            .filter(|n| self.database_of.as_deref() != Some(*n))
            .collect()
    }

    /// Whether this sink writes into the database of source `name`: `database_of` says
    /// so, or both URLs name the same database of the same server (host, with `localhost`
    /// taken as 127.0.0.1, and port).
    pub fn writes_into(&self, name: &str, source: &SourceConfig) -> bool {
        if self.database_of.as_deref() == Some(name) {
            return true;
        }
        // Either side's URL is read as a database address, whatever it is used for.
        let sink = self.target().identity();
        sink.is_some() && sink == database_identity(source.url())
    }
}

impl Config {
    /// The sources whose changes sink `sink` must not take again when Tributary wrote them
    /// into another captured database: the ones it takes directly, and the ones whose
    /// database it writes into.
    pub fn echo_sources(&self, sink: &str) -> Vec<String> {
        let Some(s) = self.sinks.get(sink) else {
            return Vec::new();
        };
        let direct: Vec<String> = s
            .source_names(&self.sources)
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut all = direct;
        for (name, source) in &self.sources {
            if s.writes_into(name, source) && !all.contains(name) {
                all.push(name.clone());
            }
        }
        all
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PipelineError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, |name| std::env::var(name).ok())
            .map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and validates configuration text, resolving `${NAME}` with `env`.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let text = substitute_env(text, env)?;
        let deserializer = toml::Deserializer::parse(&text).map_err(|e| e.to_string())?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let inner = inner.trim();
            if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The apply loops of sink `sink`: each source it applies, with `false`; and, when
    /// some table merges, each source whose database it writes into, with `true` (that
    /// loop folds the database's own changes into the merge states, see
    /// [`tributary_pipeline::conflict`]).
    pub fn loops(&self, sink: &str) -> Vec<(String, bool)> {
        let Some(s) = self.sinks.get(sink) else {
            return Vec::new();
        };
        let mut loops: Vec<(String, bool)> = s
            .source_names(&self.sources)
            .into_iter()
            .map(|n| (n.to_string(), false))
            .collect();
        if !self.conflicts.is_empty() {
            for (name, source) in &self.sources {
                if s.writes_into(name, source) && !loops.iter().any(|(n, _)| n == name) {
                    loops.push((name.clone(), true));
                }
            }
        }
        loops
    }

    /// The sources whose event log is archived (`[backup]`).
    pub fn archived_sources(&self) -> Vec<String> {
        match &self.backup {
            None => Vec::new(),
            Some(b) => match &b.archive_sources {
                Some(list) => list.clone(),
                None => self.sources.keys().cloned().collect(),
            },
        }
    }

    /// The `[backup]` section, which the backup commands need.
    pub fn backup_section(&self) -> Result<&BackupConfig, PipelineError> {
        self.backup.as_ref().ok_or_else(|| {
            PipelineError::Config("the configuration has no [backup] section".into())
        })
    }

    /// The archived sources, or only `only`, which must be one of them.
    pub fn archived_selection(&self, only: Option<&str>) -> Result<Vec<String>, PipelineError> {
        let archived = self.archived_sources();
        let sets = self.file_sets(None);
        match only {
            None => Ok(archived),
            Some(s) if archived.iter().any(|a| a == s) => Ok(vec![s.to_string()]),
            Some(s) if sets.iter().any(|a| a == s) => Ok(Vec::new()),
            Some(s) => Err(PipelineError::Config(format!(
                "--source {s}: neither an archived source (archived: {}) nor a file set (backup.files: {})",
                archived.join(", "),
                sets.join(", ")
            ))),
        }
    }

    /// The `[backup.files.<name>]` sets, or only `only` when it names one (none when it
    /// names a source).
    pub fn file_sets(&self, only: Option<&str>) -> Vec<String> {
        let Some(backup) = &self.backup else {
            return Vec::new();
        };
        backup
            .files
            .keys()
            .filter(|s| only.is_none_or(|o| o == s.as_str()))
            .cloned()
            .collect()
    }

    /// The conflict settings, checked.
    pub fn conflict_settings(&self) -> Result<Conflicts, String> {
        let names: Vec<&str> = self.sources.keys().map(String::as_str).collect();
        Conflicts::new(&self.conflicts, &names)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        Rules::compile(&self.rules)?;
        self.api.validate()?;
        self.api.tokens()?;
        self.retry.policy()?;
        if let Some(backup) = &self.backup {
            backup.validate()?;
            if let Some(schedule) = &backup.snapshot_schedule {
                parse_schedule(schedule).map_err(|e| e.to_string())?;
            }
            for set in backup.files.keys() {
                if self.sources.contains_key(set) {
                    return Err(format!(
                        "backup.files.{set}: a source has that name too; --source would not tell them apart"
                    ));
                }
            }
            for name in backup.archive_sources.iter().flatten() {
                if !self.sources.contains_key(name) {
                    return Err(format!(
                        "backup.archive_sources: {name:?} is not a configured source (sources: {})",
                        self.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        self.conflict_settings()?;
        if let Some(url) = self.notify_conflicts.as_ref().map(SecretUrl::expose) {
            tributary_pipeline::notify::check_url(url)
                .map_err(|e| format!("notify_conflicts: {e}"))?;
        }
        for (name, source) in &self.sources {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "sources.{name}: a source name may only hold letters, digits, '_' and '-'"
                ));
            }
            source
                .validate(&format!("sources.{name}"))
                .map_err(|e| e.to_string())?;
        }
        let mut prefixes: BTreeMap<String, &str> = BTreeMap::new();
        for (name, source) in &self.sources {
            if let Some(other) = prefixes.insert(source.prefix(name), name) {
                return Err(format!(
                    "sources.{name}.topic_prefix: prefix {:?} is also used by source {other}",
                    source.prefix(name)
                ));
            }
        }
        for (name, sink) in &self.sinks {
            // `batch_rows = 0` is named below, with this file's wording.
            let target = SinkConfig::new(
                sink.kind,
                sink.url.expose(),
                sink.target_schema.clone(),
                sink.batch_rows.max(1),
            );
            if let Err(tributary_sinks::SinkError::Config { field, reason }) = target.validate() {
                return Err(format!("sinks.{name}.{field}: {reason}"));
            }
            for s in &sink.sources {
                if !self.sources.contains_key(s) {
                    return Err(format!(
                        "sinks.{name}.sources: no source named {s:?} is configured"
                    ));
                }
            }
            if let Some(s) = &sink.database_of {
                if !self.sources.contains_key(s) {
                    return Err(format!(
                        "sinks.{name}.database_of: no source named {s:?} is configured"
                    ));
                }
            }
            if sink.batch_rows == 0 {
                return Err(format!("sinks.{name}.batch_rows: must be at least 1"));
            }
            if sink.max_tx_events == 0 {
                return Err(format!("sinks.{name}.max_tx_events: must be at least 1"));
            }
        }
        self.transport.validate()?;
        Ok(())
    }

    /// The configuration as `tributary check` prints it: every setting; secrets are typed
    /// (`SecretUrl`, `Secret`, Kafka's secret properties) and print as `***`.
    pub fn describe(&self) -> String {
        format!("{self:#?}\n")
    }

    /// Directory of the embedded log.
    pub fn log_dir(&self) -> PathBuf {
        self.transport.log_dir(&self.state_dir)
    }
}

/// The cron expression `text`, parsed: five fields (minute hour day month weekday), or
/// six with seconds first; UTC.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, PipelineError> {
    croner::Cron::new(text)
        .with_seconds_optional()
        .parse()
        .map_err(|e| {
            PipelineError::Config(format!(
                "backup.snapshot_schedule {text:?}: {e} (a cron expression such as \"0 2 * * *\")"
            ))
        })
}

/// Replaces `${NAME}` with the variable's value.
fn substitute_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        // Comments are left alone: a commented-out setting may name unset variables.
        let (code, comment) = line.split_at(comment_start(line).unwrap_or(line.len()));
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("line {}: unterminated ${{ (write ${{NAME}})", n + 1))?;
            let name = &after[..end];
            let value = env(name)
                .ok_or_else(|| format!("line {}: environment variable {name} is not set", n + 1))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a TOML comment starts on `line`: the first `#` outside a quoted string.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return Some(i),
            None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir = "/var/lib/tributary"
[transport]
kind = "kafka"
brokers = "127.0.0.1:9092"
[sources.head_office]
kind = "postgres"
url = "postgres://u:${PW}@h/db"
include = ["public.*"]
[sinks.replica]
kind = "postgres"
url = "postgres://u@h/replica"
sources = ["head_office"]
[registry]
listen = "127.0.0.1:8081"
"#;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "secret".to_string())
    }

    #[test]
    fn parses_a_full_file_with_env_secrets() {
        let c = Config::parse(GOOD, env).unwrap();
        assert_eq!(c.sources["head_office"].protocol(), "postgres");
        assert_eq!(c.sources["head_office"].url(), "postgres://u:secret@h/db");
        assert!(
            matches!(c.transport, TransportConfig::Kafka(ref k) if k.brokers == "127.0.0.1:9092")
        );
        assert_eq!(c.sinks["replica"].batch_rows, DEFAULT_BATCH_ROWS);
        assert_eq!(
            c.registry.map(|r| r.listen.to_string()),
            Some("127.0.0.1:8081".to_string())
        );
    }

    #[test]
    fn a_sink_into_a_sources_own_database_never_takes_that_source() {
        let text = r#"
[sources.hq]
kind = "postgres"
url = "postgres://tributary@localhost:5433/pharmacy"
[sources.store]
kind = "mysql"
url = "mysql://tributary@store12:3306/pharmacy"
[sources.other]
kind = "postgres"
url = "postgres://tributary@127.0.0.1:5433/other"
[sinks.to_hq]
kind = "postgres"
url = "postgres://writer:secret@127.0.0.1:5433/pharmacy"
[sinks.to_store]
kind = "mysql"
url = "mysql://writer@store12.lan:3306/pharmacy"
database_of = "store"
[sinks.replica]
kind = "postgres"
url = "postgres://r@replica/pharmacy"
sources = ["hq"]
[sinks.reporting]
kind = "postgres"
url = "postgres://r@localhost:5433/pharmacy"
target_schema = "reporting"
"#;
        let c = Config::parse(text, env).unwrap();
        // Same server (localhost is 127.0.0.1), port and database, another user.
        assert_eq!(
            c.sinks["to_hq"].source_names(&c.sources),
            ["other", "store"]
        );
        assert_eq!(c.echo_sources("to_hq"), ["other", "store", "hq"]);
        // Another host name for the store: said explicitly.
        assert_eq!(
            c.sinks["to_store"].source_names(&c.sources),
            ["hq", "other"]
        );
        assert_eq!(c.echo_sources("replica"), ["hq"]);
        // A copy into another schema of the source's own database takes it, and still
        // drops what Tributary wrote from it.
        assert_eq!(
            c.sinks["reporting"].source_names(&c.sources),
            ["hq", "other", "store"]
        );
        assert_eq!(c.echo_sources("reporting"), ["hq", "other", "store"]);
        let err = Config::parse(
            &text.replace("database_of = \"store\"", "database_of = \"nope\""),
            env,
        )
        .unwrap_err();
        assert!(err.starts_with("sinks.to_store.database_of"), "{err}");
    }

    #[test]
    fn defaults_to_the_embedded_transport() {
        let c = Config::parse("", env).unwrap();
        assert_eq!(
            c.transport,
            TransportConfig::Embedded(EmbeddedConfig::default())
        );
        assert_eq!(c.log_dir(), PathBuf::from(".tributary/log"));
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = Config::parse(&GOOD.replace("include", "includ"), env).unwrap_err();
        assert!(
            e.contains("sources.head_office") && e.contains("includ"),
            "{e}"
        );
        let e = Config::parse(
            &GOOD
                .replace("batch", "x")
                .replace("sources = [\"head_office\"]", "sources = [\"nope\"]"),
            env,
        )
        .unwrap_err();
        assert!(e.starts_with("sinks.replica.sources:"), "{e}");
        let e =
            Config::parse(&format!("notify_conflicts = \"ftp://hooks\"\n{GOOD}"), env).unwrap_err();
        assert!(
            e.starts_with("notify_conflicts: \"ftp://hooks\" must be an http"),
            "{e}"
        );
        let e = Config::parse(&GOOD.replace("${PW}", "${MISSING}"), env).unwrap_err();
        assert_eq!(e, "line 8: environment variable MISSING is not set");
        // Comments may name unset variables; a '#' inside a string is not a comment.
        let c = Config::parse(
            "# url = \"${MISSING}\"\nstate_dir = \"/a#b/${PW}\" # ${MISSING}\n",
            env,
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/a#b/secret"));
        let e = Config::parse(
            "[transport]\nkind = \"kafka\"\nbrokers = \"b\"\nbogus = 1\n",
            env,
        )
        .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let c = Config::parse(
            "[sources.store]\nkind = \"mysql\"\nurl = \"mysql://u:p@h:3306/shop\"\n",
            env,
        )
        .unwrap();
        assert_eq!(c.sources["store"].protocol(), "mysql");
        let e = Config::parse("[sources.store]\nkind = \"mysql\"\nurl = \"x\"\n", env).unwrap_err();
        assert!(e.starts_with("sources.store.url:"), "{e}");
        let c = Config::parse(
            "[sinks.copy]\nkind = \"mysql\"\nurl = \"mysql://u:p@h:3306/shop\"\n",
            env,
        )
        .unwrap();
        assert_eq!(c.sinks["copy"].target().protocol(), "mysql");
        let e = Config::parse(
            "[sinks.copy]\nkind = \"mysql\"\nurl = \"postgres://h/db\"\n",
            env,
        )
        .unwrap_err();
        assert!(e.starts_with("sinks.copy.url:"), "{e}");
        let e = Config::parse(
            "[sinks.copy]\nkind = \"mysql\"\nurl = \"mysql://h/db\"\ntarget_schema = \"\"\n",
            env,
        )
        .unwrap_err();
        assert!(e.starts_with("sinks.copy.target_schema:"), "{e}");
        let e = Config::parse("[registry]\nlisten = \"localhost\"\n", env).unwrap_err();
        assert!(e.starts_with("registry.listen:"), "{e}");
        let e = Config::parse("[sinks.till]\nkind = \"sqlite3\"\nurl = \"x\"\n", env).unwrap_err();
        assert!(
            e.starts_with("sinks.till.kind:") && e.contains("one of postgres, mysql"),
            "{e}"
        );
        let e = Config::parse("[transport]\nkind = \"carrier-pigeon\"\n", env).unwrap_err();
        assert!(
            e.contains("transport") && e.contains("carrier-pigeon"),
            "{e}"
        );
    }

    #[test]
    fn check_output_holds_no_secret() {
        let text = r#"
[transport]
kind = "kafka"
brokers = "b:9092"
properties = { "sasl.password" = "kafkapw", "security.protocol" = "SASL_SSL" }
[sources.hq]
kind = "postgres"
url = "postgres://tributary:s3cr%40t@head-office:5432/pharmacy"
[sources.store]
kind = "mysql"
url = "mysql://root:mypw@h:3306/db"
[sinks.copy]
kind = "mysql"
url = "mysql://writer:sinkpw@h:3306/copy"
[backup]
store = "s3://bucket/x"
s3_secret_access_key = "s3key"
"#;
        let text =
            format!("notify_conflicts = \"https://hook:hookpw@hooks.example/t?token=tok\"\n{text}");
        let out = Config::parse(&text, env).unwrap().describe();
        for secret in [
            "s3cr", "kafkapw", "mypw", "sinkpw", "s3key", "hookpw", "tok\"",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(
            out.contains("postgres://tributary:***@head-office:5432/pharmacy"),
            "{out}"
        );
        assert!(out.contains("mysql://writer:***@h:3306/copy"), "{out}");
        assert!(out.contains("SASL_SSL") && out.contains("\"***\""), "{out}");
    }
}
