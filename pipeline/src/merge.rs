//! Conflict resolution between sources: one row's state as a CRDT, merged the same way
//! whatever order the sources' changes arrive in.
//!
//! Every change carries its source, its source position and a hybrid-logical-clock stamp
//! (see `tributary_schemas::Hlc`); a change is ordered against another by
//! `(priority, stamp, source)`, where priority is 1 for the table's priority source under
//! `source_priority` and 0 otherwise. Each source's changes arrive in that source's
//! order (the transport keeps it); a change at or below the last position taken from its
//! source for the row is a duplicate and changes nothing.
//!
//! Per column strategy:
//! - `lww`: last writer wins, per column (`crdts::LWWReg`). An update writes only the
//!   columns it changed (before and after images differ), so concurrent edits of different
//!   columns from different sources both survive.
//! - `source_priority`: as `lww`, but the priority source's latest value wins over any
//!   other source's.
//! - `counter` (integer columns): the first insert or snapshot read (in merge order) sets
//!   the base, so a source snapshotting a row again, or two sources snapshotting the same
//!   row, do not count it twice; every update adds its `after − before` to its source's
//!   share of a PN-counter (`crdts::PNCounter`), so concurrent sales from two stores both
//!   count. The value is the base plus every source's share. (A row deleted and inserted
//!   again keeps its counted shares.)
//! - `set` (array columns): an element set, last writer wins per element (an add and a
//!   remove of the same order: the add wins): an update's added elements are added and its
//!   removed ones removed, each with the change's order; an insert or read replaces the
//!   set as of its order (older elements go, newer adds stay).
//!
//! Updates need the before image for `counter` and `set` columns, and for `lww` to see
//! which columns changed (without it every column counts as written): MySQL's ROW format
//! with `binlog_row_image = FULL` gives it; PostgreSQL needs `REPLICA IDENTITY FULL`.
//!
//! Deletes: under `update_wins` the row exists when its latest insert, read or update is
//! newer than its latest delete (an update after a delete re-inserts it); under
//! `delete_wins` only an insert or read newer than the delete brings it back.

use crdts::{CmRDT, LWWReg, PNCounter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tributary_schemas::{Op, Position, Row, Stamp, Value};

/// How one column's concurrent changes merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Last writer wins.
    #[default]
    Lww,
    /// The priority source wins, then last writer.
    SourcePriority,
    /// Deltas of every source add up.
    Counter,
    /// Add-wins element set.
    Set,
    /// Last writer wins meanwhile; an edit made without seeing another source's
    /// concurrent edit of the column waits in the conflict queue for a person to choose.
    Manual,
}

/// Whether a delete or a concurrent update wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletePolicy {
    /// An update newer than the delete re-inserts the row.
    #[default]
    UpdateWins,
    /// Only an insert newer than the delete brings the row back.
    DeleteWins,
}

/// How one table's rows merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePolicy {
    /// Per column, in column order.
    pub columns: Vec<Strategy>,
    /// Column names, in the same order; a row's state is kept by column name, so sources
    /// whose tables order their columns differently share it. (Unnamed columns are
    /// known by their index.)
    pub names: Vec<String>,
    /// Deletes against updates.
    pub delete: DeletePolicy,
    /// The source that wins `source_priority` columns.
    pub priority_source: Option<String>,
}

/// One change of one row, as the merge takes it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The source it comes from.
    pub source: &'a str,
    /// Its position in that source.
    pub position: Position,
    /// Its clock stamp.
    pub stamp: Stamp,
    /// Insert, update, delete or snapshot read.
    pub op: Op,
    /// The row before, when the source gives it.
    pub before: Option<&'a Row>,
    /// The row after (inserts, updates, reads).
    pub after: Option<&'a Row>,
}

/// A change that cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct MergeError {
    /// Index of the column concerned.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Order of a change: `(priority, stamp, source)`.
type Marker = (u8, Stamp, String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Cell {
    Register(Option<LWWReg<Value, Marker>>),
    Counter {
        base: Option<LWWReg<Value, Marker>>,
        deltas: PNCounter<String>,
    },
    /// Element (its JSON text, for a total order) → value, latest add, latest remove;
    /// and the latest insert or read, which removes every element added before it.
    Set {
        elements: BTreeMap<String, (Value, Option<Marker>, Option<Marker>)>,
        cleared: Option<Marker>,
    },
}

/// One row's merge state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowState {
    /// Per source, the last position taken.
    seen: BTreeMap<String, Position>,
    /// Per source, the last stamp given to its changes of this row: a source's clock that
    /// goes back, or several of its changes in one commit time (MySQL binlog times are in
    /// seconds), still order its changes in its own order.
    clocks: BTreeMap<String, Stamp>,
    /// Per column name.
    cells: BTreeMap<String, Cell>,
    /// Changes replayed from the dead-letter queue: they are older than what their
    /// sources delivered since, so `seen` cannot tell a repeat of them.
    #[serde(default)]
    replayed: Vec<(String, Position)>,
    upserted: Option<Marker>,
    inserted: Option<Marker>,
    deleted: Option<Marker>,
}

impl RowState {
    /// Takes `change` under `policy`; returns false for a duplicate. On error the state
    /// is unchanged.
    pub fn apply(&mut self, policy: &TablePolicy, change: &Change<'_>) -> Result<bool, MergeError> {
        if self
            .seen
            .get(change.source)
            .is_some_and(|p| *p >= change.position)
        {
            return Ok(false);
        }
        let mut next = self.clone();
        let stamp = match next.clocks.get(change.source) {
            Some(last) if *last >= change.stamp => Stamp {
                micros: last.micros,
                logical: last.logical.saturating_add(1),
            },
            _ => change.stamp,
        };
        next.clocks.insert(change.source.to_string(), stamp);
        next.take(policy, &Change { stamp, ..*change })?;
        next.seen.insert(change.source.to_string(), change.position);
        *self = next;
        Ok(true)
    }

    /// Whether no change was ever taken.
    pub fn is_new(&self) -> bool {
        self.seen.is_empty() && self.replayed.is_empty()
    }

    /// Takes `row` as the row's value before any change (older than every change), as a
    /// snapshot read would: for a row whose first change the merge meets is an update.
    pub fn seed(&mut self, policy: &TablePolicy, row: &Row) -> Result<(), MergeError> {
        let mut next = self.clone();
        next.take(
            policy,
            &Change {
                source: "",
                position: Position::pg(0, 0),
                stamp: Stamp {
                    micros: i64::MIN,
                    logical: 0,
                },
                op: Op::Read,
                before: None,
                after: Some(row),
            },
        )?;
        *self = next;
        Ok(())
    }

    /// Takes `change`, an older change replayed from the dead-letter queue after its
    /// source delivered later ones, at its own stamp (so newer values keep winning);
    /// returns false when it was replayed before. On error the state is unchanged.
    pub fn apply_replayed(
        &mut self,
        policy: &TablePolicy,
        change: &Change<'_>,
    ) -> Result<bool, MergeError> {
        let id = (change.source.to_string(), change.position);
        if self.replayed.contains(&id) {
            return Ok(false);
        }
        let mut next = self.clone();
        next.take(policy, change)?;
        next.replayed.push(id);
        *self = next;
        Ok(true)
    }

    fn take(&mut self, policy: &TablePolicy, change: &Change<'_>) -> Result<(), MergeError> {
        let marker = |strategy: Strategy| -> Marker {
            let first = strategy == Strategy::SourcePriority
                && policy.priority_source.as_deref() == Some(change.source);
            (u8::from(first), change.stamp, change.source.to_string())
        };
        let row_marker = marker(Strategy::Lww);
        let later = |slot: &mut Option<Marker>| {
            if slot.as_ref().is_none_or(|m| *m < row_marker) {
                *slot = Some(row_marker.clone());
            }
        };
        let after = match (change.op, change.after) {
            (Op::Delete, _) => {
                later(&mut self.deleted);
                return Ok(());
            }
            (Op::Truncate, _) => return Ok(()),
            (_, Some(after)) => after,
            (_, None) => return Ok(()),
        };
        let update = change.op == Op::Update;
        later(&mut self.upserted);
        if !update {
            later(&mut self.inserted);
        }
        for (i, strategy) in policy.columns.iter().enumerate() {
            let new = after.0.get(i).unwrap_or(&Value::Null);
            if matches!(new, Value::Unchanged) {
                continue;
            }
            // A value the source did not send is no before image.
            let old = change
                .before
                .and_then(|b| b.0.get(i))
                .filter(|v| !matches!(v, Value::Unchanged));
            let need_before = |what: &str| {
                MergeError {
                column: i,
                message: format!(
                    "a {what} column needs the update's before image (PostgreSQL: ALTER TABLE … REPLICA IDENTITY FULL)"
                ),
            }
            };
            let m = marker(*strategy);
            let cell = self
                .cells
                .entry(policy.name(i))
                .or_insert_with(|| match strategy {
                    Strategy::Lww | Strategy::SourcePriority | Strategy::Manual => {
                        Cell::Register(None)
                    }
                    Strategy::Counter => Cell::Counter {
                        base: None,
                        deltas: PNCounter::new(),
                    },
                    Strategy::Set => Cell::Set {
                        elements: BTreeMap::new(),
                        cleared: None,
                    },
                });
            match cell {
                Cell::Register(reg) => {
                    if update && old.is_some_and(|o| o == new) {
                        continue;
                    }
                    write(reg, new, m);
                }
                Cell::Counter { base, deltas } => {
                    if !update {
                        // The first base in merge order.
                        match base {
                            Some(r) if r.marker <= m => {}
                            _ => {
                                *base = Some(LWWReg {
                                    val: new.clone(),
                                    marker: m,
                                })
                            }
                        }
                        continue;
                    }
                    let old = old.ok_or_else(|| need_before("counter"))?;
                    let delta = integer(new, i)?.unwrap_or(0) - integer(old, i)?.unwrap_or(0);
                    let source = change.source.to_string();
                    if delta > 0 {
                        deltas.apply(deltas.inc_many(source, delta.unsigned_abs()));
                    } else if delta < 0 {
                        deltas.apply(deltas.dec_many(source, delta.unsigned_abs()));
                    }
                }
                Cell::Set { elements, cleared } => {
                    let now = set_items(new, i)?;
                    if !update && cleared.as_ref().is_none_or(|c| *c < m) {
                        *cleared = Some(m.clone());
                    }
                    let (added, removed): (Vec<&Value>, Vec<&Value>) = if update {
                        let was = set_items(old.ok_or_else(|| need_before("set"))?, i)?;
                        (
                            now.iter().filter(|v| !was.contains(v)).copied().collect(),
                            was.iter().filter(|v| !now.contains(v)).copied().collect(),
                        )
                    } else {
                        (now.clone(), Vec::new())
                    };
                    for (items, is_add) in [(added, true), (removed, false)] {
                        for v in items {
                            let key = serde_json::to_string(v).unwrap_or_default();
                            let entry = elements.entry(key).or_insert((v.clone(), None, None));
                            let slot = if is_add { &mut entry.1 } else { &mut entry.2 };
                            if slot.as_ref().is_none_or(|s| *s < m) {
                                *slot = Some(m.clone());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The source whose value a last-writer-wins column (`lww`, `source_priority`,
    /// `manual`) holds, if any.
    pub fn writer(&self, policy: &TablePolicy, column: usize) -> Option<&str> {
        match self.cells.get(&policy.name(column))? {
            Cell::Register(Some(reg)) => Some(reg.marker.2.as_str()),
            _ => None,
        }
    }

    /// The merged row under `policy`, `None` when the row does not exist.
    pub fn row(&self, policy: &TablePolicy) -> Option<Row> {
        let alive = match (&self.deleted, policy.delete) {
            (None, _) => self.upserted.is_some(),
            (Some(d), DeletePolicy::UpdateWins) => self.upserted.as_ref().is_some_and(|u| u > d),
            (Some(d), DeletePolicy::DeleteWins) => self.inserted.as_ref().is_some_and(|u| u > d),
        };
        if !alive {
            return None;
        }
        let values = (0..policy.columns.len())
            .map(|i| match self.cells.get(&policy.name(i)) {
                None | Some(Cell::Register(None)) => Value::Null,
                Some(Cell::Register(Some(reg))) => reg.val.clone(),
                Some(Cell::Counter { base, deltas }) => {
                    let base = base.as_ref().map(|r| &r.val).unwrap_or(&Value::Null);
                    let sum: i128 = deltas.read().try_into().unwrap_or(i128::MAX);
                    match base {
                        Value::Int16(v) => Value::Int16(clamp(i128::from(*v) + sum)),
                        Value::Int32(v) => Value::Int32(clamp(i128::from(*v) + sum)),
                        Value::Int64(v) => Value::Int64(clamp(i128::from(*v) + sum)),
                        Value::Null if sum != 0 => Value::Int64(clamp(sum)),
                        other => other.clone(),
                    }
                }
                Some(Cell::Set { elements, cleared }) => Value::Array(
                    elements
                        .values()
                        .filter(|(_, add, remove)| {
                            add.as_ref().is_some_and(|a| {
                                remove.as_ref().is_none_or(|r| a >= r)
                                    && cleared.as_ref().is_none_or(|c| a >= c)
                            })
                        })
                        .map(|(v, _, _)| v.clone())
                        .collect(),
                ),
            })
            .collect();
        Some(Row(values))
    }
}

impl TablePolicy {
    fn name(&self, column: usize) -> String {
        self.names
            .get(column)
            .cloned()
            .unwrap_or_else(|| format!("#{column}"))
    }
}

fn write(reg: &mut Option<LWWReg<Value, Marker>>, value: &Value, marker: Marker) {
    match reg {
        Some(r) => r.update(value.clone(), marker),
        None => {
            *reg = Some(LWWReg {
                val: value.clone(),
                marker,
            })
        }
    }
}

fn integer(value: &Value, column: usize) -> Result<Option<i64>, MergeError> {
    match value {
        Value::Null => Ok(None),
        Value::Int16(v) => Ok(Some(i64::from(*v))),
        Value::Int32(v) => Ok(Some(i64::from(*v))),
        Value::Int64(v) => Ok(Some(*v)),
        other => Err(MergeError {
            column,
            message: format!(
                "a counter column must hold integers, not {}",
                other.describe()
            ),
        }),
    }
}

fn set_items(value: &Value, column: usize) -> Result<Vec<&Value>, MergeError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items.iter().collect()),
        other => Err(MergeError {
            column,
            message: format!("a set column must hold arrays, not {}", other.describe()),
        }),
    }
}

fn clamp<T: TryFrom<i128> + Bounded>(v: i128) -> T {
    T::try_from(v).unwrap_or(if v < 0 { T::MIN } else { T::MAX })
}

/// The bounds a counter's value is clamped to.
trait Bounded {
    const MIN: Self;
    const MAX: Self;
}

impl Bounded for i16 {
    const MIN: i16 = i16::MIN;
    const MAX: i16 = i16::MAX;
}

impl Bounded for i32 {
    const MIN: i32 = i32::MIN;
    const MAX: i32 = i32::MAX;
}

impl Bounded for i64 {
    const MIN: i64 = i64::MIN;
    const MAX: i64 = i64::MAX;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert_eq, prop_oneof, proptest, Just};
    use proptest::strategy::Strategy as _;

    fn stamp(micros: i64) -> Stamp {
        Stamp { micros, logical: 0 }
    }

    fn row(values: &[Value]) -> Row {
        Row(values.to_vec())
    }

    #[test]
    fn concurrent_edits_of_different_columns_both_survive() {
        let policy = TablePolicy {
            columns: vec![Strategy::Lww, Strategy::Lww, Strategy::Lww],
            ..TablePolicy::default()
        };
        let base = row(&[
            Value::Int32(1),
            Value::Text("aspirin".into()),
            Value::Int32(5),
        ]);
        let renamed = row(&[
            Value::Int32(1),
            Value::Text("aspirin 500".into()),
            Value::Int32(5),
        ]);
        let repriced = row(&[
            Value::Int32(1),
            Value::Text("aspirin".into()),
            Value::Int32(7),
        ]);
        let changes = [
            Change {
                source: "hq",
                position: Position::pg(1, 1),
                stamp: stamp(10),
                op: Op::Insert,
                before: None,
                after: Some(&base),
            },
            Change {
                source: "hq",
                position: Position::pg(2, 1),
                stamp: stamp(20),
                op: Op::Update,
                before: Some(&base),
                after: Some(&renamed),
            },
            Change {
                source: "store",
                position: Position::mysql(1, 4, 1),
                stamp: stamp(30),
                op: Op::Update,
                before: Some(&base),
                after: Some(&repriced),
            },
        ];
        // Every interleaving that keeps each source's own order.
        for order in [[0, 1, 2], [0, 2, 1], [2, 0, 1]] {
            let mut state = RowState::default();
            for i in order {
                state.apply(&policy, &changes[i]).unwrap();
            }
            assert_eq!(
                state.row(&policy),
                Some(row(&[
                    Value::Int32(1),
                    Value::Text("aspirin 500".into()),
                    Value::Int32(7)
                ])),
                "{order:?}"
            );
        }
    }

    #[test]
    fn counters_and_sets_need_the_before_image() {
        for (strategy, value) in [
            (Strategy::Counter, Value::Int32(3)),
            (Strategy::Set, Value::Array(vec![Value::Text("rx".into())])),
        ] {
            let policy = TablePolicy {
                columns: vec![strategy],
                ..TablePolicy::default()
            };
            let after = row(&[value]);
            let mut state = RowState::default();
            let err = state
                .apply(
                    &policy,
                    &Change {
                        source: "hq",
                        position: Position::pg(1, 1),
                        stamp: stamp(1),
                        op: Op::Update,
                        before: None,
                        after: Some(&after),
                    },
                )
                .unwrap_err();
            assert!(err.message.contains("REPLICA IDENTITY FULL"), "{err}");
            assert_eq!(state, RowState::default());
        }
    }

    /// What one source does to the row, in its own order: the images are that source's
    /// own view of the row (its value before and after its change).
    #[derive(Debug, Clone)]
    enum Action {
        Insert {
            qty: i32,
            price: i32,
            tags: Vec<u8>,
        },
        Update {
            qty_delta: i32,
            price: Option<i32>,
            add: Option<u8>,
            remove: Option<u8>,
        },
        Delete,
    }

    /// A source's own row `(qty, price, tags)` as its images show it (tags sorted, once).
    fn image(l: &(i32, i32, Vec<u8>)) -> Row {
        let mut tags = l.2.clone();
        tags.sort_unstable();
        tags.dedup();
        row(&[
            Value::Int32(l.0),
            Value::Int32(l.1),
            Value::Array(
                tags.into_iter()
                    .map(|t| Value::Int16(i16::from(t)))
                    .collect(),
            ),
        ])
    }

    /// A source's own update of its row: quantity by `delta`, maybe a new price, a tag
    /// added and one removed (unless it is the one added).
    fn edit(
        l: &mut (i32, i32, Vec<u8>),
        delta: i32,
        price: Option<i32>,
        add: Option<u8>,
        remove: Option<u8>,
    ) {
        l.0 += delta;
        if let Some(p) = price {
            l.1 = p;
        }
        l.2.extend(add);
        l.2.retain(|t| Some(*t) != remove || add == Some(*t));
    }

    fn action() -> impl proptest::strategy::Strategy<Value = Action> {
        prop_oneof![
            1 => (0..100i32, 1..50i32, proptest::collection::vec(0..4u8, 0..3))
                .prop_map(|(qty, price, tags)| Action::Insert { qty, price, tags }),
            4 => (-5..5i32, proptest::option::of(1..50i32), proptest::option::of(0..4u8), proptest::option::of(0..4u8))
                .prop_map(|(qty_delta, price, add, remove)| Action::Update { qty_delta, price, add, remove }),
            1 => Just(Action::Delete),
        ]
    }

    /// One source's events as `(position, stamp, op, before, after)`.
    type Events = Vec<(Position, Stamp, Op, Option<Row>, Option<Row>)>;

    fn events(source: usize, actions: &[Action], times: &[i64]) -> (Events, i64) {
        let mut local: Option<(i32, i32, Vec<u8>)> = None;
        let mut out = Vec::new();
        let mut deltas = 0i64;
        let mut clock = tributary_schemas::Hlc::default();
        for (n, (a, t)) in actions.iter().zip(times).enumerate() {
            let position = Position::mysql(source as u32, n as u64 + 1, 1);
            let stamp = clock.tick(*t);
            match (a, &local) {
                (Action::Insert { qty, price, tags }, _) => {
                    let new = (*qty, *price, tags.clone());
                    out.push((position, stamp, Op::Insert, None, Some(image(&new))));
                    local = Some(new);
                }
                (
                    Action::Update {
                        qty_delta,
                        price,
                        add,
                        remove,
                    },
                    Some(old),
                ) => {
                    let mut new = old.clone();
                    edit(&mut new, *qty_delta, *price, *add, *remove);
                    deltas += i64::from(*qty_delta);
                    out.push((
                        position,
                        stamp,
                        Op::Update,
                        Some(image(old)),
                        Some(image(&new)),
                    ));
                    local = Some(new);
                }
                (Action::Delete, Some(old)) => {
                    out.push((position, stamp, Op::Delete, Some(image(old)), None));
                    local = None;
                }
                _ => {}
            }
        }
        (out, deltas)
    }

    fn policy(delete: DeletePolicy, price: Strategy) -> TablePolicy {
        TablePolicy {
            columns: vec![Strategy::Counter, price, Strategy::Set],
            delete,
            priority_source: Some("s1".into()),
            names: Vec::new(),
        }
    }

    /// Merges the sources' events in the order `picks` gives (each pick takes the next
    /// event of source `pick % 3`, or repeats one already taken when `pick >= 3`).
    fn merge(policy: &TablePolicy, sources: &[Events], picks: &[u8]) -> (RowState, usize) {
        const NAMES: [&str; 3] = ["s0", "s1", "s2"];
        let mut next = [0usize; 3];
        let mut state = RowState::default();
        let mut taken = 0;
        let apply = |state: &mut RowState, s: usize, i: usize| {
            let (position, stamp, op, before, after) = &sources[s][i];
            state
                .apply(
                    policy,
                    &Change {
                        source: NAMES[s],
                        position: *position,
                        stamp: *stamp,
                        op: *op,
                        before: before.as_ref(),
                        after: after.as_ref(),
                    },
                )
                .unwrap()
        };
        for pick in picks {
            let s = usize::from(*pick % 3);
            if *pick >= 3 && next[s] > 0 {
                // A duplicate delivery of an event already taken.
                let i = usize::from(*pick) % next[s];
                assert!(!apply(&mut state, s, i), "a duplicate changes nothing");
            } else if next[s] < sources[s].len() {
                apply(&mut state, s, next[s]);
                next[s] += 1;
                taken += 1;
            }
        }
        // Whatever the picks left, in source order.
        for s in 0..3 {
            while next[s] < sources[s].len() {
                apply(&mut state, s, next[s]);
                next[s] += 1;
                taken += 1;
            }
        }
        (state, taken)
    }

    proptest! {
            /// Three sources, each editing the row in its own order; any interleaving, with
            /// duplicates, merges to the same row, and the counter is the base plus every
            /// source's deltas.
            #[test]
            fn every_interleaving_merges_to_the_same_row(
                actions in proptest::collection::vec(proptest::collection::vec(action(), 1..8), 3),
                times in proptest::collection::vec(proptest::collection::vec(0..20i64, 8), 3),
                a in proptest::collection::vec(0..6u8, 0..40),
                b in proptest::collection::vec(0..6u8, 0..40),
                delete_wins in any::<bool>(),
                priority in any::<bool>(),
            ) {
                let delete = if delete_wins { DeletePolicy::DeleteWins } else { DeletePolicy::UpdateWins };
                let price = if priority { Strategy::SourcePriority } else { Strategy::Lww };
                let policy = policy(delete, price);
                let mut all_deltas = 0;
                let sources: Vec<Events> = (0..3)
                    .map(|s| {
                        let (e, d) = events(s, &actions[s], &times[s]);
                        all_deltas += d;
                        e
                    })
                    .collect();
                let (first, n1) = merge(&policy, &sources, &a);
                let (second, n2) = merge(&policy, &sources, &b);
                prop_assert_eq!(n1, n2);
                prop_assert_eq!(first.row(&policy), second.row(&policy));
                // Only the base and the deltas make the counter: the base is the first
                // insert's quantity in merge order.
                if let Some(merged) = first.row(&policy) {
                    let base = sources
                        .iter()
                        .enumerate()
                        .flat_map(|(s, e)| e.iter().map(move |ev| (s, ev)))
                        .filter(|(_, (_, _, op, _, _))| *op == Op::Insert)
                        .min_by_key(|(s, (_, stamp, _, _, _))| (*stamp, ["s0", "s1", "s2"][*s]))
                        .and_then(|(_, (_, _, _, _, after))| after.as_ref())
                        .map(|r| match r.0[0] { Value::Int32(q) => i64::from(q), _ => 0 });
                    if let (Some(base), Value::Int32(qty)) = (base, &merged.0[0]) {
                        prop_assert_eq!(i64::from(*qty), base + all_deltas);
                    }
                }
            }

            /// One source alone (an insert, then updates and snapshot reads of its own row):
            /// the merged row is that source's row.
            #[test]
            fn one_source_merges_to_its_own_row(
                steps in proptest::collection::vec((any::<bool>(), -5..5i32, proptest::option::of(1..50i32), proptest::option::of(0..4u8), proptest::option::of(0..4u8)), 0..12),
                priority in any::<bool>(),
            ) {
                let price = if priority { Strategy::SourcePriority } else { Strategy::Lww };
                let policy = policy(DeletePolicy::UpdateWins, price);
                let mut local = (10, 5, vec![1u8]);
                let mut state = RowState::default();
                let first = image(&local);
                state.apply(&policy, &Change {
                    source: "s1",
                    position: Position::pg(1, 1),
                    stamp: stamp(1),
                    op: Op::Insert,
                    before: None,
                    after: Some(&first),
                }).unwrap();
                for (n, (reread, delta, price, add, remove)) in steps.iter().enumerate() {
                    let before = image(&local);
                    let (op, after) = if *reread {
                        (Op::Read, before.clone())
                    } else {
                        edit(&mut local, *delta, *price, *add, *remove);
                        (Op::Update, image(&local))
                    };
                    state.apply(&policy, &Change {
                        source: "s1",
                        position: Position::pg(n as u64 + 2, 1),
                        stamp: stamp(n as i64 + 2),
                        op,
                        before: (op == Op::Update).then_some(&before),
                        after: Some(&after),
                    }).unwrap();
                }
                prop_assert_eq!(state.row(&policy), Some(image(&local)));
            }
    }
}
