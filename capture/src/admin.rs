//! What operators ask of a source outside the capture, whatever its kind: how far its
//! capture has come (`tributary status`), and a person's choice to write back into it
//! (the conflict queue). Each kind's folder answers in its `admin.rs`.

use serde::Serialize;
use tributary_schemas::pg_text::write_text;
use tributary_schemas::{TableId, Value};

/// How far a source's capture has come, as the server tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SourceProgress {
    /// A PostgreSQL replication slot and the server's current WAL position.
    Slot {
        /// The slot's name.
        slot: String,
        /// Up to where the slot is confirmed (`None` before the first confirmation).
        confirmed: Option<String>,
        /// The server's current WAL position.
        current: String,
        /// WAL bytes between the two.
        behind_bytes: i64,
        /// Whether a capture is connected to the slot.
        active: bool,
    },
    /// The slot is not created yet (the capture has not started).
    NoSlot {
        /// The slot's name.
        slot: String,
    },
    /// The position is the binlog checkpoint kept in the state directory.
    LocalCheckpoint,
    /// The server could not be asked.
    Unreachable {
        /// Why.
        error: String,
    },
}

/// One source's line of `tributary status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// The source's name.
    pub source: String,
    /// What kind of server it is, for people.
    pub server: &'static str,
    /// Its URL, password hidden.
    pub url: String,
    /// How far its capture has come.
    pub progress: SourceProgress,
}

impl std::fmt::Display for SourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.source;
        match &self.progress {
            SourceProgress::Slot {
                slot,
                confirmed,
                current,
                behind_bytes,
                active,
            } => write!(
                f,
                "source {name}: slot {slot} confirmed {} of {current} (behind {behind_bytes} bytes), {}",
                confirmed.as_deref().unwrap_or_default(),
                if *active { "capturing" } else { "idle" }
            ),
            SourceProgress::NoSlot { slot } => {
                write!(f, "source {name}: slot {slot} does not exist yet")
            }
            SourceProgress::LocalCheckpoint => write!(
                f,
                "source {name}: {} at {} (binlog checkpoint in the state_dir)",
                self.server, self.url
            ),
            SourceProgress::Unreachable { error } => {
                write!(f, "source {name}: unreachable at {}: {error}", self.url)
            }
        }
    }
}

/// A person's choice for one column of one row, to be written into a source as an
/// ordinary update (the conflict queue).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBack<'a> {
    /// The table.
    pub table: &'a TableId,
    /// The row's primary key, column by column.
    pub key: &'a [(String, Value)],
    /// The column to set.
    pub column: &'a str,
    /// The value to set it to.
    pub value: &'a Value,
}

impl WriteBack<'_> {
    /// The value as PostgreSQL text (`None` for NULL), which both kinds cast from.
    pub(crate) fn value_text(&self) -> Option<String> {
        text(self.value)
    }

    /// The key columns with their values as text.
    pub(crate) fn key_texts(&self) -> Vec<(&str, Option<String>)> {
        self.key
            .iter()
            .map(|(c, v)| (c.as_str(), text(v)))
            .collect()
    }
}

fn text(v: &Value) -> Option<String> {
    if matches!(v, Value::Null) {
        return None;
    }
    let mut s = String::new();
    write_text(v, &mut s);
    Some(s)
}
