//! A captured table as every engine publishes it: its versioned schema and the Avro
//! schemas of that version.
//!
//! Each engine builds a [`TableState`] from its own catalog (PostgreSQL's `pg_catalog`
//! and Relation messages, MySQL's `information_schema` and TABLE_MAP events). The version
//! comes from the state store, so the same shape always gets the same version, in the
//! snapshot and in the stream, across restarts.

use tributary_schemas::{AvroSchemas, TableSchema};

/// A captured table's current schema and its Avro form.
#[derive(Debug, Clone)]
pub struct TableState {
    /// Table metadata at its current version.
    pub schema: TableSchema,
    /// Avro schemas of that version.
    pub avro: AvroSchemas,
}
