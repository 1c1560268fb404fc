//! Runs the configured capture agents, apply loops, archivers and schedule as supervised
//! tasks.
//!
//! Each task restarts after a transient error (a database or broker went away) with
//! exponential backoff (`[retry] initial` to `max`, 1 s to 30 s by default), resuming
//! from its durable position; a definite error (configuration, rights, data the sink
//! rejects), or transient ones for longer than `[retry] give_up_after`, stops that task
//! with its message, and only that task: the others go on. The failed task waits, shown
//! `failed` on the board, until asked to restart ([`crate::board::Board::restart`]) or for
//! `[retry] restart_after`. The run ends with an error when every task has failed, or at
//! the first failure with `[retry] fail_fast`.

mod loops;

pub use loops::ARCHIVE;
pub(crate) use loops::{applier, Loop};

use crate::board::{Board, State};
use crate::config::{Config, RetryPolicy};
use crate::server::api as api_server;
use crate::server::metrics::{CaptureView, MetricsView};
use crate::server::registry::{self as registry_server, RegistryView};
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

pub use crate::server::metrics::Stats;

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
    let policy = config.retry.policy().map_err(PipelineError::Config)?;
    let config = Arc::new(config);
    let board = Board::default();
    let supervisor = Supervisor {
        board: board.clone(),
        policy,
    };
    let mut metrics = MetricsView {
        board: board.clone(),
        apply: stats.clone(),
        capture: BTreeMap::new(),
        backup: None,
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
                supervisor.clone(),
                format!("capture {name}"),
                shutdown.clone(),
                move |connected: Connected| {
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
                            .with_stats(counters)
                            .on_connected(Arc::new(move || connected.now()));
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
                supervisor.clone(),
                format!("registry follower {name}"),
                shutdown.clone(),
                move |connected: Connected| {
                    let (config, prefix, view, shutdown) = (
                        config.clone(),
                        prefix.clone(),
                        view.clone(),
                        shutdown2.clone(),
                    );
                    async move {
                        let consumer = consumer(&config, "tributary-registry").await?;
                        connected.now();
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
                    supervisor.clone(),
                    format!("apply {key}"),
                    shutdown.clone(),
                    move |connected: Connected| {
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
                        async move {
                            loops::apply_loop(&config, &lp, stats, shutdown, connected).await
                        }
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
            let stats = Arc::new(crate::schedule::BackupStats::default());
            metrics.backup = Some(stats.clone());
            tasks.spawn(crate::schedule::scheduled_snapshots(
                config, schedule, stats, shutdown2,
            ));
        }
        for source in config.archived_sources() {
            let key = format!("{ARCHIVE}/{source}");
            let stats = stats.get(&key).cloned().unwrap_or_default();
            let (config, shutdown2) = (config.clone(), shutdown.clone());
            tasks.spawn(supervise(
                supervisor.clone(),
                format!("archive {source}"),
                shutdown.clone(),
                move |connected: Connected| {
                    let (config, source, stats, shutdown) = (
                        config.clone(),
                        source.clone(),
                        stats.clone(),
                        shutdown2.clone(),
                    );
                    async move {
                        let mut archiver = loops::archiver(&config, &source, stats).await?;
                        connected.now();
                        archiver.run(shutdown).await
                    }
                },
            ));
        }
    }

    if let Some(listener) = api_listener {
        let router = api_server::router(&config.api, metrics, registry_server::router(view))?;
        tasks.spawn(api_server::serve(listener, router, shutdown.clone()));
    }

    // Every task failed: nothing is left to wait for, so the run ends (with the errors).
    {
        let (board, stop_all, mut shutdown) = (board.clone(), stop_all.clone(), shutdown.clone());
        let mut changes = board.subscribe();
        tasks.spawn(async move {
            loop {
                if let Some(failed) = board.all_failed() {
                    tracing::error!(tasks = ?failed, "every task failed; stopping");
                    let _ = stop_all.send(true);
                    return Ok(());
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return Ok(()) },
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
            }
        });
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

/// What every supervised task shares: the board its state goes on, and the retry policy.
#[derive(Clone)]
struct Supervisor {
    board: Board,
    policy: RetryPolicy,
}

/// Runs `make(connected)` again after transient failures, with backoff, keeping task
/// `what`'s state on the board (where it is put at once, as starting; the task calls
/// `connected.now()` to show itself running). After a definite failure
/// the task waits, failed, for a restart request, `restart_after` or the shutdown; it
/// returns the error only with `fail_fast`, or when every task failed.
fn supervise<F, Fut>(
    supervisor: Supervisor,
    what: String,
    mut shutdown: watch::Receiver<bool>,
    make: F,
) -> impl Future<Output = Result<(), PipelineError>>
where
    F: Fn(Connected) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), PipelineError>> + Send,
{
    let Supervisor { board, policy } = supervisor;
    board.register(&what);
    let mut restart = board.restart_signal(&what);
    async move {
        let mut backoff = policy.initial;
        // Since when the task has been failing without a good run in between.
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let started = tokio::time::Instant::now();
            // A restart asked for from here on (during this attempt) is for this
            // attempt's failure; earlier ones were answered by the wait that ended.
            restart.borrow_and_update();
            let outcome = make(Connected {
                board: board.clone(),
                task: what.clone().into(),
            })
            .await;
            if started.elapsed() > Duration::from_secs(60) {
                // It ran well for a while: start the backoff over.
                backoff = policy.initial;
                failing_since = None;
            }
            let e = match outcome {
                Ok(()) => {
                    board.set(&what, State::Stopped, None);
                    return Ok(());
                }
                Err(e) => e,
            };
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            let given_up = policy.give_up_after.is_some_and(|g| since.elapsed() >= g);
            if *shutdown.borrow() {
                // Stopping anyway: an error on the way out (a connection cut by the
                // shutdown) is no failure of the run.
                tracing::info!(task = what, error = %e, "task ended with an error while stopping");
                board.set(&what, State::Stopped, Some(e.to_string()));
                return Ok(());
            }
            if e.is_transient() && !given_up {
                tracing::warn!(task = what, error = %e, retry_in_s = backoff.as_secs_f64(), "task failed; retrying");
                board.set(&what, State::Retrying, Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = restart.changed() => {}
                    _ = shutdown.wait_for(|s| *s) => {
                        board.set(&what, State::Stopped, Some(e.to_string()));
                        return Ok(());
                    }
                }
                backoff = (backoff * 2).min(policy.max);
                continue;
            }
            let message = match given_up {
                true => format!(
                    "{e} (failing since {}s; retry.give_up_after)",
                    since.elapsed().as_secs()
                ),
                false => e.to_string(),
            };
            tracing::error!(task = what, error = %message, "task stopped");
            board.set(&what, State::Failed, Some(message.clone()));
            if policy.fail_fast {
                return Err(e);
            }
            let restart_after = async {
                match policy.restart_after {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = restart.changed() => tracing::info!(task = what, "restart requested"),
                _ = restart_after => tracing::info!(task = what, "restarting (retry.restart_after)"),
                _ = shutdown.wait_for(|s| *s) => {
                    // The run's error when it stops because every task failed.
                    return match board.all_failed() {
                        Some(_) => Err(e),
                        None => Ok(()),
                    };
                }
            }
            // Starting again: retrying (with the error) until it is connected.
            board.set(&what, State::Retrying, Some(message));
            backoff = policy.initial;
            failing_since = None;
        }
    }
}

/// Given to a supervised task: it calls [`Connected::now`] once connected (to its
/// source, its sink, its transport), which shows it `running` on the board.
#[derive(Clone)]
pub struct Connected {
    board: Board,
    task: Arc<str>,
}

impl Connected {
    /// The task is connected and working.
    pub fn now(&self) {
        self.board.set(&self.task, State::Running, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tributary_capture::CaptureError;

    fn supervisor(policy: RetryPolicy) -> Supervisor {
        Supervisor {
            board: Board::default(),
            policy,
        }
    }

    fn policy() -> RetryPolicy {
        crate::config::RetryConfig::default().policy().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_task_starts_again_after_restart_after() {
        let sup = supervisor(RetryPolicy {
            restart_after: Some(Duration::from_secs(600)),
            ..policy()
        });
        let board = sup.board.clone();
        let (_stop, shutdown) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let task = supervise(sup, "t".into(), shutdown, move |connected: Connected| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            connected.now();
            async move {
                match run {
                    0 => Err(PipelineError::Config("a definite error".into())),
                    _ => Ok(()),
                }
            }
        });
        task.await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "started again after the wait"
        );
        let t = &board.snapshot()["t"];
        assert_eq!((t.state, t.restarts), (State::Stopped, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_for_longer_than_give_up_after_mark_the_task_failed() {
        let sup = supervisor(RetryPolicy {
            give_up_after: Some(Duration::from_secs(10)),
            fail_fast: true,
            ..policy()
        });
        let board = sup.board.clone();
        let (_stop, shutdown) = watch::channel(false);
        let err = supervise(
            sup,
            "t".into(),
            shutdown,
            |connected: Connected| async move {
                connected.now();
                Err(PipelineError::Capture(CaptureError::Replication(
                    "the server went away".into(),
                )))
            },
        )
        .await
        .unwrap_err();
        assert!(err.is_transient(), "{err}");
        let t = &board.snapshot()["t"];
        assert_eq!(t.state, State::Failed);
        let error = t.error.as_deref().unwrap();
        assert!(
            error.contains("retry.give_up_after") && error.contains("went away"),
            "{error}"
        );
        assert!(
            t.restarts >= 3,
            "retried with backoff first: {}",
            t.restarts
        );
    }
}
