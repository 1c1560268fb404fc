//! A Tributary run inside the test process: the `runtime::run` a scenario starts, stops
//! and watches.

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tributary::runtime::{self, Roles, Stats};
use tributary::{Config, PipelineError};

/// Capture and pipeline (and, when asked, the registry endpoint) of one configuration.
pub struct Running {
    /// Turns true to stop the run.
    pub stop: watch::Sender<bool>,
    /// The run; it ends with the run's outcome.
    pub task: JoinHandle<Result<(), PipelineError>>,
    /// The apply loops' counters, by `<sink>/<source>`.
    pub stats: Stats,
}

impl Running {
    /// Starts capture and pipeline of `config`, and the registry endpoint when `registry`.
    pub fn start(config: Config, registry: bool) -> Running {
        Running::start_roles(
            config,
            Roles {
                capture: true,
                pipeline: true,
                registry,
                api: false,
            },
        )
    }

    /// Starts `roles` of `config`.
    pub fn start_roles(config: Config, roles: Roles) -> Running {
        let (stop, shutdown) = watch::channel(false);
        let stats = runtime::stats_for(&config);
        let task = tokio::spawn(runtime::run(config, roles, stats.clone(), shutdown));
        Running { stop, task, stats }
    }

    /// Stops the run and fails if it had ended with an error.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?.context("pipeline ended with an error")?;
        Ok(())
    }
}
