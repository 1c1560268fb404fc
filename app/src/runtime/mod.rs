//! Runs the configured capture agents, apply loops, archivers and schedule as supervised
//! tasks.
//!
//! Each task restarts after a transient error (a database or broker went away) with
//! exponential backoff from 1 s to 30 s, resuming from its durable position; a definite
//! error (configuration, rights, data the sink rejects) stops that task with its message
//! and makes the whole run fail, so nothing retries in a tight loop.

pub mod board;
mod loops;

pub use loops::ARCHIVE;
pub(crate) use loops::{applier, Loop};

use crate::config::Config;
use crate::server::api as api_server;
use crate::server::metrics::{CaptureView, MetricsView};
use crate::server::registry::{self as registry_server, RegistryView};
use board::{Board, State};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tributary_capture::publisher::Publisher;
use tributary_capture::state::StateStore;
use tributary_capture::stats::CaptureStats;
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
    /// Serve the control plane (`[api]`).
    pub api: bool,
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
    let board = Board::default();
    let mut metrics = MetricsView {
        board: board.clone(),
        apply: stats.clone(),
        capture: BTreeMap::new(),
    };
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
            let counters = Arc::new(CaptureStats::default());
            metrics.capture.insert(
                name.clone(),
                CaptureView {
                    prefix: source.prefix(name),
                    stats: counters.clone(),
                },
            );
            let (name, source, producer, store) = (
                name.clone(),
                source.clone(),
                producer.clone(),
                store.clone(),
            );
            let shutdown = shutdown.clone();
            tasks.spawn(supervise(
                board.clone(),
                format!("capture {name}"),
                shutdown.clone(),
                move || {
                    let (name, source, producer, store, shutdown, counters) = (
                        name.clone(),
                        source.clone(),
                        producer.clone(),
                        store.clone(),
                        shutdown.clone(),
                        counters.clone(),
                    );
                    async move {
                        let publisher = Publisher::new(producer, &name, &source.prefix(&name))
                            .with_stats(counters);
                        source
                            .run(&name, store, publisher, shutdown)
                            .await
                            .map_err(PipelineError::from)
                    }
                },
            ));
        }
    }

    // The control plane binds first, so a taken address fails the run at once.
    let api_listener = match roles.api {
        true => Some(api_server::bind(config.api.listen).await?),
        false => None,
    };
    let view = RegistryView::default();
    let registry_listener = match (roles.registry, &config.registry) {
        (true, Some(registry)) => Some(registry_server::bind(registry.listen).await?),
        _ => None,
    };
    if registry_listener.is_some() || api_listener.is_some() {
        for (name, source) in &config.sources {
            let prefix = source.prefix(name);
            let (config, view, shutdown2) = (config.clone(), view.clone(), shutdown.clone());
            tasks.spawn(supervise(
                board.clone(),
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
        if let Some(listener) = registry_listener {
            tasks.spawn(registry_server::serve(
                listener,
                view.clone(),
                shutdown.clone(),
            ));
        }
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
                    board.clone(),
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
                board.clone(),
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

    if let Some(listener) = api_listener {
        let router = api_server::router(&config.api, metrics, registry_server::router(view))?;
        tasks.spawn(api_server::serve(listener, router, shutdown.clone()));
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

/// Runs `make()` again after transient failures, with backoff, keeping task `what`'s
/// state on `board` (where it is put at once, as starting).
fn supervise<F, Fut>(
    board: Board,
    what: String,
    mut shutdown: watch::Receiver<bool>,
    make: F,
) -> impl Future<Output = Result<(), PipelineError>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), PipelineError>> + Send,
{
    board.register(&what);
    async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            board.set(&what, State::Running, None);
            let outcome = make().await;
            if started.elapsed() > Duration::from_secs(60) {
                // It ran well for a while: start the backoff over.
                backoff = Duration::from_secs(1);
            }
            match outcome {
                Ok(()) => {
                    board.set(&what, State::Stopped, None);
                    return Ok(());
                }
                Err(e) if e.is_transient() && !*shutdown.borrow() => {
                    tracing::warn!(task = what, error = %e, retry_in_s = backoff.as_secs(), "task failed; retrying");
                    board.set(&what, State::Retrying, Some(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => {
                            board.set(&what, State::Stopped, Some(e.to_string()));
                            return Ok(());
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::error!(task = what, error = %e, "task stopped");
                    board.set(&what, State::Failed, Some(e.to_string()));
                    return Err(e);
                }
            }
        }
    }
}
