//! The PostgreSQL backend: a private PostgreSQL server, read through `tokio_postgres`.

use super::{Backend, Refusal, TypeCase};
use crate::common::events::{column, text};
use anyhow::Context;
use tokio_postgres::{Client, SimpleQueryMessage};
use tributary_schemas::{ColumnType, Interval, TableId, Value};
use tributary_tests::Postgres;

/// Settings every read runs with, so values print the same whatever the server's defaults.
const READ_SETTINGS: &str =
    "SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'; SET DateStyle = 'ISO, YMD'; ";

/// The PostgreSQL backend: the harness's private PostgreSQL server.
pub type Pg = Postgres;

/// Every row of `sql` (one or more statements), every value as PostgreSQL prints it
/// (NULL as `NULL`).
pub async fn query(client: &Client, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let messages = client.simple_query(sql).await.context(sql.to_string())?;
    let row = |r: &tokio_postgres::SimpleQueryRow| -> Vec<String> {
        (0..r.len())
            .map(|i| r.get(i).unwrap_or("NULL").to_string())
            .collect()
    };
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(row(r)),
            _ => None,
        })
        .collect())
}

/// `text` as a string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Every row of `sql` run in database `db` of `pg`.
async fn read(pg: &Postgres, db: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    query(&pg.client(db).await?, sql).await
}

/// `table` qualified by its schema.
fn qualified(table: &TableId) -> String {
    format!("{}.{}", Pg::quote(&table.schema), Pg::quote(&table.name))
}

/// The PostgreSQL expression (`{}` standing for the column) that reads the copy of a
/// MariaDB column of type `source_type` as [`super::mariadb::rendered`] reads the source.
fn from_mariadb(source_type: &str) -> String {
    let base = source_type.split('(').next().unwrap_or(source_type);
    match base {
        // MariaDB drops CHAR's trailing spaces; PostgreSQL's character(n) shows them.
        "char" => "rtrim({})".into(),
        "bit" if source_type == "bit(1)" => "{}::int".into(),
        "float" => "{}::float8".into(),
        "bit" => "('x' || lpad(encode({}, 'hex'), 16, '0'))::bit(64)::bigint".into(),
        "timestamp" => "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')".into(),
        "time" => format!(
            "round(extract(epoch from {{}}) * {})",
            super::mariadb::time_scale(source_type)
        ),
        "tinyblob" | "blob" | "mediumblob" | "longblob" | "binary" | "varbinary" => {
            "upper(encode({}, 'hex'))".into()
        }
        _ => "{}".into(),
    }
}

impl Backend for Postgres {
    const SCHEME: &'static str = "postgres";
    const USER_PASSWORD: (&'static str, &'static str) = ("postgres", "postgres");
    const TRANSACTIONAL_DDL: bool = true;
    const WRITES_IN_BACKGROUND: bool = true;
    const KEEPS_NOT_NULL: bool = true;
    const WRONG_PASSWORD: (&'static str, &'static str) =
        ("password authentication failed", "28P01");
    const WATERMARKS_PER_DATABASE: bool = true;

    fn schema_of(&self, _db: &str, table: &TableId) -> String {
        table.schema.clone()
    }

    fn quote(name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    fn target_type(source_type: &str) -> &'static str {
        match source_type {
            "bigint" => "bigint",
            "integer" => "integer",
            "character varying(40)" => "character varying(40)",
            "text" => "text",
            "double precision" => "double precision",
            other => panic!("no sample column has type {other}"),
        }
    }

    async fn rows(
        &self,
        db: &str,
        table: &TableId,
        exprs: &[String],
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let sql = format!(
            "{READ_SETTINGS}SELECT {} FROM {} ORDER BY 1",
            exprs.join(", "),
            qualified(table)
        );
        read(self, db, &sql).await
    }

    async fn columns(&self, db: &str, table: &TableId) -> anyhow::Result<Vec<Vec<String>>> {
        let sql = format!(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), \
                 CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END, \
                 CASE WHEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                     AND i.indisprimary AND a.attnum = ANY(i.indkey)) THEN 'PRI' ELSE '' END \
             FROM pg_attribute a WHERE a.attrelid = {}::regclass AND a.attnum > 0 \
             ORDER BY a.attnum",
            literal(&qualified(table))
        );
        read(self, db, &sql).await
    }

    async fn tables(&self, db: &str, schema: &str) -> anyhow::Result<Vec<String>> {
        let sql = format!(
            "SELECT tablename FROM pg_tables WHERE schemaname = {} ORDER BY 1",
            literal(schema)
        );
        let rows = read(self, db, &sql).await?;
        Ok(rows.into_iter().map(|mut r| r.remove(0)).collect())
    }

    async fn stored_watermark(
        &self,
        db: &str,
        source: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let sql = format!(
            "SELECT position::text FROM tributary.watermarks WHERE source = {}",
            literal(source)
        );
        let rows = read(self, db, &sql).await?;
        rows.first()
            .map(|r| serde_json::from_str(&r[0]).context("the stored position is JSON"))
            .transpose()
    }

    async fn end_sink_sessions(&self, db: &str) -> anyhow::Result<usize> {
        let ended = read(
            self,
            db,
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
                 WHERE application_name = 'tributary-sink' AND datname = current_database()",
        )
        .await?;
        anyhow::ensure!(ended.iter().all(|r| r[0] == "t"), "{ended:?}");
        Ok(ended.len())
    }

    #[rustfmt::skip]
    fn type_cases() -> Vec<TypeCase> {
        const DAY: i64 = 86_400_000_000;
        let bc = -719_163 * DAY + 3_600_000_000;
        let uuid = [0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0, 0];
        let array = |element| ColumnType::Array { element: Box::new(element) };
        let numeric = |precision, scale| ColumnType::Numeric { precision, scale };
        let iv = |months, days, micros| Value::Interval(Interval { months, days, micros });
        let case = |name: &str, ty, source: &str, target_type, values| TypeCase { column: column(name, ty, source, true), target_type, read: "{}", values };
        vec![
            case("b", ColumnType::Bool, "boolean", "boolean", [(Value::Bool(true), "t"), (Value::Bool(false), "f"), (Value::Null, "NULL")]),
            case("i16", ColumnType::Int16, "smallint", "smallint", [(Value::Int16(i16::MIN), "-32768"), (Value::Int16(0), "0"), (Value::Int16(i16::MAX), "32767")]),
            case("i64", ColumnType::Int64, "bigint", "bigint", [(Value::Int64(i64::MAX), "9223372036854775807"), (Value::Int64(i64::MIN), "-9223372036854775808"), (Value::Int64(0), "0")]),
            case("f32", ColumnType::Float32, "real", "real", [(Value::Float32(0.1), "0.1"), (Value::Float32(f32::NAN), "NaN"), (Value::Float32(f32::MAX), "3.4028235e+38")]),
            case("f64", ColumnType::Float64, "double precision", "double precision", [(Value::Float64(0.1 + 0.2), "0.30000000000000004"), (Value::Float64(f64::NEG_INFINITY), "-Infinity"), (Value::Float64(5e-324), "5e-324")]),
            case("n", numeric(Some(10), Some(2)), "numeric(10,2)", "numeric(10,2)", [(Value::Numeric("12.3".into()), "12.30"), (Value::Numeric("NaN".into()), "NaN"), (Value::Numeric("-0.01".into()), "-0.01")]),
            case("n_any", numeric(None, None), "numeric", "numeric", [(Value::Numeric("-123456789012345678901234567890.000000001".into()), "-123456789012345678901234567890.000000001"), (Value::Numeric("Infinity".into()), "Infinity"), (Value::Numeric("-Infinity".into()), "-Infinity")]),
            case("t", ColumnType::Text, "character varying(5)", "character varying(5)", [(text("héllo"), "héllo"), (text("a\tb\nc"), "a\tb\nc"), (text("\\\r\\N"), "\\\r\\N")]),
            case("c", ColumnType::Text, "character(4)", "character(4)", [(text("ab  "), "ab  "), (text("abcd"), "abcd"), (text("    "), "    ")]),
            case("bin", ColumnType::Bytes, "bytea", "bytea", [(Value::Bytes(vec![0, 1, b'\\', 0xff]), "\\x00015cff"), (Value::Bytes(vec![]), "\\x"), (Value::Bytes(vec![b'\t', b'\n']), "\\x090a")]),
            case("d", ColumnType::Date, "date", "date", [(Value::Date(19_723), "2024-01-01"), (Value::Date(-719_163), "0001-12-31 BC"), (Value::Date(i32::MAX), "infinity")]),
            case("tm", ColumnType::Time, "time without time zone", "time without time zone", [(Value::Time(45_296_000_007), "12:34:56.000007"), (Value::Time(DAY), "24:00:00"), (Value::Time(0), "00:00:00")]),
            case("ts", ColumnType::Timestamp, "timestamp without time zone", "timestamp without time zone", [(Value::Timestamp(1_704_067_200_123_456), "2024-01-01 00:00:00.123456"), (Value::Timestamp(bc), "0001-12-31 01:00:00 BC"), (Value::Timestamp(i64::MIN), "-infinity")]),
            case("tstz", ColumnType::TimestampTz, "timestamp with time zone", "timestamp with time zone", [(Value::TimestampTz(1_704_067_200_123_456), "2024-01-01 00:00:00.123456+00"), (Value::TimestampTz(bc), "0001-12-31 01:00:00+00 BC"), (Value::TimestampTz(i64::MAX), "infinity")]),
            case("iv", ColumnType::Interval, "interval", "interval", [(iv(1, 2, 3), "1 mon 2 days 00:00:00.000003"), (iv(-1, 0, -3), "-1 mons -00:00:00.000003"), (iv(i32::MAX, i32::MIN, i64::MIN), "178956970 years 7 mons -2147483648 days -2562047788:00:54.775808")]),
            case("u", ColumnType::Uuid, "uuid", "uuid", [(Value::Uuid(uuid), "550e8400-e29b-41d4-a716-446655440000"), (Value::Uuid([0; 16]), "00000000-0000-0000-0000-000000000000"), (Value::Uuid([0xff; 16]), "ffffffff-ffff-ffff-ffff-ffffffffffff")]),
            case("j", ColumnType::Json { binary: false }, "json", "json", [(Value::Json("{\"b\": 1,  \"a\": [1,2]}".into()), "{\"b\": 1,  \"a\": [1,2]}"), (Value::Json("null".into()), "null"), (Value::Json("\"\\u00e9\\t\"".into()), "\"\\u00e9\\t\"")]),
            case("jb", ColumnType::Json { binary: true }, "jsonb", "jsonb", [(Value::Json("{\"b\": 1, \"a\": [1,2]}".into()), "{\"a\": [1, 2], \"b\": 1}"), (Value::Json("[]".into()), "[]"), (Value::Json("{\"k\": \"\\\\\"}".into()), "{\"k\": \"\\\\\"}")]),
            case("e", ColumnType::Enum { name: "mood".into() }, "mood", "text", [(Value::Enum("happy".into()), "happy"), (Value::Enum("with space".into()), "with space"), (Value::Enum(String::new()), "")]),
            case("arr", array(ColumnType::Int32), "integer[]", "integer[]", [(Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-3)]), "{1,NULL,-3}"), (Value::Array(vec![]), "{}"), (Value::Array(vec![Value::Int32(i32::MIN)]), "{-2147483648}")]),
            case("tarr", array(ColumnType::Text), "text[]", "text[]", [(Value::Array(vec![text("a\"b"), text("c\\d"), text("NULL"), text(""), text("x,y"), Value::Null]), r#"{"a\"b","c\\d","NULL","","x,y",NULL}"#), (Value::Array(vec![Value::Null]), "{NULL}"), (Value::Array(vec![text("{}"), text(" spaced ")]), r#"{"{}"," spaced "}"#)]),
            case("other", ColumnType::Other { name: "point".into() }, "point", "text", [(text("(1,2)"), "(1,2)"), (text(""), ""), (Value::Null, "NULL")]),
        ]
    }

    fn refusals() -> Vec<Refusal> {
        vec![
            Refusal {
                row: vec![Value::Int64(7), Value::Null, Value::Null, Value::Null],
                sqlstate: "23502",
                says: "not-null",
            },
            Refusal {
                row: vec![
                    Value::Int64(7),
                    text(&"n".repeat(41)),
                    Value::Null,
                    Value::Null,
                ],
                sqlstate: "22001",
                says: "too long",
            },
        ]
    }

    fn compared(source: &str, column: &str, source_type: &str) -> (String, String) {
        let name = Self::quote(column);
        match source {
            // The same kind holds every type as it is: each value as PostgreSQL prints
            // it, NULL apart from the text 'NULL'.
            "postgres" => {
                let both = format!("quote_nullable({name})");
                (both.clone(), both)
            }
            "mysql" => (
                super::mariadb::rendered(column, source_type),
                from_mariadb(source_type).replace("{}", &name),
            ),
            other => panic!("no source kind {other}"),
        }
    }

    fn postgres_types() -> &'static str {
        r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, n2 numeric(12,3),
  t text, vc varchar(20), c char(5), by bytea, d date, tm time, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb, ai int[], at text[], m mood, big text);
ALTER TABLE all_types ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO all_types VALUES
 (1, true, -32768, -2147483648, -9223372036854775808, 3.4028235e38, -1.7976931348623157e308,
  '-123456789012345678901234567890.123456789012345678901234567890', 123456789.123,
  'héllo, "wörld" \ tab	end', 'varchar', 'ab', '\x00ff10', '0044-03-15 BC', '23:59:59.999999',
  '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+05:30', 'P-1Y2M-3DT4H5M6.000007S',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2, {"b": null}]}', '{"z": 1, "a": "x"}',
  '{1,NULL,-3}', '{"a b","c,d","e\"f",NULL,"","NULL"}', 'happy', repeat('toast ', 100000)),
 (2, false, 0, 0, 0, 'NaN', 'Infinity', 'NaN', 0, '', '', '', '\x', 'infinity', '00:00', '-infinity', 'infinity',
  'PT0S', '00000000-0000-0000-0000-000000000000', 'null', '[]', '{}', '{}', 'sad', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#
    }
}
