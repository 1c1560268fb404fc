//! The consumer side of the built-in schema registry: resolves schema ids by reading the
//! source's `_schemas` topic from the beginning.

use crate::error::PipelineError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tributary_schemas::{AvroSchemas, SchemaId};
use tributary_transport::topics::{schema_topic, RegisteredSchema};
use tributary_transport::{Consumer, TopicReader};

/// How long the schema topic may stay silent before an id is declared unknown. A marker
/// is durable only after every schema its events use, so by the time the apply loop
/// decodes an event its schema is readable; the wait only covers fetch latency.
const SCHEMA_WAIT: Duration = Duration::from_secs(3);

/// Value schemas of one source, by id.
pub struct SchemaCache {
    source: String,
    topic: String,
    reader: Box<dyn TopicReader>,
    schemas: HashMap<SchemaId, Arc<AvroSchemas>>,
}

impl SchemaCache {
    /// A cache reading `<prefix>._schemas`.
    pub async fn open(
        consumer: &dyn Consumer,
        source: &str,
        prefix: &str,
    ) -> Result<Self, PipelineError> {
        let topic = schema_topic(prefix);
        Ok(SchemaCache {
            source: source.to_string(),
            reader: consumer.reader_from_start(&topic).await?,
            topic,
            schemas: HashMap::new(),
        })
    }

    /// The schemas whose value schema has id `id`.
    pub async fn get(&mut self, id: SchemaId) -> Result<Arc<AvroSchemas>, PipelineError> {
        if let Some(s) = self.schemas.get(&id) {
            return Ok(s.clone());
        }
        loop {
            let Some(record) = self.reader.next(Some(SCHEMA_WAIT)).await? else {
                return Err(PipelineError::Inconsistent(format!(
                    "schema id {id} is not in {} (read to its end)",
                    self.topic
                )));
            };
            let Ok(registered) = serde_json::from_slice::<RegisteredSchema>(&record.value) else {
                tracing::warn!(
                    topic = self.topic,
                    offset = record.offset,
                    "ignoring malformed schema record"
                );
                continue;
            };
            if !registered.subject.ends_with("-value")
                || registered.subject.ends_with(".transactions-value")
            {
                continue;
            }
            match AvroSchemas::from_value_text(&self.source, &registered.schema) {
                Ok(schemas) => {
                    self.schemas.insert(registered.id, Arc::new(schemas));
                }
                Err(e) => {
                    tracing::warn!(id = registered.id, error = %e, "ignoring unusable schema record")
                }
            }
            if let Some(s) = self.schemas.get(&id) {
                return Ok(s.clone());
            }
        }
    }
}
