//! A hybrid logical clock: the order conflict resolution uses between changes of
//! different sources.
//!
//! A [`Stamp`] is a commit time in microseconds plus a logical counter. Each source has
//! its own [`Hlc`], fed with its commit timestamps in stream order: a stamp is the commit
//! time unless the source's clock went back (or several events share one commit time),
//! in which case it is one logical tick after the previous stamp. Stamps of one source
//! therefore always grow in stream order, and those of different sources compare by
//! time; the source name breaks the remaining ties, so every pair of changes is ordered
//! the same way wherever it is merged.

use serde::{Deserialize, Serialize};

/// A point of a hybrid logical clock.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Wall-clock microseconds since 1970-01-01 UTC (a commit time).
    pub micros: i64,
    /// Ticks after `micros` (events sharing a commit time, or a clock that went back).
    pub logical: u32,
}

/// One source's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hlc {
    last: Option<Stamp>,
}

impl Hlc {
    /// A clock that continues after `last` (restored from state).
    pub fn after(last: Stamp) -> Self {
        Hlc { last: Some(last) }
    }

    /// The stamp of the next event, committed at `commit_micros`.
    pub fn tick(&mut self, commit_micros: i64) -> Stamp {
        let stamp = match self.last {
            Some(last) if last.micros >= commit_micros => Stamp {
                micros: last.micros,
                logical: last.logical.saturating_add(1),
            },
            _ => Stamp {
                micros: commit_micros,
                logical: 0,
            },
        };
        self.last = Some(stamp);
        stamp
    }

    /// The last stamp given.
    pub fn last(&self) -> Option<Stamp> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shared_commit_times_and_a_clock_going_back_tick_logically() {
        let mut hlc = Hlc::default();
        assert_eq!(
            hlc.tick(100),
            Stamp {
                micros: 100,
                logical: 0
            }
        );
        assert_eq!(
            hlc.tick(100),
            Stamp {
                micros: 100,
                logical: 1
            }
        );
        assert_eq!(
            hlc.tick(90),
            Stamp {
                micros: 100,
                logical: 2
            }
        );
        assert_eq!(
            hlc.tick(101),
            Stamp {
                micros: 101,
                logical: 0
            }
        );
        let mut restored = Hlc::after(hlc.last().unwrap());
        assert_eq!(
            restored.tick(50),
            Stamp {
                micros: 101,
                logical: 1
            }
        );
    }

    proptest! {
        #[test]
        fn stamps_grow_in_stream_order(times in proptest::collection::vec(-1_000i64..1_000, 1..50)) {
            let mut hlc = Hlc::default();
            let stamps: Vec<Stamp> = times.iter().map(|t| hlc.tick(*t)).collect();
            prop_assert!(stamps.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(stamps.iter().zip(&times).all(|(s, t)| s.micros >= *t));
        }
    }
}
