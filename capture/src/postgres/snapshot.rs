//! The initial snapshot: every captured table copied inside the slot's exported snapshot.
//!
//! Rows are read with `COPY (SELECT ...) TO STDOUT` (text format, streamed, so memory stays
//! flat whatever the table size) and published as `Read` events at position
//! `(consistent point - 1, n)`: just before any streamed transaction, all of which commit
//! at or after the consistent point. Every `snapshot_chunk_rows` events close a snapshot
//! transaction so sinks apply the load in bounded steps. When a previous snapshot was
//! interrupted, the new one first publishes a truncate of every table, so rows the first
//! attempt copied and that were deleted since do not survive in the sinks.

use super::catalog::{quote_ident, Catalog, CatalogTable};
use super::relations::{copy_line_row, key_of, table_schema};
use crate::error::CaptureError;
use crate::snapshot::{now_micros, SnapshotOutput};
use crate::state::StateStore;
use crate::table::TableState;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Instant;
use tributary_schemas::{ChangeEvent, Op, Position, TableId, TableSchema, TxMeta};

/// What the snapshot needs to know.
pub struct SnapshotPlan<'a> {
    /// Source name.
    pub source: &'a str,
    /// Source URL (a separate session reads the data).
    pub url: &'a str,
    /// Name of the exported snapshot (empty: a transaction of its own).
    pub snapshot_name: &'a str,
    /// The slot's consistent point.
    pub consistent_lsn: u64,
    /// Tables to copy.
    pub tables: &'a [CatalogTable],
    /// Whether an earlier attempt was interrupted (publish truncates first).
    pub restart: bool,
    /// Rows per snapshot transaction.
    pub chunk_rows: usize,
    /// Sessions that copy one table's page ranges at once, for an output that takes COPY
    /// text from a named exported snapshot (each session imports it); 1: one at a time.
    pub copy_sessions: usize,
}

struct Chunk {
    lsn: u64,
    seq: u64,
    first: Option<Position>,
    rows: usize,
    commit_ts_micros: i64,
}

impl Chunk {
    fn next_position(&mut self) -> (Position, Position) {
        self.seq += 1;
        let position = Position::pg(self.lsn, self.seq);
        let first = *self.first.get_or_insert(position);
        (position, first)
    }
}

/// Copies every table and publishes the rows; returns the table states by table OID.
pub async fn run(
    plan: SnapshotPlan<'_>,
    catalog: &mut Catalog,
    store: &StateStore,
    publisher: &mut (dyn SnapshotOutput + '_),
) -> Result<HashMap<u32, TableState>, CaptureError> {
    let session = Catalog::connect(plan.url).await?;
    let client = session.client();
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| CaptureError::pg("opening snapshot transaction", e))?;
    if !plan.snapshot_name.is_empty() {
        client
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT '{}'",
                plan.snapshot_name
            ))
            .await
            .map_err(|e| CaptureError::pg("importing the slot's snapshot", e))?;
    }

    // Helper sessions in the same snapshot, which copy parts of the bigger tables.
    let mut helpers = Vec::new();
    if publisher.wants_copy_text() && !plan.snapshot_name.is_empty() && plan.copy_sessions > 1 {
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| CaptureError::pg("reading the server version", e))?
            .get(0);
        // Before PostgreSQL 14 a ctid range is no index: each session would read it all.
        if version >= 140_000 {
            for _ in 1..plan.copy_sessions {
                let helper = Catalog::connect(plan.url).await?;
                helper
                    .client()
                    .batch_execute(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                        plan.snapshot_name
                    ))
                    .await
                    .map_err(|e| CaptureError::pg("importing the slot's snapshot", e))?;
                helpers.push(helper);
            }
        }
    }

    let mut states = HashMap::new();
    for t in plan.tables {
        let state = table_schema(
            catalog,
            store,
            plan.source,
            t.oid,
            TableId::new(&t.schema, &t.name),
            &t.columns,
            &t.primary_key,
        )
        .await?;
        states.insert(t.oid, state);
    }

    let mut chunk = Chunk {
        lsn: plan.consistent_lsn.saturating_sub(1),
        seq: 0,
        first: None,
        rows: 0,
        commit_ts_micros: now_micros(),
    };
    if plan.restart {
        tracing::warn!(
            source = plan.source,
            "previous snapshot was interrupted; truncating sink tables before copying again"
        );
        for t in plan.tables {
            let state = &states[&t.oid];
            let (position, first) = chunk.next_position();
            let event = ChangeEvent {
                source: plan.source.to_string(),
                table: state.schema.table.clone(),
                schema_version: state.schema.version,
                op: Op::Truncate,
                key: Vec::new(),
                before: None,
                after: None,
                position,
                tx: TxMeta {
                    id: None,
                    commit_ts_micros: chunk.commit_ts_micros,
                    first,
                },
                origin: None,
            };
            publisher.event(&state.avro, &event).await?;
        }
        close_chunk(&mut chunk, publisher).await?;
    }

    for t in plan.tables {
        let state = &states[&t.oid];
        if publisher.wants_copy_text() {
            let mut sessions = vec![client];
            sessions.extend(helpers.iter().map(|h| h.client()));
            copy_table_text(t.oid, &state.schema, &sessions, publisher).await?;
        } else {
            copy_table(&plan, client, state, &mut chunk, publisher).await?;
        }
    }
    close_chunk(&mut chunk, publisher).await?;
    publisher.finish().await?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| CaptureError::pg("closing snapshot transaction", e))?;
    Ok(states)
}

async fn close_chunk(
    chunk: &mut Chunk,
    publisher: &mut (dyn SnapshotOutput + '_),
) -> Result<(), CaptureError> {
    if chunk.first.is_some() {
        publisher.close_chunk().await?;
    }
    chunk.first = None;
    chunk.rows = 0;
    chunk.commit_ts_micros = now_micros();
    Ok(())
}

async fn copy_table(
    plan: &SnapshotPlan<'_>,
    client: &tokio_postgres::Client,
    state: &TableState,
    chunk: &mut Chunk,
    publisher: &mut (dyn SnapshotOutput + '_),
) -> Result<(), CaptureError> {
    let schema = &state.schema;
    let sql = format!("COPY ({}) TO STDOUT", select_all(schema));
    let started = Instant::now();
    let stream = client
        .copy_out(&sql)
        .await
        .map_err(|e| CaptureError::pg(format!("copying {}", schema.table), e))?;
    futures::pin_mut!(stream);
    let mut pending: Vec<u8> = Vec::new();
    let mut rows: u64 = 0;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.map_err(|e| CaptureError::pg(format!("copying {}", schema.table), e))?;
        pending.extend_from_slice(&bytes);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            let row = copy_line_row(schema, line)?;
            let (position, first) = chunk.next_position();
            let event = ChangeEvent {
                source: plan.source.to_string(),
                table: schema.table.clone(),
                schema_version: schema.version,
                op: Op::Read,
                key: key_of(schema, &row),
                before: None,
                after: Some(row),
                position,
                tx: TxMeta {
                    id: None,
                    commit_ts_micros: chunk.commit_ts_micros,
                    first,
                },
                origin: None,
            };
            publisher.event(&state.avro, &event).await?;
            rows += 1;
            chunk.rows += 1;
            if chunk.rows >= plan.chunk_rows {
                close_chunk(chunk, publisher).await?;
            }
            if rows.is_multiple_of(100_000) {
                tracing::info!(table = %schema.table, rows, elapsed_s = started.elapsed().as_secs(), "snapshot progress");
            }
            start += end + 1;
        }
        pending.drain(..start);
    }
    tracing::info!(table = %schema.table, rows, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot of table done");
    Ok(())
}

/// `SELECT <every column> FROM <table>`.
fn select_all(schema: &TableSchema) -> String {
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    format!(
        "SELECT {} FROM {}.{}",
        columns.join(", "),
        quote_ident(&schema.table.schema),
        quote_ident(&schema.table.name)
    )
}

/// Bytes of COPY text handed on at once.
const COPY_TEXT_BYTES: usize = 1 << 20;

/// Pages (8 kB) below which a table is copied by one session.
const SPLIT_PAGES: i64 = 1024;

/// Copies table `oid` (`schema`) to `out` as COPY text. A table of [`SPLIT_PAGES`] or
/// more is cut into one range of pages (`ctid`) per session, all copied at once: every
/// session holds the same snapshot, and the order of a snapshot's rows does not matter.
async fn copy_table_text(
    oid: u32,
    schema: &TableSchema,
    sessions: &[&tokio_postgres::Client],
    out: &mut (dyn SnapshotOutput + '_),
) -> Result<(), CaptureError> {
    let started = Instant::now();
    let what = || format!("copying {}", schema.table);
    let pages: i64 = if sessions.len() > 1 {
        sessions[0]
            .query_one(
                "SELECT pg_relation_size($1::oid) / current_setting('block_size')::int8",
                &[&oid],
            )
            .await
            .map_err(|e| CaptureError::pg(what(), e))?
            .get(0)
    } else {
        0
    };
    let parts = if pages >= SPLIT_PAGES {
        sessions.len()
    } else {
        1
    };
    let select = select_all(schema);
    let mut streams = Vec::with_capacity(parts);
    for (i, session) in sessions.iter().take(parts).enumerate() {
        // Pages [from, to) of the table as the copy started; the last range is open, so
        // nothing the snapshot sees is left out.
        let from = pages * i as i64 / parts as i64;
        let to = pages * (i as i64 + 1) / parts as i64;
        let range = match (i, i + 1 == parts) {
            (0, true) => String::new(),
            (0, false) => format!(" WHERE ctid < '({to},0)'"),
            (_, true) => format!(" WHERE ctid >= '({from},0)'"),
            _ => format!(" WHERE ctid >= '({from},0)' AND ctid < '({to},0)'"),
        };
        let stream = session
            .copy_out(&format!("COPY ({select}{range}) TO STDOUT"))
            .await
            .map_err(|e| CaptureError::pg(what(), e))?;
        streams.push(Box::pin(stream));
    }
    let rows = pass_copy_text(schema, streams, out).await?;
    tracing::info!(table = %schema.table, rows, sessions = parts, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot of table done");
    Ok(())
}

/// Hands the COPY text of `streams` (parts of one table) to `out` in whole lines, about
/// [`COPY_TEXT_BYTES`] at a time, as each part delivers it; returns the rows. Each part
/// is read by a task of its own, beside its connection's task (one row per message
/// would otherwise cost a wake-up across threads each), and keeps a line cut across
/// messages until its end comes.
async fn pass_copy_text(
    schema: &TableSchema,
    streams: Vec<std::pin::Pin<Box<tokio_postgres::CopyOutStream>>>,
    out: &mut (dyn SnapshotOutput + '_),
) -> Result<u64, CaptureError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2 * streams.len());
    for stream in streams {
        let tx = tx.clone();
        let table = schema.table.clone();
        tokio::spawn(async move {
            if let Err(e) = read_part(stream, &table, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    drop(tx);
    let mut rows = 0;
    while let Some(lines) = rx.recv().await {
        let (lines, n): (Vec<u8>, u64) = lines?;
        out.copy_text(schema, &lines, n).await?;
        rows += n;
    }
    Ok(rows)
}

/// Reads one part of a table's COPY text into `tx`, in whole lines with their count.
async fn read_part(
    mut stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    table: &TableId,
    tx: &tokio::sync::mpsc::Sender<Result<(Vec<u8>, u64), CaptureError>>,
) -> Result<(), CaptureError> {
    let closed = || CaptureError::Setup(format!("copying {table}: the snapshot stopped"));
    let mut buf: Vec<u8> = Vec::with_capacity(COPY_TEXT_BYTES + (64 << 10));
    let mut rows: u64 = 0;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.map_err(|e| CaptureError::pg(format!("copying {table}"), e))?;
        // One row a message as the server sends it, but counted: nothing promises that.
        rows += memchr::memchr_iter(b'\n', &bytes).count() as u64;
        buf.extend_from_slice(&bytes);
        if buf.len() >= COPY_TEXT_BYTES {
            let end = memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
            if end > 0 {
                let mut rest = Vec::with_capacity(COPY_TEXT_BYTES + (64 << 10));
                rest.extend_from_slice(&buf[end..]);
                buf.truncate(end);
                let full = std::mem::replace(&mut buf, rest);
                tx.send(Ok((full, rows))).await.map_err(|_| closed())?;
                rows = 0;
            }
        }
    }
    if !buf.is_empty() && !buf.ends_with(b"\n") {
        return Err(CaptureError::Decode(format!(
            "table {table}: the COPY output ends inside a line"
        )));
    }
    if !buf.is_empty() {
        tx.send(Ok((buf, rows))).await.map_err(|_| closed())?;
    }
    Ok(())
}
