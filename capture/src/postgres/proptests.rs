//! Property tests: for every column type, `parse_text(format_text(v)) == v`.
//!
//! Values are drawn from the whole domain PostgreSQL (and [`Value`]) allows: integers over
//! their full range, floats including NaN, infinities and subnormals, numerics of any
//! precision, any Unicode text, dates from 4713 BC to 5874897 AD, every representable
//! timestamp, intervals with mixed signs, and arrays with NULLs and the strings that need
//! quoting. With `TRIBUTARY_TEST_POSTGRES` set to a connection string, the ignored test
//! `postgres_prints_what_we_print` also has a real server read each formatted value and
//! checks it prints the very same text.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tributary_schemas::pg_text::{format_output as format_text, parse_text};
use tributary_schemas::{ColumnType, Interval, Value};

/// Days since 1970 of 4714-11-24 BC, PostgreSQL's first date.
const FIRST_DATE: i32 = -2_440_588;
/// Days since 1970 of 5874897-12-31, PostgreSQL's last date.
const LAST_DATE: i32 = 2_147_483_493 - 2_440_588;
/// Microseconds since 1970 of 4714-11-24 00:00 BC, PostgreSQL's first timestamp.
const FIRST_TIMESTAMP: i64 = FIRST_DATE as i64 * 86_400_000_000;

/// Whether two values are the same, treating every NaN as equal to every NaN and
/// telling -0.0 from 0.0.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float32(x), Value::Float32(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Value::Float64(x), Value::Float64(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// Text that tends to need quoting and escaping, mixed with arbitrary Unicode.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just(String::new()),
        Just("NULL".to_string()),
        Just("null".to_string()),
        Just(" ".to_string()),
        "[\"\\\\{},; \t\n\r\u{b}\u{c}aN\u{e9}\u{1F600}]{0,12}",
    ]
}

/// A decimal numeric text of arbitrary precision, or a special value.
fn numeric_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => ("-?", "(0|[1-9][0-9]{0,40})", prop::option::of("[0-9]{1,40}")).prop_map(|(sign, int, frac)| {
            match frac {
                Some(frac) => format!("{sign}{int}.{frac}"),
                None => format!("{sign}{int}"),
            }
        }),
        1 => Just("NaN".to_string()),
        1 => prop_oneof![Just("Infinity".to_string()), Just("-Infinity".to_string())],
    ]
}

/// A float8 covering normal, subnormal and special values.
fn float64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
}

/// A float4 covering normal, subnormal and special values.
fn float32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>(),
        any::<u32>().prop_map(f32::from_bits),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
    ]
}

/// A date in PostgreSQL's range, or an infinity.
fn date() -> impl Strategy<Value = i32> {
    prop_oneof![8 => FIRST_DATE..=LAST_DATE, 1 => -800_000..800_000_i32, 1 => prop_oneof![Just(i32::MIN), Just(i32::MAX)]]
}

/// A timestamp in PostgreSQL's range that fits 64-bit micros since 1970, or an infinity.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => FIRST_TIMESTAMP..i64::MAX,
        2 => -100_000_000_000_000_000..100_000_000_000_000_000_i64,
        1 => prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(i64::MAX - 1)],
    ]
}

/// An interval with independent, possibly mixed, signs.
fn interval() -> impl Strategy<Value = Interval> {
    let micros = prop_oneof![any::<i64>(), -1_000_000_000_i64..1_000_000_000, Just(0_i64)];
    (any::<i32>(), any::<i32>(), micros).prop_map(|(months, days, micros)| Interval {
        months,
        days,
        micros,
    })
}

/// A scalar column type and values of it.
fn scalar() -> impl Strategy<Value = (ColumnType, BoxedStrategy<Value>)> {
    let numeric = ColumnType::Numeric {
        precision: None,
        scale: None,
    };
    prop_oneof![
        Just((
            ColumnType::Bool,
            any::<bool>().prop_map(Value::Bool).boxed()
        )),
        Just((
            ColumnType::Int16,
            any::<i16>().prop_map(Value::Int16).boxed()
        )),
        Just((
            ColumnType::Int32,
            any::<i32>().prop_map(Value::Int32).boxed()
        )),
        Just((
            ColumnType::Int64,
            any::<i64>().prop_map(Value::Int64).boxed()
        )),
        Just((
            ColumnType::Float32,
            float32().prop_map(Value::Float32).boxed()
        )),
        Just((
            ColumnType::Float64,
            float64().prop_map(Value::Float64).boxed()
        )),
        Just((numeric, numeric_text().prop_map(Value::Numeric).boxed())),
        Just((
            ColumnType::Text,
            tricky_text().prop_map(Value::Text).boxed()
        )),
        Just((
            ColumnType::Other {
                name: "inet".into()
            },
            tricky_text().prop_map(Value::Text).boxed()
        )),
        Just((
            ColumnType::Bytes,
            any::<Vec<u8>>().prop_map(Value::Bytes).boxed()
        )),
        Just((ColumnType::Date, date().prop_map(Value::Date).boxed())),
        Just((
            ColumnType::Time,
            (0..=86_400_000_000_i64).prop_map(Value::Time).boxed()
        )),
        Just((
            ColumnType::Timestamp,
            timestamp().prop_map(Value::Timestamp).boxed()
        )),
        Just((
            ColumnType::TimestampTz,
            timestamp().prop_map(Value::TimestampTz).boxed()
        )),
        Just((
            ColumnType::Interval,
            interval().prop_map(Value::Interval).boxed()
        )),
        Just((
            ColumnType::Uuid,
            any::<[u8; 16]>().prop_map(Value::Uuid).boxed()
        )),
        Just((
            ColumnType::Json { binary: false },
            tricky_text().prop_map(Value::Json).boxed()
        )),
        Just((
            ColumnType::Json { binary: true },
            tricky_text().prop_map(Value::Json).boxed()
        )),
        Just((
            ColumnType::Enum {
                name: "mood".into()
            },
            tricky_text().prop_map(Value::Enum).boxed()
        )),
    ]
}

/// A column type (scalar or array of a scalar) and a value of it.
fn typed_value() -> impl Strategy<Value = (ColumnType, Value)> {
    (scalar(), any::<bool>()).prop_flat_map(|((ty, values), array)| {
        if array {
            let element = prop_oneof![1 => Just(Value::Null), 4 => values];
            let items = prop::collection::vec(element, 0..6).prop_map(Value::Array);
            (
                Just(ColumnType::Array {
                    element: Box::new(ty),
                }),
                items.boxed(),
            )
        } else {
            (Just(ty), values)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn format_then_parse_round_trips((ty, value) in typed_value()) {
        prop_assert!(value.fits(&ty));
        let text = format_text(&value);
        let parsed = parse_text("c", &ty, &text);
        prop_assert!(
            matches!(&parsed, Ok(p) if same(p, &value)),
            "{:?} formatted as {:?} parsed as {:?}", value, text, parsed
        );
    }

    #[test]
    fn parsing_garbage_never_panics(ty in scalar().prop_map(|(ty, _)| ty), text in tricky_text()) {
        let _ = parse_text("c", &ty, &text);
        let _ = parse_text("c", &ColumnType::Array { element: Box::new(ty) }, &text);
    }
}

/// The PostgreSQL type to cast a formatted value to, for the live test.
fn pg_type(ty: &ColumnType) -> Option<String> {
    Some(match ty {
        ColumnType::Bool => "bool".into(),
        ColumnType::Int16 => "int2".into(),
        ColumnType::Int32 => "int4".into(),
        ColumnType::Int64 => "int8".into(),
        ColumnType::Float32 => "float4".into(),
        ColumnType::Float64 => "float8".into(),
        ColumnType::Numeric { .. } => "numeric".into(),
        ColumnType::Text => "text".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Interval => "interval".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Array { element } => format!("{}[]", pg_type(element)?),
        ColumnType::Json { .. } | ColumnType::Enum { .. } | ColumnType::Other { .. } => {
            return None
        }
    })
}

/// Whether PostgreSQL can hold `value` at all (no NUL characters in text).
fn storable(value: &Value) -> bool {
    match value {
        Value::Text(s) => !s.contains('\0'),
        // PostgreSQL prints a negative zero numeric without its sign.
        Value::Numeric(n) => {
            !(n.starts_with('-') && n.bytes().all(|b| matches!(b, b'-' | b'0' | b'.')))
        }
        // PostgreSQL 15 has no infinite intervals (all fields at MAX or all at MIN).
        Value::Interval(i) => i.micros != i64::MAX && i.micros != i64::MIN,
        Value::Array(items) => items.iter().all(storable),
        _ => true,
    }
}

#[test]
#[ignore = "needs a PostgreSQL server: set TRIBUTARY_TEST_POSTGRES"]
fn postgres_prints_what_we_print() {
    let Ok(url) = std::env::var("TRIBUTARY_TEST_POSTGRES") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let settings: Vec<String> = crate::postgres::catalog::SESSION_SETTINGS
            .iter()
            .map(|(name, value)| format!("SET {name} = '{value}'"))
            .collect();
        client.batch_execute(&settings.join("; ")).await.unwrap();
        let mut runner = TestRunner::default();
        let strategy = typed_value();
        let mut checked = 0;
        while checked < 5000 {
            let (ty, value) = strategy.new_tree(&mut runner).unwrap().current();
            let Some(pg) = pg_type(&ty) else { continue };
            if !storable(&value) {
                continue;
            }
            let text = format_text(&value);
            let sql = format!("SELECT '{}'::{pg}", text.replace('\'', "''"));
            let rows = client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let printed = rows
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or("").to_string())
                    }
                    _ => None,
                })
                .unwrap();
            // PostgreSQL normalises numerics written in our (its own) form to the same text.
            assert_eq!(printed, text, "{sql}");
            let parsed = parse_text("c", &ty, &printed).unwrap();
            assert!(same(&parsed, &value), "{sql}: {parsed:?}");
            checked += 1;
        }
    });
}
