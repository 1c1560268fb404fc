//! Global transaction ids in the binlog: MariaDB's GTID events and the GTID state a
//! stream resumes from.
//!
//! MariaDB starts every event group with a GTID event of its own type (not one
//! `mysql_common` reads): `domain-server-seq`, flags saying whether the group is a
//! standalone statement or a transaction, and for an XA transaction its xid. The reader
//! keeps the last GTID of every replication domain, which is what MariaDB's
//! `@slave_connect_state` takes, so the checkpoint after each transaction can resume by
//! GTID (after a failover or a binlog reset too). MySQL's GTID events are read by
//! `mysql_common` and only open a transaction; its checkpoints resume by position. A GTID
//! event too short to parse stops the capture with an error naming the event.

use crate::error::CaptureError;
use std::collections::BTreeMap;

/// MariaDB's GTID event (starts every transaction).
pub(super) const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB GTID flag: a statement with no BEGIN/COMMIT around it (DDL).
pub(super) const FL_STANDALONE: u8 = 1;
/// MariaDB GTID flag: a group commit id follows the flags.
const FL_GROUP_COMMIT_ID: u8 = 2;
/// MariaDB GTID flag: the group is an XA transaction's first phase (up to XA PREPARE);
/// its xid follows.
pub(super) const FL_PREPARED_XA: u8 = 64;
/// MariaDB GTID flag: the group is an XA COMMIT or XA ROLLBACK; its xid follows.
const FL_COMPLETED_XA: u8 = 128;

/// Where the stream is in GTID terms: the state a checkpoint stores, and the sequence
/// number of the last MariaDB GTID.
#[derive(Debug, Default)]
pub(super) struct Gtids {
    /// The last GTID per replication domain, as MariaDB's `@slave_connect_state` takes it.
    state: GtidState,
    /// The state as the checkpoint spells it (the stored one until a GTID event is read).
    pub current: Option<String>,
    /// The sequence number of the last MariaDB GTID (the id of a standalone group).
    pub seq: Option<u64>,
}

impl Gtids {
    /// The GTIDs of a stream resuming at a checkpoint whose GTID state is `stored`.
    pub fn resume(stored: Option<&str>) -> Self {
        Gtids {
            state: GtidState::parse(stored.unwrap_or("")),
            current: stored.map(str::to_string),
            seq: None,
        }
    }

    /// Records GTID `domain-server-seq` as the last of its domain.
    pub fn advance(&mut self, domain: u32, server: u32, seq: u64) {
        self.state.set(domain, server, seq);
        self.current = Some(self.state.to_string());
        self.seq = Some(seq);
    }
}

/// A MariaDB GTID state: the last `domain-server-seq` of each replication domain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct GtidState(BTreeMap<u32, (u32, u64)>);

impl GtidState {
    fn parse(s: &str) -> Self {
        let mut state = GtidState::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut f = part.split('-');
            if let (Some(Ok(d)), Some(Ok(sv)), Some(Ok(n))) = (
                f.next().map(str::parse),
                f.next().map(str::parse),
                f.next().map(str::parse),
            ) {
                state.0.insert(d, (sv, n));
            }
        }
        state
    }

    fn set(&mut self, domain: u32, server: u32, seq: u64) {
        self.0.insert(domain, (server, seq));
    }
}

impl std::fmt::Display for GtidState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses a MariaDB GTID event body: `(seq_no, domain_id, flags)`.
pub(super) fn mariadb_gtid(data: &[u8]) -> Result<(u64, u32, u8), CaptureError> {
    if data.len() < 13 {
        return Err(CaptureError::Decode(format!(
            "MariaDB GTID event of {} bytes",
            data.len()
        )));
    }
    let seq_no = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
    let domain = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    Ok((seq_no, domain, data[12]))
}

/// The xid of an XA transaction's MariaDB GTID event body (flags `flags`), spelled as
/// the server spells it in XA statements: `X'<gtrid hex>',X'<bqual hex>',<formatID>`.
pub(super) fn mariadb_gtid_xid(data: &[u8], flags: u8) -> Option<String> {
    if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) == 0 {
        return None;
    }
    let at = if flags & FL_GROUP_COMMIT_ID != 0 {
        21
    } else {
        13
    };
    let format_id = i32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
    let (gtrid_len, bqual_len) = (
        usize::from(*data.get(at + 4)?),
        usize::from(*data.get(at + 5)?),
    );
    let gtrid = data.get(at + 6..at + 6 + gtrid_len)?;
    let bqual = data.get(at + 6 + gtrid_len..at + 6 + gtrid_len + bqual_len)?;
    Some(super::statement::xid_text(format_id, gtrid, bqual))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_gtid_events_and_states() {
        let mut body = 7u64.to_le_bytes().to_vec();
        body.extend(3u32.to_le_bytes());
        body.push(FL_STANDALONE);
        assert_eq!(mariadb_gtid(&body).unwrap(), (7, 3, 1));
        // An XA transaction's first phase: formatID 7, gtrid 0x0102, bqual 0xaa.
        let mut xa = 9u64.to_le_bytes().to_vec();
        xa.extend(0u32.to_le_bytes());
        xa.push(FL_PREPARED_XA);
        xa.extend(7i32.to_le_bytes());
        xa.extend([2, 1, 0x01, 0x02, 0xaa]);
        assert_eq!(
            mariadb_gtid_xid(&xa, FL_PREPARED_XA).as_deref(),
            Some("X'0102',X'aa',7")
        );
        assert_eq!(mariadb_gtid_xid(&xa[..20], FL_PREPARED_XA), None);
        assert_eq!(mariadb_gtid_xid(&xa, 0), None);
        // With a group commit id before it.
        let mut grouped = xa[..13].to_vec();
        grouped.extend(42u64.to_le_bytes());
        grouped.extend(&xa[13..]);
        assert_eq!(
            mariadb_gtid_xid(&grouped, FL_PREPARED_XA | FL_GROUP_COMMIT_ID).as_deref(),
            Some("X'0102',X'aa',7")
        );
        let mut state = GtidState::parse("0-1-5, 2-7-9");
        state.set(0, 1, 6);
        state.set(1, 3, 1);
        assert_eq!(state.to_string(), "0-1-6,1-3-1,2-7-9");
    }

    #[test]
    fn a_resumed_stream_keeps_the_stored_state_until_a_gtid_is_read() {
        let mut gtids = Gtids::resume(Some("0-1-5, 2-7-9"));
        assert_eq!(gtids.current.as_deref(), Some("0-1-5, 2-7-9"));
        assert_eq!(gtids.seq, None);
        gtids.advance(0, 1, 6);
        assert_eq!(gtids.current.as_deref(), Some("0-1-6,2-7-9"));
        assert_eq!(gtids.seq, Some(6));
        assert_eq!(Gtids::resume(None).current, None);
    }
}
