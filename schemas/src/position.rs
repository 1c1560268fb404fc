//! Typed, totally ordered source positions.
//!
//! A position identifies one event in a source's history. Positions of one source are
//! totally ordered; sinks store the last applied position as their watermark and skip
//! anything at or below it, which is what makes at-least-once delivery exactly-once in
//! effect.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an event sits in a PostgreSQL source's history.
///
/// `lsn` is the commit LSN of the transaction (pgoutput's `final_lsn`) or, for the rows of
/// the initial snapshot, the slot's consistent point; `seq` numbers the events within it
/// from 1. Every streamed transaction commits strictly after the consistent point, so
/// snapshot rows order before all streamed changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgPosition {
    /// Commit LSN of the transaction, or the snapshot's consistent point.
    pub lsn: u64,
    /// Index of the event within the transaction or snapshot, from 1.
    pub seq: u64,
}

impl PgPosition {
    /// The LSN in PostgreSQL's `X/Y` notation.
    pub fn lsn_string(&self) -> String {
        format_lsn(self.lsn)
    }
}

/// Formats an LSN as PostgreSQL does (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A position in some source's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// A PostgreSQL logical replication position.
    Postgres(PgPosition),
}

impl Position {
    /// A PostgreSQL position.
    pub fn pg(lsn: u64, seq: u64) -> Self {
        Position::Postgres(PgPosition { lsn, seq })
    }

    /// The transaction-level part of the position (the LSN for PostgreSQL).
    pub fn tx_lsn(&self) -> u64 {
        match self {
            Position::Postgres(p) => p.lsn,
        }
    }

    /// The index of the event within its transaction.
    pub fn seq(&self) -> u64 {
        match self {
            Position::Postgres(p) => p.seq,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres(p) => write!(f, "pg:{}#{}", p.lsn_string(), p.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn order_follows_lsn_then_seq(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let pa = Position::pg(a.0, a.1);
            let pb = Position::pg(b.0, b.1);
            prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
        }
    }

    #[test]
    fn lsn_formats_like_postgres() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(Position::pg(1, 2).to_string(), "pg:0/1#2");
    }
}
