//! The binlog reader: from a checkpoint, binlog events in, change events out.
//!
//! [`request`] registers as a replica (`server_id`) with heartbeats every
//! `heartbeat_secs` and asks for the binlog from the checkpoint, by file and offset or,
//! on MariaDB with `resume_from = "gtid"`, by GTID state. A [`BinlogReader`] then holds
//! everything the stream knows between events (the binlog file, the open transaction,
//! the GTID state, the table maps and shapes, the `tributary.echo` marker, the
//! checkpoints in flight) and reads one event at a time with one method per kind: ROTATE,
//! GTID and BEGIN open a transaction; TABLE_MAP and ROWS events become change events
//! (see `tables`); XID and COMMIT end it; statements are TRUNCATE, DDL, XA (see `xa`) or
//! a change logged as a statement; a heartbeat only shows the connection alive.
//!
//! Failure model: the reader never skips what could hold rows of a captured table. A
//! statement-logged change that may touch one, a binlog incident, a compressed MySQL
//! transaction payload, or an event kind not known to carry no rows stops the capture
//! with an error saying what to do; a lost connection (no event or heartbeat for three
//! heartbeat periods) or a failed publisher stops it with a transient error, and the
//! next run resumes from the stored checkpoint (see `checkpoint`).

mod tables;
mod xa;

use super::binlog_shape::Collations;
use super::catalog::{connect, load_tables, MyTable};
use super::checkpoint::Checkpoints;
use super::config::{MySqlSourceConfig, ResumeFrom};
use super::gtid::{self, Gtids, FL_PREPARED_XA, FL_STANDALONE, MARIADB_GTID_EVENT};
use super::rows::RowLayout;
use super::{catalog, compressed, statement, unread, MySqlCapture};
use crate::error::CaptureError;
use crate::publisher::{Acked, Publisher};
use crate::state::{BinlogCheckpoint, StateStore, XaRun};
use futures::StreamExt;
use mysql_async::binlog::events::{Event, EventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;
use tributary_schemas::{ChangeEvent, Op, Position, TableId, TxMeta};

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

/// Opens a binlog session and requests the binlog from `checkpoint`: by GTID state when
/// the source resumes by GTID (MariaDB), else by file and offset.
pub(super) async fn request(
    config: &MySqlSourceConfig,
    source: &str,
    checkpoint: &BinlogCheckpoint,
) -> Result<BinlogStream, CaptureError> {
    let mut conn = connect(config.url.expose()).await?;
    let heartbeat_ns = config.heartbeat_secs.max(1) * 1_000_000_000;
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {heartbeat_ns}, @mariadb_slave_capability = 4"
    ))
    .await
    .map_err(|e| CaptureError::mysql("preparing the binlog session", e))?;
    let server_id = config.server_id_for(source);
    let by_gtid = config.resume_from == ResumeFrom::Gtid;
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
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| CaptureError::mysql("requesting the binlog stream", e))
}

/// What the binlog stream knows between events.
pub(super) struct BinlogReader<'a> {
    source: &'a str,
    config: &'a MySqlSourceConfig,
    store: &'a StateStore,
    publisher: &'a mut Publisher,
    /// The server's collations, read when a shape is first rebuilt from the binlog.
    collations: &'a mut Option<Collations>,
    /// The captured tables met so far, in the shape their rows are decoded with.
    tables: BTreeMap<TableId, MyTable>,
    /// The binlog file being read, and its sequence number.
    file: String,
    file_n: u32,
    /// Where the event being read ends (the offset of the next), and when it was written.
    pos: u64,
    ts_micros: i64,
    gtids: Gtids,
    open: Option<OpenTx>,
    /// Table id (of TABLE_MAP events) → captured table, or None when not captured.
    table_ids: HashMap<u64, Option<TableId>>,
    /// The TABLE_MAP of `tributary.echo` (a Tributary sink's marker), once met.
    echo_table: Option<TableMapEvent<'static>>,
    /// The TABLE_MAP each captured table's shape was last checked against, and how to
    /// read its rows.
    shapes: HashMap<TableId, (Vec<u8>, RowLayout)>,
    /// XA transactions the snapshot waited for: their rows are in its copy.
    settled: Vec<String>,
    /// The binlog's end when the snapshot stopped waiting for XA transactions.
    settled_until: Option<(u32, u64)>,
    checkpoints: Checkpoints,
}

impl<'a> BinlogReader<'a> {
    /// A reader of `capture`'s binlog from `checkpoint`, with the captured `tables` known
    /// so far; drops the held XA rows the checkpoint no longer needs.
    pub fn new(
        capture: &'a mut MySqlCapture,
        checkpoint: BinlogCheckpoint,
        tables: BTreeMap<TableId, MyTable>,
    ) -> Result<Self, CaptureError> {
        let MySqlCapture {
            source,
            config,
            store,
            publisher,
            collations,
        } = capture;
        let file_n = file_seq(&checkpoint.file)?;
        let swept = store.xa_sweep(source, (file_n, checkpoint.pos))?;
        if swept > 0 {
            tracing::info!(
                source,
                runs = swept,
                "dropped held XA transactions this checkpoint no longer needs"
            );
        }
        Ok(BinlogReader {
            settled: store.xa_settled(source)?,
            settled_until: store.xa_settled_until(source)?,
            source,
            config,
            store,
            publisher,
            collations,
            tables,
            gtids: Gtids::resume(checkpoint.gtid.as_deref()),
            file: checkpoint.file,
            file_n,
            pos: checkpoint.pos,
            ts_micros: 0,
            open: None,
            table_ids: HashMap::new(),
            echo_table: None,
            shapes: HashMap::new(),
            checkpoints: Checkpoints::new(),
        })
    }

    /// Reads `stream` until `shutdown` turns true (then waits a little for what is in
    /// flight to become durable) or an error occurs.
    pub async fn run(
        mut self,
        mut stream: BinlogStream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), CaptureError> {
        let mut acked = self.publisher.acked();
        // With heartbeats every `heartbeat_secs`, silence for three periods means the
        // connection is gone.
        let silence = Duration::from_secs(self.config.heartbeat_secs.max(1) * 3 + 5);
        loop {
            let event = tokio::select! {
                biased;
                // Shutdown first: stop reading, then settle what is in flight.
                _ = shutdown.wait_for(|s| *s) => None,
                // Then acknowledgements, so checkpoints are stored as soon as they are durable.
                changed = acked.changed() => {
                    let a = Acked::take(&mut acked, changed)?;
                    self.checkpoints.durable(self.store, self.source, &a)?;
                    continue;
                }
                // Then the next event.
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
                tracing::info!(source = self.source, "capture stopping");
                return self
                    .checkpoints
                    .settle(self.store, self.source, &mut acked)
                    .await;
            };
            self.event(event).await?;
        }
    }

    /// Reads one binlog event: notes where it ends, then hands it on by kind.
    async fn event(&mut self, event: Event) -> Result<(), CaptureError> {
        let header = event.header();
        self.pos = u64::from(header.log_pos());
        self.ts_micros = i64::from(header.timestamp()) * 1_000_000;
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            return self.mariadb_gtid(event.data(), header.server_id());
        }
        // A compressed event (MariaDB's log_bin_compress) is read as the plain event
        // it stands for.
        let event = if compressed::is_compressed(header.event_type_raw()) {
            compressed::inflate_event(&event).map_err(|m| {
                CaptureError::Decode(format!("compressed binlog event at {}: {m}", self.at()))
            })?
        } else {
            event
        };
        let data = event
            .read_data()
            .map_err(|e| CaptureError::Decode(format!("binlog event at {}: {e}", self.at())))?;
        match data {
            Some(EventData::RotateEvent(r)) => self.rotate(r.name_raw()),
            Some(EventData::GtidEvent(_)) | Some(EventData::AnonymousGtidEvent(_)) => {
                self.open = Some(OpenTx::new(self.file_n, self.pos, self.ts_micros, None));
                Ok(())
            }
            Some(EventData::QueryEvent(q)) => self.query(&q.query(), &q.schema()).await,
            Some(EventData::XidEvent(_)) => self.end_group().await,
            Some(EventData::TableMapEvent(tme)) => self.table_map(&tme, event.data()).await,
            Some(EventData::RowsEvent(rows)) => self.rows(&rows).await,
            // A statement-logged LOAD DATA (its file came in BEGIN_LOAD_QUERY and
            // APPEND_BLOCK events): judged like any statement-logged change.
            Some(EventData::ExecuteLoadQueryEvent(load)) => {
                self.load_data(&load.query(), &load.schema())
            }
            // MySQL ends a one-phase XA transaction with this event too (its first byte
            // set): that one is committed here.
            Some(EventData::XaPrepareLogEvent(body)) => {
                self.xa_prepare(body.first() == Some(&1)).await
            }
            // A replica stops at an incident too: the server lost changes it could not log.
            Some(EventData::IncidentEvent(incident)) => Err(CaptureError::Setup(format!(
                "the binlog records an incident at {} ({}): the server lost changes it could \
                 not log, so the sink would miss them; repair the source, then take a new \
                 snapshot (remove this source's state)",
                self.at(),
                incident.message()
            ))),
            // Its rows cannot be read yet, and skipping them would lose them.
            Some(EventData::TransactionPayloadEvent(_)) => Err(CaptureError::Setup(format!(
                "the binlog holds a compressed transaction payload at {} \
                 (binlog_transaction_compression was ON when it was written); Tributary \
                 does not read transaction payloads yet and will not skip their rows: \
                 SET GLOBAL binlog_transaction_compression = OFF, then take a new \
                 snapshot (remove this source's state)",
                self.at()
            ))),
            // A heartbeat only shows the connection alive.
            Some(EventData::HeartbeatEvent) => Ok(()),
            // Anything else passes only when known to carry no rows.
            _ => match unread::refusal(header.event_type_raw(), header.flags_raw()) {
                Some(why) => Err(CaptureError::Setup(format!(
                    "binlog event at {}: {why}; the capture stops rather than skip it",
                    self.at()
                ))),
                None => Ok(()),
            },
        }
    }

    /// The binlog position of the event being read, as messages name it (`file:offset`).
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.pos)
    }

    /// A ROTATE event: the binlog goes on in the file it names.
    fn rotate(&mut self, name: &[u8]) -> Result<(), CaptureError> {
        self.file = rotate_target(name)?;
        self.file_n = file_seq(&self.file)?;
        tracing::debug!(source = self.source, file = self.file, "binlog rotated");
        Ok(())
    }

    /// A MariaDB GTID event (of server `server_id`): the GTID state moves on, and unless
    /// the group is a standalone statement a transaction opens.
    fn mariadb_gtid(&mut self, data: &[u8], server_id: u32) -> Result<(), CaptureError> {
        let (seq_no, domain, flags) = gtid::mariadb_gtid(data)?;
        self.gtids.advance(domain, server_id, seq_no);
        if flags & FL_STANDALONE == 0 {
            let mut tx = OpenTx::new(self.file_n, self.pos, self.ts_micros, Some(seq_no));
            tx.began = true;
            // MariaDB writes no XA START statement: the GTID event carries the xid.
            if flags & FL_PREPARED_XA != 0 {
                let xid = gtid::mariadb_gtid_xid(data, flags).ok_or_else(|| {
                    CaptureError::Decode(format!(
                        "GTID event of an XA transaction at {} has no xid",
                        self.at()
                    ))
                })?;
                let run = (self.file_n, self.pos);
                self.store.xa_begin(self.source, &xid, run)?;
                tx.xa = Some((xid, run));
            }
            self.open = Some(tx);
        }
        Ok(())
    }

    /// A statement (QUERY event) `sql` run in database `schema`.
    async fn query(&mut self, sql: &str, schema: &str) -> Result<(), CaptureError> {
        let trimmed = sql.trim();
        if trimmed.eq_ignore_ascii_case("BEGIN") {
            let (file_n, pos, ts_micros) = (self.file_n, self.pos, self.ts_micros);
            self.open
                .get_or_insert_with(|| OpenTx::new(file_n, pos, ts_micros, None))
                .began = true;
            Ok(())
        } else if trimmed.eq_ignore_ascii_case("COMMIT") {
            self.end_group().await
        } else if let Some(xa) = statement::xa(trimmed) {
            self.xa_statement(xa).await
        } else if let Some((db, name)) = statement::truncated_table(trimmed, schema) {
            self.truncate_statement(&db, &name).await
        } else if let Some(verb) = statement::row_change_verb(trimmed) {
            self.statement_change(verb, trimmed, schema).await
        } else {
            // DDL (the ROW format writes no other statement): shapes are reloaded when
            // next met.
            tracing::info!(source = self.source, schema = %schema, statement = %excerpt(trimmed, 200), "DDL in the binlog");
            self.table_ids.clear();
            self.tables.clear();
            self.shapes.clear();
            self.end_statement().await
        }
    }

    /// Ends the open group here (an XID or COMMIT event, or a statement that was a group
    /// of its own) and queues the checkpoint after it.
    async fn end_group(&mut self) -> Result<(), CaptureError> {
        self.open = None;
        let checkpoint = BinlogCheckpoint {
            file: self.file.clone(),
            pos: self.pos,
            gtid: self.gtids.current.clone(),
        };
        self.checkpoints.commit(self.publisher, checkpoint).await
    }

    /// After a statement: ends its group unless it runs inside a transaction that ends
    /// with its own XID or COMMIT.
    async fn end_statement(&mut self) -> Result<(), CaptureError> {
        if self.open.as_ref().is_none_or(|tx| !tx.began) {
            self.end_group().await?;
        }
        Ok(())
    }

    /// A TRUNCATE of table `db`.`name`. TRUNCATE is logged as a statement even in ROW
    /// format, without rows: it becomes a truncate event of the table.
    async fn truncate_statement(&mut self, db: &str, name: &str) -> Result<(), CaptureError> {
        let id = [
            TableId::new(db, name),
            TableId::new(db.to_lowercase(), name.to_lowercase()),
        ]
        .into_iter()
        .find(|id| self.config.captures(&id.schema, &id.name));
        if let Some(id) = id {
            self.publish_truncate(&id).await?;
        }
        self.end_statement().await
    }

    /// Publishes a truncate of captured table `id` at this position, with the table's
    /// catalog shape, or the last shape stored for it when it is gone from the catalog.
    async fn publish_truncate(&mut self, id: &TableId) -> Result<(), CaptureError> {
        let at = Position::mysql(self.file_n, self.pos, 1);
        if !self.tables.contains_key(id) {
            let mut conn = connect(self.config.url.expose()).await?;
            self.tables.extend(
                load_tables(&mut conn, self.config, self.store, self.source, Some(id)).await?,
            );
        }
        let table = match self.tables.get(id) {
            Some(table) => table.clone(),
            None => match catalog::known_shapes(self.store, self.source, id)?.pop() {
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
            source: self.source.to_string(),
            table: id.clone(),
            schema_version: table.state.schema.version,
            op: Op::Truncate,
            key: Vec::new(),
            before: None,
            after: None,
            position: at,
            tx: TxMeta {
                id: None,
                commit_ts_micros: self.ts_micros,
                first: at,
            },
            origin: None,
        };
        self.publisher.event(&table.state.avro, &event).await
    }

    /// A change (`verb`: INSERT, UPDATE...) a session wrote as statement `sql` in
    /// database `schema`, overriding the ROW format: its rows are not in the binlog.
    async fn statement_change(
        &mut self,
        verb: &str,
        sql: &str,
        schema: &str,
    ) -> Result<(), CaptureError> {
        if statement::may_touch(sql, schema, |d, t| self.config.captures(d, t)) {
            return Err(CaptureError::Setup(format!(
                "a statement-logged {verb} at {} (database {schema:?}) \
                 may change captured tables, and its rows are not in the binlog \
                 (most often the session that wrote it overrode binlog_format = \
                 ROW); make every session keep ROW (no SET SESSION \
                 binlog_format), then take a new snapshot (remove this source's \
                 state). The statement: {}",
                self.at(),
                excerpt(sql, 300)
            )));
        }
        tracing::debug!(source = self.source, schema = %schema, statement = %excerpt(sql, 200), "statement-logged change of tables not captured");
        self.end_statement().await
    }

    /// A statement-logged LOAD DATA `sql` run in database `schema`.
    fn load_data(&self, sql: &str, schema: &str) -> Result<(), CaptureError> {
        if statement::may_touch(sql, schema, |d, t| self.config.captures(d, t)) {
            return Err(CaptureError::Setup(format!(
                "binlog event at {}: a LOAD DATA statement (database \
                 {schema:?}) may change captured tables, and its rows are not in the \
                 binlog (most often the session that wrote it overrode binlog_format \
                 = ROW); set binlog_format = ROW for every session, then take a new \
                 snapshot (remove this source's state). The statement: {}",
                self.at(),
                excerpt(sql.trim(), 300)
            )));
        }
        Ok(())
    }
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

/// The first `n` bytes of statement `s` (at a character boundary), to quote it in a
/// message.
fn excerpt(s: &str, n: usize) -> &str {
    &s[..s.floor_char_boundary(n)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_file_numbers() {
        assert_eq!(file_seq("mariadb-bin.000042").unwrap(), 42);
        assert!(file_seq("nonsense").is_err());
        assert_eq!(
            rotate_target(b"binlog.000001\x23\x57\x9a\x76").unwrap(),
            "binlog.000001"
        );
        assert_eq!(rotate_target(b"binlog.000002").unwrap(), "binlog.000002");
    }
}
