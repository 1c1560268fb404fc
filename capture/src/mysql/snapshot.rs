//! The initial snapshot of a MySQL/MariaDB source, in primary-key chunks.
//!
//! One consistent read fixes the binlog position the copy starts from: MariaDB reports the
//! position of a `START TRANSACTION WITH CONSISTENT SNAPSHOT` without any lock
//! (`binlog_snapshot_file/position`); MySQL pairs one under a brief
//! `FLUSH TABLES WITH READ LOCK`. That transaction ends at once. Each table is then read in
//! chunks of `snapshot_chunk_rows` rows in primary-key order
//! (`WHERE key > last ORDER BY key LIMIT n`), each chunk a short statement of its own: no
//! lock and no long-running transaction holding back purge, and memory bounded by one chunk.
//!
//! A chunk may see rows newer than the start position. That is safe because streaming
//! starts at the start position: every change after it is replayed over the copied rows
//! (full row images, applied as upserts and deletes), so the sink ends equal to the source,
//! only passing through older states on the way. Progress (tables done, last durable key)
//! is stored once the transport holds a chunk, so a restarted capture resumes after the last
//! durable chunk instead of copying everything again; see [`ChunkProgress`].
//!
//! Where streaming starts is decided here too: from the stored checkpoint once the
//! snapshot is done; else after the snapshot, which a restart finishes (its events
//! numbered above those of the interrupted run) or, when an older version left no
//! progress, takes again after a truncate of every table. The copy for a backup
//! ([`copy_tables`]) reads each table whole inside one consistent-snapshot transaction
//! instead, and stores no progress.

use super::catalog::{connect, load_tables, preflight, quote_ident, MyTable};
use super::chunk::chunk_sql;
use super::config::MySqlSourceConfig;
use super::stream::file_seq;
use super::types;
use super::{statement, MySqlCapture};
use crate::error::CaptureError;
use crate::snapshot::{now_micros, SnapshotOutput};
use crate::state::{BinlogCheckpoint, ChunkProgress, SnapshotState, StateStore};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::BTreeMap;
use std::time::Duration;
use tributary_schemas::{ChangeEvent, Op, Position, Row, TableId, TxMeta};

/// How long a snapshot waits for the XA transactions prepared when it starts to end.
const XA_WAIT: Duration = Duration::from_secs(300);

/// Starts a consistent-snapshot transaction on `conn` and returns the binlog position
/// (file, offset) it reads at: every transaction committed before it is visible, none
/// after. MariaDB tells the snapshot's own position; MySQL takes it under a global read
/// lock held only while the transaction starts (it needs RELOAD).
async fn consistent_transaction(conn: &mut Conn) -> Result<(String, u64), CaptureError> {
    let q = |what: &'static str| move |e| CaptureError::mysql(what, e);
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(q("starting the snapshot transaction"))?;
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
    if let (Some(f), Some(p)) = (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        if !f.is_empty() {
            return Ok((f, p.parse::<u64>().unwrap_or(4)));
        }
    }
    // MySQL: no transaction commits under the lock, so the transaction started under it
    // sees exactly what is before the position read there.
    conn.query_drop("ROLLBACK")
        .await
        .map_err(q("ending the snapshot transaction"))?;
    conn.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(q("taking the snapshot lock (needs RELOAD)"))?;
    let started = conn
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(q("starting the snapshot transaction"));
    let row: Result<Option<mysql_async::Row>, _> = match started {
        Ok(()) => binlog_status(conn)
            .await
            .map_err(q("reading the binlog position")),
        Err(e) => Err(e),
    };
    conn.query_drop("UNLOCK TABLES")
        .await
        .map_err(q("releasing the snapshot lock"))?;
    let mut row = row?.ok_or_else(|| {
        CaptureError::Setup("SHOW MASTER STATUS returned nothing: is log_bin on?".into())
    })?;
    let file: String = row.take(0).unwrap_or_default();
    let pos: u64 = row.take(1).unwrap_or(4);
    Ok((file, pos))
}

/// What [`copy_tables`] copied: the binlog position the copy is consistent with, and the
/// server's clock just after it (every transaction in the copy committed before it).
#[derive(Debug, Clone)]
pub struct ConsistentCopy {
    /// The binlog position.
    pub start: BinlogCheckpoint,
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
}

/// Copies every table of `source` that `config` captures, inside one consistent-snapshot
/// transaction, to `out` (a backup snapshot): the rows as of one binlog position, which
/// the result gives. Table versions are registered in `store`.
///
/// An XA transaction prepared but not committed at that position is not in the copy; the
/// archive has its rows at its XA COMMIT, after the position.
pub async fn copy_tables(
    source: &str,
    config: &MySqlSourceConfig,
    store: &StateStore,
    out: &mut (dyn SnapshotOutput + '_),
) -> Result<ConsistentCopy, CaptureError> {
    let mut conn = connect(config.url.expose()).await?;
    preflight(&mut conn).await?;
    for statement in ["SET NAMES utf8mb4", "SET SESSION time_zone = '+00:00'"] {
        conn.query_drop(statement)
            .await
            .map_err(|e| CaptureError::mysql("preparing the snapshot session", e))?;
    }
    let tables = load_tables(&mut conn, config, store, source, None).await?;
    let (file, pos) = consistent_transaction(&mut conn).await?;
    let at_micros: i64 = conn
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .await
        .map_err(|e| CaptureError::mysql("reading the server's clock", e))?
        .unwrap_or_else(now_micros);
    let gtid = gtid_at(&mut conn, &file, pos).await;
    tracing::info!(
        source,
        file,
        pos,
        tables = tables.len(),
        "backup snapshot: copying tables in one consistent transaction"
    );
    let mut events = EventMaker {
        source: source.to_string(),
        file: file_seq(&file)?,
        pos,
        seq: 0,
        first: None,
        commit_ts_micros: at_micros,
    };
    copy_in_transaction(&mut conn, &tables, &mut events, out).await?;
    Ok(ConsistentCopy {
        start: BinlogCheckpoint { file, pos, gtid },
        at_micros,
    })
}

/// Copies every table of `tables` to `out` through `conn`, inside its open transaction,
/// then commits it and finishes `out`.
async fn copy_in_transaction(
    conn: &mut Conn,
    tables: &BTreeMap<TableId, MyTable>,
    events: &mut EventMaker,
    out: &mut (dyn SnapshotOutput + '_),
) -> Result<(), CaptureError> {
    for (id, table) in tables {
        let sql = format!(
            "SELECT {} FROM {}.{}",
            table.select_list(),
            quote_ident(&id.schema),
            quote_ident(&id.name)
        );
        let (rows, _) = copy_rows(conn, id, table, &sql, events, out).await?;
        tracing::debug!(table = %id, rows, "table copied");
        out.close_chunk().await?;
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(|e| CaptureError::mysql("ending the snapshot transaction", e))?;
    out.finish().await
}

/// The values of a text-protocol row of `table`, in column order.
fn read_row(id: &TableId, table: &MyTable, row: &mysql_async::Row) -> Result<Row, CaptureError> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            types::from_text(c, raw(row, i)).map_err(|m| types::value_error(&id.to_string(), c, m))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Row)
}

/// MariaDB: the GTID state at binlog position `file`:`pos`, so a stream can resume by
/// GTID too (`None` on MySQL).
async fn gtid_at(conn: &mut Conn, file: &str, pos: u64) -> Option<String> {
    conn.exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
        .await
        .ok()
        .flatten()
        .filter(|g: &String| !g.is_empty())
}

/// The binlog's current file and position: `SHOW MASTER STATUS`, or on MySQL 8.4, which
/// removed it (a syntax error there), `SHOW BINARY LOG STATUS` (MySQL 8.2 and later).
async fn binlog_status(conn: &mut Conn) -> Result<Option<mysql_async::Row>, mysql_async::Error> {
    match conn.query_first("SHOW MASTER STATUS").await {
        Err(mysql_async::Error::Server(e)) if e.code == 1064 => {
            conn.query_first("SHOW BINARY LOG STATUS").await
        }
        other => other,
    }
}

/// The binlog's end (file number, offset) now; `None` when the server does not say (an
/// XA COMMIT of a prepare the stream never read then stops it, as before this was known).
async fn binlog_end(conn: &mut Conn) -> Result<Option<(u32, u64)>, CaptureError> {
    let row: Option<mysql_async::Row> = match binlog_status(conn).await {
        Ok(row) => row,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the binlog's end (SHOW MASTER STATUS)");
            None
        }
    };
    let Some(mut row) = row else {
        return Ok(None);
    };
    let file: String = row.take(0).unwrap_or_default();
    let pos: Option<u64> = row.take(1);
    Ok(match (file_seq(&file), pos) {
        (Ok(n), Some(pos)) => Some((n, pos)),
        _ => None,
    })
}

/// Bits of the event sequence number below the run number (a run numbers its events
/// `run << RUN_SHIFT` upwards: about 10^12 rows per run).
const RUN_SHIFT: u32 = 40;

impl MySqlCapture {
    /// Where streaming starts: the stored checkpoint once the snapshot is done; else the
    /// start of the snapshot, which this first takes, or finishes after its last durable
    /// chunk, copying `tables`.
    pub(super) async fn stream_start(
        &mut self,
        tables: &BTreeMap<TableId, MyTable>,
    ) -> Result<BinlogCheckpoint, CaptureError> {
        let source = self.source.clone();
        let state = self.store.snapshot(&source)?;
        if let Some(SnapshotState::Done { .. }) = state {
            let cp = self.store.binlog_checkpoint(&source)?.ok_or_else(|| {
                self.store.invalid(format!(
                    "source {source}: the snapshot is done but no binlog checkpoint is stored; \
                     remove the source's state to take a new snapshot"
                ))
            })?;
            tracing::info!(
                source,
                file = cp.file,
                pos = cp.pos,
                "resuming from the binlog checkpoint"
            );
            return Ok(cp);
        }
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
        self.copy(tables, progress, truncate_first).await?;
        self.store.set_binlog_checkpoint(&source, &cp)?;
        self.store
            .set_snapshot(&source, &SnapshotState::Done { lsn: 0 })?;
        tracing::info!(
            source,
            file = cp.file,
            pos = cp.pos,
            "snapshot finished; streaming the binlog"
        );
        Ok(cp)
    }

    /// The binlog position a new snapshot starts from, with the GTID state there.
    async fn snapshot_start(&self) -> Result<BinlogCheckpoint, CaptureError> {
        let mut conn = connect(self.config.url.expose()).await?;
        let q = |what: &'static str| move |e| CaptureError::mysql(what, e);
        let before_xa = self.prepared_xids(&mut conn).await;
        let (file, pos) = consistent_transaction(&mut conn).await?;
        conn.query_drop("COMMIT")
            .await
            .map_err(q("ending the snapshot transaction"))?;
        // MariaDB: the GTID state at that position, so the stream can resume by GTID too.
        let gtid = gtid_at(&mut conn, &file, pos).await;
        // An XA transaction prepared before this position and committed after it has its
        // rows neither held by the stream (its prepare is not read) nor surely in the copy:
        // the copy waits until every one prepared around this moment has ended, so it reads
        // their outcome, and the stream then passes their XA COMMIT by.
        let mut settled = before_xa.unwrap_or_default();
        if let Some(after) = self.prepared_xids(&mut conn).await {
            for xid in after {
                if !settled.contains(&xid) {
                    settled.push(xid);
                }
            }
        }
        let started = tokio::time::Instant::now();
        self.wait_for_xa(&mut conn, settled.clone(), started)
            .await?;
        // An XA transaction prepared between the two lists and ended before the second has
        // its XA COMMIT before the binlog's end read now; one whose commit is written but
        // not yet visible is still listed as prepared just after, and is waited for too.
        // So an XA COMMIT the stream reads before this end, of a prepare it never read, is
        // one whose rows are in the copy.
        let end = binlog_end(&mut conn).await?;
        if let Some(now) = self.prepared_xids(&mut conn).await {
            let new: Vec<String> = now.into_iter().filter(|x| !settled.contains(x)).collect();
            settled.extend(new.iter().cloned());
            self.wait_for_xa(&mut conn, new, started).await?;
        }
        self.store.set_xa_settled(&self.source, &settled)?;
        self.store.set_xa_settled_until(&self.source, end)?;
        Ok(BinlogCheckpoint { file, pos, gtid })
    }

    /// Waits until none of the XA transactions `waiting` is prepared any more, for at most
    /// [`XA_WAIT`] after `started`.
    async fn wait_for_xa(
        &self,
        conn: &mut Conn,
        mut waiting: Vec<String>,
        started: tokio::time::Instant,
    ) -> Result<(), CaptureError> {
        let mut told = None::<tokio::time::Instant>;
        while !waiting.is_empty() {
            if started.elapsed() >= XA_WAIT {
                return Err(CaptureError::Setup(format!(
                    "the snapshot waited {}s for XA transactions prepared when it started to \
                     end, and {} still are ({}); their rows would be neither in the copy nor \
                     in the binlog stream: commit or roll them back (XA COMMIT / XA ROLLBACK), \
                     then start again",
                    XA_WAIT.as_secs(),
                    waiting.len(),
                    waiting.join(", ")
                )));
            }
            if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                told = Some(tokio::time::Instant::now());
                tracing::info!(source = self.source, prepared = %waiting.join(", "), "the snapshot waits for prepared XA transactions to end");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // (Not listed this time: keep waiting; the deadline ends it.)
            if let Some(now) = self.prepared_xids(conn).await {
                waiting.retain(|x| now.contains(x));
            }
        }
        Ok(())
    }

    /// The XA transactions prepared on the server now, spelled as the binlog's XA
    /// statements spell them (`X'<gtrid hex>',X'<bqual hex>',<formatID>`); `None` with a
    /// warning when they cannot be listed (MySQL needs XA_RECOVER_ADMIN).
    async fn prepared_xids(&self, conn: &mut mysql_async::Conn) -> Option<Vec<String>> {
        match conn
            .query::<(i32, usize, usize, Vec<u8>), _>("XA RECOVER")
            .await
        {
            Ok(rows) => Some(
                rows.into_iter()
                    .map(
                        |(format_id, gtrid, bqual, data): (i32, usize, usize, Vec<u8>)| {
                            let gtrid = gtrid.min(data.len());
                            let bqual = bqual.min(data.len() - gtrid);
                            statement::xid_text(
                                format_id,
                                &data[..gtrid],
                                &data[gtrid..gtrid + bqual],
                            )
                        },
                    )
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(
                    source = self.source,
                    error = %e,
                    "cannot list prepared XA transactions (MySQL needs XA_RECOVER_ADMIN); one \
                     prepared before the snapshot and committed after it stops the stream"
                );
                None
            }
        }
    }

    /// Copies the tables `progress` has not finished, in primary-key chunks, recording
    /// progress as chunks become durable. `truncate_first` first empties the sink tables
    /// (after a snapshot of an older version that kept no progress).
    async fn copy(
        &mut self,
        tables: &BTreeMap<TableId, MyTable>,
        mut progress: ChunkProgress,
        truncate_first: bool,
    ) -> Result<(), CaptureError> {
        let source = self.source.clone();
        let mut conn = connect(self.config.url.expose()).await?;
        for statement in ["SET NAMES utf8mb4", "SET SESSION time_zone = '+00:00'"] {
            conn.query_drop(statement)
                .await
                .map_err(|e| CaptureError::mysql("preparing the snapshot session", e))?;
        }
        let start = &progress.start;
        tracing::info!(
            source,
            file = start.file,
            pos = start.pos,
            tables = tables.keys().filter(|t| !progress.done.contains(t)).count(),
            run = progress.run,
            "copying tables in primary-key chunks; streaming starts at this binlog position"
        );
        let mut events = EventMaker {
            source: source.clone(),
            file: file_seq(&start.file)?,
            pos: start.pos,
            seq: u64::from(progress.run) << RUN_SHIFT,
            first: None,
            commit_ts_micros: now_micros(),
        };
        if truncate_first {
            tracing::warn!(
                source,
                "previous snapshot was interrupted; truncating sink tables before copying again"
            );
            for table in tables.values() {
                let event = events.make(table, Op::Truncate, None);
                self.publisher.event(&table.state.avro, &event).await?;
            }
        }
        let chunk_rows = self.config.snapshot_chunk_rows;
        // The last chunk handed to the transport: its mark, and the progress once it is durable.
        let mut in_flight: Option<(u64, ChunkProgress)> = None;
        for (id, table) in tables {
            if progress.done.contains(id) {
                continue;
            }
            let mut after = match &progress.current {
                Some((t, key)) if t == id => Some(key.clone()),
                _ => None,
            };
            loop {
                let sql = chunk_sql(id, table, after.as_deref(), chunk_rows)?;
                let (rows, last_key) =
                    copy_rows(&mut conn, id, table, &sql, &mut events, &mut self.publisher).await?;
                let mark = self.publisher.commit(None).await?;
                match last_key.filter(|_| rows == chunk_rows) {
                    Some(key) => progress.current = Some((id.clone(), key)),
                    None => {
                        progress.done.push(id.clone());
                        progress.current = None;
                    }
                }
                // Keep one chunk in flight while the next is read.
                if let Some((mark, durable)) = in_flight.replace((mark, progress.clone())) {
                    self.record(mark, durable).await?;
                }
                match &progress.current {
                    Some((_, key)) => after = Some(key.clone()),
                    None => break,
                }
            }
        }
        if let Some((mark, durable)) = in_flight {
            self.record(mark, durable).await?;
        }
        Ok(())
    }

    /// Stores `progress` once everything up to `mark` is durable.
    async fn record(&self, mark: u64, progress: ChunkProgress) -> Result<(), CaptureError> {
        self.publisher.wait_for(mark).await?;
        self.store
            .set_snapshot(&self.source, &SnapshotState::Chunks(progress.clone()))?;
        tracing::debug!(
            source = self.source,
            tables_done = progress.done.len(),
            table = progress.current.as_ref().map(|(t, _)| t.to_string()),
            "snapshot chunk durable"
        );
        Ok(())
    }
}

/// Sends the rows `sql` reads from table `id` to `out` as `Read` events; returns how
/// many, and the primary key (text-protocol bytes) of the last one.
async fn copy_rows(
    conn: &mut Conn,
    id: &TableId,
    table: &MyTable,
    sql: &str,
    events: &mut EventMaker,
    out: &mut (dyn SnapshotOutput + '_),
) -> Result<(usize, Option<Vec<Vec<u8>>>), CaptureError> {
    let reading = |e| CaptureError::mysql(format!("reading table {id}"), e);
    let mut result = conn.query_iter(sql).await.map_err(reading)?;
    let mut stream = result
        .stream::<mysql_async::Row>()
        .await
        .map_err(reading)?
        .ok_or_else(|| CaptureError::Decode(format!("reading table {id}: no result set")))?;
    let mut count = 0;
    let mut last = None;
    while let Some(row) = stream.next().await {
        let row = row.map_err(reading)?;
        let event = events.make(table, Op::Read, Some(read_row(id, table, &row)?));
        out.event(&table.state.avro, &event).await?;
        count += 1;
        last = Some(row);
    }
    let key = last.map(|row| {
        table
            .state
            .schema
            .primary_key
            .iter()
            .map(|&i| raw(&row, i).unwrap_or_default().to_vec())
            .collect()
    });
    Ok((count, key))
}

/// The bytes of column `i` of a text-protocol row (`None` for NULL).
fn raw(row: &mysql_async::Row, i: usize) -> Option<&[u8]> {
    match row.as_ref(i) {
        Some(mysql_async::Value::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    }
}

/// Numbers the snapshot's events at the start position.
struct EventMaker {
    source: String,
    file: u32,
    pos: u64,
    seq: u64,
    first: Option<Position>,
    commit_ts_micros: i64,
}

impl EventMaker {
    fn make(&mut self, table: &MyTable, op: Op, row: Option<Row>) -> ChangeEvent {
        self.seq += 1;
        let position = Position::mysql(self.file, self.pos, self.seq);
        let first = *self.first.get_or_insert(position);
        ChangeEvent {
            source: self.source.clone(),
            table: table.state.schema.table.clone(),
            schema_version: table.state.schema.version,
            op,
            key: row.as_ref().map(|r| table.key(r)).unwrap_or_default(),
            before: None,
            after: row,
            position,
            tx: TxMeta {
                id: None,
                commit_ts_micros: self.commit_ts_micros,
                first,
            },
            origin: None,
        }
    }
}
