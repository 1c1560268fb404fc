//! Snapshots: a copy of a source's tables consistent with one source position, stored
//! beside the archive so a restore starts from the newest snapshot before its target and
//! replays only the archived events after it.
//!
//! A [`SnapshotWriter`] takes the copy's rows table after table, one or more objects per
//! table (a new object every `object_bytes`, so objects stay bounded), each checksummed;
//! the manifest, written last, lists them and marks the snapshot complete. Rows come in
//! one of two forms, and each object says which ([`ObjectFormat`]):
//!
//! - `Read` events (MySQL/MariaDB sources), stored as Avro object containers (zstd);
//! - PostgreSQL's own `COPY ... TO STDOUT` text, stored as it comes in zstd frames, as
//!   `pg_dump` stores it: nothing is parsed while the copy runs, and
//!   `zstd -dc <object> | psql -c 'COPY <table> (<columns>) FROM STDIN'` loads one by
//!   hand. A restore parses the lines with the capture's own reader (a [`CopyDecoder`]).
//!
//! Store layout: `snapshots/<source>/<id>/<n>-<schema>.<table>.avro` (or `.copy.zst`) and
//! `snapshots/<source>/<id>/manifest.json`, where `<id>` is the UTC time it was taken
//! (`20261202T020000Z`), so names sort by age.

use crate::error::BackupError;
use crate::object::{
    corrupt, read_checked, read_stored, safe, sha256_hex, stored_container, CheckedObject, Expected,
};
use crate::ocf;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;
use tributary_schemas::{
    encode_value, AvroSchemas, ChangeEvent, Op, Position, Row, TableId, TableSchema, TxMeta, Value,
};

/// Datums compressed into one block.
const BLOCK_BYTES: usize = 1 << 20;

/// How a snapshot object holds its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    /// An Avro object container of `Read` events (zstd codec); its header holds the schema.
    #[default]
    Avro,
    /// Lines of PostgreSQL's `COPY ... TO STDOUT` text format, in the order of the
    /// object's `columns`, printed under `DateStyle=ISO`, `IntervalStyle=iso_8601`,
    /// `TimeZone=UTC`, `extra_float_digits=3` and `bytea_output=hex`, in one or more
    /// concatenated zstd frames.
    PgCopyText,
}

impl ObjectFormat {
    fn is_avro(&self) -> bool {
        *self == ObjectFormat::Avro
    }
}

/// Parses one line of a [`ObjectFormat::PgCopyText`] object (without its newline) into a
/// row of the table; the message of an error names what is wrong.
pub type CopyDecoder = fn(&TableSchema, &[u8]) -> Result<Row, String>;

/// One object of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotObject {
    /// Object name.
    pub name: String,
    /// The table.
    pub table: TableId,
    /// Its schema version.
    pub schema_version: u32,
    /// Rows in it.
    pub rows: u64,
    /// Size.
    pub bytes: u64,
    /// sha256, hex.
    pub sha256: String,
    /// How it holds its rows.
    #[serde(default, skip_serializing_if = "ObjectFormat::is_avro")]
    pub format: ObjectFormat,
    /// The table's columns and key, for a [`ObjectFormat::PgCopyText`] object (an Avro
    /// object's header has them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<TableSchema>,
}

/// A complete snapshot's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Format version.
    pub format: u32,
    /// The source.
    pub source: String,
    /// The snapshot's id (its directory).
    pub id: String,
    /// The copy holds every transaction at or before this position, and no later one:
    /// the archived events after it follow it.
    pub position: Position,
    /// The source server's time when the copy became consistent: every copied
    /// transaction committed before it (microseconds since the Unix epoch).
    pub consistent_at_micros: i64,
    /// When the copy finished (RFC 3339).
    pub finished_at: String,
    /// Rows copied.
    pub rows: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// The objects, in copy order.
    pub objects: Vec<SnapshotObject>,
}

impl<'a> From<&'a SnapshotObject> for Expected<'a> {
    fn from(o: &'a SnapshotObject) -> Self {
        Expected {
            name: &o.name,
            bytes: o.bytes,
            sha256: &o.sha256,
            events: o.rows,
        }
    }
}

/// Name of snapshot `id`'s manifest.
pub fn snapshot_manifest_name(source: &str, id: &str) -> String {
    format!("snapshots/{source}/{id}/manifest.json")
}

/// The object being filled.
struct Open {
    table: TableId,
    schema_version: u32,
    /// Avro: the envelope schema; COPY text: empty.
    value_text: String,
    /// COPY text: the table's schema.
    copy: Option<TableSchema>,
    sync: ocf::Sync,
    /// Compressed blocks (Avro) or zstd frames (COPY text).
    blocks: Vec<u8>,
    /// Datums (Avro) or lines (COPY text) not compressed yet.
    datums: Vec<u8>,
    /// The block being compressed.
    compressing: Option<tokio::task::JoinHandle<Result<Vec<u8>, String>>>,
    count: u64,
    rows: u64,
}

impl Open {
    /// An empty object of table version `table`, `schema_version`, with that envelope
    /// schema (Avro), or of COPY text of `copy`.
    fn new(
        table: &TableId,
        schema_version: u32,
        value_text: &str,
        copy: Option<&TableSchema>,
    ) -> Self {
        Open {
            table: table.clone(),
            schema_version,
            value_text: value_text.to_string(),
            copy: copy.cloned(),
            sync: ocf::new_sync(),
            blocks: Vec::new(),
            datums: Vec::new(),
            compressing: None,
            count: 0,
            rows: 0,
        }
    }

    /// An empty object going on with the same table.
    fn next(&self) -> Self {
        Open::new(
            &self.table,
            self.schema_version,
            &self.value_text,
            self.copy.as_ref(),
        )
    }
}

/// Writes one snapshot (see the module documentation).
pub struct SnapshotWriter {
    store: Store,
    source: String,
    id: String,
    level: i32,
    object_bytes: usize,
    open: Option<Open>,
    objects: Vec<SnapshotObject>,
    rows: u64,
    started: Instant,
    reported: Instant,
}

impl SnapshotWriter {
    /// A snapshot of `source` into `store`, zstd at `level`, objects of about
    /// `object_bytes`.
    pub fn new(store: Store, source: &str, level: i32, object_bytes: usize) -> Self {
        SnapshotWriter {
            store,
            source: source.to_string(),
            id: chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string(),
            level,
            object_bytes: object_bytes.max(BLOCK_BYTES),
            open: None,
            objects: Vec::new(),
            rows: 0,
            started: Instant::now(),
            reported: Instant::now(),
        }
    }

    /// The snapshot's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Takes one row of the copy.
    pub async fn row(
        &mut self,
        schemas: &AvroSchemas,
        event: &ChangeEvent,
    ) -> Result<(), BackupError> {
        let same = self.open.as_ref().is_some_and(|o| {
            o.copy.is_none() && o.table == schemas.table.table && o.value_text == schemas.value_text
        });
        if !same {
            self.put_open().await?;
            self.open = Some(Open::new(
                &schemas.table.table,
                schemas.table.version,
                &schemas.value_text,
                None,
            ));
        }
        let framed = encode_value(schemas, event)?;
        let open = self.open.as_mut().expect("opened above");
        open.datums.extend_from_slice(&framed[5..]);
        open.count += 1;
        self.added(1).await
    }

    /// Takes whole lines of `table`'s COPY text output (see [`ObjectFormat::PgCopyText`]),
    /// `rows` of them.
    pub async fn copy_text(
        &mut self,
        table: &TableSchema,
        lines: &[u8],
        rows: u64,
    ) -> Result<(), BackupError> {
        let same = self
            .open
            .as_ref()
            .is_some_and(|o| o.copy.as_ref() == Some(table));
        if !same {
            self.put_open().await?;
            self.open = Some(Open::new(&table.table, table.version, "", Some(table)));
        }
        let open = self.open.as_mut().expect("opened above");
        open.datums.extend_from_slice(lines);
        open.count += rows;
        self.added(rows).await
    }

    /// After `rows` rows went into the open object: compresses a full block, starts a new
    /// object when this one is full, and reports progress now and then.
    async fn added(&mut self, rows: u64) -> Result<(), BackupError> {
        let open = self.open.as_mut().expect("an object is open");
        open.rows += rows;
        self.rows += rows;
        if open.datums.len() >= BLOCK_BYTES {
            self.compress(false).await?;
            if self
                .open
                .as_ref()
                .is_some_and(|o| o.blocks.len() >= self.object_bytes)
            {
                // The table goes on in a new object.
                let next = self.open.as_ref().expect("checked").next();
                self.put_open().await?;
                self.open = Some(next);
            }
        }
        if self.reported.elapsed().as_secs() >= 10 {
            self.reported = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            tracing::info!(
                source = self.source,
                snapshot = self.id,
                rows = self.rows,
                rows_per_s = (self.rows as f64 / secs) as u64,
                table = %self.open.as_ref().map(|o| o.table.to_string()).unwrap_or_default(),
                "snapshot progress"
            );
        }
        Ok(())
    }

    /// Compresses the open object's pending datums on a blocking thread while rows go on
    /// coming (at most one block in flight: the previous one is appended first); `last`:
    /// waits for it too.
    async fn compress(&mut self, last: bool) -> Result<(), BackupError> {
        let Some(o) = self.open.as_mut() else {
            return Ok(());
        };
        if let Some(task) = o.compressing.take() {
            let block = task.await.map_err(|e| e.to_string()).and_then(|r| r);
            o.blocks
                .extend_from_slice(&block.map_err(|message| BackupError::Spool {
                    path: format!("snapshot {}", self.id),
                    message,
                })?);
        }
        if !o.datums.is_empty() {
            let datums = std::mem::take(&mut o.datums);
            let (count, level, sync, copy) = (o.count, self.level, o.sync, o.copy.is_some());
            o.count = 0;
            o.compressing = Some(tokio::task::spawn_blocking(move || {
                if copy {
                    zstd::bulk::compress(&datums, level).map_err(|e| e.to_string())
                } else {
                    ocf::block(&datums, count, level, &sync).map_err(|e| e.to_string())
                }
            }));
        }
        if last {
            Box::pin(self.compress(false)).await?;
        }
        Ok(())
    }

    async fn put_open(&mut self) -> Result<(), BackupError> {
        self.compress(true).await?;
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        if o.rows == 0 {
            return Ok(());
        }
        let (object, format, extension) = match o.copy {
            Some(_) => (
                self.store.seal(o.blocks)?,
                ObjectFormat::PgCopyText,
                "copy.zst",
            ),
            None => (
                stored_container(
                    &self.store,
                    &self.source,
                    (&o.table, o.schema_version, &o.value_text),
                    ("tributary.snapshot", self.id.clone()),
                    &o.sync,
                    &o.blocks,
                )?,
                ObjectFormat::Avro,
                "avro",
            ),
        };
        let name = format!(
            "snapshots/{}/{}/{:05}-{}.{}.{extension}",
            self.source,
            self.id,
            self.objects.len(),
            safe(&o.table.schema),
            safe(&o.table.name)
        );
        self.objects.push(SnapshotObject {
            name: name.clone(),
            table: o.table,
            schema_version: o.schema_version,
            rows: o.rows,
            bytes: object.len() as u64,
            sha256: sha256_hex(&object),
            format,
            columns: o.copy,
        });
        self.store.put(&name, object.into()).await
    }

    /// Stores what is left and the manifest: the copy holds every transaction up to
    /// `position`, and became consistent at `consistent_at_micros` (server time).
    pub async fn finish(
        mut self,
        position: Position,
        consistent_at_micros: i64,
    ) -> Result<SnapshotManifest, BackupError> {
        self.put_open().await?;
        let mut tables: BTreeMap<String, u64> = BTreeMap::new();
        for o in &self.objects {
            *tables.entry(o.table.to_string()).or_default() += o.rows;
        }
        let manifest = SnapshotManifest {
            format: 1,
            source: self.source.clone(),
            id: self.id.clone(),
            position,
            consistent_at_micros,
            finished_at: chrono::Utc::now().to_rfc3339(),
            rows: self.rows,
            bytes: self.objects.iter().map(|o| o.bytes).sum(),
            tables,
            objects: self.objects,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Spool {
            path: format!("snapshot {}", self.id),
            message: e.to_string(),
        })?;
        self.store
            .put(
                &snapshot_manifest_name(&self.source, &self.id),
                bytes.into(),
            )
            .await?;
        tracing::info!(
            source = self.source,
            snapshot = self.id,
            rows = manifest.rows,
            bytes = manifest.bytes,
            elapsed_s = self.started.elapsed().as_secs_f64(),
            "snapshot stored"
        );
        Ok(manifest)
    }
}

/// The complete snapshots of `source` (those with a manifest), oldest first.
pub async fn list_snapshots(
    store: &Store,
    source: &str,
) -> Result<Vec<SnapshotManifest>, BackupError> {
    let mut out: Vec<SnapshotManifest> = manifests_under(
        store,
        &format!("snapshots/{source}/"),
        "a snapshot manifest",
    )
    .await?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Every `<id>/manifest.json` under `prefix` (`what` it is, for messages), in name order.
pub(crate) async fn manifests_under<T: serde::de::DeserializeOwned>(
    store: &Store,
    prefix: &str,
    what: &str,
) -> Result<Vec<T>, BackupError> {
    let mut out = Vec::new();
    for (name, _) in store.list(prefix).await? {
        if name.ends_with("/manifest.json") {
            out.extend(store.get_json::<T>(&name, what).await?);
        }
    }
    Ok(out)
}

/// Decompressed bytes of a [`ObjectFormat::PgCopyText`] object per block.
const COPY_BLOCK_BYTES: usize = 1 << 20;

/// A snapshot object read whole, its size and sha256 checked, and decrypted; its rows
/// come one block at a time ([`SnapshotObjectRows::blocks`]).
pub(crate) struct SnapshotObjectRows<'a> {
    snap: &'a SnapshotManifest,
    object: &'a SnapshotObject,
    store: &'a Store,
    data: ObjectData,
}

enum ObjectData {
    Avro(Box<CheckedObject>),
    Copy(Vec<u8>, TableSchema),
}

/// Reads `object` of snapshot `snap` (see [`SnapshotObjectRows`]).
pub(crate) async fn read_snapshot_object<'a>(
    store: &'a Store,
    snap: &'a SnapshotManifest,
    object: &'a SnapshotObject,
) -> Result<SnapshotObjectRows<'a>, BackupError> {
    let data = match object.format {
        ObjectFormat::Avro => ObjectData::Avro(Box::new(
            read_checked(store, &snap.source, object.into()).await?,
        )),
        ObjectFormat::PgCopyText => {
            let columns = object.columns.clone().ok_or_else(|| {
                corrupt(
                    store,
                    &snapshot_manifest_name(&snap.source, &snap.id),
                    format!("lists COPY text object {} without its columns", object.name),
                )
            })?;
            let bytes = read_stored(store, &object.name, object.bytes, &object.sha256).await?;
            ObjectData::Copy(bytes, columns)
        }
    };
    Ok(SnapshotObjectRows {
        snap,
        object,
        store,
        data,
    })
}

/// One block of a snapshot object's rows.
pub(crate) enum RowBlock {
    /// Decoded events.
    Events(Vec<ChangeEvent>),
    /// Whole lines of COPY text, and how many.
    CopyText(Vec<u8>, u64),
}

/// The blocks of an object, the last item checking the total against the manifest.
pub(crate) type RowBlocks<'a> = Box<dyn Iterator<Item = Result<RowBlock, BackupError>> + 'a>;

impl SnapshotObjectRows<'_> {
    /// The table version of its rows.
    pub fn table(&self) -> &TableSchema {
        match &self.data {
            ObjectData::Avro(checked) => checked.table(),
            ObjectData::Copy(_, table) => table,
        }
    }

    /// Its rows, one block at a time, as they are stored: events, or COPY text (not
    /// parsed; [`SnapshotObjectRows::decode`] parses it).
    pub fn blocks(&self) -> Result<RowBlocks<'_>, BackupError> {
        match &self.data {
            ObjectData::Avro(checked) => {
                Ok(Box::new(checked.blocks()?.map(|b| b.map(RowBlock::Events))))
            }
            ObjectData::Copy(bytes, _) => {
                let frames = zstd::stream::read::Decoder::with_buffer(bytes.as_slice())
                    .map_err(|e| self.bad(format!("zstd: {e}")))?;
                Ok(Box::new(CopyBlocks {
                    rows: self,
                    reader: frames,
                    carry: Vec::new(),
                    total: 0,
                    done: false,
                }))
            }
        }
    }

    /// The events of `block`; `decoder` parses COPY text (which is an error without one).
    /// Row numbers in messages count from the object's first row, `first_row`.
    pub fn decode(
        &self,
        block: RowBlock,
        decoder: Option<CopyDecoder>,
        first_row: u64,
    ) -> Result<Vec<ChangeEvent>, BackupError> {
        let lines = match block {
            RowBlock::Events(events) => return Ok(events),
            RowBlock::CopyText(lines, _) => lines,
        };
        let decoder = decoder.ok_or_else(|| {
            BackupError::Config(format!(
                "object {} holds PostgreSQL COPY text, and this reader has no PostgreSQL decoder",
                self.object.name
            ))
        })?;
        let table = self.table();
        let snap = self.snap;
        let mut events = Vec::new();
        for (n, line) in lines
            .strip_suffix(b"\n")
            .unwrap_or(&lines)
            .split(|&b| b == b'\n')
            .enumerate()
        {
            let row = decoder(table, line)
                .map_err(|e| self.bad(format!("row {}: {e}", first_row + n as u64 + 1)))?;
            events.push(ChangeEvent {
                source: snap.source.clone(),
                table: table.table.clone(),
                schema_version: table.version,
                op: Op::Read,
                key: table
                    .primary_key
                    .iter()
                    .map(|&i| row.0.get(i).cloned().unwrap_or(Value::Null))
                    .collect(),
                before: None,
                after: Some(row),
                position: snap.position,
                tx: TxMeta {
                    id: None,
                    commit_ts_micros: snap.consistent_at_micros,
                    first: snap.position,
                },
                origin: None,
            });
        }
        Ok(events)
    }

    fn bad(&self, message: impl Into<String>) -> BackupError {
        corrupt(self.store, &self.object.name, message)
    }
}

/// The blocks of a COPY text object: about [`COPY_BLOCK_BYTES`] of whole lines each.
struct CopyBlocks<'r, 'a> {
    rows: &'r SnapshotObjectRows<'a>,
    reader: zstd::stream::read::Decoder<'r, &'r [u8]>,
    /// The start of a line the last read cut.
    carry: Vec<u8>,
    total: u64,
    done: bool,
}

impl CopyBlocks<'_, '_> {
    fn step(&mut self) -> Result<Option<RowBlock>, BackupError> {
        use std::io::Read;
        let mut block = std::mem::take(&mut self.carry);
        let start = block.len();
        block.resize(start + COPY_BLOCK_BYTES, 0);
        let mut filled = start;
        while filled < block.len() {
            let n = self
                .reader
                .read(&mut block[filled..])
                .map_err(|e| self.rows.bad(format!("zstd: {e}")))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        block.truncate(filled);
        if block.is_empty() {
            let expected = self.rows.object.rows;
            if self.total != expected {
                return Err(self.rows.bad(format!(
                    "holds {} rows but the manifest says {expected}",
                    self.total
                )));
            }
            return Ok(None);
        }
        let end = match block.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if filled < start + COPY_BLOCK_BYTES => {
                return Err(self.rows.bad("ends inside a line"))
            }
            // One line longer than a block: read on.
            None => {
                self.carry = block;
                return self.step();
            }
        };
        self.carry = block.split_off(end);
        let rows = block.iter().filter(|&&b| b == b'\n').count() as u64;
        self.total += rows;
        Ok(Some(RowBlock::CopyText(block, rows)))
    }
}

impl Iterator for CopyBlocks<'_, '_> {
    type Item = Result<RowBlock, BackupError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let out = self.step().transpose();
        self.done = !matches!(out, Some(Ok(_)));
        out
    }
}
