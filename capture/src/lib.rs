//! Capture agents: read a source's changes and publish them, durably and in order.
//!
//! A source agent ([`postgres`], [`mysql`]) takes an initial snapshot consistent with its
//! replication stream, then streams changes. Events go through a [`publisher::Publisher`]
//! to the transport (`tributary_transport`: Kafka or the embedded log). The source's checkpoint (the PostgreSQL
//! slot's confirmed position; for MySQL/MariaDB the binlog file and offset kept in local
//! [`state`]) is advanced only to positions whose records are durable in the transport;
//! local state also keeps whether the snapshot finished and the versions of each table's
//! schema.

pub mod admin;
pub mod error;
mod filter;
pub mod mysql;
pub mod postgres;
pub mod publisher;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod stats;
pub mod table;

pub use admin::{SourceProgress, SourceStatus, WriteBack};
pub use error::CaptureError;
/// The reader of PostgreSQL `COPY` text rows (what PostgreSQL backup snapshots hold), for
/// restores into any sink.
pub use postgres::relations::decode_copy_line;
pub use source::SourceConfig;
