//! Kafka, or any Kafka-protocol broker: the producer the capture publishes through, and
//! the consumer the apply loops read with.

mod consumer;
mod producer;

pub use consumer::KafkaConsumer;
pub(crate) use producer::{check_reachable, TracingContext};
pub use producer::{KafkaProducer, KafkaSettings};
