//! The sink kinds the scenarios run against, behind one [`Backend`] trait.
//!
//! A backend is the harness's private server of its kind ([`Server`]): it creates
//! databases, builds the [`SinkConfig`] of one of them (through [`SinkConfig::from_url`],
//! as the application does), and reads back what the sink wrote: rows in key order as the
//! server prints them, a table's columns, the stored watermark. Where the kinds
//! legitimately differ (DDL that commits on its own, columns MySQL leaves nullable, the
//! types each maps to, the values each server refuses, the source types each can hold),
//! the backend states the difference and the scenario asserts it. The end-to-end
//! scenarios (`e2e.rs`) also read their sources through a backend, and compare a source
//! column with the sink's copy by the expressions [`Backend::compared`] gives. Adding a
//! sink kind to the scenarios means one more implementation here.

#![allow(dead_code)] // each test file uses a part

pub mod mariadb;
pub mod postgres;

use tributary_schemas::{ChangeEvent, Column, Position, TableId, TableSchema, Value};
use tributary_sinks::{Sink, SinkConfig};
use tributary_tests::{MariaDb, Postgres};

/// The harness's private server of one kind: what a backend starts and makes databases on.
pub trait Server: Sized {
    /// Starts a private server for this test.
    async fn start() -> anyhow::Result<Self>;

    /// Creates a database (unique name from `prefix`) and returns its name.
    async fn create_database(&self, prefix: &str) -> anyhow::Result<String>;

    /// The URL of database `db`, with the password.
    fn url(&self, db: &str) -> String;

    /// Runs `sql` (one or more statements) in database `db`.
    async fn execute(&self, db: &str, sql: &str) -> anyhow::Result<()>;
}

/// Implements [`Server`] by the harness servers' own methods of the same names.
macro_rules! harness_servers {
    ($($server:ident),*) => {$(
        impl Server for $server {
            async fn start() -> anyhow::Result<Self> {
                $server::start().await
            }

            async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
                $server::create_database(self, prefix).await
            }

            fn url(&self, db: &str) -> String {
                $server::url(self, db)
            }

            async fn execute(&self, db: &str, sql: &str) -> anyhow::Result<()> {
                $server::execute(self, db, sql).await
            }
        }
    )*};
}

harness_servers!(Postgres, MariaDb);

/// A private server of one sink kind, and how to read back what its sink wrote.
///
/// Every read returns each value as the server prints it, NULL as `NULL`.
pub trait Backend: Server {
    /// The URL scheme of the kind, also the `kind` of its sources and sinks in a
    /// configuration.
    const SCHEME: &'static str;
    /// The user and the password in the harness's URLs (`user:password@`).
    const USER_PASSWORD: (&'static str, &'static str);
    /// Whether schema changes are transactional: the sink is then ready for every table
    /// version at any time, and a table created in a rolled-back transaction is gone.
    const TRANSACTIONAL_DDL: bool;
    /// Whether `apply` may return while its batch is still being written (its error
    /// then comes with the next call of the transaction).
    const WRITES_IN_BACKGROUND: bool;
    /// Whether the sink keeps the NOT NULL of a column that is not part of the key.
    const KEEPS_NOT_NULL: bool;
    /// What the server says to a wrong password: a part of the message and the SQLSTATE.
    const WRONG_PASSWORD: (&'static str, &'static str);
    /// Whether each database keeps its own watermarks (else one table serves the server).
    const WATERMARKS_PER_DATABASE: bool;

    /// The URL of database `db` with a wrong password.
    fn wrong_password_url(&self, db: &str) -> String {
        let url = self.url(db);
        let (user, password) = Self::USER_PASSWORD;
        let wrong = url.replace(&format!("{user}:{password}@"), &format!("{user}:wrong@"));
        assert_ne!(wrong, url, "the harness URL carries the password");
        wrong
    }

    /// The schema (PostgreSQL) or database (MySQL) a sink of `db` writes `table` into
    /// when no target schema is set.
    fn schema_of(&self, db: &str, table: &TableId) -> String;

    /// Where a sink of `db` writes `table` when no target schema is set.
    fn table_in(&self, db: &str, table: &TableId) -> TableId {
        TableId::new(self.schema_of(db, table), &table.name)
    }

    /// `name` quoted as an identifier.
    fn quote(name: &str) -> String;

    /// The type the sink gives a column of source type `source_type` (of the sample
    /// tables).
    fn target_type(source_type: &str) -> &'static str;

    /// Every row of `table` (in database `db`), the SQL expressions `exprs` of each,
    /// ordered by the first.
    async fn rows(
        &self,
        db: &str,
        table: &TableId,
        exprs: &[String],
    ) -> anyhow::Result<Vec<Vec<String>>>;

    /// Name, type, whether nullable (`YES`/`NO`) and whether in the primary key (`PRI`
    /// or empty) of every column of `table`, in order.
    async fn columns(&self, db: &str, table: &TableId) -> anyhow::Result<Vec<Vec<String>>>;

    /// Names of the tables in `schema` (of database `db`).
    async fn tables(&self, db: &str, schema: &str) -> anyhow::Result<Vec<String>>;

    /// The watermark stored for `source` by a sink of `db`, as JSON.
    async fn stored_watermark(
        &self,
        db: &str,
        source: &str,
    ) -> anyhow::Result<Option<serde_json::Value>>;

    /// Ends every session of a sink in database `db`; returns how many were ended.
    async fn end_sink_sessions(&self, db: &str) -> anyhow::Result<usize>;

    /// Every column type with typical values, edge values and extremes.
    fn type_cases() -> Vec<TypeCase>;

    /// Rows of the docs table the server refuses, and how.
    fn refusals() -> Vec<Refusal>;

    /// How column `column` of a source of kind `source` (a [`Backend::SCHEME`]), of type
    /// `source_type` as that source's catalog prints it ([`Backend::columns`]), is
    /// compared with this kind's copy: `(source expression, sink expression)`, each
    /// rendering the column as the same text on its side. Panics for a type the kind
    /// cannot hold.
    fn compared(source: &str, column: &str, source_type: &str) -> (String, String);

    /// A PostgreSQL source table `all_types` of every type this kind can hold, with rows
    /// of typical, edge and NULL values: key `id`, columns `i2`, `i4`, `t` and `ai`, and
    /// `big` (stored out of line) holding 600000 characters in row 1.
    fn postgres_types() -> &'static str;

    /// The configuration of a sink of database `db`.
    fn config(&self, db: &str, target_schema: Option<&str>, batch_rows: usize) -> SinkConfig {
        let url = self.url(db);
        SinkConfig::from_url(&url, target_schema.map(str::to_string), batch_rows, "sink")
            .expect("the harness URL names the kind")
    }

    /// A connected sink of database `db`.
    async fn sink(&self, db: &str, batch_rows: usize) -> anyhow::Result<Box<dyn Sink>> {
        Ok(self.config(db, None, batch_rows).connect().await?)
    }

    /// The docs table of `db` (see [`docs_rows`]).
    async fn docs(&self, db: &str, table: &TableId) -> anyhow::Result<Vec<Vec<String>>> {
        let rows = self
            .rows(db, table, &quoted::<Self>(&["id", "name", "doc", "score"]))
            .await?;
        Ok(docs_rows(rows))
    }
}

/// One column of the all-types table: its definition, the type the target column must
/// get, how to read it back (`{}` stands for the quoted column), and three values with
/// the text the server must print for each.
pub struct TypeCase {
    /// The source column.
    pub column: Column,
    /// The type of the target column.
    pub target_type: &'static str,
    /// The SQL expression that reads it back, `{}` standing for the quoted column.
    pub read: &'static str,
    /// Three values, each with the text the server prints for it.
    pub values: [(Value, &'static str); 3],
}

/// A docs row the server refuses: the SQLSTATE and a part of the message it gives.
pub struct Refusal {
    /// The row (id 7).
    pub row: Vec<Value>,
    /// The SQLSTATE of the error.
    pub sqlstate: &'static str,
    /// A part of the error's message.
    pub says: &'static str,
}

/// `names` quoted as identifiers of backend `B`.
pub fn quoted<B: Backend>(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| B::quote(n)).collect()
}

/// Docs rows (`id, name, doc, score`) with each document abbreviated to its first 12
/// characters and its length.
pub fn docs_rows(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|mut row| {
            if row[2] != "NULL" {
                let start: String = row[2].chars().take(12).collect();
                row[2] = format!("{start}…{}", row[2].chars().count());
            }
            row
        })
        .collect()
}

/// What [`Backend::columns`] must give for a table the sink created for `schema`.
pub fn expected_columns<B: Backend>(schema: &TableSchema) -> Vec<Vec<String>> {
    schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let key = schema.primary_key.contains(&i);
            let nullable = !key && (c.nullable || !B::KEEPS_NOT_NULL);
            vec![
                c.name.clone(),
                B::target_type(&c.source_type).to_string(),
                if nullable { "YES" } else { "NO" }.to_string(),
                if key { "PRI" } else { "" }.to_string(),
            ]
        })
        .collect()
}

/// Applies `events` in one transaction committed at `position`.
pub async fn transaction(
    sink: &mut dyn Sink,
    schema: &TableSchema,
    events: &[ChangeEvent],
    position: Position,
) -> anyhow::Result<()> {
    sink.begin().await?;
    sink.apply(schema, events).await?;
    sink.commit(super::events::SOURCE, position).await?;
    Ok(())
}
