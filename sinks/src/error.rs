//! Errors of the sinks.
//!
//! Every error is either *transient* (the connection dropped, the server is shutting down,
//! a serialization failure or deadlock aborted the transaction: roll back, reconnect if
//! needed, and retry the same transaction) or *definite* (the data or the configuration is
//! wrong: retrying the same input gives the same error). [`SinkError::is_transient`] is
//! the one place that decides which.
//!
//! Messages name what is wrong (table, column, SQLSTATE) and do not repeat a cause chain.

use thiserror::Error;
use tributary_schemas::Position;

/// Why a sink could not apply, commit or read its watermark.
#[derive(Debug, Error)]
pub enum SinkError {
    /// A configuration field is invalid.
    #[error("invalid sink configuration: {field}: {reason}")]
    Config {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The sink database could not be reached or refused the login.
    #[error("cannot connect to {address}: {cause}")]
    Connect {
        /// `host:port` (or socket path) tried.
        address: String,
        /// Why: the server's message or the network error.
        cause: String,
        /// The server's SQLSTATE when it answered with an error.
        sqlstate: Option<String>,
    },
    /// The connection broke while a statement was running.
    #[error("connection lost while {action} on {table}: {cause}")]
    ConnectionLost {
        /// What the sink was doing.
        action: &'static str,
        /// The table concerned.
        table: String,
        /// The network error.
        cause: String,
    },
    /// The database rejected a statement.
    #[error(
        "{action} on {table} failed: {message} (SQLSTATE {sqlstate}){}",
        detail_suffix(&.detail.text)
    )]
    Database {
        /// What the sink was doing.
        action: &'static str,
        /// The table concerned.
        table: String,
        /// The SQLSTATE code.
        sqlstate: String,
        /// The server's message.
        message: String,
        /// Column, constraint and detail text the server named.
        detail: Box<ServerDetail>,
    },
    /// The driver failed for a reason other than the server or the network.
    #[error("{action} on {table} failed: {cause}")]
    Driver {
        /// What the sink was doing.
        action: &'static str,
        /// The table concerned.
        table: String,
        /// The driver's message.
        cause: String,
    },
    /// An event is malformed for the table it is applied to.
    #[error("table {table}: event at {position}: {reason}")]
    InvalidEvent {
        /// The table.
        table: String,
        /// Position of the event.
        position: Position,
        /// What is wrong.
        reason: String,
    },
    /// A value does not fit the type of its column.
    #[error(
        "table {table}: event at {position}: column {column}: value {value} does not fit type {ty}"
    )]
    TypeMismatch {
        /// The table.
        table: String,
        /// Position of the event (boxed: keeps every `Result` small).
        position: Box<Position>,
        /// Column name.
        column: String,
        /// Short description of the value.
        value: String,
        /// The column's type.
        ty: String,
    },
    /// The table has no primary key, so rows cannot be upserted or deleted by key.
    #[error("table {table} has no primary key; only keyed tables can be applied")]
    NoPrimaryKey {
        /// The table.
        table: String,
    },
    /// The stored watermark of a source cannot be read.
    #[error("watermark of source {source_name} is unreadable: {reason}")]
    Watermark {
        /// The source.
        source_name: String,
        /// What is wrong with the stored value.
        reason: String,
    },
    /// The sink was called out of order (e.g. `apply` without `begin`).
    #[error("sink used out of order: {0}")]
    Protocol(String),
}

/// What the server said beyond its message (boxed: most errors carry none of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerDetail {
    /// The column the server named, if any.
    pub column: Option<String>,
    /// The constraint the server named, if any.
    pub constraint: Option<String>,
    /// The server's detail or context line (e.g. the COPY input line), if any.
    pub text: Option<String>,
    /// MySQL's error number, for errors of a MySQL server.
    pub code: Option<u16>,
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

/// SQLSTATE classes and codes after which retrying the same transaction can succeed.
fn transient_sqlstate(code: &str) -> bool {
    matches!(
        code,
        // serialization_failure, deadlock_detected, statement_completion_unknown
        "40001" | "40P01" | "40003"
        // lock_not_available, query_canceled (statement timeout)
        | "55P03" | "57014"
        // admin/crash shutdown, cannot_connect_now, idle session timeout, database dropped
        | "57P01" | "57P02" | "57P03" | "57P05"
        // system errors (I/O)
        | "58000" | "58030"
    ) || code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (disk full, too many connections)
}

/// MySQL error numbers after which retrying the same transaction can succeed.
fn transient_mysql_code(code: u16) -> bool {
    matches!(
        code,
        // too many connections, out of resources, server shutdown, lock wait timeout,
        // deadlock, query interrupted, connection killed, idle session closed
        1040 | 1041 | 1053 | 1205 | 1213 | 1317 | 1927 | 4031
        // server gone away, lost connection
        | 2006 | 2013
    )
}

impl SinkError {
    /// Whether retrying the same transaction (after a rollback, maybe a reconnect) can help.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::ConnectionLost { .. } => true,
            SinkError::Connect { sqlstate, .. } => match sqlstate.as_deref() {
                // Wrong password, no such role or database (PostgreSQL 3D000, MySQL
                // 42000 for an unknown or forbidden database): retrying does not fix that.
                Some(code) => !(code.starts_with("28") || code == "3D000" || code == "42000"),
                None => true,
            },
            SinkError::Database {
                sqlstate, detail, ..
            } => match detail.code {
                Some(code) => transient_mysql_code(code),
                None => transient_sqlstate(sqlstate),
            },
            SinkError::Config { .. }
            | SinkError::Driver { .. }
            | SinkError::InvalidEvent { .. }
            | SinkError::TypeMismatch { .. }
            | SinkError::NoPrimaryKey { .. }
            | SinkError::Watermark { .. }
            | SinkError::Protocol(_) => false,
        }
    }

    /// The SQLSTATE the server reported, if the error came from the server.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            SinkError::Database { sqlstate, .. } => Some(sqlstate),
            SinkError::Connect { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }

    /// Classifies a `tokio_postgres` error raised while doing `action` on `table`.
    pub(crate) fn postgres(action: &'static str, table: &str, err: tokio_postgres::Error) -> Self {
        let table = table.to_string();
        if let Some(db) = err.as_db_error() {
            return SinkError::Database {
                action,
                table,
                sqlstate: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: Box::new(ServerDetail {
                    column: db.column().map(str::to_string),
                    constraint: db.constraint().map(str::to_string),
                    text: db.detail().or(db.where_()).map(str::to_string),
                    code: None,
                }),
            };
        }
        let io = std::error::Error::source(&err)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
        if err.is_closed() || io {
            SinkError::ConnectionLost {
                action,
                table,
                cause: cause_text(&err),
            }
        } else {
            SinkError::Driver {
                action,
                table,
                cause: cause_text(&err),
            }
        }
    }

    /// Classifies an error of the initial connection to `address`.
    pub(crate) fn connect(address: &str, err: tokio_postgres::Error) -> Self {
        let sqlstate = err.code().map(|c| c.code().to_string());
        SinkError::Connect {
            address: address.to_string(),
            cause: cause_text(&err),
            sqlstate,
        }
    }
}

impl SinkError {
    /// Classifies a `mysql_async` error raised while doing `action` on `table`.
    pub(crate) fn mysql(action: &'static str, table: &str, err: mysql_async::Error) -> Self {
        let table = table.to_string();
        match err {
            mysql_async::Error::Server(e) => SinkError::Database {
                action,
                table,
                sqlstate: e.state.clone(),
                message: format!("{} (MySQL error {})", e.message, e.code),
                detail: Box::new(ServerDetail {
                    code: Some(e.code),
                    ..ServerDetail::default()
                }),
            },
            mysql_async::Error::Io(e) => SinkError::ConnectionLost {
                action,
                table,
                cause: e.to_string(),
            },
            mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
                SinkError::ConnectionLost {
                    action,
                    table,
                    cause: "the connection is closed".into(),
                }
            }
            other => SinkError::Driver {
                action,
                table,
                cause: other.to_string(),
            },
        }
    }

    /// Classifies an error of the initial connection to a MySQL server at `address`.
    pub(crate) fn mysql_connect(address: &str, err: mysql_async::Error) -> Self {
        let (cause, sqlstate) = match &err {
            mysql_async::Error::Server(e) => (
                format!("{} (MySQL error {})", e.message, e.code),
                Some(e.state.clone()),
            ),
            other => (other.to_string(), None),
        };
        SinkError::Connect {
            address: address.to_string(),
            cause,
            sqlstate,
        }
    }
}

/// The most specific description of a driver error: the server's message, or the driver's
/// kind followed by the underlying (usually I/O) error.
fn cause_text(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(sqlstate: &str) -> SinkError {
        SinkError::Database {
            action: "upserting rows",
            table: "public.t".into(),
            sqlstate: sqlstate.into(),
            message: "boom".into(),
            detail: Box::default(),
        }
    }

    #[test]
    fn retryable_states_are_transient() {
        for code in ["40001", "40P01", "08006", "57P01", "53300"] {
            assert!(db(code).is_transient(), "{code}");
        }
        for code in ["23505", "22P02", "42P01", "42703"] {
            assert!(!db(code).is_transient(), "{code}");
        }
    }

    #[test]
    fn mysql_lock_errors_are_transient_and_data_errors_are_not() {
        let my = |code: u16, sqlstate: &str| SinkError::Database {
            action: "upserting rows",
            table: "db.t".into(),
            sqlstate: sqlstate.into(),
            message: "boom".into(),
            detail: Box::new(ServerDetail {
                code: Some(code),
                ..ServerDetail::default()
            }),
        };
        assert!(my(1213, "40001").is_transient());
        assert!(my(1205, "HY000").is_transient());
        assert!(!my(1406, "22001").is_transient());
        assert!(!my(1062, "23000").is_transient());
    }

    #[test]
    fn login_failures_are_definite() {
        let connect = |sqlstate: Option<&str>| SinkError::Connect {
            address: "db:5432".into(),
            cause: "x".into(),
            sqlstate: sqlstate.map(str::to_string),
        };
        assert!(!connect(Some("28P01")).is_transient());
        assert!(!connect(Some("3D000")).is_transient());
        assert!(!connect(Some("42000")).is_transient());
        assert!(connect(Some("57P03")).is_transient());
        assert!(connect(None).is_transient());
    }

    #[test]
    fn messages_name_table_and_state() {
        let text = db("23505").to_string();
        assert_eq!(
            text,
            "upserting rows on public.t failed: boom (SQLSTATE 23505)"
        );
    }
}
