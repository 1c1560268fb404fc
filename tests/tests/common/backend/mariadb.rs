//! The MySQL backend: a private MariaDB server, read through the `mariadb` client.

use super::{Backend, Refusal, TypeCase};
use crate::common::events::{column, text};
use tributary_schemas::{ColumnType, Interval, TableId, Value};
use tributary_tests::{MariaDb, Postgres};

/// The MySQL backend: the harness's private MariaDB server.
pub type Maria = MariaDb;

/// Every row of `sql` run in database `db` (none when empty) as the `mariadb` client
/// prints it (NULL as `NULL`).
pub async fn query(maria: &MariaDb, db: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let out = maria.query(db, sql).await?;
    Ok(out
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

/// `text` as a string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// The powers of ten a `time(n)` column of a MariaDB source is compared in: its
/// fractional digits (`n`, else none) shifted into the integer part.
pub fn time_scale(source_type: &str) -> u64 {
    let digits = source_type
        .trim_start_matches("time(")
        .trim_end_matches(')')
        .parse()
        .unwrap_or(0);
    10u64.pow(digits)
}

/// How a MariaDB source and a MySQL sink print column `column` (of the source type
/// `source_type`) for comparison with the copy in any sink kind.
pub fn rendered(column: &str, source_type: &str) -> String {
    let base = source_type.split('(').next().unwrap_or(source_type);
    let template = match base {
        "bit" => "{}+0".to_string(),
        // The server prints a FLOAT with six digits; the double it is shows every bit.
        "float" => "cast({} as double)".into(),
        // Zero dates become NULL (documented rule).
        "date" => "if({} = '0000-00-00', NULL, {})".into(),
        "timestamp" => "date_format({}, '%Y-%m-%d %H:%i:%s.%f')".into(),
        "time" => format!("round(time_to_sec({{}}) * {})", time_scale(source_type)),
        "tinyblob" | "blob" | "mediumblob" | "longblob" | "binary" | "varbinary" => {
            "hex({})".into()
        }
        _ => "{}".into(),
    };
    template.replace("{}", &Maria::quote(column))
}

/// How a PostgreSQL source column of type `source_type` (as `format_type` prints it) and
/// MySQL's copy of it print alike: `(PostgreSQL template, MySQL template)`, `{}` standing
/// for the column. Types MySQL cannot hold have none.
fn from_postgres(source_type: &str) -> Option<(&'static str, &'static str)> {
    const SAME: (&str, &str) = ("{}", "{}");
    const MICROS: (&str, &str) = (
        "round(extract(epoch from {}) * 1000000)",
        "round(time_to_sec({}) * 1000000)",
    );
    let kind = source_type.split('(').next().unwrap_or(source_type);
    Some(match kind {
        "boolean" => ("{}::int", "{}"),
        "numeric" if kind == source_type => (
            "trim_scale({})",
            "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {}))",
        ),
        "text" => ("md5({})", "md5({})"),
        "bytea" => ("upper(encode({}, 'hex'))", "hex({})"),
        "time without time zone" | "interval" => MICROS,
        "timestamp without time zone" => (
            "to_char({}, 'YYYY-MM-DD HH24:MI:SS.US')",
            "date_format({}, '%Y-%m-%d %H:%i:%s.%f')",
        ),
        "timestamp with time zone" => (
            "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
            "date_format({}, '%Y-%m-%d %H:%i:%s.%f')",
        ),
        "integer[]" => ("array_to_json({})", "{}"),
        // `mood` is the enum of the types table.
        "smallint" | "integer" | "bigint" | "double precision" | "numeric"
        | "character varying" | "date" | "uuid" | "jsonb" | "mood" => SAME,
        _ => return None,
    })
}

/// One column of the all-types table (see [`TypeCase`]).
fn case(
    name: &str,
    ty: ColumnType,
    source_type: &str,
    target_type: &'static str,
    read: &'static str,
    values: [(Value, &'static str); 3],
) -> TypeCase {
    TypeCase {
        column: column(name, ty, source_type, true),
        target_type,
        read,
        values,
    }
}

impl Backend for MariaDb {
    const SCHEME: &'static str = "mysql";
    const USER_PASSWORD: (&'static str, &'static str) = ("root", "root");
    const TRANSACTIONAL_DDL: bool = false;
    const WRITES_IN_BACKGROUND: bool = false;
    // The sink drops a lost session when a statement of a transaction fails, not when
    // reading the watermark fails.
    const KEEPS_NOT_NULL: bool = false;
    const WRONG_PASSWORD: (&'static str, &'static str) = ("Access denied", "28000");
    const WATERMARKS_PER_DATABASE: bool = false;

    fn schema_of(&self, db: &str, _table: &TableId) -> String {
        db.to_string()
    }

    fn quote(name: &str) -> String {
        format!("`{}`", name.replace('`', "``"))
    }

    fn target_type(source_type: &str) -> &'static str {
        match source_type {
            "bigint" => "bigint(20)",
            "integer" => "int(11)",
            "character varying(40)" => "varchar(40)",
            "text" => "longtext",
            "double precision" => "double",
            other => panic!("no sample column has type {other}"),
        }
    }

    async fn rows(
        &self,
        _db: &str,
        table: &TableId,
        exprs: &[String],
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let sql = format!(
            "SET time_zone = '+00:00'; SELECT {} FROM {}.{} ORDER BY 1",
            exprs.join(", "),
            Self::quote(&table.schema),
            Self::quote(&table.name)
        );
        query(self, "", &sql).await
    }

    async fn columns(&self, _db: &str, table: &TableId) -> anyhow::Result<Vec<Vec<String>>> {
        let sql = format!(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
             ORDER BY ORDINAL_POSITION",
            literal(&table.schema),
            literal(&table.name)
        );
        query(self, "", &sql).await
    }

    async fn tables(&self, _db: &str, schema: &str) -> anyhow::Result<Vec<String>> {
        let sql = format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
             ORDER BY 1",
            literal(schema)
        );
        let rows = query(self, "", &sql).await?;
        Ok(rows.into_iter().map(|mut r| r.remove(0)).collect())
    }

    async fn stored_watermark(
        &self,
        _db: &str,
        source: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let sql = format!(
            "SELECT position FROM tributary.watermarks WHERE source = {}",
            literal(source)
        );
        let rows = query(self, "", &sql).await?;
        Ok(rows
            .first()
            .map(|r| serde_json::from_str(&r[0]))
            .transpose()?)
    }

    async fn end_sink_sessions(&self, db: &str) -> anyhow::Result<usize> {
        let sql = format!(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE DB = {} AND ID <> CONNECTION_ID()",
            literal(db)
        );
        let ids = query(self, "", &sql).await?;
        for id in &ids {
            self.execute("", &format!("KILL {}", id[0])).await?;
        }
        Ok(ids.len())
    }

    #[rustfmt::skip]
    fn type_cases() -> Vec<TypeCase> {
        let numeric = |p, s| ColumnType::Numeric { precision: p, scale: s };
        let iv = |months, days, micros| Value::Interval(Interval { months, days, micros });
        vec![
            case("b", ColumnType::Bool, "boolean", "tinyint(1)", "{}",
                [(Value::Bool(true), "1"), (Value::Bool(false), "0"), (Value::Null, "NULL")]),
            case("i2", ColumnType::Int16, "smallint", "smallint(6)", "{}",
                [(Value::Int16(i16::MIN), "-32768"), (Value::Int16(i16::MAX), "32767"), (Value::Int16(0), "0")]),
            case("i4", ColumnType::Int32, "integer", "int(11)", "{}",
                [(Value::Int32(i32::MIN), "-2147483648"), (Value::Int32(i32::MAX), "2147483647"), (Value::Null, "NULL")]),
            case("i8", ColumnType::Int64, "bigint", "bigint(20)", "{}",
                [(Value::Int64(i64::MIN), "-9223372036854775808"), (Value::Int64(i64::MAX), "9223372036854775807"), (Value::Int64(-1), "-1")]),
            case("u8", numeric(Some(20), Some(0)), "bigint(20) unsigned", "bigint(20) unsigned", "{}",
                [(Value::Numeric("18446744073709551615".into()), "18446744073709551615"), (Value::Numeric("0".into()), "0"), (Value::Null, "NULL")]),
            case("f4", ColumnType::Float32, "real", "float", "{} = CAST(0.1 AS FLOAT)",
                [(Value::Float32(0.1), "1"), (Value::Float32(-0.123_456_78), "0"), (Value::Null, "NULL")]),
            case("f8", ColumnType::Float64, "double precision", "double", "{}",
                [(Value::Float64(0.1), "0.1"), (Value::Float64(-1.5e300), "-1.5e300"), (Value::Float64(5e-324), "5e-324")]),
            case("dec", numeric(Some(12), Some(4)), "numeric(12,4)", "decimal(12,4)", "{}",
                [(Value::Numeric("-12345678.1234".into()), "-12345678.1234"), (Value::Numeric("0.5".into()), "0.5000"), (Value::Null, "NULL")]),
            case("num", numeric(None, None), "numeric", "decimal(65,30)", "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {}))",
                [(Value::Numeric("12345678901234567890123456789012345.123456789012345678901234567891".into()), "12345678901234567890123456789012345.123456789012345678901234567891"), (Value::Numeric("-1".into()), "-1"), (Value::Numeric("0.000000000000000000000000000001".into()), "0.000000000000000000000000000001")]),
            case("vc", ColumnType::Text, "varchar(10)", "varchar(10)", "{}",
                [(text("héllo ✓"), "héllo ✓"), (text(""), ""), (text("it's"), "it's")]),
            case("txt", ColumnType::Text, "text", "longtext", "HEX({})",
                [(text("a\\b\n'\"%_"), "615C620A2722255F"), (text("😀"), "F09F9880"), (Value::Null, "NULL")]),
            case("by", ColumnType::Bytes, "bytea", "longblob", "HEX({})",
                [(Value::Bytes(vec![0, 1, 0xff, b'\'']), "0001FF27"), (Value::Bytes(vec![]), ""), (Value::Null, "NULL")]),
            case("bits", ColumnType::Bytes, "bit(12)", "bit(12)", "BIN({})",
                [(Value::Bytes(vec![0x0f, 0xff]), "111111111111"), (Value::Bytes(vec![0, 1]), "1"), (Value::Null, "NULL")]),
            case("d", ColumnType::Date, "date", "date", "{}",
                [(Value::Date(0), "1970-01-01"), (Value::Date(-719_528), "0000-01-01"), (Value::Date(2_932_896), "9999-12-31")]),
            case("t", ColumnType::Time, "time", "time(6)", "{}",
                [(Value::Time(0), "00:00:00.000000"), (Value::Time(86_399_999_999), "23:59:59.999999"), (Value::Null, "NULL")]),
            case("ts", ColumnType::Timestamp, "timestamp without time zone", "datetime(6)", "{}",
                [(Value::Timestamp(1_700_000_000_123_456), "2023-11-14 22:13:20.123456"), (Value::Timestamp(-1), "1969-12-31 23:59:59.999999"), (Value::Null, "NULL")]),
            case("tz", ColumnType::TimestampTz, "timestamp with time zone", "datetime(6)", "{}",
                [(Value::TimestampTz(0), "1970-01-01 00:00:00.000000"), (Value::TimestampTz(253_402_300_799_999_999), "9999-12-31 23:59:59.999999"), (Value::Null, "NULL")]),
            case("iv", ColumnType::Interval, "time(2)", "time(6)", "{}",
                [(iv(0, 0, -3_020_399_990_000), "-838:59:59.990000"), (iv(0, 1, 1), "24:00:00.000001"), (Value::Null, "NULL")]),
            case("u", ColumnType::Uuid, "uuid", "char(36)", "{}",
                [(Value::Uuid([0xab; 16]), "abababab-abab-abab-abab-abababababab"), (Value::Uuid([0; 16]), "00000000-0000-0000-0000-000000000000"), (Value::Null, "NULL")]),
            case("j", ColumnType::Json { binary: true }, "jsonb", "longtext", "JSON_EXTRACT({}, '$.a')",
                [(Value::Json(r#"{"a": [1, "x'y"]}"#.into()), r#"[1, "x'y"]"#), (Value::Json(r#"{"a": null}"#.into()), "null"), (Value::Null, "NULL")]),
            case("e", ColumnType::Enum { name: "e".into() }, "enum('x','y z')", "enum('x','y z')", "{}",
                [(Value::Enum("x".into()), "x"), (Value::Enum("y z".into()), "y z"), (Value::Null, "NULL")]),
            case("pe", ColumnType::Enum { name: "mood".into() }, "mood", "varchar(255)", "{}",
                [(Value::Enum("happy".into()), "happy"), (Value::Enum("sad".into()), "sad"), (Value::Null, "NULL")]),
            case("s", ColumnType::Text, "set('Red','b')", "set('Red','b')", "{}",
                [(text("Red,b"), "Red,b"), (text(""), ""), (text("b"), "b")]),
            case("arr", ColumnType::Array { element: Box::new(ColumnType::Int32) }, "integer[]", "longtext", "{}",
                [(Value::Array(vec![Value::Int32(1), Value::Null]), "[1,null]"), (Value::Array(vec![]), "[]"), (Value::Null, "NULL")]),
        ]
    }

    fn refusals() -> Vec<Refusal> {
        vec![Refusal {
            row: vec![
                Value::Int64(7),
                text(&"n".repeat(41)),
                text("d7"),
                Value::Float64(7.0),
            ],
            sqlstate: "22001",
            says: "1406",
        }]
    }

    fn compared(source: &str, column: &str, source_type: &str) -> (String, String) {
        match source {
            "mysql" => {
                let both = rendered(column, source_type);
                (both.clone(), both)
            }
            "postgres" => {
                let (pg, mysql) = from_postgres(source_type)
                    .unwrap_or_else(|| panic!("MySQL holds no PostgreSQL {source_type}"));
                (
                    pg.replace("{}", &Postgres::quote(column)),
                    mysql.replace("{}", &Self::quote(column)),
                )
            }
            other => panic!("no source kind {other}"),
        }
    }

    fn postgres_types() -> &'static str {
        r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f8 float8, n numeric(12,3), nu numeric,
  t text, vc varchar(20), by bytea, d date, tm time, ts timestamp, tstz timestamptz, iv interval,
  u uuid, jb jsonb, ai int[], m mood, big text);
ALTER TABLE all_types ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO all_types VALUES
 (1, true, -32768, 2147483647, -9223372036854775808, 1.25, 123456789.123, 12345678901234567890.000000000000000000000000000001,
  'héllo, "wörld" \ end', 'varchar', '\x00ff10', '2024-02-29', '23:59:59.999999',
  '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+05:30', '1 day 02:03:04.000005',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": "x''y"}', '{1,NULL,-3}', 'happy', repeat('toast ', 100000)),
 (2, false, 0, 0, 0, 0, 0, -1, '', '', '\x', '0001-01-01', '00:00', '1970-01-01 00:00', '9999-12-31 23:59:59.999999+00',
  '-838:59:59', '00000000-0000-0000-0000-000000000000', '{}', '{}', 'sad', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL);
"#
    }
}
