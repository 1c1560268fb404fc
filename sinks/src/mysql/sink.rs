//! The MySQL sink: connection, transaction state, target tables and statement building.

use crate::error::SinkError;
use crate::mysql::config::{address, MySqlSinkConfig};
use crate::mysql::ddl::{self, quote_ident, quote_table};
use crate::mysql::literal::{self, TargetColumn};
use crate::plan::{Batch, Effect, Folded};
use crate::{MergeStates, OriginTag, Sink};
use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::collections::HashMap;
use std::time::Duration;
use tracing::{info, warn};
use tributary_schemas::{ChangeEvent, Position, TableId, TableSchema, Value};

/// The watermark table, for messages.
const WATERMARK_TABLE: &str = "tributary.watermarks";
/// Written first in every transaction of a sink tagged with an origin (see
/// `Sink::tag_origin`); a MySQL capture drops the transactions that write it.
pub const ECHO_TABLE: &str = "tributary.echo";
/// Each merged row's conflict-resolution state.
/// Statements sent on every new connection.
const SESSION: [&str; 4] = [
    "SET NAMES utf8mb4",
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_BACKSLASH_ESCAPES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];
/// Time allowed for connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest statement built, unless the server's `max_allowed_packet` is smaller.
const MAX_STATEMENT_BYTES: usize = 4 * 1024 * 1024;
/// Estimated bytes of row data after which a batch is flushed regardless of its row count.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// A source table at one schema version.
type TargetKey = (TableId, u32);

/// Where and how one source table version is written.
struct Target {
    /// The target table, for messages.
    name: String,
    /// `db`.`table`.
    quoted: String,
    /// The target column of each source column, in source order.
    columns: Vec<TargetColumn>,
    /// Quoted target column names, in source order.
    names: Vec<String>,
    /// `INSERT INTO t (a, b) VALUES `.
    insert_head: String,
    /// ` ON DUPLICATE KEY UPDATE a = VALUES(a), ...`.
    upsert_tail: String,
    /// Indexes of the key columns.
    key: Vec<usize>,
}

impl Target {
    fn new(
        id: &TableId,
        schema: &TableSchema,
        existing: &[TargetColumn],
    ) -> Result<Self, SinkError> {
        let columns = schema
            .columns
            .iter()
            .map(|c| {
                ddl::find(existing, &c.name).cloned().ok_or_else(|| {
                    SinkError::Protocol(format!(
                        "table {id} has no column {} after it was created or extended",
                        c.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let quoted = quote_table(id);
        let insert_head = format!("INSERT INTO {quoted} ({}) VALUES ", names.join(", "));
        // Key columns are left out (they are what matched); a table of key columns only
        // assigns its first key column to itself, which keeps the clause valid.
        let mut assignments: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| !schema.primary_key.contains(i))
            .map(|(_, n)| format!("{n} = VALUES({n})"))
            .collect();
        if assignments.is_empty() {
            let n = &names[schema.primary_key[0]];
            assignments.push(format!("{n} = {n}"));
        }
        let upsert_tail = format!(" ON DUPLICATE KEY UPDATE {}", assignments.join(", "));
        Ok(Target {
            name: id.to_string(),
            quoted,
            columns,
            names,
            insert_head,
            upsert_tail,
            key: schema.primary_key.clone(),
        })
    }

    /// `(k1, k2)` or `k`.
    fn key_names(&self) -> String {
        let names: Vec<&str> = self.key.iter().map(|&i| self.names[i].as_str()).collect();
        match names.as_slice() {
            [one] => one.to_string(),
            many => format!("({})", many.join(", ")),
        }
    }

    /// Appends `key` as the right side of `key_names() IN (...)`.
    fn write_key(&self, key: &[Value], out: &mut String) {
        if let [one] = key {
            literal::write(one, out);
            return;
        }
        out.push('(');
        for (i, v) in key.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            literal::write(v, out);
        }
        out.push(')');
    }

    /// Appends `k1 = v1 AND k2 = v2`.
    fn write_key_match(&self, key: &[Value], out: &mut String) {
        for (n, (&i, v)) in self.key.iter().zip(key).enumerate() {
            if n > 0 {
                out.push_str(" AND ");
            }
            out.push_str(&self.names[i]);
            out.push_str(" = ");
            literal::write(v, out);
        }
    }

    /// Appends `a = v1, b = v2` for every sent column of `row`.
    fn write_assignments(&self, row: &[Value], out: &mut String) {
        let mut first = true;
        for (name, value) in self.names.iter().zip(row) {
            if matches!(value, Value::Unchanged) {
                continue;
            }
            if !first {
                out.push_str(", ");
            }
            first = false;
            out.push_str(name);
            out.push_str(" = ");
            literal::write(value, out);
        }
    }
}

/// A sink writing to one MySQL or MariaDB database over one connection.
pub struct MySqlSink {
    config: MySqlSinkConfig,
    address: String,
    pub(super) conn: Option<Conn>,
    /// Collation of created tables.
    collation: String,
    /// Largest statement to build.
    max_statement: usize,
    /// The server's `max_allowed_packet`: no statement may be longer.
    max_packet: usize,
    /// Targets by source table and schema version. DDL is committed when it runs, so
    /// these stay valid across rollbacks.
    targets: HashMap<TargetKey, Target>,
    in_transaction: bool,
    /// Whether the open transaction has written anything.
    pub(super) wrote: bool,
    /// The name written to `tributary.echo` first in each transaction, if any.
    origin: Option<String>,
    /// Whether a call failed in the open transaction, which then may only be rolled back.
    pub(super) failed: bool,
}

impl MySqlSink {
    /// Connects, checks the server, and creates the watermark table if it is missing.
    pub async fn connect(config: MySqlSinkConfig) -> Result<Self, SinkError> {
        config.validate()?;
        let opts = config.opts()?;
        let address = address(&opts);
        let mut conn = open(&config, &address).await?;
        let collation: Option<String> = conn
            .query_first(
                "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
                 WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin') \
                 ORDER BY COLLATION_NAME DESC LIMIT 1",
            )
            .await
            .map_err(|e| SinkError::mysql("reading the server's collations", &address, e))?;
        let packet: Option<u64> = conn
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(|e| SinkError::mysql("reading max_allowed_packet", &address, e))?;
        // Room for the statement around the rows.
        let max_packet = packet.unwrap_or(4 << 20) as usize;
        let max_statement = (max_packet / 2).clamp(64 * 1024, MAX_STATEMENT_BYTES);
        ensure_watermark_table(&mut conn).await?;
        info!(address = %address, "connected to mysql sink");
        Ok(MySqlSink {
            config,
            address,
            conn: Some(conn),
            collation: collation.unwrap_or_else(|| "utf8mb4_bin".into()),
            max_statement,
            max_packet,
            targets: HashMap::new(),
            in_transaction: false,
            wrote: false,
            origin: None,
            failed: false,
        })
    }

    /// The connection, reconnecting after a lost one.
    async fn conn(&mut self) -> Result<&mut Conn, SinkError> {
        if self.conn.is_none() {
            self.conn = Some(open(&self.config, &self.address).await?);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    /// The watermark of `source` as stored.
    async fn read_watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        read_watermark(self.conn().await?, source).await
    }

    /// Runs `sql` in the open transaction; an error makes the transaction unusable.
    pub(super) async fn run(
        &mut self,
        action: &'static str,
        table: &str,
        sql: String,
    ) -> Result<(), SinkError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SinkError::ConnectionLost {
                action,
                table: table.to_string(),
                cause: "no connection".into(),
            })?;
        let result = conn.query_drop(sql).await;
        result.map_err(|e| {
            self.failed = true;
            let err = SinkError::mysql(action, table, e);
            if matches!(err, SinkError::ConnectionLost { .. }) {
                self.conn = None;
            }
            err
        })
    }

    /// The database a source table is written to.
    fn target_id(&self, table: &TableId) -> TableId {
        self.config.target_table(table)
    }

    /// Makes the target table fit `schema` (with DDL outside the data transaction).
    async fn prepare_target(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        let key = (schema.table.clone(), schema.version);
        if self.targets.contains_key(&key) {
            return Ok(());
        }
        if schema.primary_key.is_empty() {
            return Err(SinkError::NoPrimaryKey {
                table: schema.table.to_string(),
            });
        }
        let id = self.target_id(&schema.table);
        let name = id.to_string();
        let collation = self.collation.clone();
        let existing = ddl::read_table(self.conn().await?, &id).await?;
        if let Some(table) = &existing {
            let problem = if table.engine.is_empty() {
                Some("is a view, not a table".to_string())
            } else if !table.engine.eq_ignore_ascii_case("InnoDB") {
                Some(format!(
                    "uses the {} engine, which has no transactions; Tributary needs InnoDB \
                     (ALTER TABLE {} ENGINE = InnoDB)",
                    table.engine,
                    quote_table(&id)
                ))
            } else {
                ddl::key_problem(schema, table)
            };
            if let Some(reason) = problem {
                return Err(SinkError::Config {
                    field: format!("target table {name}"),
                    reason,
                });
            }
        }
        let statements = ddl::changes(
            schema,
            &id,
            existing.as_ref().map(|t| t.columns.as_slice()),
            &collation,
        );
        let columns = match existing {
            Some(table) if statements.is_empty() => table.columns,
            _ => {
                self.run_ddl(&name, statements).await?;
                ddl::read_table(self.conn().await?, &id)
                    .await?
                    .map(|t| t.columns)
                    .unwrap_or_default()
            }
        };
        let target = Target::new(&id, schema, &columns)?;
        self.targets.insert(key, target);
        Ok(())
    }

    /// Runs DDL, which MySQL commits implicitly: outside the data transaction when it has
    /// written nothing yet (it is rolled back and begun again), else after committing
    /// what it wrote (see the module documentation).
    async fn run_ddl(&mut self, table: &str, statements: Vec<String>) -> Result<(), SinkError> {
        let reopen = self.in_transaction;
        if self.in_transaction {
            if self.wrote {
                warn!(
                    table,
                    "a schema change inside a source transaction: MySQL commits DDL, so the rows \
                     this transaction wrote so far are committed before it (without the watermark; \
                     a crash now replays the transaction from its start)"
                );
                self.run("committing before a schema change", table, "COMMIT".into())
                    .await?;
            } else {
                self.run(
                    "rolling back before a schema change",
                    table,
                    "ROLLBACK".into(),
                )
                .await?;
            }
        }
        for sql in statements {
            info!(table, statement = %sql, "changing the target table");
            match self.run("changing the table", table, sql).await {
                // Another sink added the column meanwhile.
                Err(SinkError::Database { detail, .. }) if detail.code == Some(1060) => {
                    self.failed = false;
                }
                other => other?,
            }
        }
        if reopen {
            self.start().await?;
        }
        Ok(())
    }

    /// Starts a transaction, marked as Tributary's when the sink has an origin: its row
    /// in `tributary.echo` comes first, so a capture of this server knows it from its
    /// first rows event.
    async fn start(&mut self) -> Result<(), SinkError> {
        self.run("beginning a transaction", "-", "START TRANSACTION".into())
            .await?;
        if let Some(name) = &self.origin {
            let mut sql = String::from("INSERT INTO tributary.echo (writer, n) VALUES (");
            literal::quote(name, &mut sql);
            sql.push_str(", 1) ON DUPLICATE KEY UPDATE n = n + 1");
            self.run("marking the transaction as Tributary's", ECHO_TABLE, sql)
                .await?;
        }
        self.wrote = false;
        Ok(())
    }

    /// Checks that a transaction is open and usable before `what`.
    pub(super) fn ready(&self, what: &str) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Err(SinkError::Protocol(format!("{what} outside a transaction")));
        }
        if self.failed {
            return Err(SinkError::Protocol(format!(
                "{what} after a failed call; roll back first"
            )));
        }
        Ok(())
    }

    /// The merge-state name of the table `table` is written to.
    pub(super) fn merge_target(&self, table: &TableId) -> String {
        self.target_id(table).to_string()
    }

    /// Checks every value of `events` against the target's columns before anything is written.
    fn check_values(
        target: &Target,
        schema: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        for event in events {
            // Column index and value: the key (written into deletes and key matches), then
            // both row images.
            let key = event
                .key
                .iter()
                .zip(&schema.primary_key)
                .map(|(v, &i)| (i, v));
            let rows = [event.after.as_ref(), event.before.as_ref()]
                .into_iter()
                .flatten()
                .flat_map(|row| row.0.iter().enumerate());
            for (i, value) in key.chain(rows) {
                let (Some(column), Some(target_column)) =
                    (schema.columns.get(i), target.columns.get(i))
                else {
                    continue;
                };
                if let Err(reason) = literal::check(value, target_column) {
                    return Err(SinkError::TypeMismatch {
                        table: schema.table.to_string(),
                        position: Box::new(event.position),
                        column: column.name.clone(),
                        value: format!("{} ({reason})", value.describe()),
                        ty: target_column.data_type.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes one folded batch: deletes, then upserts, then partial updates.
    async fn flush(&mut self, key: &TargetKey, batch: &Batch<'_>) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let target = &self.targets[key];
        let name = target.name.clone();
        let max = self.max_statement;
        let mut statements: Vec<(&'static str, String)> = Vec::new();

        let delete_head = format!(
            "DELETE FROM {} WHERE {} IN (",
            target.quoted,
            target.key_names()
        );
        let mut sql = String::new();
        for entry in batch.entries() {
            if let Effect::Delete = entry.effect {
                sql.push_str(if sql.is_empty() { &delete_head } else { ", " });
                target.write_key(&entry.key, &mut sql);
                if sql.len() >= max {
                    sql.push(')');
                    statements.push(("deleting rows", std::mem::take(&mut sql)));
                }
            }
        }
        if !sql.is_empty() {
            sql.push(')');
            statements.push(("deleting rows", std::mem::take(&mut sql)));
        }

        // A row goes into the next statement when it would take this one past `max`.
        let mut row_sql = String::new();
        for entry in batch.entries() {
            if let Effect::Upsert(row) = &entry.effect {
                row_sql.clear();
                row_sql.push('(');
                for (i, v) in row.iter().enumerate() {
                    if i > 0 {
                        row_sql.push_str(", ");
                    }
                    literal::write(v, &mut row_sql);
                }
                row_sql.push(')');
                if !sql.is_empty() && sql.len() + row_sql.len() + target.upsert_tail.len() > max {
                    sql.push_str(&target.upsert_tail);
                    statements.push(("upserting rows", std::mem::take(&mut sql)));
                }
                sql.push_str(if sql.is_empty() {
                    &target.insert_head
                } else {
                    ", "
                });
                sql.push_str(&row_sql);
            }
        }
        if !sql.is_empty() {
            sql.push_str(&target.upsert_tail);
            statements.push(("upserting rows", std::mem::take(&mut sql)));
        }

        for entry in batch.entries() {
            if let Effect::Patch(row) = &entry.effect {
                row_sql.clear();
                row_sql.push_str("UPDATE ");
                row_sql.push_str(&target.quoted);
                row_sql.push_str(" SET ");
                target.write_assignments(row, &mut row_sql);
                row_sql.push_str(" WHERE ");
                target.write_key_match(&entry.key, &mut row_sql);
                row_sql.push(';');
                if !sql.is_empty() && sql.len() + row_sql.len() > max {
                    statements.push((
                        "updating rows with unchanged columns",
                        std::mem::take(&mut sql),
                    ));
                }
                sql.push_str(&row_sql);
            }
        }
        if !sql.is_empty() {
            statements.push(("updating rows with unchanged columns", sql));
        }

        if let Some((_, sql)) = statements
            .iter()
            .find(|(_, sql)| sql.len() > self.max_packet)
        {
            // The driver would refuse to send it, which looks like a lost connection.
            return Err(SinkError::Driver {
                action: "writing a batch",
                table: name,
                cause: format!(
                    "one row needs a {}-byte statement, more than the server's max_allowed_packet \
                     ({} bytes); raise max_allowed_packet on the server",
                    sql.len(),
                    self.max_packet
                ),
            });
        }
        for (action, sql) in statements {
            self.run(action, &name, sql).await?;
        }
        self.wrote = true;
        Ok(())
    }

    async fn apply_events(
        &mut self,
        schema: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        self.prepare_target(schema).await?;
        let key = (schema.table.clone(), schema.version);
        Self::check_values(&self.targets[&key], schema, events)?;
        let mut batch = Batch::default();
        for event in events {
            match batch.fold(schema, event)? {
                Folded::Batched => {
                    if batch.is_full(self.config.batch_rows, MAX_BATCH_BYTES) {
                        self.flush(&key, &batch).await?;
                        batch.clear();
                    }
                }
                Folded::Truncate => {
                    // MySQL's TRUNCATE commits; a DELETE of every row is transactional.
                    let target = &self.targets[&key];
                    let (name, sql) = (
                        target.name.clone(),
                        format!("DELETE FROM {}", target.quoted),
                    );
                    self.run("truncating", &name, sql).await?;
                    self.wrote = true;
                }
                Folded::Rekey { old_key, row } => {
                    self.flush(&key, &batch).await?;
                    batch.clear();
                    let target = &self.targets[&key];
                    let mut sql = format!("UPDATE {} SET ", target.quoted);
                    target.write_assignments(&row, &mut sql);
                    sql.push_str(" WHERE ");
                    target.write_key_match(&old_key, &mut sql);
                    let name = target.name.clone();
                    self.run("changing a row's key", &name, sql).await?;
                    self.wrote = true;
                }
            }
        }
        self.flush(&key, &batch).await
    }
}

#[async_trait]
impl Sink for MySqlSink {
    fn merge_states(&mut self) -> Option<&mut dyn MergeStates> {
        Some(self)
    }

    fn origin_tag(&mut self) -> Option<&mut dyn OriginTag> {
        Some(self)
    }

    async fn watermark(&mut self, source: &str) -> Result<Option<Position>, SinkError> {
        match self.read_watermark(source).await {
            // A session that ended between transactions (a server restart, an idle
            // timeout, a killed connection) shows only when it is used: open a new one
            // and read again, once. Inside a transaction the loss is the caller's to see.
            Err(e) if e.is_transient() && !self.in_transaction => {
                warn!(address = %self.address, error = %e, "reading the watermark failed; reconnecting");
                self.conn = None;
                self.read_watermark(source).await
            }
            other => other,
        }
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        if self.in_transaction {
            return Err(SinkError::Protocol(
                "begin inside an open transaction".into(),
            ));
        }
        self.conn().await?;
        self.failed = false;
        self.start().await?;
        self.in_transaction = true;
        Ok(())
    }

    fn ready_for(&self, table: &TableSchema) -> bool {
        self.targets
            .contains_key(&(table.table.clone(), table.version))
    }

    async fn apply(
        &mut self,
        table: &TableSchema,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Err(SinkError::Protocol("apply outside a transaction".into()));
        }
        if self.failed {
            return Err(SinkError::Protocol(
                "apply after a failed call; roll back first".into(),
            ));
        }
        let result = self.apply_events(table, events).await;
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    async fn commit_data(&mut self) -> Result<(), SinkError> {
        self.ready("committing")?;
        self.run("committing", "-", "COMMIT".into()).await?;
        self.in_transaction = false;
        self.wrote = false;
        Ok(())
    }

    async fn commit(&mut self, source: &str, position: Position) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Err(SinkError::Protocol("commit outside a transaction".into()));
        }
        if self.failed {
            return Err(SinkError::Protocol(
                "commit after a failed call; roll back instead".into(),
            ));
        }
        // Serialising a position (integers and a tag) cannot fail.
        let json = serde_json::to_string(&position).unwrap_or_default();
        let mut sql = String::from(
            "INSERT INTO tributary.watermarks (source, position, updated_at) VALUES (",
        );
        literal::quote(source, &mut sql);
        sql.push_str(", ");
        literal::quote(&json, &mut sql);
        sql.push_str(
            ", UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE position = VALUES(position), \
             updated_at = VALUES(updated_at); COMMIT",
        );
        self.run("committing", WATERMARK_TABLE, sql).await?;
        self.in_transaction = false;
        self.wrote = false;
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        let was_open = std::mem::take(&mut self.in_transaction);
        self.failed = false;
        self.wrote = false;
        if !was_open {
            return Ok(());
        }
        if let Some(conn) = self.conn.as_mut() {
            if conn.query_drop("ROLLBACK").await.is_err() {
                // A connection that cannot roll back is not reused; the server rolls
                // back when it closes.
                self.conn = None;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl OriginTag for MySqlSink {
    async fn tag_origin(&mut self, name: &str) -> Result<(), SinkError> {
        let conn = self.conn().await?;
        conn.query_drop(
            "CREATE TABLE IF NOT EXISTS tributary.echo (\
                 writer VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, \
                 n BIGINT NOT NULL) ENGINE=InnoDB",
        )
        .await
        .map_err(|e| SinkError::mysql("creating the table", ECHO_TABLE, e))?;
        self.origin = Some(name.to_string());
        Ok(())
    }

    fn tagged(&self) -> bool {
        true
    }
}

/// Opens a connection with the sink's session settings.
pub(crate) async fn open(config: &MySqlSinkConfig, address: &str) -> Result<Conn, SinkError> {
    let opts = OptsBuilder::from_opts(config.opts()?).init(SESSION.to_vec());
    match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
        Ok(result) => result.map_err(|e| SinkError::mysql_connect(address, e)),
        Err(_) => Err(SinkError::Connect {
            address: address.to_string(),
            cause: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            sqlstate: None,
        }),
    }
}

/// The watermark of `source` as stored in `tributary.watermarks` (`None`: no row).
pub(crate) async fn read_watermark(
    conn: &mut Conn,
    source: &str,
) -> Result<Option<Position>, SinkError> {
    let text: Option<String> = conn
        .exec_first(
            "SELECT position FROM tributary.watermarks WHERE source = ?",
            (source,),
        )
        .await
        .map_err(|e| SinkError::mysql("reading the watermark", WATERMARK_TABLE, e))?;
    text.map(|t| crate::parse_watermark(source, &t)).transpose()
}

/// Creates `tributary.watermarks` if it is missing.
async fn ensure_watermark_table(conn: &mut Conn) -> Result<(), SinkError> {
    conn.query_drop(
        "CREATE DATABASE IF NOT EXISTS tributary CHARACTER SET utf8mb4; \
         CREATE TABLE IF NOT EXISTS tributary.watermarks (\
             source VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, \
             position TEXT NOT NULL, \
             updated_at DATETIME(6) NOT NULL) ENGINE=InnoDB; \
         CREATE TABLE IF NOT EXISTS tributary.merge_state (\
             target VARCHAR(190) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             k VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             state LONGTEXT, \
             PRIMARY KEY (target, k)) ENGINE=InnoDB",
    )
    .await
    .map_err(|e| SinkError::mysql("creating the table", WATERMARK_TABLE, e))
}
