//! The commands of the `tributary` command line, each returning a typed report that the
//! command line prints (and that the HTTP API will serialise).

pub mod conflicts;
pub mod dead_letters;
pub mod demo;
pub mod restore;
pub mod restore_test;
pub mod snapshots;
pub mod status;
