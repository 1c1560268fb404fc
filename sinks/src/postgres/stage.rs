//! Turning a table's events into executable steps, without touching the database.
//!
//! [`Steps`] folds events into a [`Batch`] until it is full or a barrier comes, then
//! encodes the batch as COPY text for the staging table ([`Staged`]). Each staging row
//! carries an operation code in its last column: [`OP_UPSERT`] for full rows,
//! [`OP_DELETE`] for keys to delete (other columns NULL), and from [`FIRST_PATCH_GROUP`]
//! one code per distinct set of sent columns for partial rows. A batch of upserts only
//! leaves the code out (the column's default is [`OP_UPSERT`]), so that the same text
//! fits the target table, which a batch of new rows only is copied into directly.
//!
//! Because this is CPU work only, the writer runs it for the next batch while the server
//! executes the statements of the current one.

use crate::error::SinkError;
use crate::plan::{Batch, Effect, Folded};
use crate::postgres::copy::CopyWriter;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use tributary_schemas::{ChangeEvent, TableSchema, Value};

/// Operation code of a full row to upsert.
pub(crate) const OP_UPSERT: i32 = 0;
/// Operation code of a key to delete.
pub(crate) const OP_DELETE: i32 = 1;
/// Operation code of the first group of partial rows.
pub(crate) const FIRST_PATCH_GROUP: i32 = 2;
/// Bytes of COPY data per message.
const CHUNK_BYTES: usize = 256 * 1024;
/// Estimated bytes of row data after which a batch is flushed regardless of its row count.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// A batch encoded for the staging table.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// COPY text, in messages of about [`CHUNK_BYTES`].
    pub chunks: Vec<Bytes>,
    /// Rows to upsert.
    pub upserts: usize,
    /// Keys to delete.
    pub deletes: usize,
    /// Partial rows.
    pub patches: usize,
    /// Sent-column mask and operation code of each group of partial rows.
    pub patch_groups: Vec<(Vec<bool>, i32)>,
    /// Whether every row is an upsert of a key whose first event in the batch made a
    /// new row, so the rows may be copied straight into the target.
    pub fresh: bool,
}

impl Staged {
    /// Whether the rows carry no operation code: every one is an upsert.
    pub(crate) fn upserts_only(&self) -> bool {
        self.deletes == 0 && self.patches == 0
    }
}

/// What the writer must do next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Load the staged batch and run its statements.
    Flush(Staged),
    /// Empty the target table.
    Truncate,
    /// Update the row keyed `old_key` in place with the sent columns of `row`.
    Rekey {
        /// The key the row has in the target.
        old_key: Vec<Value>,
        /// The new image, with [`Value::Unchanged`] for unsent columns.
        row: Vec<Value>,
    },
}

/// The steps of one `apply` call, produced one at a time.
pub(crate) struct Steps<'a> {
    schema: &'a TableSchema,
    events: std::slice::Iter<'a, ChangeEvent>,
    batch: Batch<'a>,
    max_rows: usize,
    /// A barrier found while a batch was pending; it follows that batch's flush.
    barrier: Option<Step>,
}

impl<'a> Steps<'a> {
    /// Steps for `events`, with at most `max_rows` keys per batch.
    pub(crate) fn new(schema: &'a TableSchema, events: &'a [ChangeEvent], max_rows: usize) -> Self {
        Steps {
            schema,
            events: events.iter(),
            batch: Batch::default(),
            max_rows,
            barrier: None,
        }
    }

    /// The next step, or `None` when every event is accounted for.
    pub(crate) fn next_step(&mut self) -> Result<Option<Step>, SinkError> {
        if let Some(barrier) = self.barrier.take() {
            return Ok(Some(barrier));
        }
        for event in self.events.by_ref() {
            match self.batch.fold(self.schema, event)? {
                Folded::Batched => {
                    if self.batch.is_full(self.max_rows, MAX_BATCH_BYTES) {
                        return Ok(Some(self.flush()));
                    }
                }
                // The fold discarded the pending batch: the truncate supersedes it.
                Folded::Truncate => return Ok(Some(Step::Truncate)),
                Folded::Rekey { old_key, row } => {
                    let rekey = Step::Rekey { old_key, row };
                    if self.batch.is_empty() {
                        return Ok(Some(rekey));
                    }
                    self.barrier = Some(rekey);
                    return Ok(Some(self.flush()));
                }
            }
        }
        Ok((!self.batch.is_empty()).then(|| self.flush()))
    }

    /// Encodes and empties the pending batch.
    fn flush(&mut self) -> Step {
        let staged = encode(self.schema, &self.batch);
        self.batch.clear();
        Step::Flush(staged)
    }
}

/// Encodes `batch` as staging rows.
fn encode(schema: &TableSchema, batch: &Batch<'_>) -> Staged {
    let upserts_only = batch
        .entries()
        .iter()
        .all(|e| matches!(e.effect, Effect::Upsert(_)));
    let mut staged = Staged {
        fresh: upserts_only && batch.entries().iter().all(|e| e.fresh),
        ..Staged::default()
    };
    // No operation code when every row is an upsert.
    let code = |op: i32| (!upserts_only).then_some(op);
    let mut groups: HashMap<Vec<bool>, i32> = HashMap::new();
    let mut writer = CopyWriter::default();
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 64 * 1024);
    let width = schema.columns.len();
    for entry in batch.entries() {
        match &entry.effect {
            Effect::Upsert(row) => {
                staged.upserts += 1;
                writer.row(&mut buf, row.iter().map(Some), code(OP_UPSERT));
            }
            Effect::Delete => {
                staged.deletes += 1;
                let mut fields: Vec<Option<&Value>> = vec![None; width];
                for (&i, value) in schema.primary_key.iter().zip(&entry.key) {
                    fields[i] = Some(value);
                }
                writer.row(&mut buf, fields, code(OP_DELETE));
            }
            Effect::Patch(row) => {
                staged.patches += 1;
                let mask: Vec<bool> = row.iter().map(|v| !matches!(v, Value::Unchanged)).collect();
                let next = FIRST_PATCH_GROUP + groups.len() as i32;
                let group = *groups.entry(mask).or_insert(next);
                writer.row(&mut buf, row.iter().map(Some), code(group));
            }
        }
        if buf.len() >= CHUNK_BYTES {
            staged.chunks.push(buf.split().freeze());
        }
    }
    if !buf.is_empty() {
        staged.chunks.push(buf.freeze());
    }
    staged.patch_groups = groups.into_iter().collect();
    staged.patch_groups.sort_by_key(|(_, code)| *code);
    staged
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_schemas::{Column, ColumnType, Op, Position, Row, TableId, TxMeta};

    fn schema() -> TableSchema {
        let col = |name: &str| Column {
            name: name.into(),
            ty: ColumnType::Int32,
            source_type: "integer".into(),
            nullable: true,
            missing: None,
        };
        TableSchema {
            table: TableId::new("public", "t"),
            columns: vec![col("id"), col("a"), col("b")],
            primary_key: vec![0],
            version: 1,
        }
    }

    fn event(op: Op, id: i32, after: Option<Vec<Value>>) -> ChangeEvent {
        ChangeEvent {
            source: "src".into(),
            table: TableId::new("public", "t"),
            schema_version: 1,
            op,
            key: vec![Value::Int32(id)],
            before: None,
            after: after.map(Row),
            position: Position::pg(1, 1),
            tx: TxMeta {
                id: None,
                commit_ts_micros: 0,
                first: Position::pg(1, 1),
            },
            origin: None,
        }
    }

    fn text(step: &Step) -> String {
        match step {
            Step::Flush(staged) => staged
                .chunks
                .iter()
                .map(|c| std::str::from_utf8(c).unwrap().to_string())
                .collect(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn batches_encode_operation_codes_and_barriers_split_them() {
        let i = |n| Value::Int32(n);
        let events = vec![
            event(Op::Insert, 1, Some(vec![i(1), i(10), i(100)])),
            event(Op::Update, 2, Some(vec![i(2), i(20), Value::Unchanged])),
            event(Op::Update, 3, Some(vec![i(3), Value::Unchanged, i(300)])),
            event(Op::Delete, 4, None),
            event(Op::Truncate, 0, None),
            event(Op::Insert, 5, Some(vec![i(5), i(50), i(500)])),
            event(Op::Insert, 6, Some(vec![i(6), i(60), i(600)])),
        ];
        let schema = schema();
        let mut steps = Steps::new(&schema, &events, 1);
        // Batches of one key: every event is its own flush, the truncate its own step.
        let mut all = Vec::new();
        while let Some(step) = steps.next_step().unwrap() {
            all.push(text(&step));
        }
        assert_eq!(
            all,
            vec![
                "1\t10\t100\n",
                "2\t20\t\\N\t2\n",
                "3\t\\N\t300\t2\n",
                "4\t\\N\t\\N\t1\n",
                "Truncate",
                "5\t50\t500\n",
                "6\t60\t600\n",
            ]
        );

        let mut steps = Steps::new(&schema, &events[..4], 100);
        let Some(Step::Flush(staged)) = steps.next_step().unwrap() else {
            panic!("expected one flush");
        };
        assert_eq!((staged.upserts, staged.deletes, staged.patches), (1, 1, 2));
        assert!(!staged.upserts_only() && !staged.fresh);
        assert_eq!(
            staged.patch_groups,
            vec![(vec![true, true, false], 2), (vec![true, false, true], 3)]
        );
        assert!(steps.next_step().unwrap().is_none());
    }

    #[test]
    fn only_batches_of_new_rows_may_skip_the_staging_table() {
        let i = |n| Value::Int32(n);
        let full = |n| Some(vec![i(n), i(n), i(n)]);
        let staged = |events: &[ChangeEvent]| {
            let schema = schema();
            let mut steps = Steps::new(&schema, events, 100);
            let Some(Step::Flush(staged)) = steps.next_step().unwrap() else {
                panic!("expected one flush");
            };
            (staged.upserts_only(), staged.fresh)
        };
        // Inserted, then updated in the same batch: still a row the target lacks.
        let new_rows = [
            event(Op::Insert, 1, full(1)),
            event(Op::Update, 1, Some(vec![i(1), i(5), i(5)])),
            event(Op::Read, 2, full(2)),
        ];
        assert_eq!(staged(&new_rows), (true, true));
        // A full-row update of a row from before the batch: an upsert, not a new row.
        let updated = [event(Op::Insert, 1, full(1)), event(Op::Update, 2, full(2))];
        assert_eq!(staged(&updated), (true, false));
        // Deleted, then inserted again: the target may still hold the old row.
        let reinserted = [event(Op::Delete, 1, None), event(Op::Insert, 1, full(1))];
        assert_eq!(staged(&reinserted), (true, false));
        // Inserted, then deleted: a delete in the batch.
        let gone = [event(Op::Insert, 1, full(1)), event(Op::Delete, 1, None)];
        assert_eq!(staged(&gone), (false, false));
    }
}
