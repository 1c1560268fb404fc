//! A configured sink of any kind: the one place that names the sink kinds.
//!
//! The application names a sink's kind in its configuration file (`kind = "postgres"`) or
//! gives a URL (`restore --target`, `verify --scratch`), and gets a [`SinkConfig`] that
//! checks itself, tells which database it writes into, and connects. Everything a kind
//! does is behind [`KindConfig`], implemented in the kind's folder; adding a sink kind
//! means a folder beside `postgres/` and `mysql/` and one [`SinkConfig`] variant here
//! (with its [`Kind`] listed in [`KINDS`] and its arm in [`SinkConfig::kind_of`]).

use crate::admin::{Session, SinkStatus, SourceWatermark};
use crate::kind::KindConfig;
use crate::mysql::MySqlSinkConfig;
use crate::postgres::PostgresSinkConfig;
use crate::{Sink, SinkError};
use serde::Deserialize;
use tributary_schemas::{redact_url, DatabaseIdentity, TableId};

/// A sink's database and how it writes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// PostgreSQL.
    Postgres(PostgresSinkConfig),
    /// MySQL or MariaDB.
    Mysql(MySqlSinkConfig),
}

/// One sink kind: its name in configuration files, the URL schemes that name it, and how
/// it is built from a URL, a target schema and a batch size.
struct Kind {
    name: &'static str,
    schemes: &'static [&'static str],
    build: fn(&str, Option<String>, usize) -> SinkConfig,
}

/// PostgreSQL.
const POSTGRES: Kind = Kind {
    name: "postgres",
    schemes: &["postgres", "postgresql"],
    build: |url, target_schema, batch_rows| {
        SinkConfig::Postgres(PostgresSinkConfig {
            url: url.to_string(),
            target_schema,
            batch_rows,
        })
    },
};

/// MySQL and MariaDB.
const MYSQL: Kind = Kind {
    name: "mysql",
    schemes: &["mysql", "mariadb"],
    build: |url, target_schema, batch_rows| {
        SinkConfig::Mysql(MySqlSinkConfig {
            url: url.replacen("mariadb://", "mysql://", 1),
            target_schema,
            batch_rows,
        })
    },
};

/// Every sink kind.
const KINDS: &[&Kind] = &[&POSTGRES, &MYSQL];

/// A sink kind's name, as a configuration file gives it (`kind = "postgres"`); only the
/// names of known kinds deserialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SinkKind(&'static Kind);

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Kind {}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl TryFrom<String> for SinkKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        SinkKind::named(&name)
    }
}

impl SinkKind {
    /// The kind called `name`.
    pub fn named(name: &str) -> Result<Self, String> {
        KINDS
            .iter()
            .copied()
            .find(|k| k.name == name)
            .map(SinkKind)
            .ok_or_else(|| {
                let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
                format!("unknown sink kind {name:?}: one of {}", known.join(", "))
            })
    }

    /// The kind's name.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The kind `url`'s scheme names (`postgres://`, `postgresql://`, `mysql://`,
    /// `mariadb://`), if any.
    fn of_scheme(url: &str) -> Option<Self> {
        let (scheme, _) = url.split_once("://")?;
        KINDS
            .iter()
            .copied()
            .find(|k| k.schemes.contains(&scheme))
            .map(SinkKind)
    }
}

impl SinkConfig {
    /// This sink's kind, and what its configuration does.
    fn kind_of(&self) -> (&'static Kind, &dyn KindConfig) {
        match self {
            SinkConfig::Postgres(c) => (&POSTGRES, c),
            SinkConfig::Mysql(c) => (&MYSQL, c),
        }
    }

    /// What this sink's kind does.
    fn kind(&self) -> &dyn KindConfig {
        self.kind_of().1
    }

    /// A sink of `kind` at `url`, tables into `target_schema` (default: each table's own
    /// schema, or for MySQL the URL's database), at most `batch_rows` rows per statement.
    pub fn new(
        kind: SinkKind,
        url: &str,
        target_schema: Option<String>,
        batch_rows: usize,
    ) -> Self {
        (kind.0.build)(url, target_schema, batch_rows)
    }

    /// A sink of the kind `url`'s scheme names (`postgres://`, `postgresql://`,
    /// `mysql://`, `mariadb://`); `flag` names the option the URL came from in errors.
    pub fn from_url(
        url: &str,
        target_schema: Option<String>,
        batch_rows: usize,
        flag: &str,
    ) -> Result<Self, SinkError> {
        let kind = SinkKind::of_scheme(url).ok_or_else(|| {
            let schemes: Vec<String> = KINDS
                .iter()
                .flat_map(|k| k.schemes)
                .map(|s| format!("{s}://"))
                .collect();
            SinkError::Config {
                field: flag.to_string(),
                reason: format!(
                    "{:?}: give a URL starting with one of {}",
                    redact_url(url),
                    schemes.join(", ")
                ),
            }
        })?;
        Ok(Self::new(kind, url, target_schema, batch_rows))
    }

    /// The connection URL.
    pub fn url(&self) -> &str {
        self.kind().url()
    }

    /// The connection URL, password hidden.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url())
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SinkError> {
        self.kind().validate()
    }

    /// The database the URL connects to.
    pub fn identity(&self) -> Option<DatabaseIdentity> {
        self.kind().identity()
    }

    /// The wire protocol of the sink's server (`"postgres"`, `"mysql"`).
    pub fn protocol(&self) -> &'static str {
        self.kind().protocol()
    }

    /// Connects (and creates the sink's bookkeeping tables when they are missing).
    pub async fn connect(&self) -> Result<Box<dyn Sink>, SinkError> {
        self.kind().connect().await
    }

    /// The key a restore of `source` keeps its watermark under in this sink.
    ///
    /// A MySQL server keeps one `tributary.watermarks` table for all its databases, so a
    /// restore there keeps its watermark under `<source>@<database>`: restoring the same
    /// source into a second database of that server starts from the beginning, instead of
    /// finding the first one's watermark and skipping everything. PostgreSQL keeps one
    /// table per database, and the key is the source's name (`None`).
    pub fn restore_watermark_key(&self, source: &str) -> Option<String> {
        self.kind().restore_watermark_key(source)
    }

    /// This sink's server, writing every table into database `database` (MySQL: tables
    /// go into that database whatever their source schema).
    pub fn in_database(&self, database: &str) -> SinkConfig {
        let (kind, config) = self.kind_of();
        let (url, target_schema) = config.in_database(database);
        (kind.build)(&url, target_schema, config.batch_rows())
    }

    /// The table source table `table` is written to.
    pub fn target_table(&self, table: &TableId) -> TableId {
        self.kind().target_table(table)
    }

    /// A connection to the URL's database for administrative statements.
    pub async fn session(&self) -> Result<Session, SinkError> {
        Ok(Session::new(self.kind().session().await?))
    }
}

impl SinkConfig {
    // Administration (see `crate::admin`).

    /// The watermark of each of `sources` in sink `name`.
    pub async fn status(&self, name: &str, sources: &[&str]) -> SinkStatus {
        let mut status = SinkStatus {
            sink: name.to_string(),
            url: self.redacted_url(),
            sources: Vec::new(),
            unreachable: None,
        };
        // Read only: asking must not create the sink's tables, nor need the rights to.
        let mut session = match self.session().await {
            Ok(s) => s,
            Err(e) => {
                status.unreachable = Some(e.to_string());
                return status;
            }
        };
        for source in sources {
            status.sources.push(SourceWatermark {
                source: source.to_string(),
                applied: session.watermark(source).await.map_err(|e| e.to_string()),
            });
        }
        status
    }

    /// Creates database `name` on this sink's server, and returns the sink that writes
    /// into it.
    pub async fn create_database(&self, name: &str) -> Result<SinkConfig, SinkError> {
        self.session().await?.create_database(name).await?;
        Ok(self.in_database(name))
    }
}

/// The database `url` connects to, whatever it is used for (a sink's, a source's): read
/// by the kind its scheme names, else as a PostgreSQL one (URL or `key=value` form).
pub fn database_identity(url: &str) -> Option<DatabaseIdentity> {
    let kind = SinkKind::of_scheme(url).or_else(|| SinkKind::named("postgres").ok())?;
    SinkConfig::new(kind, url, None, 1).identity()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_comes_from_the_scheme() {
        let c = SinkConfig::from_url("mariadb://u:p@h:3306/shop", None, 10, "--target").unwrap();
        assert_eq!(c.url(), "mysql://u:p@h:3306/shop");
        assert_eq!(c.protocol(), "mysql");
        assert_eq!(c.redacted_url(), "mysql://u:***@h:3306/shop");
        assert_eq!(c.restore_watermark_key("hq"), Some("hq@shop".into()));
        let e = SinkConfig::from_url("ftp://u:p@h/x", None, 10, "--target").unwrap_err();
        assert!(
            e.to_string().contains("--target") && !e.to_string().contains(":p@"),
            "{e}"
        );
    }

    #[test]
    fn kinds_are_named_once() {
        for kind in KINDS {
            let named = SinkKind::named(kind.name).unwrap();
            assert_eq!(named.name(), kind.name);
            for scheme in kind.schemes {
                let url = format!("{scheme}://u@h/db");
                let c = SinkConfig::from_url(&url, None, 10, "").unwrap();
                assert_eq!(c.protocol(), kind.name, "{url}");
                assert_eq!(SinkKind::of_scheme(&url), Some(named));
            }
        }
        let e = SinkKind::try_from("sqlite3".to_string()).unwrap_err();
        assert_eq!(e, "unknown sink kind \"sqlite3\": one of postgres, mysql");
    }

    #[test]
    fn a_database_of_the_same_server() {
        let c = SinkConfig::from_url("postgres://u@h:5433/postgres?sslmode=disable", None, 10, "")
            .unwrap();
        let scratch = c.in_database("scratch_1");
        assert_eq!(
            scratch.url(),
            "postgres://u@h:5433/scratch_1?sslmode=disable"
        );
        assert_eq!(scratch.restore_watermark_key("hq"), None);
        let t = TableId::new("public", "sales");
        assert_eq!(scratch.target_table(&t), t);
        let my = SinkConfig::from_url("mysql://u@h/shop", None, 10, "").unwrap();
        assert_eq!(my.target_table(&t), TableId::new("shop", "sales"));
        let my = SinkConfig::from_url("mysql://u@h", None, 10, "").unwrap();
        assert_eq!(my.target_table(&t), t);
        let scratch = my.in_database("scratch_1");
        assert_eq!(scratch.url(), "mysql://u@h/scratch_1");
        assert_eq!(scratch.target_table(&t), TableId::new("scratch_1", "sales"));
        assert_eq!(
            scratch.identity(),
            Some(DatabaseIdentity::new("mysql", "h", 3306, "scratch_1"))
        );
        assert_eq!(
            database_identity("host=localhost port=5433 dbname=shop user=u"),
            Some(DatabaseIdentity::new("postgres", "127.0.0.1", 5433, "shop"))
        );
        assert_eq!(
            database_identity("mariadb://u@h/db"),
            scratch.in_database("db").identity()
        );
    }
}
