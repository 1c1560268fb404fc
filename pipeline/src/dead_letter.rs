//! The dead-letter queue: messages that cannot be decoded, and events a rule rejected, kept
//! with the reason.
//!
//! Each entry is one JSON object (`topic`, `offset`, `reason`, `value_hex`, `recorded_at`;
//! for a rejected event also `rule` and the decoded `event`) appended to a file, the
//! inspectable list (`<state_dir>/dead-letters/<sink>-<source>.dead-letters.jsonl`), and
//! fsynced. Over Kafka it is also published to the source's `<prefix>.dead_letters` topic,
//! keyed by the sink's name, and the loop waits until the broker holds it. Either way the
//! loop moves past the message only afterwards, so nothing is dropped silently.

use crate::error::PipelineError;
use crate::validate::Violation;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tributary_schemas::ChangeEvent;
use tributary_transport::Consumed;
use tributary_transport::{Producer, Record};

/// Keeps undecodable messages and rejected events.
pub struct DeadLetters {
    path: PathBuf,
    /// The key of the topic's entries (the sink's name).
    sink: String,
    /// Over Kafka: the producer and the topic entries are also published to.
    topic: Option<(Arc<dyn Producer>, String)>,
    /// Whether the topic is known to exist.
    topic_ready: bool,
}

impl DeadLetters {
    /// Dead letters of pipeline `name` under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        DeadLetters {
            path: dir.join(format!("{name}.dead-letters.jsonl")),
            sink: name.to_string(),
            topic: None,
            topic_ready: false,
        }
    }

    /// Also publishes every entry of sink `sink` to `topic` through `producer`.
    pub fn with_topic(mut self, sink: &str, producer: Arc<dyn Producer>, topic: String) -> Self {
        self.sink = sink.to_string();
        self.topic = Some((producer, topic));
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `record` with `reason`.
    pub async fn record(&mut self, record: &Consumed, reason: &str) -> Result<(), PipelineError> {
        tracing::error!(topic = record.topic, offset = record.offset, reason, file = %self.path.display(), "message sent to the dead-letter file");
        self.append(record, reason, serde_json::Map::new()).await
    }

    /// Records `record`, which rule violation `v` rejected, with its decoded `event`.
    pub async fn record_rejected(
        &mut self,
        record: &Consumed,
        v: &Violation,
        event: &ChangeEvent,
    ) -> Result<(), PipelineError> {
        tracing::warn!(topic = record.topic, offset = record.offset, rule = v.rule, reason = v.reason, file = %self.path.display(), "event rejected by a rule, sent to the dead-letter file");
        let mut extra = serde_json::Map::new();
        extra.insert("rule".into(), v.rule.clone().into());
        extra.insert(
            "event".into(),
            serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        );
        self.append(record, &v.reason, extra).await
    }

    async fn append(
        &mut self,
        record: &Consumed,
        reason: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), PipelineError> {
        let mut line = serde_json::json!({
            "topic": record.topic,
            "offset": record.offset,
            "reason": reason,
            "value_hex": record.value.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "recorded_at": chrono_now(),
        });
        if let Some(fields) = line.as_object_mut() {
            fields.extend(extra);
        }
        append_synced(&self.path, &format!("{line}\n"))?;
        if let Some((producer, topic)) = &self.topic {
            if !self.topic_ready {
                producer.ensure_topics(std::slice::from_ref(topic)).await?;
                self.topic_ready = true;
            }
            let delivery = producer
                .send(Record {
                    topic: topic.as_str().into(),
                    key: Some(self.sink.clone().into_bytes()),
                    value: line.to_string().into_bytes(),
                })
                .await?;
            delivery.await?;
        }
        Ok(())
    }
}

/// Appends `text` to the file at `path` (creating it and its directory) and syncs it, so
/// what a queue or log holds survives a crash.
pub fn append_synced(path: &Path, text: &str) -> Result<(), PipelineError> {
    let io = |e: std::io::Error| PipelineError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

fn chrono_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}
