//! The change event and the transaction end marker.

use crate::position::Position;
use crate::table::TableId;
use crate::value::{Row, Value};
use serde::{Deserialize, Serialize};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// A row was inserted.
    Insert,
    /// A row was updated (possibly including its key; `before` then holds the old key).
    Update,
    /// A row was deleted.
    Delete,
    /// The whole table was emptied.
    Truncate,
    /// A row read by the initial snapshot.
    Read,
}

impl Op {
    /// The one-letter code used on the wire (Debezium's convention).
    pub fn code(&self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
            Op::Read => "r",
        }
    }

    /// The operation's name, as rules and metrics write it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Read => "read",
        }
    }

    /// The operation for a wire code.
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Insert,
            "u" => Op::Update,
            "d" => Op::Delete,
            "t" => Op::Truncate,
            "r" => Op::Read,
            _ => return None,
        })
    }
}

/// The transaction an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxMeta {
    /// The source's transaction id (PostgreSQL xid), when it has one.
    pub id: Option<u64>,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_ts_micros: i64,
    /// Position of the transaction's first event; all its events share it.
    pub first: Position,
}

/// One captured change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Name of the source (from the configuration).
    pub source: String,
    /// The table changed.
    pub table: TableId,
    /// Version of the table schema the row images follow.
    pub schema_version: u32,
    /// What happened.
    pub op: Op,
    /// Primary-key values (of the new row for inserts and updates, of the old for deletes);
    /// empty for truncates.
    pub key: Vec<Value>,
    /// The old row image, when known (deletes, key-changing updates, `REPLICA IDENTITY
    /// FULL`). Columns the source did not send are NULL.
    pub before: Option<Row>,
    /// The new row image (inserts, updates, snapshot reads).
    pub after: Option<Row>,
    /// Where this event sits in the source's history.
    pub position: Position,
    /// The transaction it belongs to.
    pub tx: TxMeta,
    /// The origin of the change when it was itself written by a replicator.
    pub origin: Option<String>,
}

impl ChangeEvent {
    /// When Tributary itself wrote the change (into a sink that is also captured): the
    /// name of the source it came from (origin `tributary/<sink>/<source>`), or `""` when
    /// the origin does not say (`tributary`).
    pub fn written_by_tributary(&self) -> Option<&str> {
        match self.origin.as_deref()? {
            "tributary" => Some(""),
            o => o
                .strip_prefix("tributary/")
                .and_then(|rest| rest.rsplit_once('/'))
                .map(|(_, source)| source),
        }
    }
}

/// How many events of a transaction went to one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCount {
    /// Topic name.
    pub topic: String,
    /// Number of events the transaction wrote to it.
    pub count: u64,
}

/// The marker written after the last event of a transaction.
///
/// A consumer applies a transaction once it has this marker and, from each listed topic,
/// `count` events with positions in `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxEnd {
    /// Name of the source.
    pub source: String,
    /// The source's transaction id, when it has one.
    pub id: Option<u64>,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_ts_micros: i64,
    /// Position of the first event.
    pub first: Position,
    /// Position of the last event.
    pub last: Position,
    /// Events per topic, in the order the topics were first written.
    pub topics: Vec<TopicCount>,
}

impl TxEnd {
    /// Total number of events in the transaction.
    pub fn total(&self) -> u64 {
        self.topics.iter().map(|t| t.count).sum()
    }
}
