//! Helpers shared by several test files.

pub mod backend;
pub mod events;
