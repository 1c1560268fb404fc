//! Decoder of pgoutput (protocol version 1) messages.
//!
//! `pgwire-replication` hands us the raw `XLogData` payloads; it already turns Begin and
//! Commit into events of their own. This module decodes the rest: relation descriptions,
//! row changes with their tuple data (text format), truncates, origins and types.

use crate::error::CaptureError;

/// One column as a Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (-1 when none).
    pub typmod: i32,
}

/// A Relation message: the shape of a table at this point of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Table OID.
    pub id: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Replica identity setting (`d` default, `n` nothing, `f` full, `i` index).
    pub replica_identity: u8,
    /// Columns in order.
    pub columns: Vec<RelationColumn>,
}

/// One column's data in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// Unchanged TOAST value, not sent.
    Unchanged,
    /// Text-format value.
    Text(String),
    /// Binary-format value (only with the binary option, which we do not request).
    Binary(Vec<u8>),
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Begin (normally delivered by the replication client instead).
    Begin,
    /// Commit (normally delivered by the replication client instead).
    Commit,
    /// Origin of the transaction's changes.
    Origin {
        /// Origin name.
        name: String,
    },
    /// Table description.
    Relation(Relation),
    /// Type description (we look types up in the catalog instead).
    Type,
    /// Row inserted.
    Insert {
        /// Table OID.
        relation: u32,
        /// New row.
        new: Vec<TupleValue>,
    },
    /// Row updated.
    Update {
        /// Table OID.
        relation: u32,
        /// Old row: key columns only (`K`, the key changed) or the full row (`O`,
        /// replica identity full).
        old: Option<(u8, Vec<TupleValue>)>,
        /// New row.
        new: Vec<TupleValue>,
    },
    /// Row deleted.
    Delete {
        /// Table OID.
        relation: u32,
        /// `K` (key columns) or `O` (full row).
        kind: u8,
        /// Old row.
        old: Vec<TupleValue>,
    },
    /// Tables truncated.
    Truncate {
        /// Table OIDs.
        relations: Vec<u32>,
    },
    /// Logical decoding message (delivered by the replication client instead).
    LogicalMessage,
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> CaptureError {
        CaptureError::Decode(format!(
            "{what} at byte {} of a {}-byte message",
            self.at,
            self.buf.len()
        ))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CaptureError> {
        if self.at + n > self.buf.len() {
            return Err(self.err(&format!("truncated {what}")));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CaptureError> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, CaptureError> {
        Ok(i16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    fn i32(&mut self, what: &str) -> Result<i32, CaptureError> {
        Ok(i32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u32(&mut self, what: &str) -> Result<u32, CaptureError> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn string(&mut self, what: &str) -> Result<String, CaptureError> {
        let rest = &self.buf[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err(&format!("unterminated {what}")))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.err(&format!("{what} is not UTF-8")))?
            .to_string();
        self.at += end + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<TupleValue>, CaptureError> {
        let n = self.i16("tuple column count")?;
        let mut values = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            values.push(match self.u8("tuple column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' => {
                    let len = self.i32("text length")?;
                    let bytes = self.take(len.max(0) as usize, "text value")?;
                    TupleValue::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| self.err("text value is not UTF-8"))?,
                    )
                }
                b'b' => {
                    let len = self.i32("binary length")?;
                    TupleValue::Binary(self.take(len.max(0) as usize, "binary value")?.to_vec())
                }
                other => {
                    return Err(self.err(&format!("unknown tuple column kind {:?}", other as char)))
                }
            });
        }
        Ok(values)
    }
}

/// Decodes one pgoutput message.
pub fn decode(buf: &[u8]) -> Result<Message, CaptureError> {
    let mut c = Cursor { buf, at: 0 };
    let tag = c.u8("message tag")?;
    Ok(match tag {
        b'B' => Message::Begin,
        b'C' => Message::Commit,
        b'M' => Message::LogicalMessage,
        b'Y' => Message::Type,
        b'O' => {
            c.take(8, "origin lsn")?;
            Message::Origin {
                name: c.string("origin name")?,
            }
        }
        b'R' => {
            let id = c.u32("relation id")?;
            let schema = c.string("namespace")?;
            let name = c.string("relation name")?;
            let replica_identity = c.u8("replica identity")?;
            let n = c.i16("column count")?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let flags = c.u8("column flags")?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: c.string("column name")?,
                    type_oid: c.u32("column type")?,
                    typmod: c.i32("column typmod")?,
                });
            }
            Message::Relation(Relation {
                id,
                schema,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = c.u32("relation id")?;
            match c.u8("tuple marker")? {
                b'N' => {}
                other => {
                    return Err(c.err(&format!(
                        "insert without new tuple (marker {:?})",
                        other as char
                    )))
                }
            }
            Message::Insert {
                relation,
                new: c.tuple()?,
            }
        }
        b'U' => {
            let relation = c.u32("relation id")?;
            let mut marker = c.u8("tuple marker")?;
            let mut old = None;
            if marker == b'K' || marker == b'O' {
                old = Some((marker, c.tuple()?));
                marker = c.u8("tuple marker")?;
            }
            if marker != b'N' {
                return Err(c.err(&format!(
                    "update without new tuple (marker {:?})",
                    marker as char
                )));
            }
            Message::Update {
                relation,
                old,
                new: c.tuple()?,
            }
        }
        b'D' => {
            let relation = c.u32("relation id")?;
            let kind = c.u8("tuple marker")?;
            if kind != b'K' && kind != b'O' {
                return Err(c.err(&format!(
                    "delete without old tuple (marker {:?})",
                    kind as char
                )));
            }
            Message::Delete {
                relation,
                kind,
                old: c.tuple()?,
            }
        }
        b'T' => {
            let n = c.u32("relation count")?;
            c.u8("truncate options")?;
            let mut relations = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                relations.push(c.u32("relation id")?);
            }
            Message::Truncate { relations }
        }
        other => {
            return Err(CaptureError::Decode(format!(
                "unknown pgoutput message {:?} ({} bytes)",
                other as char,
                buf.len()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    #[test]
    fn decodes_relation_and_update_with_old_key() {
        let mut r = vec![b'R'];
        r.extend_from_slice(&16384u32.to_be_bytes());
        cstr(&mut r, "public");
        cstr(&mut r, "medicines");
        r.push(b'd');
        r.extend_from_slice(&2i16.to_be_bytes());
        r.push(1);
        cstr(&mut r, "id");
        r.extend_from_slice(&23u32.to_be_bytes());
        r.extend_from_slice(&(-1i32).to_be_bytes());
        r.push(0);
        cstr(&mut r, "notes");
        r.extend_from_slice(&25u32.to_be_bytes());
        r.extend_from_slice(&(-1i32).to_be_bytes());
        let Message::Relation(rel) = decode(&r).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(rel.columns.len(), 2);
        assert!(rel.columns[0].key && !rel.columns[1].key);

        let mut u = vec![b'U'];
        u.extend_from_slice(&16384u32.to_be_bytes());
        u.push(b'K');
        u.extend_from_slice(&2i16.to_be_bytes());
        u.push(b't');
        u.extend_from_slice(&1i32.to_be_bytes());
        u.push(b'1');
        u.push(b'n');
        u.push(b'N');
        u.extend_from_slice(&2i16.to_be_bytes());
        u.push(b't');
        u.extend_from_slice(&1i32.to_be_bytes());
        u.push(b'2');
        u.push(b'u');
        assert_eq!(
            decode(&u).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some((b'K', vec![TupleValue::Text("1".into()), TupleValue::Null])),
                new: vec![TupleValue::Text("2".into()), TupleValue::Unchanged],
            }
        );
    }

    #[test]
    fn truncated_message_is_an_error_not_a_panic() {
        let e = decode(&[b'I', 0, 0]).unwrap_err().to_string();
        assert!(e.contains("truncated relation id"), "{e}");
        assert!(decode(b"Z")
            .unwrap_err()
            .to_string()
            .contains("unknown pgoutput message"));
    }
}
