//! The dead-letter file: messages that cannot be decoded, kept with the reason.
//!
//! One JSON object per line (`topic`, `offset`, `reason`, `value_hex`, `recorded_at`),
//! appended and fsynced before the loop moves past the message, so nothing is dropped
//! silently and an operator can inspect or replay the entries.

use crate::error::PipelineError;
use crate::transport::Consumed;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends undecodable messages to a file.
pub struct DeadLetters {
    path: PathBuf,
}

impl DeadLetters {
    /// Dead letters of pipeline `name` under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        DeadLetters {
            path: dir.join(format!("{name}.dead-letters.jsonl")),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `record` with `reason`.
    pub fn record(&self, record: &Consumed, reason: &str) -> Result<(), PipelineError> {
        tracing::error!(topic = record.topic, offset = record.offset, reason, file = %self.path.display(), "message sent to the dead-letter file");
        let io = |e: std::io::Error| PipelineError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let line = serde_json::json!({
            "topic": record.topic,
            "offset": record.offset,
            "reason": reason,
            "value_hex": record.value.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "recorded_at": chrono_now(),
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        writeln!(f, "{line}").map_err(io)?;
        f.sync_data().map_err(io)
    }
}

fn chrono_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}
