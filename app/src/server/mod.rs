//! The HTTP endpoints a running Tributary serves: the control plane (`api`: health
//! checks, and the rest behind tokens) and the Confluent-compatible schema registry,
//! served by the control plane and, when `[registry] listen` is set, on its own address.

pub mod api;
pub mod metrics;
pub mod registry;
