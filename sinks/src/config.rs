//! A configured sink of any kind: the one place that matches on a sink kind.
//!
//! The application names a sink's kind in its configuration file (`kind = "postgres"`) or
//! gives a URL (`restore --target`, `verify --scratch`), and gets a [`SinkConfig`] that
//! checks itself, tells which database it writes into, and connects. Adding a sink kind
//! means a folder beside `postgres/` and `mysql/`, one [`SinkKind`] variant and one
//! [`SinkConfig`] variant here.

use crate::mysql::{MySqlSink, MySqlSinkConfig};
use crate::postgres::{PostgresSink, PostgresSinkConfig};
use crate::{Sink, SinkError};
use serde::Deserialize;
use tributary_schemas::{redact_url, DatabaseIdentity, TableId};

/// Kinds of sink, as the configuration names them.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl SinkKind {
    /// The kind `url`'s scheme names (`postgres://`, `postgresql://`, `mysql://`,
    /// `mariadb://`), if any.
    fn of_scheme(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(SinkKind::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Some(SinkKind::Mysql)
        } else {
            None
        }
    }
}

/// A sink's database and how it writes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// PostgreSQL.
    Postgres(PostgresSinkConfig),
    /// MySQL or MariaDB.
    Mysql(MySqlSinkConfig),
}

impl SinkConfig {
    /// A sink of `kind` at `url`, tables into `target_schema` (default: each table's own
    /// schema, or for MySQL the URL's database), at most `batch_rows` rows per statement.
    pub fn new(
        kind: SinkKind,
        url: &str,
        target_schema: Option<String>,
        batch_rows: usize,
    ) -> Self {
        match kind {
            SinkKind::Postgres => SinkConfig::Postgres(PostgresSinkConfig {
                url: url.to_string(),
                target_schema,
                batch_rows,
            }),
            SinkKind::Mysql => SinkConfig::Mysql(MySqlSinkConfig {
                url: url.replacen("mariadb://", "mysql://", 1),
                target_schema,
                batch_rows,
            }),
        }
    }

    /// A sink of the kind `url`'s scheme names (`postgres://`, `postgresql://`,
    /// `mysql://`, `mariadb://`); `flag` names the option the URL came from in errors.
    pub fn from_url(
        url: &str,
        target_schema: Option<String>,
        batch_rows: usize,
        flag: &str,
    ) -> Result<Self, SinkError> {
        let kind = SinkKind::of_scheme(url).ok_or_else(|| SinkError::Config {
            field: flag.to_string(),
            reason: format!("{:?}: give a postgres:// or mysql:// URL", redact_url(url)),
        })?;
        Ok(Self::new(kind, url, target_schema, batch_rows))
    }

    /// The connection URL.
    pub fn url(&self) -> &str {
        match self {
            SinkConfig::Postgres(c) => &c.url,
            SinkConfig::Mysql(c) => &c.url,
        }
    }

    /// The connection URL, password hidden.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url())
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SinkError> {
        match self {
            SinkConfig::Postgres(c) => c.validate(),
            SinkConfig::Mysql(c) => c.validate(),
        }
    }

    /// The database the URL connects to.
    pub fn identity(&self) -> Option<DatabaseIdentity> {
        match self {
            SinkConfig::Postgres(c) => {
                let pg = c.connection().ok()?;
                let host = match pg.get_hosts().first()? {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                };
                let port = pg.get_ports().first().copied().unwrap_or(5432);
                let db = pg.get_dbname().or(pg.get_user())?;
                Some(DatabaseIdentity::new("postgres", &host, port, db))
            }
            SinkConfig::Mysql(c) => {
                let o = c.opts().ok()?;
                Some(DatabaseIdentity::new(
                    "mysql",
                    o.ip_or_hostname(),
                    o.tcp_port(),
                    o.db_name()?,
                ))
            }
        }
    }

    /// The wire protocol of the sink's server (`"postgres"`, `"mysql"`).
    pub fn protocol(&self) -> &'static str {
        match self {
            SinkConfig::Postgres(_) => "postgres",
            SinkConfig::Mysql(_) => "mysql",
        }
    }

    /// Connects (and creates the sink's bookkeeping tables when they are missing).
    pub async fn connect(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkConfig::Postgres(c) => Box::new(PostgresSink::connect(c.clone()).await?),
            SinkConfig::Mysql(c) => Box::new(MySqlSink::connect(c.clone()).await?),
        })
    }

    /// The key a restore of `source` keeps its watermark under in this sink.
    ///
    /// A MySQL server keeps one `tributary.watermarks` table for all its databases, so a
    /// restore there keeps its watermark under `<source>@<database>`: restoring the same
    /// source into a second database of that server starts from the beginning, instead of
    /// finding the first one's watermark and skipping everything. PostgreSQL keeps one
    /// table per database, and the key is the source's name (`None`).
    pub fn restore_watermark_key(&self, source: &str) -> Option<String> {
        match self {
            SinkConfig::Postgres(_) => None,
            SinkConfig::Mysql(c) => c
                .target_schema
                .clone()
                .or_else(|| c.opts().ok()?.db_name().map(str::to_string))
                .filter(|d| !d.is_empty())
                .map(|db| format!("{source}@{db}")),
        }
    }

    /// This sink's server, writing every table into database `database` (MySQL: tables
    /// go into that database whatever their source schema).
    pub fn in_database(&self, database: &str) -> SinkConfig {
        match self {
            SinkConfig::Postgres(c) => SinkConfig::Postgres(PostgresSinkConfig {
                url: with_database(&c.url, database),
                ..c.clone()
            }),
            SinkConfig::Mysql(c) => SinkConfig::Mysql(MySqlSinkConfig {
                url: with_database(&c.url, database),
                target_schema: Some(database.to_string()),
                ..c.clone()
            }),
        }
    }

    /// The table source table `table` is written to.
    pub fn target_table(&self, table: &TableId) -> TableId {
        match self {
            SinkConfig::Postgres(c) => c.target_table(table),
            SinkConfig::Mysql(c) => c.target_table(table),
        }
    }
}

/// The database `url` connects to, whatever it is used for (a sink's, a source's): a
/// MySQL one for `mysql://` and `mariadb://`, else a PostgreSQL one (URL or `key=value`
/// form).
pub fn database_identity(url: &str) -> Option<DatabaseIdentity> {
    let kind = SinkKind::of_scheme(url).unwrap_or(SinkKind::Postgres);
    SinkConfig::new(kind, url, None, 1).identity()
}

/// `url` naming database `db` instead of its own.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
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
