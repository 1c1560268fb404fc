//! The PostgreSQL sink: connection, transaction state, per-table writers, and the
//! pipelining of batches.
//!
//! Within a transaction one batch at a time is *in flight*: its flush (COPY and
//! statements) runs on a spawned task while the caller's task folds and encodes the next
//! batch, possibly in the next `apply` call. Before anything else touches the connection
//! (the next step, `commit`, `rollback`, `watermark`), the in-flight flush is awaited and
//! its error, if any, is returned there. Errors therefore surface at most one call late,
//! always inside the same transaction, which they abort.

use crate::error::SinkError;
use crate::postgres::apply::TableWriter;
use crate::postgres::config::{address, PostgresSinkConfig};
use crate::postgres::merge_state;
use crate::postgres::stage::{Staged, Step, Steps};
use crate::postgres::watermark::{self, WATERMARK_TABLE};
use crate::{CopyLoad, MergeStates, OriginTag, Sink};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use tracing::{info, info_span, warn, Instrument};
use tributary_schemas::{ChangeEvent, Position, TableId, TableSchema};

/// A source table at one schema version.
type WriterKey = (TableId, u32);

/// Direct copies (savepoints) at most per transaction. A transaction with more than 64
/// subtransactions overflows the server's per-backend cache of them, which slows every
/// other session's snapshots while it runs; later batches go the staged way.
const MAX_DIRECT_COPIES: usize = 32;

/// A flush running on its own task, holding its writer until it is done.
struct InFlight {
    key: WriterKey,
    task: JoinHandle<(TableWriter, Result<(), SinkError>)>,
}

/// A sink writing to one PostgreSQL database over one connection.
pub struct PostgresSink {
    config: PostgresSinkConfig,
    address: String,
    client: Arc<Client>,
    in_transaction: bool,
    /// Writers by source table and schema version. Cleared on rollback, because what they
    /// created or prepared in the rolled-back transaction is gone.
    writers: HashMap<WriterKey, TableWriter>,
    /// Staging table name of each source table version; outlives rollbacks so a staging
    /// table committed earlier is reused rather than duplicated.
    stage_names: HashMap<WriterKey, String>,
    next_stage: u64,
    /// The batch being written while the next one is prepared.
    in_flight: Option<InFlight>,
    /// The replication origin every write is tagged with, if any.
    origin: Option<String>,
    /// Whether a call failed in the open transaction, which then may only be rolled back.
    failed: bool,
    /// Whether writes carry the origin (false without the rights to set it up).
    tagged: bool,
    /// Batches copied straight into their target (each in a savepoint) in the open
    /// transaction.
    direct_copies: usize,
}

impl PostgresSink {
    /// Connects, and creates the watermark table if it is missing.
    pub async fn connect(config: PostgresSinkConfig) -> Result<Self, SinkError> {
        config.validate()?;
        let (client, address) = open(&config).await?;
        watermark::ensure_table(&client).await?;
        merge_state::ensure_table(&client).await?;
        info!(address = %address, "connected to postgres sink");
        Ok(PostgresSink {
            config,
            address,
            client: Arc::new(client),
            in_transaction: false,
            writers: HashMap::new(),
            stage_names: HashMap::new(),
            next_stage: 1,
            in_flight: None,
            origin: None,
            failed: false,
            tagged: true,
            direct_copies: 0,
        })
    }

    /// The configuration the sink was connected with.
    pub fn config(&self) -> &PostgresSinkConfig {
        &self.config
    }

    /// `host:port` of the sink database.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Replaces a broken connection (only between transactions).
    async fn reconnect_if_closed(&mut self) -> Result<(), SinkError> {
        if self.client.is_closed() {
            self.reconnect().await?;
        }
        Ok(())
    }

    /// Replaces the connection (only between transactions).
    async fn reconnect(&mut self) -> Result<(), SinkError> {
        warn!(address = %self.address, "sink connection lost; reconnecting");
        let (client, _) = open(&self.config).await?;
        if let Some(name) = &self.origin {
            self.tagged = setup_origin(&client, name, &self.address).await?;
        }
        self.client = Arc::new(client);
        // Temporary tables and prepared statements died with the old session.
        self.writers.clear();
        self.stage_names.clear();
        Ok(())
    }

    /// Makes sure a writer for `table` exists: on first use of a version the target table
    /// is ensured and the staging table created.
    async fn ensure_writer(&mut self, table: &TableSchema) -> Result<(), SinkError> {
        let key = (table.table.clone(), table.version);
        let ready = self
            .writers
            .get(&key)
            .is_some_and(|w| w.schema().same_shape(table));
        if !ready {
            // A different shape under a known version gets a staging table of its own.
            let reusable = !self.writers.contains_key(&key);
            let stage = match self.stage_names.get(&key) {
                Some(name) if reusable => name.clone(),
                _ => {
                    let name = format!("tributary_stage_{}", self.next_stage);
                    self.next_stage += 1;
                    self.stage_names.insert(key.clone(), name.clone());
                    name
                }
            };
            let target = self.config.target_table(&table.table);
            let writer = TableWriter::prepare(&self.client, &target, table.clone(), &stage).await?;
            self.writers.insert(key, writer);
        }
        Ok(())
    }

    /// Starts writing `staged` with the writer of `key` on a task of its own.
    fn launch(&mut self, key: WriterKey, staged: Staged) {
        let mut writer = self
            .writers
            .remove(&key)
            .expect("the writer is prepared before its first step");
        let direct =
            staged.fresh && self.direct_copies < MAX_DIRECT_COPIES && writer.direct_ready();
        self.direct_copies += usize::from(direct);
        let client = Arc::clone(&self.client);
        let rows = staged.upserts + staged.deletes + staged.patches;
        let span = info_span!("sink_flush", table = %key.0, rows);
        let task = tokio::spawn(
            async move {
                let result = writer.flush(&client, &staged, direct).await;
                (writer, result)
            }
            .instrument(span),
        );
        self.in_flight = Some(InFlight { key, task });
    }

    /// Waits for the in-flight flush, if any, and returns its outcome.
    async fn settle(&mut self) -> Result<(), SinkError> {
        let Some(InFlight { key, task }) = self.in_flight.take() else {
            return Ok(());
        };
        match task.await {
            Ok((writer, result)) => {
                self.writers.insert(key, writer);
                result
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(SinkError::Protocol(format!(
                "the write of a batch of {} was cancelled: {e}",
                key.0
            ))),
        }
    }

    /// Folds, stages and writes `events`, keeping one batch in flight.
    async fn apply_events(
        &mut self,
        table: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        if table.primary_key.is_empty() {
            return Err(SinkError::NoPrimaryKey {
                table: table.table.to_string(),
            });
        }
        let key = (table.table.clone(), table.version);
        let mut steps = Steps::new(table, events, self.config.batch_rows);
        let mut prepared = false;
        loop {
            // Fold and encode the next batch while the previous one is being written; the
            // last batch stays in flight while the caller prepares its next call.
            let Some(step) = steps.next_step()? else {
                return Ok(());
            };
            self.settle().await?;
            if !prepared {
                self.ensure_writer(table).await?;
                prepared = true;
            }
            let writer = self.writers.get_mut(&key).expect("writer ensured above");
            match step {
                Step::Flush(staged) => self.launch(key.clone(), staged),
                Step::Truncate => writer.truncate(&self.client).await?,
                Step::Rekey { old_key, row } => writer.rekey(&self.client, &old_key, &row).await?,
            }
        }
    }

    /// Checks that a transaction is open and usable, and waits for the in-flight flush,
    /// before a statement of `what` on the connection.
    async fn ready(&mut self, what: &str) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Err(SinkError::Protocol(format!("{what} outside a transaction")));
        }
        if self.failed {
            return Err(SinkError::Protocol(format!(
                "{what} after a failed call in the same transaction; roll back first"
            )));
        }
        if let Err(e) = self.settle().await {
            self.failed = true;
            return Err(e);
        }
        Ok(())
    }

    /// Marks the transaction failed when `result` is an error.
    fn mark<T>(&mut self, result: Result<T, SinkError>) -> Result<T, SinkError> {
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn transaction_ended(&mut self) {
        self.in_transaction = false;
        self.failed = false;
        self.direct_copies = 0;
        for writer in self.writers.values_mut() {
            writer.transaction_ended();
        }
    }
}

/// Opens a connection and spawns the task that drives it.
pub(crate) async fn open(config: &PostgresSinkConfig) -> Result<(Client, String), SinkError> {
    let pg = config.connection()?;
    let address = address(&pg);
    let (client, connection) = pg
        .connect(NoTls)
        .await
        .map_err(|e| SinkError::connect(&address, e))?;
    let task_address = address.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            let e = SinkError::postgres("running the connection", &task_address, e);
            warn!(address = %task_address, error = %e, "sink connection ended");
        }
    });
    Ok((client, address))
}

/// Makes `client`'s session replay under replication origin `name` (created if missing),
/// so its transactions carry the origin in logical decoding. Without the rights
/// (superuser, or EXECUTE on the `pg_replication_origin_*` functions) it warns and goes on
/// untagged.
async fn setup_origin(client: &Client, name: &str, address: &str) -> Result<bool, SinkError> {
    let denied = |e: &tokio_postgres::Error| {
        e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    };
    let create = client
        .execute(
            "SELECT pg_replication_origin_create($1::text) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1::text)",
            &[&name],
        )
        .await;
    match create {
        Ok(_) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
        Err(e) if denied(&e) => {
            warn!(address, origin = name, "cannot tag writes with a replication origin (needs superuser, or EXECUTE on pg_replication_origin_create and pg_replication_origin_session_setup): a capture of this database would take Tributary's writes for new changes, so bidirectional sync would echo them");
            return Ok(false);
        }
        Err(e) => {
            return Err(SinkError::postgres(
                "creating the replication origin",
                address,
                e,
            ))
        }
    }
    // A session of ours that just broke may still hold the origin for a moment.
    let mut tries = 0;
    loop {
        match client
            .execute(
                "SELECT pg_replication_origin_session_setup($1::text)",
                &[&name],
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(e) if denied(&e) => {
                warn!(address, origin = name, "cannot tag writes with a replication origin (needs EXECUTE on pg_replication_origin_session_setup): bidirectional sync would echo them");
                return Ok(false);
            }
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && tries < 300 =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(SinkError::postgres(
                    "tagging the session with its replication origin",
                    address,
                    e,
                ))
            }
        }
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn merge_states(&mut self) -> Option<&mut dyn MergeStates> {
        Some(self)
    }

    fn copy_load(&mut self) -> Option<&mut dyn CopyLoad> {
        Some(self)
    }

    fn origin_tag(&mut self) -> Option<&mut dyn OriginTag> {
        Some(self)
    }

    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        if self.in_transaction {
            if let Err(e) = self.settle().await {
                self.failed = true;
                return Err(e);
            }
            return watermark::read(&self.client, source).await;
        }
        self.reconnect_if_closed().await?;
        match watermark::read(&self.client, source).await {
            // The connection may have broken before `is_closed` could tell: retry once.
            Err(SinkError::ConnectionLost { .. }) => {
                self.reconnect().await?;
                watermark::read(&self.client, source).await
            }
            other => other,
        }
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        if self.in_transaction {
            return Err(SinkError::Protocol(
                "begin while a transaction is open".into(),
            ));
        }
        self.reconnect_if_closed().await?;
        if let Err(e) = self.client.batch_execute("BEGIN").await {
            // The connection may have broken before `is_closed` could tell (a lost
            // connection is reported first to whoever uses it): reconnect and retry once.
            let error = SinkError::postgres("beginning a transaction", &self.address, e);
            warn!(address = %self.address, %error, "begin failed; reconnecting");
            self.reconnect().await?;
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| SinkError::postgres("beginning a transaction", &self.address, e))?;
        }
        self.in_transaction = true;
        Ok(())
    }

    async fn apply(
        &mut self,
        table: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Err(SinkError::Protocol(format!(
                "apply to {} outside a transaction",
                table.table
            )));
        }
        if self.failed {
            return Err(SinkError::Protocol(
                "apply after a failed call in the same transaction; roll back first".into(),
            ));
        }
        let result = self.apply_events(table, events).await;
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    async fn commit_data(&mut self) -> Result<(), SinkError> {
        self.ready("committing").await?;
        if let Err(e) = self.client.batch_execute("COMMIT").await {
            self.failed = true;
            return Err(SinkError::postgres("committing", &self.address, e));
        }
        self.transaction_ended();
        Ok(())
    }

    async fn commit(&mut self, source: &str, position: Position) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Err(SinkError::Protocol(format!(
                "commit of {source} at {position} outside a transaction"
            )));
        }
        if self.failed {
            return Err(SinkError::Protocol(format!(
                "commit of {source} at {position} after a failed call; roll back instead"
            )));
        }
        if let Err(e) = self.settle().await {
            self.failed = true;
            return Err(e);
        }
        let committed = self
            .client
            .batch_execute(&watermark::store_and_commit_sql(source, &position))
            .await;
        if let Err(e) = committed {
            self.failed = true;
            return Err(SinkError::postgres(
                "storing the watermark and committing",
                WATERMARK_TABLE,
                e,
            ));
        }
        self.transaction_ended();
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Ok(());
        }
        // The transaction is being abandoned: the flush's own error no longer matters.
        let _ = self.settle().await;
        self.transaction_ended();
        // Anything created or prepared in the transaction may be gone.
        self.writers.clear();
        match self.client.batch_execute("ROLLBACK").await {
            Ok(()) => Ok(()),
            Err(e) => match SinkError::postgres("rolling back", &self.address, e) {
                // The server rolled back when the session ended; the next `begin`
                // reconnects.
                SinkError::ConnectionLost { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[async_trait]
impl OriginTag for PostgresSink {
    async fn tag_origin(&mut self, name: &str) -> Result<(), SinkError> {
        self.reconnect_if_closed().await?;
        self.tagged = setup_origin(&self.client, name, &self.address).await?;
        self.origin = Some(name.to_string());
        Ok(())
    }

    fn tagged(&self) -> bool {
        self.tagged
    }
}

#[async_trait]
impl MergeStates for PostgresSink {
    async fn lock_merge_states(
        &mut self,
        table: &TableSchema,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, SinkError> {
        self.ready("locking merge states").await?;
        let target = self.config.target_table(&table.table).to_string();
        let result = merge_state::lock(&self.client, &target, keys).await;
        self.mark(result)
    }

    async fn store_merge_states(
        &mut self,
        table: &TableSchema,
        states: &[(String, String)],
    ) -> Result<(), SinkError> {
        self.ready("storing merge states").await?;
        let target = self.config.target_table(&table.table).to_string();
        let result = merge_state::store(&self.client, &target, states).await;
        self.mark(result)
    }

    async fn clear_merge_states(&mut self, table: &TableSchema) -> Result<(), SinkError> {
        self.ready("clearing merge states").await?;
        let target = self.config.target_table(&table.table).to_string();
        let result = merge_state::clear(&self.client, &target).await;
        self.mark(result)
    }
}

#[async_trait]
impl CopyLoad for PostgresSink {
    async fn load_copy_text(
        &mut self,
        table: &TableSchema,
        lines: &[u8],
    ) -> Result<bool, SinkError> {
        if table.primary_key.is_empty() {
            // The events' path names the problem.
            return Ok(false);
        }
        self.ready(&format!("loading {}", table.table)).await?;
        let result = match self.ensure_writer(table).await {
            Ok(()) => {
                let writer = self
                    .writers
                    .get_mut(&(table.table.clone(), table.version))
                    .expect("writer ensured above");
                writer
                    .copy_into_target(&self.client, &[bytes::Bytes::copy_from_slice(lines)])
                    .await
            }
            Err(e) => Err(e),
        };
        self.mark(result)
    }
}
