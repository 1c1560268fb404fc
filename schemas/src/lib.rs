//! The contract every Tributary crate speaks.
//!
//! A change captured from a source becomes a [`ChangeEvent`]: the table it touched, the
//! operation, typed row images ([`Row`] of [`Value`]s), a totally ordered source
//! [`Position`] and the transaction it belongs to. Every transaction ends with a
//! [`TxEnd`] marker that says how many events each topic received, so a consumer can
//! reassemble and apply the transaction atomically even though its events are spread over
//! one topic per table.
//!
//! On the wire, events are Avro in the Confluent framing (magic byte, 4-byte schema id,
//! Avro datum) so any standard Avro consumer can decode them. The Avro schemas are
//! generated from the source table's metadata ([`TableSchema`]) and carry that metadata
//! as a property, so a consumer can rebuild the exact column types from the schema alone.
//! The fixed parts of the envelope live in `schemas/avro/*.avsc`.

mod address;
mod avro;
mod error;
mod event;
mod hlc;
pub mod pg_text;
mod position;
mod secret;
mod table;
mod value;

pub use address::{redact_url, DatabaseIdentity};
pub use avro::{
    decode_key, decode_tx_end, decode_value, decode_value_from, encode_key, encode_tx_end,
    encode_value, frame, schema_id, unframe, AvroSchemas, SchemaId, TX_END_SCHEMA,
};
pub use error::SchemaError;
pub use event::{ChangeEvent, Op, TopicCount, TxEnd, TxMeta};
pub use hlc::{Hlc, Stamp};
pub use position::{PgPosition, Position};
pub use secret::{Secret, SecretUrl};
pub use table::{Column, TableId, TableSchema};
pub use value::{ColumnType, Interval, Row, Value};
