//! `tributary replay-dead-letters`: applies the dead-letter entries the rules now accept.

use crate::commands::snapshots::error_text;
use crate::config::Config;
use crate::runtime::{applier, Loop};
use serde::{Serialize, Serializer};
use std::sync::Arc;
use tributary_pipeline::PipelineError;

/// What replaying a dead-letter file did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The file replayed.
    pub path: std::path::PathBuf,
    /// Entries applied (and removed from the file).
    pub applied: usize,
    /// Entries kept, with why each still is not applied.
    pub kept: Vec<String>,
}

/// Replays the dead-letter file of sink `sink_name` and source `source` into the sink:
/// every entry the current rules accept is applied, in file order, in one sink
/// transaction that leaves the sink's watermark as it is, and is then removed from the
/// file; the others stay, with their reason in the report. A crash between the commit
/// and the rewrite of the file applies those entries again on the next replay: the same
/// upserts and deletes, and merged rows take each replayed change once.
pub async fn replay_dead_letters(
    config: &Config,
    sink_name: &str,
    source: &str,
) -> Result<ReplayReport, PipelineError> {
    let Some((_, own)) = config
        .loops(sink_name)
        .into_iter()
        .find(|(s, _)| s == source)
    else {
        return Err(PipelineError::Config(format!(
            "sink {sink_name:?} takes no source {source:?} (its sources: {})",
            config
                .loops(sink_name)
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let path = config
        .state_dir
        .join("dead-letters")
        .join(format!("{sink_name}-{source}.dead-letters.jsonl"));
    let io = |e: std::io::Error| PipelineError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    // The entries are moved aside first, so a running loop appends new ones to a new
    // file meanwhile; a replay that stopped half way left them aside, and goes on there.
    let aside = path.with_extension("jsonl.replaying");
    if !aside.exists() {
        match std::fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
    }
    let text = match std::fs::read_to_string(&aside) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut report = ReplayReport {
        path: path.clone(),
        ..ReplayReport::default()
    };
    if lines.is_empty() {
        if aside.exists() {
            std::fs::remove_file(&aside).map_err(io)?;
        }
        return Ok(report);
    }
    let mut messages = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let entry: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            PipelineError::Inconsistent(format!(
                "{} line {}: not JSON ({e})",
                path.display(),
                i + 1
            ))
        })?;
        let message = entry["value_hex"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| {
                PipelineError::Inconsistent(format!(
                    "{} line {}: no value_hex holding the message",
                    path.display(),
                    i + 1
                ))
            })?;
        messages.push(message);
    }
    let lp = Loop {
        sink: sink_name.to_string(),
        source: source.to_string(),
        own,
        merge_lock: Arc::default(),
        notifier: None,
        replay: true,
    };
    let mut applier = applier(config, &lp, Arc::default()).await?;
    let outcomes = applier.replay(&messages).await?;
    let mut kept = String::new();
    for (line, outcome) in lines.iter().zip(outcomes) {
        match outcome {
            None => report.applied += 1,
            Some(reason) => {
                kept.push_str(line);
                kept.push('\n');
                report.kept.push(reason);
            }
        }
    }
    // What stays goes back into the queue (after what a running loop added meanwhile).
    tributary_pipeline::dead_letter::append_synced(&path, &kept)?;
    std::fs::remove_file(&aside).map_err(io)?;
    Ok(report)
}

/// What `tributary replay-dead-letters` did, per sink and source, and the error that
/// stopped it, if one did (the files replayed before it are reported all the same).
#[derive(Debug, Default, Serialize)]
pub struct ReplayReports {
    /// Each replayed file: sink, source, what was done (serialised as one object each,
    /// `{sink, source, path, applied, kept}`).
    #[serde(serialize_with = "replayed")]
    pub done: Vec<(String, String, ReplayReport)>,
    /// The error that stopped the replay (serialised as its message).
    #[serde(serialize_with = "error_text")]
    pub error: Option<PipelineError>,
}

/// Serialises `done` of [`ReplayReports`], a report per file with its sink and source.
fn replayed<S: Serializer>(
    done: &[(String, String, ReplayReport)],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Replayed<'a> {
        sink: &'a str,
        source: &'a str,
        #[serde(flatten)]
        report: &'a ReplayReport,
    }
    s.collect_seq(done.iter().map(|(sink, source, report)| Replayed {
        sink,
        source,
        report,
    }))
}

/// Replays the dead-letter files of every apply loop (or only those of `sink` and
/// `source`), until one fails.
pub async fn replay_all(
    config: &Config,
    sink: Option<&str>,
    source: Option<&str>,
) -> ReplayReports {
    let mut out = ReplayReports::default();
    for name in config.sinks.keys() {
        if sink.is_some_and(|s| s != name) {
            continue;
        }
        for (from, _) in config.loops(name) {
            if source.is_some_and(|s| s != from) {
                continue;
            }
            match replay_dead_letters(config, name, &from).await {
                Ok(report) => out.done.push((name.clone(), from, report)),
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    out
}

impl std::fmt::Display for ReplayReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (sink, source, r) in &self.done {
            writeln!(
                f,
                "sink {sink}, source {source}: {} applied, {} kept ({})",
                r.applied,
                r.kept.len(),
                r.path.display()
            )?;
            for reason in &r.kept {
                writeln!(f, "  kept: {reason}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_report_serialises_one_object_per_file() {
        let report = ReplayReports {
            done: vec![(
                "to_hq".into(),
                "store".into(),
                ReplayReport {
                    path: "/state/dead-letters/to_hq-store.dead-letters.jsonl".into(),
                    applied: 2,
                    kept: vec!["rule qty_positive rejects it".into()],
                },
            )],
            error: Some(PipelineError::Config("sink \"x\" takes no source".into())),
        };
        let json = serde_json::to_value(&report).unwrap();
        let done = &json["done"][0];
        assert_eq!(done["sink"], "to_hq");
        assert_eq!(done["source"], "store");
        assert_eq!(
            done["path"],
            "/state/dead-letters/to_hq-store.dead-letters.jsonl"
        );
        assert_eq!(done["applied"], 2);
        assert_eq!(done["kept"][0], "rule qty_positive rejects it");
        assert_eq!(json["error"], "configuration: sink \"x\" takes no source");
        let fine = ReplayReports::default();
        assert_eq!(
            serde_json::to_value(&fine).unwrap()["error"],
            serde_json::Value::Null
        );
    }
}
