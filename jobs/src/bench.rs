//! `runnel bench JOB`: the figures of one benchmark run (see BENCHMARKS.md).
//!
//! * **Throughput**, events read per second of wall time, over the whole run and over its
//!   steady state: from the moment 10% of the events had been read to the moment 90% had
//!   (sampled every 50 ms), which leaves out start-up and the drain at the end; and over each
//!   tenth of the input, which shows a query that slows down as its state grows.
//! * **Per core**: throughput divided by the cores the run could use (worker threads, at most
//!   the machine's cores).
//! * **Latency**, from an hdrhistogram of every result: the wall-clock time at which a sink was
//!   handed the result, minus the result's event time. For a paced generator run (`rate`),
//!   event times are the wall-clock times at which events were created, and a result's event
//!   time is that of the newest input it can include (a window's end, a table change's newest
//!   input), so this is the time from the creation of the last event a result includes to
//!   the result's emission. With Kafka input and event time from the record timestamps it is
//!   the time from append to emission. An unpaced generator run has made-up event times, so
//!   no latency is shown for it (nor for any run whose median is over an hour, or, unless
//!   the run is paced with `--rate`, with more than 1% of results ahead of the clock). Results
//!   ahead of the clock (in a paced run, the windows that the end of the input closed before
//!   their time) are counted and left out of the percentiles.
//! * **Peak RSS** of the process (`VmHWM`), and the **minor page faults** of the run (each a
//!   page the process touched for the first time, or again after giving it back; on a VM that
//!   provides memory on first touch, each costs the host's work), and the memory touched
//!   before the run with `--pretouch` (see [`crate::memory`]).

use serde::Serialize;

use runnel_engine::{Latency, RunSummary};

/// The figures of a benchmark run; printed as one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The job.
    pub job: String,
    /// Worker threads per process.
    pub workers: usize,
    /// Processes.
    pub processes: usize,
    /// Cores of the machine.
    pub cores: usize,
    /// Events read.
    pub events: u64,
    /// Results written.
    pub results: u64,
    /// Wall time, seconds.
    pub wall_secs: f64,
    /// Events per second over the whole run.
    pub events_per_sec: f64,
    /// Events per second between 10% and 90% of the input (`None` for runs too short to
    /// sample).
    pub steady_events_per_sec: Option<f64>,
    /// `events_per_sec` per core used.
    pub events_per_sec_per_core: f64,
    /// Events per second over each tenth of the input, in order (empty for runs too short
    /// to sample): shows a query that slows down as its state grows.
    pub events_per_sec_by_tenth: Vec<f64>,
    /// Latency in ms (`None` when event times are not wall-clock times).
    pub latency_ms: Option<Latency>,
    /// Peak resident memory of the process, MB.
    pub peak_rss_mb: Option<f64>,
    /// Minor page faults of the process during the run (after `--pretouch`), when known.
    pub minor_faults: Option<u64>,
    /// Memory touched before the run (`--pretouch`), MB; 0 without.
    pub pretouch_mb: u64,
    /// Memory the touch-ahead thread provided during the run (on unless `--touch-ahead 0`),
    /// MB; absent when it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touched_ahead_mb: Option<u64>,
    /// The minor page faults of `minor_faults` that the touch-ahead thread took: the rest
    /// were taken by the workers and the other threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touch_ahead_faults: Option<u64>,
    /// The largest lead the touch-ahead thread aimed to keep ahead of use, MB: `--touch-ahead`'s,
    /// or, when more, the allocator's growth over the last 4 s or what it had in use
    /// (up to 8 times it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touch_ahead_lead_mb: Option<u64>,
    /// Late records.
    pub late: u64,
    /// What the run's checkpoints cost, when it took any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointCost>,
}

/// The checkpoints a benchmark run committed (from the run's counters; see the README's
/// "Checkpoints" section).
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointCost {
    /// Checkpoints committed.
    pub count: u64,
    /// Bytes they wrote (with incremental checkpoints, not the parts linked from the one
    /// before).
    pub bytes: u64,
    /// Their whole size, linked parts included.
    pub full_bytes: u64,
    /// Milliseconds from each one's first state handed in to its commit, summed.
    pub ms: u64,
}

impl CheckpointCost {
    /// The cost in `summary`'s counters, if it committed a checkpoint.
    pub fn of(summary: &RunSummary) -> Option<Self> {
        let c = |name: &str| summary.counters.get(name).copied().unwrap_or(0);
        (c("checkpoints") > 0).then(|| CheckpointCost {
            count: c("checkpoints"),
            bytes: c("checkpoint_bytes"),
            full_bytes: c("checkpoint_full_bytes"),
            ms: c("checkpoint_ms"),
        })
    }
}

/// Events per second between the samples where 10% and 90% of `total` had been read.
pub fn steady_rate(samples: &[(f64, u64)], total: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let lo = total / 10;
    let hi = total - total / 10;
    let first = samples.iter().find(|s| s.1 >= lo)?;
    let last = samples.iter().rev().find(|s| s.1 <= hi)?;
    let dt = last.0 - first.0;
    if dt < 0.2 || last.1 <= first.1 {
        return None;
    }
    Some((last.1 - first.1) as f64 / dt)
}

/// Events per second over each tenth of `total`: the time at which `k * total / 10` events
/// had been read is interpolated linearly between the samples around it. Empty when the
/// samples do not reach `total` or a tenth took under 50 ms (one sampling interval).
pub fn rate_by_tenth(samples: &[(f64, u64)], total: u64) -> Vec<f64> {
    let at = |n: u64| -> Option<f64> {
        let i = samples.iter().position(|s| s.1 >= n)?;
        let (t1, n1) = samples[i];
        if i == 0 || n1 == n {
            return Some(t1);
        }
        let (t0, n0) = samples[i - 1];
        Some(t0 + (t1 - t0) * (n - n0) as f64 / (n1 - n0) as f64)
    };
    let marks: Option<Vec<(u64, f64)>> = (0..=10u64)
        .map(|k| {
            let n = u64::try_from(u128::from(total) * u128::from(k) / 10).unwrap_or(u64::MAX);
            at(n).map(|t| (n, t))
        })
        .collect();
    let Some(marks) = marks.filter(|_| total >= 10) else {
        return Vec::new();
    };
    let rates: Vec<f64> = marks
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / (w[1].1 - w[0].1))
        .collect();
    if marks.windows(2).any(|w| w[1].1 - w[0].1 < 0.05) {
        return Vec::new();
    }
    rates
}

/// The process's peak resident set, in MB, from `/proc/self/status` (Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl BenchReport {
    /// The report of `summary`. Latency is left out when event times were evidently not
    /// wall-clock times: a median over an hour, or, unless the run was `paced` (the generator
    /// at a set rate, whose event times are wall-clock times), more than 1% of results ahead of
    /// the clock. In a paced run, results ahead of the clock are the windows the end of the
    /// input closed early; they are counted, not measured.
    pub fn new(summary: &RunSummary, paced: bool) -> Self {
        let latency_valid = summary.latency.as_ref().is_some_and(|l| {
            l.count > 0 && l.p50 < 3_600_000 && (paced || l.ahead * 100 <= l.count)
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let used = summary.workers.min(cores).max(1);
        BenchReport {
            job: summary.job.clone(),
            workers: summary.workers,
            processes: summary.processes,
            cores,
            events: summary.events_in,
            results: summary.events_out,
            wall_secs: summary.wall_secs,
            events_per_sec: summary.events_per_sec,
            steady_events_per_sec: steady_rate(&summary.samples, summary.events_in),
            events_per_sec_by_tenth: rate_by_tenth(&summary.samples, summary.events_in),
            events_per_sec_per_core: summary.events_per_sec / used as f64,
            latency_ms: if latency_valid {
                summary.latency.clone()
            } else {
                None
            },
            peak_rss_mb: peak_rss_mb(),
            minor_faults: None,
            pretouch_mb: 0,
            touched_ahead_mb: None,
            touch_ahead_faults: None,
            touch_ahead_lead_mb: None,
            late: summary.late,
            checkpoints: CheckpointCost::of(summary),
        }
    }
}

fn m(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else {
        format!("{:.0}K", x / 1e3)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} events in {:.2} s on {} worker(s) x {} process(es), {} core(s): {} events/s \
             (steady state {}), {} events/s per core; {} results, {} late{}",
            self.job,
            self.events,
            self.wall_secs,
            self.workers,
            self.processes,
            self.cores,
            m(self.events_per_sec),
            self.steady_events_per_sec
                .map_or("n/a: run too short".to_string(), m),
            m(self.events_per_sec_per_core),
            self.results,
            self.late,
            if self.events_per_sec_by_tenth.is_empty() {
                String::new()
            } else {
                let tenths: Vec<String> =
                    self.events_per_sec_by_tenth.iter().map(|&r| m(r)).collect();
                format!("\nevents/s by tenth of the input: {}", tenths.join(" "))
            }
        )?;
        match &self.latency_ms {
            Some(l) => writeln!(
                f,
                "latency (event time to result), ms: p50 {} p99 {} p99.9 {} max {} ({} results{})",
                l.p50,
                l.p99,
                l.p999,
                l.max,
                l.count,
                if l.ahead > 0 {
                    format!(", {} ahead of the clock", l.ahead)
                } else {
                    String::new()
                }
            )?,
            None => writeln!(
                f,
                "latency: n/a (event times are not wall-clock times; pace the generator with \
                 --rate, or read Kafka)"
            )?,
        }
        match self.peak_rss_mb {
            Some(r) => write!(f, "peak RSS {r:.0} MB")?,
            None => write!(f, "peak RSS n/a")?,
        }
        if let Some(n) = self.minor_faults {
            write!(f, ", {n} minor page faults during the run")?;
        }
        if self.pretouch_mb > 0 {
            write!(f, " ({} MB touched before it)", self.pretouch_mb)?;
        }
        if let (Some(mb), Some(n)) = (self.touched_ahead_mb, self.touch_ahead_faults) {
            write!(
                f,
                " ({n} of them by the touch-ahead thread, which provided {mb} MB)"
            )?;
            if let Some(lead) = self.touch_ahead_lead_mb {
                write!(f, " (aiming up to {lead} MB ahead)")?;
            }
        }
        if let Some(c) = &self.checkpoints {
            write!(
                f,
                "\ncheckpoints: {} committed, {:.1} MB written ({:.1} MB whole), {} ms from \
                 first state to commit in all",
                c.count,
                c.bytes as f64 / 1e6,
                c.full_bytes as f64 / 1e6,
                c.ms
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_leaves_out_the_ramp_and_the_tail() {
        // 0..1 s: slow start (100 events), then 1000 events/s for 8 s, then a slow tail.
        let mut samples = vec![(0.0, 0)];
        samples.push((1.0, 100));
        for i in 1..=8 {
            samples.push((1.0 + i as f64, 100 + 1000 * i));
        }
        samples.push((12.0, 8200));
        let total = 8200;
        // 10% = 820 is first reached at t=2 (1100); 90% = 7380 is last not passed at t=8
        // (7100): (7100 - 1100) / 6 = 1000.
        assert_eq!(steady_rate(&samples, total), Some(1000.0));
        assert_eq!(steady_rate(&samples[..2], total), None);
        assert_eq!(steady_rate(&[], 0), None);
    }

    #[test]
    fn rate_by_tenth_follows_a_run_that_slows_down() {
        // 1000 events: 500 events/s for the first 600, then 100 events/s, sampled every 0.1 s.
        let count_at = |t: f64| -> u64 {
            if t <= 1.2 {
                (500.0 * t).round() as u64
            } else {
                (600.0 + 100.0 * (t - 1.2)).round().min(1000.0) as u64
            }
        };
        let samples: Vec<(f64, u64)> = (0..=53)
            .map(|i| i as f64 / 10.0)
            .map(|t| (t, count_at(t)))
            .collect();
        let rates = rate_by_tenth(&samples, 1000);
        let expected = [
            500.0, 500.0, 500.0, 500.0, 500.0, 500.0, 100.0, 100.0, 100.0, 100.0,
        ];
        assert_eq!(rates.len(), 10);
        for (got, want) in rates.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{rates:?}");
        }
        // Samples that stop short of the total, or no events: nothing.
        assert!(rate_by_tenth(&samples[..20], 1000).is_empty());
        assert!(rate_by_tenth(&[(0.0, 0)], 0).is_empty());
    }
}
