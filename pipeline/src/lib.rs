//! The apply engine: reads a source's topics back into source transactions, admits each
//! event (echo suppression, business rules, dead letters), merges the rows of conflict
//! tables, and applies transactions to a sink exactly once in effect.
//!
//! No command line, configuration file or database driver lives here: the `tributary`
//! application crate plans and supervises the loops, and the sinks crate owns every
//! database.

pub mod apply;
pub mod conflict;
pub mod dead_letter;
pub mod error;
pub mod merge;
pub mod notify;
pub mod registry;
pub mod validate;

pub use error::PipelineError;
