//! Snapshots: a copy of a source's tables consistent with one source position, stored
//! beside the archive so a restore starts from the newest snapshot before its target and
//! replays only the archived events after it.
//!
//! A [`SnapshotWriter`] takes the copy's rows (as `Read` events, table after table) and
//! writes them as Avro object containers (zstd), one or more per table (a new object every
//! `object_bytes`, so objects stay bounded), each checksummed; the manifest, written last,
//! lists them and marks the snapshot complete.
//!
//! Store layout: `snapshots/<source>/<id>/<n>-<schema>.<table>.avro` and
//! `snapshots/<source>/<id>/manifest.json`, where `<id>` is the UTC time it was taken
//! (`20261202T020000Z`), so names sort by age.

use crate::archive::sha256_hex;
use crate::error::BackupError;
use crate::ocf;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;
use tributary_schemas::{encode_value, AvroSchemas, ChangeEvent, Position, TableId};

/// Datums compressed into one block.
const BLOCK_BYTES: usize = 1 << 20;

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

/// Name of snapshot `id`'s manifest.
pub fn snapshot_manifest_name(source: &str, id: &str) -> String {
    format!("snapshots/{source}/{id}/manifest.json")
}

/// The object being filled.
struct Open {
    table: TableId,
    schema_version: u32,
    value_text: String,
    sync: ocf::Sync,
    blocks: Vec<u8>,
    datums: Vec<u8>,
    count: u64,
    rows: u64,
}

impl Open {
    /// An empty object of table version `table`, `schema_version`, with that envelope
    /// schema.
    fn new(table: &TableId, schema_version: u32, value_text: &str) -> Self {
        Open {
            table: table.clone(),
            schema_version,
            value_text: value_text.to_string(),
            sync: ocf::new_sync(),
            blocks: Vec::new(),
            datums: Vec::new(),
            count: 0,
            rows: 0,
        }
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
        let same = self
            .open
            .as_ref()
            .is_some_and(|o| o.table == schemas.table.table && o.value_text == schemas.value_text);
        if !same {
            self.put_open().await?;
            self.open = Some(Open::new(
                &schemas.table.table,
                schemas.table.version,
                &schemas.value_text,
            ));
        }
        let framed = encode_value(schemas, event)?;
        let open = self.open.as_mut().expect("opened above");
        open.datums.extend_from_slice(&framed[5..]);
        open.count += 1;
        open.rows += 1;
        self.rows += 1;
        if open.datums.len() >= BLOCK_BYTES {
            self.compress()?;
            if self
                .open
                .as_ref()
                .is_some_and(|o| o.blocks.len() >= self.object_bytes)
            {
                // The table goes on in a new object.
                let next = {
                    let o = self.open.as_ref().expect("checked");
                    Open::new(&o.table, o.schema_version, &o.value_text)
                };
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
                table = %event.table,
                "snapshot progress"
            );
        }
        Ok(())
    }

    fn compress(&mut self) -> Result<(), BackupError> {
        let Some(o) = self.open.as_mut() else {
            return Ok(());
        };
        if o.count == 0 {
            return Ok(());
        }
        let block = ocf::block(&o.datums, o.count, self.level, &o.sync).map_err(|e| {
            BackupError::Spool {
                path: format!("snapshot {}", self.id),
                message: e.to_string(),
            }
        })?;
        o.blocks.extend_from_slice(&block);
        o.datums.clear();
        o.count = 0;
        Ok(())
    }

    async fn put_open(&mut self) -> Result<(), BackupError> {
        self.compress()?;
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        if o.rows == 0 {
            return Ok(());
        }
        let object = crate::archive::stored_container(
            &self.store,
            &self.source,
            (&o.table, o.schema_version, &o.value_text),
            ("tributary.snapshot", self.id.clone()),
            &o.sync,
            &o.blocks,
        )?;
        let name = format!(
            "snapshots/{}/{}/{:05}-{}.{}.avro",
            self.source,
            self.id,
            self.objects.len(),
            crate::archive::safe(&o.table.schema),
            crate::archive::safe(&o.table.name)
        );
        self.objects.push(SnapshotObject {
            name: name.clone(),
            table: o.table,
            schema_version: o.schema_version,
            rows: o.rows,
            bytes: object.len() as u64,
            sha256: sha256_hex(&object),
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
