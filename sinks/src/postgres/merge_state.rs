//! The merge-state table: each merged row's conflict-resolution state, kept in the sink
//! database and written by the same transaction as the row.
//!
//! `tributary.merge_state(target text, key text, state text, primary key (target, key))`
//! holds one row per target table row that went through a merge; `state` is the JSON the
//! pipeline gives (NULL for a row locked but never stored).

use crate::error::SinkError;
use crate::postgres::ddl;
use tokio_postgres::Client;

/// The merge-state table, for messages.
pub(crate) const MERGE_STATE_TABLE: &str = "tributary.merge_state";

/// Creates the merge-state table if missing, in a transaction of its own.
pub(crate) async fn ensure_table(client: &Client) -> Result<(), SinkError> {
    ddl::ensure_own_table(
        client,
        MERGE_STATE_TABLE,
        "CREATE TABLE IF NOT EXISTS tributary.merge_state (\
             target text NOT NULL, \
             key text NOT NULL, \
             state text, \
             PRIMARY KEY (target, key)) WITH (fillfactor = 50)",
    )
    .await
}

/// Locks the states of `keys` of `target` until the transaction ends (creating empty
/// ones, so a key never merged before is locked too) and returns them in `keys` order.
pub(crate) async fn lock(
    client: &Client,
    target: &str,
    keys: &[String],
) -> Result<Vec<Option<String>>, SinkError> {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    sorted.dedup();
    let failed = |e| SinkError::postgres("locking merge states", MERGE_STATE_TABLE, e);
    // One index lookup per key, locked in key order (`key = ANY($2)`, or a join the
    // planner may turn into a hash join, scans the whole table).
    let select = "SELECT m.key, m.state FROM unnest($2::text[]) AS k(key) \
         CROSS JOIN LATERAL (SELECT key, state FROM tributary.merge_state \
             WHERE target = $1 AND key = k.key FOR UPDATE) m";
    let mut rows = client
        .query(select, &[&target, &sorted])
        .await
        .map_err(failed)?;
    if rows.len() < sorted.len() {
        // Rows never merged: an empty state each, locked too.
        let have: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let missing: Vec<&String> = sorted.into_iter().filter(|k| !have.contains(*k)).collect();
        client
            .execute(
                "INSERT INTO tributary.merge_state (target, key) \
                 SELECT $1, k FROM unnest($2::text[]) AS k ORDER BY k ON CONFLICT DO NOTHING",
                &[&target, &missing],
            )
            .await
            .map_err(failed)?;
        rows.extend(
            client
                .query(select, &[&target, &missing])
                .await
                .map_err(failed)?,
        );
    }
    let found: std::collections::HashMap<String, Option<String>> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(keys
        .iter()
        .map(|k| found.get(k).cloned().flatten())
        .collect())
}

/// Stores `states` (key, state) of `target`.
pub(crate) async fn store(
    client: &Client,
    target: &str,
    states: &[(String, String)],
) -> Result<(), SinkError> {
    let keys: Vec<&str> = states.iter().map(|(k, _)| k.as_str()).collect();
    let values: Vec<&str> = states.iter().map(|(_, s)| s.as_str()).collect();
    client
        .execute(
            "INSERT INTO tributary.merge_state (target, key, state) \
             SELECT $1, k, s FROM unnest($2::text[], $3::text[]) AS u(k, s) \
             ON CONFLICT (target, key) DO UPDATE SET state = EXCLUDED.state",
            &[&target, &keys, &values],
        )
        .await
        .map_err(|e| SinkError::postgres("storing merge states", MERGE_STATE_TABLE, e))?;
    Ok(())
}

/// Forgets every state of `target` (its table was truncated).
pub(crate) async fn clear(client: &Client, target: &str) -> Result<(), SinkError> {
    client
        .execute(
            "DELETE FROM tributary.merge_state WHERE target = $1",
            &[&target],
        )
        .await
        .map_err(|e| SinkError::postgres("clearing merge states", MERGE_STATE_TABLE, e))?;
    Ok(())
}
