//! The watermark table: the last applied position of every source.
//!
//! `tributary.watermarks(source text primary key, position jsonb not null, updated_at
//! timestamptz)` holds one row per source; the position is the serde JSON of
//! [`Position`]. The row is written by the same transaction as the data it covers, in one
//! round trip together with `COMMIT`, so data and watermark are durable together or not
//! at all.

use crate::error::SinkError;
use crate::postgres::ddl;
use tokio_postgres::Client;
use tributary_schemas::Position;

/// The watermark table, for messages.
pub(crate) const WATERMARK_TABLE: &str = "tributary.watermarks";

/// Creates the watermark table (and its schema) if missing, in a transaction of its own.
pub(crate) async fn ensure_table(client: &Client) -> Result<(), SinkError> {
    ddl::ensure_own_table(
        client,
        WATERMARK_TABLE,
        "CREATE TABLE IF NOT EXISTS tributary.watermarks (\
             source text PRIMARY KEY, \
             position jsonb NOT NULL, \
             updated_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
}

/// The stored watermark of `source`.
pub(crate) async fn read(client: &Client, source: &str) -> Result<Option<Position>, SinkError> {
    let row = client
        .query_opt(
            "SELECT position::text FROM tributary.watermarks WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(|e| SinkError::postgres("reading the watermark", WATERMARK_TABLE, e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.get(0);
    crate::parse_watermark(source, &text).map(Some)
}

/// The statements that store `position` for `source` and commit, as one simple query.
pub(crate) fn store_and_commit_sql(source: &str, position: &Position) -> String {
    // Serialising a position (integers and a tag) cannot fail.
    let json = serde_json::to_string(position).unwrap_or_default();
    format!(
        "INSERT INTO tributary.watermarks (source, position, updated_at) \
         VALUES ({}, {}::jsonb, now()) \
         ON CONFLICT (source) DO UPDATE \
             SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at; \
         COMMIT",
        quote_literal(source),
        quote_literal(&json)
    )
}

/// `text` as an SQL string literal, correct whatever `standard_conforming_strings` is.
fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }

    #[test]
    fn the_commit_statement_embeds_the_position_as_json() {
        let sql = store_and_commit_sql("src", &Position::pg(5, 2));
        assert!(
            sql.contains("('src', '{\"kind\":\"postgres\",\"lsn\":5,\"seq\":2}'::jsonb"),
            "{sql}"
        );
        assert!(sql.ends_with("COMMIT"));
    }
}
