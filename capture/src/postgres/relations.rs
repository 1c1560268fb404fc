//! Table shapes: from catalog rows or Relation messages to versioned [`TableSchema`]s,
//! and from pgoutput tuples or COPY fields to [`Row`]s.
//!
//! Both the snapshot (catalog) and the stream (Relation messages) build schemas through
//! [`table_schema`], so the same shape always gets the same version. The primary key comes
//! from the catalog, not from the Relation message's replica-identity flags, so
//! `REPLICA IDENTITY FULL` does not turn every column into a key column.

use super::catalog::Catalog;
use super::pgoutput::TupleValue;
use super::types::{column_type, parse_text, source_type_name};
use crate::error::CaptureError;
use crate::state::StateStore;
use crate::table::TableState;
use tributary_schemas::{AvroSchemas, Column, Row, TableId, TableSchema, Value};

/// Builds the versioned schema of `table` from its columns and key.
pub async fn table_schema(
    catalog: &mut Catalog,
    store: &StateStore,
    source: &str,
    relid: u32,
    table: TableId,
    columns: &[(String, u32, i32)],
    primary_key: &[String],
) -> Result<TableState, CaptureError> {
    let missing = catalog.missing_values(relid).await?;
    let oids: Vec<u32> = columns.iter().map(|c| c.1).collect();
    catalog.load_types(&oids).await?;
    let lookup = |oid: u32| catalog.type_info(oid);
    let mut key = Vec::with_capacity(primary_key.len());
    for name in primary_key {
        let at = columns.iter().position(|c| &c.0 == name).ok_or_else(|| {
            CaptureError::Setup(format!(
                "table {table}: primary-key column {name} is not among the published columns"
            ))
        })?;
        key.push(at);
    }
    if key.is_empty() {
        return Err(CaptureError::Setup(format!(
            "table {table} has no primary key; add one, or leave the table out with exclude = [...]"
        )));
    }
    let columns = columns
        .iter()
        .enumerate()
        .map(|(i, (name, oid, typmod))| Column {
            name: name.clone(),
            ty: column_type(*oid, *typmod, &lookup),
            source_type: source_type_name(*oid, *typmod, &lookup),
            nullable: !key.contains(&i),
            missing: missing.get(name).cloned(),
        })
        .collect();
    let mut schema = TableSchema {
        table,
        columns,
        primary_key: key,
        version: 0,
    };
    schema.version = store.version(source, &schema)?;
    let avro = AvroSchemas::generate(source, &schema)?;
    Ok(TableState { schema, avro })
}

/// Converts a pgoutput tuple into a row of `schema`.
pub fn tuple_row(schema: &TableSchema, tuple: Vec<TupleValue>) -> Result<Row, CaptureError> {
    if tuple.len() != schema.columns.len() {
        return Err(CaptureError::Decode(format!(
            "table {}: tuple has {} columns, relation has {}",
            schema.table,
            tuple.len(),
            schema.columns.len()
        )));
    }
    let values = schema
        .columns
        .iter()
        .zip(tuple)
        .map(|(c, v)| match v {
            TupleValue::Null => Ok(Value::Null),
            TupleValue::Unchanged => Ok(Value::Unchanged),
            TupleValue::Text(t) => parse_text(&c.name, &c.ty, &t)
                .map_err(|e| CaptureError::Decode(format!("table {}: {e}", schema.table))),
            TupleValue::Binary(_) => Err(CaptureError::Decode(format!(
                "table {} column {}: binary tuple data was not requested",
                schema.table, c.name
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Row(values))
}

/// Converts one line of COPY text output (without its newline) into a row of `schema`.
pub fn copy_line_row(schema: &TableSchema, line: &[u8]) -> Result<Row, CaptureError> {
    let tuple = super::copy_text::split_copy_line(line)
        .map_err(|e| CaptureError::Decode(format!("table {}: {e}", schema.table)))?
        .into_iter()
        .map(|f| f.map_or(TupleValue::Null, TupleValue::Text))
        .collect();
    tuple_row(schema, tuple)
}

/// [`copy_line_row`] with the error as text: how a restore parses a backup snapshot's
/// COPY text (a `tributary_snapshot::CopyDecoder`).
pub fn decode_copy_line(schema: &TableSchema, line: &[u8]) -> Result<Row, String> {
    copy_line_row(schema, line).map_err(|e| e.to_string())
}

/// The primary-key values of a row.
pub fn key_of(schema: &TableSchema, row: &Row) -> Vec<Value> {
    schema
        .primary_key
        .iter()
        .map(|&i| row.0[i].clone())
        .collect()
}
