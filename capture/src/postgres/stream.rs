//! The PostgreSQL capture agent: set-up, snapshot hand-off and the streaming loop.

use super::catalog::{endpoint, quote_ident, Catalog, SESSION_SETTINGS};
use super::config::PostgresSourceConfig;
use super::pgoutput::{decode, Message};
use super::relations::{key_of, table_schema, tuple_row};
use super::snapshot::{self, SnapshotPlan};
use crate::error::CaptureError;
use crate::publisher::{Acked, Publisher};
use crate::snapshot::SnapshotOutput;
use crate::state::{SnapshotState, StateStore};
use crate::table::TableState;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tributary_schemas::{ChangeEvent, Op, Position, TableId, TxMeta};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The transaction being streamed.
struct OpenTx {
    lsn: u64,
    xid: u32,
    commit_ts_micros: i64,
    seq: u64,
    origin: Option<String>,
}

/// Copies the tables `config` captures from source `source`, consistent with one point of
/// its WAL, into `out` (a backup snapshot), in chunks of `chunk_rows` rows.
///
/// A temporary logical slot exports the snapshot and is dropped when the copy ends. Rows
/// come as `Read` events at positions `(consistent point - 1, n)`, as the initial
/// snapshot's do: every transaction the capture streams afterwards with a commit at or
/// after that point sorts after them, and every earlier one is in the copy. Table versions
/// are registered in `store`. Returns the consistent point (an LSN) and the server's time
/// just after it (microseconds since the Unix epoch), which every copied transaction's
/// commit time precedes.
pub async fn copy_tables(
    source: &str,
    config: &PostgresSourceConfig,
    store: &StateStore,
    chunk_rows: usize,
    copy_sessions: usize,
    out: &mut (dyn SnapshotOutput + '_),
) -> Result<(u64, i64), CaptureError> {
    let mut catalog = Catalog::connect(config.url.expose()).await?;
    catalog.preflight().await?;
    let tables = catalog.tables(config).await?;
    // One per copy: a scheduled snapshot and a manual one may run at once.
    static COPIES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let slot = format!(
        "tributary_backup_{}_{}_{}",
        source.to_ascii_lowercase().replace('-', "_"),
        std::process::id(),
        COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let repl_config =
        replication_config(config.url.expose(), &slot, &config.publication_name(source))?;
    let mut client = ReplicationClient::connect_gated(repl_config)
        .await
        .map_err(|e| repl_error(config.url.expose(), e))?;
    let rows = client
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')",
            quote_ident(&slot)
        ))
        .await
        .map_err(|e| repl_error(config.url.expose(), e))?;
    let field = |i: usize| -> Result<String, CaptureError> {
        rows.first()
            .and_then(|r| r.get(i).cloned().flatten())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| {
                CaptureError::Replication("CREATE_REPLICATION_SLOT returned no row".into())
            })
    };
    let consistent = Lsn::parse(&field(1)?)
        .map_err(|e| CaptureError::Replication(format!("bad consistent point: {e}")))?;
    let snapshot_name = field(2)?;
    // The server's clock now: every transaction in the copy committed before it.
    let consistent_at: i64 = catalog
        .client()
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8",
            &[],
        )
        .await
        .map_err(|e| CaptureError::pg("reading the server's clock", e))?
        .get(0);
    tracing::info!(source, consistent_point = %consistent, tables = tables.len(), "backup snapshot: copying tables");
    let copied = snapshot::run(
        SnapshotPlan {
            source,
            url: config.url.expose(),
            snapshot_name: &snapshot_name,
            consistent_lsn: consistent.as_u64(),
            tables: &tables,
            restart: false,
            chunk_rows,
            copy_sessions,
        },
        &mut catalog,
        store,
        out,
    )
    .await;
    client.stop();
    copied?;
    Ok((consistent.as_u64(), consistent_at))
}

/// Captures one PostgreSQL database.
pub struct PostgresCapture {
    source: String,
    config: PostgresSourceConfig,
    store: StateStore,
    publisher: Publisher,
}

impl PostgresCapture {
    /// An agent for source `source`.
    pub fn new(
        source: &str,
        config: PostgresSourceConfig,
        store: StateStore,
        publisher: Publisher,
    ) -> Self {
        PostgresCapture {
            source: source.to_string(),
            config,
            store,
            publisher,
        }
    }

    /// Runs until `shutdown` turns true or an error occurs.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), CaptureError> {
        let source = self.source.clone();
        let mut catalog = Catalog::connect(self.config.url.expose()).await?;
        catalog.preflight().await?;
        self.publisher.connected();
        let tables = catalog.tables(&self.config).await?;
        let publication = self.config.publication_name(&source);
        let slot_name = self.config.slot_name(&source);
        catalog.ensure_publication(&publication, &tables).await?;
        let slot = catalog.slot(&slot_name).await?;
        let state = self.store.snapshot(&source)?;
        let repl_config = replication_config(self.config.url.expose(), &slot_name, &publication)?;

        let mut relations: HashMap<u32, TableState> = HashMap::new();
        let mut client = match (state, slot) {
            (Some(SnapshotState::Done { .. }), Some(slot)) => {
                if slot.plugin != "pgoutput" {
                    return Err(CaptureError::Setup(format!(
                        "slot {slot_name} uses plugin {}, Tributary needs pgoutput; drop it or configure another slot",
                        slot.plugin
                    )));
                }
                if slot.active {
                    // Transient: a previous session of ours may not have ended yet.
                    return Err(CaptureError::Replication(format!(
                        "slot {slot_name} is in use by another session (another capture of source {source}?)"
                    )));
                }
                tracing::info!(source, slot = slot_name, "resuming from replication slot");
                ReplicationClient::connect(repl_config)
                    .await
                    .map_err(|e| repl_error(self.config.url.expose(), e))?
            }
            (Some(SnapshotState::Done { .. }), None) => {
                return Err(CaptureError::Setup(format!(
                    "slot {slot_name} is gone although source {source} finished its snapshot, so changes since the last confirmed position may be lost; \
                     remove this source's state (state_dir) to take a new snapshot"
                )))
            }
            (state, slot) => {
                if slot.is_some() {
                    tracing::warn!(slot = slot_name, "dropping slot of an unfinished snapshot");
                    catalog.drop_slot(&slot_name).await?;
                }
                let restart = state.is_some();
                self.store.set_snapshot(&source, &SnapshotState::InProgress)?;
                let mut client = ReplicationClient::connect_gated(repl_config)
                    .await
                    .map_err(|e| repl_error(self.config.url.expose(), e))?;
                let rows = client
                    .simple_query(&format!(
                        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
                        quote_ident(&slot_name)
                    ))
                    .await
                    .map_err(|e| repl_error(self.config.url.expose(), e))?;
                let field = |i: usize| -> Result<String, CaptureError> {
                    rows.first()
                        .and_then(|r| r.get(i).cloned().flatten())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .ok_or_else(|| CaptureError::Replication("CREATE_REPLICATION_SLOT returned no row".into()))
                };
                let consistent = Lsn::parse(&field(1)?)
                    .map_err(|e| CaptureError::Replication(format!("bad consistent point: {e}")))?;
                let snapshot_name = field(2)?;
                tracing::info!(source, slot = slot_name, consistent_point = %consistent, "slot created; copying tables");
                relations = snapshot::run(
                    SnapshotPlan {
                        source: &source,
                        url: self.config.url.expose(),
                        snapshot_name: &snapshot_name,
                        consistent_lsn: consistent.as_u64(),
                        tables: &tables,
                        restart,
                        chunk_rows: self.config.snapshot_chunk_rows,
                        copy_sessions: 1,
                    },
                    &mut catalog,
                    &self.store,
                    &mut self.publisher,
                )
                .await?;
                self.store.set_snapshot(
                    &source,
                    &SnapshotState::Done {
                        lsn: consistent.as_u64(),
                    },
                )?;
                tracing::info!(source, "snapshot finished; streaming");
                client.start().await.map_err(|e| repl_error(self.config.url.expose(), e))?;
                client
            }
        };
        client
            .wait_started()
            .await
            .map_err(|e| repl_error(self.config.url.expose(), e))?;
        // The stream re-describes every table before its first change, so the snapshot's
        // states are only a cache.
        let result = self
            .stream(&mut client, &mut catalog, &mut relations, &mut shutdown)
            .await;
        client.stop();
        result
    }

    async fn stream(
        &mut self,
        client: &mut ReplicationClient,
        catalog: &mut Catalog,
        relations: &mut HashMap<u32, TableState>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), CaptureError> {
        let mut acked = self.publisher.acked();
        let mut last_mark = 0u64;
        let mut open: Option<OpenTx> = None;
        let heartbeat_every = Duration::from_secs(self.config.heartbeat_secs.max(1));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        let mut heartbeats = self.config.heartbeat_secs > 0;
        loop {
            tokio::select! {
                biased;
                // Shutdown first: stop reading; nothing unacknowledged was confirmed.
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        tracing::info!(source = self.source, "capture stopping");
                        return Ok(());
                    }
                }
                // Then acknowledgements, so the slot advances as soon as data is durable.
                changed = acked.changed() => {
                    let a = Acked::take(&mut acked, changed)?;
                    if let Some(lsn) = a.token {
                        client.update_applied_lsn(Lsn::from_u64(lsn));
                    }
                }
                // Heartbeats only when idle-ish; a failure disables them with one warning.
                _ = heartbeat.tick(), if heartbeats => {
                    if let Err(e) = catalog.heartbeat().await {
                        tracing::warn!(error = %e, "heartbeats disabled");
                        heartbeats = false;
                    }
                }
                event = client.recv() => {
                    let event = event.map_err(|e| repl_error(self.config.url.expose(), e))?;
                    match event {
                        None => return Err(CaptureError::Replication("the server ended the replication stream".into())),
                        Some(ReplicationEvent::Begin { final_lsn, xid, commit_time_micros }) => {
                            open = Some(OpenTx {
                                lsn: final_lsn.as_u64(),
                                xid,
                                commit_ts_micros: commit_time_micros + PG_EPOCH_OFFSET_MICROS,
                                seq: 0,
                                origin: None,
                            });
                        }
                        Some(ReplicationEvent::XLogData { data, .. }) => {
                            let message = decode(&data)?;
                            self.handle(message, open.as_mut(), catalog, relations).await?;
                        }
                        Some(ReplicationEvent::Commit { end_lsn, .. }) => {
                            open = None;
                            last_mark = self.publisher.commit(Some(end_lsn.as_u64())).await?;
                        }
                        Some(ReplicationEvent::KeepAlive { wal_end, .. }) => {
                            // Idle and everything durable: the server has sent all it has
                            // up to wal_end, so confirming it loses nothing.
                            if open.is_none() && acked.borrow().mark >= last_mark && acked.borrow().failed.is_none() {
                                client.update_applied_lsn(wal_end);
                            }
                        }
                        Some(ReplicationEvent::Message { .. }) => {}
                        Some(ReplicationEvent::StoppedAt { .. }) => return Ok(()),
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        message: Message,
        open: Option<&mut OpenTx>,
        catalog: &mut Catalog,
        relations: &mut HashMap<u32, TableState>,
    ) -> Result<(), CaptureError> {
        match message {
            Message::Relation(rel) => {
                let table = TableId::new(&rel.schema, &rel.name);
                let mut key = catalog.primary_key(rel.id).await?;
                if key.is_empty() {
                    key = rel
                        .columns
                        .iter()
                        .filter(|c| c.key)
                        .map(|c| c.name.clone())
                        .collect();
                }
                let columns: Vec<(String, u32, i32)> = rel
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.type_oid, c.typmod))
                    .collect();
                let state = table_schema(
                    catalog,
                    &self.store,
                    &self.source,
                    rel.id,
                    table,
                    &columns,
                    &key,
                )
                .await?;
                if relations.get(&rel.id).map(|s| s.schema.version) != Some(state.schema.version) {
                    tracing::info!(table = %state.schema.table, version = state.schema.version, "table schema");
                }
                relations.insert(rel.id, state);
                Ok(())
            }
            Message::Origin { name } => {
                if let Some(tx) = open {
                    tx.origin = Some(name);
                }
                Ok(())
            }
            Message::Begin | Message::Commit | Message::Type | Message::LogicalMessage => Ok(()),
            Message::Insert { relation, new } => {
                let tx = open.ok_or_else(|| outside_tx("insert"))?;
                let state = known(relations, relation)?;
                let after = tuple_row(&state.schema, new)?;
                let key = key_of(&state.schema, &after);
                self.publish(tx, state, Op::Insert, key, None, Some(after))
                    .await
            }
            Message::Update { relation, old, new } => {
                let tx = open.ok_or_else(|| outside_tx("update"))?;
                let state = known(relations, relation)?;
                let after = tuple_row(&state.schema, new)?;
                let before = old.map(|(_, t)| tuple_row(&state.schema, t)).transpose()?;
                let key = key_of(&state.schema, &after);
                self.publish(tx, state, Op::Update, key, before, Some(after))
                    .await
            }
            Message::Delete { relation, old, .. } => {
                let tx = open.ok_or_else(|| outside_tx("delete"))?;
                let state = known(relations, relation)?;
                let before = tuple_row(&state.schema, old)?;
                let key = key_of(&state.schema, &before);
                self.publish(tx, state, Op::Delete, key, Some(before), None)
                    .await
            }
            Message::Truncate { relations: ids } => {
                let tx = open.ok_or_else(|| outside_tx("truncate"))?;
                for id in ids {
                    let state = known(relations, id)?;
                    self.publish(tx, state, Op::Truncate, Vec::new(), None, None)
                        .await?;
                }
                Ok(())
            }
        }
    }

    async fn publish(
        &mut self,
        tx: &mut OpenTx,
        state: &TableState,
        op: Op,
        key: Vec<tributary_schemas::Value>,
        before: Option<tributary_schemas::Row>,
        after: Option<tributary_schemas::Row>,
    ) -> Result<(), CaptureError> {
        tx.seq += 1;
        let event = ChangeEvent {
            source: self.source.clone(),
            table: state.schema.table.clone(),
            schema_version: state.schema.version,
            op,
            key,
            before,
            after,
            position: Position::pg(tx.lsn, tx.seq),
            tx: TxMeta {
                id: Some(tx.xid as u64),
                commit_ts_micros: tx.commit_ts_micros,
                first: Position::pg(tx.lsn, 1),
            },
            origin: tx.origin.clone(),
        };
        self.publisher.event(&state.avro, &event).await
    }
}

fn known(relations: &HashMap<u32, TableState>, id: u32) -> Result<&TableState, CaptureError> {
    relations.get(&id).ok_or_else(|| {
        CaptureError::Decode(format!(
            "change for relation {id} before its Relation message"
        ))
    })
}

fn outside_tx(what: &str) -> CaptureError {
    CaptureError::Decode(format!("{what} outside a transaction"))
}

fn repl_error(url: &str, e: pgwire_replication::PgWireError) -> CaptureError {
    let at = url
        .parse::<tokio_postgres::Config>()
        .map(|c| endpoint(&c))
        .unwrap_or_default();
    match e {
        pgwire_replication::PgWireError::Auth(m) => CaptureError::Setup(format!(
            "replication connection to {at}: authentication failed: {m}"
        )),
        pgwire_replication::PgWireError::Server(m)
            if m.contains("42501") || m.contains("permission denied") =>
        {
            CaptureError::Setup(format!("replication connection to {at}: {m}"))
        }
        other => CaptureError::Replication(format!("{at}: {other}")),
    }
}

/// The replication session's configuration from the source URL.
fn replication_config(
    url: &str,
    slot: &str,
    publication: &str,
) -> Result<ReplicationConfig, CaptureError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| CaptureError::Setup(format!("source url is not a PostgreSQL URL: {e}")))?;
    let user = config.get_user().unwrap_or("postgres").to_string();
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let database = config.get_dbname().unwrap_or(&user).to_string();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let options: String = SESSION_SETTINGS
        .iter()
        .map(|(k, v)| format!("-c {k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let base = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => {
            ReplicationConfig::new(host.clone(), user, password, database, slot, publication)
                .with_port(port)
        }
        Some(tokio_postgres::config::Host::Unix(dir)) => ReplicationConfig::unix(
            dir.display().to_string(),
            port,
            user,
            password,
            database,
            slot,
            publication,
        ),
        None => ReplicationConfig::new("localhost", user, password, database, slot, publication)
            .with_port(port),
    };
    Ok(base
        .with_options(options)
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(5))
        .with_buffer_size(4096)
        .with_application_name(format!("tributary-{slot}")))
}
