//! Set-based execution of a table's events against its target table.
//!
//! A [`TableWriter`] serves one (source table, schema version) on one connection and runs
//! the steps produced by [`Steps`](crate::postgres::stage::Steps). A flush streams a
//! batch's net effects with `COPY ... FROM STDIN` into a temporary staging table (same
//! columns plus an operation code; `ON COMMIT DELETE ROWS`, truncated before reuse within a
//! transaction) and then runs at most one statement per kind:
//!
//! ```sql
//! DELETE FROM target USING stage WHERE op = 1 AND <key match>;
//! INSERT INTO target (...) SELECT ... FROM stage WHERE op = 0
//!     ON CONFLICT (<key>) DO UPDATE SET c = EXCLUDED.c, ...;
//! UPDATE target SET <sent columns> = stage.<...> FROM stage WHERE op = $group AND <key match>;
//! ```
//!
//! The last one runs once per distinct set of sent columns (rows with unchanged TOAST
//! values). Barriers (truncate, key-changing partial update) are single statements.
//! Statements are prepared once per writer.
//!
//! A batch of new rows only (every key's first event an insert or snapshot read) skips
//! the staging table when the caller allows it: its rows are copied straight into the
//! target inside a savepoint, which takes the server less than half the work of the
//! staged upsert. If the target refuses them (a key already there: the target is ahead of
//! the source, as after a restart; or a value it does not take), the savepoint is rolled
//! back, the batch goes the staged way, and the next few batches of new rows of this table
//! go that way too (2, 4, … 256 of them after misses in a row), so a target that keeps
//! refusing costs little.
//!
//! Every statement runs inside the caller's transaction; any error leaves it aborted and
//! the caller rolls back. Because all effects are upserts, deletes or updates by key,
//! executing the same batch twice leaves the same state.

use crate::error::SinkError;
use crate::postgres::ddl::{self, quote_ident, quote_table};
use crate::postgres::stage::{Staged, OP_DELETE, OP_UPSERT};
use futures::SinkExt;
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use tracing::debug;
use tributary_schemas::pg_text::format_text;
use tributary_schemas::{TableId, TableSchema, Value};

/// Staging column holding what to do with each staged row.
const OP_COLUMN: &str = "__tributary_op";

/// Writes one table version's events to its target table.
pub(crate) struct TableWriter {
    schema: TableSchema,
    /// `schema.name` of the target, for messages.
    label: String,
    /// Quoted, qualified target name.
    target: String,
    /// Quoted name of the staging table.
    stage: String,
    /// Mapped type of each column, for casts.
    types: Vec<String>,
    /// COPY into the staging table with, and without, the operation code.
    copy: Option<Statement>,
    copy_plain: Option<Statement>,
    /// COPY into the target.
    copy_target: Option<Statement>,
    upsert: Option<Statement>,
    delete: Option<Statement>,
    patches: HashMap<Vec<bool>, Statement>,
    /// Whether the staging table may hold rows of an earlier flush in this transaction.
    stage_dirty: bool,
    /// Batches of new rows still to go the staged way after the target refused a copy.
    direct_skip: u32,
    /// Refused direct copies in a row (at most 8).
    direct_misses: u32,
}

impl TableWriter {
    /// Makes sure the target can hold `schema`'s rows and the staging table `stage` exists.
    pub(crate) async fn prepare(
        client: &Client,
        target: &TableId,
        schema: TableSchema,
        stage: &str,
    ) -> Result<Self, SinkError> {
        let label = target.to_string();
        ddl::ensure_table(client, target, &schema).await?;
        client
            .batch_execute(&ddl::create_stage_sql(stage, &schema, OP_COLUMN))
            .await
            .map_err(|e| SinkError::postgres("creating the staging table", &label, e))?;
        Ok(TableWriter {
            types: schema.columns.iter().map(ddl::column_type_sql).collect(),
            schema,
            label,
            target: quote_table(target),
            stage: format!("pg_temp.{}", quote_ident(stage)),
            copy: None,
            copy_plain: None,
            copy_target: None,
            upsert: None,
            delete: None,
            patches: HashMap::new(),
            stage_dirty: false,
            direct_skip: 0,
            direct_misses: 0,
        })
    }

    /// The schema this writer serves.
    pub(crate) fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// Notes that a transaction ended, which emptied the staging table.
    pub(crate) fn transaction_ended(&mut self) {
        self.stage_dirty = false;
    }

    /// Whether a batch of new rows may be copied straight into the target: not while the
    /// target's last refusals are being waited out (each call counts one batch).
    pub(crate) fn direct_ready(&mut self) -> bool {
        if self.direct_skip > 0 {
            self.direct_skip -= 1;
            return false;
        }
        true
    }

    /// Writes a staged batch: copies it straight into the target when `direct` (a batch
    /// of new rows, see [`Staged::fresh`]) and the target takes it; otherwise loads the
    /// staging table, then runs the statements.
    pub(crate) async fn flush(
        &mut self,
        client: &Client,
        staged: &Staged,
        direct: bool,
    ) -> Result<(), SinkError> {
        if direct && staged.fresh {
            if self.copy_into_target(client, &staged.chunks).await? {
                self.direct_misses = 0;
                debug!(table = %self.label, upserts = staged.upserts, "copied new rows into the target");
                return Ok(());
            }
            self.direct_misses = (self.direct_misses + 1).min(8);
            self.direct_skip = 1 << self.direct_misses;
        }
        self.load(client, staged).await?;
        self.run_statements(client, staged).await
    }

    /// Replaces the staging table's contents with the staged batch.
    async fn load(&mut self, client: &Client, staged: &Staged) -> Result<(), SinkError> {
        let plain = staged.upserts_only();
        let cached = if plain { &self.copy_plain } else { &self.copy };
        let statement = match cached {
            Some(s) => s.clone(),
            None => {
                let mut columns = self.columns();
                if !plain {
                    columns.push(quote_ident(OP_COLUMN));
                }
                let sql = format!("COPY {} ({}) FROM STDIN", self.stage, columns.join(", "));
                let s = client
                    .prepare(&sql)
                    .await
                    .map_err(|e| self.error("preparing COPY", e))?;
                let slot = if plain {
                    &mut self.copy_plain
                } else {
                    &mut self.copy
                };
                slot.insert(s).clone()
            }
        };
        // The truncate of an earlier batch's rows and the COPY are pipelined: one round trip.
        let dirty = std::mem::replace(&mut self.stage_dirty, true);
        let truncate_sql = format!("TRUNCATE {}", self.stage);
        let truncate = async {
            match dirty {
                true => client.batch_execute(&truncate_sql).await,
                false => Ok(()),
            }
        };
        let (truncated, sink) = tokio::join!(
            biased;
            truncate,
            client.copy_in::<_, bytes::Bytes>(&statement)
        );
        truncated.map_err(|e| self.error("emptying the staging table", e))?;
        let sink = sink.map_err(|e| self.error("starting COPY", e))?;
        futures::pin_mut!(sink);
        for chunk in &staged.chunks {
            sink.send(chunk.clone())
                .await
                .map_err(|e| self.error("copying into the staging table", e))?;
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| self.error("copying into the staging table", e))?;
        Ok(())
    }

    /// Runs the statements that apply the loaded staging rows to the target.
    async fn run_statements(&mut self, client: &Client, staged: &Staged) -> Result<(), SinkError> {
        if staged.deletes > 0 {
            let statement = self.delete_statement(client).await?;
            client
                .execute(&statement, &[])
                .await
                .map_err(|e| self.error("deleting rows", e))?;
        }
        if staged.upserts > 0 {
            let statement = self.upsert_statement(client).await?;
            client
                .execute(&statement, &[])
                .await
                .map_err(|e| self.error("upserting rows", e))?;
        }
        for (mask, group) in &staged.patch_groups {
            if let Some(statement) = self.patch_statement(client, mask).await? {
                client
                    .execute(&statement, &[group])
                    .await
                    .map_err(|e| self.error("updating sent columns", e))?;
            }
        }
        debug!(
            table = %self.label,
            upserts = staged.upserts,
            deletes = staged.deletes,
            patches = staged.patches,
            patch_groups = staged.patch_groups.len(),
            "flushed batch"
        );
        Ok(())
    }

    /// `tgt.k = stg.k AND ...` for every key column.
    fn key_match(&self) -> String {
        self.schema
            .key_columns()
            .map(|c| {
                let c = quote_ident(&c.name);
                format!("tgt.{c} = stg.{c}")
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    async fn delete_statement(&mut self, client: &Client) -> Result<Statement, SinkError> {
        if let Some(s) = &self.delete {
            return Ok(s.clone());
        }
        let sql = format!(
            "DELETE FROM {} AS tgt USING {} AS stg WHERE stg.{} = {OP_DELETE} AND {}",
            self.target,
            self.stage,
            quote_ident(OP_COLUMN),
            self.key_match()
        );
        let s = client
            .prepare(&sql)
            .await
            .map_err(|e| self.error("preparing delete", e))?;
        Ok(self.delete.insert(s).clone())
    }

    async fn upsert_statement(&mut self, client: &Client) -> Result<Statement, SinkError> {
        if let Some(s) = &self.upsert {
            return Ok(s.clone());
        }
        let columns = self.columns();
        let key: Vec<String> = self
            .schema
            .key_columns()
            .map(|c| quote_ident(&c.name))
            .collect();
        let updates: Vec<String> = self
            .schema
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.schema.primary_key.contains(i))
            .map(|(_, c)| {
                let c = quote_ident(&c.name);
                format!("{c} = EXCLUDED.{c}")
            })
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let sql = format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {} WHERE {} = {OP_UPSERT} \
             ON CONFLICT ({}) {action}",
            self.target,
            self.stage,
            quote_ident(OP_COLUMN),
            key.join(", "),
            cols = columns.join(", "),
        );
        let s = client
            .prepare(&sql)
            .await
            .map_err(|e| self.error("preparing upsert", e))?;
        Ok(self.upsert.insert(s).clone())
    }

    /// The update of the sent non-key columns in `mask`, or `None` if there are none.
    async fn patch_statement(
        &mut self,
        client: &Client,
        mask: &[bool],
    ) -> Result<Option<Statement>, SinkError> {
        if let Some(s) = self.patches.get(mask) {
            return Ok(Some(s.clone()));
        }
        let sets: Vec<String> = self
            .schema
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| mask[*i] && !self.schema.primary_key.contains(i))
            .map(|(_, c)| {
                let c = quote_ident(&c.name);
                format!("{c} = stg.{c}")
            })
            .collect();
        if sets.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "UPDATE {} AS tgt SET {} FROM {} AS stg WHERE stg.{} = $1 AND {}",
            self.target,
            sets.join(", "),
            self.stage,
            quote_ident(OP_COLUMN),
            self.key_match()
        );
        let s = client
            .prepare(&sql)
            .await
            .map_err(|e| self.error("preparing partial update", e))?;
        self.patches.insert(mask.to_vec(), s.clone());
        Ok(Some(s))
    }

    /// Empties the target table.
    pub(crate) async fn truncate(&mut self, client: &Client) -> Result<(), SinkError> {
        client
            .batch_execute(&format!("TRUNCATE {}", self.target))
            .await
            .map_err(|e| self.error("truncating", e))?;
        debug!(table = %self.label, "truncated table");
        Ok(())
    }

    /// Updates the row keyed `old_key` in place with every sent column of `row` (new key
    /// included), so its unsent columns survive the key change.
    pub(crate) async fn rekey(
        &mut self,
        client: &Client,
        old_key: &[Value],
        row: &[Value],
    ) -> Result<(), SinkError> {
        let mut params: Vec<Option<String>> = Vec::new();
        let mut cast = |value: &Value, ty: &str| {
            params.push((!value.is_null()).then(|| format_text(value)));
            format!("${}::text::{ty}", params.len())
        };
        let mut sets = Vec::new();
        for (i, value) in row.iter().enumerate() {
            if !matches!(value, Value::Unchanged) {
                let column = quote_ident(&self.schema.columns[i].name);
                sets.push(format!("{column} = {}", cast(value, &self.types[i])));
            }
        }
        let mut conditions = Vec::new();
        for (&i, value) in self.schema.primary_key.iter().zip(old_key) {
            let column = quote_ident(&self.schema.columns[i].name);
            conditions.push(format!("{column} = {}", cast(value, &self.types[i])));
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            self.target,
            sets.join(", "),
            conditions.join(" AND ")
        );
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        client
            .execute(&sql, &refs)
            .await
            .map_err(|e| self.error("changing a row's key", e))?;
        Ok(())
    }

    /// Copies `chunks` (COPY text of the schema's columns, in order) straight into the
    /// target inside a savepoint. `Ok(false)`, the savepoint rolled back, when the target
    /// refuses them: a row already there or a value its column does not take.
    pub(crate) async fn copy_into_target(
        &mut self,
        client: &Client,
        chunks: &[bytes::Bytes],
    ) -> Result<bool, SinkError> {
        let statement = match &self.copy_target {
            Some(s) => s.clone(),
            None => {
                let sql = format!(
                    "COPY {} ({}) FROM STDIN",
                    self.target,
                    self.columns().join(", ")
                );
                let s = client
                    .prepare(&sql)
                    .await
                    .map_err(|e| self.error("preparing COPY", e))?;
                self.copy_target.insert(s).clone()
            }
        };
        // The savepoint and the COPY are pipelined: one round trip.
        let (saved, sink) = tokio::join!(
            biased;
            client.batch_execute("SAVEPOINT tributary_copy"),
            client.copy_in::<_, bytes::Bytes>(&statement)
        );
        saved.map_err(|e| self.error("setting a savepoint", e))?;
        let copied = async {
            let sink = sink?;
            futures::pin_mut!(sink);
            for chunk in chunks {
                sink.send(chunk.clone()).await?;
            }
            sink.as_mut().finish().await
        }
        .await;
        let refused = match copied {
            Ok(_) => None,
            Err(e)
                if e.code()
                    .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")) =>
            {
                Some(e)
            }
            Err(e) => return Err(self.error("copying into the target", e)),
        };
        let end = match &refused {
            None => "RELEASE SAVEPOINT tributary_copy",
            Some(_) => "ROLLBACK TO SAVEPOINT tributary_copy; RELEASE SAVEPOINT tributary_copy",
        };
        client
            .batch_execute(end)
            .await
            .map_err(|e| self.error("ending a savepoint", e))?;
        if let Some(e) = &refused {
            debug!(table = %self.label, error = %e, "the target refused COPY text; applying the rows as events");
        }
        Ok(refused.is_none())
    }

    /// The schema's columns, quoted, in order.
    fn columns(&self) -> Vec<String> {
        self.schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect()
    }

    fn error(&self, action: &'static str, err: tokio_postgres::Error) -> SinkError {
        SinkError::postgres(action, &self.label, err)
    }
}
