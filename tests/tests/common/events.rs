//! Change events for sink tests: a sample table and a builder with increasing positions.

#![allow(dead_code)] // each test file uses a part

use tributary_schemas::{
    ChangeEvent, Column, ColumnType, Op, Position, Row, TableId, TableSchema, TxMeta, Value,
};

/// The source name the events carry.
pub const SOURCE: &str = "src";

pub fn column(name: &str, ty: ColumnType, source_type: &str, nullable: bool) -> Column {
    Column {
        name: name.into(),
        ty,
        source_type: source_type.into(),
        nullable,
        missing: None,
    }
}

/// `public.docs (id bigint key, name text not null, doc text, score double precision)`.
pub fn docs_schema(version: u32) -> TableSchema {
    let mut columns = vec![
        column("id", ColumnType::Int64, "bigint", false),
        column("name", ColumnType::Text, "character varying(40)", false),
        column("doc", ColumnType::Text, "text", true),
        column("score", ColumnType::Float64, "double precision", true),
    ];
    if version >= 2 {
        columns.push(column("tag", ColumnType::Text, "text", true));
    }
    TableSchema {
        table: TableId::new("public", "docs"),
        columns,
        primary_key: vec![0],
        version,
    }
}

/// Builds events for one table with increasing positions.
pub struct Events {
    schema: TableSchema,
    seq: u64,
}

impl Events {
    pub fn new(schema: &TableSchema) -> Self {
        Events {
            schema: schema.clone(),
            seq: 0,
        }
    }

    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.schema
            .primary_key
            .iter()
            .map(|&i| row[i].clone())
            .collect()
    }

    pub fn event(
        &mut self,
        op: Op,
        key: Vec<Value>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> ChangeEvent {
        self.seq += 1;
        ChangeEvent {
            source: SOURCE.into(),
            table: self.schema.table.clone(),
            schema_version: self.schema.version,
            op,
            key,
            before: before.map(Row),
            after: after.map(Row),
            position: Position::pg(100, self.seq),
            tx: TxMeta {
                id: Some(1),
                commit_ts_micros: 0,
                first: Position::pg(100, 1),
            },
            origin: None,
        }
    }

    pub fn insert(&mut self, row: Vec<Value>) -> ChangeEvent {
        let key = self.key_of(&row);
        self.event(Op::Insert, key, None, Some(row))
    }

    pub fn update(&mut self, row: Vec<Value>) -> ChangeEvent {
        let key = self.key_of(&row);
        self.event(Op::Update, key, None, Some(row))
    }

    /// An update that moves the row keyed `old_key`; `before` holds only the old key, as
    /// pgoutput sends it.
    pub fn rekey(&mut self, old_key: Vec<Value>, row: Vec<Value>) -> ChangeEvent {
        let mut before = vec![Value::Null; self.schema.columns.len()];
        for (&i, v) in self.schema.primary_key.iter().zip(&old_key) {
            before[i] = v.clone();
        }
        let key = self.key_of(&row);
        self.event(Op::Update, key, Some(before), Some(row))
    }

    pub fn delete(&mut self, key: Vec<Value>) -> ChangeEvent {
        self.event(Op::Delete, key, None, None)
    }

    pub fn truncate(&mut self) -> ChangeEvent {
        self.event(Op::Truncate, vec![], None, None)
    }
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn doc_row(id: i64, name: &str, doc: Option<&str>, score: f64) -> Vec<Value> {
    vec![
        Value::Int64(id),
        text(name),
        doc.map_or(Value::Unchanged, text),
        Value::Float64(score),
    ]
}

/// Expected rows as strings.
pub fn expect(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect()
}
