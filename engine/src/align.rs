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
//! shared by the workers of a process (instances in other processes are not seen).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Published by an instance that holds no one back.
pub(crate) const NOT_BACKLOGGED: i64 = i64::MAX;

/// The alignment slots of every source of a run in this process, by source name.
#[derive(Debug)]
pub(crate) struct Registry {
    local_workers: usize,
    groups: Mutex<HashMap<String, Arc<[AtomicI64]>>>,
}

impl Registry {
    /// A registry for a process with `local_workers` worker threads.
    pub(crate) fn new(local_workers: usize) -> Self {
        Registry {
            local_workers: local_workers.max(1),
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// The handle of source `source`'s instance on global worker `worker`.
    pub(crate) fn join(&self, source: &str, worker: usize) -> Aligner {
        let n = self.local_workers;
        let slots = self
            .groups
            .lock()
            .expect("alignment registry poisoned")
            .entry(source.to_string())
            .or_insert_with(|| (0..n).map(|_| AtomicI64::new(NOT_BACKLOGGED)).collect())
            .clone();
        Aligner {
            slots,
            mine: worker % n,
        }
    }
}

/// One source instance's view of its group.
#[derive(Debug)]
pub(crate) struct Aligner {
    slots: Arc<[AtomicI64]>,
    mine: usize,
}

impl Aligner {
    /// Publishes this instance's watermark over its backlogged partitions
    /// ([`NOT_BACKLOGGED`] if none).
    #[inline]
    pub(crate) fn publish(&self, wm: i64) {
        self.slots[self.mine].store(wm, Ordering::Relaxed);
    }

    /// The smallest watermark any instance of the group has published.
    #[inline]
    pub(crate) fn group_min(&self) -> i64 {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
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
        let r = Registry::new(2);
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
    fn workers_of_other_processes_map_onto_local_slots() {
        // Process 1 of a 2 x 2 cluster has global workers 2 and 3.
        let r = Registry::new(2);
        let w2 = r.join("s", 2);
        let w3 = r.join("s", 3);
        w2.publish(10);
        w3.publish(20);
        assert_eq!(w3.group_min(), 10);
    }
}
