//! The schedule: backup snapshots of every archived source and file set at the times a cron
//! expression names, with retention applied after each round.

use crate::backup;
use crate::config::Config;
use std::sync::Arc;
use tokio::sync::watch;
use tributary_pipeline::PipelineError;

/// Takes the snapshots `schedule` asks for until shutdown. A failed snapshot is logged
/// and tried again at the next occasion; it does not stop the run.
pub(crate) async fn scheduled_snapshots(
    config: Arc<Config>,
    schedule: String,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let cron = crate::config::parse_schedule(&schedule)?;
    loop {
        let now = chrono::Utc::now();
        let next = cron.find_next_occurrence(&now, false).map_err(|e| {
            PipelineError::Config(format!("backup.snapshot_schedule {schedule:?}: {e}"))
        })?;
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(next = %next.to_rfc3339(), "next scheduled snapshot");
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        match backup::files_snapshot_create(&config, None).await {
            Ok(taken) => {
                for m in taken {
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
                tracing::error!(error = %e, "scheduled files snapshot failed; trying again at the next occasion")
            }
        }
        match backup::snapshot_create(&config, None, None).await {
            Ok(taken) => {
                for m in taken {
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
                tracing::error!(error = %e, "scheduled snapshot failed; trying again at the next occasion")
            }
        }
        if let Err(e) = backup::prune(&config, None, false).await {
            tracing::error!(error = %e, "retention: nothing was pruned");
        }
    }
}
