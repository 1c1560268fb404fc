//! Target tables in MySQL: type mapping, creation and additive schema evolution.
//!
//! On the first use of a table version the sink reads the target's columns from
//! `information_schema`. A missing table is created (its database too) as an InnoDB table
//! with the mapped column types and the source's primary key; columns the schema has and
//! the target lacks are added. Nothing is dropped or retyped. MySQL names columns
//! case-insensitively, so columns are matched that way.
//!
//! Text is stored in `utf8mb4` with a binary, no-pad collation (`utf8mb4_nopad_bin` on
//! MariaDB, `utf8mb4_0900_bin` on MySQL 8) when the server has one: keys that differ only
//! in case or trailing spaces are distinct rows at the source and must stay distinct.
//!
//! MySQL commits DDL implicitly, so DDL never runs inside the sink's data transaction:
//! see the sink for how it is ordered around it.

use crate::error::SinkError;
use crate::mysql::literal::{self, TargetColumn};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tributary_schemas::{Column, ColumnType, TableId, TableSchema};

/// `name` as a quoted identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `table` as a quoted, database-qualified name.
pub(crate) fn quote_table(table: &TableId) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

/// The MySQL type a column is stored as; key columns need bounded types.
pub(crate) fn type_sql(column: &Column, key: bool) -> String {
    let source = column.source_type.trim().to_ascii_lowercase();
    match &column.ty {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int16 => "SMALLINT".into(),
        ColumnType::Int32 => "INT".into(),
        ColumnType::Int64 => "BIGINT".into(),
        ColumnType::Float32 => "FLOAT".into(),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Numeric { precision, scale } => {
            if source.starts_with("bigint") && source.contains("unsigned") {
                return "BIGINT UNSIGNED".into();
            }
            match (precision, scale.unwrap_or(0)) {
                (Some(p @ 1..=65), s) if s <= 30 && s <= *p => format!("DECIMAL({p},{s})"),
                // MySQL's widest decimal; values with more digits are refused, not rounded.
                _ => "DECIMAL(65,30)".into(),
            }
        }
        ColumnType::Text => text_type(&source, column.source_type.trim(), key),
        ColumnType::Bytes => binary_type(&source, key),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME(6)".into(),
        ColumnType::Timestamp | ColumnType::TimestampTz => "DATETIME(6)".into(),
        ColumnType::Interval => "TIME(6)".into(),
        ColumnType::Uuid => "CHAR(36) CHARACTER SET ascii".into(),
        ColumnType::Json { .. } | ColumnType::Array { .. } => "JSON".into(),
        ColumnType::Enum { .. } if source.starts_with("enum(") => column.source_type.clone(),
        ColumnType::Enum { .. } => "VARCHAR(255)".into(),
        ColumnType::Other { .. } if key => "VARCHAR(255)".into(),
        ColumnType::Other { .. } => "LONGTEXT".into(),
    }
}

/// `(n)` at the end of `ty` after `prefix`, e.g. 20 for `varchar(20)`.
fn length_of(ty: &str, prefixes: &[&str]) -> Option<u64> {
    prefixes.iter().find_map(|p| {
        ty.strip_prefix(p)?
            .trim_start()
            .strip_prefix('(')?
            .split(')')
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

/// `source` is the lower-cased source type, `original` as the source spells it (SET and
/// ENUM labels keep their case).
fn text_type(source: &str, original: &str, key: bool) -> String {
    if source.starts_with("set(") || source.starts_with("enum(") {
        return original.to_string();
    }
    if let Some(n) = length_of(source, &["char", "character"]).filter(|n| *n <= 255) {
        return format!("CHAR({n})");
    }
    if let Some(n) = length_of(source, &["varchar", "character varying"]) {
        // Long varchars would add up past MySQL's 65,535-byte row limit.
        if n <= 255 || (key && n <= 768) {
            return format!("VARCHAR({n})");
        }
    }
    if key {
        return "VARCHAR(255)".into();
    }
    // PostgreSQL's `text` is unbounded too, so `text` becomes LONGTEXT.
    match source {
        "tinytext" | "mediumtext" => source.to_ascii_uppercase(),
        _ => "LONGTEXT".into(),
    }
}

fn binary_type(source: &str, key: bool) -> String {
    if let Some(n) = length_of(source, &["bit"]).filter(|n| (2..=64).contains(n)) {
        return format!("BIT({n})");
    }
    if let Some(n) = length_of(source, &["binary"]).filter(|n| *n <= 255) {
        return format!("BINARY({n})");
    }
    if let Some(n) = length_of(source, &["varbinary"]).filter(|n| *n <= 255 || key && *n <= 3072) {
        return format!("VARBINARY({n})");
    }
    if key {
        return "VARBINARY(255)".into();
    }
    match source {
        "tinyblob" | "blob" | "mediumblob" => source.to_ascii_uppercase(),
        _ => "LONGBLOB".into(),
    }
}

/// An existing target table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetTable {
    /// Storage engine; empty for a view.
    pub engine: String,
    /// Columns in order.
    pub columns: Vec<TargetColumn>,
    /// Every unique index (`PRIMARY` for the primary key) with its columns in order.
    pub unique: Vec<(String, Vec<String>)>,
}

/// Why an existing target cannot take the rows of `schema` by key, if it cannot.
///
/// `INSERT … ON DUPLICATE KEY UPDATE` acts on whichever unique key clashes, so the target's
/// primary key must be the source's and no other unique index may exist: otherwise a row
/// would silently update or merge an unrelated one.
pub(crate) fn key_problem(schema: &TableSchema, target: &TargetTable) -> Option<String> {
    let want: Vec<&str> = schema.key_columns().map(|c| c.name.as_str()).collect();
    let same = |have: &[String]| {
        have.len() == want.len()
            && have
                .iter()
                .zip(&want)
                .all(|(h, w)| h.eq_ignore_ascii_case(w))
    };
    match target.unique.iter().find(|(name, _)| name == "PRIMARY") {
        None => {
            return Some(format!(
                "has no primary key; the source's key is ({})",
                want.join(", ")
            ))
        }
        Some((_, have)) if !same(have) => {
            return Some(format!(
                "has the primary key ({}), the source's key is ({})",
                have.join(", "),
                want.join(", ")
            ))
        }
        Some(_) => {}
    }
    target
        .unique
        .iter()
        .find(|(name, _)| name != "PRIMARY")
        .map(|(name, cols)| {
            format!(
                "has the unique index {name} ({}) besides the primary key, which would make an upsert \
                 update the wrong row; drop it or make it non-unique",
                cols.join(", ")
            )
        })
}

/// The target table, or `None` when it does not exist.
pub(crate) async fn read_table(
    conn: &mut Conn,
    table: &TableId,
) -> Result<Option<TargetTable>, SinkError> {
    let name = table.to_string();
    let engine: Option<Option<String>> = conn
        .exec_first(
            "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| SinkError::mysql("reading the catalog", &name, e))?;
    let Some(engine) = engine else {
        return Ok(None);
    };
    let columns: Vec<(String, String, Option<u64>, Option<u64>)> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), CAST(NUMERIC_PRECISION AS UNSIGNED), \
                    CAST(NUMERIC_SCALE AS UNSIGNED) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| SinkError::mysql("reading the catalog", &name, e))?;
    let columns = columns
        .into_iter()
        .map(|(name, data_type, precision, scale)| TargetColumn {
            name,
            data_type,
            precision,
            scale,
        })
        .collect();
    let indexed: Vec<(String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| SinkError::mysql("reading the catalog", &name, e))?;
    let mut unique: Vec<(String, Vec<String>)> = Vec::new();
    for (index, column) in indexed {
        match unique.last_mut() {
            Some((last, cols)) if *last == index => cols.push(column),
            _ => unique.push((index, vec![column])),
        }
    }
    Ok(Some(TargetTable {
        engine: engine.unwrap_or_default(),
        columns,
        unique,
    }))
}

/// The statements that make `target` fit `schema` (none when it already does).
pub(crate) fn changes(
    schema: &TableSchema,
    target: &TableId,
    existing: Option<&[TargetColumn]>,
    collation: &str,
) -> Vec<String> {
    let table = quote_table(target);
    let Some(existing) = existing else {
        let mut defs: Vec<String> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let key = schema.primary_key.contains(&i);
                format!(
                    "{} {}{}",
                    quote_ident(&c.name),
                    type_sql(c, key),
                    if key { " NOT NULL" } else { " NULL" }
                )
            })
            .collect();
        let key: Vec<String> = schema.key_columns().map(|c| quote_ident(&c.name)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        return vec![
            format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                quote_ident(&target.schema)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {table} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
                defs.join(", ")
            ),
        ];
    };
    let mut out = Vec::new();
    for (i, column) in schema.columns.iter().enumerate() {
        if find(existing, &column.name).is_some() {
            continue;
        }
        let key = schema.primary_key.contains(&i);
        let name = quote_ident(&column.name);
        let ty = type_sql(column, key);
        match &column.missing {
            None => out.push(format!("ALTER TABLE {table} ADD COLUMN {name} {ty} NULL")),
            // Rows that existed before the column was added hold the source's value for
            // it: given as the default while adding (one statement, so it cannot be lost
            // half way), then dropped. An expression default works for every type.
            Some(missing) => {
                out.push(format!(
                    "ALTER TABLE {table} ADD COLUMN {name} {ty} NULL DEFAULT ({})",
                    missing_literal(&column.ty, missing)
                ));
                out.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {name} DROP DEFAULT"
                ));
            }
        }
    }
    out
}

/// The target column named `name` (MySQL compares column names case-insensitively).
pub(crate) fn find<'a>(columns: &'a [TargetColumn], name: &str) -> Option<&'a TargetColumn> {
    columns.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// A column's missing value (PostgreSQL text form) as a MySQL literal.
fn missing_literal(ty: &ColumnType, text: &str) -> String {
    let mut out = String::new();
    match (ty, text) {
        (ColumnType::Bool, "t" | "true") => out.push('1'),
        (ColumnType::Bool, "f" | "false") => out.push('0'),
        (ColumnType::Bytes, t)
            if t.starts_with("\\x") && t[2..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            out.push_str("X'");
            out.push_str(&t[2..]);
            out.push('\'');
        }
        (ColumnType::TimestampTz, t) => {
            literal::quote(t.strip_suffix("+00").unwrap_or(t), &mut out)
        }
        (_, t) => literal::quote(t, &mut out),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, source_type: &str) -> Column {
        Column {
            name: name.into(),
            ty,
            source_type: source_type.into(),
            nullable: true,
            missing: None,
        }
    }

    #[test]
    fn types_map_to_mysql() {
        let t = |ty, src: &str, key| type_sql(&col("c", ty, src), key);
        let numeric = |p, s| ColumnType::Numeric {
            precision: p,
            scale: s,
        };
        assert_eq!(
            t(numeric(Some(10), Some(2)), "numeric(10,2)", false),
            "DECIMAL(10,2)"
        );
        assert_eq!(t(numeric(None, None), "numeric", false), "DECIMAL(65,30)");
        assert_eq!(
            t(numeric(Some(20), Some(0)), "bigint(20) unsigned", false),
            "BIGINT UNSIGNED"
        );
        assert_eq!(t(ColumnType::Text, "varchar(20)", false), "VARCHAR(20)");
        assert_eq!(
            t(ColumnType::Text, "character varying(40)", true),
            "VARCHAR(40)"
        );
        assert_eq!(t(ColumnType::Text, "varchar(4000)", false), "LONGTEXT");
        assert_eq!(t(ColumnType::Text, "text", false), "LONGTEXT");
        assert_eq!(t(ColumnType::Text, "mediumtext", false), "MEDIUMTEXT");
        assert_eq!(t(ColumnType::Text, "text", true), "VARCHAR(255)");
        assert_eq!(t(ColumnType::Text, "character(3)", false), "CHAR(3)");
        assert_eq!(t(ColumnType::Text, "set('a','b')", false), "set('a','b')");
        let en = ColumnType::Enum { name: "e".into() };
        assert_eq!(t(en.clone(), "enum('x','y')", false), "enum('x','y')");
        assert_eq!(t(en, "mood", false), "VARCHAR(255)");
        assert_eq!(t(ColumnType::Bytes, "bit(12)", false), "BIT(12)");
        assert_eq!(t(ColumnType::Bytes, "bytea", false), "LONGBLOB");
        assert_eq!(t(ColumnType::Bytes, "bytea", true), "VARBINARY(255)");
        assert_eq!(
            t(ColumnType::TimestampTz, "timestamp(3)", false),
            "DATETIME(6)"
        );
        assert_eq!(t(ColumnType::Interval, "time(2)", false), "TIME(6)");
    }

    #[test]
    fn a_missing_table_is_created_and_new_columns_added() {
        let mut schema = TableSchema {
            table: TableId::new("public", "t"),
            columns: vec![
                col("id", ColumnType::Int32, "integer"),
                col("name", ColumnType::Text, "text"),
            ],
            primary_key: vec![0],
            version: 1,
        };
        let target = TableId::new("shop", "t");
        let create = changes(&schema, &target, None, "utf8mb4_bin");
        assert_eq!(create.len(), 2);
        assert!(
            create[1].contains("`id` INT NOT NULL, `name` LONGTEXT NULL, PRIMARY KEY (`id`)"),
            "{create:?}"
        );
        assert!(create[1].contains("ENGINE=InnoDB"), "{create:?}");
        let existing = vec![
            TargetColumn {
                name: "ID".into(),
                data_type: "int".into(),
                precision: Some(10),
                scale: Some(0),
            },
            TargetColumn {
                name: "name".into(),
                data_type: "text".into(),
                precision: None,
                scale: None,
            },
        ];
        assert!(changes(&schema, &target, Some(&existing), "x").is_empty());
        let mut flag = col("ok", ColumnType::Bool, "boolean");
        flag.missing = Some("t".into());
        schema.columns.push(flag);
        assert_eq!(
            changes(&schema, &target, Some(&existing), "x"),
            vec![
                "ALTER TABLE `shop`.`t` ADD COLUMN `ok` BOOLEAN NULL DEFAULT (1)".to_string(),
                "ALTER TABLE `shop`.`t` ALTER COLUMN `ok` DROP DEFAULT".to_string(),
            ]
        );
        assert_eq!(missing_literal(&ColumnType::Bytes, "\\x01ff"), "X'01ff'");
        assert_eq!(
            type_sql(&col("s", ColumnType::Text, "set('Red','b')"), false),
            "set('Red','b')"
        );
    }
}
