//! What operators ask of a MySQL/MariaDB source outside the capture: writing a person's
//! choice back (the conflict queue).

use super::catalog::connect;
use super::MySqlSourceConfig;
use crate::admin::WriteBack;
use crate::error::CaptureError;
use mysql_async::prelude::Queryable;

/// Writes `change` into the source as an ordinary update; returns the rows it changed.
pub async fn write_back(
    config: &MySqlSourceConfig,
    change: &WriteBack<'_>,
) -> Result<u64, CaptureError> {
    let mut conn = connect(config.url.expose()).await?;
    let ident = |s: &str| format!("`{}`", s.replace('`', "``"));
    let mut sql = format!(
        "UPDATE {}.{} SET {} = ? WHERE ",
        ident(&change.table.schema),
        ident(&change.table.name),
        ident(change.column)
    );
    let mut params: Vec<mysql_async::Value> = vec![change.value_text().into()];
    for (i, (c, text)) in change.key_texts().into_iter().enumerate() {
        if i > 0 {
            sql.push_str(" AND ");
        }
        sql.push_str(&format!("{} = ?", ident(c)));
        params.push(text.into());
    }
    conn.exec_drop(&sql, params)
        .await
        .map_err(|e| CaptureError::mysql(format!("writing the choice into {}", change.table), e))?;
    let changed = conn.affected_rows();
    let _ = conn.disconnect().await;
    Ok(changed)
}
