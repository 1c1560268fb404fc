//! Encoding and decoding of events, keys and transaction markers as Avro datums.

#[cfg(test)]
use super::sanitize;
use super::{frame, parse_fixed, unframe, AvroSchemas, SchemaId, TX_END_SCHEMA};
use crate::error::SchemaError;
use crate::event::{ChangeEvent, Op, TopicCount, TxEnd, TxMeta};
use crate::position::Position;
use crate::table::{TableId, TableSchema};
use crate::value::{ColumnType, Interval, Row, Value};
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use std::sync::OnceLock;

fn tx_end_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse_fixed(TX_END_SCHEMA, "tx_end.avsc").expect("tx_end.avsc parses"))
}

fn write_datum(schema: &Schema, value: Avro) -> Result<Vec<u8>, apache_avro::Error> {
    GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)
}

fn read_datum(schema: &Schema, reader: &mut &[u8]) -> Result<Avro, apache_avro::Error> {
    GenericDatumReader::builder(schema)
        .build()?
        .read_value(reader)
}

/// Encodes an event's envelope, framed with the value schema id.
///
/// The datum is written directly in Avro's binary encoding, in the field order of the
/// value schema `AvroSchemas::generate` builds (tests compare it byte for byte with
/// apache-avro's generic writer and decode it with apache-avro). Building an
/// `apache_avro::types::Value` tree per event, validating it and resolving the schema's
/// names each time cost several times more than the rest of the capture.
pub fn encode_value(schemas: &AvroSchemas, event: &ChangeEvent) -> Result<Vec<u8>, SchemaError> {
    let table = &schemas.table;
    let mut out = Vec::with_capacity(128);
    out.push(0); // magic byte
    out.extend_from_slice(&schemas.value_id.to_be_bytes());
    for row in [&event.before, &event.after] {
        match row {
            Some(row) => {
                bin::long(&mut out, 1);
                bin::row(&mut out, table, row)?;
            }
            None => bin::long(&mut out, 0),
        }
    }
    let unchanged: Vec<&str> = match &event.after {
        Some(row) => row
            .0
            .iter()
            .zip(&table.columns)
            .filter(|(v, _)| matches!(v, Value::Unchanged))
            .map(|(_, c)| c.name.as_str())
            .collect(),
        None => Vec::new(),
    };
    if !unchanged.is_empty() {
        bin::long(&mut out, unchanged.len() as i64);
        for name in unchanged {
            bin::string(&mut out, name);
        }
    }
    bin::long(&mut out, 0);
    bin::string(&mut out, event.op.code());
    bin::string(&mut out, &event.source);
    bin::string(&mut out, &event.table.schema);
    bin::string(&mut out, &event.table.name);
    bin::position(&mut out, &event.position);
    bin::opt_long(&mut out, event.tx.id.map(|v| v as i64));
    bin::long(&mut out, event.tx.commit_ts_micros);
    bin::position(&mut out, &event.tx.first);
    match &event.origin {
        Some(o) => {
            bin::long(&mut out, 1);
            bin::string(&mut out, o);
        }
        None => bin::long(&mut out, 0),
    }
    bin::long(&mut out, i64::from(event.schema_version as i32));
    Ok(out)
}

/// Avro binary encoding of the envelope's parts.
mod bin {
    use super::mismatch;
    use crate::error::SchemaError;
    use crate::position::Position;
    use crate::table::TableSchema;
    use crate::value::{ColumnType, Row, Value};

    /// A zigzag varint (`int` and `long`, union indexes, lengths, block counts).
    pub(super) fn long(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    pub(super) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        long(out, b.len() as i64);
        out.extend_from_slice(b);
    }

    pub(super) fn string(out: &mut Vec<u8>, s: &str) {
        bytes(out, s.as_bytes());
    }

    pub(super) fn opt_long(out: &mut Vec<u8>, v: Option<i64>) {
        match v {
            Some(v) => {
                long(out, 1);
                long(out, v);
            }
            None => long(out, 0),
        }
    }

    pub(super) fn position(out: &mut Vec<u8>, p: &Position) {
        match p {
            Position::Postgres(pg) => {
                string(out, "postgres");
                opt_long(out, Some(pg.lsn as i64));
                opt_long(out, None);
                opt_long(out, None);
                long(out, pg.seq as i64);
            }
            Position::MySql(m) => {
                string(out, "mysql");
                opt_long(out, None);
                opt_long(out, Some(i64::from(m.file)));
                opt_long(out, Some(m.offset as i64));
                long(out, m.seq as i64);
            }
        }
    }

    /// The `Value` record: every column as `["null", T]`.
    pub(super) fn row(
        out: &mut Vec<u8>,
        table: &TableSchema,
        row: &Row,
    ) -> Result<(), SchemaError> {
        if row.0.len() != table.columns.len() {
            return Err(SchemaError::malformed(
                format!("row of {}", table.table),
                format!("{} values for {} columns", row.0.len(), table.columns.len()),
            ));
        }
        for (c, v) in table.columns.iter().zip(&row.0) {
            match v {
                Value::Null | Value::Unchanged => long(out, 0),
                v => {
                    long(out, 1);
                    value(out, &c.name, &c.ty, v)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn value(
        out: &mut Vec<u8>,
        column: &str,
        ty: &ColumnType,
        v: &Value,
    ) -> Result<(), SchemaError> {
        match (ty, v) {
            (ColumnType::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
            (ColumnType::Int16, Value::Int16(v)) => long(out, i64::from(*v)),
            (ColumnType::Int32, Value::Int32(v)) => long(out, i64::from(*v)),
            (ColumnType::Int64, Value::Int64(v)) => long(out, *v),
            (ColumnType::Float32, Value::Float32(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ColumnType::Float64, Value::Float64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ColumnType::Numeric { .. }, Value::Numeric(s))
            | (ColumnType::Text | ColumnType::Other { .. }, Value::Text(s))
            | (ColumnType::Json { .. }, Value::Json(s))
            | (ColumnType::Enum { .. }, Value::Enum(s)) => string(out, s),
            (ColumnType::Bytes, Value::Bytes(b)) => bytes(out, b),
            (ColumnType::Date, Value::Date(d)) => long(out, i64::from(*d)),
            (ColumnType::Time, Value::Time(t))
            | (ColumnType::Timestamp, Value::Timestamp(t))
            | (ColumnType::TimestampTz, Value::TimestampTz(t)) => long(out, *t),
            (ColumnType::Interval, Value::Interval(i)) => {
                long(out, i64::from(i.months));
                long(out, i64::from(i.days));
                long(out, i.micros);
            }
            (ColumnType::Uuid, Value::Uuid(u)) => {
                let mut buf = [0u8; 36];
                string(
                    out,
                    uuid::Uuid::from_bytes(*u)
                        .hyphenated()
                        .encode_lower(&mut buf),
                );
            }
            (ColumnType::Array { element }, Value::Array(items)) => {
                if !items.is_empty() {
                    long(out, items.len() as i64);
                    for item in items {
                        match item {
                            Value::Null => long(out, 0),
                            v => {
                                long(out, 1);
                                value(out, column, element, v)?;
                            }
                        }
                    }
                }
                long(out, 0);
            }
            (ty, v) => return Err(mismatch(column, v, ty)),
        }
        Ok(())
    }
}

/// The envelope encoded through apache-avro's generic writer: the reference the direct
/// encoder is tested against.
#[cfg(test)]
pub(crate) fn encode_value_generic(
    schemas: &AvroSchemas,
    event: &ChangeEvent,
) -> Result<Vec<u8>, SchemaError> {
    let table = &schemas.table;
    let mut unchanged = Vec::new();
    let after = match &event.after {
        Some(row) => {
            for (i, v) in row.0.iter().enumerate() {
                if matches!(v, Value::Unchanged) {
                    unchanged.push(Avro::String(table.columns[i].name.clone()));
                }
            }
            Avro::Union(1, Box::new(row_to_avro(table, row)?))
        }
        None => Avro::Union(0, Box::new(Avro::Null)),
    };
    let before = match &event.before {
        Some(row) => Avro::Union(1, Box::new(row_to_avro(table, row)?)),
        None => Avro::Union(0, Box::new(Avro::Null)),
    };
    let record = Avro::Record(vec![
        ("before".into(), before),
        ("after".into(), after),
        ("unchanged".into(), Avro::Array(unchanged)),
        ("op".into(), Avro::String(event.op.code().into())),
        (
            "source".into(),
            Avro::Record(vec![
                ("name".into(), Avro::String(event.source.clone())),
                ("schema".into(), Avro::String(event.table.schema.clone())),
                ("table".into(), Avro::String(event.table.name.clone())),
                ("position".into(), position_to_avro(&event.position)),
            ]),
        ),
        (
            "tx".into(),
            Avro::Record(vec![
                ("id".into(), opt_long(event.tx.id)),
                (
                    "commit_ts_micros".into(),
                    Avro::Long(event.tx.commit_ts_micros),
                ),
                ("first".into(), position_to_avro(&event.tx.first)),
            ]),
        ),
        (
            "origin".into(),
            match &event.origin {
                Some(o) => Avro::Union(1, Box::new(Avro::String(o.clone()))),
                None => Avro::Union(0, Box::new(Avro::Null)),
            },
        ),
        (
            "schema_version".into(),
            Avro::Int(event.schema_version as i32),
        ),
    ]);
    let datum = write_datum(&schemas.value, record)
        .map_err(|e| SchemaError::avro(format!("encoding event of {}", event.table), e))?;
    Ok(frame(schemas.value_id, &datum))
}

/// Decodes an envelope datum (without framing) written with `schemas`.
pub fn decode_value(schemas: &AvroSchemas, datum: &[u8]) -> Result<ChangeEvent, SchemaError> {
    let mut reader = datum;
    decode_value_from(schemas, &mut reader)
}

/// Decodes the envelope datum at the front of `reader` (datums written one after another,
/// as in an Avro container's block) and moves `reader` past it.
///
/// Read directly in Avro's binary encoding, in the field order of the value schema (the
/// mirror of [`encode_value`]; tests compare it with apache-avro's generic reader): the
/// generic reader resolved the schema's names and built a value tree for every event,
/// which cost more than the rest of a restore.
pub fn decode_value_from(
    schemas: &AvroSchemas,
    reader: &mut &[u8],
) -> Result<ChangeEvent, SchemaError> {
    let table = &schemas.table;
    let mut r = unbin::Reader(reader);
    let before = r.opt_row(table)?;
    let mut after = r.opt_row(table)?;
    let unchanged = r.strings("unchanged")?;
    if let Some(row) = after.as_mut() {
        for name in &unchanged {
            if let Some(i) = table.column_index(name) {
                if row.0[i].is_null() {
                    row.0[i] = Value::Unchanged;
                }
            }
        }
    }
    let op_code = r.string("op")?;
    let op = Op::from_code(&op_code)
        .ok_or_else(|| SchemaError::malformed("op", format!("unknown code {op_code:?}")))?;
    let source = r.string("source.name")?;
    let table_id = TableId::new(r.string("source.schema")?, r.string("source.table")?);
    let position = r.position()?;
    let tx = TxMeta {
        id: r.opt_long("tx.id")?.map(|v| v as u64),
        commit_ts_micros: r.long("tx.commit_ts_micros")?,
        first: r.position()?,
    };
    let origin = match r.union("origin")? {
        0 => None,
        _ => Some(r.string("origin")?),
    };
    let schema_version = u32::try_from(r.long("schema_version")?).map_err(|_| {
        SchemaError::malformed("schema_version", "negative or too large".to_string())
    })?;
    let key = match op {
        Op::Truncate => Vec::new(),
        Op::Delete => key_of(table, before.as_ref())?,
        _ => key_of(table, after.as_ref())?,
    };
    Ok(ChangeEvent {
        source,
        table: table_id,
        schema_version,
        op,
        key,
        before,
        after,
        position,
        tx,
        origin,
    })
}

/// Avro binary decoding of the envelope's parts (the mirror of `bin`).
mod unbin {
    use crate::error::SchemaError;
    use crate::position::Position;
    use crate::table::TableSchema;
    use crate::value::{ColumnType, Interval, Row, Value};

    /// Reads from the front of a slice, moving it past what it reads.
    pub(super) struct Reader<'a, 'b>(pub(super) &'a mut &'b [u8]);

    fn short(what: &str) -> SchemaError {
        SchemaError::malformed(what, "the datum ends early".to_string())
    }

    impl<'b> Reader<'_, 'b> {
        fn take(&mut self, n: usize, what: &str) -> Result<&'b [u8], SchemaError> {
            if self.0.len() < n {
                return Err(short(what));
            }
            let (head, rest) = self.0.split_at(n);
            *self.0 = rest;
            Ok(head)
        }

        /// A zigzag varint.
        pub(super) fn long(&mut self, what: &str) -> Result<i64, SchemaError> {
            let mut z: u64 = 0;
            let mut shift = 0;
            loop {
                let (&b, rest) = self.0.split_first().ok_or_else(|| short(what))?;
                *self.0 = rest;
                if shift >= 64 {
                    return Err(SchemaError::malformed(
                        what,
                        "a varint longer than 10 bytes".to_string(),
                    ));
                }
                z |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
        }

        fn int(&mut self, what: &str) -> Result<i32, SchemaError> {
            i32::try_from(self.long(what)?)
                .map_err(|_| SchemaError::malformed(what, "an int out of range".to_string()))
        }

        /// A union's branch index.
        pub(super) fn union(&mut self, what: &str) -> Result<i64, SchemaError> {
            match self.long(what)? {
                i @ (0 | 1) => Ok(i),
                i => Err(SchemaError::malformed(what, format!("union branch {i}"))),
            }
        }

        pub(super) fn opt_long(&mut self, what: &str) -> Result<Option<i64>, SchemaError> {
            Ok(match self.union(what)? {
                0 => None,
                _ => Some(self.long(what)?),
            })
        }

        fn bytes(&mut self, what: &str) -> Result<&'b [u8], SchemaError> {
            let len = usize::try_from(self.long(what)?)
                .map_err(|_| SchemaError::malformed(what, "a negative length".to_string()))?;
            self.take(len, what)
        }

        pub(super) fn string(&mut self, what: &str) -> Result<String, SchemaError> {
            let b = self.bytes(what)?;
            String::from_utf8(b.to_vec())
                .map_err(|_| SchemaError::malformed(what, "a string that is not UTF-8".to_string()))
        }

        /// The items of an array: blocks of a count (negative: followed by the block's
        /// size in bytes) ending with an empty block; `item` reads one.
        fn array<T>(
            &mut self,
            what: &str,
            mut item: impl FnMut(&mut Self) -> Result<T, SchemaError>,
        ) -> Result<Vec<T>, SchemaError> {
            let mut out = Vec::new();
            loop {
                let mut count = self.long(what)?;
                if count == 0 {
                    return Ok(out);
                }
                if count < 0 {
                    count = -count;
                    self.long(what)?;
                }
                for _ in 0..count {
                    out.push(item(self)?);
                }
            }
        }

        pub(super) fn strings(&mut self, what: &str) -> Result<Vec<String>, SchemaError> {
            self.array(what, |r| r.string(what))
        }

        pub(super) fn position(&mut self) -> Result<Position, SchemaError> {
            let kind = self.string("position.kind")?;
            let lsn = self.opt_long("position.lsn")?;
            let file = self.opt_long("position.file")?;
            let offset = self.opt_long("position.offset")?;
            let seq = self.long("position.seq")? as u64;
            match kind.as_str() {
                "postgres" => {
                    let lsn = lsn.ok_or_else(|| {
                        SchemaError::malformed(
                            "position",
                            "postgres position without lsn".to_string(),
                        )
                    })?;
                    Ok(Position::pg(lsn as u64, seq))
                }
                "mysql" => match (file.map(u32::try_from), offset) {
                    (Some(Ok(file)), Some(offset)) => Ok(Position::mysql(file, offset as u64, seq)),
                    _ => Err(SchemaError::malformed(
                        "position",
                        "mysql position without a valid file and offset".to_string(),
                    )),
                },
                other => Err(SchemaError::malformed(
                    "position.kind",
                    format!("unknown kind {other:?}"),
                )),
            }
        }

        /// A `["null", Value]` row.
        pub(super) fn opt_row(&mut self, table: &TableSchema) -> Result<Option<Row>, SchemaError> {
            if self.union("row")? == 0 {
                return Ok(None);
            }
            let mut values = Vec::with_capacity(table.columns.len());
            for c in &table.columns {
                values.push(match self.union(&c.name)? {
                    0 => Value::Null,
                    _ => self.value(&c.name, &c.ty)?,
                });
            }
            Ok(Some(Row(values)))
        }

        fn value(&mut self, column: &str, ty: &ColumnType) -> Result<Value, SchemaError> {
            Ok(match ty {
                ColumnType::Bool => match self.take(1, column)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(SchemaError::malformed(
                            format!("column {column}"),
                            format!("boolean byte {b}"),
                        ))
                    }
                },
                ColumnType::Int16 => {
                    Value::Int16(i16::try_from(self.long(column)?).map_err(|_| {
                        SchemaError::malformed(
                            format!("column {column}"),
                            "a smallint out of range".to_string(),
                        )
                    })?)
                }
                ColumnType::Int32 => Value::Int32(self.int(column)?),
                ColumnType::Int64 => Value::Int64(self.long(column)?),
                ColumnType::Float32 => Value::Float32(f32::from_le_bytes(
                    self.take(4, column)?.try_into().expect("4 bytes"),
                )),
                ColumnType::Float64 => Value::Float64(f64::from_le_bytes(
                    self.take(8, column)?.try_into().expect("8 bytes"),
                )),
                ColumnType::Numeric { .. } => Value::Numeric(self.string(column)?),
                ColumnType::Text | ColumnType::Other { .. } => Value::Text(self.string(column)?),
                ColumnType::Json { .. } => Value::Json(self.string(column)?),
                ColumnType::Enum { .. } => Value::Enum(self.string(column)?),
                ColumnType::Bytes => Value::Bytes(self.bytes(column)?.to_vec()),
                ColumnType::Date => Value::Date(self.int(column)?),
                ColumnType::Time => Value::Time(self.long(column)?),
                ColumnType::Timestamp => Value::Timestamp(self.long(column)?),
                ColumnType::TimestampTz => Value::TimestampTz(self.long(column)?),
                ColumnType::Interval => Value::Interval(Interval {
                    months: self.int(column)?,
                    days: self.int(column)?,
                    micros: self.long(column)?,
                }),
                ColumnType::Uuid => {
                    let text = self.string(column)?;
                    Value::Uuid(
                        *uuid::Uuid::parse_str(&text)
                            .map_err(|e| {
                                SchemaError::malformed(format!("column {column}"), e.to_string())
                            })?
                            .as_bytes(),
                    )
                }
                ColumnType::Array { element } => Value::Array(self.array(column, |r| {
                    Ok(match r.union(column)? {
                        0 => Value::Null,
                        _ => r.value(column, element)?,
                    })
                })?),
            })
        }
    }
}

/// The envelope decoded through apache-avro's generic reader: the reference the direct
/// decoder is tested against.
#[cfg(test)]
pub(crate) fn decode_value_generic(
    schemas: &AvroSchemas,
    reader: &mut &[u8],
) -> Result<ChangeEvent, SchemaError> {
    let value =
        read_datum(&schemas.value, reader).map_err(|e| SchemaError::avro("decoding event", e))?;
    let mut fields = record_fields(value, "envelope")?;
    let table = &schemas.table;
    let unchanged: Vec<String> = match take(&mut fields, "unchanged")? {
        Avro::Array(items) => items
            .into_iter()
            .map(|v| as_string(v, "unchanged"))
            .collect::<Result<_, _>>()?,
        other => return Err(bad("unchanged", &other)),
    };
    let before = opt_row(table, take(&mut fields, "before")?, &[])?;
    let after = opt_row(table, take(&mut fields, "after")?, &unchanged)?;
    let op_code = as_string(take(&mut fields, "op")?, "op")?;
    let op = Op::from_code(&op_code)
        .ok_or_else(|| SchemaError::malformed("op", format!("unknown code {op_code:?}")))?;
    let mut source = record_fields(take(&mut fields, "source")?, "source")?;
    let source_name = as_string(take(&mut source, "name")?, "source.name")?;
    let table_id = TableId::new(
        as_string(take(&mut source, "schema")?, "source.schema")?,
        as_string(take(&mut source, "table")?, "source.table")?,
    );
    let position = position_from_avro(take(&mut source, "position")?)?;
    let mut tx = record_fields(take(&mut fields, "tx")?, "tx")?;
    let tx = TxMeta {
        id: opt_u64(take(&mut tx, "id")?, "tx.id")?,
        commit_ts_micros: as_long(take(&mut tx, "commit_ts_micros")?, "tx.commit_ts_micros")?,
        first: position_from_avro(take(&mut tx, "first")?)?,
    };
    let origin = match unwrap_union(take(&mut fields, "origin")?) {
        Avro::Null => None,
        v => Some(as_string(v, "origin")?),
    };
    let schema_version = match take(&mut fields, "schema_version")? {
        Avro::Int(v) => v as u32,
        other => return Err(bad("schema_version", &other)),
    };
    let key = match op {
        Op::Truncate => Vec::new(),
        Op::Delete => key_of(table, before.as_ref())?,
        _ => key_of(table, after.as_ref())?,
    };
    Ok(ChangeEvent {
        source: source_name,
        table: table_id,
        schema_version,
        op,
        key,
        before,
        after,
        position,
        tx,
        origin,
    })
}

/// Encodes a primary key, framed with the key schema id.
pub fn encode_key(schemas: &AvroSchemas, key: &[Value]) -> Result<Vec<u8>, SchemaError> {
    let table = &schemas.table;
    if key.len() != table.primary_key.len() {
        return Err(SchemaError::malformed(
            "key",
            format!(
                "{} values for {} key columns",
                key.len(),
                table.primary_key.len()
            ),
        ));
    }
    // Written directly like the envelope (see `encode_value`): the key record's fields are
    // the key columns, not nullable.
    let mut out = Vec::with_capacity(16);
    out.push(0); // magic byte
    out.extend_from_slice(&schemas.key_id.to_be_bytes());
    for (c, v) in table.key_columns().zip(key) {
        bin::value(&mut out, &c.name, &c.ty, v)?;
    }
    Ok(out)
}

/// The key encoded through apache-avro's generic writer (the reference for tests).
#[cfg(test)]
pub(crate) fn encode_key_generic(
    schemas: &AvroSchemas,
    key: &[Value],
) -> Result<Vec<u8>, SchemaError> {
    let table = &schemas.table;
    if key.len() != table.primary_key.len() {
        return Err(SchemaError::malformed(
            "key",
            format!(
                "{} values for {} key columns",
                key.len(),
                table.primary_key.len()
            ),
        ));
    }
    let fields = table
        .key_columns()
        .zip(key)
        .map(|(c, v)| Ok((sanitize(&c.name), value_to_avro(&c.name, &c.ty, v)?)))
        .collect::<Result<Vec<_>, SchemaError>>()?;
    let datum = write_datum(&schemas.key, Avro::Record(fields))
        .map_err(|e| SchemaError::avro(format!("encoding key of {}", table.table), e))?;
    Ok(frame(schemas.key_id, &datum))
}

/// Decodes a key datum (without framing) written with `schemas`.
pub fn decode_key(schemas: &AvroSchemas, datum: &[u8]) -> Result<Vec<Value>, SchemaError> {
    let mut reader = datum;
    let value =
        read_datum(&schemas.key, &mut reader).map_err(|e| SchemaError::avro("decoding key", e))?;
    let fields = record_fields(value, "key")?;
    schemas
        .table
        .key_columns()
        .zip(fields)
        .map(|(c, (_, v))| value_from_avro(&c.name, &c.ty, v))
        .collect()
}

/// Encodes a transaction end marker, framed with its schema id.
pub fn encode_tx_end(end: &TxEnd) -> Result<Vec<u8>, SchemaError> {
    let topics = end
        .topics
        .iter()
        .map(|t| {
            Avro::Record(vec![
                ("topic".into(), Avro::String(t.topic.clone())),
                ("count".into(), Avro::Long(t.count as i64)),
            ])
        })
        .collect();
    let record = Avro::Record(vec![
        ("source".into(), Avro::String(end.source.clone())),
        ("id".into(), opt_long(end.id)),
        ("commit_ts_micros".into(), Avro::Long(end.commit_ts_micros)),
        ("first".into(), position_to_avro(&end.first)),
        ("last".into(), position_to_avro(&end.last)),
        ("topics".into(), Avro::Array(topics)),
    ]);
    let datum = write_datum(tx_end_schema(), record)
        .map_err(|e| SchemaError::avro("encoding transaction end", e))?;
    Ok(frame(super::schema_id(TX_END_SCHEMA), &datum))
}

/// Decodes a framed transaction end marker.
pub fn decode_tx_end(message: &[u8]) -> Result<TxEnd, SchemaError> {
    let (id, datum) = unframe(message)?;
    let expected: SchemaId = super::schema_id(TX_END_SCHEMA);
    if id != expected {
        return Err(SchemaError::Framing(format!(
            "transaction marker has schema id {id}, expected {expected}"
        )));
    }
    let mut reader = datum;
    let value = read_datum(tx_end_schema(), &mut reader)
        .map_err(|e| SchemaError::avro("decoding transaction end", e))?;
    let mut f = record_fields(value, "transaction end")?;
    let topics = match take(&mut f, "topics")? {
        Avro::Array(items) => items
            .into_iter()
            .map(|item| {
                let mut t = record_fields(item, "topics[]")?;
                Ok(TopicCount {
                    topic: as_string(take(&mut t, "topic")?, "topic")?,
                    count: as_long(take(&mut t, "count")?, "count")? as u64,
                })
            })
            .collect::<Result<_, SchemaError>>()?,
        other => return Err(bad("topics", &other)),
    };
    Ok(TxEnd {
        source: as_string(take(&mut f, "source")?, "source")?,
        id: opt_u64(take(&mut f, "id")?, "id")?,
        commit_ts_micros: as_long(take(&mut f, "commit_ts_micros")?, "commit_ts_micros")?,
        first: position_from_avro(take(&mut f, "first")?)?,
        last: position_from_avro(take(&mut f, "last")?)?,
        topics,
    })
}

fn key_of(table: &TableSchema, row: Option<&Row>) -> Result<Vec<Value>, SchemaError> {
    let row =
        row.ok_or_else(|| SchemaError::malformed("event", "no row image to take the key from"))?;
    Ok(table
        .primary_key
        .iter()
        .map(|&i| row.0[i].clone())
        .collect())
}

#[cfg(test)]
fn row_to_avro(table: &TableSchema, row: &Row) -> Result<Avro, SchemaError> {
    if row.0.len() != table.columns.len() {
        return Err(SchemaError::malformed(
            format!("row of {}", table.table),
            format!("{} values for {} columns", row.0.len(), table.columns.len()),
        ));
    }
    let fields = table
        .columns
        .iter()
        .zip(&row.0)
        .map(|(c, v)| {
            let avro = match v {
                Value::Null | Value::Unchanged => Avro::Union(0, Box::new(Avro::Null)),
                v => Avro::Union(1, Box::new(value_to_avro(&c.name, &c.ty, v)?)),
            };
            Ok((sanitize(&c.name), avro))
        })
        .collect::<Result<Vec<_>, SchemaError>>()?;
    Ok(Avro::Record(fields))
}

#[cfg(test)]
fn opt_row(
    table: &TableSchema,
    value: Avro,
    unchanged: &[String],
) -> Result<Option<Row>, SchemaError> {
    let fields = match unwrap_union(value) {
        Avro::Null => return Ok(None),
        v => record_fields(v, "row")?,
    };
    if fields.len() != table.columns.len() {
        return Err(SchemaError::malformed(
            format!("row of {}", table.table),
            format!(
                "{} fields for {} columns",
                fields.len(),
                table.columns.len()
            ),
        ));
    }
    let values = table
        .columns
        .iter()
        .zip(fields)
        .map(|(c, (_, v))| match unwrap_union(v) {
            Avro::Null if unchanged.contains(&c.name) => Ok(Value::Unchanged),
            Avro::Null => Ok(Value::Null),
            v => value_from_avro(&c.name, &c.ty, v),
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(Row(values)))
}

fn mismatch(column: &str, value: &Value, ty: &ColumnType) -> SchemaError {
    SchemaError::TypeMismatch {
        column: column.into(),
        value: value.describe(),
        ty: ty.describe(),
    }
}

#[cfg(test)]
fn value_to_avro(column: &str, ty: &ColumnType, value: &Value) -> Result<Avro, SchemaError> {
    Ok(match (ty, value) {
        (ColumnType::Bool, Value::Bool(b)) => Avro::Boolean(*b),
        (ColumnType::Int16, Value::Int16(v)) => Avro::Int(*v as i32),
        (ColumnType::Int32, Value::Int32(v)) => Avro::Int(*v),
        (ColumnType::Int64, Value::Int64(v)) => Avro::Long(*v),
        (ColumnType::Float32, Value::Float32(v)) => Avro::Float(*v),
        (ColumnType::Float64, Value::Float64(v)) => Avro::Double(*v),
        (ColumnType::Numeric { .. }, Value::Numeric(s))
        | (ColumnType::Text | ColumnType::Other { .. }, Value::Text(s))
        | (ColumnType::Json { .. }, Value::Json(s))
        | (ColumnType::Enum { .. }, Value::Enum(s)) => Avro::String(s.clone()),
        (ColumnType::Bytes, Value::Bytes(b)) => Avro::Bytes(b.clone()),
        (ColumnType::Date, Value::Date(d)) => Avro::Date(*d),
        (ColumnType::Time, Value::Time(t)) => Avro::TimeMicros(*t),
        (ColumnType::Timestamp, Value::Timestamp(t)) => Avro::LocalTimestampMicros(*t),
        (ColumnType::TimestampTz, Value::TimestampTz(t)) => Avro::TimestampMicros(*t),
        (ColumnType::Interval, Value::Interval(i)) => Avro::Record(vec![
            ("months".into(), Avro::Int(i.months)),
            ("days".into(), Avro::Int(i.days)),
            ("micros".into(), Avro::Long(i.micros)),
        ]),
        (ColumnType::Uuid, Value::Uuid(u)) => Avro::Uuid(uuid::Uuid::from_bytes(*u)),
        (ColumnType::Array { element }, Value::Array(items)) => Avro::Array(
            items
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(Avro::Union(0, Box::new(Avro::Null))),
                    v => Ok(Avro::Union(1, Box::new(value_to_avro(column, element, v)?))),
                })
                .collect::<Result<_, SchemaError>>()?,
        ),
        (ty, v) => return Err(mismatch(column, v, ty)),
    })
}

fn value_from_avro(column: &str, ty: &ColumnType, value: Avro) -> Result<Value, SchemaError> {
    let wrong = |v: &Avro| {
        SchemaError::malformed(
            format!("column {column}"),
            format!("{v:?} for type {}", ty.describe()),
        )
    };
    Ok(match (ty, value) {
        (ColumnType::Bool, Avro::Boolean(b)) => Value::Bool(b),
        (ColumnType::Int16, Avro::Int(v)) => {
            Value::Int16(i16::try_from(v).map_err(|_| wrong(&Avro::Int(v)))?)
        }
        (ColumnType::Int32, Avro::Int(v)) => Value::Int32(v),
        (ColumnType::Int64, Avro::Long(v)) => Value::Int64(v),
        (ColumnType::Float32, Avro::Float(v)) => Value::Float32(v),
        (ColumnType::Float64, Avro::Double(v)) => Value::Float64(v),
        (ColumnType::Numeric { .. }, Avro::String(s)) => Value::Numeric(s),
        (ColumnType::Text | ColumnType::Other { .. }, Avro::String(s)) => Value::Text(s),
        (ColumnType::Json { .. }, Avro::String(s)) => Value::Json(s),
        (ColumnType::Enum { .. }, Avro::String(s)) => Value::Enum(s),
        (ColumnType::Bytes, Avro::Bytes(b)) => Value::Bytes(b),
        (ColumnType::Date, Avro::Date(d) | Avro::Int(d)) => Value::Date(d),
        (ColumnType::Time, Avro::TimeMicros(t) | Avro::Long(t)) => Value::Time(t),
        (ColumnType::Timestamp, Avro::LocalTimestampMicros(t) | Avro::Long(t)) => {
            Value::Timestamp(t)
        }
        (ColumnType::TimestampTz, Avro::TimestampMicros(t) | Avro::Long(t)) => {
            Value::TimestampTz(t)
        }
        (ColumnType::Interval, Avro::Record(fields)) => {
            let mut f = fields;
            Value::Interval(Interval {
                months: as_int(take(&mut f, "months")?, "interval.months")?,
                days: as_int(take(&mut f, "days")?, "interval.days")?,
                micros: as_long(take(&mut f, "micros")?, "interval.micros")?,
            })
        }
        (ColumnType::Uuid, Avro::Uuid(u)) => Value::Uuid(*u.as_bytes()),
        (ColumnType::Uuid, Avro::String(s)) => Value::Uuid(
            *uuid::Uuid::parse_str(&s)
                .map_err(|e| SchemaError::malformed(format!("column {column}"), e.to_string()))?
                .as_bytes(),
        ),
        (ColumnType::Array { element }, Avro::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|v| match unwrap_union(v) {
                    Avro::Null => Ok(Value::Null),
                    v => value_from_avro(column, element, v),
                })
                .collect::<Result<_, _>>()?,
        ),
        (_, v) => return Err(wrong(&v)),
    })
}

fn position_to_avro(p: &Position) -> Avro {
    match p {
        Position::Postgres(pg) => Avro::Record(vec![
            ("kind".into(), Avro::String("postgres".into())),
            (
                "lsn".into(),
                Avro::Union(1, Box::new(Avro::Long(pg.lsn as i64))),
            ),
            ("file".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("offset".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("seq".into(), Avro::Long(pg.seq as i64)),
        ]),
        Position::MySql(m) => Avro::Record(vec![
            ("kind".into(), Avro::String("mysql".into())),
            ("lsn".into(), Avro::Union(0, Box::new(Avro::Null))),
            (
                "file".into(),
                Avro::Union(1, Box::new(Avro::Long(i64::from(m.file)))),
            ),
            (
                "offset".into(),
                Avro::Union(1, Box::new(Avro::Long(m.offset as i64))),
            ),
            ("seq".into(), Avro::Long(m.seq as i64)),
        ]),
    }
}

fn position_from_avro(value: Avro) -> Result<Position, SchemaError> {
    let mut f = record_fields(value, "position")?;
    let kind = as_string(take(&mut f, "kind")?, "position.kind")?;
    let seq = as_long(take(&mut f, "seq")?, "position.seq")? as u64;
    match kind.as_str() {
        "postgres" => {
            let lsn = opt_u64(take(&mut f, "lsn")?, "position.lsn")?.ok_or_else(|| {
                SchemaError::malformed("position", "postgres position without lsn")
            })?;
            Ok(Position::pg(lsn, seq))
        }
        "mysql" => {
            let file = opt_u64(take(&mut f, "file")?, "position.file")?;
            let offset = opt_u64(take(&mut f, "offset")?, "position.offset")?;
            match (file.map(u32::try_from), offset) {
                (Some(Ok(file)), Some(offset)) => Ok(Position::mysql(file, offset, seq)),
                _ => Err(SchemaError::malformed(
                    "position",
                    "mysql position without a valid file and offset",
                )),
            }
        }
        other => Err(SchemaError::malformed(
            "position.kind",
            format!("unknown kind {other:?}"),
        )),
    }
}

fn opt_long(v: Option<u64>) -> Avro {
    match v {
        Some(v) => Avro::Union(1, Box::new(Avro::Long(v as i64))),
        None => Avro::Union(0, Box::new(Avro::Null)),
    }
}

fn opt_u64(v: Avro, what: &str) -> Result<Option<u64>, SchemaError> {
    match unwrap_union(v) {
        Avro::Null => Ok(None),
        Avro::Long(v) => Ok(Some(v as u64)),
        other => Err(bad(what, &other)),
    }
}

fn unwrap_union(v: Avro) -> Avro {
    match v {
        Avro::Union(_, inner) => *inner,
        v => v,
    }
}

fn record_fields(v: Avro, what: &str) -> Result<Vec<(String, Avro)>, SchemaError> {
    match v {
        Avro::Record(fields) => Ok(fields),
        other => Err(bad(what, &other)),
    }
}

fn take(fields: &mut [(String, Avro)], name: &str) -> Result<Avro, SchemaError> {
    fields
        .iter_mut()
        .find(|(n, _)| n == name)
        .map(|(_, v)| std::mem::replace(v, Avro::Null))
        .ok_or_else(|| SchemaError::malformed(name, "field missing"))
}

fn as_string(v: Avro, what: &str) -> Result<String, SchemaError> {
    match v {
        Avro::String(s) => Ok(s),
        other => Err(bad(what, &other)),
    }
}

fn as_long(v: Avro, what: &str) -> Result<i64, SchemaError> {
    match v {
        Avro::Long(v) => Ok(v),
        other => Err(bad(what, &other)),
    }
}

fn as_int(v: Avro, what: &str) -> Result<i32, SchemaError> {
    match v {
        Avro::Int(v) => Ok(v),
        other => Err(bad(what, &other)),
    }
}

fn bad(what: &str, v: &Avro) -> SchemaError {
    let mut s = format!("{v:?}");
    s.truncate(80);
    SchemaError::malformed(what, format!("unexpected {s}"))
}
