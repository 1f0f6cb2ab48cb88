//! Epochs close on a fixed schedule (`origin + n * interval`, the same on every worker), not at
//! "the last close plus the interval", which drifted later by every activation's overrun.
//!
//! Two partitions on two workers are read slowly: each read pushes one record and takes about
//! 3 ms, so a worker looks at its clock only every few milliseconds and overruns each epoch's
//! deadline by a millisecond or more. A local operator after the source notes the instant at
//! which each epoch completes (every worker has closed it). The reference is the schedule
//! itself: the `k`-th completion should come about `k` intervals after the first one. On the
//! old timer the lag behind that grew with `k` (about 1-3 ms per epoch here, so 100-300 ms
//! after 100 epochs); on the schedule it stays within a few milliseconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_engine::testing::Collector;
use runnel_engine::{
    run, Batcher, Event, Job, LocalEpochLogic, PartitionId, PartitionReader, ReadStatus, Reader,
    Result, RunOptions, Source, SourceContext, SourceOptions,
};

const INTERVAL: Duration = Duration::from_millis(10);
/// How long each partition keeps producing: about 150 epochs.
const RUN: Duration = Duration::from_millis(1_500);

struct Slow;

struct SlowReader {
    until: Instant,
    next: u64,
}

impl Source for Slow {
    type Item = u64;
    fn partitions(&mut self, _ctx: &SourceContext) -> Result<Vec<String>> {
        Ok(vec!["a".into(), "b".into()])
    }
    fn open(
        &mut self,
        _partition: PartitionId,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<u64>>> {
        Ok(Box::new(SlowReader {
            until: Instant::now() + RUN,
            next: 0,
        }))
    }
}

impl PartitionReader<u64> for SlowReader {
    fn read(&mut self, out: &mut Reader<u64>) -> Result<ReadStatus> {
        if Instant::now() >= self.until {
            return Ok(ReadStatus::Finished);
        }
        std::thread::sleep(Duration::from_millis(3));
        out.push_at(self.next as i64, self.next, self.next);
        self.next += 1;
        Ok(ReadStatus::More)
    }
}

/// Notes when each epoch (each has records on every worker: every read pushes one) completed.
struct EpochEnds {
    ends: Arc<Mutex<Vec<Instant>>>,
}

impl LocalEpochLogic<(u64, u64), (u64, u64)> for EpochEnds {
    fn on_record(&mut self, _record: Event<(u64, u64)>, _out: &mut Batcher<Event<(u64, u64)>>) {}
    fn on_epoch_end(&mut self, _out: &mut Batcher<Event<(u64, u64)>>) {
        self.ends.lock().unwrap().push(Instant::now());
    }
}

#[test]
fn epochs_complete_on_schedule_when_activations_overrun() {
    // One list of completions per worker (each builds its own operator).
    let lists: Arc<Mutex<Vec<Arc<Mutex<Vec<Instant>>>>>> = Arc::new(Mutex::new(Vec::new()));
    let out = Collector::new();
    let (lists2, out2) = (lists.clone(), out.clone());
    let job = Job::new("epochs", "slow reads on two workers", move |flow| {
        let ends = Arc::new(Mutex::new(Vec::new()));
        lists2.lock().unwrap().push(ends.clone());
        flow.source("slow", Slow, SourceOptions::new())?
            .key_by(|x| *x)
            .local("epoch-ends", EpochEnds { ends })?
            .into_stream()
            .sink("out", out2.sink())
    });
    let mut opts = RunOptions::workers(2);
    opts.epoch_interval = INTERVAL;
    run(&job, opts).expect("job runs");
    assert!(out.sorted_data().is_empty(), "the operator emits nothing");
    let lists = lists.lock().unwrap();
    assert_eq!(lists.len(), 2, "one operator per worker");
    for (worker, ends) in lists.iter().enumerate() {
        let ends = ends.lock().unwrap();
        assert!(
            ends.len() >= 100,
            "worker {worker} noted only {} epoch completions in {RUN:?} of {INTERVAL:?} epochs",
            ends.len()
        );
        // How far the k-th completion is behind the schedule, in ms (negative: early).
        let step = INTERVAL.as_secs_f64() * 1e3;
        let lags: Vec<f64> = ends
            .iter()
            .enumerate()
            .map(|(k, t)| t.duration_since(ends[0]).as_secs_f64() * 1e3 - k as f64 * step)
            .collect();
        // The median of the last 20: a few late completions (a busy machine) move it little.
        let mut tail: Vec<f64> = lags[lags.len() - 20..].to_vec();
        tail.sort_by(f64::total_cmp);
        let median = tail[tail.len() / 2];
        eprintln!(
            "worker {worker}: {} completions; behind the schedule at the end: median {median:.1} ms",
            ends.len()
        );
        assert!(
            median < 30.0,
            "worker {worker}: epochs drifted {median:.1} ms behind the {INTERVAL:?} schedule \
             over {} epochs",
            ends.len()
        );
    }
}
