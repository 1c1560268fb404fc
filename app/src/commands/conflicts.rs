//! The conflict queue: concurrent edits of `manual` columns waiting for a person
//! (`tributary conflicts`, `tributary conflicts resolve`).
//!
//! Every sink records the conflicts it meets in `<state_dir>/conflicts/<sink>-<source>.manual.jsonl`
//! (see [`tributary_pipeline::conflict`]); one conflict can appear in several files, from each sink
//! that merged it. A person resolves it by choosing a value: Tributary writes that value
//! into the source database the queued change came from, as an ordinary update, so the
//! choice is the newest change of the column and reaches every sink like any other. The
//! resolution is recorded in `resolved.jsonl` next to the queues, and every queued entry
//! of the same table name, key and column older than it leaves the list.

use crate::config::Config;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tributary_capture::WriteBack;
use tributary_pipeline::conflict::{Named, QueuedConflict, Resolution, Take};
use tributary_pipeline::dead_letter::append_synced;
use tributary_pipeline::PipelineError;
use tributary_schemas::{TableId, Value};

fn dir(config: &Config) -> PathBuf {
    config.state_dir.join("conflicts")
}

fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> PipelineError + '_ {
    move |e| PipelineError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The entries of every `*.manual.jsonl` (or `resolved.jsonl` when `resolved`), each
/// with the name of the file it is in, file by file.
fn read<T: DeserializeOwned>(
    config: &Config,
    resolved: bool,
) -> Result<Vec<(String, T)>, PipelineError> {
    let dir = dir(config);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut paths: Vec<(PathBuf, String)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let wanted = if resolved {
                name == "resolved.jsonl"
            } else {
                name.ends_with(".manual.jsonl")
            };
            wanted.then_some((p, name))
        })
        .collect();
    paths.sort();
    let what = if resolved {
        "resolution"
    } else {
        "queued conflict"
    };
    for (path, name) in paths {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let entry = serde_json::from_str(line).map_err(|e| {
                PipelineError::Inconsistent(format!(
                    "{} line {}: not a {what} ({e})",
                    path.display(),
                    i + 1
                ))
            })?;
            out.push((name.clone(), entry));
        }
    }
    Ok(out)
}

/// What makes two entries the same conflict: table name (sources may name the schema
/// differently), key and column.
fn group(table: &str, key: &Named, column: &str) -> (String, String, String) {
    let name = table.rsplit_once('.').map_or(table, |(_, n)| n);
    (name.to_string(), json(key).to_string(), column.to_string())
}

/// `value` as JSON, the way the queue files hold it.
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The conflicts waiting for a person, one per queued change (oldest first), each with
/// the queue file it was read from.
pub fn waiting(config: &Config) -> Result<Vec<QueuedConflict>, PipelineError> {
    let mut resolved = BTreeMap::new();
    for (_, r) in read::<Resolution>(config, true)? {
        let slot = resolved
            .entry(group(&r.table, &r.key, &r.column))
            .or_insert(r.resolved_at_micros);
        *slot = (*slot).max(r.resolved_at_micros);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<QueuedConflict> = read::<QueuedConflict>(config, false)?
        .into_iter()
        .map(|(file, e)| QueuedConflict {
            file: Some(file),
            ..e
        })
        .filter(|e| {
            resolved
                .get(&group(&e.table, &e.key, &e.column))
                .is_none_or(|at| e.commit_ts_micros > *at)
        })
        .filter(|e| seen.insert(e.id.clone()))
        .collect();
    out.sort_by_key(|e| e.commit_ts_micros);
    Ok(out)
}

/// Resolves conflict `id` with its `current` or `incoming` value (`take`): writes it into
/// the source database the queued change came from, then records the resolution and
/// returns it.
pub async fn resolve(config: &Config, id: &str, take: &str) -> Result<Resolution, PipelineError> {
    let entry = waiting(config)?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| {
            PipelineError::Config(format!(
                "no waiting conflict has id {id:?} (see `tributary conflicts`)"
            ))
        })?;
    let Some(took) = Take::parse(take) else {
        return Err(PipelineError::Config(format!(
            "--take {take:?}: choose \"current\" or \"incoming\""
        )));
    };
    let value = entry.value(took).cloned().ok_or_else(|| {
        PipelineError::Inconsistent(format!("conflict {id}: the queue holds no {took} value"))
    })?;
    let (source, table) = (&entry.source, &entry.table);
    let (schema, name) = table.split_once('.').ok_or_else(|| {
        PipelineError::Inconsistent(format!(
            "conflict {id}: table {table:?} is not schema.table"
        ))
    })?;
    let key: Vec<(String, Value)> = entry
        .key
        .iter()
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect();
    let Some(source_config) = config.sources.get(source) else {
        return Err(PipelineError::Config(format!(
            "conflict {id} came from source {source:?}, which is not configured"
        )));
    };
    let table_id = TableId::new(schema, name);
    let changed = source_config
        .write_back(&WriteBack {
            table: &table_id,
            key: &key,
            column: &entry.column,
            value: &value,
        })
        .await
        .map_err(|e| {
            PipelineError::Config(format!(
                "writing the choice into {table} of source {source}: {e}"
            ))
        })?;
    if changed == 0 {
        return Err(PipelineError::Config(format!(
            "conflict {id}: the row is no longer in {table} of source {source}"
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    let resolution = Resolution {
        column: entry.column,
        id: id.to_string(),
        key: entry.key,
        resolved_at_micros: now,
        table: entry.table,
        took,
        value,
        written_to: entry.source,
    };
    let line = serde_json::to_string(&resolution).map_err(|e| {
        PipelineError::Inconsistent(format!(
            "conflict {id}: the resolution cannot be written ({e})"
        ))
    })?;
    append_synced(&dir(config).join("resolved.jsonl"), &format!("{line}\n"))?;
    Ok(resolution)
}

/// The conflicts waiting for a person, as `tributary conflicts` lists them.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct WaitingReport(pub Vec<QueuedConflict>);

impl std::fmt::Display for WaitingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            writeln!(f, "no conflict is waiting")?;
        }
        for e in &self.0 {
            writeln!(
                f,
                "{}\n  {} key {} column {}: current {} / incoming {} (from {} at {}); now {}",
                e.id,
                e.table,
                json(&e.key),
                e.column,
                json(&e.current),
                json(&e.incoming),
                e.source,
                e.position,
                json(&e.result),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> QueuedConflict {
        QueuedConflict {
            column: "name".into(),
            commit_ts_micros: 17,
            current: Some(Value::Text("hq name".into())),
            current_from: Some("hq".into()),
            file: Some("to_hq-store.manual.jsonl".into()),
            id: "public.items:[\"3\"]:name:pg:0/2A#1".into(),
            incoming: Some(Value::Text("store name".into())),
            key: [("id".to_string(), Value::Int32(3))].into(),
            position: "pg:0/2A#1".into(),
            result: Some(Value::Text("store name".into())),
            source: "store".into(),
            table: "public.items".into(),
        }
    }

    #[test]
    fn the_waiting_report_prints_and_serialises_each_conflict() {
        let report = WaitingReport(vec![queued()]);
        assert_eq!(
            report.to_string(),
            "public.items:[\"3\"]:name:pg:0/2A#1\n  public.items key {\"id\":{\"Int32\":3}} column name: \
             current {\"Text\":\"hq name\"} / incoming {\"Text\":\"store name\"} (from store at pg:0/2A#1); \
             now {\"Text\":\"store name\"}\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json[0]["id"], "public.items:[\"3\"]:name:pg:0/2A#1");
        assert_eq!(json[0]["key"]["id"]["Int32"], 3);
        assert_eq!(json[0]["file"], "to_hq-store.manual.jsonl");
        assert_eq!(
            WaitingReport(Vec::new()).to_string(),
            "no conflict is waiting\n"
        );
    }

    /// Lines as the `json!` code wrote them: one conflict met by two sinks is listed once,
    /// with the first file it is in; a resolution settles the older entries of its table
    /// name, key and column; a line that is no entry is an error naming file and line.
    #[test]
    fn waiting_reads_the_queues_and_leaves_out_what_is_resolved() {
        let state = tempfile::tempdir().unwrap();
        let mut config = Config::parse("", |_| None).unwrap();
        config.state_dir = state.path().to_path_buf();
        let dir = dir(&config);
        std::fs::create_dir_all(&dir).unwrap();
        let line = |id: &str, table: &str, at: i64| {
            format!(
                r#"{{"column":"name","commit_ts_micros":{at},"current":{{"Text":"hq name"}},"current_from":"hq","id":"{id}","incoming":{{"Text":"store name"}},"key":{{"id":{{"Int32":3}}}},"position":"pg:0/2A#1","result":{{"Text":"store name"}},"source":"store","table":"{table}"}}"#
            )
        };
        let old = line("a", "public.items", 10);
        let newer = line("b", "public.items", 30);
        std::fs::write(
            dir.join("to_hq-store.manual.jsonl"),
            format!("{old}\n{newer}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("to_replica-store.manual.jsonl"),
            format!("{newer}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("resolved.jsonl"),
            r#"{"column":"name","id":"a","key":{"id":{"Int32":3}},"resolved_at_micros":20,"table":"shop.items","took":"incoming","value":{"Text":"store name"},"written_to":"store"}"#,
        )
        .unwrap();
        let listed = waiting(&config).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].id, "b");
        assert_eq!(listed[0].file.as_deref(), Some("to_hq-store.manual.jsonl"));

        std::fs::write(
            dir.join("to_hq-store.manual.jsonl"),
            format!("{old}\n{{\"id\":1}}\n"),
        )
        .unwrap();
        let err = waiting(&config).unwrap_err().to_string();
        assert!(
            err.contains("to_hq-store.manual.jsonl line 2: not a queued conflict"),
            "{err}"
        );
    }

    /// Entries of another schema's table of the same name, key and column are the same
    /// conflict; another column is not.
    #[test]
    fn a_group_is_table_name_key_and_column() {
        let e = queued();
        assert_eq!(
            group(&e.table, &e.key, &e.column),
            group("shop.items", &e.key, "name")
        );
        assert_ne!(
            group(&e.table, &e.key, &e.column),
            group("public.items", &e.key, "qty")
        );
    }
}
