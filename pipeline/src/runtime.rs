//! Runs the configured capture agents and apply loops as supervised tasks.
//!
//! Each task restarts after a transient error (a database or broker went away) with
//! exponential backoff from 1 s to 30 s, resuming from its durable position; a definite
//! error (configuration, rights, data the sink rejects) stops that task with its message
//! and makes the whole run fail, so nothing retries in a tight loop.

use crate::apply::{Applier, ApplySettings, ApplyStats};
use crate::config::{Config, SinkKind, SourceConfig, TransportConfig};
use crate::conflict::{ConflictLog, Conflicts};
use crate::dead_letter::DeadLetters;
use crate::error::PipelineError;
use crate::notify::Notifier;
use crate::registry_server::{self, RegistryView};
use crate::transport::embedded::EmbeddedConsumer;
use crate::transport::kafka::KafkaConsumer;
use crate::transport::Consumer;
use crate::validate::Rules;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tributary_capture::mysql::MySqlCapture;
use tributary_capture::postgres::snapshot::SnapshotOutput;
use tributary_capture::postgres::PostgresCapture;
use tributary_capture::publisher::Publisher;
use tributary_capture::registry::dead_letters_topic;
use tributary_capture::state::StateStore;
use tributary_capture::transport::kafka::KafkaProducer;
use tributary_capture::transport::log::EmbeddedProducer;
use tributary_capture::transport::Producer;
use tributary_capture::CaptureError;
use tributary_sinks::postgres::{PostgresSink, PostgresSinkConfig};
use tributary_sinks::Sink;
use tributary_sinks::{MySqlSink, MySqlSinkConfig};

/// The name the event-log archive goes by among the sinks (stats, consumer groups).
pub const ARCHIVE: &str = "archive";

/// Which parts of the configuration a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Run the capture agents.
    pub capture: bool,
    /// Run the apply loops.
    pub pipeline: bool,
    /// Serve the schema registry endpoint (when configured).
    pub registry: bool,
}

/// Counters of every apply loop, by `sink/source`.
pub type Stats = BTreeMap<String, Arc<ApplyStats>>;

/// The counters the apply loops of `config` will update.
pub fn stats_for(config: &Config) -> Stats {
    let mut stats = Stats::new();
    for sink_name in config.sinks.keys() {
        for (source, _) in config.loops(sink_name) {
            stats.insert(
                format!("{sink_name}/{source}"),
                Arc::new(ApplyStats::default()),
            );
        }
    }
    for source in config.archived_sources() {
        stats.insert(
            format!("{ARCHIVE}/{source}"),
            Arc::new(ApplyStats::default()),
        );
    }
    stats
}

/// Runs `roles` of `config` until `shutdown` turns true or a task fails for good.
pub async fn run(
    config: Config,
    roles: Roles,
    stats: Stats,
    shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| PipelineError::Io {
        path: config.state_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let config = Arc::new(config);
    let mut tasks: JoinSet<Result<(), PipelineError>> = JoinSet::new();
    // Every task stops when asked to, or when another task stopped for good: a run with a
    // dead capture or apply loop must end (with that task's error), not idle on.
    let (stop_all, shutdown, forwarder) = {
        let (tx, rx) = watch::channel(*shutdown.borrow());
        let forward = tx.clone();
        let mut outer = shutdown;
        let forwarder = tokio::spawn(async move {
            // Asked to stop, or the caller dropped its sender: either way, stop.
            let _ = outer.wait_for(|s| *s).await;
            let _ = forward.send(true);
        });
        (tx, rx, forwarder)
    };

    if roles.capture && !config.sources.is_empty() {
        let producer = producer(&config).await?;
        let store = StateStore::open(&config.state_dir.join("capture"))?;
        for (name, source) in &config.sources {
            let (name, source, producer, store) = (
                name.clone(),
                source.clone(),
                producer.clone(),
                store.clone(),
            );
            let shutdown = shutdown.clone();
            tasks.spawn(supervise(
                format!("capture {name}"),
                shutdown.clone(),
                move || {
                    let (name, source, producer, store, shutdown) = (
                        name.clone(),
                        source.clone(),
                        producer.clone(),
                        store.clone(),
                        shutdown.clone(),
                    );
                    async move {
                        let publisher = Publisher::new(producer, &name, &source.prefix(&name));
                        match source {
                            SourceConfig::Postgres(pg) => {
                                PostgresCapture::new(&name, pg, store, publisher)
                                    .run(shutdown)
                                    .await
                            }
                            SourceConfig::Mysql(my) => {
                                MySqlCapture::new(&name, my, store, publisher)
                                    .run(shutdown)
                                    .await
                            }
                        }
                        .map_err(PipelineError::from)
                    }
                },
            ));
        }
    }

    if let (true, Some(registry)) = (roles.registry, &config.registry) {
        let listener = registry_server::bind(registry.listen).await?;
        let view = RegistryView::default();
        for (name, source) in &config.sources {
            let prefix = source.prefix(name);
            let (config, view, shutdown2) = (config.clone(), view.clone(), shutdown.clone());
            tasks.spawn(supervise(
                format!("registry follower {name}"),
                shutdown.clone(),
                move || {
                    let (config, prefix, view, shutdown) = (
                        config.clone(),
                        prefix.clone(),
                        view.clone(),
                        shutdown2.clone(),
                    );
                    async move {
                        let consumer = consumer(&config, "tributary-registry").await?;
                        registry_server::follow(consumer.as_ref(), &prefix, view, shutdown).await
                    }
                },
            ));
        }
        tasks.spawn(registry_server::serve(listener, view, shutdown.clone()));
    }

    if roles.pipeline {
        let notifier = config.notify_conflicts.clone().map(Notifier::start);
        for sink_name in config.sinks.keys() {
            // The loops into one sink merge one at a time (see `conflict`).
            let merge_lock = Arc::new(tokio::sync::Mutex::new(()));
            for (source, own) in config.loops(sink_name) {
                let key = format!("{sink_name}/{source}");
                let stats = stats.get(&key).cloned().unwrap_or_default();
                let (config, sink_name) = (config.clone(), sink_name.clone());
                let shutdown2 = shutdown.clone();
                let merge_lock = merge_lock.clone();
                let notifier = notifier.clone();
                tasks.spawn(supervise(
                    format!("apply {key}"),
                    shutdown.clone(),
                    move || {
                        let (config, sink_name, source, stats, shutdown, merge_lock) = (
                            config.clone(),
                            sink_name.clone(),
                            source.clone(),
                            stats.clone(),
                            shutdown2.clone(),
                            merge_lock.clone(),
                        );
                        let lp = Loop {
                            sink: sink_name,
                            source,
                            own,
                            merge_lock,
                            notifier: notifier.clone(),
                            replay: false,
                        };
                        async move { apply_loop(&config, &lp, stats, shutdown).await }
                    },
                ));
            }
        }
        if let Some(schedule) = config
            .backup
            .as_ref()
            .and_then(|b| b.snapshot_schedule.clone())
        {
            let (config, shutdown2) = (config.clone(), shutdown.clone());
            tasks.spawn(scheduled_snapshots(config, schedule, shutdown2));
        }
        for source in config.archived_sources() {
            let key = format!("{ARCHIVE}/{source}");
            let stats = stats.get(&key).cloned().unwrap_or_default();
            let (config, shutdown2) = (config.clone(), shutdown.clone());
            tasks.spawn(supervise(
                format!("archive {source}"),
                shutdown.clone(),
                move || {
                    let (config, source, stats, shutdown) = (
                        config.clone(),
                        source.clone(),
                        stats.clone(),
                        shutdown2.clone(),
                    );
                    async move { archiver(&config, &source, stats).await?.run(shutdown).await }
                },
            ));
        }
    }

    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = stop_all.send(true);
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
            Err(e) => {
                let _ = stop_all.send(true);
                if first_error.is_none() {
                    first_error = Some(PipelineError::Io {
                        path: "task".into(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }
    forwarder.abort();
    first_error.map_or(Ok(()), Err)
}

async fn producer(config: &Config) -> Result<Arc<dyn Producer>, PipelineError> {
    Ok(match &config.transport {
        // A run restarted in this process finds the last one's writer finishing its queue.
        TransportConfig::Embedded(_) => Arc::new(
            EmbeddedProducer::open_when_free(&config.log_dir(), Duration::from_secs(10)).await?,
        ),
        TransportConfig::Kafka(k) => Arc::new(KafkaProducer::connect(k).await?),
    })
}

async fn consumer(config: &Config, group: &str) -> Result<Arc<dyn Consumer>, PipelineError> {
    Ok(match &config.transport {
        TransportConfig::Embedded(_) => Arc::new(EmbeddedConsumer::open(&config.log_dir(), group)?),
        TransportConfig::Kafka(k) => Arc::new(KafkaConsumer::connect(k, group).await?),
    })
}

/// One apply loop: a source into a sink.
struct Loop {
    sink: String,
    source: String,
    /// Whether the sink writes into the source's database (see `Config::loops`).
    own: bool,
    merge_lock: Arc<tokio::sync::Mutex<()>>,
    /// The conflict webhook's task, when `notify_conflicts` is set.
    notifier: Option<Notifier>,
    /// A dead-letter replay beside the running loop (it tags its writes under a name of
    /// its own, since a PostgreSQL origin serves one session at a time).
    replay: bool,
}

async fn apply_loop(
    config: &Config,
    lp: &Loop,
    stats: Arc<ApplyStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    applier(config, lp, stats).await?.run(shutdown).await
}

/// What replaying a dead-letter file did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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
    crate::dead_letter::append_synced(&path, &kept)?;
    std::fs::remove_file(&aside).map_err(io)?;
    Ok(report)
}

/// The apply loop `lp`, ready to run.
async fn applier(
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
    let sink: Box<dyn Sink> = match sink_config.kind {
        SinkKind::Postgres => Box::new(
            PostgresSink::connect(PostgresSinkConfig {
                url: sink_config.url.clone(),
                target_schema: sink_config.target_schema.clone(),
                batch_rows: sink_config.batch_rows,
            })
            .await?,
        ),
        SinkKind::Mysql => Box::new(
            MySqlSink::connect(MySqlSinkConfig {
                url: sink_config.url.clone(),
                target_schema: sink_config.target_schema.clone(),
                batch_rows: sink_config.batch_rows,
            })
            .await?,
        ),
    };
    let mut sink = sink;
    let writer = if lp.replay {
        format!("{sink_name}-replay")
    } else {
        sink_name.to_string()
    };
    sink.tag_origin(&format!("tributary/{writer}/{source}"))
        .await?;
    // A merging sink folds its own database's changes: an untagged write of its would
    // come back as a new local change and be counted again, without end.
    if !sink.tagged() {
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
    if let TransportConfig::Kafka(k) = &config.transport {
        let producer: Arc<dyn Producer> = Arc::new(KafkaProducer::connect(k).await?);
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

/// The `[backup]` section, which the backup commands need.
pub fn backup_of(config: &Config) -> Result<&tributary_snapshot::BackupConfig, PipelineError> {
    config
        .backup
        .as_ref()
        .ok_or_else(|| PipelineError::Config("the configuration has no [backup] section".into()))
}

/// The archived sources, or only `only`, which must be one of them.
pub fn archived_selection(
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<String>, PipelineError> {
    let archived = config.archived_sources();
    let sets = file_sets(config, None);
    match only {
        None => Ok(archived),
        Some(s) if archived.iter().any(|a| a == s) => Ok(vec![s.to_string()]),
        Some(s) if sets.iter().any(|a| a == s) => Ok(Vec::new()),
        Some(s) => Err(PipelineError::Config(format!(
            "--source {s}: neither an archived source (archived: {}) nor a file set (backup.files: {})",
            archived.join(", "),
            sets.join(", ")
        ))),
    }
}

/// The `[backup.files.<name>]` sets, or only `only` when it names one (none when it
/// names a source).
pub fn file_sets(config: &Config, only: Option<&str>) -> Vec<String> {
    let Some(backup) = &config.backup else {
        return Vec::new();
    };
    backup
        .files
        .keys()
        .filter(|s| only.is_none_or(|o| o == s.as_str()))
        .cloned()
        .collect()
}

/// Takes a files snapshot of each file set (or only `only`) into the `[backup]` store.
pub async fn files_snapshot_create(
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<tributary_snapshot::FilesManifest>, PipelineError> {
    let backup = backup_of(config)?;
    let store = tributary_snapshot::Store::open(backup)?;
    let mut out = Vec::new();
    for set in file_sets(config, only) {
        out.push(
            tributary_snapshot::snapshot_files(
                &store,
                &set,
                &backup.files[&set],
                backup.zstd_level,
                backup.snapshot_object_bytes as usize,
            )
            .await?,
        );
    }
    Ok(out)
}

/// Restores the newest files snapshot of set `set` taken at or before `to` (a time or
/// `latest`) under directory `into`; only paths starting with one of `only`, when given.
pub async fn files_restore(
    config: &Config,
    set: &str,
    to: &tributary_snapshot::Target,
    into: Option<&std::path::Path>,
    only: &[String],
) -> Result<tributary_snapshot::FilesRestoreReport, PipelineError> {
    let store = tributary_snapshot::Store::open(backup_of(config)?)?;
    let at = match to {
        tributary_snapshot::Target::Latest => i64::MAX,
        tributary_snapshot::Target::Time(t) => *t,
        tributary_snapshot::Target::Position(_) => {
            return Err(PipelineError::Config(format!(
                "--to: file set {set} is restored to a time or `latest`, not a source position"
            )))
        }
    };
    let snapshots = tributary_snapshot::list_file_snapshots(&store, set).await?;
    let Some(snap) = snapshots.iter().rev().find(|s| s.taken_at_micros <= at) else {
        return Err(PipelineError::Config(format!(
            "file set {set}: no files snapshot taken at or before that time ({} in the store{})",
            snapshots.len(),
            snapshots
                .first()
                .map(|s| format!(", the oldest {}", s.finished_at))
                .unwrap_or_default()
        )));
    };
    let dry = into.is_none();
    let into = into.unwrap_or(std::path::Path::new("/nonexistent"));
    Ok(tributary_snapshot::restore_files(&store, snap, into, only, dry).await?)
}

/// The loop that archives source `source`'s event log into the `[backup]` store: every
/// event as captured, in commit order (see `tributary_snapshot::archive`).
async fn archiver(
    config: &Config,
    source: &str,
    stats: Arc<ApplyStats>,
) -> Result<Applier, PipelineError> {
    let backup = backup_of(config)?;
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
        if let TransportConfig::Kafka(_) = &config.transport {
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
            batch_rows: crate::apply::DEFAULT_BATCH_ROWS,
            max_tx_events: crate::apply::DEFAULT_MAX_TX_EVENTS,
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

/// Restores the archive of `source` (default: the only archived source) into the
/// database at `target` (`postgres://…` or `mysql://…`; `None`: a dry run), tables into
/// `target_schema` when given. Returns the source's name and what was done.
pub async fn restore(
    config: &Config,
    source: Option<&str>,
    options: &tributary_snapshot::RestoreOptions,
    target: Option<&str>,
    target_schema: Option<String>,
) -> Result<(String, tributary_snapshot::RestoreReport), PipelineError> {
    let backup = backup_of(config)?;
    let source = match archived_selection(config, source)?.as_slice() {
        [one] => one.clone(),
        several => {
            return Err(PipelineError::Config(format!(
                "several sources are archived ({}): name one with --source",
                several.join(", ")
            )))
        }
    };
    let store = tributary_snapshot::Store::open(backup)?;
    let mut sink = match target {
        None => None,
        Some(url) => Some(target_sink(url, &source, target_schema, options.batch_rows).await?),
    };
    let mut wrapped = sink
        .as_mut()
        .map(|(inner, key)| tributary_snapshot::RestoreSink {
            inner: inner.as_mut(),
            watermark_key: key.clone(),
            test: None,
        });
    let report = tributary_snapshot::restore(
        &store,
        &source,
        options,
        wrapped.as_mut().map(|s| s as &mut dyn Sink),
    )
    .await?;
    Ok((source, report))
}

/// The sink a restore writes through into database `url` (postgres:// or mysql://), and
/// the key its watermark is kept under.
///
/// A MySQL server keeps one `tributary.watermarks` table for all its databases, so a
/// restore there keeps its watermark under `<source>@<database>`: restoring the same
/// source into a second database of that server starts from the beginning, instead of
/// finding the first one's watermark and skipping everything.
async fn target_sink(
    url: &str,
    source: &str,
    target_schema: Option<String>,
    batch_rows: usize,
) -> Result<(Box<dyn Sink>, Option<String>), PipelineError> {
    Ok(match TargetKind::of(url, "--target")? {
        TargetKind::Postgres => (
            Box::new(
                PostgresSink::connect(PostgresSinkConfig {
                    url: url.to_string(),
                    target_schema,
                    batch_rows,
                })
                .await?,
            ),
            None,
        ),
        TargetKind::MySql => {
            let key = target_schema
                .clone()
                .or_else(|| url_database(url))
                .filter(|d| !d.is_empty())
                .map(|db| format!("{source}@{db}"));
            let sink = MySqlSink::connect(MySqlSinkConfig {
                url: url.replacen("mariadb://", "mysql://", 1),
                target_schema,
                batch_rows,
            })
            .await?;
            (Box::new(sink), key)
        }
    })
}

/// The database a URL names (its path), if any.
fn url_database(url: &str) -> Option<String> {
    let base = url.split('?').next().unwrap_or(url);
    let rest = &base[base.find("://")? + 3..];
    let path = &rest[rest.find('/')? + 1..];
    (!path.is_empty()).then(|| path.to_string())
}

/// The kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Postgres,
    MySql,
}

impl TargetKind {
    /// The kind of `url`, given as option `flag`.
    fn of(url: &str, flag: &str) -> Result<Self, PipelineError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(TargetKind::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(TargetKind::MySql)
        } else {
            Err(PipelineError::Config(format!(
                "{flag} {:?}: give a postgres:// or mysql:// URL",
                crate::status::redact(url)
            )))
        }
    }
}

/// `url` naming database `db` instead of its own.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// One source's restore test: the restore's report and each table's check.
#[derive(Debug)]
pub struct RestoreTestResult {
    /// The source.
    pub source: String,
    /// The scratch database restored into (dropped when every table checked out).
    pub database: String,
    /// What the restore did.
    pub report: tributary_snapshot::RestoreReport,
    /// Each table's counts, checksums and first differences.
    pub tables: Vec<tributary_snapshot::TableCheck>,
}

impl RestoreTestResult {
    /// Whether every table holds what the archive says.
    pub fn ok(&self) -> bool {
        self.tables.iter().all(|t| t.ok())
    }
}

/// Where the rows read back from a restore test's scratch database go.
struct ReadBack<'a> {
    test: &'a mut tributary_snapshot::RestoreTest,
    /// Restored table → the source table it stands for.
    tables: BTreeMap<tributary_schemas::TableId, tributary_schemas::TableId>,
}

#[async_trait::async_trait]
impl SnapshotOutput for ReadBack<'_> {
    async fn event(
        &mut self,
        schemas: &tributary_schemas::AvroSchemas,
        event: &tributary_schemas::ChangeEvent,
    ) -> Result<(), CaptureError> {
        let (Some(table), Some(row)) = (self.tables.get(&event.table), &event.after) else {
            return Ok(());
        };
        self.test
            .observe(table, &schemas.table, row)
            .map_err(|e| CaptureError::Setup(e.to_string()))
    }
}

/// `snapshot verify --restore-test`: restores each archived source (or only `only`) to
/// its newest archived instant (newest snapshot, then the archive) into a new database on
/// scratch server `scratch` (of the source's kind), reads every restored table back, and
/// compares row counts and content checksums with what the archive says. The scratch
/// database is dropped when everything checks out, and kept for a look otherwise.
pub async fn restore_test(
    config: &Config,
    only: Option<&str>,
    scratch: &str,
) -> Result<Vec<RestoreTestResult>, PipelineError> {
    let backup = backup_of(config)?;
    let store = tributary_snapshot::Store::open(backup)?;
    let kind = TargetKind::of(scratch, "--scratch")?;
    let mut out = Vec::new();
    for source in archived_selection(config, only)? {
        let source_kind = match &config.sources[&source] {
            SourceConfig::Postgres(_) => TargetKind::Postgres,
            SourceConfig::Mysql(_) => TargetKind::MySql,
        };
        if source_kind != kind {
            return Err(PipelineError::Config(format!(
                "--scratch {:?}: source {source} is {source_kind:?}; a restore test restores into a scratch server of the same kind, so values compare exactly",
                crate::status::redact(scratch)
            )));
        }
        let database = format!(
            "tributary_restore_test_{}_{}",
            // (At most 63 bytes in all: PostgreSQL cuts longer names.)
            source
                .to_ascii_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                .chars()
                .take(16)
                .collect::<String>(),
            chrono::Utc::now().format("%Y%m%d%H%M%S%6f")
        );
        let create = format!("CREATE DATABASE {database}");
        // (PostgreSQL: closing sessions of the restore may linger a moment.)
        let drop_sql = match kind {
            TargetKind::Postgres => format!("DROP DATABASE {database} WITH (FORCE)"),
            TargetKind::MySql => format!("DROP DATABASE {database}"),
        };
        let url = with_database(scratch, &database);
        let scratch_sql = |sql: String| async move {
            let failed = |e: String| {
                PipelineError::Config(format!(
                    "--scratch {:?}: {sql}: {e}",
                    crate::status::redact(scratch)
                ))
            };
            match kind {
                TargetKind::Postgres => {
                    let (client, conn) = tokio_postgres::connect(scratch, tokio_postgres::NoTls)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    let task = tokio::spawn(conn);
                    let done = client
                        .batch_execute(&sql)
                        .await
                        .map_err(|e| failed(e.to_string()));
                    drop(client);
                    let _ = task.await;
                    done
                }
                TargetKind::MySql => {
                    use mysql_async::prelude::Queryable;
                    let opts =
                        mysql_async::Opts::from_url(&scratch.replacen("mariadb://", "mysql://", 1))
                            .map_err(|e| failed(e.to_string()))?;
                    let mut conn = mysql_async::Conn::new(opts)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    let done = conn
                        .query_drop(&sql)
                        .await
                        .map_err(|e| failed(e.to_string()));
                    let _ = conn.disconnect().await;
                    done
                }
            }
        };
        scratch_sql(create).await?;
        let target_schema = (kind == TargetKind::MySql).then(|| database.clone());
        let options = tributary_snapshot::RestoreOptions {
            target: tributary_snapshot::Target::Latest,
            tables: Vec::new(),
            max_tx_events: 10_000,
            batch_rows: 5_000,
            copy_decoder: Some(tributary_capture::postgres::relations::decode_copy_line),
        };
        let mut test = tributary_snapshot::RestoreTest::new()?;
        let (mut sink, watermark_key) =
            target_sink(&url, &source, target_schema.clone(), options.batch_rows).await?;
        let report = {
            let mut tap = tributary_snapshot::RestoreSink {
                inner: sink.as_mut(),
                watermark_key: watermark_key.clone(),
                test: Some(&mut test),
            };
            tributary_snapshot::restore(&store, &source, &options, Some(&mut tap)).await?
        };
        drop(sink);
        // Read every restored table back, as a capture of the scratch database would.
        let mut tables = BTreeMap::new();
        for t in test.tables() {
            let restored = match &target_schema {
                Some(db) => tributary_schemas::TableId::new(db, &t.name),
                None => t.clone(),
            };
            if let Some(other) = tables.insert(restored.clone(), t.clone()) {
                return Err(PipelineError::Config(format!(
                    "source {source}: tables {other} and {t} both restore into {restored}; a MySQL restore test needs table names unique across the source's databases"
                )));
            }
        }
        let include: Vec<String> = tables
            .keys()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        let state_dir = tempfile::tempdir().map_err(|e| PipelineError::Io {
            path: "a scratch directory".into(),
            message: e.to_string(),
        })?;
        let state = StateStore::open(state_dir.path())?;
        let mut back = ReadBack {
            test: &mut test,
            tables,
        };
        match kind {
            TargetKind::Postgres => {
                let mut pg = tributary_capture::postgres::PostgresSourceConfig::new(&url);
                pg.include = include;
                if !pg.include.is_empty() {
                    tributary_capture::postgres::stream::read_tables(
                        &source, &pg, &state, &mut back,
                    )
                    .await?;
                }
            }
            TargetKind::MySql => {
                let mut my = tributary_capture::mysql::MySqlSourceConfig::new(url.replacen(
                    "mariadb://",
                    "mysql://",
                    1,
                ));
                my.include = include;
                if !my.include.is_empty() {
                    tributary_capture::mysql::read_tables(&source, &my, &state, &mut back).await?;
                }
            }
        }
        let result = RestoreTestResult {
            source: source.clone(),
            database: database.clone(),
            report,
            tables: test.compare()?,
        };
        if result.ok() {
            scratch_sql(drop_sql).await?;
            if kind == TargetKind::MySql {
                // The restore's watermark row (see `target_sink`).
                let key = watermark_key.unwrap_or_default();
                let quoted = |k: &str| format!("'{}'", k.replace('\\', "\\\\").replace('\'', "''"));
                scratch_sql(format!(
                    "DELETE FROM tributary.watermarks WHERE source IN ({}, {})",
                    quoted(&key),
                    quoted(&tributary_snapshot::restore::snapshot_load_key(&key))
                ))
                .await?;
            }
        }
        out.push(result);
    }
    Ok(out)
}

/// Where a backup snapshot's rows go: the snapshot writer.
struct SnapshotRows(Option<tributary_snapshot::SnapshotWriter>);

#[async_trait::async_trait]
impl SnapshotOutput for SnapshotRows {
    async fn event(
        &mut self,
        schemas: &tributary_schemas::AvroSchemas,
        event: &tributary_schemas::ChangeEvent,
    ) -> Result<(), CaptureError> {
        let writer = self.0.as_mut().expect("the writer lives until finish");
        writer
            .row(schemas, event)
            .await
            .map_err(|e| CaptureError::Setup(e.to_string()))
    }

    fn wants_copy_text(&self) -> bool {
        true
    }

    async fn copy_text(
        &mut self,
        table: &tributary_schemas::TableSchema,
        lines: &[u8],
        rows: u64,
    ) -> Result<(), CaptureError> {
        let writer = self.0.as_mut().expect("the writer lives until finish");
        writer
            .copy_text(table, lines, rows)
            .await
            .map_err(|e| CaptureError::Setup(e.to_string()))
    }
}

/// Takes a snapshot of each archived source (or only `only`) into the `[backup]` store:
/// its captured tables, consistent with one position of its log. Table versions are
/// registered in `state` (the capture's, when this process runs it) or in a scratch store.
pub async fn snapshot_create(
    config: &Config,
    only: Option<&str>,
    state: Option<&StateStore>,
) -> Result<Vec<tributary_snapshot::SnapshotManifest>, PipelineError> {
    let backup = backup_of(config)?;
    let selected = archived_selection(config, only)?;
    let store = tributary_snapshot::Store::open(backup)?;
    let scratch;
    let state = match state {
        Some(s) => s,
        None => {
            scratch = tempfile::tempdir().map_err(|e| PipelineError::Io {
                path: "a scratch directory".into(),
                message: e.to_string(),
            })?;
            &StateStore::open(scratch.path())?
        }
    };
    let mut out = Vec::new();
    for name in &selected {
        let source = &config.sources[name];
        let mut rows = SnapshotRows(Some(tributary_snapshot::SnapshotWriter::new(
            store.clone(),
            name,
            backup.zstd_level,
            backup.snapshot_object_bytes as usize,
        )));
        let (position, at) = match source {
            SourceConfig::Postgres(pg) => {
                let (lsn, at) = tributary_capture::postgres::stream::copy_tables(
                    name,
                    pg,
                    state,
                    pg.snapshot_chunk_rows,
                    backup.snapshot_sessions,
                    &mut rows,
                )
                .await?;
                // Every transaction committed before the consistent point is in the copy,
                // and the copy's rows sit just below it, as the initial snapshot's do.
                (
                    tributary_schemas::Position::pg(lsn.saturating_sub(1), u64::MAX),
                    at,
                )
            }
            SourceConfig::Mysql(my) => {
                let copy =
                    tributary_capture::mysql::copy_tables(name, my, state, &mut rows).await?;
                // Every transaction before the binlog position is in the copy; the events
                // of the next one are numbered after it.
                let file = tributary_capture::mysql::file_seq(&copy.start.file)?;
                (
                    tributary_schemas::Position::mysql(file, copy.start.pos, u64::MAX),
                    copy.at_micros,
                )
            }
        };
        let writer = rows.0.take().expect("present until here");
        out.push(writer.finish(position, at).await?);
    }
    Ok(out)
}

/// Applies the `[backup]` retention settings to each archived source (or only `only`);
/// `dry`: only reports. Returns each source's report.
pub async fn prune(
    config: &Config,
    only: Option<&str>,
    dry: bool,
) -> Result<Vec<(String, tributary_snapshot::PruneReport)>, PipelineError> {
    let backup = backup_of(config)?;
    let retention = backup.retention().map_err(PipelineError::Config)?;
    let store = tributary_snapshot::Store::open(backup)?;
    let now = chrono::Utc::now().timestamp_micros();
    let mut out = Vec::new();
    for set in file_sets(config, only) {
        let report = tributary_snapshot::prune_files(&store, &set, retention, now, dry).await?;
        if !dry && !report.snapshots.is_empty() {
            tracing::info!(set, snapshots = ?report.snapshots, anchor = ?report.anchor, "retention pruned files snapshots");
        }
        out.push((set, report));
    }
    for name in archived_selection(config, only)? {
        let report = tributary_snapshot::prune(&store, &name, retention, now, dry).await?;
        if !dry && (report.segments > 0 || !report.snapshots.is_empty()) {
            tracing::info!(source = name, snapshots = ?report.snapshots, segments = report.segments, anchor = ?report.anchor, "retention pruned");
        }
        out.push((name, report));
    }
    Ok(out)
}

/// The cron expression `text`, parsed: five fields (minute hour day month weekday), or
/// six with seconds first; UTC.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, PipelineError> {
    croner::Cron::new(text)
        .with_seconds_optional()
        .parse()
        .map_err(|e| {
            PipelineError::Config(format!(
                "backup.snapshot_schedule {text:?}: {e} (a cron expression such as \"0 2 * * *\")"
            ))
        })
}

/// Takes the snapshots `schedule` asks for until shutdown. A failed snapshot is logged
/// and tried again at the next occasion; it does not stop the run.
async fn scheduled_snapshots(
    config: Arc<Config>,
    schedule: String,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let cron = parse_schedule(&schedule)?;
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
        match files_snapshot_create(&config, None).await {
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
        match snapshot_create(&config, None, None).await {
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
        if let Err(e) = prune(&config, None, false).await {
            tracing::error!(error = %e, "retention: nothing was pruned");
        }
    }
}

/// Runs `make()` again after transient failures, with backoff.
async fn supervise<F, Fut>(
    what: String,
    mut shutdown: watch::Receiver<bool>,
    make: F,
) -> Result<(), PipelineError>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), PipelineError>> + Send,
{
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = std::time::Instant::now();
        let outcome = make().await;
        if started.elapsed() > Duration::from_secs(60) {
            // It ran well for a while: start the backoff over.
            backoff = Duration::from_secs(1);
        }
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                tracing::warn!(task = what, error = %e, retry_in_s = backoff.as_secs(), "task failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(task = what, error = %e, "task stopped");
                return Err(e);
            }
        }
    }
}
