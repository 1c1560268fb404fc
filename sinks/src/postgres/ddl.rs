//! Target tables: type mapping, creation and additive schema evolution.
//!
//! On the first use of a table version the sink reads the target's columns from the
//! catalog. A missing table is created (schema too) with the mapped column types and the
//! source's primary key; columns the schema has and the target lacks are added; a column
//! that became nullable at the source loses its `NOT NULL`. Nothing is ever dropped or
//! retyped: old columns stay and keep their data (new rows leave them NULL).
//!
//! DDL runs inside the sink's data transaction, so it commits or rolls back with the
//! data. Changes are serialised across sinks writing to the same database by a
//! transaction-level advisory lock, taken only when something must change.

use crate::error::SinkError;
use tokio_postgres::Client;
use tracing::info;
use tributary_schemas::{Column, ColumnType, TableId, TableSchema};

/// Advisory lock key serialising DDL of all Tributary sinks on one database ("tributar").
const DDL_LOCK: i64 = 0x7472_6962_7574_6172;

/// Longest `n` accepted in `varchar(n)` / `char(n)` (PostgreSQL's limit).
const MAX_CHAR_LENGTH: u64 = 10_485_760;

/// `name` as a quoted identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `table` as a quoted, schema-qualified name.
pub(crate) fn quote_table(table: &TableId) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

/// The PostgreSQL type a column is stored as.
pub(crate) fn column_type_sql(column: &Column) -> String {
    type_sql(&column.ty, &column.source_type)
}

fn type_sql(ty: &ColumnType, source_type: &str) -> String {
    match ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int16 => "smallint".into(),
        ColumnType::Int32 => "integer".into(),
        ColumnType::Int64 => "bigint".into(),
        ColumnType::Float32 => "real".into(),
        ColumnType::Float64 => "double precision".into(),
        ColumnType::Numeric { precision, scale } => match (precision, scale) {
            (Some(p @ 1..=1000), Some(s)) if s <= p => format!("numeric({p},{s})"),
            (Some(p @ 1..=1000), None) => format!("numeric({p})"),
            _ => "numeric".into(),
        },
        ColumnType::Text => character_type(source_type).unwrap_or_else(|| "text".into()),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Interval => "interval".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Json { binary: true } => "jsonb".into(),
        ColumnType::Json { binary: false } => "json".into(),
        ColumnType::Enum { .. } | ColumnType::Other { .. } => "text".into(),
        ColumnType::Array { element } => {
            let element_source = source_type.trim().strip_suffix("[]").unwrap_or("");
            format!("{}[]", type_sql(element, element_source))
        }
    }
}

/// The PostgreSQL character type named by `source_type`, when it is one we can reproduce
/// exactly (`text`, `name`, `"char"`, `varchar(n)`, `char(n)` and their long spellings).
fn character_type(source_type: &str) -> Option<String> {
    let s = source_type.trim().to_ascii_lowercase();
    match s.as_str() {
        "text" | "name" | "\"char\"" => return Some(s),
        "character varying" | "varchar" => return Some("character varying".into()),
        "character" | "char" | "bpchar" => return Some("character".into()),
        _ => {}
    }
    let (base, rest) = s.split_once('(')?;
    let length: u64 = rest.strip_suffix(')')?.trim().parse().ok()?;
    if length == 0 || length > MAX_CHAR_LENGTH {
        return None;
    }
    match base.trim() {
        "character varying" | "varchar" => Some(format!("character varying({length})")),
        "character" | "char" | "bpchar" => Some(format!("character({length})")),
        _ => None,
    }
}

/// A column of an existing target table.
struct ExistingColumn {
    name: String,
    not_null: bool,
    in_primary_key: bool,
}

/// The columns of `table`, or `None` when it does not exist.
async fn existing_columns(
    client: &Client,
    table: &TableId,
) -> Result<Option<Vec<ExistingColumn>>, SinkError> {
    let label = table.to_string();
    let rows = client
        .query(
            "SELECT a.attname::text, a.attnotnull, \
                    coalesce(a.attnum = ANY (i.indkey), false) \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_attribute a \
                 ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| SinkError::postgres("reading the catalog", &label, e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .filter_map(|row| {
                let name: Option<String> = row.get(0);
                Some(ExistingColumn {
                    name: name?,
                    not_null: row.get(1),
                    in_primary_key: row.get(2),
                })
            })
            .collect(),
    ))
}

/// The DDL statements that make `existing` (or nothing) able to hold `schema`'s rows.
fn required_changes(
    target: &TableId,
    schema: &TableSchema,
    existing: Option<&[ExistingColumn]>,
) -> Vec<String> {
    let table = quote_table(target);
    let Some(existing) = existing else {
        let mut defs: Vec<String> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let not_null = !c.nullable || schema.primary_key.contains(&i);
                format!(
                    "{} {}{}",
                    quote_ident(&c.name),
                    column_type_sql(c),
                    if not_null { " NOT NULL" } else { "" }
                )
            })
            .collect();
        let key: Vec<String> = schema.key_columns().map(|c| quote_ident(&c.name)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        return vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} ({})",
            defs.join(", ")
        )];
    };
    let mut changes = Vec::new();
    for column in &schema.columns {
        match existing.iter().find(|e| e.name == column.name) {
            // Existing rows have no value for a new column, so it is added nullable, or
            // with the value the source's existing rows have (`Column::missing`).
            None => match &column.missing {
                None => changes.push(format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {}",
                    quote_ident(&column.name),
                    column_type_sql(column)
                )),
                Some(value) => {
                    let ty = column_type_sql(column);
                    changes.push(format!(
                        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {ty} DEFAULT '{}'::{ty}",
                        quote_ident(&column.name),
                        value.replace('\'', "''")
                    ));
                    changes.push(format!(
                        "ALTER TABLE {table} ALTER COLUMN {} DROP DEFAULT",
                        quote_ident(&column.name)
                    ));
                }
            },
            Some(e) if e.not_null && column.nullable && !e.in_primary_key => changes.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL",
                quote_ident(&column.name)
            )),
            Some(_) => {}
        }
    }
    changes
}

/// Makes the target table `target` able to hold rows of `schema`.
pub(crate) async fn ensure_table(
    client: &Client,
    target: &TableId,
    schema: &TableSchema,
) -> Result<(), SinkError> {
    let label = target.to_string();
    let existing = existing_columns(client, target).await?;
    if required_changes(target, schema, existing.as_deref()).is_empty() {
        return Ok(());
    }
    // Something must change: serialise with other sinks and look again under the lock.
    lock_ddl(client, &label).await?;
    let existing = existing_columns(client, target).await?;
    if existing.is_none() {
        ensure_schema(client, &target.schema, &label).await?;
    }
    for statement in required_changes(target, schema, existing.as_deref()) {
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| SinkError::postgres("changing the table definition", &label, e))?;
        info!(table = %label, version = schema.version, statement, "changed target table");
    }
    Ok(())
}

/// Creates the schema `name` unless it exists (checked first: `CREATE SCHEMA IF NOT
/// EXISTS` needs the CREATE privilege even when the schema is there).
pub(crate) async fn ensure_schema(
    client: &Client,
    name: &str,
    label: &str,
) -> Result<(), SinkError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&name])
        .await
        .map_err(|e| SinkError::postgres("reading the catalog", label, e))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(name)
            ))
            .await
            .map_err(|e| SinkError::postgres("creating the schema", label, e))?;
    }
    Ok(())
}

/// Takes the DDL advisory lock for the rest of the current transaction.
/// Creates Tributary's own table `name` (in schema `tributary`) with `create` (a
/// `CREATE TABLE IF NOT EXISTS` statement) when it is missing, in a transaction of its own.
pub(crate) async fn ensure_own_table(
    client: &Client,
    name: &str,
    create: &str,
) -> Result<(), SinkError> {
    let exists = client
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&name])
        .await
        .map_err(|e| SinkError::postgres("reading the catalog", name, e))?
        .get::<_, bool>(0);
    if exists {
        return Ok(());
    }
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| SinkError::postgres("beginning a transaction", name, e))?;
    let created = async {
        lock_ddl(client, name).await?;
        ensure_schema(client, "tributary", name).await?;
        client
            .batch_execute(&format!("{create}; COMMIT"))
            .await
            .map_err(|e| SinkError::postgres("creating the table", name, e))
    }
    .await;
    if created.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    created
}

pub(crate) async fn lock_ddl(client: &Client, label: &str) -> Result<(), SinkError> {
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
        .await
        .map_err(|e| SinkError::postgres("locking for DDL", label, e))?;
    Ok(())
}

/// The statement creating the temporary staging table `stage` for `schema`'s rows plus the
/// integer column `op_column` saying what to do with each row (default 0, upsert, for
/// batches of upserts only, copied without it).
pub(crate) fn create_stage_sql(stage: &str, schema: &TableSchema, op_column: &str) -> String {
    let mut defs: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), column_type_sql(c)))
        .collect();
    defs.push(format!(
        "{} integer NOT NULL DEFAULT {}",
        quote_ident(op_column),
        crate::postgres::stage::OP_UPSERT
    ));
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS",
        quote_ident(stage),
        defs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, source_type: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            source_type: source_type.into(),
            nullable,
            missing: None,
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_table(&TableId::new("My", "t x")), "\"My\".\"t x\"");
    }

    #[test]
    fn types_map_to_postgres() {
        let t = |ty: ColumnType, source: &str| type_sql(&ty, source);
        assert_eq!(t(ColumnType::Float64, "float8"), "double precision");
        let numeric = |p, s| ColumnType::Numeric {
            precision: p,
            scale: s,
        };
        assert_eq!(t(numeric(Some(10), Some(2)), ""), "numeric(10,2)");
        assert_eq!(t(numeric(Some(10), None), ""), "numeric(10)");
        assert_eq!(t(numeric(None, None), ""), "numeric");
        assert_eq!(
            t(ColumnType::Text, "character varying(20)"),
            "character varying(20)"
        );
        assert_eq!(t(ColumnType::Text, "VARCHAR(20)"), "character varying(20)");
        assert_eq!(t(ColumnType::Text, "character(3)"), "character(3)");
        assert_eq!(t(ColumnType::Text, "\"char\""), "\"char\"");
        assert_eq!(t(ColumnType::Text, "longtext"), "text");
        assert_eq!(t(ColumnType::Text, "varchar(0)"), "text");
        assert_eq!(
            t(ColumnType::Text, "varchar(20) character set utf8mb4"),
            "text"
        );
        assert_eq!(t(ColumnType::Json { binary: true }, "jsonb"), "jsonb");
        assert_eq!(
            t(
                ColumnType::Enum {
                    name: "mood".into()
                },
                "mood"
            ),
            "text"
        );
        assert_eq!(
            t(
                ColumnType::Other {
                    name: "point".into()
                },
                "point"
            ),
            "text"
        );
        let array = |e: ColumnType| ColumnType::Array {
            element: Box::new(e),
        };
        assert_eq!(t(array(ColumnType::Int32), "integer[]"), "integer[]");
        assert_eq!(
            t(array(ColumnType::Text), "character varying(5)[]"),
            "character varying(5)[]"
        );
        assert_eq!(t(array(ColumnType::Text), "_text"), "text[]");
    }

    fn schema() -> TableSchema {
        TableSchema {
            table: TableId::new("public", "t"),
            columns: vec![
                col("id", ColumnType::Int64, "bigint", false),
                col("name", ColumnType::Text, "text", false),
                col("note", ColumnType::Text, "text", true),
            ],
            primary_key: vec![0],
            version: 1,
        }
    }

    #[test]
    fn a_missing_table_is_created_with_its_key() {
        let changes = required_changes(&TableId::new("r", "t"), &schema(), None);
        assert_eq!(
            changes,
            vec![
                "CREATE TABLE IF NOT EXISTS \"r\".\"t\" (\"id\" bigint NOT NULL, \
                 \"name\" text NOT NULL, \"note\" text, PRIMARY KEY (\"id\"))"
            ]
        );
    }

    #[test]
    fn columns_are_added_and_relaxed_never_dropped() {
        let existing = vec![
            ExistingColumn {
                name: "id".into(),
                not_null: true,
                in_primary_key: true,
            },
            ExistingColumn {
                name: "name".into(),
                not_null: true,
                in_primary_key: false,
            },
            ExistingColumn {
                name: "old".into(),
                not_null: false,
                in_primary_key: false,
            },
        ];
        let mut s = schema();
        s.columns[1].nullable = true;
        let changes = required_changes(&TableId::new("r", "t"), &s, Some(&existing));
        assert_eq!(
            changes,
            vec![
                "ALTER TABLE \"r\".\"t\" ALTER COLUMN \"name\" DROP NOT NULL".to_string(),
                "ALTER TABLE \"r\".\"t\" ADD COLUMN IF NOT EXISTS \"note\" text".to_string(),
            ]
        );
    }
}
