//! Replay from the epoch log: a windowed job whose sink replays ([`Sink::replays`]) is stopped
//! after its first checkpoint; the resumed run must cut each epoch after the checkpoint as the
//! first run did, so that its sink receives, epoch by epoch, the same results (as multisets),
//! and the first run's results up to the checkpoint plus the resumed run's are every window
//! once, as the generator's formulas give them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_connectors::{Bid, BidGenerator};
use runnel_engine::checkpoint::{CheckpointStore, LocalDirStore};
use runnel_engine::{
    run, CheckpointOptions, Epoch, Event, Job, PartitionId, PartitionReader, ReadStatus, Reader,
    Restore, Result, RunOptions, Sink, Source, SourceContext, SourceOptions,
};
use runnel_operators::prelude::*;

const EVENTS: u64 = 60_000;
const WINDOW_MS: u64 = 200;

type Row = (u64, i64, u64, u64);

/// What a run's sink received: per epoch, the rows; and the epochs it was told are over.
#[derive(Clone, Default)]
struct Recorded {
    rows: Arc<Mutex<BTreeMap<u64, Vec<Row>>>>,
    /// One more than the last epoch over.
    done: Arc<AtomicU64>,
}

impl Recorded {
    /// The rows of each epoch that is over, sorted.
    fn finished_epochs(&self) -> BTreeMap<u64, Vec<Row>> {
        let done = self.done.load(Ordering::SeqCst);
        let rows = self.rows.lock().unwrap();
        rows.iter()
            .filter(|(e, _)| **e < done)
            .map(|(e, r)| {
                let mut r = r.clone();
                r.sort();
                (*e, r)
            })
            .collect()
    }
}

/// A sink that replays and records what it receives.
struct RecordingSink(Recorded);

impl Sink<Row> for RecordingSink {
    fn replays(&self) -> bool {
        true
    }
    fn write(&mut self, epoch: Epoch, records: &mut Vec<Event<Row>>) -> Result<()> {
        let mut rows = self.0.rows.lock().unwrap();
        rows.entry(epoch.0)
            .or_default()
            .extend(records.drain(..).map(|e| e.data));
        Ok(())
    }
    fn epoch_done(&mut self, epoch: Epoch) -> Result<()> {
        self.0.done.fetch_max(epoch.0 + 1, Ordering::SeqCst);
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Per auction, bids and max price per 200 ms window of event time, paced at 50,000 bids/s
/// over 4 partitions.
fn job(recorded: &Recorded) -> Job {
    let recorded = recorded.clone();
    Job::new("replay", "windows into a replaying sink", move |flow| {
        let bids = flow.source(
            "bids",
            BidGenerator::new(EVENTS).partitions(4).rate(50_000),
            SourceOptions::new(),
        )?;
        bids.key_by(|b: &Bid| b.auction)
            .window(Tumbling::of(Duration::from_millis(WINDOW_MS)))
            .aggregate((Count, Max::of(|b: &Bid| b.price)))?
            .map(|r| (r.key, r.start, r.value.0, r.value.1))
            .sink("out", RecordingSink(recorded.clone()))
    })
}

/// The expected rows, from the generator's formulas.
fn expected() -> Vec<Row> {
    let mut m: BTreeMap<(u64, i64), (u64, u64)> = BTreeMap::new();
    for seq in 0..EVENTS {
        let b = Bid::at(seq);
        let start = b.event_time_ms - b.event_time_ms.rem_euclid(WINDOW_MS as i64);
        let e = m.entry((b.auction, start)).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(b.price);
    }
    m.into_iter().map(|((a, s), (c, x))| (a, s, c, x)).collect()
}

fn options(store: &Arc<LocalDirStore>) -> RunOptions {
    RunOptions {
        workers: 2,
        epoch_interval: Duration::from_millis(10),
        checkpoint: Some(CheckpointOptions {
            store: store.clone(),
            // Only the first checkpoint (at epoch 1) falls in the first run.
            every: Duration::from_secs(30),
            keep: 2,
            restore: Restore::Latest,
            stream_above: runnel_engine::recovery::STREAM_STATE_ABOVE,
            incremental: true,
            changes_every: runnel_engine::recovery::CHANGES_EVERY,
        }),
        ..Default::default()
    }
}

/// Runs `job` until some 30 epochs after its first checkpoint, then again from that
/// checkpoint, and checks that each epoch after it gave the same rows both times. Returns the
/// rows of the first run up to the checkpoint and every row of the second.
fn run_twice(job: fn(&Recorded) -> Job) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "replay").unwrap());

    // The first run: stopped some 30 epochs after its first checkpoint.
    let first = Recorded::default();
    let opts = options(&store);
    let stop = opts.stop.clone();
    let watcher = {
        let store = store.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while store.list().map(|l| l.len()).unwrap_or(0) < 1 {
                assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
        })
    };
    run(&job(&first), opts).expect("the first run");
    watcher.join().unwrap();
    let checkpoint = store.latest().unwrap().expect("a checkpoint").epoch;
    let before = first.finished_epochs();
    let after_checkpoint: BTreeMap<u64, Vec<Row>> = before
        .iter()
        .filter(|(e, _)| **e > checkpoint)
        .map(|(e, r)| (*e, r.clone()))
        .collect();
    let replayed_rows: usize = after_checkpoint.values().map(Vec::len).sum();
    assert!(
        after_checkpoint.len() >= 5 && replayed_rows > 0,
        "the first run must end well after its checkpoint (epoch {checkpoint}) with results \
         in the epochs since: {} epochs, {replayed_rows} rows",
        after_checkpoint.len()
    );

    // The resumed run replays those epochs, then goes on live to the end.
    let second = Recorded::default();
    run(&job(&second), options(&store)).expect("the resumed run");
    let resumed = second.finished_epochs();
    for (epoch, rows) in &after_checkpoint {
        let again = resumed.get(epoch).cloned().unwrap_or_default();
        assert_eq!(
            &again, rows,
            "epoch {epoch} (after checkpoint {checkpoint}) gave other results on replay"
        );
    }
    assert!(
        resumed.keys().all(|&e| e > checkpoint),
        "the resumed run starts after its checkpoint"
    );

    // Up to the checkpoint from the first run, the rest from the second.
    let rows: Vec<Row> = before
        .iter()
        .filter(|(e, _)| **e <= checkpoint)
        .flat_map(|(_, r)| r.iter().copied())
        .chain(second.rows.lock().unwrap().values().flatten().copied())
        .collect();
    rows
}

#[test]
fn the_epochs_after_a_checkpoint_are_replayed_as_they_were_cut() {
    let mut all = run_twice(job);
    // Each window once, as the generator's formulas give it.
    all.sort();
    assert_eq!(all, expected());
}

const TICK_PARTITIONS: u64 = 4;
const TICKS: u64 = 20_000;
const TICK_KEYS: u64 = 50;

/// Partitions of numbers without event times of their own (so they get ingestion times),
/// read 20 at a time with a pause of 1 ms.
#[derive(Clone)]
struct Ticks;

struct TickReader {
    partition: u64,
    next: u64,
}

impl Source for Ticks {
    type Item = u64;
    fn partitions(&mut self, _ctx: &SourceContext) -> Result<Vec<String>> {
        Ok((0..TICK_PARTITIONS).map(|p| format!("ticks-{p}")).collect())
    }
    fn open(
        &mut self,
        partition: PartitionId,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<u64>>> {
        Ok(Box::new(TickReader {
            partition: u64::from(partition.0),
            next: 0,
        }))
    }
}

impl PartitionReader<u64> for TickReader {
    fn read(&mut self, out: &mut Reader<u64>) -> Result<ReadStatus> {
        std::thread::sleep(Duration::from_millis(1));
        for _ in 0..out.budget().min(20) {
            if self.next == TICKS {
                return Ok(ReadStatus::Finished);
            }
            out.push(self.next, self.partition * TICKS + self.next);
            self.next += 1;
        }
        Ok(ReadStatus::More)
    }
}

/// Per key (`n % 50`), numbers per 20 ms window of ingestion time.
fn ticks_job(recorded: &Recorded) -> Job {
    let recorded = recorded.clone();
    Job::new(
        "replay-ingest",
        "ingestion-time windows into a replaying sink",
        move |flow| {
            let ticks = flow.source("ticks", Ticks, SourceOptions::new())?;
            ticks
                .key_by(|n: &u64| n % TICK_KEYS)
                .window(Tumbling::of(Duration::from_millis(20)))
                .aggregate(Count)?
                .map(|r| (r.key, r.start, r.value, 0))
                .sink("out", RecordingSink(recorded.clone()))
        },
    )
}

/// Ingestion times are not in the data: replay must give a replayed epoch's records the ones
/// they had (one per epoch, from the epoch log), or its windows come out otherwise.
#[test]
fn ingestion_times_are_replayed_as_they_were() {
    let all = run_twice(ticks_job);
    // Every number counted once, in some window of its key.
    let mut per_key: BTreeMap<u64, u64> = BTreeMap::new();
    for (key, _, count, _) in all {
        *per_key.entry(key).or_default() += count;
    }
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for n in 0..TICK_PARTITIONS * TICKS {
        *expected.entry(n % TICK_KEYS).or_default() += 1;
    }
    assert_eq!(per_key, expected);
}
