//! What the capture reads from the server's catalog: settings, rights, and the shape of
//! the captured tables (`information_schema`).

use super::config::MySqlSourceConfig;
use super::types::{describe, Kind, MyColumn};
use crate::error::CaptureError;
use crate::state::{table_key, StateStore};
use crate::table::TableState;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use tributary_schemas::{AvroSchemas, Column, TableId, TableSchema, Value};

/// A captured table: its current shape and how to read its columns.
#[derive(Debug, Clone)]
pub struct MyTable {
    /// Versioned schema and Avro form.
    pub state: TableState,
    /// Columns in table order.
    pub columns: Vec<MyColumn>,
}

impl MyTable {
    /// The columns of a `SELECT` that reads every value exactly over the text protocol:
    /// a FLOAT as the double it is (the server prints a FLOAT with six digits only).
    pub fn select_list(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| match c.kind {
                Kind::Float => format!("CAST({} AS DOUBLE)", quote_ident(&c.name)),
                _ => quote_ident(&c.name),
            })
            .collect();
        columns.join(", ")
    }

    /// The primary-key values of `row`.
    pub fn key(&self, row: &tributary_schemas::Row) -> Vec<Value> {
        self.state
            .schema
            .primary_key
            .iter()
            .map(|&i| row.0[i].clone())
            .collect()
    }
}

/// Opens a connection to the source, naming the endpoint in errors.
pub async fn connect(url: &str) -> Result<Conn, CaptureError> {
    let opts = Opts::from_url(url)
        .map_err(|e| CaptureError::Setup(format!("source url is not a MySQL URL: {e}")))?;
    let at = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    Conn::new(opts)
        .await
        .map_err(|e| CaptureError::mysql(format!("connecting to {at}"), e))
}

/// Checks the server settings the capture relies on.
pub async fn preflight(conn: &mut Conn) -> Result<(), CaptureError> {
    let row: Option<(String, String, String)> = conn
        .query_first("SELECT CAST(@@log_bin AS CHAR), @@binlog_format, @@binlog_row_image")
        .await
        .map_err(|e| CaptureError::mysql("reading binlog settings", e))?;
    let (log_bin, format, image) = row.unwrap_or_default();
    if log_bin != "1" && !log_bin.eq_ignore_ascii_case("ON") {
        return Err(CaptureError::Setup(
            "the server's binary log is off: start it with --log-bin (log_bin = ON) and --binlog-format=ROW".into(),
        ));
    }
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(CaptureError::Setup(format!(
            "binlog_format is {format}, Tributary needs ROW: SET GLOBAL binlog_format = 'ROW' (and in the server's configuration)"
        )));
    }
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(CaptureError::Setup(format!(
            "binlog_row_image is {image}, Tributary needs FULL: SET GLOBAL binlog_row_image = 'FULL' (and in the server's configuration)"
        )));
    }
    // MySQL's compressed transaction payloads are not read: stop rather than skip their
    // rows (MariaDB's log_bin_compress events are read). The setting exists on MySQL
    // 8.0.20+ only.
    let compression: Option<String> = conn
        .query_first("SELECT CAST(@@binlog_transaction_compression AS CHAR)")
        .await
        .ok()
        .flatten();
    if compression.is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON")) {
        return Err(CaptureError::Setup(
            "binlog_transaction_compression is ON: Tributary does not read compressed \
             transaction payloads yet; SET GLOBAL binlog_transaction_compression = OFF (and in \
             the server's configuration)"
                .into(),
        ));
    }
    // MySQL 5.7 has no such setting (its TABLE_MAP events never carry names).
    let metadata: Option<String> = conn
        .query_first("SELECT @@binlog_row_metadata")
        .await
        .ok()
        .flatten();
    if let Some(m) = metadata.filter(|m| !m.eq_ignore_ascii_case("FULL")) {
        tracing::warn!(
            binlog_row_metadata = m,
            "the binlog does not carry table shapes: a capture behind DDL decodes rows with \
             shapes it saw before and stops where none agrees; SET GLOBAL binlog_row_metadata = 'FULL' \
             (and in the server's configuration) to decode every row with its own shape"
        );
    }
    // Reading binlog coordinates needs REPLICATION CLIENT (MariaDB: BINLOG MONITOR).
    conn.query_drop("SHOW BINARY LOGS")
        .await
        .map_err(|e| CaptureError::mysql("listing binary logs (SHOW BINARY LOGS)", e))?;
    Ok(())
}

const COLUMNS_SQL: &str = "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, \
     c.IS_NULLABLE, c.CHARACTER_SET_NAME, CAST(c.NUMERIC_PRECISION AS UNSIGNED), CAST(c.NUMERIC_SCALE AS UNSIGNED), c.COLUMN_DEFAULT \
     FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
       ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
     WHERE t.TABLE_TYPE = 'BASE TABLE' \
       AND c.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')";

/// Loads the captured tables (all, or only `only`), with versioned schemas.
pub async fn load_tables(
    conn: &mut Conn,
    config: &MySqlSourceConfig,
    store: &StateStore,
    source: &str,
    only: Option<&TableId>,
) -> Result<BTreeMap<TableId, MyTable>, CaptureError> {
    let filter_on = |alias: &str| match only {
        Some(t) => format!(
            " AND {alias}TABLE_SCHEMA = {} AND {alias}TABLE_NAME = {}",
            quote_str(&t.schema),
            quote_str(&t.name)
        ),
        None => String::new(),
    };
    let filter = filter_on("c.");
    let rows: Vec<Row> = conn
        .query(format!(
            "{COLUMNS_SQL}{filter} ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
        ))
        .await
        .map_err(|e| CaptureError::mysql("reading information_schema.COLUMNS", e))?;
    let keys: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE CONSTRAINT_NAME = 'PRIMARY'{} ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
            filter_on("")
        ))
        .await
        .map_err(|e| CaptureError::mysql("reading information_schema.KEY_COLUMN_USAGE", e))?;
    // MariaDB's JSON is a longtext with a json_valid() check.
    let checks: Vec<(String, String, String)> = conn
        .query(
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CHECK_CLAUSE LIKE 'json_valid(%'",
        )
        .await
        .unwrap_or_default();
    let json_columns: HashSet<(String, String, String)> = checks
        .into_iter()
        .filter_map(|(db, table, clause)| {
            let inner = clause.strip_prefix("json_valid(")?.strip_suffix(')')?;
            Some((db, table, inner.trim_matches('`').to_string()))
        })
        .collect();

    let mut columns: BTreeMap<TableId, Vec<MyColumn>> = BTreeMap::new();
    for mut row in rows {
        let db: String = take(&mut row, 0)?;
        let table: String = take(&mut row, 1)?;
        if !config.captures(&db, &table) {
            continue;
        }
        let name: String = take(&mut row, 2)?;
        let data_type: String = take(&mut row, 3)?;
        let column_type: String = take(&mut row, 4)?;
        let nullable: String = take(&mut row, 5)?;
        let charset: Option<String> = take(&mut row, 6)?;
        let precision: Option<u64> = take(&mut row, 7)?;
        let scale: Option<u64> = take(&mut row, 8)?;
        let default: Option<String> = take(&mut row, 9)?;
        let json = json_columns.contains(&(db.clone(), table.clone(), name.clone()));
        let (kind, ty) = describe(
            &name,
            &data_type,
            &column_type,
            charset.as_deref(),
            precision,
            scale,
            json,
        )
        .map_err(|e| CaptureError::Setup(format!("table {db}.{table}: {e}")))?;
        columns
            .entry(TableId::new(db, table))
            .or_default()
            .push(MyColumn {
                name,
                column_type,
                kind,
                ty,
                nullable: nullable == "YES",
                default: default.as_deref().and_then(literal_default),
            });
    }
    let mut out = BTreeMap::new();
    for (id, cols) in columns {
        let key: Vec<usize> = keys
            .iter()
            .filter(|(db, t, _)| *db == id.schema && *t == id.name)
            .filter_map(|(_, _, c)| cols.iter().position(|x| &x.name == c))
            .collect();
        if key.is_empty() {
            return Err(CaptureError::Setup(format!(
                "table {id} has no primary key; add one, or leave the table out with exclude = [\"{id}\"]"
            )));
        }
        out.insert(id.clone(), build_table(id, cols, key, store, source)?);
    }
    Ok(out)
}

/// A captured table of columns `cols` with primary key `key`, its schema versioned in `store`.
pub fn build_table(
    id: TableId,
    cols: Vec<MyColumn>,
    key: Vec<usize>,
    store: &StateStore,
    source: &str,
) -> Result<MyTable, CaptureError> {
    let mut schema = TableSchema {
        table: id,
        columns: cols
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                ty: c.ty.clone(),
                source_type: c.column_type.clone(),
                nullable: c.nullable,
                // What rows that existed before an ADD COLUMN hold (the binlog has no
                // row events for them).
                missing: c.default.clone(),
            })
            .collect(),
        primary_key: key,
        version: 0,
    };
    schema.version = store.version(source, &schema)?;
    // How to read each shape, kept for rows met again behind later DDL.
    let key = columns_key(source, &schema.table, schema.version);
    if store.get::<Vec<MyColumn>>(&key)?.is_none() {
        store.put(&key, &cols)?;
    }
    let avro = AvroSchemas::generate(source, &schema)?;
    Ok(MyTable {
        state: TableState { schema, avro },
        columns: cols,
    })
}

/// The store key of the columns of version `version` of `table`.
fn columns_key(source: &str, table: &TableId, version: u32) -> String {
    format!("mysql-columns/{source}/{}/{version}", table_key(table))
}

/// Every shape `table` had (as stored by [`build_table`]), newest first.
pub fn known_shapes(
    store: &StateStore,
    source: &str,
    table: &TableId,
) -> Result<Vec<MyTable>, CaptureError> {
    let mut out = Vec::new();
    for schema in store.shapes(source, table)? {
        let key = columns_key(source, table, schema.version);
        if let Some(cols) = store.get::<Vec<MyColumn>>(&key)? {
            out.push(build_table(
                table.clone(),
                cols,
                schema.primary_key,
                store,
                source,
            )?);
        }
    }
    Ok(out)
}

/// The server's collations: id → (character set, its longest character in bytes).
pub async fn collations(conn: &mut Conn) -> Result<HashMap<u16, (String, u32)>, CaptureError> {
    let rows: Vec<(u64, String, u64)> = conn
        .query(
            "SELECT c.ID, c.CHARACTER_SET_NAME, s.MAXLEN FROM information_schema.COLLATIONS c \
             JOIN information_schema.CHARACTER_SETS s ON s.CHARACTER_SET_NAME = c.CHARACTER_SET_NAME \
             WHERE c.ID IS NOT NULL",
        )
        .await
        .map_err(|e| CaptureError::mysql("reading information_schema.COLLATIONS", e))?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, charset, maxlen)| {
            Some((u16::try_from(id).ok()?, (charset, maxlen as u32)))
        })
        .collect())
}

fn take<T: mysql_async::prelude::FromValue>(row: &mut Row, i: usize) -> Result<T, CaptureError> {
    row.take_opt(i)
        .and_then(Result::ok)
        .ok_or_else(|| CaptureError::Decode(format!("unexpected catalog row: column {i}")))
}

/// The value of a column default when it is a constant (`'text'` or a number, as
/// MariaDB and MySQL 8 report `COLUMN_DEFAULT`); `None` for NULL and expressions.
fn literal_default(default: &str) -> Option<String> {
    let d = default.trim();
    if let Some(inner) = d.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Some(inner.replace("''", "'").replace("\\\\", "\\"));
    }
    let numeric = !d.is_empty()
        && d.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        && d.chars().any(|c| c.is_ascii_digit());
    numeric.then(|| d.to_string())
}

/// A MySQL string literal.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A MySQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}
