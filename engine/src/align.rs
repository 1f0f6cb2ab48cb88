//! Watermark alignment between the instances of one source in a process.
//!
//! Without it, two workers that read the same backlog at slightly different speeds drift apart in
//! event time: nothing pulls them back together, so the gap is a random walk that grows with the
//! length of the run. The combined watermark is the slower instance's, and every window the
//! faster one has opened since stays open: state, memory and hash-map sizes grow, and the run
//! slows down (see BENCHMARKS.md, "W2 on two workers").
//!
//! Like Flink's watermark alignment, a partition whose watermark is more than the allowed drift
//! ahead of the slowest *backlogged* partition of the same source pauses until the others catch
//! up. A partition counts as backlogged while its reader says it has more to read; one that is
//! caught up (pending), finished or not yet read holds no one back, so a live stream where some
//! partitions are quiet never stalls. Each instance publishes the minimum watermark of its
//! backlogged partitions after every read in a slot of its own; the slots of one source are
//! shared by the workers of a process.
//!
//! In a cluster of several processes, each source instance also sends its published watermark to
//! every worker when it changes (a small broadcast dataflow beside the source, see
//! `source::build`), and the receivers write it into the sender's slot in their process. So an
//! instance sees the others of its own process at once and those of other processes as of their
//! last report, a network hop behind. Like Flink's alignment updates, a live instance repeats
//! its report every [`RESEND_EVERY`] even when it has not changed, and a report from another
//! process that has not been repeated for [`REPORT_EXPIRES`] holds no one back: an instance
//! that has ended stops reporting, and a report that went missing or was overwritten by an
//! older copy (every worker of a process writes the reports it receives into the same slots)
//! is put right by the next one. The price: while an instance's reports do not arrive for that
//! long (its worker blocked, its process gone), the others may run further ahead of it than
//! the drift. Otherwise a stale report only ever lags the truth, so it can make an instance
//! wait longer than it needed, not run further ahead than the drift, except when a caught-up
//! partition starts a backlog again: until its report arrives the others do not wait for it
//! (Flink's alignment has the same window, its update interval).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Published by an instance that holds no one back.
pub(crate) const NOT_BACKLOGGED: i64 = i64::MAX;

/// How often a live instance in a cluster repeats its report.
pub(crate) const RESEND_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// How long a report from another process counts without being repeated, in milliseconds.
pub(crate) const REPORT_EXPIRES: u64 = 2_000;

/// The slots of one source: each instance's watermark, and for the instances of other
/// processes when their last report came (milliseconds since the registry's origin).
#[derive(Debug)]
struct Slots {
    wm: Vec<AtomicI64>,
    seen: Vec<AtomicU64>,
    origin: Instant,
}

/// The alignment slots of every source of a run in this process, by source name: one slot per
/// worker of the cluster, written directly by this process's instances and from reports for the
/// instances of other processes.
#[derive(Debug)]
pub(crate) struct Registry {
    local_workers: usize,
    processes: usize,
    groups: Mutex<HashMap<String, Arc<Slots>>>,
    origin: Instant,
}

impl Registry {
    /// A registry for a process with `local_workers` worker threads, in a cluster of
    /// `processes` processes of as many threads each.
    pub(crate) fn new(local_workers: usize, processes: usize) -> Self {
        Registry {
            local_workers: local_workers.max(1),
            processes: processes.max(1),
            groups: Mutex::new(HashMap::new()),
            origin: Instant::now(),
        }
    }

    /// Whether the instances of a source live in more than one process, so they must send
    /// their watermarks to each other.
    pub(crate) fn spans_processes(&self) -> bool {
        self.processes > 1
    }

    /// The handle of source `source`'s instance on global worker `worker`.
    pub(crate) fn join(&self, source: &str, worker: usize) -> Aligner {
        let n = self.local_workers * self.processes;
        let slots = self
            .groups
            .lock()
            .expect("alignment registry poisoned")
            .entry(source.to_string())
            .or_insert_with(|| {
                Arc::new(Slots {
                    wm: (0..n).map(|_| AtomicI64::new(NOT_BACKLOGGED)).collect(),
                    seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
                    origin: self.origin,
                })
            })
            .clone();
        // Timely numbers the workers of process `p` from `p * local_workers`.
        let first = worker / self.local_workers * self.local_workers;
        Aligner {
            remote: Remote {
                slots,
                local: first..first + self.local_workers,
            },
            mine: worker % n,
        }
    }
}

/// One source instance's view of its group.
#[derive(Debug)]
pub(crate) struct Aligner {
    remote: Remote,
    mine: usize,
}

/// Where a process writes the reports of its source's instances in other processes.
#[derive(Clone, Debug)]
pub(crate) struct Remote {
    slots: Arc<Slots>,
    /// The global indices of this process's workers, whose slots they write themselves.
    local: std::ops::Range<usize>,
}

impl Remote {
    /// Records that the instance on global worker `worker` published `wm`; a report from an
    /// instance of this process (which writes its slot itself, and more recently) is ignored.
    pub(crate) fn receive(&self, worker: usize, wm: i64) {
        self.receive_at(worker, wm, self.now_ms());
    }

    /// [`Remote::receive`], at `now` milliseconds since the registry's origin.
    fn receive_at(&self, worker: usize, wm: i64, now: u64) {
        if !self.local.contains(&worker) {
            if let (Some(slot), Some(seen)) =
                (self.slots.wm.get(worker), self.slots.seen.get(worker))
            {
                slot.store(wm, Ordering::Relaxed);
                seen.store(now, Ordering::Relaxed);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.slots.origin.elapsed().as_millis() as u64
    }
}

impl Aligner {
    /// Publishes this instance's watermark over its backlogged partitions
    /// ([`NOT_BACKLOGGED`] if none).
    #[inline]
    pub(crate) fn publish(&self, wm: i64) {
        self.remote.slots.wm[self.mine].store(wm, Ordering::Relaxed);
    }

    /// What this instance published last.
    pub(crate) fn published(&self) -> i64 {
        self.remote.slots.wm[self.mine].load(Ordering::Relaxed)
    }

    /// Every instance's slot, by global worker (for diagnostics).
    pub(crate) fn slots(&self) -> Vec<i64> {
        let now = self.remote.now_ms();
        (0..self.remote.slots.wm.len())
            .map(|i| self.slot_at(i, now))
            .collect()
    }

    /// Slot `i` as it counts at `now`: a report from another process that has expired holds
    /// no one back.
    fn slot_at(&self, i: usize, now: u64) -> i64 {
        let wm = self.remote.slots.wm[i].load(Ordering::Relaxed);
        if wm != NOT_BACKLOGGED && !self.remote.local.contains(&i) {
            let seen = self.remote.slots.seen[i].load(Ordering::Relaxed);
            if now.saturating_sub(seen) > REPORT_EXPIRES {
                return NOT_BACKLOGGED;
            }
        }
        wm
    }

    /// Where this process records the reports of instances in other processes.
    pub(crate) fn remote(&self) -> Remote {
        self.remote.clone()
    }

    /// The smallest watermark any instance of the group has published.
    #[inline]
    pub(crate) fn group_min(&self) -> i64 {
        self.group_min_at(self.remote.now_ms())
    }

    /// [`Aligner::group_min`] at `now` milliseconds since the registry's origin.
    fn group_min_at(&self, now: u64) -> i64 {
        (0..self.remote.slots.wm.len())
            .map(|i| self.slot_at(i, now))
            .min()
            .unwrap_or(NOT_BACKLOGGED)
    }
}

impl Drop for Aligner {
    fn drop(&mut self) {
        self.publish(NOT_BACKLOGGED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_of_one_source_share_slots_and_others_do_not() {
        let r = Registry::new(2, 1);
        let a0 = r.join("a", 0);
        let a1 = r.join("a", 1);
        let b0 = r.join("b", 0);
        assert_eq!(a0.group_min(), NOT_BACKLOGGED, "nobody backlogged yet");
        a1.publish(50);
        a0.publish(80);
        assert_eq!(a0.group_min(), 50);
        assert_eq!(
            b0.group_min(),
            NOT_BACKLOGGED,
            "another source is not aligned with a"
        );
        drop(a1);
        assert_eq!(a0.group_min(), 80, "a dropped instance holds no one back");
    }

    #[test]
    fn reports_from_other_processes_count_and_local_ones_do_not() {
        // Process 1 of a 2 x 2 cluster has global workers 2 and 3.
        let r = Registry::new(2, 2);
        assert!(r.spans_processes());
        let w2 = r.join("s", 2);
        let w3 = r.join("s", 3);
        w2.publish(10);
        w3.publish(20);
        assert_eq!(w3.group_min(), 10);
        let remote = w2.remote();
        // Worker 0, in process 0, reports a lower watermark: it now holds both back.
        remote.receive(0, 5);
        assert_eq!(w2.group_min(), 5);
        assert_eq!(w3.group_min(), 5);
        // A report about a worker of this process is old news: its own slot is newer.
        remote.receive(3, 1);
        assert_eq!(w3.published(), 20);
        assert_eq!(w2.group_min(), 5);
        // Worker 0 caught up; worker 1 of process 0 never reported.
        remote.receive(0, NOT_BACKLOGGED);
        assert_eq!(w2.group_min(), 10);
        // Out-of-range workers are ignored rather than panicking.
        remote.receive(99, 0);
        assert_eq!(w2.group_min(), 10);
        assert!(!Registry::new(2, 1).spans_processes());
    }

    #[test]
    fn a_report_from_another_process_expires_unless_it_is_repeated() {
        let r = Registry::new(1, 2);
        let w1 = r.join("s", 1);
        w1.publish(100);
        let remote = w1.remote();
        remote.receive_at(0, 40, 1_000);
        assert_eq!(w1.group_min_at(1_000 + REPORT_EXPIRES), 40, "fresh");
        assert_eq!(
            w1.group_min_at(1_001 + REPORT_EXPIRES),
            100,
            "expired: it holds no one back"
        );
        remote.receive_at(0, 40, 5_000);
        assert_eq!(w1.group_min_at(5_500), 40, "repeated: it counts again");
        assert_eq!(
            w1.group_min_at(60_000),
            100,
            "this process's own slot never expires"
        );
    }
}
