//! Counters every run keeps, and the summary a run ends with.
//!
//! Counters are plain atomics shared by the workers of a process: sources count records in,
//! sinks records out, stateful operators late records, sources bad records. A reporter thread
//! reads them for the progress line; [`RunSummary`] is what is left at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
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
    /// Latency from a result's event time to its sink write, in ms, when measured.
    latency: Mutex<Option<Histogram<u64>>>,
    /// Wall-clock time the run started, epoch milliseconds.
    started_ms: i64,
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
            latency: Mutex::new(None),
            started_ms: now_ms(),
        }
    }
}

/// An empty latency histogram: 1 ms to 1000 hours, 3 significant digits (larger values are
/// recorded as the largest).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// The wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Latency percentiles in milliseconds, from an hdrhistogram.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Results measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Results whose event time was ahead of the wall clock (not in the histogram).
    pub ahead: u64,
}

impl Metrics {
    /// Counters that also measure latency at the sinks (see [`Metrics::latency`]).
    pub fn with_latency() -> Self {
        let m = Metrics::default();
        *m.latency.lock().expect("metrics lock") = Some(crate::metrics::latency_histogram());
        m
    }

    /// Whether sinks measure latency.
    pub fn measures_latency(&self) -> bool {
        self.latency.lock().expect("metrics lock").is_some()
    }

    /// Adds a sink's latency measurements (ms).
    pub fn add_latency(&self, h: &Histogram<u64>) {
        if let Some(all) = self.latency.lock().expect("metrics lock").as_mut() {
            all.add(h).expect("histograms of the same range add");
        }
    }

    /// Latency from each result's event time to the moment its sink was handed it, over every
    /// sink of this process; `None` unless the run measured it. Meaningful when event times
    /// are wall-clock times (a paced generator, Kafka timestamps).
    pub fn latency(&self) -> Option<Latency> {
        let all = self.latency.lock().expect("metrics lock");
        let h = all.as_ref()?;
        let ahead = self.counter("runnel.latency.ahead").get();
        Some(Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            ahead,
        })
    }

    /// When the run started (wall clock, epoch milliseconds), the same for every worker of
    /// the process.
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

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
    /// Latency percentiles, when the run measured them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// `(seconds since the start, records read)`, sampled when the run was asked to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<(f64, u64)>,
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
            latency: metrics.latency(),
            samples: Vec::new(),
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
