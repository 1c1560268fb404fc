//! Capture agents: read a source's changes and publish them, durably and in order.
//!
//! A source agent (today [`postgres`]) takes an initial snapshot consistent with its
//! replication stream, then streams changes. Events go through a [`publisher::Publisher`]
//! to a [`transport`] (Kafka or the embedded log). The source's checkpoint lives upstream
//! (the PostgreSQL slot's confirmed position) and is advanced only to positions whose
//! records are durable in the transport; local [`state`] keeps what the source cannot:
//! whether the snapshot finished and the versions of each table's schema.

pub mod error;
pub mod postgres;
pub mod publisher;
pub mod registry;
pub mod state;
pub mod transport;

pub use error::{CaptureError, TransportError};
