//! Which transport a configuration names (`[transport] kind = "embedded"` or `"kafka"`),
//! and opening either side of it: the one place that matches on a transport kind.

use crate::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use crate::log::{EmbeddedConsumer, EmbeddedProducer};
use crate::{Consumer, Producer, TransportError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The transport.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransportConfig {
    /// An on-disk log on this machine; no broker needed.
    Embedded(EmbeddedConfig),
    /// Kafka (or any Kafka-protocol broker).
    Kafka(KafkaSettings),
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig::Embedded(EmbeddedConfig::default())
    }
}

/// The embedded log's settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Directory of the log; default `<state_dir>/log`.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl TransportConfig {
    /// Directory of the embedded log: its `path`, else `<state_dir>/log`.
    pub fn log_dir(&self, state_dir: &Path) -> PathBuf {
        match self {
            TransportConfig::Embedded(EmbeddedConfig { path: Some(p) }) => p.clone(),
            _ => state_dir.join("log"),
        }
    }

    /// Checks what types alone cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if let TransportConfig::Kafka(k) = self {
            if k.brokers.trim().is_empty() {
                return Err("transport.brokers: must list at least one host:port".into());
            }
        }
        Ok(())
    }

    /// Whether several processes may publish at once (Kafka), rather than the capture
    /// being the only writer (the embedded log, where the dead-letter file is the queue).
    pub fn shared(&self) -> bool {
        matches!(self, TransportConfig::Kafka(_))
    }

    /// The writing side. A run restarted in this process finds the last one's log writer
    /// finishing its queue, and waits for it.
    pub async fn producer(&self, state_dir: &Path) -> Result<Arc<dyn Producer>, TransportError> {
        Ok(match self {
            TransportConfig::Embedded(_) => Arc::new(
                EmbeddedProducer::open_when_free(&self.log_dir(state_dir), Duration::from_secs(10))
                    .await?,
            ),
            TransportConfig::Kafka(k) => Arc::new(KafkaProducer::connect(k).await?),
        })
    }

    /// The reading side, for consumer group `group`.
    pub async fn consumer(
        &self,
        state_dir: &Path,
        group: &str,
    ) -> Result<Arc<dyn Consumer>, TransportError> {
        Ok(match self {
            TransportConfig::Embedded(_) => {
                Arc::new(EmbeddedConsumer::open(&self.log_dir(state_dir), group)?)
            }
            TransportConfig::Kafka(k) => Arc::new(KafkaConsumer::connect(k, group).await?),
        })
    }
}
