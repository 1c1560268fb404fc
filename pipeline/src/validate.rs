//! Business rules checked on every change event before it is applied.
//!
//! A rule is a CEL expression (Common Expression Language, evaluated by the `cel` crate)
//! over one table's columns, e.g. `quantity >= 0`, `price > 0 && price < 100000` or
//! `expiry_date > manufacture_date`. Each column is a variable holding the value of the
//! row the event leaves behind (`after`); deletes and truncates leave no row and are not
//! checked. `op` holds the operation (`"insert"`, `"update"`, `"read"` for snapshot rows).
//!
//! Values become CEL values as follows: integers `int`; floats and exact decimals
//! `double` (a decimal beyond a double's precision is rounded for the check only); text,
//! enum labels, JSON documents and UUIDs `string`; binary `bytes`; dates (at midnight
//! UTC) and timestamps `timestamp`; times of day `duration` since midnight; intervals
//! `duration` (a month counted as 30 days); arrays `list`; NULL, and a value the source
//! did not send because it did not change, `null`. Integers and doubles compare with each
//! other directly, so `price > 0` works for a decimal price.
//!
//! A rule that does not hold sends the event where its `on_fail` says: `dead_letter` (the
//! default: into the dead-letter file with the rule and the reason, and the rest of its
//! transaction applies), `skip` (a warning, and the event is dropped), or `halt` (the
//! pipeline stops with an error before the event; once the rule is fixed, a restart reads
//! it again). A rule that the row's values make fail to evaluate (CEL refuses `null >= 0`:
//! write `quantity == null || quantity >= 0` to let NULL pass; a NaN; an overflow) rejects
//! the event the same way. A rule reading a value the source did not send (unchanged
//! TOAST) is not checked. A rule for a table pattern (`schema.*`, `*`) applies to the
//! tables that have its columns; a rule for one table naming a column it lacks, or giving
//! something other than true or false, is a configuration error and halts. A column named
//! `op` hides the `op` variable. Dead-letter entries are written as events are read, so a
//! transaction read again after a crash or a halt may add its entries again.

use crate::error::PipelineError;
use cel::{Context, Program};
use serde::Deserialize;
use tributary_schemas::{ChangeEvent, Op, TableSchema, Value};

/// One rule as configured (`[[rules]]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The tables it applies to: `schema.table`, `schema.*` or `*`.
    pub table: String,
    /// The CEL expression; the event is valid when it gives `true`.
    pub check: String,
    /// What happens to an event it rejects.
    #[serde(default)]
    pub on_fail: OnFail,
    /// A name for messages and dead letters; the expression when absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// What happens to an event a rule rejects.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFail {
    /// Into the dead-letter file with the rule and the reason; the rest applies.
    #[default]
    DeadLetter,
    /// Dropped with a warning.
    Skip,
    /// The apply loop stops.
    Halt,
}

struct Rule {
    name: String,
    table: String,
    check: String,
    program: Program,
    variables: Vec<String>,
    on_fail: OnFail,
}

/// The compiled rules of a pipeline.
#[derive(Default)]
pub struct Rules(Vec<Rule>);

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|r| (&r.table, &r.name, r.on_fail)))
            .finish()
    }
}

/// An event a rule rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule's name.
    pub rule: String,
    /// Why, with the values the rule read.
    pub reason: String,
    /// What to do with the event.
    pub on_fail: OnFail,
}

impl Rules {
    /// Compiles `rules`; an error names the rule (`rules[i]`) and what is wrong.
    pub fn compile(rules: &[RuleConfig]) -> Result<Rules, String> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let pattern_ok = r.table == "*"
                || r.table
                    .split_once('.')
                    .is_some_and(|(s, t)| !s.is_empty() && !t.is_empty() && !s.contains('*'));
            if !pattern_ok {
                return Err(format!(
                    "{at}.table = {:?}: expected \"schema.table\", \"schema.*\" or \"*\"",
                    r.table
                ));
            }
            let program = Program::compile(&r.check).map_err(|e| {
                format!(
                    "{at}.check = {:?} is not a valid CEL expression: {e}",
                    r.check
                )
            })?;
            let variables = program
                .references()
                .variables()
                .into_iter()
                .filter(|v| *v != "op")
                .map(str::to_string)
                .collect();
            out.push(Rule {
                name: r.name.clone().unwrap_or_else(|| r.check.clone()),
                table: r.table.clone(),
                check: r.check.clone(),
                program,
                variables,
                on_fail: r.on_fail,
            });
        }
        Ok(Rules(out))
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule `event` (of table `table`) breaks, if any. A rule that cannot be
    /// evaluated is an error.
    pub fn check(
        &self,
        table: &TableSchema,
        event: &ChangeEvent,
    ) -> Result<Option<Violation>, PipelineError> {
        let Some(row) = event.after.as_ref() else {
            return Ok(None);
        };
        if !matches!(event.op, Op::Insert | Op::Update | Op::Read) {
            return Ok(None);
        }
        let id = &table.table;
        let mut applicable = self.0.iter().filter(|r| {
            r.table == "*"
                || r.table
                    .split_once('.')
                    .is_some_and(|(s, t)| s == id.schema && (t == "*" || t == id.name))
        });
        let Some(first) = applicable.next() else {
            return Ok(None);
        };
        let mut context = Context::default();
        context
            .add_variable("op", event.op.name())
            .map_err(|e| PipelineError::Config(format!("binding op: {e}")))?;
        for (column, value) in table.columns.iter().zip(&row.0) {
            context.add_variable_from_value(column.name.as_str(), cel_value(value));
        }
        for rule in std::iter::once(first).chain(applicable) {
            let column = |v: &str| table.columns.iter().position(|c| c.name == v);
            // A value the source did not send (it did not change) is not checked again.
            if rule
                .variables
                .iter()
                .any(|v| column(v).is_some_and(|i| matches!(row.0.get(i), Some(Value::Unchanged))))
            {
                continue;
            }
            let values = || {
                rule.variables
                    .iter()
                    .filter_map(|v| Some(format!("{v} = {}", row.0.get(column(v)?)?.describe())))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let what = format!("{} of {id} at {}", event.op.name(), event.position);
            let failure = match rule.program.execute(&context) {
                Ok(cel::Value::Bool(true)) => continue,
                Ok(cel::Value::Bool(false)) => format!(
                    "{what} breaks rule {:?} ({}) with {}",
                    rule.name,
                    rule.check,
                    values()
                ),
                Ok(other) => {
                    return Err(PipelineError::Config(format!(
                        "rule {:?} ({}) gave {other:?} for a row of {id}, not true or false",
                        rule.name, rule.check
                    )))
                }
                Err(e) => {
                    let missing: Vec<&str> = rule
                        .variables
                        .iter()
                        .filter(|v| column(v).is_none())
                        .map(String::as_str)
                        .collect();
                    match (missing.is_empty(), rule.table.ends_with('*')) {
                        // A table pattern: the rule is for the tables that have its columns.
                        (false, true) => continue,
                        (false, false) => {
                            return Err(PipelineError::Config(format!(
                                "rule {:?} ({}) uses {}, which table {id} does not have (its \
                                 columns: {})",
                                rule.name,
                                rule.check,
                                missing.join(", "),
                                table
                                    .columns
                                    .iter()
                                    .map(|c| c.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )))
                        }
                        // The row's values make it fail (a NULL compared with a number,
                        // a NaN, an overflow): the event does not pass.
                        (true, _) => format!(
                            "{what}: rule {:?} ({}) cannot be evaluated with {}: {e}",
                            rule.name,
                            rule.check,
                            values()
                        ),
                    }
                }
            };
            return Ok(Some(Violation {
                rule: rule.name.clone(),
                reason: failure,
                on_fail: rule.on_fail,
            }));
        }
        Ok(None)
    }
}

/// The CEL value of a column value (see the module documentation).
fn cel_value(value: &Value) -> cel::Value {
    use cel::Value as C;
    let micros = |m: i64| chrono::Duration::microseconds(m);
    let at = |m: i64| {
        chrono::DateTime::from_timestamp_micros(m)
            .map(|t| C::Timestamp(t.fixed_offset()))
            .unwrap_or(C::Null)
    };
    match value {
        Value::Null | Value::Unchanged => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Int16(i) => C::Int(i64::from(*i)),
        Value::Int32(i) => C::Int(i64::from(*i)),
        Value::Int64(i) => C::Int(*i),
        Value::Float32(f) => C::Float(f64::from(*f)),
        Value::Float64(f) => C::Float(*f),
        Value::Numeric(s) => s
            .parse::<f64>()
            .map(C::Float)
            .unwrap_or_else(|_| C::String(s.clone().into())),
        Value::Text(s) | Value::Json(s) | Value::Enum(s) => C::String(s.clone().into()),
        Value::Bytes(b) => C::Bytes(b.clone().into()),
        Value::Uuid(u) => C::String(
            format!(
                "{}-{}-{}-{}-{}",
                hex(&u[..4]),
                hex(&u[4..6]),
                hex(&u[6..8]),
                hex(&u[8..10]),
                hex(&u[10..])
            )
            .into(),
        ),
        Value::Date(d) if *d == i32::MIN || *d == i32::MAX => C::Null,
        Value::Date(d) => i64::from(*d)
            .checked_mul(86_400_000_000)
            .map_or(C::Null, at),
        Value::Timestamp(t) | Value::TimestampTz(t) if *t == i64::MIN || *t == i64::MAX => C::Null,
        Value::Timestamp(t) | Value::TimestampTz(t) => at(*t),
        Value::Time(t) => C::Duration(micros(*t)),
        Value::Interval(i) => C::Duration(micros(
            (i64::from(i.months) * 30 + i64::from(i.days)) * 86_400_000_000 + i.micros,
        )),
        Value::Array(items) => C::List(std::sync::Arc::new(items.iter().map(cel_value).collect())),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_schemas::{Column, ColumnType, Position, Row, TableId, TxMeta};

    fn table() -> TableSchema {
        let col = |name: &str, ty: ColumnType| Column {
            name: name.into(),
            ty,
            source_type: String::new(),
            nullable: true,
            missing: None,
        };
        TableSchema {
            table: TableId::new("shop", "medicines"),
            columns: vec![
                col("id", ColumnType::Int32),
                col("quantity", ColumnType::Int32),
                col(
                    "price",
                    ColumnType::Numeric {
                        precision: Some(10),
                        scale: Some(2),
                    },
                ),
                col("manufacture_date", ColumnType::Date),
                col("expiry_date", ColumnType::Date),
            ],
            primary_key: vec![0],
            version: 1,
        }
    }

    fn event(op: Op, quantity: i32, price: &str, made: i32, expires: i32) -> ChangeEvent {
        let row = Row(vec![
            Value::Int32(1),
            Value::Int32(quantity),
            Value::Numeric(price.into()),
            Value::Date(made),
            Value::Date(expires),
        ]);
        ChangeEvent {
            source: "s".into(),
            table: TableId::new("shop", "medicines"),
            schema_version: 1,
            op,
            key: vec![Value::Int32(1)],
            before: (op == Op::Delete).then(|| row.clone()),
            after: (op != Op::Delete).then_some(row),
            position: Position::pg(10, 1),
            tx: TxMeta {
                id: None,
                commit_ts_micros: 0,
                first: Position::pg(10, 1),
            },
            origin: None,
        }
    }

    fn rules(text: &str) -> Rules {
        #[derive(Deserialize)]
        struct File {
            rules: Vec<RuleConfig>,
        }
        let file: File = toml::from_str(text).unwrap();
        Rules::compile(&file.rules).unwrap()
    }

    #[test]
    fn rules_reject_what_breaks_them_and_name_the_values() {
        let r = rules(
            r#"
            [[rules]]
            table = "shop.medicines"
            check = "quantity >= 0"
            [[rules]]
            table = "shop.*"
            name = "price_range"
            check = "price > 0 && price < 100000"
            on_fail = "skip"
            [[rules]]
            table = "*"
            check = "expiry_date > manufacture_date"
            on_fail = "halt"
            [[rules]]
            table = "other.medicines"
            check = "false"
            "#,
        );
        let t = table();
        assert_eq!(
            r.check(&t, &event(Op::Insert, 5, "9.99", 1, 2)).unwrap(),
            None
        );
        let v = r
            .check(&t, &event(Op::Update, -1, "9.99", 1, 2))
            .unwrap()
            .unwrap();
        assert_eq!(
            (v.rule.as_str(), v.on_fail),
            ("quantity >= 0", OnFail::DeadLetter)
        );
        assert!(
            v.reason.contains("update of shop.medicines")
                && v.reason.contains("quantity = Int32(-1)"),
            "{}",
            v.reason
        );
        // A decimal compares with an integer literal; exact bounds fail.
        for price in ["0", "100000.00", "-3.5"] {
            let v = r
                .check(&t, &event(Op::Read, 1, price, 1, 2))
                .unwrap()
                .unwrap();
            assert_eq!((v.rule.as_str(), v.on_fail), ("price_range", OnFail::Skip));
        }
        let v = r
            .check(&t, &event(Op::Insert, 1, "1", 20_000, 20_000))
            .unwrap()
            .unwrap();
        assert_eq!(v.on_fail, OnFail::Halt);
        // Deletes leave no row to check.
        assert_eq!(
            r.check(&t, &event(Op::Delete, -1, "0", 2, 1)).unwrap(),
            None
        );
    }

    #[test]
    fn null_and_unchanged_values() {
        let t = table();
        let mut e = event(Op::Update, 1, "1", 1, 2);
        e.after.as_mut().unwrap().0[1] = Value::Null;
        // CEL refuses to compare null with a number: the event does not pass.
        let strict =
            rules("[[rules]]\ntable = \"*\"\ncheck = \"quantity >= 0\"\non_fail = \"skip\"\n");
        let v = strict.check(&t, &e).unwrap().unwrap();
        assert!(
            v.reason
                .contains("cannot be evaluated with quantity = Null")
                && v.on_fail == OnFail::Skip,
            "{}",
            v.reason
        );
        let lenient =
            rules("[[rules]]\ntable = \"*\"\ncheck = \"quantity == null || quantity >= 0\"\n");
        assert_eq!(lenient.check(&t, &e).unwrap(), None);
        // A value the source did not send is not checked again.
        e.after.as_mut().unwrap().0[1] = Value::Unchanged;
        assert_eq!(strict.check(&t, &e).unwrap(), None);
        // Dates far out of chrono's range are null, not a panic.
        let mut far = event(Op::Insert, 1, "1", 1, 2);
        far.after.as_mut().unwrap().0[4] = Value::Date(i32::MAX - 1);
        let dates = rules("[[rules]]\ntable = \"*\"\ncheck = \"expiry_date > manufacture_date\"\n");
        assert!(dates.check(&t, &far).unwrap().is_some());
    }

    #[test]
    fn rules_that_cannot_be_evaluated_are_configuration_errors() {
        let t = table();
        let e = event(Op::Insert, 1, "1", 1, 2);
        let unknown = rules("[[rules]]\ntable = \"shop.medicines\"\ncheck = \"qty >= 0\"\n");
        let err = unknown.check(&t, &e).unwrap_err().to_string();
        assert!(
            err.contains("uses qty,") && err.contains("quantity"),
            "{err}"
        );
        // Under a table pattern, a rule is for the tables that have its columns; loop
        // variables are no columns.
        let pattern = rules(
            "[[rules]]\ntable = \"shop.*\"\ncheck = \"qty >= 0\"\n\
             [[rules]]\ntable = \"*\"\ncheck = \"[1, 2].all(x, x < quantity)\"\n",
        );
        assert_eq!(
            pattern.check(&t, &event(Op::Insert, 5, "1", 1, 2)).unwrap(),
            None
        );
        let v = pattern
            .check(&t, &event(Op::Insert, 2, "1", 1, 2))
            .unwrap()
            .unwrap();
        assert!(v.reason.contains("breaks rule"), "{}", v.reason);
        let not_bool = rules("[[rules]]\ntable = \"*\"\ncheck = \"quantity + 1\"\n");
        let err = not_bool.check(&t, &e).unwrap_err().to_string();
        assert!(err.contains("not true or false"), "{err}");
        let bad = [
            ("quantity >=", "not a valid CEL expression"),
            ("", "not a valid CEL expression"),
        ];
        for (check, want) in bad {
            let err = Rules::compile(&[RuleConfig {
                table: "*".into(),
                check: check.into(),
                on_fail: OnFail::Halt,
                name: None,
            }])
            .err()
            .unwrap();
            assert!(
                err.starts_with("rules[0].check") && err.contains(want),
                "{err}"
            );
        }
        let err = Rules::compile(&[RuleConfig {
            table: "medicines".into(),
            check: "true".into(),
            on_fail: OnFail::Halt,
            name: None,
        }])
        .err()
        .unwrap();
        assert!(err.starts_with("rules[0].table"), "{err}");
    }
}
