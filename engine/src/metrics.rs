//! Counters every run keeps, and the summary a run ends with.
//!
//! Counters are plain atomics shared by the workers of a process: sources count records in,
//! sinks records out, stateful operators late records, sources bad records. A reporter thread
//! reads them for the progress line; [`RunSummary`] is what is left at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::time::WATERMARK_MIN;

/// One named counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of a run (one per process, shared by its workers).
#[derive(Debug)]
pub struct Metrics {
    /// Records read by all sources.
    pub records_in: Counter,
    /// Records written by all sinks.
    pub records_out: Counter,
    /// Records behind the watermark, over all stateful operators (dropped or sent to a late output).
    pub late: Counter,
    /// Records that could not be decoded and were skipped (or sent to a dead-letter stream).
    pub bad_records: Counter,
    /// The lowest watermark seen by any stateful operator, updated per epoch.
    watermark: AtomicI64,
    per_operator: Mutex<BTreeMap<String, Arc<Counter>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            records_in: Counter::default(),
            records_out: Counter::default(),
            late: Counter::default(),
            bad_records: Counter::default(),
            watermark: AtomicI64::new(WATERMARK_MIN),
            per_operator: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// The counter `name` (for example `"per-auction.late"`), created on first use.
    pub fn counter(&self, name: &str) -> Arc<Counter> {
        let mut map = self.per_operator.lock().expect("metrics lock");
        map.entry(name.to_string()).or_default().clone()
    }

    /// Every named counter and its value.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let map = self.per_operator.lock().expect("metrics lock");
        map.iter().map(|(k, v)| (k.clone(), v.get())).collect()
    }

    /// Records that a stateful operator's watermark reached `wm` (the progress line shows the
    /// largest value reported; operators only move forward).
    pub fn observe_watermark(&self, wm: i64) {
        self.watermark.fetch_max(wm, Ordering::Relaxed);
    }

    /// The watermark for the progress line, if any operator reported one.
    pub fn watermark(&self) -> Option<i64> {
        let w = self.watermark.load(Ordering::Relaxed);
        (w != WATERMARK_MIN).then_some(w)
    }
}

/// What a run did, printed at its end (and as one JSON line with `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// The job's name.
    pub job: String,
    /// Worker threads in this process.
    pub workers: usize,
    /// Processes in the run.
    pub processes: usize,
    /// Records read by this process's sources.
    pub events_in: u64,
    /// Records written by this process's sinks.
    pub events_out: u64,
    /// Late records (dropped or sent to a late output).
    pub late: u64,
    /// Bad records skipped (or sent to a dead-letter stream).
    pub bad_records: u64,
    /// Wall time of the run, in seconds.
    pub wall_secs: f64,
    /// Records in per second of wall time.
    pub events_per_sec: f64,
    /// Every named counter (`operator.counter`).
    pub counters: BTreeMap<String, u64>,
}

impl RunSummary {
    /// The summary of `metrics` after `wall`.
    pub fn from_metrics(
        job: &str,
        workers: usize,
        processes: usize,
        metrics: &Metrics,
        wall: Duration,
    ) -> Self {
        let secs = wall.as_secs_f64().max(1e-9);
        let events_in = metrics.records_in.get();
        RunSummary {
            job: job.to_string(),
            workers,
            processes,
            events_in,
            events_out: metrics.records_out.get(),
            late: metrics.late.get(),
            bad_records: metrics.bad_records.get(),
            wall_secs: wall.as_secs_f64(),
            events_per_sec: events_in as f64 / secs,
            counters: metrics.counters(),
        }
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} events in, {} out, {} late, {} bad records skipped; {:.3} s wall, {:.0} events/s ({} worker(s) x {} process(es))",
            self.job,
            self.events_in,
            self.events_out,
            self.late,
            self.bad_records,
            self.wall_secs,
            self.events_per_sec,
            self.workers,
            self.processes
        )
    }
}
