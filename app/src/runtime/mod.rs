//! Runs the configured capture agents, apply loops, archivers and schedule as supervised
//! tasks.
//!
//! Each task restarts after a transient error (a database or broker went away) with
//! exponential backoff from 1 s to 30 s, resuming from its durable position; a definite
//! error (configuration, rights, data the sink rejects) stops that task with its message
//! and makes the whole run fail, so nothing retries in a tight loop.

mod loops;

pub use loops::ARCHIVE;
pub(crate) use loops::{applier, Loop};

use crate::config::Config;
use crate::server::registry::{self as registry_server, RegistryView};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tributary_capture::publisher::Publisher;
use tributary_capture::state::StateStore;
use tributary_pipeline::apply::ApplyStats;
use tributary_pipeline::notify::Notifier;
use tributary_pipeline::PipelineError;
use tributary_transport::Consumer;

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
        let producer = config.transport.producer(&config.state_dir).await?;
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
                        source
                            .run(&name, store, publisher, shutdown)
                            .await
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
        let notifier = config
            .notify_conflicts
            .as_ref()
            .map(|url| Notifier::start(url.expose().to_string()));
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
                        async move { loops::apply_loop(&config, &lp, stats, shutdown).await }
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
            tasks.spawn(crate::schedule::scheduled_snapshots(
                config, schedule, shutdown2,
            ));
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
                    async move {
                        loops::archiver(&config, &source, stats)
                            .await?
                            .run(shutdown)
                            .await
                    }
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

/// The consumer of consumer group `group` on the configured transport.
pub(crate) async fn consumer(
    config: &Config,
    group: &str,
) -> Result<Arc<dyn Consumer>, PipelineError> {
    Ok(config.transport.consumer(&config.state_dir, group).await?)
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
