//! Watermark alignment (`SourceOptions::watermark_alignment`): a partition that is ahead of the
//! slowest backlogged partition of its source by more than the allowed drift waits.
//!
//! Two partitions on two workers hold the event times `0..N` (one per millisecond). Partition 0
//! is slow (a few records per read, with a pause), partition 1 fast. Every read is logged, in
//! order, with the event times it produced. The reference is a replay of that log: whenever the
//! fast partition starts a read, its largest event time so far may be at most the drift ahead of
//! the slow partition's largest so far, while the slow one still has a backlog.
//!
//! The same check runs across two processes of a cluster (two `run`s connected over TCP on
//! localhost, one worker each): the slow partition is read in one, the fast in the other, and
//! they see each other only through the alignment reports the sources send.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use runnel_engine::testing::Collector;
use runnel_engine::{
    run, Job, PartitionId, PartitionReader, ReadStatus, Reader, Result, RunOptions, Source,
    SourceContext, SourceOptions,
};

/// Records per partition (event times `0..N` ms).
const N: i64 = 20_000;
const DRIFT_MS: i64 = 100;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slow {
    /// Partition 0 has a backlog but reads slowly.
    Backlogged,
    /// Partition 0 reads a little, then has nothing (pending) for a while, then ends.
    Quiet,
}

#[derive(Debug)]
struct Read {
    partition: u32,
    /// The partition's largest event time before this read (-1 if none).
    before: i64,
    /// Its largest event time after it.
    after: i64,
    status: &'static str,
}

struct Skewed {
    slow: Slow,
    log: Arc<Mutex<Vec<Read>>>,
    slow_reads: Arc<AtomicUsize>,
    grace: Duration,
    second_slow_read: Arc<OnceLock<Instant>>,
}

struct SkewedReader {
    partition: u32,
    slow: Slow,
    next: i64,
    quiet_until: Option<Instant>,
    log: Arc<Mutex<Vec<Read>>>,
    /// Reads of the slow partition so far: the fast one starts after the second, so that the
    /// slow one has published where it is.
    slow_reads: Arc<AtomicUsize>,
    /// How long after the slow partition's second read the fast one starts: across
    /// processes, the slow one's report needs a moment to arrive.
    grace: Duration,
    second_slow_read: Arc<OnceLock<Instant>>,
}

impl Source for Skewed {
    type Item = i64;
    fn partitions(&mut self, _ctx: &SourceContext) -> Result<Vec<String>> {
        Ok(vec!["slow".into(), "fast".into()])
    }
    fn open(
        &mut self,
        partition: PartitionId,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<i64>>> {
        Ok(Box::new(SkewedReader {
            partition: partition.0,
            slow: self.slow,
            next: 0,
            quiet_until: None,
            log: self.log.clone(),
            slow_reads: self.slow_reads.clone(),
            grace: self.grace,
            second_slow_read: self.second_slow_read.clone(),
        }))
    }
}

impl PartitionReader<i64> for SkewedReader {
    fn read(&mut self, out: &mut Reader<i64>) -> Result<ReadStatus> {
        let before = self.next - 1;
        let mut status = ReadStatus::More;
        let waiting = self.partition == 1
            && self
                .second_slow_read
                .get()
                .is_none_or(|t| t.elapsed() < self.grace);
        if waiting {
            status = ReadStatus::Pending;
        } else if self.partition == 0 && self.slow == Slow::Quiet && self.next >= 100 {
            // Caught up: nothing to read for 300 ms, then the end.
            let until = *self
                .quiet_until
                .get_or_insert_with(|| Instant::now() + Duration::from_millis(300));
            status = if Instant::now() < until {
                ReadStatus::Pending
            } else {
                ReadStatus::Finished
            };
        } else {
            let n = if self.partition == 0 { 10 } else { 1000 };
            if self.partition == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
            for _ in 0..n {
                if self.next == N {
                    status = ReadStatus::Finished;
                    break;
                }
                out.push_at(self.next, self.next as u64, self.next);
                self.next += 1;
            }
            if self.next == N {
                status = ReadStatus::Finished;
            }
        }
        if self.partition == 0 && self.slow_reads.fetch_add(1, Ordering::SeqCst) == 1 {
            let _ = self.second_slow_read.set(Instant::now());
        }
        self.log.lock().unwrap().push(Read {
            partition: self.partition,
            before,
            after: self.next - 1,
            status: match status {
                ReadStatus::More => "more",
                ReadStatus::Pending => "pending",
                ReadStatus::Finished => "finished",
                ReadStatus::CutEpoch => "cut",
            },
        });
        Ok(status)
    }
}

/// Where the two partitions run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Two workers of one process.
    OneProcess,
    /// One worker in each of two processes (two runs in this test, connected over TCP).
    TwoProcesses,
}

/// Runs the two partitions on two workers; returns the read log and what reached the sink.
fn run_skewed(slow: Slow, drift: Option<Duration>) -> (Vec<Read>, Vec<i64>) {
    run_skewed_on(Layout::OneProcess, slow, drift)
}

fn run_skewed_on(layout: Layout, slow: Slow, drift: Option<Duration>) -> (Vec<Read>, Vec<i64>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = Collector::new();
    let (log2, out2) = (log.clone(), out.clone());
    let slow_reads = Arc::new(AtomicUsize::new(0));
    let second_slow_read = Arc::new(OnceLock::new());
    let grace = match layout {
        Layout::OneProcess => Duration::ZERO,
        Layout::TwoProcesses => Duration::from_millis(100),
    };
    let job = Job::new(
        "skewed",
        "two partitions at different speeds",
        move |flow| {
            let source = Skewed {
                slow,
                log: log2.clone(),
                slow_reads: slow_reads.clone(),
                grace,
                second_slow_read: second_slow_read.clone(),
            };
            let options = match drift {
                Some(d) => SourceOptions::new().watermark_alignment(d),
                None => SourceOptions::new().without_watermark_alignment(),
            };
            flow.source("skewed", source, options)?
                .sink("out", out2.sink())
        },
    );
    match layout {
        Layout::OneProcess => {
            run(&job, RunOptions::workers(2)).expect("job runs");
        }
        Layout::TwoProcesses => {
            let hosts: Vec<String> = (0..2)
                .map(|_| {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
                    format!("127.0.0.1:{}", l.local_addr().expect("bound").port())
                })
                .collect();
            let runs: Vec<_> = (0..2)
                .map(|process_id| {
                    let (job, hosts) = (job.clone(), hosts.clone());
                    std::thread::spawn(move || {
                        let opts = RunOptions {
                            processes: 2,
                            process_id,
                            hosts,
                            ..RunOptions::workers(1)
                        };
                        run(&job, opts).expect("both processes run")
                    })
                })
                .collect();
            for r in runs {
                r.join().expect("a process panicked");
            }
        }
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    (log, out.sorted_data())
}

/// The largest amount by which the fast partition started a read ahead of the slow one while
/// the slow one was backlogged, and how many reads of the fast one that covers.
fn worst_lead(log: &[Read]) -> (i64, usize) {
    let mut slow_max = -1;
    let mut slow_done = false;
    let mut worst = i64::MIN;
    let mut checked = 0;
    for r in log {
        if r.partition == 0 {
            slow_max = slow_max.max(r.after);
            slow_done = r.status != "more";
        } else if r.status != "pending" && !slow_done {
            worst = worst.max(r.before - slow_max);
            checked += 1;
        }
    }
    (worst, checked)
}

fn all_records() -> Vec<i64> {
    let mut v: Vec<i64> = (0..N).chain(0..N).collect();
    v.sort();
    v
}

/// The fast partition stays within the drift of the slow backlogged one, and every record
/// arrives once. Across processes a report lags the slow partition, so the fast one waits for an
/// older watermark than the slow one's current: the bound holds as within a process.
fn check_the_fast_partition_waits(layout: Layout) {
    let drift = Duration::from_millis(DRIFT_MS as u64);
    let (log, out) = run_skewed_on(layout, Slow::Backlogged, Some(drift));
    let (lead, checked) = worst_lead(&log);
    eprintln!("{layout:?}: worst lead of the fast partition: {lead} ms over {checked} reads");
    assert!(
        checked >= 10,
        "the fast partition read only {checked} times while the slow one was backlogged"
    );
    assert!(
        lead <= DRIFT_MS,
        "the fast partition started a read {lead} ms ahead of the slow one (drift {DRIFT_MS})"
    );
    assert_eq!(out, all_records(), "every record arrives once");
}

/// The fast partition finishes while the slow one is caught up and quiet.
fn check_a_caught_up_partition_holds_no_one_back(layout: Layout) {
    let drift = Duration::from_millis(DRIFT_MS as u64);
    let (log, out) = run_skewed_on(layout, Slow::Quiet, Some(drift));
    let position = |partition, status| {
        log.iter()
            .position(|r: &Read| r.partition == partition && r.status == status)
    };
    let fast_done = position(1, "finished").expect("the fast partition finished");
    let slow_done = position(0, "finished").expect("the quiet partition finished");
    assert!(
        fast_done < slow_done,
        "the fast partition should finish while the slow one is caught up and quiet"
    );
    let mut expected: Vec<i64> = (0..100).chain(0..N).collect();
    expected.sort();
    assert_eq!(out, expected);
}

#[test]
fn a_fast_partition_waits_for_a_slow_backlogged_one() {
    check_the_fast_partition_waits(Layout::OneProcess);
}

#[test]
fn without_alignment_the_same_log_shows_the_drift() {
    // The check above can fail: with alignment off the fast partition runs ahead.
    let (log, out) = run_skewed(Slow::Backlogged, None);
    let (lead, checked) = worst_lead(&log);
    eprintln!("worst lead of the fast partition: {lead} ms over {checked} reads");
    assert!(
        lead > 10 * DRIFT_MS,
        "expected the fast partition to run far ahead, lead was {lead} ms"
    );
    assert_eq!(out, all_records());
}

#[test]
fn a_caught_up_partition_holds_no_one_back() {
    check_a_caught_up_partition_holds_no_one_back(Layout::OneProcess);
}

#[test]
fn a_fast_partition_waits_for_a_slow_one_in_another_process() {
    check_the_fast_partition_waits(Layout::TwoProcesses);
}

#[test]
fn across_processes_a_caught_up_partition_holds_no_one_back() {
    check_a_caught_up_partition_holds_no_one_back(Layout::TwoProcesses);
}
