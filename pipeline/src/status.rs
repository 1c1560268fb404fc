//! `tributary status`: how far each sink has applied each source, and each PostgreSQL
//! source's slot position against the server's current WAL position.

use crate::config::{Config, SinkConfig, SinkKind, SourceConfig};
use anyhow::Context;
use tokio_postgres::NoTls;
use tributary_sinks::{MySqlSink, MySqlSinkConfig, Sink};

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Prints the status of every source and sink.
pub async fn print(config: &Config) -> anyhow::Result<()> {
    for (name, source) in &config.sources {
        let pg = match source {
            SourceConfig::Postgres(pg) => pg,
            SourceConfig::Mysql(my) => {
                println!(
                    "source {name}: MySQL/MariaDB at {} (binlog checkpoint in the state_dir)",
                    redact(&my.url)
                );
                continue;
            }
        };
        match connect(&pg.url).await {
            Ok(client) => {
                let row = client
                    .query_opt(
                        "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text, \
                         pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, active \
                         FROM pg_replication_slots WHERE slot_name = $1",
                        &[&pg.slot_name(name)],
                    )
                    .await?;
                match row {
                    Some(r) => println!(
                        "source {name}: slot {} confirmed {} of {} (behind {} bytes), {}",
                        pg.slot_name(name),
                        r.get::<_, Option<String>>(0).unwrap_or_default(),
                        r.get::<_, String>(1),
                        r.get::<_, Option<i64>>(2).unwrap_or(0),
                        if r.get::<_, bool>(3) {
                            "capturing"
                        } else {
                            "idle"
                        }
                    ),
                    None => println!(
                        "source {name}: slot {} does not exist yet",
                        pg.slot_name(name)
                    ),
                }
            }
            Err(e) => println!("source {name}: unreachable: {e:#}"),
        }
    }
    for (name, sink) in &config.sinks {
        if sink.kind == SinkKind::Mysql {
            mysql_sink_status(config, name, sink).await;
            continue;
        }
        match connect(&sink.url).await {
            Ok(client) => {
                let rows = client
                    .query("SELECT source, position::text, updated_at::text FROM tributary.watermarks ORDER BY 1", &[])
                    .await;
                match rows {
                    Ok(rows) if !rows.is_empty() => {
                        for r in rows {
                            println!(
                                "sink {name}: source {} applied up to {} at {}",
                                r.get::<_, String>(0),
                                r.get::<_, String>(1),
                                r.get::<_, Option<String>>(2).unwrap_or_default()
                            );
                        }
                    }
                    _ => println!("sink {name}: nothing applied yet"),
                }
            }
            Err(e) => println!("sink {name}: unreachable: {e:#}"),
        }
    }
    Ok(())
}

/// Prints the watermark of every source of a MySQL sink.
async fn mysql_sink_status(config: &Config, name: &str, sink: &SinkConfig) {
    let connected = MySqlSink::connect(MySqlSinkConfig {
        url: sink.url.clone(),
        target_schema: sink.target_schema.clone(),
        batch_rows: sink.batch_rows,
    })
    .await;
    let mut mysql = match connected {
        Ok(s) => s,
        Err(e) => {
            println!("sink {name}: unreachable: {e}");
            return;
        }
    };
    for source in sink.source_names(&config.sources) {
        match mysql.watermark(source).await {
            Ok(Some(position)) => println!("sink {name}: source {source} applied up to {position}"),
            Ok(None) => println!("sink {name}: source {source}: nothing applied yet"),
            Err(e) => println!("sink {name}: source {source}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
