//! The loops the runtime runs for each sink and source: an apply loop (a source's topics
//! into a sink, through the apply engine) and an archiver (a source's topics into the
//! `[backup]` store).

use super::consumer;
use crate::config::Config;
use std::sync::Arc;
use tokio::sync::watch;
use tributary_pipeline::apply::{Applier, ApplySettings, ApplyStats};
use tributary_pipeline::conflict::{ConflictLog, Conflicts};
use tributary_pipeline::dead_letter::DeadLetters;
use tributary_pipeline::notify::Notifier;
use tributary_pipeline::validate::Rules;
use tributary_pipeline::PipelineError;
use tributary_transport::topics::dead_letters_topic;

/// The name the event-log archive goes by among the sinks (stats, consumer groups).
pub const ARCHIVE: &str = "archive";

/// One apply loop: a source into a sink.
pub(crate) struct Loop {
    /// The sink's name.
    pub(crate) sink: String,
    /// The source's name.
    pub(crate) source: String,
    /// Whether the sink writes into the source's database (see `Config::loops`).
    pub(crate) own: bool,
    /// Held while merging: the loops into one sink merge one at a time.
    pub(crate) merge_lock: Arc<tokio::sync::Mutex<()>>,
    /// The conflict webhook's task, when `notify_conflicts` is set.
    pub(crate) notifier: Option<Notifier>,
    /// A dead-letter replay beside the running loop (it tags its writes under a name of
    /// its own, since a PostgreSQL origin serves one session at a time).
    pub(crate) replay: bool,
}

pub(crate) async fn apply_loop(
    config: &Config,
    lp: &Loop,
    stats: Arc<ApplyStats>,
    shutdown: watch::Receiver<bool>,
    connected: super::Connected,
) -> Result<(), PipelineError> {
    let mut applier = applier(config, lp, stats).await?;
    connected.now();
    applier.run(shutdown).await
}

/// The apply loop `lp`, ready to run.
pub(crate) async fn applier(
    config: &Config,
    lp: &Loop,
    stats: Arc<ApplyStats>,
) -> Result<Applier, PipelineError> {
    let (sink_name, source) = (lp.sink.as_str(), lp.source.as_str());
    let sink_config = &config.sinks[sink_name];
    let prefix = config
        .sources
        .get(source)
        .map(|s| s.prefix(source))
        .unwrap_or_else(|| source.to_string());
    let mut sink = sink_config.target().connect().await?;
    let writer = if lp.replay {
        format!("{sink_name}-replay")
    } else {
        sink_name.to_string()
    };
    let tagged = match sink.origin_tag() {
        Some(tag) => {
            tag.tag_origin(&format!("tributary/{writer}/{source}"))
                .await?;
            tag.tagged()
        }
        None => false,
    };
    // A merging sink folds its own database's changes: an untagged write of its would
    // come back as a new local change and be counted again, without end.
    if !tagged {
        if let Some((own, _)) = config.loops(sink_name).into_iter().find(|(_, own)| *own) {
            return Err(PipelineError::Config(format!(
                "sink {sink_name} merges rows into the database of source {own}, so it must tag its writes with a replication origin: give its user superuser, or EXECUTE on pg_replication_origin_create and pg_replication_origin_session_setup"
            )));
        }
    }
    let group = format!("tributary-{sink_name}-{source}");
    let consumer = consumer(config, &group).await?;
    let mut dead = DeadLetters::new(
        &config.state_dir.join("dead-letters"),
        &format!("{sink_name}-{source}"),
    );
    // Over Kafka, entries also go to the source's dead-letter topic. (The embedded log has
    // one writer, the capture; there the file is the queue.)
    if config.transport.shared() {
        let producer = config.transport.producer(&config.state_dir).await?;
        dead = dead.with_topic(sink_name, producer, dead_letters_topic(&prefix));
    }
    Applier::new(
        ApplySettings {
            source: source.to_string(),
            prefix,
            batch_rows: sink_config.batch_rows,
            max_tx_events: sink_config.max_tx_events,
            rules: Arc::new(Rules::compile(&config.rules).map_err(PipelineError::Config)?),
            echo_sources: config.echo_sources(sink_name),
            archive: false,
            conflicts: Arc::new(config.conflict_settings().map_err(PipelineError::Config)?),
            own_database: lp.own,
            merge_lock: lp.merge_lock.clone(),
            conflict_log: Some(Arc::new(ConflictLog::new(
                &config.state_dir.join("conflicts"),
                &format!("{sink_name}-{source}"),
            ))),
            manual_queue: Some(Arc::new(ConflictLog::queue(
                &config.state_dir.join("conflicts"),
                &format!("{sink_name}-{source}"),
            ))),
            notify: lp.notifier.clone().map(|n| (n, sink_name.to_string())),
        },
        consumer,
        sink,
        dead,
        stats,
    )
    .await
}

/// The loop that archives source `source`'s event log into the `[backup]` store: every
/// event as captured, in commit order (see `tributary_snapshot::archive`).
pub(crate) async fn archiver(
    config: &Config,
    source: &str,
    stats: Arc<ApplyStats>,
) -> Result<Applier, PipelineError> {
    let backup = config.backup_section()?;
    let prefix = config
        .sources
        .get(source)
        .map(|s| s.prefix(source))
        .ok_or_else(|| {
            PipelineError::Config(format!(
                "backup.archive_sources: {source:?} is not a configured source"
            ))
        })?;
    let sink = tributary_snapshot::ArchiveSink::open(backup, &config.state_dir, source).await?;
    if sink.resumed_from_store() {
        if config.transport.shared() {
            return Err(PipelineError::Config(format!(
                "the archive of source {source} goes on from the store, but this machine has no spool ({}): events spooled and not sealed before may be missing. Reset the consumer group tributary-{ARCHIVE}-{source} to the earliest offsets Kafka keeps (events the archive holds are skipped), then start again",
                config.state_dir.join("archive").join(source).display()
            )));
        }
        tracing::warn!(
            source,
            "the archive goes on from the store's HEAD.json: this machine had no spool"
        );
    }
    let name = format!("{ARCHIVE}-{source}");
    let consumer = consumer(config, &format!("tributary-{name}")).await?;
    let dead = DeadLetters::new(&config.state_dir.join("dead-letters"), &name);
    Applier::new(
        ApplySettings {
            source: source.to_string(),
            prefix,
            batch_rows: tributary_pipeline::apply::DEFAULT_BATCH_ROWS,
            max_tx_events: tributary_pipeline::apply::DEFAULT_MAX_TX_EVENTS,
            rules: Arc::new(Rules::default()),
            echo_sources: Vec::new(),
            archive: true,
            conflicts: Arc::new(Conflicts::default()),
            own_database: false,
            merge_lock: Arc::new(tokio::sync::Mutex::new(())),
            conflict_log: None,
            manual_queue: None,
            notify: None,
        },
        consumer,
        Box::new(sink),
        dead,
        stats,
    )
    .await
}
