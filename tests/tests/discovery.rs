//! Partitions that appear while a job runs (`Source::discovery_interval`), and the completion
//! reports sources get once every sink has finished an epoch (`PartitionReader::complete`).
//!
//! The reference is plain arithmetic: every partition holds the records `(partition, 0..N)`;
//! the sink must see each exactly once, and each partition's last completion report must be the
//! offset after its last record.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_engine::testing::Collector;
use runnel_engine::{
    run, Job, PartitionId, PartitionReader, ReadStatus, Reader, Result, RunOptions, Source,
    SourceContext, SourceOptions,
};

/// Records per partition.
const N: u64 = 5_000;

/// What the test and every worker's source instance share.
#[derive(Default)]
struct World {
    /// How many partitions exist now.
    partitions: AtomicUsize,
    /// How many partitions to grow to once partition 0 is half read.
    grow_to: usize,
    /// Every completion report, per partition name, in the order received.
    completions: Mutex<BTreeMap<String, Vec<u64>>>,
    /// Which worker opened each partition (a partition opened twice is a bug).
    opened: Mutex<Vec<(String, usize)>>,
    /// A fixed list whose partitions finish (no discovery).
    bounded: bool,
}

struct Growing {
    world: Arc<World>,
}

fn name(i: usize) -> String {
    format!("grow-{i:03}")
}

impl Source for Growing {
    type Item = (u64, u64);

    fn partitions(&mut self, _ctx: &SourceContext) -> Result<Vec<String>> {
        Ok((0..self.world.partitions.load(Ordering::SeqCst))
            .map(name)
            .collect())
    }

    fn open(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<(u64, u64)>>> {
        let p = partition.0 as usize;
        self.world
            .opened
            .lock()
            .unwrap()
            .push((name(p), ctx.worker));
        Ok(Box::new(GrowingReader {
            world: self.world.clone(),
            partition: p,
            next: 0,
        }))
    }

    fn discovery_interval(&self) -> Option<Duration> {
        (!self.world.bounded).then_some(Duration::from_millis(20))
    }

    fn owner(&self, name: &str, _index: usize, workers: usize) -> usize {
        // From the name alone, as the contract asks: the number in it, round-robin.
        let n: usize = name.trim_start_matches("grow-").parse().unwrap();
        (n * 7 + 3) % workers
    }
}

struct GrowingReader {
    world: Arc<World>,
    partition: usize,
    next: u64,
}

impl PartitionReader<(u64, u64)> for GrowingReader {
    fn read(&mut self, out: &mut Reader<(u64, u64)>) -> Result<ReadStatus> {
        // A few records per call, so that the run spans several epochs and discoveries.
        let end = (self.next + 50).min(N);
        for k in self.next..end {
            out.push_at(k as i64, k, (self.partition as u64, k));
        }
        self.next = end;
        if self.partition == 0 && self.next >= N / 2 {
            self.world
                .partitions
                .fetch_max(self.world.grow_to, Ordering::SeqCst);
        }
        // A discovering source runs until it is stopped.
        Ok(if self.next < N {
            ReadStatus::More
        } else if self.world.bounded {
            ReadStatus::Finished
        } else {
            ReadStatus::Pending
        })
    }

    fn complete(&mut self, next: u64) -> Result<()> {
        self.world
            .completions
            .lock()
            .unwrap()
            .entry(name(self.partition))
            .or_default()
            .push(next);
        Ok(())
    }
}

fn run_growing(workers: usize, grow_to: usize) {
    let world = Arc::new(World {
        partitions: AtomicUsize::new(1),
        grow_to,
        ..Default::default()
    });
    let out = Collector::<(u64, u64)>::new();
    let (w, o) = (world.clone(), out.clone());
    let job = Job::new("growing", "", move |flow| {
        flow.source("grow", Growing { world: w.clone() }, SourceOptions::new())?
            .sink("out", o.sink())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions {
        workers,
        epoch_interval: Duration::from_millis(5),
        stop: stop.clone(),
        ..Default::default()
    };
    // Stop the (unbounded) job once the sink holds as many records as exist, or after a limit.
    let total = grow_to as u64 * N;
    let watcher = {
        let out = out.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while (out.data().len() as u64) < total && t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let summary = run(&job, opts).expect("the job");
    watcher.join().unwrap();

    // Each record of each partition exactly once.
    let mut expected: Vec<(u64, u64)> = (0..grow_to as u64)
        .flat_map(|p| (0..N).map(move |k| (p, k)))
        .collect();
    expected.sort();
    let got = out.sorted_data();
    assert_eq!(got.len(), expected.len(), "records at the sink");
    assert!(
        got == expected,
        "the sink holds other records than expected"
    );
    assert_eq!(summary.events_in, total);

    // Each partition opened once, by the worker its name says.
    let mut opened = world.opened.lock().unwrap().clone();
    opened.sort();
    let want: Vec<(String, usize)> = (0..grow_to)
        .map(|i| (name(i), (i * 7 + 3) % workers))
        .collect();
    assert_eq!(opened, want, "partitions opened once each, by their owner");

    // Completion: increasing per partition, ending after the last record.
    let completions = world.completions.lock().unwrap().clone();
    assert_eq!(completions.len(), grow_to, "{completions:?}");
    for (p, reports) in &completions {
        assert!(
            reports.windows(2).all(|w| w[0] < w[1]),
            "{p}: reports increase: {reports:?}"
        );
        assert_eq!(reports.last(), Some(&N), "{p}: last report");
    }
}

#[test]
fn new_partitions_are_read_once_each_on_one_worker() {
    run_growing(1, 4);
}

#[test]
fn new_partitions_are_read_once_each_on_three_workers() {
    run_growing(3, 7);
}

/// Without discovery the list is read once, the (bounded) job finishes, and completion still
/// reaches the end of each partition: the source waits for the sinks before it goes.
#[test]
fn completion_reaches_the_end_of_a_bounded_source() {
    let world = Arc::new(World {
        partitions: AtomicUsize::new(3),
        grow_to: 3,
        bounded: true,
        ..Default::default()
    });
    let out = Collector::<(u64, u64)>::new();
    let (w, o) = (world.clone(), out.clone());
    let job = Job::new("bounded", "", move |flow| {
        flow.source("grow", Growing { world: w.clone() }, SourceOptions::new())?
            .sink("out", o.sink())
    });
    let summary = run(&job, RunOptions::workers(2)).unwrap();
    assert_eq!(summary.events_in, 3 * N);
    assert_eq!(out.data().len() as u64, 3 * N);
    let completions = world.completions.lock().unwrap().clone();
    assert_eq!(completions.len(), 3, "{completions:?}");
    for (p, reports) in &completions {
        assert_eq!(reports.last(), Some(&N), "{p}: last report");
    }
}
