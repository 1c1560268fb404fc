//! Waiting for observable state.
//!
//! Tests never sleep for a fixed time: they poll a check until it holds or a deadline passes.
//! A check that hangs (a query against a paused broker, say) is cut off at the deadline, so
//! `wait_until` always returns within about `timeout` (at least [`MIN_CHECK_TIME`] for one
//! check). On timeout the error names what was awaited and carries the last check's error,
//! or says that the last check returned `false`.

use anyhow::anyhow;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Time between two checks.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The least time one check is given, even when the deadline is closer.
const MIN_CHECK_TIME: Duration = Duration::from_secs(1);

/// Polls `check` until it returns Ok(true) or `timeout` passes (then Err naming `what` and the last error/Ok(false)).
///
/// The poll interval is 50 ms; errors from `check` do not stop the polling.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    wait_until_every(what, timeout, POLL_INTERVAL, check).await
}

/// [`wait_until`] with checks `interval` apart: a benchmark that times how long until a
/// state holds polls finely, so the wait adds little to what it measures.
pub async fn wait_until_every<F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let last_error = loop {
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_CHECK_TIME);
        let last_error = match tokio::time::timeout(budget, check()).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => None,
            Ok(Err(error)) => Some(error),
            Err(_) => Some(anyhow!("the check did not finish within {budget:?}")),
        };
        let now = Instant::now();
        if now >= deadline {
            break last_error;
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    };
    let waited = started.elapsed();
    Err(match last_error {
        Some(error) => error.context(format!("timed out after {waited:.1?} waiting for {what}")),
        None => anyhow!(
            "timed out after {waited:.1?} waiting for {what} (the last check returned false)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::wait_until;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn returns_once_the_check_holds() {
        let calls = AtomicU32::new(0);
        wait_until("three calls", Duration::from_secs(5), || async {
            Ok(calls.fetch_add(1, Ordering::SeqCst) >= 2)
        })
        .await
        .expect("the check holds on the third call");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn timeout_names_the_wait_and_the_last_error() {
        let error = wait_until("the impossible", Duration::from_millis(200), || async {
            Err::<bool, _>(anyhow::anyhow!("still broken"))
        })
        .await
        .expect_err("the check never holds");
        let text = format!("{error:#}");
        assert!(text.contains("the impossible"), "{text}");
        assert!(text.contains("still broken"), "{text}");
    }

    #[tokio::test]
    async fn timeout_after_false_says_so() {
        let error = wait_until("never", Duration::from_millis(100), || async { Ok(false) })
            .await
            .expect_err("the check never holds");
        assert!(format!("{error:#}").contains("returned false"));
    }

    #[tokio::test]
    async fn a_hanging_check_is_cut_off() {
        let started = std::time::Instant::now();
        let error = wait_until("a hang", Duration::from_millis(100), || async {
            std::future::pending::<anyhow::Result<bool>>().await
        })
        .await
        .expect_err("the check never finishes");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(format!("{error:#}").contains("did not finish"));
    }
}
