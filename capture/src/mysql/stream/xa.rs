//! Two-phase (XA) transactions in the binlog.
//!
//! An XA transaction's rows come in its first phase, from `XA START` (MySQL's statement;
//! MariaDB names the xid in the GTID event instead) to `XA PREPARE`, and its outcome comes
//! later, in a group of its own. The reader holds the rows in the state store from the
//! start, durable before the checkpoint passes the prepare, and publishes them as one
//! transaction at the `XA COMMIT` position, or drops them at `XA ROLLBACK`; held rows go
//! from the store only once the checkpoint after the decision is durable, so a crash
//! between the two replays the decision against rows still held. An `XA COMMIT` of a
//! prepare this capture never read is passed by when the snapshot waited for that
//! transaction (its rows are in the copy); any other stops the capture, since its rows
//! would be neither in the snapshot nor held.

use super::BinlogReader;
use crate::error::CaptureError;
use crate::mysql::statement::Xa;
use crate::state::XaRun;
use std::collections::HashMap;
use tributary_schemas::{decode_value, unframe, AvroSchemas, Position, TableId, TxMeta};

impl BinlogReader<'_> {
    /// An XA statement (MySQL; MariaDB names the xid in the GTID event instead).
    pub(super) async fn xa_statement(&mut self, xa: Xa<'_>) -> Result<(), CaptureError> {
        match xa {
            // Its rows are held until the decision (see `xa_prepare`).
            Xa::Start(xid) => {
                if let Some(tx) = self.open.as_mut().filter(|tx| tx.xa.is_none()) {
                    tx.began = true;
                    let run = (tx.file_seq, tx.offset);
                    self.store.xa_begin(self.source, xid, run)?;
                    tx.xa = Some((xid.to_string(), run));
                }
                Ok(())
            }
            Xa::End => Ok(()),
            Xa::Commit { xid, .. } => self.xa_decision(xid, true).await,
            Xa::Rollback(xid) => self.xa_decision(xid, false).await,
        }
    }

    /// The XA COMMIT (`commit`) or XA ROLLBACK of `xid`: the held rows of the run it ends
    /// are published (or left to go), and its group ends.
    async fn xa_decision(&mut self, xid: &str, commit: bool) -> Result<(), CaptureError> {
        let here = (self.file_n, self.pos);
        // The run this ends: one of this very group (MySQL may log XA COMMIT … ONE PHASE
        // there), else the oldest prepared run of the xid not ended yet.
        let run = match self.open.as_ref().and_then(|tx| tx.xa.as_ref()) {
            Some((x, run)) if x == xid => Some(*run),
            _ => self.store.xa_end(self.source, xid, here)?,
        };
        match run {
            Some(run) if commit => {
                self.release_xa(xid, run, here, self.ts_micros, self.gtids.seq)
                    .await?;
            }
            // Rolled back: its rows go once the checkpoint is past.
            Some(_) | None if !commit => {}
            None if self.settled.iter().any(|x| x == xid)
                || self.settled_until.is_some_and(|end| here <= end) =>
            {
                tracing::info!(source = self.source, xid, at = %self.at(), "XA COMMIT of a transaction the snapshot waited for; its rows are in the copy");
            }
            _ => {
                return Err(CaptureError::Setup(format!(
                    "XA COMMIT of {xid} at {}: this capture \
                     never read that transaction's XA PREPARE (it was \
                     prepared just as the snapshot started, or before an \
                     upgrade to a version that holds prepared \
                     transactions), so its rows are neither in the \
                     snapshot nor held, and a sink would miss them if it \
                     changed captured tables; take a new snapshot (remove \
                     this source's state)",
                    self.at()
                )));
            }
        }
        self.end_group().await?;
        if let Some(run) = run {
            self.checkpoints.release_with_last(xid.to_string(), run);
        }
        Ok(())
    }

    /// An XA_PREPARE_LOG event: the first phase of an XA transaction ends. Its rows are
    /// durable in the state store before the checkpoint passes here, and wait there for
    /// XA COMMIT (published then, at its position) or XA ROLLBACK (dropped). A one-phase
    /// XA transaction (`one_phase`, which MySQL ends with this event too) is committed
    /// here.
    pub(super) async fn xa_prepare(&mut self, one_phase: bool) -> Result<(), CaptureError> {
        let (tx_id, tx_ts) = self
            .open
            .as_ref()
            .map_or((None, self.ts_micros), |tx| (tx.id, tx.commit_ts_micros));
        let mut release = None;
        match self.open.as_ref().map(|tx| (&tx.xa, tx.seq)) {
            Some((Some((xid, run)), _)) if one_phase => {
                let (xid, run) = (xid.clone(), *run);
                self.release_xa(&xid, run, (self.file_n, self.pos), tx_ts, tx_id)
                    .await?;
                release = Some((xid, run));
            }
            Some((Some((xid, run)), rows)) => {
                self.store.xa_prepared(self.source, xid, *run)?;
                tracing::debug!(source = self.source, xid, rows, at = %self.at(), "XA transaction prepared; its rows are held until its commit");
            }
            Some((None, rows)) if rows > 0 => {
                return Err(CaptureError::Decode(format!(
                    "XA PREPARE at {} ends a transaction with rows of \
                     captured tables whose xid was read neither from its GTID event \
                     nor from an XA START statement",
                    self.at()
                )));
            }
            _ => {}
        }
        self.end_group().await?;
        if let Some((xid, run)) = release {
            self.checkpoints.release_with_last(xid, run);
        }
        Ok(())
    }

    /// Publishes the held rows of run `run` of XA transaction `xid` as one transaction at
    /// binlog file number and offset `at` (its XA COMMIT).
    async fn release_xa(
        &mut self,
        xid: &str,
        run: XaRun,
        at: (u32, u64),
        commit_ts_micros: i64,
        id: Option<u64>,
    ) -> Result<(), CaptureError> {
        let mut schemas: HashMap<(TableId, u32), AvroSchemas> = HashMap::new();
        let (mut after, mut count) = (0, 0u64);
        loop {
            let chunk = self.store.xa_rows(self.source, xid, run, after, 1024)?;
            if chunk.is_empty() {
                break;
            }
            for (seq, row) in chunk {
                after = seq;
                let version = (row.table, row.version);
                if !schemas.contains_key(&version) {
                    let (table, v) = &version;
                    let shape = self
                        .store
                        .shapes(self.source, table)?
                        .into_iter()
                        .find(|s| s.version == *v)
                        .ok_or_else(|| {
                            self.store.invalid(format!(
                                "held rows of XA transaction {xid} need version {v} of {table}, \
                                 which the state no longer holds"
                            ))
                        })?;
                    schemas.insert(version.clone(), AvroSchemas::generate(self.source, &shape)?);
                }
                let avro = &schemas[&version];
                let (_, datum) = unframe(&row.value)?;
                let mut event = decode_value(avro, datum)?;
                count += 1;
                event.position = Position::mysql(at.0, at.1, count);
                event.tx = TxMeta {
                    id,
                    commit_ts_micros,
                    first: Position::mysql(at.0, at.1, 1),
                };
                self.publisher.event(avro, &event).await?;
            }
        }
        tracing::debug!(
            source = self.source,
            xid,
            rows = count,
            "XA transaction committed; its held rows are published"
        );
        Ok(())
    }
}
