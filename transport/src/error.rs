//! Errors of the transport.
//!
//! A broker that went away, or a transport shut down, is transient (reconnect and resume
//! from the last committed offset); a log that cannot be read or written, or a damaged
//! record, is definite.

use thiserror::Error;

/// Why the transport failed.
#[derive(Debug, Error)]
pub enum TransportError {
    /// Kafka refused or failed an operation.
    #[error("kafka {context}: {message}")]
    Kafka {
        /// What was being done.
        context: String,
        /// librdkafka's message.
        message: String,
    },
    /// The embedded log could not be read or written.
    #[error("embedded log {path}: {message}")]
    Log {
        /// File or directory concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The embedded log holds a damaged record.
    #[error("embedded log {path} is corrupt at byte {offset}: {message}")]
    Corrupt {
        /// File concerned.
        path: String,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The transport was shut down.
    #[error("transport closed")]
    Closed,
}

impl TransportError {
    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Kafka { .. } | TransportError::Closed)
    }

    pub(crate) fn log(path: &std::path::Path, err: impl std::fmt::Display) -> Self {
        TransportError::Log {
            path: path.display().to_string(),
            message: err.to_string(),
        }
    }
}
