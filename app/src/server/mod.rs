//! The HTTP endpoints a running Tributary serves: today the Confluent-compatible schema
//! registry.

pub mod registry;
