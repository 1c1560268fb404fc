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

/// Where an event sits in a MySQL/MariaDB source's history (the binary log).
///
/// `file` is the binlog file's sequence number (the numeric suffix of `mysql-bin.000042`),
/// `offset` the end offset of the transaction's first event (its GTID or `BEGIN` event),
/// or, for the rows of the initial snapshot, the binlog position the snapshot is
/// consistent with, which is the start of the first transaction not in the snapshot and
/// so lies strictly before that transaction's `offset`. Transactions are written to the
/// binlog in commit order, so the order of positions is commit order. `seq` numbers the
/// events within the transaction or snapshot from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MySqlPosition {
    /// Binlog file sequence number.
    pub file: u32,
    /// Offset within the file (see the type's documentation).
    pub offset: u64,
    /// Index of the event within the transaction or snapshot, from 1.
    pub seq: u64,
}

/// A position in some source's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// A PostgreSQL logical replication position.
    Postgres(PgPosition),
    /// A MySQL/MariaDB binlog position.
    #[serde(rename = "mysql")]
    MySql(MySqlPosition),
}

impl Position {
    /// A PostgreSQL position.
    pub fn pg(lsn: u64, seq: u64) -> Self {
        Position::Postgres(PgPosition { lsn, seq })
    }

    /// A MySQL/MariaDB position.
    pub fn mysql(file: u32, offset: u64, seq: u64) -> Self {
        Position::MySql(MySqlPosition { file, offset, seq })
    }

    /// Reads a position as an operator writes it (and as [`Position`] displays):
    /// `pg:<LSN>` (or a bare `<hi>/<lo>` LSN) or `mysql:<file number>:<offset>`, each
    /// optionally with `#<seq>`; without one, the index is `seq`. `None` when `text` is
    /// neither.
    pub fn parse(text: &str, seq: u64) -> Option<Position> {
        let (body, seq) = match text.rsplit_once('#') {
            Some((b, s)) => (b, s.parse::<u64>().ok()?),
            None => (text, seq),
        };
        if let Some(rest) = body.strip_prefix("mysql:") {
            let (file, offset) = rest.split_once(':')?;
            return Some(Position::mysql(
                file.parse().ok()?,
                offset.parse().ok()?,
                seq,
            ));
        }
        let lsn = body.strip_prefix("pg:").unwrap_or(body);
        let (hi, lo) = lsn.split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Position::pg((u64::from(hi) << 32) | u64::from(lo), seq))
    }

    /// The index of the event within its transaction.
    pub fn seq(&self) -> u64 {
        match self {
            Position::Postgres(p) => p.seq,
            Position::MySql(p) => p.seq,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres(p) => write!(f, "pg:{}#{}", p.lsn_string(), p.seq),
            Position::MySql(p) => write!(f, "mysql:{:06}:{}#{}", p.file, p.offset, p.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn positions_read_back_as_displayed() {
        for p in [Position::pg(0x1_0000_00ff, 3), Position::mysql(12, 4567, 0)] {
            assert_eq!(Position::parse(&p.to_string(), 9), Some(p));
        }
        assert_eq!(Position::parse("0/16", 9), Some(Position::pg(0x16, 9)));
        for bad in ["pg:xyz", "mysql:3", "1/2#x", "100000000/0", "yesterday"] {
            assert_eq!(Position::parse(bad, 0), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn order_follows_lsn_then_seq(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let pa = Position::pg(a.0, a.1);
            let pb = Position::pg(b.0, b.1);
            prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
        }

        #[test]
        fn mysql_order_follows_file_then_offset_then_seq(a in any::<(u32, u64, u64)>(), b in any::<(u32, u64, u64)>()) {
            prop_assert_eq!(Position::mysql(a.0, a.1, a.2).cmp(&Position::mysql(b.0, b.1, b.2)), a.cmp(&b));
        }
    }

    #[test]
    fn lsn_formats_like_postgres() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(Position::pg(1, 2).to_string(), "pg:0/1#2");
        assert_eq!(
            Position::mysql(3, 1234, 5).to_string(),
            "mysql:000003:1234#5"
        );
    }
}
