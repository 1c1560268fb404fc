//! Binlog events the capture does not read: which may pass by and which stop it.
//!
//! The stream loop reads the events that carry or frame row changes (GTID, QUERY, XID,
//! TABLE_MAP, ROWS, XA_PREPARE, EXECUTE_LOAD_QUERY, and MariaDB's compressed forms of
//! these). Every other
//! event is checked here against an allow-list of kinds known to carry no row of a
//! captured table (format descriptions, heartbeats, GTID lists, annotations, statement
//! context of DDL). Anything else stops the capture with the event's type and position,
//! as a replica stops: a row-carrying event of a newer server, or a `LOAD DATA` logged in
//! the pre-5.0 format, would otherwise pass by silently and its rows would be lost. An event the
//! server marked ignorable (`LOG_EVENT_IGNORABLE_F`, MySQL's forward-compatibility rule)
//! passes whatever its type.

use mysql_async::binlog::EventFlags;

/// MariaDB's ANNOTATE_ROWS event: the statement text behind the next rows events.
const MARIADB_ANNOTATE_ROWS: u8 = 160;
/// MariaDB's BINLOG_CHECKPOINT event: which binlog files crash recovery still needs.
const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
/// MariaDB's GTID_LIST event: the GTID state at the start of a binlog file.
const MARIADB_GTID_LIST: u8 = 163;
/// MariaDB's START_ENCRYPTION event (the server decrypts what it sends to replicas).
const MARIADB_START_ENCRYPTION: u8 = 164;
/// MySQL 8's HEARTBEAT_LOG_EVENT_V2.
const MYSQL_HEARTBEAT_V2: u8 = 0x29;

/// Why an event the loop does not read cannot pass by, or `None` when it may.
pub fn refusal(event_type: u8, flags: u16) -> Option<String> {
    if flags & EventFlags::LOG_EVENT_IGNORABLE_F.bits() != 0 {
        return None;
    }
    match event_type {
        // START_V3, STOP, INTVAR, RAND, USER_VAR, FORMAT_DESCRIPTION, HEARTBEAT, IGNORABLE,
        // ROWS_QUERY, PREVIOUS_GTIDS, TRANSACTION_CONTEXT, VIEW_CHANGE. INTVAR, RAND and
        // USER_VAR give a statement its context; in ROW format only DDL is a statement.
        // APPEND_BLOCK and BEGIN_LOAD_QUERY carry a statement-logged LOAD DATA's file; the
        // EXECUTE_LOAD_QUERY after them names its table and is read by the loop.
        0x01 | 0x03 | 0x05 | 0x09 | 0x0d | 0x0e | 0x0f | 0x11 | 0x1b | 0x1c | 0x1d | 0x23
        | 0x24 | 0x25 => None,
        MYSQL_HEARTBEAT_V2
        | MARIADB_ANNOTATE_ROWS
        | MARIADB_BINLOG_CHECKPOINT
        | MARIADB_GTID_LIST
        | MARIADB_START_ENCRYPTION => None,
        0x06 | 0x08 | 0x0a..=0x0c => Some(format!(
            "a LOAD DATA logged as a statement in the pre-5.0 format (event type \
             {event_type}): its rows are not in the binlog; set binlog_format = ROW for every \
             session (the global setting is not enough when a session overrides it)"
        )),
        0x14..=0x16 => Some(format!(
            "a pre-GA rows event (event type {event_type}, MySQL 5.1.0–5.1.15), which \
             Tributary does not read"
        )),
        _ => Some(format!(
            "binlog event type {event_type} is not one Tributary knows to carry no rows, and \
             it is not marked ignorable, so row changes could be lost; a server feature \
             Tributary does not read wrote it (upgrade Tributary, or turn the feature off)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_harmless_kinds_pass_and_others_stop() {
        for t in [0x0f, 0x1b, 0x1d, 0x23, 160, 161, 163, 0x29, 0x11, 0x09] {
            assert_eq!(refusal(t, 0), None, "type {t}");
        }
        let load = refusal(0x06, 0).expect("old load event");
        assert!(load.contains("LOAD DATA"), "{load}");
        let unknown = refusal(172, 0).expect("unknown type");
        assert!(unknown.contains("event type 172"), "{unknown}");
        assert!(refusal(0, 0).is_some());
        // The server's forward-compatibility mark lets any type pass.
        assert_eq!(refusal(172, 0x0080), None);
    }
}
