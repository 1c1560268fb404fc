//! MySQL/MariaDB capture from the binary log (ROW format).
//!
//! Start-up checks the server (`log_bin`, `binlog_format = ROW`, `binlog_row_image = FULL`,
//! the rights to read binlog coordinates) and loads the captured tables from
//! `information_schema`; every one needs a primary key. The initial snapshot reads every
//! table inside one `START TRANSACTION WITH CONSISTENT SNAPSHOT`; MariaDB reports the
//! binlog position that snapshot is consistent with (`binlog_snapshot_file/position`)
//! without any lock, MySQL gets it under a brief `FLUSH TABLES WITH READ LOCK`. Rows are
//! published as `Read` events at that position, then the binlog is streamed from it, so
//! there is no gap and no overlap at the hand-off.
//!
//! Streaming registers as a replica (`server_id`) and decodes TABLE_MAP and ROWS events
//! (v1 and v2) into change events; a transaction runs from its GTID (or `BEGIN`) event to
//! its XID (or `COMMIT`) event. The checkpoint (binlog file and offset of the next
//! transaction, and the GTID before it) is stored locally only once the transport holds
//! everything before it, so a crash resends rather than loses; sinks skip what they
//! already applied by position. Transactions touching no captured table move the
//! checkpoint too, and the server's heartbeats keep an idle connection checked.
//!
//! Table shapes come from `information_schema` when a table is first met and again after
//! any DDL statement in the binlog; a rows event whose column count disagrees with the
//! known shape is an error naming the table, and so are rows of a captured table that is
//! no longer in the catalog (dropped or renamed since), and, on servers with
//! `binlog_row_metadata = FULL`, rows whose column names differ from the known shape. Known gap: a restart far behind
//! several DDL changes of one table decodes with the current shape, not a stored history.

pub mod catalog;
pub mod config;
pub mod types;

pub use config::{MySqlSourceConfig, ResumeFrom};

use crate::error::CaptureError;
use crate::publisher::Publisher;
use crate::state::{BinlogCheckpoint, SnapshotState, StateStore};
use catalog::{connect, load_tables, preflight, quote_ident, MyTable};
use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::BinlogStreamRequest;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::watch;
use tributary_schemas::{ChangeEvent, Op, Position, Row, TableId, TxMeta, Value};

/// MariaDB's GTID event (starts every transaction).
const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB GTID flag: a statement with no BEGIN/COMMIT around it (DDL).
const FL_STANDALONE: u8 = 1;

/// The transaction being streamed.
struct OpenTx {
    offset: u64,
    file_seq: u32,
    commit_ts_micros: i64,
    seq: u64,
    id: Option<u64>,
}

impl OpenTx {
    /// A transaction whose first event ends at `offset` of binlog file `file_seq`.
    fn new(file_seq: u32, offset: u64, commit_ts_micros: i64, id: Option<u64>) -> Self {
        OpenTx {
            offset,
            file_seq,
            commit_ts_micros,
            seq: 0,
            id,
        }
    }
}

/// Captures one MySQL or MariaDB server.
pub struct MySqlCapture {
    source: String,
    config: MySqlSourceConfig,
    store: StateStore,
    publisher: Publisher,
}

impl MySqlCapture {
    /// An agent for source `source`.
    pub fn new(
        source: &str,
        config: MySqlSourceConfig,
        store: StateStore,
        publisher: Publisher,
    ) -> Self {
        MySqlCapture {
            source: source.to_string(),
            config,
            store,
            publisher,
        }
    }

    /// Runs until `shutdown` turns true or an error occurs.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), CaptureError> {
        let source = self.source.clone();
        let mut conn = connect(&self.config.url).await?;
        preflight(&mut conn).await?;
        let mut tables = load_tables(&mut conn, &self.config, &self.store, &source, None).await?;
        let checkpoint = match (
            self.store.snapshot(&source)?,
            self.store.binlog_checkpoint(&source)?,
        ) {
            (Some(SnapshotState::Done { .. }), Some(cp)) => {
                tracing::info!(
                    source,
                    file = cp.file,
                    pos = cp.pos,
                    "resuming from the binlog checkpoint"
                );
                cp
            }
            (state, _) => {
                let restart = state.is_some();
                self.store
                    .set_snapshot(&source, &SnapshotState::InProgress)?;
                let cp = self.snapshot(&tables, restart).await?;
                self.store.set_binlog_checkpoint(&source, &cp)?;
                self.store
                    .set_snapshot(&source, &SnapshotState::Done { lsn: 0 })?;
                tracing::info!(
                    source,
                    file = cp.file,
                    pos = cp.pos,
                    "snapshot finished; streaming the binlog"
                );
                cp
            }
        };
        drop(conn);
        self.stream(checkpoint, &mut tables, &mut shutdown).await
    }

    /// Copies every table inside a consistent snapshot; returns the binlog position it is
    /// consistent with.
    async fn snapshot(
        &mut self,
        tables: &BTreeMap<TableId, MyTable>,
        restart: bool,
    ) -> Result<BinlogCheckpoint, CaptureError> {
        let mut conn = connect(&self.config.url).await?;
        let q = |what: &'static str| move |e| CaptureError::mysql(what, e);
        conn.query_drop("SET NAMES utf8mb4")
            .await
            .map_err(q("preparing the snapshot session"))?;
        conn.query_drop("SET SESSION time_zone = '+00:00'")
            .await
            .map_err(q("preparing the snapshot session"))?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(q("preparing the snapshot session"))?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(q("starting the snapshot transaction"))?;
        // MariaDB: the binlog position of this very snapshot, no lock needed.
        let status: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(q("reading the snapshot's binlog position"))?;
        let get = |name: &str| {
            status
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let (file, pos) = match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
            (Some(f), Some(p)) if !f.is_empty() => (f, p.parse::<u64>().unwrap_or(4)),
            _ => {
                // MySQL: hold a global read lock just long enough to pair a fresh
                // snapshot with the binlog position.
                conn.query_drop("ROLLBACK")
                    .await
                    .map_err(q("restarting the snapshot"))?;
                conn.query_drop("FLUSH TABLES WITH READ LOCK")
                    .await
                    .map_err(q("taking the snapshot lock (needs RELOAD)"))?;
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    .await
                    .map_err(q("starting the snapshot transaction"))?;
                let row: Option<mysql_async::Row> = conn
                    .query_first("SHOW MASTER STATUS")
                    .await
                    .map_err(q("reading the binlog position"))?;
                conn.query_drop("UNLOCK TABLES")
                    .await
                    .map_err(q("releasing the snapshot lock"))?;
                let mut row = row.ok_or_else(|| {
                    CaptureError::Setup(
                        "SHOW MASTER STATUS returned nothing: is log_bin on?".into(),
                    )
                })?;
                let file: String = row.take(0).unwrap_or_default();
                let pos: u64 = row.take(1).unwrap_or(4);
                (file, pos)
            }
        };
        let file_seq = file_seq(&file)?;
        tracing::info!(
            source = self.source,
            file,
            pos,
            tables = tables.len(),
            "snapshot consistent with binlog position"
        );
        let commit_ts_micros = now_micros();
        let mut seq = 0u64;
        let mut first: Option<Position> = None;
        let mut in_chunk = 0usize;
        let mut last_mark = 0;
        let chunk_rows = self.config.snapshot_chunk_rows;
        let source = self.source.clone();
        let mut make = |table: &MyTable, op: Op, key: Vec<Value>, row: Option<Row>| {
            seq += 1;
            let position = Position::mysql(file_seq, pos, seq);
            let first = *first.get_or_insert(position);
            ChangeEvent {
                source: source.clone(),
                table: table.state.schema.table.clone(),
                schema_version: table.state.schema.version,
                op,
                key,
                before: None,
                after: row,
                position,
                tx: TxMeta {
                    id: None,
                    commit_ts_micros,
                    first,
                },
                origin: None,
            }
        };
        if restart {
            tracing::warn!(
                source = self.source,
                "previous snapshot was interrupted; truncating sink tables before copying again"
            );
            for table in tables.values() {
                let event = make(table, Op::Truncate, Vec::new(), None);
                self.publisher.event(&table.state.avro, &event).await?;
            }
        }
        for (id, table) in tables {
            let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let sql = format!(
                "SELECT {} FROM {}.{}",
                cols.join(", "),
                quote_ident(&id.schema),
                quote_ident(&id.name)
            );
            let mut result = conn
                .query_iter(sql)
                .await
                .map_err(|e| CaptureError::mysql(format!("reading table {id}"), e))?;
            let mut stream = result
                .stream::<mysql_async::Row>()
                .await
                .map_err(|e| CaptureError::mysql(format!("reading table {id}"), e))?
                .ok_or_else(|| {
                    CaptureError::Decode(format!("reading table {id}: no result set"))
                })?;
            while let Some(row) = stream.next().await {
                let row = row.map_err(|e| CaptureError::mysql(format!("reading table {id}"), e))?;
                let values = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let raw = match row.as_ref(i) {
                            Some(mysql_async::Value::Bytes(b)) => Some(b.as_slice()),
                            _ => None,
                        };
                        types::from_text(c, raw)
                            .map_err(|m| types::value_error(&id.to_string(), c, m))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let row = Row(values);
                let key = key_of(table, &row);
                let event = make(table, Op::Read, key, Some(row));
                self.publisher.event(&table.state.avro, &event).await?;
                in_chunk += 1;
                if in_chunk >= chunk_rows {
                    last_mark = self.publisher.commit(None).await?;
                    in_chunk = 0;
                }
            }
        }
        if self.publisher.in_transaction() {
            last_mark = self.publisher.commit(None).await?;
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(q("ending the snapshot transaction"))?;
        self.publisher.wait_for(last_mark).await?;
        // MariaDB: the GTID state at that position, so the stream can resume by GTID too.
        let gtid: Option<String> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), pos))
            .await
            .ok()
            .flatten()
            .filter(|g: &String| !g.is_empty());
        Ok(BinlogCheckpoint { file, pos, gtid })
    }

    async fn stream(
        &mut self,
        checkpoint: BinlogCheckpoint,
        tables: &mut BTreeMap<TableId, MyTable>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), CaptureError> {
        let source = self.source.clone();
        let mut conn = connect(&self.config.url).await?;
        let heartbeat_ns = self.config.heartbeat_secs.max(1) * 1_000_000_000;
        conn.query_drop(format!(
            "SET @master_heartbeat_period = {heartbeat_ns}, @mariadb_slave_capability = 4"
        ))
        .await
        .map_err(|e| CaptureError::mysql("preparing the binlog session", e))?;
        let server_id = self.config.server_id_for(&source);
        let by_gtid = self.config.resume_from == ResumeFrom::Gtid;
        let request = match (&checkpoint.gtid, by_gtid) {
            (Some(state), true) => {
                // MariaDB: the server finds where the transaction after `state` starts,
                // in whatever file it now lives (after a failover or a binlog reset too).
                tracing::info!(source, gtid = state, "resuming from the GTID state");
                conn.exec_drop("SET @slave_connect_state = ?", (state.clone(),))
                    .await
                    .map_err(|e| CaptureError::mysql("setting the GTID to resume from", e))?;
                BinlogStreamRequest::new(server_id)
            }
            (None, true) => {
                return Err(CaptureError::Setup(format!(
                    "sources.{source}.resume_from = \"gtid\", but the checkpoint has no GTID \
                     (the server has no GTIDs in its binlog); use resume_from = \"position\""
                )))
            }
            _ => BinlogStreamRequest::new(server_id)
                .with_filename(checkpoint.file.as_bytes())
                .with_pos(checkpoint.pos),
        };
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| CaptureError::mysql("requesting the binlog stream", e))?;

        let mut file = checkpoint.file.clone();
        let mut file_n = file_seq(&file)?;
        // The last GTID per replication domain, as MariaDB's `@slave_connect_state` takes it.
        let mut gtids = GtidState::parse(checkpoint.gtid.as_deref().unwrap_or(""));
        let mut gtid = checkpoint.gtid.clone();
        let mut open: Option<OpenTx> = None;
        // Table id (of TABLE_MAP events) → captured table, or None when not captured.
        let mut table_ids: HashMap<u64, Option<TableId>> = HashMap::new();
        let mut acked = self.publisher.acked();
        let mut pending: VecDeque<(u64, BinlogCheckpoint)> = VecDeque::new();
        let mut next_token = 1u64;
        // With heartbeats every `heartbeat_secs`, silence for three periods means the
        // connection is gone.
        let silence = Duration::from_secs(self.config.heartbeat_secs.max(1) * 3 + 5);
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => {
                    tracing::info!(source, "capture stopping");
                    return Ok(());
                }
                changed = acked.changed() => {
                    if changed.is_err() {
                        return Err(CaptureError::Replication("publisher stopped".into()));
                    }
                    let a = acked.borrow_and_update().clone();
                    if let Some(message) = a.failed {
                        return Err(CaptureError::Replication(format!("publishing failed: {message}")));
                    }
                    if let Some(token) = a.token {
                        let mut durable = None;
                        while pending.front().is_some_and(|(t, _)| *t <= token) {
                            durable = pending.pop_front().map(|(_, cp)| cp);
                        }
                        if let Some(cp) = durable {
                            self.store.set_binlog_checkpoint(&source, &cp)?;
                        }
                    }
                    continue;
                }
                event = tokio::time::timeout(silence, stream.next()) => match event {
                    Err(_) => return Err(CaptureError::Replication(format!(
                        "no binlog event or heartbeat for {}s; reconnecting", silence.as_secs()
                    ))),
                    Ok(None) => return Err(CaptureError::Replication("the server ended the binlog stream".into())),
                    Ok(Some(Err(e))) => return Err(CaptureError::mysql("reading the binlog", e)),
                    Ok(Some(Ok(event))) => event,
                },
            };
            let header = event.header();
            let next_pos = u64::from(header.log_pos());
            let ts_micros = i64::from(header.timestamp()) * 1_000_000;
            if header.event_type_raw() == MARIADB_GTID_EVENT {
                let (seq_no, domain, flags) = mariadb_gtid(event.data())?;
                gtids.set(domain, header.server_id(), seq_no);
                gtid = Some(gtids.to_string());
                if flags & FL_STANDALONE == 0 {
                    open = Some(OpenTx::new(file_n, next_pos, ts_micros, Some(seq_no)));
                }
                continue;
            }
            let data = event.read_data().map_err(|e| {
                CaptureError::Decode(format!("binlog event at {file}:{next_pos}: {e}"))
            })?;
            match data {
                Some(EventData::RotateEvent(r)) => {
                    file = rotate_target(r.name_raw())?;
                    file_n = file_seq(&file)?;
                    tracing::debug!(source, file, "binlog rotated");
                }
                Some(EventData::GtidEvent(_)) | Some(EventData::AnonymousGtidEvent(_)) => {
                    open = Some(OpenTx::new(file_n, next_pos, ts_micros, None));
                }
                Some(EventData::QueryEvent(q)) => {
                    let sql = q.query();
                    let trimmed = sql.trim();
                    if trimmed.eq_ignore_ascii_case("BEGIN") {
                        if open.is_none() {
                            open = Some(OpenTx::new(file_n, next_pos, ts_micros, None));
                        }
                    } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                        open = None;
                        self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                            .await?;
                    } else {
                        // DDL (or a statement-logged change, which ROW format only writes
                        // for DDL): shapes are reloaded when next met.
                        tracing::info!(source, schema = %q.schema(), statement = %truncate(trimmed, 200), "DDL in the binlog");
                        table_ids.clear();
                        tables.clear();
                        if open.is_none() {
                            self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                                .await?;
                        }
                    }
                }
                Some(EventData::XidEvent(_)) => {
                    open = None;
                    self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                        .await?;
                }
                Some(EventData::TableMapEvent(tme)) => {
                    let id = TableId::new(tme.database_name(), tme.table_name());
                    let captured = self.config.captures(&id.schema, &id.name);
                    if captured && !tables.contains_key(&id) {
                        let mut conn = connect(&self.config.url).await?;
                        let loaded =
                            load_tables(&mut conn, &self.config, &self.store, &source, Some(&id))
                                .await?;
                        if !loaded.contains_key(&id) {
                            // Its rows cannot be decoded without its shape; skipping them
                            // would lose them silently.
                            return Err(CaptureError::Setup(format!(
                                "table {id} has rows in the binlog at {file}:{next_pos} but is no longer in the \
                                 catalog (dropped or renamed since); its shape at that position is unknown. \
                                 To go on without those rows, add exclude = [\"{id}\"] to the source"
                            )));
                        }
                        tables.extend(loaded);
                    }
                    let known = captured && tables.contains_key(&id);
                    if known {
                        let t = &tables[&id];
                        if tme.columns_count() as usize != t.columns.len() {
                            return Err(CaptureError::Decode(format!(
                                "table {id}: the binlog row has {} columns, the table has {} now; \
                                 its shape changed since this binlog position (take a new snapshot: remove this source's state)",
                                tme.columns_count(),
                                t.columns.len()
                            )));
                        }
                        if let Some(names) = binlog_column_names(&tme) {
                            let same = names.len() == t.columns.len()
                                && names
                                    .iter()
                                    .zip(&t.columns)
                                    .all(|(n, c)| n.eq_ignore_ascii_case(&c.name));
                            if !same {
                                let now: Vec<&str> =
                                    t.columns.iter().map(|c| c.name.as_str()).collect();
                                return Err(CaptureError::Decode(format!(
                                    "table {id}: the binlog row at {file}:{next_pos} has the columns ({}), the table has ({}) now; \
                                     its shape changed since this binlog position (take a new snapshot: remove this source's state)",
                                    names.join(", "),
                                    now.join(", ")
                                )));
                            }
                        }
                    }
                    table_ids.insert(tme.table_id(), known.then_some(id));
                }
                Some(EventData::RowsEvent(rows)) => {
                    let Some(Some(id)) = table_ids.get(&rows.table_id()) else {
                        continue;
                    };
                    let table = &tables[id];
                    let tx = open.as_mut().ok_or_else(|| {
                        CaptureError::Decode(format!(
                            "rows event for {id} outside a transaction at {file}:{next_pos}"
                        ))
                    })?;
                    let tme = stream.get_tme(rows.table_id()).ok_or_else(|| {
                        CaptureError::Decode(format!("rows event for {id} without its TABLE_MAP"))
                    })?;
                    let op = match &rows {
                        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
                        RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => Op::Update,
                        RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
                        RowsEventData::PartialUpdateRowsEvent(_) => {
                            return Err(CaptureError::Setup(
                                "partial JSON updates in the binlog: set binlog_row_value_options = '' on the server".into(),
                            ))
                        }
                    };
                    // One rows event is small (binlog_row_event_max_size), so decoding it
                    // whole is bounded. mysql_common 0.37 panics (overflow) on a negative
                    // TIME(1)/TIME(2) value with a fraction; that becomes an error naming
                    // the table instead of a crash (release builds keep overflow checks for
                    // mysql_common, so it never turns into a wrong value).
                    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        rows.rows(tme).collect::<Vec<_>>()
                    }))
                    .map_err(|_| {
                        CaptureError::Decode(format!(
                            "rows event for {id} at {file}:{next_pos} cannot be decoded by mysql_common \
                             (a negative TIME(1) or TIME(2) value with a fraction is a known cause)"
                        ))
                    })?;
                    let mut events = Vec::new();
                    for pair in decoded {
                        let (before, after) = pair.map_err(|e| {
                            CaptureError::Decode(format!(
                                "rows event for {id} at {file}:{next_pos}: {e}"
                            ))
                        })?;
                        let before = before.map(|r| binlog_row(table, id, r)).transpose()?;
                        let after = after.map(|r| binlog_row(table, id, r)).transpose()?;
                        let key = match (&after, &before) {
                            (Some(a), _) => key_of(table, a),
                            (None, Some(b)) => key_of(table, b),
                            (None, None) => continue,
                        };
                        tx.seq += 1;
                        events.push(ChangeEvent {
                            source: source.clone(),
                            table: id.clone(),
                            schema_version: table.state.schema.version,
                            op,
                            key,
                            before,
                            after,
                            position: Position::mysql(tx.file_seq, tx.offset, tx.seq),
                            tx: TxMeta {
                                id: tx.id,
                                commit_ts_micros: tx.commit_ts_micros,
                                first: Position::mysql(tx.file_seq, tx.offset, 1),
                            },
                            origin: None,
                        });
                    }
                    for e in &events {
                        self.publisher.event(&table.state.avro, e).await?;
                    }
                }
                Some(EventData::HeartbeatEvent) => {}
                _ => {}
            }
        }
    }

    /// Closes the transaction and queues the checkpoint after it.
    async fn commit(
        &mut self,
        pending: &mut VecDeque<(u64, BinlogCheckpoint)>,
        next_token: &mut u64,
        file: &str,
        pos: u64,
        gtid: &Option<String>,
    ) -> Result<(), CaptureError> {
        let token = *next_token;
        *next_token += 1;
        self.publisher.commit(Some(token)).await?;
        pending.push_back((
            token,
            BinlogCheckpoint {
                file: file.to_string(),
                pos,
                gtid: gtid.clone(),
            },
        ));
        Ok(())
    }
}

/// Converts a binlog row image into a row of `table`.
fn binlog_row(table: &MyTable, id: &TableId, row: BinlogRow) -> Result<Row, CaptureError> {
    let values = row.unwrap();
    if values.len() != table.columns.len() {
        return Err(CaptureError::Decode(format!(
            "table {id}: row image has {} columns, expected {} (is binlog_row_image FULL?)",
            values.len(),
            table.columns.len()
        )));
    }
    let values = table
        .columns
        .iter()
        .zip(values.iter())
        .map(|(c, v)| {
            types::from_binlog(c, v).map_err(|m| types::value_error(&id.to_string(), c, m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Row(values))
}

fn key_of(table: &MyTable, row: &Row) -> Vec<Value> {
    table
        .state
        .schema
        .primary_key
        .iter()
        .map(|&i| row.0[i].clone())
        .collect()
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
fn mariadb_gtid(data: &[u8]) -> Result<(u64, u32, u8), CaptureError> {
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

/// The file a ROTATE event names. The first (fake) one precedes the format description,
/// so its body may still carry the 4-byte checksum.
fn rotate_target(raw: &[u8]) -> Result<String, CaptureError> {
    let name = String::from_utf8_lossy(raw).into_owned();
    if file_seq(&name).is_ok() {
        return Ok(name);
    }
    let trimmed = String::from_utf8_lossy(&raw[..raw.len().saturating_sub(4)]).into_owned();
    file_seq(&trimmed).map(|_| trimmed)
}

/// The sequence number of a binlog file name (`mysql-bin.000042` → 42).
fn file_seq(file: &str) -> Result<u32, CaptureError> {
    file.rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            CaptureError::Decode(format!("binlog file name {file:?} has no numeric suffix"))
        })
}

fn truncate(s: &str, n: usize) -> &str {
    &s[..s.floor_char_boundary(n)]
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The column names a TABLE_MAP event carries (servers with `binlog_row_metadata = FULL`).
fn binlog_column_names(
    tme: &mysql_async::binlog::events::TableMapEvent<'_>,
) -> Option<Vec<String>> {
    use mysql_async::binlog::events::OptionalMetadataField;
    tme.iter_optional_meta().find_map(|field| match field {
        Ok(OptionalMetadataField::ColumnName(names)) => names
            .iter_names()
            .map(|n| n.ok().map(|n| n.name().into_owned()))
            .collect(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_file_numbers_and_gtids() {
        assert_eq!(file_seq("mariadb-bin.000042").unwrap(), 42);
        assert!(file_seq("nonsense").is_err());
        assert_eq!(
            rotate_target(b"binlog.000001\x23\x57\x9a\x76").unwrap(),
            "binlog.000001"
        );
        assert_eq!(rotate_target(b"binlog.000002").unwrap(), "binlog.000002");
        let mut body = 7u64.to_le_bytes().to_vec();
        body.extend(3u32.to_le_bytes());
        body.push(FL_STANDALONE);
        assert_eq!(mariadb_gtid(&body).unwrap(), (7, 3, 1));
        let mut state = GtidState::parse("0-1-5, 2-7-9");
        state.set(0, 1, 6);
        state.set(1, 3, 1);
        assert_eq!(state.to_string(), "0-1-6,1-3-1,2-7-9");
    }
}
