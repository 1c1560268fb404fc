//! The `[retry]` section: how a task that failed starts again.
//!
//! ```toml
//! [retry]
//! initial = "1s"           # first wait after a transient failure (a server went away)
//! max = "30s"              # the wait doubles up to this
//! give_up_after = "1h"     # a task failing transiently this long is marked failed (default: never)
//! restart_after = "10m"    # a failed task starts again after this (default: only when asked)
//! fail_fast = false        # true: the first failed task stops the whole run
//! ```
//!
//! A definite error (configuration, rights, a value the sink refuses, a halting rule)
//! stops only the task it happened in; the others go on. The failed task shows `failed`
//! with its error in `/readyz` and `/metrics` and starts again after `restart_after`, or
//! when asked. The run ends with an error when every task has failed, or at the first
//! failure with `fail_fast` (`tributary run --fail-fast`).

use serde::Deserialize;
use std::time::Duration;
use tributary_snapshot::parse_age;

/// The `[retry]` section as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First wait after a transient failure.
    #[serde(default = "default_initial")]
    pub initial: String,
    /// Longest wait between two attempts.
    #[serde(default = "default_max")]
    pub max: String,
    /// How long a task may keep failing transiently before it is marked failed.
    #[serde(default)]
    pub give_up_after: Option<String>,
    /// How long after a definite failure a task starts again by itself.
    #[serde(default)]
    pub restart_after: Option<String>,
    /// The first failed task stops the whole run.
    #[serde(default)]
    pub fail_fast: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: default_initial(),
            max: default_max(),
            give_up_after: None,
            restart_after: None,
            fail_fast: false,
        }
    }
}

fn default_initial() -> String {
    "1s".into()
}

fn default_max() -> String {
    "30s".into()
}

/// The `[retry]` section read into durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First wait after a transient failure.
    pub initial: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// Transient failures for this long mark the task failed.
    pub give_up_after: Option<Duration>,
    /// A failed task starts again after this.
    pub restart_after: Option<Duration>,
    /// The first failed task stops the run.
    pub fail_fast: bool,
}

impl RetryConfig {
    /// The policy; the error names the bad key.
    pub fn policy(&self) -> Result<RetryPolicy, String> {
        let secs = |key: &str, text: &str| {
            parse_age(text)
                .map(Duration::from_secs)
                .map_err(|e| format!("retry.{key}: {e}"))
        };
        let policy = RetryPolicy {
            initial: secs("initial", &self.initial)?,
            max: secs("max", &self.max)?,
            give_up_after: self
                .give_up_after
                .as_deref()
                .map(|t| secs("give_up_after", t))
                .transpose()?,
            restart_after: self
                .restart_after
                .as_deref()
                .map(|t| secs("restart_after", t))
                .transpose()?,
            fail_fast: self.fail_fast,
        };
        if policy.max < policy.initial {
            return Err(format!(
                "retry.max: {:?} is shorter than retry.initial {:?}",
                self.max, self.initial
            ));
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let policy = RetryConfig::default().policy().unwrap();
        assert_eq!(policy.initial, Duration::from_secs(1));
        assert_eq!(policy.max, Duration::from_secs(30));
        assert_eq!((policy.give_up_after, policy.restart_after), (None, None));
        let bad = |c: RetryConfig| c.policy().unwrap_err();
        let e = bad(RetryConfig {
            restart_after: Some("soon".into()),
            ..Default::default()
        });
        assert!(e.starts_with("retry.restart_after:"), "{e}");
        let e = bad(RetryConfig {
            initial: "1m".into(),
            max: "10s".into(),
            ..Default::default()
        });
        assert!(e.starts_with("retry.max:"), "{e}");
    }
}
