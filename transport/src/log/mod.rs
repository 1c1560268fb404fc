//! The embedded log: an on-disk log on this machine, no broker needed. The capture writes
//! it; apply loops read it, with offsets kept per consumer group.

mod consumer;
mod writer;

pub use consumer::EmbeddedConsumer;
pub use writer::EmbeddedProducer;
pub(crate) use writer::LogReader;
