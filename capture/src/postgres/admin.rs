//! What operators ask of a PostgreSQL source outside the capture: its slot's position
//! against the server's WAL, and writing a person's choice back (the conflict queue).

use super::catalog::Catalog;
use super::PostgresSourceConfig;
use crate::admin::{SourceProgress, WriteBack};
use crate::error::CaptureError;

/// The slot of source `name` against the server's current WAL position.
pub async fn progress(name: &str, config: &PostgresSourceConfig) -> SourceProgress {
    let slot = config.slot_name(name);
    let catalog = match Catalog::connect(config.url.expose()).await {
        Ok(c) => c,
        Err(e) => {
            return SourceProgress::Unreachable {
                error: e.to_string(),
            }
        }
    };
    let row = catalog
        .client()
        .query_opt(
            "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, active \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await;
    match row {
        Ok(Some(r)) => SourceProgress::Slot {
            slot,
            confirmed: r.get::<_, Option<String>>(0),
            current: r.get::<_, String>(1),
            behind_bytes: r.get::<_, Option<i64>>(2).unwrap_or(0),
            active: r.get::<_, bool>(3),
        },
        Ok(None) => SourceProgress::NoSlot { slot },
        Err(e) => SourceProgress::Unreachable {
            error: CaptureError::pg("reading the slot", e).to_string(),
        },
    }
}

/// Writes `change` into the source as an ordinary update; returns the rows it changed.
pub async fn write_back(
    config: &PostgresSourceConfig,
    change: &WriteBack<'_>,
) -> Result<u64, CaptureError> {
    let catalog = Catalog::connect(config.url.expose()).await?;
    let client = catalog.client();
    let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let target = format!(
        "{}.{}",
        ident(&change.table.schema),
        ident(&change.table.name)
    );
    let ty: String = client
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2::text",
            &[&target, &change.column],
        )
        .await
        .map_err(|e| CaptureError::pg(format!("reading the type of {}.{}", change.table, change.column), e))?
        .get(0);
    let mut sql = format!(
        "UPDATE {target} SET {} = $1::text::{ty} WHERE ",
        ident(change.column)
    );
    let mut params: Vec<Option<String>> = vec![change.value_text()];
    for (i, (c, text)) in change.key_texts().into_iter().enumerate() {
        if i > 0 {
            sql.push_str(" AND ");
        }
        sql.push_str(&format!("{}::text = ${}", ident(c), i + 2));
        params.push(text);
    }
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    client
        .execute(&sql, &refs)
        .await
        .map_err(|e| CaptureError::pg(format!("writing the choice into {}", change.table), e))
}
