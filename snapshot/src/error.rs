//! Errors of the backup store, the archive, verification and restore.

/// What went wrong; every message names the object or setting concerned.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A setting is wrong.
    #[error("backup configuration: {0}")]
    Config(String),
    /// The store could not be reached or refused a request (may pass).
    #[error("backup store {store}: {what}: {message}")]
    Store {
        /// The store's description (directory or URL).
        store: String,
        /// What was being done, naming the object.
        what: String,
        /// The store's error.
        message: String,
    },
    /// An object is missing, damaged or does not fit the chain.
    #[error("backup store {store}: object {object}: {message}")]
    Corrupt {
        /// The store's description.
        store: String,
        /// The object's name.
        object: String,
        /// What is wrong with it.
        message: String,
    },
    /// The local spool (files under the state directory).
    #[error("archive spool {path}: {message}")]
    Spool {
        /// The file or directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// The database a restore writes into failed or refused the data.
    #[error("{0}")]
    Target(String),
    /// An event could not be encoded or decoded.
    #[error("{0}")]
    Schema(#[from] tributary_schemas::SchemaError),
}

impl BackupError {
    /// Whether trying again may succeed (the store was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, BackupError::Store { .. })
    }
}
