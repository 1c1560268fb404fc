//! Binlog checkpoints that wait for the transport.
//!
//! Each group the reader ends (a transaction, a lone statement, an XA PREPARE or
//! COMMIT) closes a transaction in the publisher under a new acknowledgement token and
//! queues the checkpoint after it: the binlog file and offset of the next group, and the
//! GTID state before it. A checkpoint is stored in the state store only once the
//! publisher acknowledges its token, that is once the transport holds everything before
//! it, so a crash resends rather than loses (sinks skip what they already applied by
//! position). An XA transaction committed before a checkpoint also has its held rows
//! dropped then, never earlier. At shutdown the queue gets a short while to drain; what
//! is still in flight after it is resent by the next run.

use crate::error::CaptureError;
use crate::publisher::{Acked, Publisher};
use crate::state::{BinlogCheckpoint, StateStore, XaRun};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;

/// How long a stopping capture waits for what is in flight to become durable.
const SETTLE: Duration = Duration::from_secs(10);

/// A checkpoint that becomes durable with acknowledgement token `token`.
struct Durable {
    token: u64,
    checkpoint: BinlogCheckpoint,
    /// The run of an XA transaction committed before the checkpoint, whose held rows can
    /// go once it is durable.
    release: Option<(String, XaRun)>,
}

/// The checkpoints handed to the transport and not yet durable, oldest first.
pub(super) struct Checkpoints {
    pending: VecDeque<Durable>,
    next_token: u64,
}

impl Checkpoints {
    /// No checkpoint in flight.
    pub fn new() -> Self {
        Checkpoints {
            pending: VecDeque::new(),
            next_token: 1,
        }
    }

    /// Closes the publisher's open transaction and queues `checkpoint`, the position
    /// after it.
    pub async fn commit(
        &mut self,
        publisher: &mut Publisher,
        checkpoint: BinlogCheckpoint,
    ) -> Result<(), CaptureError> {
        let token = self.next_token;
        self.next_token += 1;
        publisher.commit(Some(token)).await?;
        self.pending.push_back(Durable {
            token,
            checkpoint,
            release: None,
        });
        Ok(())
    }

    /// Drops the held rows of run `run` of XA transaction `xid` once the checkpoint
    /// queued last is durable.
    pub fn release_with_last(&mut self, xid: String, run: XaRun) {
        if let Some(last) = self.pending.back_mut() {
            last.release = Some((xid, run));
        }
    }

    /// Stores the newest checkpoint that acknowledgement `acked` makes durable, then drops
    /// the held rows of XA transactions committed before it.
    pub fn durable(
        &mut self,
        store: &StateStore,
        source: &str,
        acked: &Acked,
    ) -> Result<(), CaptureError> {
        let Some(token) = acked.token else {
            return Ok(());
        };
        let mut checkpoint = None;
        let mut releases = Vec::new();
        while self.pending.front().is_some_and(|d| d.token <= token) {
            let d = self.pending.pop_front().expect("checked");
            releases.extend(d.release);
            checkpoint = Some(d.checkpoint);
        }
        if let Some(cp) = checkpoint {
            store.set_binlog_checkpoint(source, &cp)?;
        }
        for (xid, run) in releases {
            store.xa_release(source, &xid, run)?;
        }
        Ok(())
    }

    /// At shutdown: waits a little for what is in flight to become durable, so the stored
    /// checkpoint is as recent as the transport allows.
    pub async fn settle(
        &mut self,
        store: &StateStore,
        source: &str,
        acked: &mut watch::Receiver<Acked>,
    ) -> Result<(), CaptureError> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let a = acked.borrow_and_update().clone();
            if a.failed.is_some() {
                return Ok(());
            }
            self.durable(store, source, &a)?;
            if self.pending.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, acked.changed()).await {
                Ok(Ok(())) => {}
                // Not all durable in time (or the publisher is gone): the next run resends
                // from the stored checkpoint.
                _ => return Ok(()),
            }
        }
    }
}
