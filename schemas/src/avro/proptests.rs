//! Round-trip property tests of the Avro codec for every column type.

use super::*;
use crate::event::{ChangeEvent, Op, TopicCount, TxEnd, TxMeta};
use crate::position::Position;
use crate::table::{Column, TableId, TableSchema};
use crate::value::{ColumnType, Interval, Row, Value};
use proptest::prelude::*;

fn scalar_type() -> impl Strategy<Value = ColumnType> {
    prop_oneof![
        Just(ColumnType::Bool),
        Just(ColumnType::Int16),
        Just(ColumnType::Int32),
        Just(ColumnType::Int64),
        Just(ColumnType::Float32),
        Just(ColumnType::Float64),
        Just(ColumnType::Numeric {
            precision: None,
            scale: None
        }),
        Just(ColumnType::Numeric {
            precision: Some(12),
            scale: Some(3)
        }),
        Just(ColumnType::Text),
        Just(ColumnType::Bytes),
        Just(ColumnType::Date),
        Just(ColumnType::Time),
        Just(ColumnType::Timestamp),
        Just(ColumnType::TimestampTz),
        Just(ColumnType::Interval),
        Just(ColumnType::Uuid),
        Just(ColumnType::Json { binary: true }),
        Just(ColumnType::Json { binary: false }),
        Just(ColumnType::Enum {
            name: "mood".into()
        }),
        Just(ColumnType::Other {
            name: "inet".into()
        }),
    ]
}

fn column_type() -> impl Strategy<Value = ColumnType> {
    prop_oneof![
        4 => scalar_type(),
        1 => scalar_type().prop_map(|t| ColumnType::Array { element: Box::new(t) }),
    ]
}

fn scalar_value(ty: &ColumnType) -> BoxedStrategy<Value> {
    match ty {
        ColumnType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ColumnType::Int16 => any::<i16>().prop_map(Value::Int16).boxed(),
        ColumnType::Int32 => any::<i32>().prop_map(Value::Int32).boxed(),
        ColumnType::Int64 => any::<i64>().prop_map(Value::Int64).boxed(),
        // NaN never equals itself; the codec keeps its bits, compared separately below.
        ColumnType::Float32 => any::<f32>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float32)
            .boxed(),
        ColumnType::Float64 => any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float64)
            .boxed(),
        ColumnType::Numeric { .. } => prop_oneof![
            "-?[0-9]{1,60}(\\.[0-9]{1,60})?",
            Just("NaN".to_string()),
            Just("-Infinity".to_string())
        ]
        .prop_map(Value::Numeric)
        .boxed(),
        ColumnType::Text | ColumnType::Other { .. } => {
            any::<String>().prop_map(Value::Text).boxed()
        }
        ColumnType::Bytes => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(Value::Bytes)
            .boxed(),
        ColumnType::Date => any::<i32>().prop_map(Value::Date).boxed(),
        ColumnType::Time => (0i64..86_400_000_000).prop_map(Value::Time).boxed(),
        ColumnType::Timestamp => any::<i64>().prop_map(Value::Timestamp).boxed(),
        ColumnType::TimestampTz => any::<i64>().prop_map(Value::TimestampTz).boxed(),
        ColumnType::Interval => (any::<i32>(), any::<i32>(), any::<i64>())
            .prop_map(|(months, days, micros)| {
                Value::Interval(Interval {
                    months,
                    days,
                    micros,
                })
            })
            .boxed(),
        ColumnType::Uuid => any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
        ColumnType::Json { .. } => "\\{\"[a-z]{0,5}\": [0-9]{1,4}\\}"
            .prop_map(Value::Json)
            .boxed(),
        ColumnType::Enum { .. } => "[a-z_]{1,10}".prop_map(Value::Enum).boxed(),
        ColumnType::Array { element } => proptest::collection::vec(
            prop_oneof![1 => Just(Value::Null), 4 => scalar_value(element)],
            0..5,
        )
        .prop_map(Value::Array)
        .boxed(),
    }
}

fn value(ty: &ColumnType) -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        6 => scalar_value(ty),
    ]
    .boxed()
}

fn table() -> impl Strategy<Value = TableSchema> {
    proptest::collection::vec(column_type(), 1..8).prop_map(|types| TableSchema {
        table: TableId::new("public", "wide table"),
        columns: types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| Column {
                name: if i == 0 {
                    "id".into()
                } else {
                    format!("c{i} odd-name")
                },
                ty,
                source_type: "x".into(),
                nullable: i != 0,
                missing: (i == 1).then(|| "3".to_string()),
            })
            .collect(),
        primary_key: vec![0],
        version: 3,
    })
}

fn row(table: &TableSchema) -> BoxedStrategy<Row> {
    let strategies: Vec<BoxedStrategy<Value>> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                scalar_value(&c.ty)
            } else {
                value(&c.ty)
            }
        })
        .collect();
    strategies.prop_map(Row).boxed()
}

fn event_for(table: TableSchema) -> BoxedStrategy<(TableSchema, ChangeEvent)> {
    let r = row(&table);
    (
        r.clone(),
        r,
        0usize..5,
        any::<(u32, u32)>(),
        any::<i64>(),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(move |(before, mut after, op, (lsn, seq), ts, origin)| {
            let op = [Op::Insert, Op::Update, Op::Delete, Op::Truncate, Op::Read][op];
            // Unchanged values only appear in the new image of an update.
            if op == Op::Update && after.0.len() > 1 {
                after.0[1] = Value::Unchanged;
            }
            let (before, after) = match op {
                Op::Insert | Op::Read => (None, Some(after)),
                Op::Update => (Some(before), Some(after)),
                Op::Delete => (Some(before), None),
                Op::Truncate => (None, None),
            };
            let key = match (&op, &before, &after) {
                (Op::Truncate, _, _) => Vec::new(),
                (Op::Delete, Some(b), _) => vec![b.0[0].clone()],
                (_, _, Some(a)) => vec![a.0[0].clone()],
                _ => unreachable!(),
            };
            // Both position kinds: odd LSNs stand for a MySQL source.
            let position = if lsn % 2 == 0 {
                Position::pg(lsn as u64, seq as u64)
            } else {
                Position::mysql(lsn / 7, u64::from(lsn), seq as u64)
            };
            let event = ChangeEvent {
                source: "head-office".into(),
                table: table.table.clone(),
                schema_version: table.version,
                op,
                key,
                before,
                after,
                position,
                tx: TxMeta {
                    id: Some(seq as u64),
                    commit_ts_micros: ts,
                    first: position,
                },
                origin,
            };
            (table.clone(), event)
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn events_round_trip((table, event) in table().prop_flat_map(event_for)) {
        let schemas = AvroSchemas::generate("head-office", &table).unwrap();
        let framed = encode_value(&schemas, &event).unwrap();
        // The direct encoder writes exactly what apache-avro's generic writer writes.
        prop_assert_eq!(&framed, &codec::encode_value_generic(&schemas, &event).unwrap());
        let (id, datum) = unframe(&framed).unwrap();
        prop_assert_eq!(id, schemas.value_id);
        prop_assert_eq!(decode_value(&schemas, datum).unwrap(), event.clone());
        // The direct decoder reads what apache-avro's generic reader reads, and moves
        // past exactly the datum (datums follow one another in a container block).
        let mut twice = datum.to_vec();
        twice.extend_from_slice(datum);
        let mut rest = twice.as_slice();
        prop_assert_eq!(
            codec::decode_value_generic(&schemas, &mut { datum }).unwrap(),
            event.clone()
        );
        prop_assert_eq!(decode_value_from(&schemas, &mut rest).unwrap(), event.clone());
        prop_assert_eq!(rest.len(), datum.len());
        // A datum cut short is an error, not a panic.
        prop_assert!(decode_value(&schemas, &datum[..datum.len() - 1]).is_err());
        if !event.key.is_empty() {
            let key = encode_key(&schemas, &event.key).unwrap();
            prop_assert_eq!(&key, &codec::encode_key_generic(&schemas, &event.key).unwrap());
            let (id, datum) = unframe(&key).unwrap();
            prop_assert_eq!(id, schemas.key_id);
            prop_assert_eq!(decode_key(&schemas, datum).unwrap(), event.key.clone());
        }
        // A consumer holding only the registered text rebuilds the same schemas.
        let rebuilt = AvroSchemas::from_value_text("head-office", &schemas.value_text).unwrap();
        prop_assert_eq!(rebuilt.value_id, schemas.value_id);
        prop_assert_eq!(&rebuilt.table, &table);
    }

    #[test]
    fn transaction_markers_round_trip(lsns in any::<(u32, u32)>(), counts in proptest::collection::vec(("[a-z.]{1,20}", any::<u32>()), 0..5)) {
        let end = TxEnd {
            source: "s".into(),
            id: Some(7),
            commit_ts_micros: -5,
            first: Position::pg(lsns.0 as u64, 1),
            last: Position::mysql(lsns.1, lsns.0 as u64, 9),
            topics: counts.into_iter().map(|(topic, count)| TopicCount { topic, count: count as u64 }).collect(),
        };
        prop_assert_eq!(decode_tx_end(&encode_tx_end(&end).unwrap()).unwrap(), end);
    }
}

#[test]
fn nan_survives_as_nan() {
    let table = TableSchema {
        table: TableId::new("s", "t"),
        columns: vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Int32,
                source_type: "integer".into(),
                nullable: false,
                missing: None,
            },
            Column {
                name: "f".into(),
                ty: ColumnType::Float64,
                source_type: "double precision".into(),
                nullable: true,
                missing: None,
            },
        ],
        primary_key: vec![0],
        version: 1,
    };
    let schemas = AvroSchemas::generate("s", &table).unwrap();
    let p = Position::pg(1, 1);
    let event = ChangeEvent {
        source: "s".into(),
        table: table.table.clone(),
        schema_version: 1,
        op: Op::Insert,
        key: vec![Value::Int32(1)],
        before: None,
        after: Some(Row(vec![Value::Int32(1), Value::Float64(f64::NAN)])),
        position: p,
        tx: TxMeta {
            id: None,
            commit_ts_micros: 0,
            first: p,
        },
        origin: None,
    };
    let framed = encode_value(&schemas, &event).unwrap();
    let decoded = decode_value(&schemas, unframe(&framed).unwrap().1).unwrap();
    assert!(matches!(decoded.after.unwrap().0[1], Value::Float64(f) if f.is_nan()));
}

#[test]
fn framing_errors_are_explained() {
    assert!(unframe(&[]).unwrap_err().to_string().contains("empty"));
    assert!(unframe(&[1, 0, 0, 0, 0])
        .unwrap_err()
        .to_string()
        .contains("magic byte is 0x01"));
    assert!(unframe(&[0, 1])
        .unwrap_err()
        .to_string()
        .contains("shorter than the 5-byte header"));
}
