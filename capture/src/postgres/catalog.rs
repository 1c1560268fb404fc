//! What capture reads from and sets up in the source's catalog: server checks, the
//! publication, the captured tables with their keys, types and the replication slot.

use super::config::PostgresSourceConfig;
use super::types::PgTypeInfo;
use crate::error::CaptureError;
use std::collections::HashMap;
use tokio_postgres::{Client, NoTls};

/// Session settings under which PostgreSQL prints values the way `types::parse_text` reads
/// them; used for the snapshot session and (as startup options) the replication session.
pub use tributary_schemas::pg_text::OUTPUT_SETTINGS as SESSION_SETTINGS;

/// A table to capture, as the catalog describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTable {
    /// Table OID.
    pub oid: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns (name, type OID, typmod) in order, without dropped or generated columns.
    pub columns: Vec<(String, u32, i32)>,
    /// Names of the primary-key columns in key order.
    pub primary_key: Vec<String>,
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Output plugin.
    pub plugin: String,
    /// Database of the slot.
    pub database: String,
    /// Whether a session uses it now.
    pub active: bool,
}

/// A plain (non-replication) session on the source.
pub struct Catalog {
    client: Client,
    endpoint: String,
    types: HashMap<u32, PgTypeInfo>,
}

/// Host, port, user and database of a URL, for messages.
pub fn endpoint(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

impl Catalog {
    /// Connects with the pinned session settings.
    pub async fn connect(url: &str) -> Result<Self, CaptureError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| CaptureError::Setup(format!("source url is not a PostgreSQL URL: {e}")))?;
        let endpoint = endpoint(&config);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| CaptureError::pg(format!("connecting to {endpoint}"), e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "source catalog connection ended");
            }
        });
        let settings: String = SESSION_SETTINGS
            .iter()
            .map(|(k, v)| format!("SET {k} = '{v}';"))
            .collect();
        client
            .batch_execute(&settings)
            .await
            .map_err(|e| CaptureError::pg("setting session parameters", e))?;
        Ok(Catalog {
            client,
            endpoint,
            types: HashMap::new(),
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `user@host:port/db` of this session.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Checks `wal_level` and the role's right to replicate.
    pub async fn preflight(&self) -> Result<(), CaptureError> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('wal_level'), r.rolreplication OR r.rolsuper, current_user::text \
                 FROM pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| CaptureError::pg("checking server settings", e))?;
        let wal_level: String = row.get(0);
        let can_replicate: bool = row.get(1);
        let user: String = row.get(2);
        if wal_level != "logical" {
            return Err(CaptureError::Setup(format!(
                "{}: wal_level is {wal_level}; set wal_level = logical in postgresql.conf and restart PostgreSQL",
                self.endpoint
            )));
        }
        if !can_replicate {
            return Err(CaptureError::Setup(format!(
                "{}: role {user} may not replicate; run ALTER ROLE {user} REPLICATION (or use a superuser)",
                self.endpoint
            )));
        }
        Ok(())
    }

    /// The tables the configuration captures; every one must have a primary key.
    pub async fn tables(
        &self,
        config: &PostgresSourceConfig,
    ) -> Result<Vec<CatalogTable>, CaptureError> {
        let rows = self
            .client
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tributary') \
                   AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
                 ORDER BY 2, 3",
                &[],
            )
            .await
            .map_err(|e| CaptureError::pg("listing tables", e))?;
        let mut tables = Vec::new();
        let mut without_key = Vec::new();
        for row in rows {
            let (oid, schema, name): (u32, String, String) = (row.get(0), row.get(1), row.get(2));
            if !config.captures(&schema, &name) {
                continue;
            }
            let columns = self.columns(oid).await?;
            let primary_key = self.primary_key(oid).await?;
            if primary_key.is_empty() {
                without_key.push(format!("{schema}.{name}"));
                continue;
            }
            tables.push(CatalogTable {
                oid,
                schema,
                name,
                columns,
                primary_key,
            });
        }
        if !without_key.is_empty() {
            return Err(CaptureError::Setup(format!(
                "{}: table(s) {} have no primary key; add one, or leave them out with exclude = [...]",
                self.endpoint,
                without_key.join(", ")
            )));
        }
        Ok(tables)
    }

    async fn columns(&self, oid: u32) -> Result<Vec<(String, u32, i32)>, CaptureError> {
        let rows = self
            .client
            .query(
                "SELECT attname::text, atttypid, atttypmod FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
                 ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(|e| CaptureError::pg("reading columns", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Names of the primary-key columns of table `oid`, in key order.
    pub async fn primary_key(&self, oid: u32) -> Result<Vec<String>, CaptureError> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) ON true \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
                &[&oid],
            )
            .await
            .map_err(|e| CaptureError::pg("reading primary key", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Values that rows older than a column hold without storing them (`attmissingval`,
    /// set by `ADD COLUMN ... DEFAULT`), by column name, in PostgreSQL text form.
    pub async fn missing_values(&self, oid: u32) -> Result<HashMap<String, String>, CaptureError> {
        let rows = self
            .client
            .query(
                "SELECT attname::text, attmissingval::text FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND atthasmissing",
                &[&oid],
            )
            .await
            .map_err(|e| CaptureError::pg("reading column defaults of existing rows", e))?;
        let mut missing = HashMap::new();
        for row in rows {
            let (name, array): (String, Option<String>) = (row.get(0), row.get(1));
            // attmissingval is a one-element array of the column's type.
            let element = array.and_then(|text| {
                match super::types::parse_text(
                    &name,
                    &tributary_schemas::ColumnType::Array {
                        element: Box::new(tributary_schemas::ColumnType::Text),
                    },
                    &text,
                ) {
                    Ok(tributary_schemas::Value::Array(mut items)) if items.len() == 1 => {
                        match items.pop() {
                            Some(tributary_schemas::Value::Text(t)) => Some(t),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            });
            if let Some(value) = element {
                missing.insert(name, value);
            }
        }
        Ok(missing)
    }

    /// Creates the publication for `tables` or sets its table list to exactly them.
    pub async fn ensure_publication(
        &self,
        name: &str,
        tables: &[CatalogTable],
    ) -> Result<(), CaptureError> {
        if tables.is_empty() {
            return Err(CaptureError::Setup(format!(
                "{}: no table matches the include/exclude filters; nothing to capture",
                self.endpoint
            )));
        }
        let list: Vec<String> = tables
            .iter()
            .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)))
            .collect();
        let exists = self
            .client
            .query_opt(
                "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                &[&name],
            )
            .await
            .map_err(|e| CaptureError::pg("reading publications", e))?;
        let sql = match exists {
            // FOR ALL TABLES already covers whatever we capture.
            Some(row) if row.get::<_, bool>(0) => return Ok(()),
            Some(_) => format!(
                "ALTER PUBLICATION {} SET TABLE {}",
                quote_ident(name),
                list.join(", ")
            ),
            None => format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(name),
                list.join(", ")
            ),
        };
        self.client.batch_execute(&sql).await.map_err(|e| {
            let denied = e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
            let err = CaptureError::pg(format!("managing publication {name}"), e);
            if denied {
                CaptureError::Setup(format!(
                    "{}: not allowed to create or alter publication {name} ({err}); grant CREATE on the database and make the role own the tables, or have an administrator run: {sql}",
                    self.endpoint
                ))
            } else {
                err
            }
        })
    }

    /// Loads what the catalog knows about the types `oids` (and their array elements).
    pub async fn load_types(&mut self, oids: &[u32]) -> Result<(), CaptureError> {
        let mut missing: Vec<u32> = oids
            .iter()
            .copied()
            .filter(|o| !self.types.contains_key(o))
            .collect();
        while !missing.is_empty() {
            let rows = self
                .client
                .query(
                    "SELECT t.oid, t.typname::text, t.typcategory::text, t.typelem FROM pg_type t WHERE t.oid = ANY($1)",
                    &[&missing],
                )
                .await
                .map_err(|e| CaptureError::pg("reading types", e))?;
            let mut next = Vec::new();
            for r in rows {
                let element: u32 = r.get(3);
                let category: String = r.get(2);
                let info = PgTypeInfo {
                    oid: r.get(0),
                    name: r.get(1),
                    category: category.chars().next().unwrap_or('U'),
                    element_oid: (element != 0).then_some(element),
                };
                if element != 0 && !self.types.contains_key(&element) {
                    next.push(element);
                }
                self.types.insert(info.oid, info);
            }
            missing = next;
        }
        Ok(())
    }

    /// Catalog information of a loaded type.
    pub fn type_info(&self, oid: u32) -> Option<PgTypeInfo> {
        self.types.get(&oid).cloned()
    }

    /// The slot `name`, if it exists.
    pub async fn slot(&self, name: &str) -> Result<Option<SlotInfo>, CaptureError> {
        let row = self
            .client
            .query_opt(
                "SELECT plugin::text, database::text, active FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| CaptureError::pg("reading replication slots", e))?;
        Ok(row.map(|r| SlotInfo {
            plugin: r.get::<_, Option<String>>(0).unwrap_or_default(),
            database: r.get::<_, Option<String>>(1).unwrap_or_default(),
            active: r.get(2),
        }))
    }

    /// Drops slot `name`.
    pub async fn drop_slot(&self, name: &str) -> Result<(), CaptureError> {
        self.client
            .execute("SELECT pg_drop_replication_slot($1)", &[&name])
            .await
            .map_err(|e| CaptureError::pg(format!("dropping slot {name}"), e))?;
        Ok(())
    }

    /// Writes a heartbeat into the WAL of this database.
    pub async fn heartbeat(&self) -> Result<(), CaptureError> {
        self.client
            .execute(
                "SELECT pg_logical_emit_message(false, 'tributary.heartbeat', '')",
                &[],
            )
            .await
            .map_err(|e| CaptureError::pg("writing heartbeat", e))?;
        Ok(())
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
