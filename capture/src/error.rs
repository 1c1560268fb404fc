//! Errors of the capture crate.
//!
//! Errors are either transient (the server or broker went away: reconnect and resume from
//! the last acknowledged position, nothing is lost) or definite (configuration, rights,
//! unsupported tables: retrying cannot help, the operator must change something).

use thiserror::Error;
use tributary_schemas::SchemaError;
use tributary_transport::TransportError;

/// Why capture failed.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The configuration or the source's setup is wrong; the message says what to change.
    #[error("{0}")]
    Setup(String),
    /// A PostgreSQL query or connection failed.
    #[error("postgres {context}: {message}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The server's or driver's message.
        message: String,
        /// Whether reconnecting may help.
        transient: bool,
    },
    /// A MySQL/MariaDB query or connection failed.
    #[error("mysql {context}: {message}")]
    MySql {
        /// What was being done.
        context: String,
        /// The server's or driver's message.
        message: String,
        /// Whether reconnecting may help.
        transient: bool,
    },
    /// The replication stream failed.
    #[error("replication stream: {0}")]
    Replication(String),
    /// The replication stream carried a message we cannot decode.
    #[error("decoding the change stream: {0}")]
    Decode(String),
    /// A value could not be converted.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The transport (Kafka or the embedded log) failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The local state store failed.
    #[error("state store {path}: {message}")]
    State {
        /// Path of the store.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl CaptureError {
    /// Whether reconnecting and resuming may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            CaptureError::Postgres { transient, .. } | CaptureError::MySql { transient, .. } => {
                *transient
            }
            CaptureError::Replication(_) => true,
            CaptureError::Transport(t) => t.is_transient(),
            _ => false,
        }
    }

    pub(crate) fn mysql(context: impl Into<String>, err: mysql_async::Error) -> Self {
        let context = context.into();
        match err {
            mysql_async::Error::Server(e) => {
                let hint = match e.code {
                    1045 => " (check the user and password in the source url)",
                    1044 | 1142 | 1227 => concat!(
                        " (the capture user needs SELECT, RELOAD, REPLICATION SLAVE and ",
                        "REPLICATION CLIENT (MariaDB 10.5+: BINLOG MONITOR): GRANT SELECT, RELOAD, ",
                        "REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the user)"
                    ),
                    1236 => concat!(
                        " (the binlog position to resume from is no longer on the server: the ",
                        "binlog was purged past the checkpoint; raise binlog retention ",
                        "(expire_logs_days / binlog_expire_logs_seconds) and remove this ",
                        "source's state (state_dir) to take a new snapshot)"
                    ),
                    _ => "",
                };
                // Lost connections and lock timeouts may pass; everything else needs a change.
                let transient = matches!(e.code, 1040 | 1053 | 1205 | 1213 | 2006 | 2013);
                CaptureError::MySql {
                    context,
                    message: format!("{} (error {}){hint}", e.message, e.code),
                    transient,
                }
            }
            mysql_async::Error::Url(e) => {
                CaptureError::Setup(format!("{context}: bad source url: {e}"))
            }
            other => CaptureError::MySql {
                context,
                message: other.to_string(),
                transient: true,
            },
        }
    }

    pub(crate) fn pg(context: impl Into<String>, err: tokio_postgres::Error) -> Self {
        let transient = err.is_closed()
            || err.code().is_none_or(|c| {
                c.code().starts_with("08") || c.code().starts_with("57P") || c.code() == "40001"
            });
        let message = match err.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => {
                let mut m = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(s) = source {
                    m.push_str(": ");
                    m.push_str(&s.to_string());
                    source = s.source();
                }
                m
            }
        };
        CaptureError::Postgres {
            context: context.into(),
            message,
            transient,
        }
    }
}
