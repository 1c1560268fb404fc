//! Data objects in the store, as archive segments and snapshots hold them: written as an
//! Avro object container of one table version (sealed when the store encrypts) or as
//! opaque stored bytes, named with `safe` renderings of their tables, and read back with
//! every check: size and sha256 as the manifest gives them (as stored), then decryption,
//! then the container's header and, block by block, its events and their count.
//!
//! An object larger than the store's `memory_object_bytes` is read back through a
//! temporary file, so memory holds one block of its events. Every failure is a
//! [`BackupError::Corrupt`] naming the object (`corrupt`).

use crate::error::BackupError;
use crate::ocf;
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tributary_schemas::{decode_value_from, AvroSchemas, ChangeEvent, TableId, TableSchema};

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A file-name-safe rendering of `text`.
pub(crate) fn safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An object as stored: the Avro container of table version `table` (its id, schema
/// version and envelope schema) of `source`, with `blocks` after the header, whose
/// metadata also holds `extra`; encrypted when the store encrypts.
pub(crate) fn stored_container(
    store: &Store,
    source: &str,
    table: (&TableId, u32, &str),
    extra: (&str, String),
    sync: &ocf::Sync,
    blocks: &[u8],
) -> Result<Vec<u8>, BackupError> {
    let mut object = container_header(source, table, extra, sync);
    object.extend_from_slice(blocks);
    store.seal(object)
}

/// The header of the Avro container of table version `table` (its id, schema version and
/// envelope schema) of `source`, whose metadata also holds `extra`.
pub(crate) fn container_header(
    source: &str,
    table: (&TableId, u32, &str),
    extra: (&str, String),
    sync: &ocf::Sync,
) -> Vec<u8> {
    let (id, version, value_text) = table;
    let metadata = BTreeMap::from([
        ("tributary.source".to_string(), source.to_string()),
        ("tributary.table".to_string(), id.to_string()),
        ("tributary.schema_version".to_string(), version.to_string()),
        (extra.0.to_string(), extra.1),
    ]);
    ocf::header(value_text, &metadata, sync)
}

/// The error of object `object` in `store`, found damaged or missing: `message` says how.
pub(crate) fn corrupt(store: &Store, object: &str, message: impl Into<String>) -> BackupError {
    BackupError::Corrupt {
        store: store.describe().to_string(),
        object: object.to_string(),
        message: message.into(),
    }
}

/// What an object must be: its name, size, sha256 and event count.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Object name.
    pub name: &'a str,
    /// Size.
    pub bytes: u64,
    /// sha256, hex.
    pub sha256: &'a str,
    /// Events (rows) in it.
    pub events: u64,
}

/// An object read whole and found to have its size and sha256; its events are decoded
/// block by block ([`CheckedObject::blocks`]), so memory holds one block of events.
pub struct CheckedObject {
    store: String,
    name: String,
    events: u64,
    plain: Plain,
    schemas: AvroSchemas,
}

/// Where a checked object's plain (decrypted) bytes are.
enum Plain {
    /// In memory.
    Memory(Vec<u8>),
    /// In a temporary file: an object larger than the store's `memory_object_bytes`.
    File(tempfile::TempPath),
}

impl Plain {
    /// A reader of the bytes from the start.
    fn reader(&self) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        Ok(match self {
            Plain::Memory(bytes) => Box::new(bytes.as_slice()),
            Plain::File(path) => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(path)?,
            )),
        })
    }
}

/// Checks object `name` as read (`size` bytes with sha256 `sha`) against the `bytes` and
/// `sha256` its manifest gives.
fn check_stored(
    store: &Store,
    name: &str,
    (size, sha): (u64, &str),
    bytes: u64,
    sha256: &str,
) -> Result<(), BackupError> {
    if size != bytes {
        return Err(corrupt(
            store,
            name,
            format!("holds {size} bytes but the manifest says {bytes}"),
        ));
    }
    if sha != sha256 {
        return Err(corrupt(
            store,
            name,
            format!("sha256 is {sha} but the manifest says {sha256}: the object is damaged"),
        ));
    }
    Ok(())
}

/// Reads data object `name`, checks it against the `bytes` and `sha256` its manifest
/// gives (as stored), and decrypts it.
pub(crate) async fn read_stored(
    store: &Store,
    name: &str,
    bytes: u64,
    sha256: &str,
) -> Result<Vec<u8>, BackupError> {
    let stored = store
        .get(name)
        .await?
        .ok_or_else(|| corrupt(store, name, MISSING))?;
    let sha = sha256_hex(&stored);
    check_stored(store, name, (stored.len() as u64, &sha), bytes, sha256)?;
    store.unseal(name, &stored)
}

const MISSING: &str = "missing, though its manifest lists it";

/// Reads data object `name` as [`read_stored`] does, into memory when it is at most the
/// store's `memory_object_bytes`, else into a temporary file a piece at a time.
async fn read_plain(
    store: &Store,
    name: &str,
    bytes: u64,
    sha256: &str,
) -> Result<Plain, BackupError> {
    if bytes <= store.memory_object_bytes() {
        return Ok(Plain::Memory(
            read_stored(store, name, bytes, sha256).await?,
        ));
    }
    let (file, size, sha) = store
        .get_to_file(name)
        .await?
        .ok_or_else(|| corrupt(store, name, MISSING))?;
    check_stored(store, name, (size, sha.as_str()), bytes, sha256)?;
    Ok(Plain::File(store.unseal_file(name, file).await?))
}

/// Reads object `expected` of source `source` and checks its size, sha256 and header.
pub async fn read_checked(
    store: &Store,
    source: &str,
    expected: Expected<'_>,
) -> Result<CheckedObject, BackupError> {
    let name = expected.name;
    let plain = read_plain(store, name, expected.bytes, expected.sha256).await?;
    let reader = plain
        .reader()
        .map_err(|e| corrupt(store, name, format!("reading it back: {e}")))?;
    let schema = ocf::open(reader)
        .map_err(|e| corrupt(store, name, e.to_string()))?
        .schema;
    let schemas = AvroSchemas::from_value_text(source, &schema)
        .map_err(|e| corrupt(store, name, e.to_string()))?;
    Ok(CheckedObject {
        store: store.describe().to_string(),
        name: name.to_string(),
        events: expected.events,
        plain,
        schemas,
    })
}

impl CheckedObject {
    /// The table version of its events.
    pub fn table(&self) -> &TableSchema {
        &self.schemas.table
    }

    fn bad(&self, message: impl std::fmt::Display) -> BackupError {
        BackupError::Corrupt {
            store: self.store.clone(),
            object: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// Each block's events, in order; the last item checks the total.
    pub fn blocks(&self) -> Result<Blocks<'_>, BackupError> {
        let reader = self
            .plain
            .reader()
            .map_err(|e| self.bad(format!("reading it back: {e}")))?;
        Ok(Blocks {
            container: ocf::open(reader).map_err(|e| self.bad(e))?,
            object: self,
            total: 0,
            done: false,
        })
    }

    /// Every event, in order.
    pub fn events(&self) -> Result<Vec<ChangeEvent>, BackupError> {
        let mut out = Vec::with_capacity(self.events as usize);
        for events in self.blocks()? {
            out.extend(events?);
        }
        Ok(out)
    }
}

/// The blocks of a [`CheckedObject`], decoded.
pub struct Blocks<'a> {
    object: &'a CheckedObject,
    container: ocf::Container<Box<dyn std::io::Read + 'a>>,
    total: u64,
    done: bool,
}

impl Iterator for Blocks<'_> {
    type Item = Result<Vec<ChangeEvent>, BackupError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let o = self.object;
        let mut step = || -> Result<Option<Vec<ChangeEvent>>, BackupError> {
            let Some((count, datums)) = self.container.next_block().map_err(|e| o.bad(e))? else {
                if self.total != o.events {
                    return Err(o.bad(format!(
                        "holds {} events but the manifest says {}",
                        self.total, o.events
                    )));
                }
                return Ok(None);
            };
            let mut rest = datums.as_slice();
            let mut events = Vec::with_capacity(count as usize);
            for _ in 0..count {
                events.push(decode_value_from(&o.schemas, &mut rest).map_err(|e| o.bad(e))?);
            }
            if !rest.is_empty() {
                return Err(o.bad("a block holds more bytes than its datums"));
            }
            self.total += count;
            Ok(Some(events))
        };
        match step() {
            Ok(Some(events)) => Some(Ok(events)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
