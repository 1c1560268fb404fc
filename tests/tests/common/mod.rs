//! Helpers shared by several test files.

pub mod backend;
pub mod e2e;
pub mod events;
