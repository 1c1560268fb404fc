//! Errors of the contract crate.

use thiserror::Error;

/// Why a schema could not be built or a message could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// The message does not start with the Confluent magic byte and a schema id.
    #[error("message is not in the Confluent wire format: {0}")]
    Framing(String),
    /// Avro rejected a schema or a datum.
    #[error("avro {context}: {message}")]
    Avro {
        /// What was being done.
        context: String,
        /// Avro's own message.
        message: String,
    },
    /// A decoded datum does not have the shape its schema promises.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The part of the message that is wrong.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A value does not fit the column type it is declared with.
    #[error("column {column}: value {value} does not fit type {ty}")]
    TypeMismatch {
        /// Column name.
        column: String,
        /// Short description of the value.
        value: String,
        /// Expected column type.
        ty: String,
    },
}

impl SchemaError {
    pub(crate) fn avro(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        SchemaError::Avro {
            context: context.into(),
            message: err.to_string(),
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        SchemaError::Malformed {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
