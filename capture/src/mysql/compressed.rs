//! MariaDB's compressed binlog events (`log_bin_compress = ON`), turned back into the plain
//! events they stand for.
//!
//! MariaDB compresses the statement text of a QUERY event (type 165) and the row images of
//! a ROWS event (166–171) with zlib, behind a one-byte header (`0x80 | algorithm << 4 |
//! bytes of the length`) and the inflated length, high byte first. Everything before that
//! part is as in the plain event. The compressed part is inflated here and the event
//! rebuilt with the plain type, so the capture then reads it like any other: no second
//! decoder to keep in step. The inflated length is checked against the header, and
//! inflating stops one byte past it, so a damaged header cannot make the capture allocate
//! more than the largest event MariaDB writes.

use mysql_async::binlog::events::Event;
use mysql_common::binlog::consts::BinlogChecksumAlg;
use std::io::Read;

/// The first and last compressed event types.
const FIRST: u8 = 165;
const LAST: u8 = 171;
/// Largest inflated part accepted: MariaDB's `max_allowed_packet` ceiling (1 GiB).
const MAX_INFLATED: usize = 1 << 30;
/// Length of the common event header.
const HEADER: usize = 19;
/// Post-header of a QUERY event: thread id, exec time, db length, error code, status length.
const QUERY_POST_HEADER: usize = 13;
/// Post-header of a ROWS event: 6-byte table id and 2-byte flags (v2 adds the extra-data
/// length).
const ROWS_POST_HEADER: usize = 8;

/// Whether `event_type` is one of MariaDB's compressed events.
pub fn is_compressed(event_type: u8) -> bool {
    (FIRST..=LAST).contains(&event_type)
}

/// The plain event that a compressed `event` stands for; the error says what is malformed.
pub fn inflate_event(event: &Event) -> Result<Event, String> {
    let header = event.header();
    let kind = header.event_type_raw();
    let data = event.data();
    let (plain, start) = match kind {
        165 => (0x02, query_text_offset(data)?),
        // WRITE/UPDATE/DELETE_ROWS_COMPRESSED_EVENT_V1 → WRITE/UPDATE/DELETE_ROWS_EVENT_V1.
        166..=168 => (
            kind - 166 + 0x17,
            rows_data_offset(data, false, kind == 167)?,
        ),
        // WRITE/UPDATE/DELETE_ROWS_COMPRESSED_EVENT → WRITE/UPDATE/DELETE_ROWS_EVENT (v2).
        169..=171 => (
            kind - 169 + 0x1e,
            rows_data_offset(data, true, kind == 170)?,
        ),
        other => return Err(format!("event type {other} is not a compressed event")),
    };
    let inflated = inflate(&data[start..])?;
    let footer = event.fde().footer();
    let checksum = footer.get_checksum_enabled()
        && !matches!(
            footer.get_checksum_alg(),
            Ok(None) | Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF))
        );
    let size = HEADER + start + inflated.len() + if checksum { 4 } else { 0 };
    let size32 = u32::try_from(size)
        .map_err(|_| format!("the inflated event would be {size} bytes, over 4 GiB"))?;
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&header.timestamp().to_le_bytes());
    bytes.push(plain);
    bytes.extend_from_slice(&header.server_id().to_le_bytes());
    bytes.extend_from_slice(&size32.to_le_bytes());
    bytes.extend_from_slice(&header.log_pos().to_le_bytes());
    bytes.extend_from_slice(&header.flags_raw().to_le_bytes());
    bytes.extend_from_slice(&data[..start]);
    bytes.extend_from_slice(&inflated);
    if checksum {
        // Not verified when read back; the compressed event's own checksum was.
        bytes.extend_from_slice(&[0; 4]);
    }
    Event::read(event.fde(), bytes.as_slice()).map_err(|e| format!("rebuilt event: {e}"))
}

/// Where the statement text starts in a QUERY event's data.
fn query_text_offset(data: &[u8]) -> Result<usize, String> {
    if data.len() < QUERY_POST_HEADER {
        return Err("the QUERY event is shorter than its post-header".into());
    }
    let db_len = usize::from(data[8]);
    let status_len = usize::from(u16::from_le_bytes([data[11], data[12]]));
    let start = QUERY_POST_HEADER + status_len + db_len + 1;
    if start > data.len() {
        return Err("the QUERY event ends inside its status or database name".into());
    }
    Ok(start)
}

/// Where the row images start in a ROWS event's data: after the post-header, the v2 extra
/// data, the column count and the column bitmap(s).
fn rows_data_offset(data: &[u8], v2: bool, update: bool) -> Result<usize, String> {
    let short = || "the ROWS event ends before its row images".to_string();
    let mut at = ROWS_POST_HEADER;
    if v2 {
        let extra = data.get(at..at + 2).ok_or_else(short)?;
        // The extra-data length counts its own two bytes.
        at += usize::from(u16::from_le_bytes([extra[0], extra[1]])).max(2);
    }
    let first = *data.get(at).ok_or_else(short)?;
    let (columns, width) = match first {
        0..=250 => (u64::from(first), 1),
        252 => (le_uint(data.get(at + 1..at + 3).ok_or_else(short)?), 3),
        253 => (le_uint(data.get(at + 1..at + 4).ok_or_else(short)?), 4),
        254 => (le_uint(data.get(at + 1..at + 9).ok_or_else(short)?), 9),
        _ => return Err("the ROWS event's column count is malformed".into()),
    };
    let bitmap = usize::try_from(columns.div_ceil(8)).map_err(|_| short())?;
    at += width + bitmap * if update { 2 } else { 1 };
    if at > data.len() {
        return Err(short());
    }
    Ok(at)
}

fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Inflates MariaDB's compressed record: header byte, big-endian length, zlib stream.
fn inflate(part: &[u8]) -> Result<Vec<u8>, String> {
    let &flags = part.first().ok_or("the compressed part is empty")?;
    if flags & 0x80 == 0 {
        return Err(format!(
            "the compressed part's header {flags:#04x} lacks its mark"
        ));
    }
    let algorithm = (flags >> 4) & 0x07;
    if algorithm != 0 {
        return Err(format!(
            "compression algorithm {algorithm} (only zlib, 0, is defined)"
        ));
    }
    let width = usize::from(flags & 0x07);
    if !(1..=4).contains(&width) {
        return Err(format!(
            "the header gives a {width}-byte inflated length (1 to 4 bytes are defined)"
        ));
    }
    let length = part
        .get(1..1 + width)
        .ok_or("the compressed part ends inside its length")?
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if length > MAX_INFLATED {
        return Err(format!(
            "the header announces {length} inflated bytes, over the 1 GiB an event may hold"
        ));
    }
    // Grown as the stream inflates: the announced length is not trusted for the allocation.
    let mut out = Vec::with_capacity(length.min(1 << 20));
    flate2::read::ZlibDecoder::new(&part[1 + width..])
        .take(length as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zlib: {e}"))?;
    if out.len() != length {
        return Err(format!(
            "{} bytes inflated where the header announces {length}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compress(plain: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(plain).unwrap();
        let body = z.finish().unwrap();
        let len = (plain.len() as u32).to_be_bytes();
        let mut out = vec![0x80 | 4];
        out.extend_from_slice(&len);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn inflates_and_checks_the_announced_length() {
        let plain = b"row images ".repeat(50);
        assert_eq!(inflate(&compress(&plain)).unwrap(), plain);
        let mut wrong = compress(&plain);
        wrong[4] ^= 1;
        assert!(inflate(&wrong).unwrap_err().contains("announces"));
        let mut other = compress(&plain);
        other[0] = 0x80 | 0x10 | 4;
        assert!(inflate(&other).unwrap_err().contains("algorithm 1"));
        assert!(inflate(&[0x04, 0, 0, 0, 1]).unwrap_err().contains("mark"));
        assert!(inflate(&compress(&plain)[..3]).is_err());
    }

    /// A compressed v1 WRITE_ROWS event, with and without a checksum, comes back as the
    /// plain event: same header fields but type and size, post-header and bitmap kept,
    /// row images inflated, checksum stripped.
    #[test]
    fn rebuilds_the_plain_event() {
        use mysql_common::binlog::consts::BinlogVersion;
        use mysql_common::binlog::events::{BinlogEventFooter, FormatDescriptionEvent};
        let rows = b"\x00\x01\x00\x00\x00row images".repeat(30);
        let mut data = vec![7, 0, 0, 0, 0, 0, 1, 0, 2, 0x03];
        let plain_data = [&data[..], &rows[..]].concat();
        data.extend_from_slice(&compress(&rows));
        for checksum in [false, true] {
            let mut fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
            if checksum {
                fde = fde.with_footer(BinlogEventFooter::new(
                    BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32,
                ));
            }
            let size = HEADER + data.len() + if checksum { 4 } else { 0 };
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
            bytes.push(166);
            bytes.extend_from_slice(&9u32.to_le_bytes());
            bytes.extend_from_slice(&(size as u32).to_le_bytes());
            bytes.extend_from_slice(&4242u32.to_le_bytes());
            bytes.extend_from_slice(&0u16.to_le_bytes());
            bytes.extend_from_slice(&data);
            if checksum {
                bytes.extend_from_slice(&[1, 2, 3, 4]);
            }
            let event = Event::read(&fde, bytes.as_slice()).unwrap();
            assert!(is_compressed(event.header().event_type_raw()));
            let plain = inflate_event(&event).unwrap();
            let header = plain.header();
            assert_eq!(header.event_type_raw(), 0x17, "checksum={checksum}");
            assert_eq!(
                (header.timestamp(), header.server_id(), header.log_pos()),
                (1_700_000_000, 9, 4242)
            );
            assert_eq!(plain.data(), plain_data.as_slice(), "checksum={checksum}");
            assert_eq!(
                header.event_size() as usize,
                HEADER + plain_data.len() + if checksum { 4 } else { 0 }
            );
        }
    }

    #[test]
    fn finds_the_row_images_after_the_bitmaps() {
        // v1 update of 9 columns: post-header, count, two 2-byte bitmaps.
        let mut data = vec![0u8; 8];
        data.extend_from_slice(&[9, 0xff, 0x01, 0xff, 0x01, 0xaa]);
        assert_eq!(rows_data_offset(&data, false, true).unwrap(), 13);
        assert_eq!(rows_data_offset(&data, false, false).unwrap(), 11);
        // v2 with 4 bytes of extra data (length field included).
        let mut v2 = vec![0u8; 8];
        v2.extend_from_slice(&[4, 0, 7, 7, 3, 0x07]);
        assert_eq!(rows_data_offset(&v2, true, false).unwrap(), 14);
        assert!(rows_data_offset(&data[..10], false, true).is_err());
    }

    #[test]
    fn finds_the_statement_after_status_and_database() {
        let mut data = vec![0u8; 13];
        data[8] = 3; // "abc"
        data[11] = 2; // two status bytes
        data.extend_from_slice(&[1, 2]);
        data.extend_from_slice(b"abc\0");
        data.extend_from_slice(b"compressed");
        assert_eq!(query_text_offset(&data).unwrap(), 19);
        assert!(query_text_offset(&data[..16]).is_err());
    }
}
