//! The state of every supervised task, for health checks and (to come) status, metrics
//! and events.
//!
//! Each task is on the board from the start of a run (`starting`); its supervisor marks
//! it `running` when it starts, `retrying` with the error after a transient failure,
//! `failed` with the error after a definite one, and `stopped` when it ends on a
//! shutdown. A run is ready when every task is running.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Registered, not started yet.
    Starting,
    /// Working.
    Running,
    /// Failed for a reason that may pass (a server went away); it starts again soon.
    Retrying,
    /// Failed for good: the error says what to fix.
    Failed,
    /// Ended on a shutdown.
    Stopped,
}

/// One task's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskState {
    /// Where it is.
    pub state: State,
    /// The last error, while retrying or failed.
    pub error: Option<String>,
    /// When it got there (RFC 3339).
    pub since: String,
    /// How often it started again after a failure.
    pub restarts: u64,
}

/// Every task of a run, by name (`capture hq`, `apply replica/hq`, `archive hq`, …).
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<BTreeMap<String, TaskState>>>);

impl Board {
    /// Puts `task` on the board as starting.
    pub fn register(&self, task: &str) {
        self.entries().insert(
            task.to_string(),
            TaskState {
                state: State::Starting,
                error: None,
                since: now(),
                restarts: 0,
            },
        );
    }

    /// Moves `task` to `state` (with `error` when it failed); a start after a failure
    /// counts as a restart.
    pub fn set(&self, task: &str, state: State, error: Option<String>) {
        let mut entries = self.entries();
        let entry = entries.entry(task.to_string()).or_insert(TaskState {
            state: State::Starting,
            error: None,
            since: now(),
            restarts: 0,
        });
        if state == State::Running && entry.state == State::Retrying {
            entry.restarts += 1;
        }
        // The error stays on a restart, so a task that keeps failing shows why.
        if error.is_some() || state != State::Running {
            entry.error = error;
        }
        entry.state = state;
        entry.since = now();
    }

    /// Every task's state, by name.
    pub fn snapshot(&self) -> BTreeMap<String, TaskState> {
        self.entries().clone()
    }

    /// The tasks that are not running, with their states (empty: the run is ready).
    pub fn not_running(&self) -> BTreeMap<String, TaskState> {
        self.entries()
            .iter()
            .filter(|(_, t)| t.state != State::Running)
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskState>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_moves_through_its_states() {
        let board = Board::default();
        board.register("capture hq");
        board.register("apply r/hq");
        assert_eq!(board.not_running().len(), 2);
        board.set("capture hq", State::Running, None);
        board.set("apply r/hq", State::Running, None);
        assert!(board.not_running().is_empty());
        board.set(
            "apply r/hq",
            State::Retrying,
            Some("connection refused".into()),
        );
        let waiting = board.not_running();
        assert_eq!(waiting["apply r/hq"].state, State::Retrying);
        assert_eq!(
            waiting["apply r/hq"].error.as_deref(),
            Some("connection refused")
        );
        board.set("apply r/hq", State::Running, None);
        let all = board.snapshot();
        assert_eq!(all["apply r/hq"].restarts, 1);
        assert_eq!(all["capture hq"].restarts, 0);
        board.set(
            "capture hq",
            State::Failed,
            Some("permission denied".into()),
        );
        assert_eq!(board.not_running()["capture hq"].state, State::Failed);
    }
}
