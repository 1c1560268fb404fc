//! PostgreSQL capture through logical replication (pgoutput).
//!
//! Start-up checks the server (`wal_level`, the role's rights), makes the publication
//! cover the configured tables, and makes sure every one of them has a primary key. A new
//! slot is created on a replication connection with an exported snapshot; the tables are
//! copied inside that snapshot (events at the slot's consistent point), then the same
//! session starts streaming from the slot, so there is no gap and no overlap at the
//! hand-off. Streaming decodes pgoutput messages into events, closes each transaction with
//! a marker, and confirms a commit's LSN to the slot only once the transport holds
//! everything up to it. After a crash the slot resends what was not confirmed; sinks skip
//! what they already applied by position.

pub mod admin;
pub mod catalog;
pub mod config;
pub mod copy_text;
pub mod pgoutput;
#[cfg(test)]
mod proptests;
pub mod relations;
pub mod snapshot;
pub mod stream;
pub mod types;

pub use config::PostgresSourceConfig;
pub use stream::PostgresCapture;
