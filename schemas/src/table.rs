//! Table identity and table schemas as the source describes them.

use crate::value::ColumnType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A table's schema-qualified name at its source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    /// Schema (PostgreSQL) or database (MySQL) name.
    pub schema: String,
    /// Table name.
    pub name: String,
}

impl TableId {
    /// A table id.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name at the source.
    pub name: String,
    /// Logical type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// The source's own type name, with modifiers (`varchar(20)`, `numeric(10,2)`).
    pub source_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// The value, in PostgreSQL text form, that rows which existed before the column was
    /// added hold without storing it (`attmissingval` after `ADD COLUMN ... DEFAULT`); a
    /// sink that adds the column gives its existing rows this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// A table's columns and primary key at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table.
    pub table: TableId,
    /// Columns in source order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order.
    pub primary_key: Vec<usize>,
    /// Version of this table's schema, raised at every change of columns.
    pub version: u32,
}

impl TableSchema {
    /// Index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether the columns (names, types, key) equal `other`'s, ignoring the version.
    pub fn same_shape(&self, other: &TableSchema) -> bool {
        self.table == other.table
            && self.columns == other.columns
            && self.primary_key == other.primary_key
    }

    /// The primary-key columns.
    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.primary_key.iter().map(|&i| &self.columns[i])
    }
}
