//! Webhook notifications of resolved conflicts (`notify_conflicts`).
//!
//! The apply loops hand each merged batch's conflict records to one background task, which
//! POSTs them as JSON (`{"sink", "source", "conflicts": [...]}`, the entries of the
//! conflict log) to the configured URL, retrying a failed delivery three times. The
//! queue is bounded: when the endpoint cannot keep up, notifications are dropped with a
//! warning rather than slowing replication; the conflict log keeps every record.

use std::time::Duration;
use tokio::sync::mpsc;

/// Notifications waiting for delivery, at most.
const QUEUE: usize = 256;
/// Longest one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The sender side of the notification task.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<serde_json::Value>,
}

impl Notifier {
    /// Starts the task delivering to `url` (checked by [`check_url`]).
    pub fn start(url: String) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<serde_json::Value>(QUEUE);
        // Logs name the hook without its secrets (reqwest's errors would print the URL).
        let shown = tributary_schemas::redact_url(&url);
        tokio::spawn(async move {
            let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the webhook client; conflict notifications are off");
                    return;
                }
            };
            while let Some(body) = rx.recv().await {
                let mut wait = Duration::from_secs(1);
                for attempt in 1..=4 {
                    let outcome = client
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .map_err(reqwest::Error::without_url);
                    match outcome {
                        Ok(_) => break,
                        Err(e) if attempt < 4 => {
                            tracing::warn!(url = %shown, error = %e, attempt, "conflict notification failed; retrying");
                            tokio::time::sleep(wait).await;
                            wait *= 2;
                        }
                        Err(e) => {
                            tracing::error!(url = %shown, error = %e, "conflict notification not delivered (the conflict log keeps it)");
                        }
                    }
                }
            }
        });
        Notifier { tx }
    }

    /// Queues a notification of `records`, resolved in sink `sink` for source `source`.
    pub fn send(&self, sink: &str, source: &str, records: &[serde_json::Value]) {
        if records.is_empty() {
            return;
        }
        let body = serde_json::json!({ "sink": sink, "source": source, "conflicts": records });
        if self.tx.try_send(body).is_err() {
            tracing::warn!(
                sink,
                source,
                conflicts = records.len(),
                "conflict notification dropped: the webhook is behind (the conflict log keeps them)"
            );
        }
    }
}

/// Checks a webhook URL: `http://` or `https://` with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = tributary_schemas::redact_url(url);
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "{shown:?} must be an http:// or https:// URL with a host (scheme {:?})",
            u.scheme()
        )),
        Err(e) => Err(format!("{shown:?} is not a URL: {e}")),
    }
}
