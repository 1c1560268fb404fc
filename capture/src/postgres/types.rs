//! PostgreSQL types: from a column's type OID and typmod to a [`ColumnType`] and a source type name.
//!
//! Built-in types have fixed OIDs and are mapped from a table here without touching the
//! catalog. Everything else (enums, arrays of enums, domains, extension types) is resolved
//! through a `lookup` of `pg_type` rows: category `E` is an enum, category `A` with an
//! element type an array of that element, anything else is carried as text under its
//! type name ([`ColumnType::Other`]). A domain is carried as text too (its `pg_type` row
//! does not say its base type in [`PgTypeInfo`]), except a domain over an array type with
//! an element, which reads like the array. `int2vector` and `oidvector` are in category
//! `A` but print space-separated, so they are `Other`. A type the lookup does not know is
//! `Other` named `unknown(<oid>)`.

pub use tributary_schemas::pg_text::{parse_text, TypeError};
use tributary_schemas::ColumnType;

/// What the catalog says about a type: enough to map any OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTypeInfo {
    /// Type OID.
    pub oid: u32,
    /// `pg_type.typname`.
    pub name: String,
    /// `pg_type.typcategory`: `E` enum, `A` array, ...
    pub category: char,
    /// `pg_type.typelem` of an array type.
    pub element_oid: Option<u32>,
}

/// Built-in scalar types: (type OID, its array type's OID, `typname`).
const BUILTINS: &[(u32, u32, &str)] = &[
    (16, 1000, "bool"),
    (17, 1001, "bytea"),
    (18, 1002, "char"),
    (19, 1003, "name"),
    (20, 1016, "int8"),
    (21, 1005, "int2"),
    (22, 1006, "int2vector"),
    (23, 1007, "int4"),
    (25, 1009, "text"),
    (26, 1028, "oid"),
    (30, 1013, "oidvector"),
    (114, 199, "json"),
    (142, 143, "xml"),
    (603, 1020, "box"),
    (650, 651, "cidr"),
    (700, 1021, "float4"),
    (701, 1022, "float8"),
    (774, 775, "macaddr8"),
    (790, 791, "money"),
    (829, 1040, "macaddr"),
    (869, 1041, "inet"),
    (1042, 1014, "bpchar"),
    (1043, 1015, "varchar"),
    (1082, 1182, "date"),
    (1083, 1183, "time"),
    (1114, 1115, "timestamp"),
    (1184, 1185, "timestamptz"),
    (1186, 1187, "interval"),
    (1266, 1270, "timetz"),
    (1560, 1561, "bit"),
    (1562, 1563, "varbit"),
    (1700, 1231, "numeric"),
    (2950, 2951, "uuid"),
    (3802, 3807, "jsonb"),
];

/// What an OID is, as far as this module can tell.
enum Kind {
    /// A built-in scalar type.
    Builtin(u32, &'static str),
    /// An array of the element type with this OID.
    Array(u32),
    /// A type known to the catalog only.
    Catalog(PgTypeInfo),
    /// Nobody knows.
    Unknown,
}

/// Classifies `oid`, using `lookup` only for non-built-in types.
fn kind(oid: u32, lookup: &dyn Fn(u32) -> Option<PgTypeInfo>) -> Kind {
    if let Some(&(oid, _, name)) = BUILTINS.iter().find(|b| b.0 == oid) {
        return Kind::Builtin(oid, name);
    }
    if let Some(&(element, _, _)) = BUILTINS.iter().find(|b| b.1 == oid) {
        return Kind::Array(element);
    }
    match lookup(oid) {
        Some(PgTypeInfo {
            category: 'A',
            element_oid: Some(element),
            ..
        }) => Kind::Array(element),
        Some(info) => Kind::Catalog(info),
        None => Kind::Unknown,
    }
}

/// Precision and scale of a `numeric` typmod (none when absent or when the scale is
/// negative, which PostgreSQL 15 allows and [`ColumnType`] cannot say).
fn numeric_typmod(typmod: i32) -> (Option<i32>, Option<i32>) {
    if typmod < 4 {
        return (None, None);
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    // Eleven bits, sign-extended, as numeric_typmod_scale() reads them.
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    (Some(precision), Some(scale))
}

/// Maps a column's type OID + typmod to a ColumnType. `lookup` resolves OIDs that are not built in (enums, arrays of enums, domains...) from pg_type; built-ins must not need it.
pub fn column_type(
    oid: u32,
    typmod: i32,
    lookup: &dyn Fn(u32) -> Option<PgTypeInfo>,
) -> ColumnType {
    match kind(oid, lookup) {
        Kind::Builtin(oid, name) => builtin_type(oid, typmod, name),
        Kind::Array(element) => ColumnType::Array {
            element: Box::new(column_type(element, typmod, lookup)),
        },
        Kind::Catalog(info) if info.category == 'E' => ColumnType::Enum { name: info.name },
        Kind::Catalog(info) => ColumnType::Other { name: info.name },
        Kind::Unknown => ColumnType::Other {
            name: format!("unknown({oid})"),
        },
    }
}

/// The [`ColumnType`] of a built-in scalar type.
fn builtin_type(oid: u32, typmod: i32, name: &str) -> ColumnType {
    match oid {
        16 => ColumnType::Bool,
        17 => ColumnType::Bytes,
        18 | 19 | 25 | 1042 | 1043 => ColumnType::Text,
        20 | 26 => ColumnType::Int64,
        21 => ColumnType::Int16,
        23 => ColumnType::Int32,
        114 => ColumnType::Json { binary: false },
        3802 => ColumnType::Json { binary: true },
        700 => ColumnType::Float32,
        701 => ColumnType::Float64,
        1700 => match numeric_typmod(typmod) {
            (Some(p), Some(s)) if s >= 0 => ColumnType::Numeric {
                precision: Some(p as u32),
                scale: Some(s as u32),
            },
            _ => ColumnType::Numeric {
                precision: None,
                scale: None,
            },
        },
        1082 => ColumnType::Date,
        1083 => ColumnType::Time,
        1114 => ColumnType::Timestamp,
        1184 => ColumnType::TimestampTz,
        1186 => ColumnType::Interval,
        2950 => ColumnType::Uuid,
        _ => ColumnType::Other { name: name.into() },
    }
}

/// The source type name with modifiers, as `format_type(oid, typmod)` would print it, for built-ins (e.g. "numeric(10,2)", "character varying(20)", "timestamp with time zone"); for others the looked-up name.
pub fn source_type_name(
    oid: u32,
    typmod: i32,
    lookup: &dyn Fn(u32) -> Option<PgTypeInfo>,
) -> String {
    match kind(oid, lookup) {
        Kind::Builtin(oid, name) => builtin_name(oid, typmod, name),
        Kind::Array(element) => format!("{}[]", source_type_name(element, typmod, lookup)),
        Kind::Catalog(info) => info.name,
        Kind::Unknown => format!("unknown({oid})"),
    }
}

/// `format_type()` of a built-in scalar type.
fn builtin_name(oid: u32, typmod: i32, name: &str) -> String {
    let with = typmod >= 0;
    let precision = |base: &str, zone: &str| match with {
        true => format!("{base}({typmod}){zone}"),
        false => format!("{base}{zone}"),
    };
    match oid {
        16 => "boolean".into(),
        18 => "\"char\"".into(),
        20 => "bigint".into(),
        21 => "smallint".into(),
        23 => "integer".into(),
        700 => "real".into(),
        701 => "double precision".into(),
        1042 if with => format!("character({})", typmod - 4),
        1043 if with => format!("character varying({})", typmod - 4),
        1043 => "character varying".into(),
        1560 if with => format!("bit({typmod})"),
        1560 => "\"bit\"".into(),
        1562 if with => format!("bit varying({typmod})"),
        1562 => "bit varying".into(),
        1700 => match numeric_typmod(typmod) {
            (Some(p), Some(s)) => format!("numeric({p},{s})"),
            _ => "numeric".into(),
        },
        1083 => precision("time", " without time zone"),
        1266 => precision("time", " with time zone"),
        1114 => precision("timestamp", " without time zone"),
        1184 => precision("timestamp", " with time zone"),
        1186 => format!("interval{}", interval_typmod(typmod)),
        _ => name.into(),
    }
}

/// `intervaltypmodout()`: the fields and precision of an interval typmod.
fn interval_typmod(typmod: i32) -> String {
    if typmod < 0 {
        return String::new();
    }
    const MONTH: i32 = 1 << 1;
    const YEAR: i32 = 1 << 2;
    const DAY: i32 = 1 << 3;
    const HOUR: i32 = 1 << 10;
    const MINUTE: i32 = 1 << 11;
    const SECOND: i32 = 1 << 12;
    let fields = match (typmod >> 16) & 0x7fff {
        YEAR => " year",
        MONTH => " month",
        DAY => " day",
        HOUR => " hour",
        MINUTE => " minute",
        SECOND => " second",
        f if f == YEAR | MONTH => " year to month",
        f if f == DAY | HOUR => " day to hour",
        f if f == DAY | HOUR | MINUTE => " day to minute",
        f if f == DAY | HOUR | MINUTE | SECOND => " day to second",
        f if f == HOUR | MINUTE => " hour to minute",
        f if f == HOUR | MINUTE | SECOND => " hour to second",
        f if f == MINUTE | SECOND => " minute to second",
        _ => "",
    };
    match typmod & 0xffff {
        0xffff => fields.into(),
        precision => format!("{fields}({precision})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_lookup(oid: u32) -> Option<PgTypeInfo> {
        panic!("built-in type {oid} must not need the catalog")
    }

    fn catalog(oid: u32) -> Option<PgTypeInfo> {
        let info = |name: &str, category, element_oid| PgTypeInfo {
            oid,
            name: name.into(),
            category,
            element_oid,
        };
        match oid {
            50_000 => Some(info("mood", 'E', None)),
            50_001 => Some(info("_mood", 'A', Some(50_000))),
            50_002 => Some(info("dint", 'N', None)),
            50_003 => Some(info("darr", 'A', None)),
            1017 => Some(info("_point", 'A', Some(600))),
            600 => Some(info("point", 'G', None)),
            _ => None,
        }
    }

    fn numeric(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    #[test]
    fn built_ins_map_without_the_catalog() {
        let array = |element| ColumnType::Array {
            element: Box::new(element),
        };
        let cases = [
            (16, -1, ColumnType::Bool),
            (17, -1, ColumnType::Bytes),
            (18, -1, ColumnType::Text),
            (26, -1, ColumnType::Int64),
            (142, -1, ColumnType::Other { name: "xml".into() }),
            (
                790,
                -1,
                ColumnType::Other {
                    name: "money".into(),
                },
            ),
            (
                1266,
                -1,
                ColumnType::Other {
                    name: "timetz".into(),
                },
            ),
            (
                22,
                -1,
                ColumnType::Other {
                    name: "int2vector".into(),
                },
            ),
            (
                1700,
                -1,
                ColumnType::Numeric {
                    precision: None,
                    scale: None,
                },
            ),
            (
                1700,
                numeric(10, 2),
                ColumnType::Numeric {
                    precision: Some(10),
                    scale: Some(2),
                },
            ),
            (
                1700,
                numeric(5, -2),
                ColumnType::Numeric {
                    precision: None,
                    scale: None,
                },
            ),
            (3802, -1, ColumnType::Json { binary: true }),
            (
                1231,
                numeric(10, 2),
                array(ColumnType::Numeric {
                    precision: Some(10),
                    scale: Some(2),
                }),
            ),
            (1185, -1, array(ColumnType::TimestampTz)),
            (199, -1, array(ColumnType::Json { binary: false })),
            (2951, -1, array(ColumnType::Uuid)),
            (1001, -1, array(ColumnType::Bytes)),
            (1020, -1, array(ColumnType::Other { name: "box".into() })),
        ];
        for (oid, typmod, ty) in cases {
            assert_eq!(column_type(oid, typmod, &no_lookup), ty, "oid {oid}");
        }
    }

    #[test]
    fn other_types_come_from_the_catalog() {
        let mood = ColumnType::Enum {
            name: "mood".into(),
        };
        assert_eq!(column_type(50_000, -1, &catalog), mood);
        assert_eq!(
            column_type(50_001, -1, &catalog),
            ColumnType::Array {
                element: Box::new(mood)
            }
        );
        assert_eq!(
            column_type(50_002, -1, &catalog),
            ColumnType::Other {
                name: "dint".into()
            }
        );
        assert_eq!(
            column_type(50_003, -1, &catalog),
            ColumnType::Other {
                name: "darr".into()
            }
        );
        let point = ColumnType::Other {
            name: "point".into(),
        };
        assert_eq!(
            column_type(1017, -1, &catalog),
            ColumnType::Array {
                element: Box::new(point)
            }
        );
        assert_eq!(
            column_type(99, -1, &catalog),
            ColumnType::Other {
                name: "unknown(99)".into()
            }
        );
        assert_eq!(source_type_name(50_001, -1, &catalog), "mood[]");
        assert_eq!(source_type_name(50_000, -1, &catalog), "mood");
        assert_eq!(source_type_name(99, -1, &catalog), "unknown(99)");
    }

    #[test]
    fn names_match_format_type() {
        // format_type(oid, typmod) on PostgreSQL 15.
        let cases = [
            (1042, -1, "bpchar"),
            (1042, 14, "character(10)"),
            (1043, -1, "character varying"),
            (1043, 24, "character varying(20)"),
            (1700, -1, "numeric"),
            (1700, numeric(10, 2), "numeric(10,2)"),
            (1700, numeric(5, -2), "numeric(5,-2)"),
            (18, -1, "\"char\""),
            (1014, 14, "character(10)[]"),
            (1231, numeric(10, 2), "numeric(10,2)[]"),
            (1186, -1, "interval"),
            (1186, 2_147_418_115, "interval(3)"),
            (1186, 470_286_338, "interval day to second(2)"),
            (1186, 458_751, "interval year to month"),
            (1186, 67_174_399, "interval hour"),
            (1186, 402_718_719, "interval minute to second"),
            (1083, 3, "time(3) without time zone"),
            (1083, -1, "time without time zone"),
            (1184, 0, "timestamp(0) with time zone"),
            (1184, -1, "timestamp with time zone"),
            (1266, 2, "time(2) with time zone"),
            (1114, 6, "timestamp(6) without time zone"),
            (1560, 5, "bit(5)"),
            (1562, -1, "bit varying"),
            (1562, 8, "bit varying(8)"),
            (16, -1, "boolean"),
            (20, -1, "bigint"),
            (701, -1, "double precision"),
            (1009, -1, "text[]"),
            (3807, -1, "jsonb[]"),
            (2950, -1, "uuid"),
        ];
        for (oid, typmod, name) in cases {
            assert_eq!(
                source_type_name(oid, typmod, &no_lookup),
                name,
                "oid {oid} typmod {typmod}"
            );
        }
    }
}
