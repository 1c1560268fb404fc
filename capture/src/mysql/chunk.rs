//! The statement that reads one chunk of a table in primary-key order.
//!
//! The snapshot reads each table as `WHERE key > last ORDER BY key LIMIT n`, where `last`
//! is the primary key of the last row of the previous chunk, kept as the text-protocol
//! bytes the server sent. A composite key becomes nested comparisons the optimizer turns
//! into one range scan, and each key value becomes a literal that compares the way the
//! column orders (text in its collation, enums and sets by number), so a chunk neither
//! skips nor repeats rows. A stored key that no longer fits the primary key (the table
//! changed between runs), or a value that cannot be a literal safely, is an error: the
//! snapshot stops rather than read the wrong range.

use super::catalog::{quote_ident, MyTable};
use super::types::{self, Kind};
use crate::error::CaptureError;
use tributary_schemas::TableId;

/// The statement reading the chunk of `table` after primary key `after` (from the start
/// when `None`): `k1 >= v1 AND (k1 > v1 OR (k2 >= v2 AND (k2 > v2 OR …)))`, a form the
/// optimizer turns into one range scan of the primary key.
pub(super) fn chunk_sql(
    id: &TableId,
    table: &MyTable,
    after: Option<&[Vec<u8>]>,
    limit: usize,
) -> Result<String, CaptureError> {
    let key: Vec<usize> = table.state.schema.primary_key.clone();
    let order: Vec<String> = key
        .iter()
        .map(|&i| quote_ident(&table.columns[i].name))
        .collect();
    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        table.select_list(),
        quote_ident(&id.schema),
        quote_ident(&id.name)
    );
    if let Some(after) = after {
        if after.len() != key.len() {
            return Err(CaptureError::State {
                path: format!("snapshot progress of {id}"),
                message: format!(
                    "the stored key has {} values, the primary key has {} columns now; \
                     remove the source's state to take a new snapshot",
                    after.len(),
                    key.len()
                ),
            });
        }
        let mut condition = String::new();
        for (n, (&i, value)) in key.iter().zip(after).enumerate().rev() {
            let column = &table.columns[i];
            let literal = key_literal(&column.kind, value)
                .map_err(|m| types::value_error(&id.to_string(), column, m))?;
            let name = quote_ident(&column.name);
            condition = if n + 1 == key.len() {
                format!("{name} > {literal}")
            } else {
                format!("{name} >= {literal} AND ({name} > {literal} OR ({condition}))")
            };
        }
        sql.push_str(" WHERE ");
        sql.push_str(&condition);
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
    Ok(sql)
}

/// A key value (text-protocol bytes) as a literal that compares the way the column orders.
fn key_literal(kind: &Kind, value: &[u8]) -> Result<String, String> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02X}")).collect::<String>();
    let text = || std::str::from_utf8(value).map_err(|_| "key value is not UTF-8".to_string());
    Ok(match kind {
        Kind::Int { .. } | Kind::Decimal | Kind::Float | Kind::Double | Kind::Year => {
            let t = text()?;
            let numeric = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'));
            if !numeric {
                return Err(format!("key value {t:?} is not a number"));
            }
            t.to_string()
        }
        // Text arrives in the session's utf8mb4; the column's collation decides the order.
        Kind::Text { .. } => format!("_utf8mb4 X'{}'", hex(value)),
        Kind::Binary | Kind::Bit { .. } => format!("X'{}'", hex(value)),
        Kind::Date | Kind::Time | Kind::DateTime | Kind::Timestamp => {
            let t = text()?;
            if !t.chars().all(|c| c.is_ascii_digit() || " -:.".contains(c)) {
                return Err(format!("key value {t:?} is not a date or time"));
            }
            format!("'{t}'")
        }
        // Enums and sets order by their number, not their label.
        Kind::Enum { labels } => {
            let t = text()?;
            let index = labels
                .iter()
                .position(|l| l == t)
                .map(|i| i + 1)
                .unwrap_or(0);
            index.to_string()
        }
        Kind::Set { members } => {
            let t = text()?;
            let mask = t
                .split(',')
                .filter(|m| !m.is_empty())
                .map(|m| {
                    members
                        .iter()
                        .position(|x| x == m)
                        .map(|i| 1u64 << i.min(63))
                        .ok_or_else(|| format!("set member {m:?} is not declared"))
                })
                .sum::<Result<u64, String>>()?;
            mask.to_string()
        }
        Kind::Json => return Err("a JSON column cannot be a key for chunked reads".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::catalog::MyTable;
    use crate::mysql::types::{describe, MyColumn};
    use crate::table::TableState;
    use tributary_schemas::{AvroSchemas, Column, TableSchema};

    fn table(cols: &[(&str, &str, &str)], key: Vec<usize>) -> MyTable {
        let columns: Vec<MyColumn> = cols
            .iter()
            .map(|(name, dt, ct)| {
                let (kind, ty) =
                    describe(name, dt, ct, Some("utf8mb4"), None, None, false).unwrap();
                MyColumn {
                    name: name.to_string(),
                    column_type: ct.to_string(),
                    kind,
                    ty,
                    nullable: false,
                    default: None,
                }
            })
            .collect();
        let schema = TableSchema {
            table: TableId::new("db", "t"),
            columns: columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    ty: c.ty.clone(),
                    source_type: c.column_type.clone(),
                    nullable: false,
                    missing: None,
                })
                .collect(),
            primary_key: key,
            version: 1,
        };
        let avro = AvroSchemas::generate("s", &schema).unwrap();
        MyTable {
            state: TableState { schema, avro },
            columns,
        }
    }

    #[test]
    fn chunks_follow_the_primary_key() {
        let t = table(
            &[
                ("store", "varchar", "varchar(10)"),
                ("v", "float", "float"),
                ("id", "bigint", "bigint(20)"),
            ],
            vec![0, 2],
        );
        let id = TableId::new("db", "t");
        assert_eq!(
            chunk_sql(&id, &t, None, 100).unwrap(),
            "SELECT `store`, CAST(`v` AS DOUBLE), `id` FROM `db`.`t` ORDER BY `store`, `id` LIMIT 100"
        );
        assert_eq!(
            chunk_sql(&id, &t, Some(&[b"a'b".to_vec(), b"-7".to_vec()]), 5).unwrap(),
            "SELECT `store`, CAST(`v` AS DOUBLE), `id` FROM `db`.`t` WHERE `store` >= _utf8mb4 X'612762' \
             AND (`store` > _utf8mb4 X'612762' OR (`id` > -7)) ORDER BY `store`, `id` LIMIT 5"
        );
        assert!(chunk_sql(&id, &t, Some(&[b"x".to_vec()]), 5).is_err());
        assert!(chunk_sql(&id, &t, Some(&[b"x".to_vec(), b"1; DROP".to_vec()]), 5).is_err());
    }

    #[test]
    fn key_literals_compare_like_the_column() {
        let e = Kind::Enum {
            labels: vec!["low".into(), "high".into()],
        };
        assert_eq!(key_literal(&e, b"high").unwrap(), "2");
        let s = Kind::Set {
            members: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(key_literal(&s, b"a,c").unwrap(), "5");
        assert_eq!(key_literal(&Kind::Binary, &[0, 255]).unwrap(), "X'00FF'");
        assert_eq!(
            key_literal(&Kind::DateTime, b"2024-01-02 03:04:05.5").unwrap(),
            "'2024-01-02 03:04:05.5'"
        );
        assert!(key_literal(&Kind::Date, b"2024'").is_err());
    }
}
