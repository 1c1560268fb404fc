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
use std::collections::BTreeMap;
use std::path::PathBuf;
use tributary_capture::WriteBack;
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

/// The entries of every `*.manual.jsonl` (or `resolved.jsonl` when `resolved`).
fn read(config: &Config, resolved: bool) -> Result<Vec<serde_json::Value>, PipelineError> {
    let dir = dir(config);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if resolved {
                name == "resolved.jsonl"
            } else {
                name.ends_with(".manual.jsonl")
            }
        })
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut entry: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                PipelineError::Inconsistent(format!(
                    "{} line {}: not JSON ({e})",
                    path.display(),
                    i + 1
                ))
            })?;
            // Which sink and source met it.
            if let (Some(fields), Some(file)) = (
                entry.as_object_mut(),
                path.file_name().and_then(|n| n.to_str()),
            ) {
                fields.insert("file".into(), file.into());
            }
            out.push(entry);
        }
    }
    Ok(out)
}

/// What makes two entries the same conflict: table name (sources may name the schema
/// differently), key and column.
fn group(entry: &serde_json::Value) -> String {
    let table = entry["table"].as_str().unwrap_or_default();
    let name = table.rsplit_once('.').map_or(table, |(_, n)| n);
    format!("{name}|{}|{}", entry["key"], entry["column"])
}

/// The conflicts waiting for a person, one per queued change (oldest first).
pub fn waiting(config: &Config) -> Result<Vec<serde_json::Value>, PipelineError> {
    let mut resolved: BTreeMap<String, i64> = BTreeMap::new();
    for r in read(config, true)? {
        let at = r["resolved_at_micros"].as_i64().unwrap_or(0);
        let slot = resolved.entry(group(&r)).or_insert(at);
        *slot = (*slot).max(at);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<serde_json::Value> = read(config, false)?
        .into_iter()
        .filter(|e| {
            let ts = e["commit_ts_micros"].as_i64().unwrap_or(0);
            resolved.get(&group(e)).is_none_or(|at| ts > *at)
        })
        .filter(|e| seen.insert(e["id"].to_string()))
        .collect();
    out.sort_by_key(|e| e["commit_ts_micros"].as_i64().unwrap_or(0));
    Ok(out)
}

/// Resolves conflict `id` with its `current` or `incoming` value (`take`): writes it into
/// the source database the queued change came from, then records the resolution.
pub async fn resolve(config: &Config, id: &str, take: &str) -> Result<(), PipelineError> {
    let entry = waiting(config)?
        .into_iter()
        .find(|e| e["id"] == id)
        .ok_or_else(|| {
            PipelineError::Config(format!(
                "no waiting conflict has id {id:?} (see `tributary conflicts`)"
            ))
        })?;
    if !matches!(take, "current" | "incoming") {
        return Err(PipelineError::Config(format!(
            "--take {take:?}: choose \"current\" or \"incoming\""
        )));
    }
    let value: Value = serde_json::from_value(entry[take].clone()).map_err(|e| {
        PipelineError::Inconsistent(format!(
            "conflict {id}: the {take} value cannot be read ({e})"
        ))
    })?;
    let source = entry["source"].as_str().unwrap_or_default();
    let table = entry["table"].as_str().unwrap_or_default();
    let (schema, name) = table.split_once('.').ok_or_else(|| {
        PipelineError::Inconsistent(format!(
            "conflict {id}: table {table:?} is not schema.table"
        ))
    })?;
    let column = entry["column"].as_str().unwrap_or_default();
    let key: Vec<(String, Value)> = entry["key"]
        .as_object()
        .map(|k| {
            k.iter()
                .filter_map(|(c, v)| Some((c.clone(), serde_json::from_value(v.clone()).ok()?)))
                .collect()
        })
        .unwrap_or_default();
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
            column,
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
    let record = serde_json::json!({
        "id": id,
        "table": table,
        "key": entry["key"],
        "column": column,
        "took": take,
        "value": entry[take],
        "written_to": source,
        "resolved_at_micros": now,
    });
    append_synced(&dir(config).join("resolved.jsonl"), &format!("{record}\n"))
}

/// The conflicts waiting for a person, as `tributary conflicts` lists them.
#[derive(Debug, Clone)]
pub struct WaitingReport(pub Vec<serde_json::Value>);

impl std::fmt::Display for WaitingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            writeln!(f, "no conflict is waiting")?;
        }
        for e in &self.0 {
            writeln!(
                f,
                "{}\n  {} key {} column {}: current {} / incoming {} (from {} at {}); now {}",
                e["id"].as_str().unwrap_or_default(),
                e["table"].as_str().unwrap_or_default(),
                e["key"],
                e["column"].as_str().unwrap_or_default(),
                e["current"],
                e["incoming"],
                e["source"].as_str().unwrap_or_default(),
                e["position"].as_str().unwrap_or_default(),
                e["result"],
            )?;
        }
        Ok(())
    }
}
