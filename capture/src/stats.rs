//! What one source's capture has done, for the control plane's metrics and status.
//!
//! The [`Publisher`](crate::publisher::Publisher) counts as it publishes: events by
//! operation on each plain atomic add, events by table and operation once per
//! transaction (at its commit, from the counts it keeps anyway for the marker), and the
//! commit time of the last transaction with how late it was read. Reading them takes a
//! copy ([`CaptureStats::events_by_table`]); nothing here blocks the capture.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use tributary_schemas::Op;

/// The operations, in the order of [`CaptureStats`]'s per-operation counters.
pub const OPS: [Op; 5] = [Op::Insert, Op::Update, Op::Delete, Op::Truncate, Op::Read];

/// The index of `op` in [`OPS`].
pub fn op_index(op: Op) -> usize {
    match op {
        Op::Insert => 0,
        Op::Update => 1,
        Op::Delete => 2,
        Op::Truncate => 3,
        Op::Read => 4,
    }
}

/// Counters of one capture; shared between the publisher and whoever reads them.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Transactions published (their markers written).
    pub transactions: AtomicU64,
    /// Commit time (Unix micros) of the last transaction published; 0 before the first.
    pub last_commit_ts_micros: AtomicI64,
    /// How long after its commit the last transaction was published, in micros.
    pub last_lag_micros: AtomicI64,
    /// Events published by topic and operation (index into [`OPS`]), added at each commit.
    by_topic: Mutex<HashMap<String, [u64; 5]>>,
}

impl CaptureStats {
    /// Adds one transaction's events by topic and operation, and its commit time.
    pub fn transaction(&self, commit_ts_micros: i64, topics: &[(impl AsRef<str>, [u64; 5])]) {
        {
            let mut by_topic = self.by_topic.lock().unwrap_or_else(|e| e.into_inner());
            for (topic, counts) in topics {
                let entry = match by_topic.get_mut(topic.as_ref()) {
                    Some(entry) => entry,
                    None => by_topic.entry(topic.as_ref().to_string()).or_default(),
                };
                for (total, n) in entry.iter_mut().zip(counts) {
                    *total += n;
                }
            }
        }
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if commit_ts_micros > 0 {
            let now = chrono::Utc::now().timestamp_micros();
            self.last_commit_ts_micros
                .store(commit_ts_micros, Ordering::Relaxed);
            self.last_lag_micros
                .store((now - commit_ts_micros).max(0), Ordering::Relaxed);
        }
    }

    /// Events published so far, by topic, with their counts by operation (in [`OPS`]
    /// order).
    pub fn events_by_topic(&self) -> Vec<(String, [u64; 5])> {
        let by_topic = self.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = by_topic.iter().map(|(t, c)| (t.clone(), *c)).collect();
        out.sort();
        out
    }

    /// Events published so far, all topics together.
    pub fn events(&self) -> u64 {
        self.events_by_topic()
            .iter()
            .flat_map(|(_, c)| c.iter())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_add_up_by_topic_and_operation() {
        let stats = CaptureStats::default();
        stats.transaction(
            1_000,
            &[
                ("p.public.a", [2, 1, 0, 0, 0]),
                ("p.public.b", [0, 0, 3, 0, 0]),
            ],
        );
        stats.transaction(2_000, &[("p.public.a", [1, 0, 0, 0, 0])]);
        assert_eq!(
            stats.events_by_topic(),
            vec![
                ("p.public.a".to_string(), [3, 1, 0, 0, 0]),
                ("p.public.b".to_string(), [0, 0, 3, 0, 0])
            ]
        );
        assert_eq!(stats.events(), 7);
        assert_eq!(stats.transactions.load(Ordering::Relaxed), 2);
        assert_eq!(stats.last_commit_ts_micros.load(Ordering::Relaxed), 2_000);
        assert!(stats.last_lag_micros.load(Ordering::Relaxed) > 0);
        assert_eq!(
            OPS.iter().map(|op| op_index(*op)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
    }
}
