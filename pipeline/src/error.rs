//! Errors of the pipeline runtime.
//!
//! Transient errors (a broker or database went away) restart the failed task with backoff
//! from its last durable position; definite errors (bad configuration, data that cannot be
//! applied) stop the task with a message saying what to fix, so nothing spins.

use thiserror::Error;
use tributary_capture::CaptureError;
use tributary_schemas::SchemaError;
use tributary_sinks::SinkError;
use tributary_transport::TransportError;

/// Why the pipeline failed.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The backup store, the archive or a restore failed.
    #[error(transparent)]
    Backup(#[from] tributary_snapshot::BackupError),
    /// A message could not be decoded.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The topics contradict the transaction markers (lost or reordered events).
    #[error("inconsistent stream: {0}")]
    Inconsistent(String),
    /// A rule with `on_fail = "halt"` rejected an event.
    #[error("halted by a rule: {0}")]
    Rejected(String),
    /// Local files could not be written.
    #[error("{path}: {message}")]
    Io {
        /// File concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl PipelineError {
    /// Whether restarting the task may help.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Capture(e) => e.is_transient(),
            PipelineError::Transport(e) => e.is_transient(),
            PipelineError::Sink(e) => e.is_transient(),
            PipelineError::Backup(e) => e.is_transient(),
            _ => false,
        }
    }
}
