//! The schedule: backup snapshots of every archived source and file set at the times a cron
//! expression names, with retention applied after each round. What it did is kept in
//! [`BackupStats`] for the metrics (so a failed snapshot is more than a log line).

use crate::backup;
use crate::config::Config;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tributary_pipeline::PipelineError;

/// What the scheduled snapshots did; read by the metrics.
#[derive(Debug, Default)]
pub struct BackupStats(Mutex<BackupState>);

/// The state behind [`BackupStats`].
#[derive(Debug, Clone, Default)]
pub struct BackupState {
    /// Finish time (Unix seconds) of the newest snapshot of each source and file set,
    /// read from the store at start and kept up to date.
    pub last_snapshot: BTreeMap<String, f64>,
    /// Snapshot rounds by kind (`sources`, `files`, `prune`) and result (`ok`, `failed`).
    pub runs: BTreeMap<(&'static str, &'static str), u64>,
    /// When the last failed round of each kind failed (Unix seconds), and why.
    pub last_failure: BTreeMap<&'static str, (f64, String)>,
    /// When the next round is due (Unix seconds).
    pub next_run: Option<f64>,
}

impl BackupStats {
    /// A copy of the state.
    pub fn state(&self) -> BackupState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BackupState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot_finished(&self, name: &str, finished_at: &str) {
        let at = chrono::DateTime::parse_from_rfc3339(finished_at)
            .map(|t| t.timestamp_millis() as f64 / 1e3)
            .unwrap_or_else(|_| unix_now());
        let mut state = self.lock();
        let last = state.last_snapshot.entry(name.to_string()).or_default();
        *last = last.max(at);
    }

    fn ran(&self, kind: &'static str, outcome: Result<(), String>) {
        let mut state = self.lock();
        let result = if outcome.is_ok() { "ok" } else { "failed" };
        *state.runs.entry((kind, result)).or_default() += 1;
        if let Err(message) = outcome {
            state.last_failure.insert(kind, (unix_now(), message));
        }
    }

    /// Reads the newest snapshot of everything from the store (once, at start).
    async fn load(&self, config: &Config) {
        match backup::list_snapshots(config, None).await {
            Ok((sets, sources)) => {
                for (set, found) in &sets {
                    found
                        .iter()
                        .for_each(|m| self.snapshot_finished(set, &m.finished_at));
                }
                for (source, found) in &sources {
                    found
                        .iter()
                        .for_each(|m| self.snapshot_finished(source, &m.finished_at));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot list the snapshots in the store");
                self.ran("list", Err(e.to_string()));
            }
        }
    }
}

fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1e3
}

/// Takes the snapshots `schedule` asks for until shutdown. A failed snapshot is logged,
/// counted in `stats` (and so in the metrics) and tried again at the next occasion; it
/// does not stop the run.
pub(crate) async fn scheduled_snapshots(
    config: Arc<Config>,
    schedule: String,
    stats: Arc<BackupStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let cron = crate::config::parse_schedule(&schedule)?;
    stats.load(&config).await;
    loop {
        let now = chrono::Utc::now();
        let next = cron.find_next_occurrence(&now, false).map_err(|e| {
            PipelineError::Config(format!("backup.snapshot_schedule {schedule:?}: {e}"))
        })?;
        let wait = (next - now).to_std().unwrap_or_default();
        stats.lock().next_run = Some(next.timestamp_millis() as f64 / 1e3);
        tracing::info!(next = %next.to_rfc3339(), "next scheduled snapshot");
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        match backup::files_snapshot_create(&config, None).await {
            Ok(taken) => {
                stats.ran("files", Ok(()));
                for m in taken {
                    stats.snapshot_finished(&m.set, &m.finished_at);
                    tracing::info!(
                        set = m.set,
                        snapshot = m.id,
                        files = m.files.len(),
                        bytes = m.bytes,
                        "scheduled files snapshot taken"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduled files snapshot failed; trying again at the next occasion");
                stats.ran("files", Err(e.to_string()));
            }
        }
        match backup::snapshot_create(&config, None, None).await {
            Ok(taken) => {
                stats.ran("sources", Ok(()));
                for m in taken {
                    stats.snapshot_finished(&m.source, &m.finished_at);
                    tracing::info!(
                        source = m.source,
                        snapshot = m.id,
                        rows = m.rows,
                        bytes = m.bytes,
                        "scheduled snapshot taken"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduled snapshot failed; trying again at the next occasion");
                stats.ran("sources", Err(e.to_string()));
            }
        }
        match backup::prune(&config, None, false).await {
            Ok(_) => stats.ran("prune", Ok(())),
            Err(e) => {
                tracing::error!(error = %e, "retention: nothing was pruned");
                stats.ran("prune", Err(e.to_string()));
            }
        }
    }
}
