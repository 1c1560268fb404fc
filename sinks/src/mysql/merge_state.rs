//! Merge states of a MySQL sink: one row per merged row in `tributary.merge_state`
//! (target table, key, state), locked with `SELECT … FOR UPDATE` in the sink's
//! transaction.

use super::literal;
use super::sink::MySqlSink;
use crate::{MergeStates, SinkError};
use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use tributary_schemas::TableSchema;

/// The table of merge states.
const MERGE_STATE_TABLE: &str = "tributary.merge_state";

#[async_trait]
impl MergeStates for MySqlSink {
    async fn lock_merge_states(
        &mut self,
        table: &TableSchema,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, SinkError> {
        self.ready("locking merge states")?;
        let target = self.merge_target(&table.table);
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(Vec::new());
        }
        let mut insert =
            String::from("INSERT IGNORE INTO tributary.merge_state (target, k) VALUES ");
        let mut list = String::new();
        for (i, key) in sorted.iter().enumerate() {
            if i > 0 {
                insert.push_str(", ");
                list.push_str(", ");
            }
            insert.push('(');
            literal::quote(&target, &mut insert);
            insert.push_str(", ");
            literal::quote(key, &mut insert);
            insert.push(')');
            literal::quote(key, &mut list);
        }
        self.run("locking merge states", MERGE_STATE_TABLE, insert)
            .await?;
        let mut select = String::from("SELECT k, state FROM tributary.merge_state WHERE target = ");
        literal::quote(&target, &mut select);
        select.push_str(" AND k IN (");
        select.push_str(&list);
        select.push_str(") ORDER BY k FOR UPDATE");
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SinkError::ConnectionLost {
                action: "locking merge states",
                table: MERGE_STATE_TABLE.to_string(),
                cause: "no connection".into(),
            })?;
        let rows: Result<Vec<(String, Option<String>)>, _> = conn.query(select).await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                self.failed = true;
                return Err(SinkError::mysql(
                    "locking merge states",
                    MERGE_STATE_TABLE,
                    e,
                ));
            }
        };
        let found: HashMap<String, Option<String>> = rows.into_iter().collect();
        Ok(keys
            .iter()
            .map(|k| found.get(k).cloned().flatten())
            .collect())
    }

    async fn store_merge_states(
        &mut self,
        table: &TableSchema,
        states: &[(String, String)],
    ) -> Result<(), SinkError> {
        self.ready("storing merge states")?;
        if states.is_empty() {
            return Ok(());
        }
        let target = self.merge_target(&table.table);
        let mut sql = String::from("INSERT INTO tributary.merge_state (target, k, state) VALUES ");
        for (i, (key, state)) in states.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            literal::quote(&target, &mut sql);
            sql.push_str(", ");
            literal::quote(key, &mut sql);
            sql.push_str(", ");
            literal::quote(state, &mut sql);
            sql.push(')');
        }
        sql.push_str(" ON DUPLICATE KEY UPDATE state = VALUES(state)");
        self.run("storing merge states", MERGE_STATE_TABLE, sql)
            .await?;
        self.wrote = true;
        Ok(())
    }

    async fn clear_merge_states(&mut self, table: &TableSchema) -> Result<(), SinkError> {
        self.ready("clearing merge states")?;
        let mut sql = String::from("DELETE FROM tributary.merge_state WHERE target = ");
        literal::quote(&self.merge_target(&table.table), &mut sql);
        self.run("clearing merge states", MERGE_STATE_TABLE, sql)
            .await?;
        self.wrote = true;
        Ok(())
    }
}
