//! The built-in schema registry: schemas published to a topic beside the data.
//!
//! Schema ids are derived from the schema text (see `tributary_schemas::schema_id`), so a
//! producer needs no round trip to learn an id. Before the first event that uses a schema,
//! the publisher writes `{"id", "subject", "schema"}` to `<prefix>._schemas` (key: the id),
//! in the same ordered stream of deliveries as the events, so a consumer that meets an
//! unknown id finds it by reading that topic.

use serde::{Deserialize, Serialize};
use tributary_schemas::SchemaId;

/// Suffix of the schema topic.
pub const SCHEMA_TOPIC_SUFFIX: &str = "_schemas";

/// One registered schema as stored in the schema topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredSchema {
    /// Registry id.
    pub id: SchemaId,
    /// Subject (`<topic>-key` or `<topic>-value`, Confluent's convention).
    pub subject: String,
    /// The Avro schema text.
    pub schema: String,
}

/// The schema topic of a topic prefix.
pub fn schema_topic(prefix: &str) -> String {
    format!("{prefix}.{SCHEMA_TOPIC_SUFFIX}")
}

/// The transaction-marker topic of a topic prefix.
pub fn transactions_topic(prefix: &str) -> String {
    format!("{prefix}.transactions")
}

/// The dead-letter topic of a source: `<prefix>.dead_letters` (JSON entries keyed by sink).
pub fn dead_letters_topic(prefix: &str) -> String {
    format!("{prefix}.dead_letters")
}

/// The data topic of a table: `<prefix>.<schema>.<table>` with characters Kafka rejects
/// replaced by `_`.
pub fn table_topic(prefix: &str, schema: &str, table: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{prefix}.{}.{}", clean(schema), clean(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_kafka_safe() {
        assert_eq!(
            table_topic("shop", "public", "medicines"),
            "shop.public.medicines"
        );
        assert_eq!(
            table_topic("shop", "my schema", "ta$ble"),
            "shop.my_schema.ta_ble"
        );
        assert_eq!(transactions_topic("shop"), "shop.transactions");
        assert_eq!(schema_topic("shop"), "shop._schemas");
    }
}
