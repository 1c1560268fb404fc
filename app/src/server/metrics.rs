//! `GET /metrics`: the run's counters in the Prometheus text exposition format.
//!
//! The loops count in plain atomics as they work ([`CaptureStats`], [`ApplyStats`]) and
//! the board keeps every task's state; a scrape reads them into a fresh registry of the
//! `prometheus` crate and encodes that. So the hot paths pay one relaxed add per
//! counter and nothing per scrape, and a scrape costs in proportion to the number of
//! series (tables × operations, sinks × sources, tasks).
//!
//! Lags:
//! - `tributary_capture_lag_seconds`: how long after its commit the last transaction a
//!   capture read was published (small while the capture keeps up, whether or not the
//!   source is busy; large while it works through a backlog). A capture that is down
//!   shows in `tributary_task_up`.
//! - `tributary_apply_lag_seconds`: 0 while the apply loop has nothing left to apply;
//!   otherwise now minus the commit time of the oldest source transaction read and not
//!   applied yet (while the loop connects, of the last one applied), so it grows while
//!   a sink is stuck with changes waiting.

use crate::board::{Board, State};
use crate::schedule::BackupStats;
use prometheus::core::Collector;
use prometheus::proto::{LabelPair, MetricFamily};
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tributary_capture::stats::{CaptureStats, OPS};
use tributary_pipeline::apply::ApplyStats;

/// Counters of every apply loop, by `sink/source`.
pub type Stats = BTreeMap<String, Arc<ApplyStats>>;

/// One source's capture counters and its topic prefix (to name tables in labels).
#[derive(Debug, Clone)]
pub struct CaptureView {
    /// The topic prefix: a topic is `<prefix>.<table>`.
    pub prefix: String,
    /// The counters.
    pub stats: Arc<CaptureStats>,
}

/// Everything a scrape reads.
#[derive(Debug, Clone, Default)]
pub struct MetricsView {
    /// Every task's state.
    pub board: Board,
    /// Counters of every apply loop, by `sink/source`.
    pub apply: Stats,
    /// Counters of every capture, by source.
    pub capture: BTreeMap<String, CaptureView>,
    /// What the scheduled snapshots did, when they run in this process.
    pub backup: Option<Arc<BackupStats>>,
}

/// A metric family (`new` is the vector type's constructor) registered in `registry`.
fn family<V: Collector + Clone + 'static>(
    registry: &Registry,
    new: fn(Opts, &[&str]) -> prometheus::Result<V>,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<V> {
    let family = new(Opts::new(name, help), labels)?;
    registry.register(Box::new(family.clone()))?;
    Ok(family)
}

/// The text exposition of everything `view` holds, and of this process.
pub fn render(view: &MetricsView) -> prometheus::Result<String> {
    let registry = Registry::new();
    let now_micros = chrono::Utc::now().timestamp_micros();
    let seconds = |micros: i64| micros as f64 / 1e6;

    let task_up = family(
        &registry,
        IntGaugeVec::new,
        "tributary_task_up",
        "1 while the task runs, 0 while it starts, retries, failed or stopped.",
        &["task"],
    )?;
    let task_restarts = family(
        &registry,
        IntCounterVec::new,
        "tributary_task_restarts_total",
        "Times the task connected again after a failure.",
        &["task"],
    )?;
    let task_failed = family(
        &registry,
        IntGaugeVec::new,
        "tributary_task_failed",
        "1 when the task stopped on an error that needs fixing.",
        &["task"],
    )?;
    for (task, state) in view.board.snapshot() {
        task_up
            .with_label_values(&[&task])
            .set(i64::from(state.state == State::Running));
        task_failed
            .with_label_values(&[&task])
            .set(i64::from(state.state == State::Failed));
        task_restarts
            .with_label_values(&[&task])
            .inc_by(state.restarts);
    }

    let captured = family(
        &registry,
        IntCounterVec::new,
        "tributary_capture_events_total",
        "Change events captured and published, by table and operation.",
        &["source", "table", "op"],
    )?;
    let capture_tx = family(
        &registry,
        IntCounterVec::new,
        "tributary_capture_transactions_total",
        "Source transactions captured and published.",
        &["source"],
    )?;
    let capture_lag = family(
        &registry,
        GaugeVec::new,
        "tributary_capture_lag_seconds",
        "How long after its commit the last captured transaction was published.",
        &["source"],
    )?;
    let capture_last = family(
        &registry,
        GaugeVec::new,
        "tributary_capture_last_commit_timestamp_seconds",
        "Commit time of the last captured transaction (Unix seconds).",
        &["source"],
    )?;
    for (source, c) in &view.capture {
        for (topic, counts) in c.stats.events_by_topic() {
            let table = topic
                .strip_prefix(c.prefix.as_str())
                .and_then(|t| t.strip_prefix('.'))
                .unwrap_or(&topic);
            for (op, n) in OPS.iter().zip(counts) {
                if n > 0 {
                    captured
                        .with_label_values(&[source, table, op.name()])
                        .inc_by(n);
                }
            }
        }
        capture_tx
            .with_label_values(&[source])
            .inc_by(c.stats.transactions.load(Ordering::Relaxed));
        let last = c.stats.last_commit_ts_micros.load(Ordering::Relaxed);
        if last > 0 {
            capture_last.with_label_values(&[source]).set(seconds(last));
            capture_lag
                .with_label_values(&[source])
                .set(seconds(c.stats.last_lag_micros.load(Ordering::Relaxed)));
        }
    }

    let applied = family(
        &registry,
        IntCounterVec::new,
        "tributary_apply_events_total",
        "Change events applied to the sink.",
        &["sink", "source"],
    )?;
    let applied_tx = family(
        &registry,
        IntCounterVec::new,
        "tributary_apply_transactions_total",
        "Source transactions applied to the sink.",
        &["sink", "source"],
    )?;
    let replays = family(
        &registry,
        IntCounterVec::new,
        "tributary_apply_replays_skipped_total",
        "Source transactions skipped as applied already (replayed after a restart).",
        &["sink", "source"],
    )?;
    let dead = family(
        &registry,
        IntCounterVec::new,
        "tributary_dead_letters_total",
        "Messages sent to the dead-letter file (undecodable, or refused by a rule).",
        &["sink", "source"],
    )?;
    let rule_skips = family(
        &registry,
        IntCounterVec::new,
        "tributary_rule_skipped_events_total",
        "Events a rule with on_fail = \"skip\" dropped.",
        &["sink", "source"],
    )?;
    let echoes = family(
        &registry,
        IntCounterVec::new,
        "tributary_echoes_dropped_total",
        "Events Tributary itself wrote from another source, not applied again.",
        &["sink", "source"],
    )?;
    let merged = family(
        &registry,
        IntCounterVec::new,
        "tributary_merged_rows_total",
        "Rows written with their merged image (tables under [[conflicts]]).",
        &["sink", "source"],
    )?;
    let conflicts = family(
        &registry,
        IntCounterVec::new,
        "tributary_conflicts_resolved_total",
        "Merged changes whose own row image lost, wholly or in part, to another source's.",
        &["sink", "source"],
    )?;
    let apply_lag = family(&registry, GaugeVec::new, "tributary_apply_lag_seconds", "0 with nothing left to apply; else now minus the commit time of the oldest source transaction read and not applied yet (while the loop connects, of the last one applied).", &["sink", "source"])?;
    let apply_last = family(
        &registry,
        GaugeVec::new,
        "tributary_apply_last_commit_timestamp_seconds",
        "Commit time of the last applied source transaction (Unix seconds).",
        &["sink", "source"],
    )?;
    let mut batch_seconds: Option<MetricFamily> = None;
    for (key, s) in &view.apply {
        let (sink, source) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let labels = [sink, source];
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        applied.with_label_values(&labels).inc_by(load(&s.events));
        applied_tx
            .with_label_values(&labels)
            .inc_by(load(&s.transactions));
        replays.with_label_values(&labels).inc_by(load(&s.skipped));
        dead.with_label_values(&labels)
            .inc_by(load(&s.dead_letters));
        rule_skips
            .with_label_values(&labels)
            .inc_by(load(&s.skipped_by_rules));
        echoes.with_label_values(&labels).inc_by(load(&s.echoes));
        merged
            .with_label_values(&labels)
            .inc_by(load(&s.merged_rows));
        conflicts
            .with_label_values(&labels)
            .inc_by(load(&s.conflicts));
        let last = load(&s.last_commit_ts_micros) as i64;
        if last > 0 {
            apply_last.with_label_values(&labels).set(seconds(last));
        }
        let pending = s.oldest_pending_ts_micros.load(Ordering::Relaxed);
        if s.caught_up.load(Ordering::Relaxed) {
            apply_lag.with_label_values(&labels).set(0.0);
        } else if let Some(since) = [pending, last].into_iter().find(|t| *t > 0) {
            // The oldest transaction waiting; else, while connecting, the last applied.
            apply_lag
                .with_label_values(&labels)
                .set(seconds((now_micros - since).max(0)));
        }
        batch_seconds = Some(with_histogram(batch_seconds, s, sink, source));
    }

    if let Some(backup) = &view.backup {
        let state = backup.state();
        let last = family(
            &registry,
            GaugeVec::new,
            "tributary_backup_last_snapshot_timestamp_seconds",
            "Finish time of the newest snapshot of a source or file set in the store.",
            &["name"],
        )?;
        for (name, at) in &state.last_snapshot {
            last.with_label_values(&[name]).set(*at);
        }
        let runs = family(&registry, IntCounterVec::new, "tributary_backup_runs_total", "Scheduled backup rounds by kind (sources, files, prune, list) and result (ok, failed).", &["kind", "result"])?;
        for ((kind, result), n) in &state.runs {
            runs.with_label_values(&[kind, result]).inc_by(*n);
        }
        let failed = family(
            &registry,
            GaugeVec::new,
            "tributary_backup_last_failure_timestamp_seconds",
            "When the last failed backup round of a kind failed.",
            &["kind"],
        )?;
        for (kind, (at, _)) in &state.last_failure {
            failed.with_label_values(&[kind]).set(*at);
        }
        if let Some(next) = state.next_run {
            family(
                &registry,
                GaugeVec::new,
                "tributary_backup_next_run_timestamp_seconds",
                "When the next scheduled snapshot round is due.",
                &[],
            )?
            .with_label_values::<&str>(&[])
            .set(next);
        }
    }

    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;

    let mut families = registry.gather();
    families.extend(batch_seconds);
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// `family` with `stats`'s batch-duration histogram added, labelled by sink and source.
fn with_histogram(
    family: Option<MetricFamily>,
    stats: &ApplyStats,
    sink: &str,
    source: &str,
) -> MetricFamily {
    let mut collected = stats.batch_seconds.collect();
    let mut own = collected.pop().unwrap_or_default();
    let mut family = family.unwrap_or_else(|| {
        let mut f = own.clone();
        f.set_metric(Vec::new());
        f
    });
    for mut metric in own.take_metric() {
        let mut labels = Vec::new();
        for (name, value) in [("sink", sink), ("source", source)] {
            let mut pair = LabelPair::default();
            pair.set_name(name.into());
            pair.set_value(value.into());
            labels.push(pair);
        }
        metric.set_label(labels);
        family.mut_metric().push(metric);
    }
    family
}
