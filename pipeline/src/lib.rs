//! The Tributary runtime: configuration, the apply loop that turns topics back into
//! source transactions and applies them to sinks, the transports' consumer side, and the
//! supervisor that runs capture agents and apply loops. The `tributary` binary is a thin
//! CLI over this crate.

pub mod apply;
pub mod config;
pub mod conflict;
pub mod dead_letter;
pub mod demo;
pub mod error;
pub mod merge;
pub mod notify;
pub mod queue;
pub mod registry;
pub mod registry_server;
pub mod runtime;
pub mod status;
pub mod transport;
pub mod validate;

pub use config::Config;
pub use error::PipelineError;
