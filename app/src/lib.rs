//! The `tributary` application: the configuration file, the runtime that plans and
//! supervises capture agents, apply loops and archivers, the schedule, the commands (each
//! returning a typed report the command line prints), and the HTTP server.
//!
//! The library crates do the work: `tributary_capture` (sources), `tributary_pipeline`
//! (the apply engine), `tributary_sinks` (target databases), `tributary_snapshot`
//! (continuous backup). This crate never matches on a database kind.

pub mod backup;
pub mod board;
pub mod commands;
pub mod config;
pub mod runtime;
pub mod schedule;
pub mod server;

pub use config::Config;
pub use tributary_pipeline::PipelineError;
