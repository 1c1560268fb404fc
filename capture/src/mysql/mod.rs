//! MySQL/MariaDB capture from the binary log (ROW format).
//!
//! Start-up checks the server (`log_bin`, `binlog_format = ROW`, `binlog_row_image = FULL`,
//! the rights to read binlog coordinates) and loads the captured tables from
//! `information_schema`; every one needs a primary key. The initial snapshot copies the
//! tables in primary-key chunks from a binlog position and is resumable (see the
//! `snapshot` module); its rows are published as `Read` events at that position, then the
//! binlog is streamed from it.
//!
//! Streaming registers as a replica (`server_id`) and decodes TABLE_MAP and ROWS events
//! (v1 and v2) into change events; a transaction runs from its GTID (or `BEGIN`) event to
//! its XID (or `COMMIT`) event. A two-phase XA transaction's rows are held in the state
//! store from `XA START` to `XA PREPARE` (durable before the checkpoint passes the
//! prepare) and published as one transaction at its `XA COMMIT`, or dropped at its
//! `XA ROLLBACK`. The checkpoint (binlog file and offset of the next
//! transaction, and the GTID before it) is stored locally only once the transport holds
//! everything before it, so a crash resends rather than loses; sinks skip what they
//! already applied by position. Transactions touching no captured table move the
//! checkpoint too, and the server's heartbeats keep an idle connection checked.
//!
//! Table shapes come from `information_schema` when a table is first met and again after
//! any DDL statement in the binlog; each TABLE_MAP event is checked against that shape, and
//! where they differ the shape at that position is rebuilt from the event itself (see the
//! `binlog_shape` module). Without `binlog_row_metadata = FULL` the event has no names:
//! the one earlier shape of the table (each is kept in the state) that agrees with its
//! types is taken, and where none or several agree the capture stops with an error naming
//! the table and both shapes.

mod binlog_shape;
pub mod catalog;
mod compressed;
pub mod config;
mod rows;
mod snapshot;
mod statement;
pub mod types;
mod unread;

pub use config::{MySqlSourceConfig, ResumeFrom};
pub use snapshot::{copy_tables, read_tables, ConsistentCopy};

use crate::error::CaptureError;
use crate::publisher::{Acked, Publisher};
use crate::state::{BinlogCheckpoint, ChunkProgress, HeldRow, SnapshotState, StateStore, XaRun};
use binlog_shape::MapShape;
use catalog::{connect, load_tables, preflight, MyTable};
use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::BinlogStreamRequest;
use rows::RowLayout;
use statement::Xa;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::watch;
use tributary_schemas::{
    decode_value, encode_value, unframe, AvroSchemas, ChangeEvent, Op, Position, Row, TableId,
    TxMeta, Value,
};

/// MariaDB's GTID event (starts every transaction).
const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB GTID flag: a statement with no BEGIN/COMMIT around it (DDL).
const FL_STANDALONE: u8 = 1;
/// MariaDB GTID flag: a group commit id follows the flags.
const FL_GROUP_COMMIT_ID: u8 = 2;
/// MariaDB GTID flag: the group is an XA transaction's first phase (up to XA PREPARE);
/// its xid follows.
const FL_PREPARED_XA: u8 = 64;
/// MariaDB GTID flag: the group is an XA COMMIT or XA ROLLBACK; its xid follows.
const FL_COMPLETED_XA: u8 = 128;

/// How long a stopping capture waits for what is in flight to become durable.
const SETTLE: Duration = Duration::from_secs(10);

/// A checkpoint that becomes durable with acknowledgement token `token`.
struct Durable {
    token: u64,
    checkpoint: BinlogCheckpoint,
    /// The run of an XA transaction committed before the checkpoint, whose held rows can
    /// go once it is durable.
    release: Option<(String, XaRun)>,
}

/// The transaction being streamed.
struct OpenTx {
    offset: u64,
    file_seq: u32,
    commit_ts_micros: i64,
    seq: u64,
    id: Option<u64>,
    /// An XA transaction's xid and run: its rows are held in the state store, not
    /// published, until its XA COMMIT.
    xa: Option<(String, XaRun)>,
    /// Whether the group is a transaction (a BEGIN or XA START statement, or a MariaDB
    /// GTID event without the standalone flag) that ends with its own XID or COMMIT; a
    /// MySQL GTID event before a lone statement (DDL, TRUNCATE) opens a group that ends
    /// with that statement.
    began: bool,
    /// The writer a Tributary sink named in `tributary.echo`, written first in its
    /// transactions (`tributary/<sink>/<source>`): the events carry it as their origin.
    origin: Option<String>,
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
            xa: None,
            began: false,
            origin: None,
        }
    }
}

/// Captures one MySQL or MariaDB server.
pub struct MySqlCapture {
    source: String,
    config: MySqlSourceConfig,
    store: StateStore,
    publisher: Publisher,
    /// The server's collations, read when a shape is first rebuilt from the binlog.
    collations: Option<binlog_shape::Collations>,
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
            collations: None,
        }
    }

    /// Runs until `shutdown` turns true or an error occurs.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), CaptureError> {
        let source = self.source.clone();
        let mut conn = connect(&self.config.url).await?;
        preflight(&mut conn).await?;
        let mut tables = load_tables(&mut conn, &self.config, &self.store, &source, None).await?;
        let checkpoint = match self.store.snapshot(&source)? {
            Some(SnapshotState::Done { .. }) => self
                .store
                .binlog_checkpoint(&source)?
                .ok_or_else(|| {
                    self.store.invalid(format!(
                        "source {source}: the snapshot is done but no binlog checkpoint is stored; \
                         remove the source's state to take a new snapshot"
                    ))
                })
                .inspect(|cp| {
                    tracing::info!(
                        source,
                        file = cp.file,
                        pos = cp.pos,
                        "resuming from the binlog checkpoint"
                    )
                })?,
            state => {
                let (progress, truncate_first) = match state {
                    Some(SnapshotState::Chunks(mut progress)) => {
                        progress.run += 1;
                        tracing::info!(
                            source,
                            tables_done = progress.done.len(),
                            "resuming the interrupted snapshot after its last durable chunk"
                        );
                        (progress, false)
                    }
                    // No snapshot yet, or one of a version that kept no progress.
                    other => {
                        self.store.xa_forget(&source)?;
                        let start = self.snapshot_start().await?;
                        let progress = ChunkProgress {
                            start,
                            done: Vec::new(),
                            current: None,
                            run: 0,
                        };
                        (progress, other.is_some())
                    }
                };
                self.store
                    .set_snapshot(&source, &SnapshotState::Chunks(progress.clone()))?;
                let cp = progress.start.clone();
                self.copy(&tables, progress, truncate_first).await?;
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
        let swept = self.store.xa_sweep(&source, (file_n, checkpoint.pos))?;
        if swept > 0 {
            tracing::info!(
                source,
                runs = swept,
                "dropped held XA transactions this checkpoint no longer needs"
            );
        }
        // XA transactions the snapshot waited for: their rows are in its copy.
        let settled = self.store.xa_settled(&source)?;
        let settled_until = self.store.xa_settled_until(&source)?;
        // The last GTID per replication domain, as MariaDB's `@slave_connect_state` takes it.
        let mut gtids = GtidState::parse(checkpoint.gtid.as_deref().unwrap_or(""));
        let mut gtid = checkpoint.gtid.clone();
        // The sequence number of the last MariaDB GTID (the id of a standalone group).
        let mut gtid_seq: Option<u64> = None;
        let mut open: Option<OpenTx> = None;
        // Table id (of TABLE_MAP events) → captured table, or None when not captured.
        let mut table_ids: HashMap<u64, Option<TableId>> = HashMap::new();
        // The TABLE_MAP of `tributary.echo` (a Tributary sink's marker), once met.
        let mut echo_table: Option<TableMapEvent<'static>> = None;
        // The TABLE_MAP each captured table's shape was last checked against, and how to
        // read its rows.
        let mut shapes: HashMap<TableId, (Vec<u8>, RowLayout)> = HashMap::new();
        let mut acked = self.publisher.acked();
        let mut pending: VecDeque<Durable> = VecDeque::new();
        let mut next_token = 1u64;
        // With heartbeats every `heartbeat_secs`, silence for three periods means the
        // connection is gone.
        let silence = Duration::from_secs(self.config.heartbeat_secs.max(1) * 3 + 5);
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => None,
                changed = acked.changed() => {
                    if changed.is_err() {
                        return Err(CaptureError::Replication("publisher stopped".into()));
                    }
                    let a = acked.borrow_and_update().clone();
                    if let Some(message) = a.failed {
                        return Err(CaptureError::Replication(format!("publishing failed: {message}")));
                    }
                    self.durable(&a, &mut pending)?;
                    continue;
                }
                event = tokio::time::timeout(silence, stream.next()) => match event {
                    Err(_) => return Err(CaptureError::Replication(format!(
                        "no binlog event or heartbeat for {}s; reconnecting", silence.as_secs()
                    ))),
                    Ok(None) => return Err(CaptureError::Replication("the server ended the binlog stream".into())),
                    Ok(Some(Err(e))) => return Err(CaptureError::mysql("reading the binlog", e)),
                    Ok(Some(Ok(event))) => Some(event),
                },
            };
            let Some(event) = event else {
                tracing::info!(source, "capture stopping");
                return self.settle(&mut acked, &mut pending).await;
            };
            let header = event.header();
            let next_pos = u64::from(header.log_pos());
            let ts_micros = i64::from(header.timestamp()) * 1_000_000;
            if header.event_type_raw() == MARIADB_GTID_EVENT {
                let (seq_no, domain, flags) = mariadb_gtid(event.data())?;
                gtids.set(domain, header.server_id(), seq_no);
                gtid = Some(gtids.to_string());
                gtid_seq = Some(seq_no);
                if flags & FL_STANDALONE == 0 {
                    let mut tx = OpenTx::new(file_n, next_pos, ts_micros, Some(seq_no));
                    tx.began = true;
                    // MariaDB writes no XA START statement: the GTID event carries the xid.
                    if flags & FL_PREPARED_XA != 0 {
                        let xid = mariadb_gtid_xid(event.data(), flags).ok_or_else(|| {
                            CaptureError::Decode(format!(
                                "GTID event of an XA transaction at {file}:{next_pos} has no xid"
                            ))
                        })?;
                        let run = (file_n, next_pos);
                        self.store.xa_begin(&source, &xid, run)?;
                        tx.xa = Some((xid, run));
                    }
                    open = Some(tx);
                }
                continue;
            }
            // A compressed event (MariaDB's log_bin_compress) is read as the plain event
            // it stands for.
            let event = if compressed::is_compressed(header.event_type_raw()) {
                compressed::inflate_event(&event).map_err(|m| {
                    CaptureError::Decode(format!(
                        "compressed binlog event at {file}:{next_pos}: {m}"
                    ))
                })?
            } else {
                event
            };
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
                        open.get_or_insert_with(|| {
                            OpenTx::new(file_n, next_pos, ts_micros, None)
                        })
                        .began = true;
                    } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                        open = None;
                        self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                            .await?;
                    } else if let Some(xa) = statement::xa(trimmed) {
                        let commit = matches!(xa, Xa::Commit { .. });
                        match xa {
                            // Its rows are held until the decision (see `XaPrepareLogEvent`).
                            // (MySQL; MariaDB names the xid in the GTID event instead.)
                            Xa::Start(xid) => {
                                if let Some(tx) = open.as_mut().filter(|tx| tx.xa.is_none()) {
                                    tx.began = true;
                                    let run = (tx.file_seq, tx.offset);
                                    self.store.xa_begin(&source, xid, run)?;
                                    tx.xa = Some((xid.to_string(), run));
                                }
                            }
                            Xa::End => {}
                            Xa::Commit { xid, .. } | Xa::Rollback(xid) => {
                                // The run this ends: one of this very group (MySQL may log
                                // XA COMMIT … ONE PHASE there), else the oldest prepared run
                                // of the xid not ended yet.
                                let run = match open.as_ref().and_then(|tx| tx.xa.as_ref()) {
                                    Some((x, run)) if x == xid => Some(*run),
                                    _ => self.store.xa_end(&source, xid, (file_n, next_pos))?,
                                };
                                match run {
                                    Some(run) if commit => {
                                        self.release_xa(
                                            xid,
                                            run,
                                            (file_n, next_pos),
                                            ts_micros,
                                            gtid_seq,
                                        )
                                        .await?;
                                    }
                                    // Rolled back: its rows go once the checkpoint is past.
                                    Some(_) | None if !commit => {}
                                    None if settled.iter().any(|x| x == xid)
                                        || settled_until
                                            .is_some_and(|end| (file_n, next_pos) <= end) =>
                                    {
                                        tracing::info!(source, xid, at = %format!("{file}:{next_pos}"), "XA COMMIT of a transaction the snapshot waited for; its rows are in the copy");
                                    }
                                    _ => {
                                        return Err(CaptureError::Setup(format!(
                                            "XA COMMIT of {xid} at {file}:{next_pos}: this capture \
                                             never read that transaction's XA PREPARE (it was \
                                             prepared just as the snapshot started, or before an \
                                             upgrade to a version that holds prepared \
                                             transactions), so its rows are neither in the \
                                             snapshot nor held, and a sink would miss them if it \
                                             changed captured tables; take a new snapshot (remove \
                                             this source's state)"
                                        )));
                                    }
                                }
                                open = None;
                                self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                                    .await?;
                                if let (Some(run), Some(last)) = (run, pending.back_mut()) {
                                    last.release = Some((xid.to_string(), run));
                                }
                            }
                        }
                    } else if let Some((db, name)) =
                        statement::truncated_table(trimmed, &q.schema())
                    {
                        // TRUNCATE is logged as a statement even in ROW format, without rows:
                        // it becomes a truncate event of the table.
                        let id = [
                            TableId::new(&db, &name),
                            TableId::new(db.to_lowercase(), name.to_lowercase()),
                        ]
                        .into_iter()
                        .find(|id| self.config.captures(&id.schema, &id.name));
                        if let Some(id) = id {
                            let at = Position::mysql(file_n, next_pos, 1);
                            self.truncate(tables, &id, at, ts_micros).await?;
                        }
                        if open.as_ref().is_none_or(|tx| !tx.began) {
                            open = None;
                            self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                                .await?;
                        }
                    } else if let Some(verb) = statement::row_change_verb(trimmed) {
                        // A session wrote its change as a statement (it overrode the ROW
                        // format): its rows are not in the binlog.
                        let schema = q.schema();
                        if statement::may_touch(trimmed, &schema, |d, t| self.config.captures(d, t))
                        {
                            return Err(CaptureError::Setup(format!(
                                "a statement-logged {verb} at {file}:{next_pos} (database {schema:?}) \
                                 may change captured tables, and its rows are not in the binlog \
                                 (most often the session that wrote it overrode binlog_format = \
                                 ROW); make every session keep ROW (no SET SESSION \
                                 binlog_format), then take a new snapshot (remove this source's \
                                 state). The statement: {}",
                                truncate(trimmed, 300)
                            )));
                        }
                        tracing::debug!(source, schema = %schema, statement = %truncate(trimmed, 200), "statement-logged change of tables not captured");
                        if open.as_ref().is_none_or(|tx| !tx.began) {
                            open = None;
                            self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                                .await?;
                        }
                    } else {
                        // DDL (the ROW format writes no other statement): shapes are
                        // reloaded when next met.
                        tracing::info!(source, schema = %q.schema(), statement = %truncate(trimmed, 200), "DDL in the binlog");
                        table_ids.clear();
                        tables.clear();
                        shapes.clear();
                        if open.as_ref().is_none_or(|tx| !tx.began) {
                            open = None;
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
                    if id.schema == "tributary" && id.name == "echo" {
                        echo_table = Some(tme.clone().into_owned());
                    }
                    let captured = self.config.captures(&id.schema, &id.name);
                    if captured {
                        // The event's bytes after the table number: equal bytes, same shape.
                        let raw = event.data();
                        let signature = raw.get(8..).unwrap_or(raw);
                        if shapes.get(&id).map(|(s, _)| s.as_slice()) != Some(signature) {
                            let shape = self
                                .shape_at(tables, &id, &tme, &format!("{file}:{next_pos}"))
                                .await?;
                            let layout = RowLayout::new(&shape, &tables[&id]);
                            shapes.insert(id.clone(), (signature.to_vec(), layout));
                        }
                    }
                    table_ids.insert(tme.table_id(), captured.then_some(id));
                }
                Some(EventData::RowsEvent(rows)) => {
                    if let Some(echo) = echo_table
                        .as_ref()
                        .filter(|t| t.table_id() == rows.table_id())
                    {
                        if let Some(tx) = open.as_mut() {
                            tx.origin = Some(
                                echo_writer(&rows, echo).unwrap_or_else(|| "tributary".into()),
                            );
                        }
                        continue;
                    }
                    let Some(Some(id)) = table_ids.get(&rows.table_id()) else {
                        continue;
                    };
                    let table = &tables[id];
                    let tx = open.as_mut().ok_or_else(|| {
                        CaptureError::Decode(format!(
                            "rows event for {id} outside a transaction at {file}:{next_pos}"
                        ))
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
                    let layout = &shapes[id].1;
                    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        layout.decode(table, &rows)
                    }))
                    .map_err(|_| {
                        CaptureError::Decode(format!(
                            "rows event for {id} at {file}:{next_pos} cannot be decoded by mysql_common \
                             (a negative TIME(1) or TIME(2) value with a fraction is a known cause)"
                        ))
                    })?
                    .map_err(|m| {
                        CaptureError::Decode(format!("rows event for {id} at {file}:{next_pos}: {m}"))
                    })?;
                    // One event reused for the rows of this rows event: source and table
                    // are copied once per rows event, not per row.
                    let mut change = ChangeEvent {
                        source: source.clone(),
                        table: id.clone(),
                        schema_version: table.state.schema.version,
                        op,
                        key: Vec::new(),
                        before: None,
                        after: None,
                        position: Position::mysql(tx.file_seq, tx.offset, tx.seq),
                        tx: TxMeta {
                            id: tx.id,
                            commit_ts_micros: tx.commit_ts_micros,
                            first: Position::mysql(tx.file_seq, tx.offset, 1),
                        },
                        origin: tx.origin.clone(),
                    };
                    for (before, after) in decoded {
                        change.key = match (&after, &before) {
                            (Some(a), _) => key_of(table, a),
                            (None, Some(b)) => key_of(table, b),
                            (None, None) => continue,
                        };
                        tx.seq += 1;
                        change.before = before;
                        change.after = after;
                        change.position = Position::mysql(tx.file_seq, tx.offset, tx.seq);
                        match &tx.xa {
                            None => self.publisher.event(&table.state.avro, &change).await?,
                            Some((xid, run)) => {
                                let row = HeldRow {
                                    table: id.clone(),
                                    version: table.state.schema.version,
                                    value: encode_value(&table.state.avro, &change)?,
                                };
                                self.store.xa_hold(&source, xid, *run, tx.seq, &row)?;
                            }
                        }
                    }
                }
                // A statement-logged LOAD DATA (its file came in BEGIN_LOAD_QUERY and
                // APPEND_BLOCK events): judged like any statement-logged change.
                Some(EventData::ExecuteLoadQueryEvent(load)) => {
                    let (sql, schema) = (load.query(), load.schema());
                    if statement::may_touch(&sql, &schema, |d, t| self.config.captures(d, t)) {
                        return Err(CaptureError::Setup(format!(
                            "binlog event at {file}:{next_pos}: a LOAD DATA statement (database \
                             {schema:?}) may change captured tables, and its rows are not in the \
                             binlog (most often the session that wrote it overrode binlog_format \
                             = ROW); set binlog_format = ROW for every session, then take a new \
                             snapshot (remove this source's state). The statement: {}",
                            truncate(sql.trim(), 300)
                        )));
                    }
                }
                // The first phase of an XA transaction: its rows are durable in the state
                // store before the checkpoint passes here, and wait there for XA COMMIT
                // (published then, at its position) or XA ROLLBACK (dropped). MySQL ends a
                // one-phase XA transaction with this event too (its first byte set): that
                // one is committed here.
                Some(EventData::XaPrepareLogEvent(body)) => {
                    let one_phase = body.first() == Some(&1);
                    let (tx_id, tx_ts) = open
                        .as_ref()
                        .map_or((None, ts_micros), |tx| (tx.id, tx.commit_ts_micros));
                    let mut release = None;
                    match open.as_ref().map(|tx| (&tx.xa, tx.seq)) {
                        Some((Some((xid, run)), _)) if one_phase => {
                            self.release_xa(xid, *run, (file_n, next_pos), tx_ts, tx_id)
                                .await?;
                            release = Some((xid.clone(), *run));
                        }
                        Some((Some((xid, run)), rows)) => {
                            self.store.xa_prepared(&source, xid, *run)?;
                            tracing::debug!(source, xid, rows, at = %format!("{file}:{next_pos}"), "XA transaction prepared; its rows are held until its commit");
                        }
                        Some((None, rows)) if rows > 0 => {
                            return Err(CaptureError::Decode(format!(
                                "XA PREPARE at {file}:{next_pos} ends a transaction with rows of \
                                 captured tables whose xid was read neither from its GTID event \
                                 nor from an XA START statement"
                            )));
                        }
                        _ => {}
                    }
                    open = None;
                    self.commit(&mut pending, &mut next_token, &file, next_pos, &gtid)
                        .await?;
                    if let Some(last) = pending.back_mut().filter(|_| release.is_some()) {
                        last.release = release;
                    }
                }
                // A replica stops at an incident too: the server lost changes it could not log.
                Some(EventData::IncidentEvent(incident)) => {
                    return Err(CaptureError::Setup(format!(
                        "the binlog records an incident at {file}:{next_pos} ({}): the server lost \
                         changes it could not log, so the sink would miss them; repair the source, \
                         then take a new snapshot (remove this source's state)",
                        incident.message()
                    )));
                }
                // Its rows cannot be read yet, and skipping them would lose them.
                Some(EventData::TransactionPayloadEvent(_)) => {
                    return Err(CaptureError::Setup(format!(
                        "the binlog holds a compressed transaction payload at {file}:{next_pos} \
                         (binlog_transaction_compression was ON when it was written); Tributary \
                         does not read transaction payloads yet and will not skip their rows: \
                         SET GLOBAL binlog_transaction_compression = OFF, then take a new \
                         snapshot (remove this source's state)"
                    )));
                }
                Some(EventData::HeartbeatEvent) => {}
                // Anything else passes only when known to carry no rows.
                _ => {
                    if let Some(why) = unread::refusal(header.event_type_raw(), header.flags_raw())
                    {
                        return Err(CaptureError::Setup(format!(
                            "binlog event at {file}:{next_pos}: {why}; the capture stops \
                             rather than skip it"
                        )));
                    }
                }
            }
        }
    }

    /// Makes `tables[id]` the shape that decodes the rows after TABLE_MAP event `tme` (at
    /// binlog position `at`): the catalog's when it agrees with the event, else the event's
    /// own (`binlog_row_metadata = FULL`), else an error saying what changed.
    async fn shape_at(
        &mut self,
        tables: &mut BTreeMap<TableId, MyTable>,
        id: &TableId,
        tme: &TableMapEvent<'_>,
        at: &str,
    ) -> Result<MapShape, CaptureError> {
        let shape = MapShape::read(tme)
            .map_err(|m| CaptureError::Decode(format!("TABLE_MAP of {id} at {at}: {m}")))?;
        let mut conn = None;
        if !tables.contains_key(id) {
            let c = conn.insert(connect(&self.config.url).await?);
            tables.extend(load_tables(c, &self.config, &self.store, &self.source, Some(id)).await?);
        }
        let catalog = tables.get(id);
        if catalog.is_some_and(|t| shape.matches(t, self.collations.as_ref())) {
            return Ok(shape);
        }
        if !shape.named() {
            // Without names, a shape this table had before that agrees with the event (and
            // is the only one that does) is the shape at this position.
            let known = catalog::known_shapes(&self.store, &self.source, id)?;
            let mut agreeing = known.into_iter().filter(|t| shape.matches(t, None));
            if let (Some(table), None) = (agreeing.next(), agreeing.next()) {
                tracing::info!(
                    source = self.source,
                    table = %id,
                    at,
                    version = table.state.schema.version,
                    "decoding with an earlier shape of the table that agrees with the binlog (the catalog differs at this position)"
                );
                tables.insert(id.clone(), table);
                return Ok(shape);
            }
            let full = "set binlog_row_metadata = FULL on the server so the binlog carries each \
                        table's shape, or take a new snapshot (remove this source's state)";
            return Err(match catalog {
                None => CaptureError::Setup(format!(
                    "table {id} has rows in the binlog at {at} but is no longer in the catalog \
                     (dropped or renamed since), so its shape at that position is unknown: {full}; \
                     to go on without those rows, add exclude = [\"{id}\"] to the source"
                )),
                Some(t) => CaptureError::Decode(format!(
                    "table {id}: the binlog row at {at} has {} columns of types ({}), the table \
                     has ({}) now, and not exactly one earlier shape of it agrees; its shape \
                     changed since this position: {full}",
                    shape.columns.len(),
                    shape
                        .columns
                        .iter()
                        .map(|c| format!("{:?}", c.ty)
                            .trim_start_matches("MYSQL_TYPE_")
                            .to_lowercase())
                        .collect::<Vec<_>>()
                        .join(", "),
                    t.columns
                        .iter()
                        .map(|c| c.column_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        let collations = match &self.collations {
            Some(c) => c,
            None => {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(connect(&self.config.url).await?),
                };
                self.collations.insert(catalog::collations(c).await?)
            }
        };
        let table = shape.table(id, catalog, collations, &self.store, &self.source)?;
        tracing::info!(
            source = self.source,
            table = %id,
            at,
            columns = %table.columns.iter().map(|c| format!("{} {}", c.name, c.column_type)).collect::<Vec<_>>().join(", "),
            "decoding with the table's shape from the binlog (the catalog differs at this position)"
        );
        tables.insert(id.clone(), table);
        Ok(shape)
    }

    /// Publishes a truncate of captured table `id` at position `at`, with the table's
    /// catalog shape, or the last shape stored for it when it is gone from the catalog.
    async fn truncate(
        &mut self,
        tables: &mut BTreeMap<TableId, MyTable>,
        id: &TableId,
        at: Position,
        commit_ts_micros: i64,
    ) -> Result<(), CaptureError> {
        if !tables.contains_key(id) {
            let mut conn = connect(&self.config.url).await?;
            tables.extend(
                load_tables(&mut conn, &self.config, &self.store, &self.source, Some(id)).await?,
            );
        }
        let table = match tables.get(id) {
            Some(table) => table.clone(),
            None => match catalog::known_shapes(&self.store, &self.source, id)?.pop() {
                Some(table) => table,
                None => {
                    // Never captured, so no sink holds rows of it.
                    tracing::info!(source = self.source, table = %id, "truncate of a table never captured; nothing to empty");
                    return Ok(());
                }
            },
        };
        tracing::info!(source = self.source, table = %id, "truncate in the binlog");
        let event = ChangeEvent {
            source: self.source.clone(),
            table: id.clone(),
            schema_version: table.state.schema.version,
            op: Op::Truncate,
            key: Vec::new(),
            before: None,
            after: None,
            position: at,
            tx: TxMeta {
                id: None,
                commit_ts_micros,
                first: at,
            },
            origin: None,
        };
        self.publisher.event(&table.state.avro, &event).await
    }

    /// Closes the transaction and queues the checkpoint after it.
    async fn commit(
        &mut self,
        pending: &mut VecDeque<Durable>,
        next_token: &mut u64,
        file: &str,
        pos: u64,
        gtid: &Option<String>,
    ) -> Result<(), CaptureError> {
        let token = *next_token;
        *next_token += 1;
        self.publisher.commit(Some(token)).await?;
        pending.push_back(Durable {
            token,
            checkpoint: BinlogCheckpoint {
                file: file.to_string(),
                pos,
                gtid: gtid.clone(),
            },
            release: None,
        });
        Ok(())
    }

    /// Stores the newest checkpoint that acknowledgement `acked` makes durable, then drops
    /// the held rows of XA transactions committed before it.
    fn durable(
        &mut self,
        acked: &Acked,
        pending: &mut VecDeque<Durable>,
    ) -> Result<(), CaptureError> {
        let Some(token) = acked.token else {
            return Ok(());
        };
        let mut checkpoint = None;
        let mut releases = Vec::new();
        while pending.front().is_some_and(|d| d.token <= token) {
            let d = pending.pop_front().expect("checked");
            releases.extend(d.release);
            checkpoint = Some(d.checkpoint);
        }
        if let Some(cp) = checkpoint {
            self.store.set_binlog_checkpoint(&self.source, &cp)?;
        }
        for (xid, run) in releases {
            self.store.xa_release(&self.source, &xid, run)?;
        }
        Ok(())
    }

    /// At shutdown: waits a little for what is in flight to become durable, so the stored
    /// checkpoint is as recent as the transport allows.
    async fn settle(
        &mut self,
        acked: &mut watch::Receiver<Acked>,
        pending: &mut VecDeque<Durable>,
    ) -> Result<(), CaptureError> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let a = acked.borrow_and_update().clone();
            if a.failed.is_some() {
                return Ok(());
            }
            self.durable(&a, pending)?;
            if pending.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, acked.changed()).await {
                Ok(Ok(())) => {}
                // Not all durable in time (or the publisher is gone): the next run resends
                // from the stored checkpoint.
                _ => return Ok(()),
            }
        }
    }

    /// Publishes the held rows of run `run` of XA transaction `xid` as one transaction at
    /// binlog file number and offset `at` (its XA COMMIT).
    async fn release_xa(
        &mut self,
        xid: &str,
        run: XaRun,
        at: (u32, u64),
        commit_ts_micros: i64,
        id: Option<u64>,
    ) -> Result<(), CaptureError> {
        let mut schemas: HashMap<(TableId, u32), AvroSchemas> = HashMap::new();
        let (mut after, mut count) = (0, 0u64);
        loop {
            let chunk = self.store.xa_rows(&self.source, xid, run, after, 1024)?;
            if chunk.is_empty() {
                break;
            }
            for (seq, row) in chunk {
                after = seq;
                let version = (row.table, row.version);
                if !schemas.contains_key(&version) {
                    let (table, v) = &version;
                    let shape = self
                        .store
                        .shapes(&self.source, table)?
                        .into_iter()
                        .find(|s| s.version == *v)
                        .ok_or_else(|| {
                            self.store.invalid(format!(
                                "held rows of XA transaction {xid} need version {v} of {table}, \
                                 which the state no longer holds"
                            ))
                        })?;
                    schemas.insert(
                        version.clone(),
                        AvroSchemas::generate(&self.source, &shape)?,
                    );
                }
                let avro = &schemas[&version];
                let (_, datum) = unframe(&row.value)?;
                let mut event = decode_value(avro, datum)?;
                count += 1;
                event.position = Position::mysql(at.0, at.1, count);
                event.tx = TxMeta {
                    id,
                    commit_ts_micros,
                    first: Position::mysql(at.0, at.1, 1),
                };
                self.publisher.event(avro, &event).await?;
            }
        }
        tracing::debug!(
            source = self.source,
            xid,
            rows = count,
            "XA transaction committed; its held rows are published"
        );
        Ok(())
    }
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

/// The writer a `tributary.echo` rows event names (the first column of its first row's
/// after image).
fn echo_writer(rows: &RowsEventData<'_>, echo: &TableMapEvent<'_>) -> Option<String> {
    let (_, after) = rows.rows(echo).next()?.ok()?;
    match after?.as_ref(0)? {
        mysql_async::binlog::value::BinlogValue::Value(mysql_async::Value::Bytes(b)) => {
            String::from_utf8(b.clone()).ok()
        }
        _ => None,
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

/// The xid of an XA transaction's MariaDB GTID event body (flags `flags`), spelled as
/// the server spells it in XA statements: `X'<gtrid hex>',X'<bqual hex>',<formatID>`.
fn mariadb_gtid_xid(data: &[u8], flags: u8) -> Option<String> {
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
    Some(statement::xid_text(format_id, gtrid, bqual))
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
pub fn file_seq(file: &str) -> Result<u32, CaptureError> {
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
}
