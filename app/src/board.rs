//! The state of every supervised task, for the health checks, the metrics and the
//! tasks API (and, to come, status and events). The runtime writes it; the server reads
//! it; it depends on neither.
//!
//! Each task is on the board from the start of a run (`starting`); it shows itself
//! `running` once connected, its supervisor `retrying` with the error after a transient failure,
//! `failed` with the error after a definite one, and `stopped` when it ends on a
//! shutdown. A run is ready when every task is running. A failed task waits on the board
//! for a restart request ([`Board::restart`]).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Registered, or in its first attempt to connect.
    Starting,
    /// Connected and working.
    Running,
    /// Failed for a reason that may pass (a server went away): waiting to start again,
    /// or trying to connect again.
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
    /// The last error (kept while running again after one, until the next).
    pub error: Option<String>,
    /// When it was last set (RFC 3339): each failed attempt sets it anew.
    pub since: String,
    /// How often it connected again after a failure.
    pub restarts: u64,
}

/// Every task of a run, by name (`capture hq`, `apply replica/hq`, `archive hq`, …).
#[derive(Debug, Clone)]
pub struct Board {
    entries: Arc<Mutex<BTreeMap<String, TaskState>>>,
    /// Restart requests per task, numbered: a task waits for a number it has not seen.
    restarts: Arc<Mutex<BTreeMap<String, watch::Sender<u64>>>>,
    /// Bumped on every change.
    changes: watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            entries: Arc::default(),
            restarts: Arc::default(),
            changes: watch::channel(0).0,
        }
    }
}

/// Why a restart request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartRefused {
    /// No task by that name.
    Unknown,
    /// The task is running (or starting): there is nothing to restart.
    NotFailed(State),
}

impl Board {
    /// Puts `task` on the board as starting.
    pub fn register(&self, task: &str) {
        self.restart_signal(task);
        self.entries().insert(
            task.to_string(),
            TaskState {
                state: State::Starting,
                error: None,
                since: now(),
                restarts: 0,
            },
        );
        self.changes.send_modify(|n| *n += 1);
    }

    /// Moves `task` to `state` (with `error` when it failed); running again after a
    /// failure (connected again) counts as a restart.
    pub fn set(&self, task: &str, state: State, error: Option<String>) {
        let mut entries = self.entries();
        let entry = entries.entry(task.to_string()).or_insert(TaskState {
            state: State::Starting,
            error: None,
            since: now(),
            restarts: 0,
        });
        if state == State::Running && matches!(entry.state, State::Retrying | State::Failed) {
            entry.restarts += 1;
        }
        // The error stays on a restart, so a task that keeps failing shows why.
        if error.is_some() || state != State::Running {
            entry.error = error;
        }
        entry.state = state;
        entry.since = now();
        drop(entries);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Asks failed (or retrying) `task` to start again now.
    pub fn restart(&self, task: &str) -> Result<(), RestartRefused> {
        let state = self
            .entries()
            .get(task)
            .map(|t| t.state)
            .ok_or(RestartRefused::Unknown)?;
        if !matches!(state, State::Failed | State::Retrying) {
            return Err(RestartRefused::NotFailed(state));
        }
        self.restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(task.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .send_modify(|n| *n += 1);
        Ok(())
    }

    /// The restart requests of `task`: a task marks what it has seen
    /// (`borrow_and_update`) before it shows itself failed or retrying, and waits for
    /// `changed`, so a request made before it failed cannot restart it later.
    pub fn restart_signal(&self, task: &str) -> watch::Receiver<u64> {
        self.restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(task.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// A receiver that sees every change of the board.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The tasks and their errors when every task on the board has failed (none when
    /// the board is empty or some task is not failed).
    pub fn all_failed(&self) -> Option<Vec<(String, String)>> {
        let entries = self.entries();
        if entries.is_empty() || entries.values().any(|t| t.state != State::Failed) {
            return None;
        }
        Some(
            entries
                .iter()
                .map(|(n, t)| (n.clone(), t.error.clone().unwrap_or_default()))
                .collect(),
        )
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
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
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
        assert_eq!(board.all_failed(), None, "the apply loop still runs");
        assert_eq!(
            board.restart("apply r/hq"),
            Err(RestartRefused::NotFailed(State::Running))
        );
        assert_eq!(board.restart("nothing"), Err(RestartRefused::Unknown));
        board.set("apply r/hq", State::Failed, Some("value refused".into()));
        assert_eq!(
            board.all_failed(),
            Some(vec![
                ("apply r/hq".to_string(), "value refused".to_string()),
                ("capture hq".to_string(), "permission denied".to_string())
            ])
        );
        assert_eq!(board.restart("capture hq"), Ok(()));
        board.set("capture hq", State::Running, None);
        assert_eq!(board.snapshot()["capture hq"].restarts, 1);
    }

    #[test]
    fn a_restart_request_is_seen_once_and_only_after_the_failure() {
        let board = Board::default();
        board.register("t");
        let mut requests = board.restart_signal("t");
        board.set("t", State::Failed, Some("x".into()));
        let changes = board.subscribe();
        board.restart("t").unwrap();
        // A request made before the task waits is kept for it...
        assert!(requests.has_changed().unwrap());
        requests.borrow_and_update();
        board.set("t", State::Running, None);
        assert!(changes.has_changed().unwrap());
        // ...and one seen does not restart it again after its next failure.
        board.set("t", State::Failed, Some("y".into()));
        assert!(!requests.has_changed().unwrap());
    }
}
