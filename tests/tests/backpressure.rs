//! Backpressure (`RunOptions::max_in_flight`): a source reads at most that far, in epochs, ahead
//! of the oldest epoch its job's sinks have not finished.
//!
//! Two partitions on two workers. Worker 0's partition is read slowly; when worker 0 maps one
//! chosen record of it, it stops for a second, as a worker writing a large checkpoint does.
//! Worker 1's partition is read fast the whole time. Every read is logged with the wall-clock
//! moment it began and the values it produced; the sink says in which epoch each value was.
//!
//! The reference is the stall itself: while worker 0 holds the chosen record's epoch `E`, no
//! sink can finish `E`, so with `K` epochs in flight every value worker 1 read during the stall
//! must be in an epoch below `E + K`. Without the bound the same log shows worker 1 reading
//! some hundred epochs ahead (epochs are 10 ms, the stall 1 s).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use runnel_engine::testing::Collector;
use runnel_engine::{
    run, Job, PartitionId, PartitionReader, ReadStatus, Reader, Result, RunOptions, Source,
    SourceContext, SourceOptions,
};

const EPOCH: Duration = Duration::from_millis(10);
const IN_FLIGHT: Duration = Duration::from_millis(50);
const STALL: Duration = Duration::from_secs(1);
/// The value of worker 0's partition whose map stalls.
const STALL_AT: i64 = 2_000;
/// Worker 1's values start here (worker 0's at 0).
const FAST_BASE: i64 = 1_000_000_000;

/// One read: its partition, when it began, and the values it produced.
#[derive(Debug)]
struct Read {
    partition: u32,
    at: Instant,
    values: std::ops::Range<i64>,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Read>>,
    stall: OnceLock<(Instant, Instant)>,
    stalled: AtomicBool,
}

struct TwoSpeeds(Arc<Shared>);

struct TwoSpeedsReader {
    partition: u32,
    next: i64,
    shared: Arc<Shared>,
}

impl Source for TwoSpeeds {
    type Item = i64;
    fn partitions(&mut self, _ctx: &SourceContext) -> Result<Vec<String>> {
        Ok(vec!["slow".into(), "fast".into()])
    }
    fn open(
        &mut self,
        partition: PartitionId,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<i64>>> {
        Ok(Box::new(TwoSpeedsReader {
            partition: partition.0,
            next: if partition.0 == 0 { 0 } else { FAST_BASE },
            shared: self.0.clone(),
        }))
    }
}

impl PartitionReader<i64> for TwoSpeedsReader {
    fn read(&mut self, out: &mut Reader<i64>) -> Result<ReadStatus> {
        let at = Instant::now();
        // The slow partition ends a little after the stall, the fast one 300 ms after it.
        let after_stall = self.shared.stall.get().map(|&(_, end)| end.elapsed());
        let (n, done) = if self.partition == 0 {
            std::thread::sleep(Duration::from_micros(500));
            (10, self.next > STALL_AT + 500)
        } else {
            std::thread::sleep(Duration::from_micros(100));
            (
                100,
                after_stall.is_some_and(|d| d > Duration::from_millis(300)),
            )
        };
        if done {
            return Ok(ReadStatus::Finished);
        }
        let first = self.next;
        for _ in 0..n {
            out.push(self.next as u64, self.next);
            self.next += 1;
        }
        self.shared.log.lock().unwrap().push(Read {
            partition: self.partition,
            at,
            values: first..self.next,
        });
        Ok(ReadStatus::More)
    }
}

/// What one run shows: the stalled epoch `E`, and the largest epoch of a value worker 1 read
/// during the stall (with how many such values there were).
struct Outcome {
    stalled_epoch: u64,
    worst: u64,
    read_during: usize,
}

fn run_with(max_in_flight: Option<Duration>) -> Outcome {
    let shared = Arc::new(Shared::default());
    let out = Collector::new();
    let (shared2, out2) = (shared.clone(), out.clone());
    let job = Job::new("stall", "one worker stops for a second", move |flow| {
        let shared = shared2.clone();
        flow.source(
            "two-speeds",
            TwoSpeeds(shared.clone()),
            SourceOptions::new().without_watermark_alignment(),
        )?
        .map(move |v| {
            if v == STALL_AT && !shared.stalled.swap(true, Ordering::SeqCst) {
                let start = Instant::now();
                std::thread::sleep(STALL);
                let _ = shared.stall.set((start, Instant::now()));
            }
            v
        })
        .sink("out", out2.sink())
    });
    let opts = RunOptions {
        epoch_interval: EPOCH,
        max_in_flight,
        ..RunOptions::workers(2)
    };
    run(&job, opts).expect("the job runs");

    let (start, end) = *shared.stall.get().expect("worker 0 stalled");
    let epochs: BTreeMap<i64, u64> = out
        .events()
        .into_iter()
        .map(|(epoch, e)| (e.data, epoch.0))
        .collect();
    let log = std::mem::take(&mut *shared.log.lock().unwrap());
    // Every value read reached the sink once, and nothing else did.
    let read: Vec<i64> = log.iter().flat_map(|r| r.values.clone()).collect();
    assert_eq!(
        out.events().len(),
        read.len(),
        "each value reaches the sink once"
    );
    assert!(
        read.iter().all(|v| epochs.contains_key(v)),
        "a value read was lost"
    );

    let stalled_epoch = epochs[&STALL_AT];
    let during: Vec<i64> = log
        .iter()
        .filter(|r| r.partition == 1 && r.at > start && r.at < end)
        .flat_map(|r| r.values.clone())
        .collect();
    let worst = during.iter().map(|v| epochs[v]).max().unwrap_or(0);
    Outcome {
        stalled_epoch,
        worst,
        read_during: during.len(),
    }
}

#[test]
fn a_source_waits_while_another_worker_holds_an_epoch() {
    let o = run_with(Some(IN_FLIGHT));
    let k = (IN_FLIGHT.as_millis() / EPOCH.as_millis()) as u64;
    eprintln!(
        "stalled at epoch {}, worker 1 read {} values during the stall, the last in epoch {}",
        o.stalled_epoch, o.read_during, o.worst
    );
    assert!(
        o.worst < o.stalled_epoch + k,
        "worker 1 read into epoch {} while worker 0 held epoch {} ({k} epochs may be in flight)",
        o.worst,
        o.stalled_epoch
    );
}

#[test]
fn without_the_bound_the_same_run_reads_far_ahead() {
    // The check above can fail: with no bound worker 1 reads through the whole stall.
    let o = run_with(None);
    eprintln!(
        "stalled at epoch {}, worker 1 read {} values during the stall, the last in epoch {}",
        o.stalled_epoch, o.read_during, o.worst
    );
    assert!(
        o.worst > o.stalled_epoch + 20,
        "worker 1 read only up to epoch {} while worker 0 held epoch {}",
        o.worst,
        o.stalled_epoch
    );
}
