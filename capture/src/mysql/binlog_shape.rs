//! Table shapes as the binlog itself describes them (TABLE_MAP events).
//!
//! Every rows event follows a TABLE_MAP event giving the column types at that position. The
//! capture decodes with the catalog's shape when it agrees with them; when it does not (the
//! capture is behind DDL that changed the table since), and the server writes
//! `binlog_row_metadata = FULL` (column names, signedness, character sets, enum and set
//! labels, primary key), the shape is rebuilt from the TABLE_MAP alone, so rows are decoded
//! with the definition valid at their position: the schema history is the binlog. Columns
//! the catalog still has unchanged keep what only the catalog knows (MariaDB's JSON check,
//! constant defaults, declared lengths).

use super::catalog::{build_table, MyTable};
use super::types::{describe, Kind, MyColumn};
use crate::error::CaptureError;
use crate::state::StateStore;
use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType as T;
use std::collections::HashMap;
use tributary_schemas::{ColumnType, TableId};

/// Collation id → (character set, longest character in bytes).
pub type Collations = HashMap<u16, (String, u32)>;

/// The binary pseudo character set's collation.
const BINARY: u16 = 63;

/// One column as a TABLE_MAP event describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MapColumn {
    /// Name (with `binlog_row_metadata = FULL`).
    pub name: Option<String>,
    /// Real type (ENUM and SET unwrapped from STRING).
    pub ty: T,
    /// Type metadata (lengths, precision, fractional digits).
    pub meta: Vec<u8>,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Unsignedness of numeric columns (FULL).
    pub unsigned: Option<bool>,
    /// Collation id of character, enum and set columns (FULL).
    pub collation: Option<u16>,
    /// Labels of enum and set columns (FULL).
    pub labels: Option<Vec<String>>,
}

/// A table as a TABLE_MAP event describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MapShape {
    /// Columns in table order.
    pub columns: Vec<MapColumn>,
    /// Primary-key column indexes (FULL), in key order.
    pub key: Vec<usize>,
}

impl MapShape {
    /// Whether the event names the columns (the server writes FULL metadata).
    pub fn named(&self) -> bool {
        self.columns.iter().all(|c| c.name.is_some())
    }

    /// Reads the shape of a TABLE_MAP event.
    pub fn read(tme: &TableMapEvent<'_>) -> Result<MapShape, String> {
        let n = tme.columns_count() as usize;
        let nulls = tme.null_bitmask();
        let mut columns = Vec::with_capacity(n);
        for i in 0..n {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| format!("column {}: {e}", i + 1))?
                .ok_or_else(|| format!("column {} has no type", i + 1))?;
            columns.push(MapColumn {
                name: None,
                ty,
                meta: tme.get_column_metadata(i).unwrap_or_default().to_vec(),
                nullable: nulls.get(i).is_some_and(|b| *b),
                unsigned: None,
                collation: None,
                labels: None,
            });
        }
        let bad = |e: std::io::Error| format!("optional metadata: {e}");
        let extra = OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(bad)?;
        let names = extra
            .iter_column_name()
            .map(|n| n.map(|n| n.name().into_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        if names.len() == n {
            for (c, name) in columns.iter_mut().zip(names) {
                c.name = Some(name);
            }
        }
        let mut unsigned = extra.iter_signedness();
        for c in columns.iter_mut().filter(|c| c.ty.is_numeric_type()) {
            c.unsigned = unsigned.next();
        }
        // The charset iterators are endless with a default charset: take one per column.
        let mut charsets = extra.iter_charset();
        for c in columns.iter_mut().filter(|c| is_character(c.ty)) {
            c.collation = charsets.next().transpose().map_err(bad)?;
        }
        let mut charsets = extra.iter_enum_and_set_charset();
        for c in columns.iter_mut().filter(|c| c.ty.is_enum_or_set_type()) {
            c.collation = charsets.next().transpose().map_err(bad)?;
        }
        let key = extra
            .iter_primary_key()
            .map(|k| k.map(|k| k as usize))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        for field in tme.iter_optional_meta() {
            let (want, labels): (T, Vec<Vec<String>>) = match field.map_err(bad)? {
                OptionalMetadataField::EnumStrValue(v) => (
                    T::MYSQL_TYPE_ENUM,
                    v.iter_values()
                        .map(|e| {
                            e.map(|e| e.values().iter().map(|x| x.value().into_owned()).collect())
                        })
                        .collect::<Result<_, _>>()
                        .map_err(bad)?,
                ),
                OptionalMetadataField::SetStrValue(v) => (
                    T::MYSQL_TYPE_SET,
                    v.iter_values()
                        .map(|e| {
                            e.map(|e| e.values().iter().map(|x| x.value().into_owned()).collect())
                        })
                        .collect::<Result<_, _>>()
                        .map_err(bad)?,
                ),
                _ => continue,
            };
            let mut labels = labels.into_iter();
            for c in columns.iter_mut().filter(|c| c.ty == want) {
                c.labels = labels.next();
            }
        }
        Ok(MapShape { columns, key })
    }

    /// Whether `table` (from the catalog) decodes rows of this shape exactly.
    pub fn matches(&self, table: &MyTable, collations: Option<&Collations>) -> bool {
        self.columns.len() == table.columns.len()
            && self
                .columns
                .iter()
                .zip(&table.columns)
                .all(|(m, c)| compatible(c, m, collations))
    }

    /// The table this shape describes, taking from `catalog` the columns it has unchanged.
    pub fn table(
        &self,
        id: &TableId,
        catalog: Option<&MyTable>,
        collations: &Collations,
        store: &StateStore,
        source: &str,
    ) -> Result<MyTable, CaptureError> {
        let bad = |m: String| CaptureError::Decode(format!("table {id} in the binlog: {m}"));
        let mut columns = self
            .columns
            .iter()
            .map(|m| {
                let same_name = catalog.and_then(|t| {
                    t.columns
                        .iter()
                        .find(|c| Some(c.name.as_str()) == m.name.as_deref())
                });
                match same_name {
                    Some(c) if compatible(c, m, Some(collations)) => Ok(c.clone()),
                    _ => derive(m, collations).map_err(bad),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // What only a catalog knew (MariaDB's JSON check, declared lengths, defaults) is
        // taken from the newest shape this table had with the same column.
        let known = store.shapes(source, id)?;
        for c in columns
            .iter_mut()
            .filter(|c| catalog.is_none_or(|t| !t.columns.contains(c)))
        {
            let earlier = known
                .iter()
                .flat_map(|s| s.columns.iter())
                .find(|k| k.name == c.name && k.nullable == c.nullable);
            match earlier {
                Some(k) if k.ty == c.ty => {
                    c.column_type = k.source_type.clone();
                    c.default = k.missing.clone();
                }
                Some(k)
                    if matches!(k.ty, ColumnType::Json { .. })
                        && matches!(c.kind, Kind::Text { .. }) =>
                {
                    c.kind = Kind::Json;
                    c.ty = k.ty.clone();
                    c.column_type = k.source_type.clone();
                }
                _ => {}
            }
        }
        let key = if self.key.is_empty() {
            // Older servers leave the key out: take the catalog's key columns by name.
            let names: Vec<&str> = catalog
                .map(|t| {
                    t.state
                        .schema
                        .primary_key
                        .iter()
                        .map(|&i| t.columns[i].name.as_str())
                        .collect()
                })
                .unwrap_or_default();
            names
                .iter()
                .map(|n| columns.iter().position(|c| c.name == *n))
                .collect::<Option<Vec<_>>>()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| bad("its primary key at this position is unknown".into()))?
        } else {
            self.key.clone()
        };
        build_table(id.clone(), columns, key, store, source)
    }
}

fn is_character(ty: T) -> bool {
    matches!(
        ty,
        T::MYSQL_TYPE_STRING
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_VARCHAR
            | T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
    )
}

fn int_bits(ty: T) -> Option<u32> {
    Some(match ty {
        T::MYSQL_TYPE_TINY => 8,
        T::MYSQL_TYPE_SHORT => 16,
        T::MYSQL_TYPE_INT24 => 24,
        T::MYSQL_TYPE_LONG => 32,
        T::MYSQL_TYPE_LONGLONG => 64,
        _ => return None,
    })
}

fn meta_byte(m: &MapColumn, i: usize) -> u32 {
    m.meta.get(i).copied().map(u32::from).unwrap_or(0)
}

/// bit(n): metadata holds n % 8, then n / 8.
fn bit_width(m: &MapColumn) -> u32 {
    meta_byte(m, 1) * 8 + meta_byte(m, 0)
}

/// Whether catalog column `c` reads binlog column `m` correctly (what the event leaves out
/// is taken as agreeing).
fn compatible(c: &MyColumn, m: &MapColumn, collations: Option<&Collations>) -> bool {
    if m.name
        .as_deref()
        .is_some_and(|n| !n.eq_ignore_ascii_case(&c.name))
        || m.nullable != c.nullable
    {
        return false;
    }
    let charset = || {
        m.collation
            .and_then(|id| collations.and_then(|all| all.get(&id)))
            .map(|(name, _)| name.as_str())
    };
    match (&c.kind, m.ty) {
        (Kind::Int { bits, unsigned }, t) => {
            int_bits(t) == Some(*bits) && m.unsigned.is_none_or(|u| u == *unsigned)
        }
        (Kind::Decimal, T::MYSQL_TYPE_NEWDECIMAL) => {
            m.meta.len() < 2
                || c.ty
                    == (ColumnType::Numeric {
                        precision: Some(meta_byte(m, 0)),
                        scale: Some(meta_byte(m, 1)),
                    })
        }
        (Kind::Bit { bits }, T::MYSQL_TYPE_BIT) => m.meta.len() < 2 || *bits == bit_width(m),
        (Kind::Text { charset: mine }, t) if is_character(t) => {
            m.collation != Some(BINARY) && charset().is_none_or(|cs| cs.eq_ignore_ascii_case(mine))
        }
        (Kind::Binary, t) if is_character(t) => m.collation.is_none_or(|id| id == BINARY),
        // MariaDB's JSON is a checked longtext.
        (Kind::Json, t) if is_character(t) => m.collation != Some(BINARY),
        (Kind::Enum { labels }, T::MYSQL_TYPE_ENUM)
        | (Kind::Set { members: labels }, T::MYSQL_TYPE_SET) => {
            m.labels.as_ref().is_none_or(|l| l == labels)
        }
        (Kind::Float, t) => t == T::MYSQL_TYPE_FLOAT,
        (Kind::Double, t) => t == T::MYSQL_TYPE_DOUBLE,
        (Kind::Json, t) => t == T::MYSQL_TYPE_JSON,
        (Kind::Date, t) => matches!(t, T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE),
        (Kind::Time, t) => matches!(t, T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2),
        (Kind::DateTime, t) => matches!(t, T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2),
        (Kind::Timestamp, t) => matches!(t, T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2),
        (Kind::Year, t) => t == T::MYSQL_TYPE_YEAR,
        _ => false,
    }
}

/// A column from its TABLE_MAP description alone.
fn derive(m: &MapColumn, collations: &Collations) -> Result<MyColumn, String> {
    let name = m
        .name
        .clone()
        .ok_or("the binlog does not name the columns (binlog_row_metadata is not FULL)")?;
    let charset = match m.collation {
        Some(id) => Some(
            collations
                .get(&id)
                .ok_or_else(|| format!("column {name}: unknown collation id {id}"))?,
        ),
        None => None,
    };
    if (is_character(m.ty) || m.ty.is_enum_or_set_type()) && charset.is_none() {
        return Err(format!(
            "column {name}: the binlog does not give its character set"
        ));
    }
    let binary = m.collation == Some(BINARY);
    let fsp = |base: &str| match meta_byte(m, 0) {
        0 => base.to_string(),
        n => format!("{base}({n})"),
    };
    let labels = || {
        let quoted: Vec<String> = m
            .labels
            .iter()
            .flatten()
            .map(|l| format!("'{}'", l.replace('\'', "''")))
            .collect();
        quoted.join(",")
    };
    let (mut precision, mut scale) = (None, None);
    let (data_type, column_type) = match m.ty {
        t if int_bits(t).is_some() => {
            let dt = match t {
                T::MYSQL_TYPE_TINY => "tinyint",
                T::MYSQL_TYPE_SHORT => "smallint",
                T::MYSQL_TYPE_INT24 => "mediumint",
                T::MYSQL_TYPE_LONG => "int",
                _ => "bigint",
            };
            let ct = if m.unsigned == Some(true) {
                format!("{dt} unsigned")
            } else {
                dt.to_string()
            };
            (dt, ct)
        }
        T::MYSQL_TYPE_NEWDECIMAL => {
            precision = Some(u64::from(meta_byte(m, 0)));
            scale = Some(u64::from(meta_byte(m, 1)));
            let ct = format!("decimal({},{})", meta_byte(m, 0), meta_byte(m, 1));
            ("decimal", ct)
        }
        T::MYSQL_TYPE_FLOAT => ("float", "float".into()),
        T::MYSQL_TYPE_DOUBLE => ("double", "double".into()),
        T::MYSQL_TYPE_BIT => {
            precision = Some(u64::from(bit_width(m)));
            ("bit", format!("bit({})", bit_width(m)))
        }
        T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
            let bytes = meta_byte(m, 0) + (meta_byte(m, 1) << 8);
            match charset {
                Some((_, maxlen)) if !binary => {
                    ("varchar", format!("varchar({})", bytes / (*maxlen).max(1)))
                }
                _ => ("varbinary", format!("varbinary({bytes})")),
            }
        }
        T::MYSQL_TYPE_STRING if binary => ("binary", "binary".into()),
        T::MYSQL_TYPE_STRING => ("char", "char".into()),
        t if is_character(t) => {
            let size = match meta_byte(m, 0) {
                1 => "tiny",
                2 => "",
                3 => "medium",
                _ => "long",
            };
            let dt = match (size, binary) {
                ("tiny", true) => "tinyblob",
                ("", true) => "blob",
                ("medium", true) => "mediumblob",
                (_, true) => "longblob",
                ("tiny", false) => "tinytext",
                ("", false) => "text",
                ("medium", false) => "mediumtext",
                (_, false) => "longtext",
            };
            (dt, dt.to_string())
        }
        T::MYSQL_TYPE_JSON => ("json", "json".into()),
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => ("date", "date".into()),
        T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => ("time", fsp("time")),
        T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => ("datetime", fsp("datetime")),
        T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => ("timestamp", fsp("timestamp")),
        T::MYSQL_TYPE_YEAR => ("year", "year".into()),
        T::MYSQL_TYPE_ENUM => ("enum", format!("enum({})", labels())),
        T::MYSQL_TYPE_SET => ("set", format!("set({})", labels())),
        other => {
            return Err(format!(
                "column {name}: binlog type {other:?} is not supported"
            ))
        }
    };
    let charset_name = charset.map(|(cs, _)| cs.as_str()).filter(|_| !binary);
    let (kind, ty) = describe(
        &name,
        data_type,
        &column_type,
        charset_name.or(binary.then_some("binary")),
        precision,
        scale,
        false,
    )?;
    Ok(MyColumn {
        name,
        column_type,
        kind,
        ty,
        nullable: m.nullable,
        default: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, ty: T, meta: &[u8]) -> MapColumn {
        MapColumn {
            name: Some(name.into()),
            ty,
            meta: meta.to_vec(),
            nullable: true,
            unsigned: Some(false),
            collation: None,
            labels: None,
        }
    }

    fn collations() -> Collations {
        [
            (8, ("latin1".to_string(), 1)),
            (45, ("utf8mb4".to_string(), 4)),
            (63, ("binary".to_string(), 1)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn derived_columns_read_like_catalog_ones() {
        let all = collations();
        let mut v = column("name", T::MYSQL_TYPE_VARCHAR, &[160, 0]);
        v.collation = Some(45);
        let c = derive(&v, &all).unwrap();
        assert_eq!(c.column_type, "varchar(40)");
        assert_eq!(
            c.kind,
            Kind::Text {
                charset: "utf8mb4".into()
            }
        );
        assert!(compatible(&c, &v, Some(&all)));
        v.collation = Some(8);
        assert!(
            !compatible(&c, &v, Some(&all)),
            "a charset change is a new shape"
        );

        let mut b = column("raw", T::MYSQL_TYPE_BLOB, &[2]);
        b.collation = Some(63);
        assert_eq!(derive(&b, &all).unwrap().kind, Kind::Binary);

        let d = column("price", T::MYSQL_TYPE_NEWDECIMAL, &[12, 2]);
        let c = derive(&d, &all).unwrap();
        assert_eq!(
            c.ty,
            ColumnType::Numeric {
                precision: Some(12),
                scale: Some(2)
            }
        );
        assert!(!compatible(
            &c,
            &column("price", T::MYSQL_TYPE_NEWDECIMAL, &[14, 2]),
            None
        ));

        let mut u = column("qty", T::MYSQL_TYPE_LONG, &[]);
        u.unsigned = Some(true);
        let c = derive(&u, &all).unwrap();
        assert_eq!(c.column_type, "int unsigned");
        assert_eq!(c.ty, ColumnType::Int64);
        assert!(!compatible(
            &c,
            &column("qty", T::MYSQL_TYPE_LONG, &[]),
            None
        ));
        assert!(!compatible(
            &c,
            &column("other", T::MYSQL_TYPE_LONG, &[]),
            None
        ));

        let mut e = column("level", T::MYSQL_TYPE_ENUM, &[]);
        e.labels = Some(vec!["low".into(), "it's".into()]);
        e.collation = Some(45);
        let c = derive(&e, &all).unwrap();
        assert_eq!(c.column_type, "enum('low','it''s')");
        assert_eq!(
            c.kind,
            Kind::Enum {
                labels: vec!["low".into(), "it's".into()]
            }
        );

        let t = column("at", T::MYSQL_TYPE_DATETIME2, &[3]);
        assert_eq!(derive(&t, &all).unwrap().column_type, "datetime(3)");
        let bits = column("flags", T::MYSQL_TYPE_BIT, &[2, 1]);
        assert_eq!(derive(&bits, &all).unwrap().kind, Kind::Bit { bits: 10 });
        let mut unnamed = column("x", T::MYSQL_TYPE_LONG, &[]);
        unnamed.name = None;
        assert!(derive(&unnamed, &all).unwrap_err().contains("FULL"));
    }
}
