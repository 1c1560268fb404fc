//! Avro schemas generated from table metadata, and the Confluent wire format.
//!
//! Each table gets a key schema (`<ns>.Key`, its primary-key columns) and a value schema
//! (`<ns>.Envelope` from `avro/envelope.avsc`, with the `Value` record filled from the
//! table's columns). The namespace is `<source>.<schema>.<table>`, sanitised to Avro's
//! name rules. The `Value` record carries the whole [`TableSchema`] as JSON in its
//! `tributary.table` property, so a consumer holding only the schema text (from a
//! registry, by id) rebuilds the exact column types.
//!
//! Schema ids are derived from the SHA-256 of the schema text, so producers need no
//! coordination to agree on them; the registry in use stores id → text.

mod codec;
#[cfg(test)]
mod proptests;

pub use codec::{
    decode_key, decode_tx_end, decode_value, decode_value_from, encode_key, encode_tx_end,
    encode_value,
};

use crate::error::SchemaError;
use crate::table::TableSchema;
use crate::value::ColumnType;
use apache_avro::Schema;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// The envelope template (`schemas/avro/envelope.avsc`).
const ENVELOPE_TEMPLATE: &str = include_str!("../../avro/envelope.avsc");
/// The transaction end marker schema (`schemas/avro/tx_end.avsc`).
pub const TX_END_SCHEMA: &str = include_str!("../../avro/tx_end.avsc");

/// A registry schema id.
pub type SchemaId = u32;

/// The schema id of a schema text: the first 31 bits of its SHA-256.
pub fn schema_id(text: &str) -> SchemaId {
    let digest = Sha256::digest(text.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & 0x7FFF_FFFF
}

/// Prefixes an Avro datum with the Confluent magic byte and schema id.
pub fn frame(id: SchemaId, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(datum.len() + 5);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a Confluent-framed message into schema id and Avro datum.
pub fn unframe(message: &[u8]) -> Result<(SchemaId, &[u8]), SchemaError> {
    match message {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [] => Err(SchemaError::Framing("empty message".into())),
        [m, ..] if *m != 0 => Err(SchemaError::Framing(format!(
            "magic byte is {m:#04x}, expected 0x00"
        ))),
        _ => Err(SchemaError::Framing(format!(
            "{} bytes is shorter than the 5-byte header",
            message.len()
        ))),
    }
}

/// The key and value schemas of one table version.
#[derive(Debug, Clone)]
pub struct AvroSchemas {
    /// The table metadata the schemas were generated from.
    pub table: TableSchema,
    /// Key schema text.
    pub key_text: String,
    /// Parsed key schema.
    pub key: Schema,
    /// Value (envelope) schema text.
    pub value_text: String,
    /// Parsed value schema.
    pub value: Schema,
    /// Registry id of the key schema.
    pub key_id: SchemaId,
    /// Registry id of the value schema.
    pub value_id: SchemaId,
}

impl AvroSchemas {
    /// Generates the schemas of `table` as captured by source `source`.
    pub fn generate(source: &str, table: &TableSchema) -> Result<Self, SchemaError> {
        let namespace = [
            sanitize(source),
            sanitize(&table.table.schema),
            sanitize(&table.table.name),
        ]
        .join(".");
        let mut named = HashSet::new();
        let value_fields: Vec<Json> = table
            .columns
            .iter()
            .map(|c| {
                let mut field = json!({
                    "name": sanitize(&c.name),
                    "type": ["null", avro_type(&c.ty, &mut named)],
                    "default": null,
                });
                if sanitize(&c.name) != c.name {
                    field["tributary.column"] = json!(c.name);
                }
                field
            })
            .collect();
        let table_json = serde_json::to_string(table)
            .map_err(|e| SchemaError::malformed("table schema", e.to_string()))?;

        let mut envelope: Json = serde_json::from_str(ENVELOPE_TEMPLATE)
            .map_err(|e| SchemaError::malformed("envelope.avsc", e.to_string()))?;
        envelope["namespace"] = json!(namespace);
        let row = &mut envelope["fields"][0]["type"][1];
        row["fields"] = Json::Array(value_fields);
        row["tributary.table"] = json!(table_json);
        let value_text = envelope.to_string();

        let mut named = HashSet::new();
        let key_fields: Vec<Json> = table
            .key_columns()
            .map(|c| json!({"name": sanitize(&c.name), "type": avro_type(&c.ty, &mut named)}))
            .collect();
        let key_text = json!({
            "type": "record",
            "name": "Key",
            "namespace": namespace,
            "fields": key_fields,
        })
        .to_string();

        let key = Schema::parse_str(&key_text).map_err(|e| SchemaError::avro("key schema", e))?;
        let value =
            Schema::parse_str(&value_text).map_err(|e| SchemaError::avro("value schema", e))?;
        Ok(AvroSchemas {
            table: table.clone(),
            key_id: schema_id(&key_text),
            value_id: schema_id(&value_text),
            key_text,
            key,
            value_text,
            value,
        })
    }

    /// Rebuilds the schemas from a value schema text, as read from a registry.
    pub fn from_value_text(source: &str, value_text: &str) -> Result<Self, SchemaError> {
        let json: Json = serde_json::from_str(value_text)
            .map_err(|e| SchemaError::malformed("value schema", e.to_string()))?;
        let table_json = json["fields"][0]["type"][1]["tributary.table"]
            .as_str()
            .ok_or_else(|| {
                SchemaError::malformed("value schema", "no tributary.table property on Value")
            })?;
        let table: TableSchema = serde_json::from_str(table_json)
            .map_err(|e| SchemaError::malformed("tributary.table property", e.to_string()))?;
        let generated = Self::generate(source, &table)?;
        if generated.value_text != value_text {
            // A schema from another producer version: decode with it as the writer schema.
            let value =
                Schema::parse_str(value_text).map_err(|e| SchemaError::avro("value schema", e))?;
            return Ok(AvroSchemas {
                value_id: schema_id(value_text),
                value_text: value_text.to_string(),
                value,
                ..generated
            });
        }
        Ok(generated)
    }
}

/// Makes `name` a valid Avro name: letters, digits and `_`, not starting with a digit.
pub(crate) fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Avro type of a column type (without the null branch).
fn avro_type(ty: &ColumnType, named: &mut HashSet<&'static str>) -> Json {
    let tagged = |base: &str, tag: &str| json!({"type": base, "tributary.type": tag});
    match ty {
        ColumnType::Bool => json!("boolean"),
        ColumnType::Int16 => tagged("int", "int16"),
        ColumnType::Int32 => json!("int"),
        ColumnType::Int64 => json!("long"),
        ColumnType::Float32 => json!("float"),
        ColumnType::Float64 => json!("double"),
        ColumnType::Numeric { .. } => tagged("string", "numeric"),
        ColumnType::Text => json!("string"),
        ColumnType::Bytes => json!("bytes"),
        ColumnType::Date => json!({"type": "int", "logicalType": "date"}),
        ColumnType::Time => json!({"type": "long", "logicalType": "time-micros"}),
        ColumnType::Timestamp => json!({"type": "long", "logicalType": "local-timestamp-micros"}),
        ColumnType::TimestampTz => json!({"type": "long", "logicalType": "timestamp-micros"}),
        ColumnType::Interval => {
            if named.insert("Interval") {
                json!({
                    "type": "record", "name": "Interval", "namespace": "io.tributary",
                    "fields": [
                        {"name": "months", "type": "int"},
                        {"name": "days", "type": "int"},
                        {"name": "micros", "type": "long"}
                    ]
                })
            } else {
                json!("io.tributary.Interval")
            }
        }
        ColumnType::Uuid => json!({"type": "string", "logicalType": "uuid"}),
        ColumnType::Json { binary } => tagged("string", if *binary { "jsonb" } else { "json" }),
        ColumnType::Enum { .. } => tagged("string", "enum"),
        ColumnType::Array { element } => {
            json!({"type": "array", "items": ["null", avro_type(element, named)]})
        }
        ColumnType::Other { .. } => tagged("string", "other"),
    }
}

/// Parses a fixed schema text.
pub(crate) fn parse_fixed(text: &str, what: &str) -> Result<Schema, SchemaError> {
    Schema::parse_str(text).map_err(|e| SchemaError::avro(what, e))
}
