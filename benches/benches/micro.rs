//! Criterion micro-benchmarks of runnel's hot paths (`cargo bench -p runnel-benches --bench micro`):
//!
//! * `window/*`: the per-record cost of the W2 tumbling window (count and max price per auction
//!   per 10 s), measured as whole one-worker jobs over pre-built bids against the same job
//!   without the window and with a keyed operator that does nothing, so that the window's cost
//!   per record is the difference (the window's logic is private to `runnel-operators`);
//! * `exchange/*`: records crossing workers, a job on 2 workers with `Stream::exchange` against
//!   the same job without it and against 1 worker;
//! * `json/*`, `bincode/*`: the codecs, JSON of Nexmark events and of the W-workload `Bid`, and
//!   bincode of `Event<Bid>` batches (what timely serializes between processes);
//! * `nexmark/*`: the Nexmark generator, per event.
//!
//! Every benchmark reports throughput in elements (records or events). Each is short (a second
//! of warm-up, a few seconds of measurement, 10 to 20 samples) so the whole run takes a couple of
//! minutes on 2 cores.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use runnel_connectors::nexmark::{self, NexmarkConfig};
use runnel_connectors::{Bid, BlackholeSink};
use runnel_engine::{
    run, Emitter, EpochLogic, Event, Job, PartitionId, PartitionReader, ReadStatus, Reader, Result,
    RunOptions, Source, SourceContext, SourceOptions, Watermark,
};
use runnel_operators::prelude::*;

/// Bids per job run in the `window` and `exchange` benchmarks.
const JOB_RECORDS: u64 = 2_000_000;
/// Records per source partition between epoch cuts (10 s of event time on one partition, so
/// windows fire every epoch; epochs are cut by the source, never by the clock).
const CUT_EVERY: u64 = 100_000;
/// Records per codec benchmark iteration (per kind).
const CODEC_RECORDS: usize = 2_000;
/// Records in one bincode batch (timely's default batch size is about this).
const BATCH: usize = 1_024;
/// Bids in the `changes` group (about 30 MB of them, more than the caches hold).
const CHANGES_RECORDS: usize = 200_000;

/// A source over bids built before the run: partition `p` of `k` reads `p, p + k, ...` and
/// cuts an epoch every [`CUT_EVERY`] records, so runs are deterministic and the source costs one
/// copy per record.
#[derive(Clone)]
struct Prebuilt {
    bids: Arc<[Bid]>,
    partitions: u32,
}

impl Source for Prebuilt {
    type Item = Bid;
    fn partitions(&mut self, _ctx: &SourceContext) -> Result<Vec<String>> {
        Ok((0..self.partitions)
            .map(|p| format!("prebuilt-{p}"))
            .collect())
    }
    fn open(
        &mut self,
        partition: PartitionId,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<Bid>>> {
        Ok(Box::new(PrebuiltReader {
            bids: self.bids.clone(),
            next: partition.0 as usize,
            step: self.partitions as usize,
            since_cut: 0,
        }))
    }
}

/// One partition of [`Prebuilt`].
struct PrebuiltReader {
    bids: Arc<[Bid]>,
    next: usize,
    step: usize,
    since_cut: u64,
}

impl PartitionReader<Bid> for PrebuiltReader {
    fn read(&mut self, out: &mut Reader<Bid>) -> Result<ReadStatus> {
        for _ in 0..out.budget() {
            let Some(b) = self.bids.get(self.next) else {
                return Ok(ReadStatus::Finished);
            };
            out.push_at(b.event_time_ms, b.seq, *b);
            self.next += self.step;
            self.since_cut += 1;
            if self.since_cut == CUT_EVERY {
                self.since_cut = 0;
                return Ok(ReadStatus::CutEpoch);
            }
        }
        Ok(ReadStatus::More)
    }
}

/// A keyed operator that drops every record: the engine's keyed operator (exchange by key,
/// epoch bookkeeping, watermarks) without any state.
struct Discard;

impl EpochLogic<(u64, Bid), ()> for Discard {
    #[inline]
    fn on_record(
        &mut self,
        record: Event<(u64, Bid)>,
        _wm: Watermark,
        _out: &mut Emitter<(u64, Bid), ()>,
    ) {
        black_box(&record);
    }
    fn on_epoch_end(&mut self, _wm: Watermark, _out: &mut Emitter<(u64, Bid), ()>) {}
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Which job a `window` or `exchange` benchmark runs.
#[derive(Clone, Copy)]
enum Shape {
    /// Source into a blackhole.
    Passthrough,
    /// `exchange` by auction (about half the records cross workers on 2), into a blackhole.
    Exchange,
    /// `key_by(auction)` into a keyed operator that drops everything.
    KeyedDiscard,
    /// W2's window without the combiner: every record reaches the keyed window logic.
    TumblingNoCombiner,
    /// W2's window as the job runs it: combiner per worker and epoch, then the keyed logic.
    Tumbling,
}

/// The job of `shape` over `bids`, with one source partition per worker.
fn job(shape: Shape, bids: &Arc<[Bid]>, workers: u32) -> Job {
    let source = Prebuilt {
        bids: bids.clone(),
        partitions: workers,
    };
    Job::new("micro", "a micro-benchmark job", move |flow| {
        let input = flow.source("bids", source.clone(), SourceOptions::new())?;
        let hole = BlackholeSink::new();
        match shape {
            Shape::Passthrough => input.sink("hole", hole),
            Shape::Exchange => input.exchange(|b| b.auction).sink("hole", hole),
            Shape::KeyedDiscard => input
                .key_by(|b| b.auction)
                .stateful("discard", false, Discard)?
                .0
                .sink("hole", hole),
            Shape::TumblingNoCombiner | Shape::Tumbling => {
                let windowed = input
                    .key_by(|b| b.auction)
                    .window(Tumbling::of(Duration::from_secs(10)));
                let windowed = match shape {
                    Shape::TumblingNoCombiner => windowed.without_combiner(),
                    _ => windowed,
                };
                windowed
                    .aggregate((Count, Max::of(|b: &Bid| b.price)))?
                    .sink("hole", hole)
            }
        }
    })
}

/// Runs `job` on `workers` threads and checks that it read every bid.
fn run_job(job: &Job, workers: usize, records: u64) {
    let opts = RunOptions {
        workers,
        epoch_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let summary = run(job, opts).expect("the benchmark job runs");
    assert_eq!(summary.events_in, records);
}

/// `Bid::at(0..n)`.
fn bids(n: u64) -> Arc<[Bid]> {
    (0..n).map(Bid::at).collect()
}

fn window(c: &mut Criterion) {
    let input = bids(JOB_RECORDS);
    let mut g = c.benchmark_group("window");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(JOB_RECORDS));
    for (name, shape) in [
        ("1w_source_only", Shape::Passthrough),
        ("1w_keyed_discard", Shape::KeyedDiscard),
        ("1w_tumbling_no_combiner", Shape::TumblingNoCombiner),
        ("1w_tumbling", Shape::Tumbling),
    ] {
        let job = job(shape, &input, 1);
        g.bench_function(name, |b| b.iter(|| run_job(&job, 1, JOB_RECORDS)));
    }
    g.finish();
}

fn exchange(c: &mut Criterion) {
    let input = bids(JOB_RECORDS);
    let mut g = c.benchmark_group("exchange");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(JOB_RECORDS));
    for (name, shape, workers) in [
        ("1w_pipeline", Shape::Passthrough, 1),
        ("1w_exchange", Shape::Exchange, 1),
        ("2w_pipeline", Shape::Passthrough, 2),
        ("2w_exchange", Shape::Exchange, 2),
    ] {
        let job = job(shape, &input, workers);
        g.bench_function(name, |b| {
            b.iter(|| run_job(&job, workers as usize, JOB_RECORDS))
        });
    }
    g.finish();
}

/// JSON encode of each record into a reused buffer (as the sinks do) and decode of each line
/// with `from_slice` (as the sources do).
fn bench_json<T: serde::Serialize + serde::de::DeserializeOwned>(
    c: &mut Criterion,
    name: &str,
    records: &[T],
) {
    let lines: Vec<Vec<u8>> = records
        .iter()
        .map(|r| serde_json::to_vec(r).expect("encodes"))
        .collect();
    let mut g = c.benchmark_group("json");
    g.sample_size(20)
        .throughput(Throughput::Elements(records.len() as u64));
    let mut buf = Vec::with_capacity(4096);
    g.bench_function(format!("encode_{name}"), |b| {
        b.iter(|| {
            for r in records {
                buf.clear();
                serde_json::to_writer(&mut buf, r).expect("encodes");
                black_box(&buf);
            }
        })
    });
    g.bench_function(format!("decode_{name}"), |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_slice::<T>(line).expect("decodes"));
            }
        })
    });
    g.finish();
}

fn json(c: &mut Criterion) {
    let (mut people, mut auctions, mut bids) = (Vec::new(), Vec::new(), Vec::new());
    for e in NexmarkConfig::new(150_000).iter() {
        match e {
            nexmark::Event::Person(_) => people.push(e),
            nexmark::Event::Auction(_) => auctions.push(e),
            nexmark::Event::Bid(_) => bids.push(e),
        }
    }
    for v in [&mut people, &mut auctions, &mut bids] {
        v.truncate(CODEC_RECORDS);
        assert_eq!(v.len(), CODEC_RECORDS);
    }
    bench_json(c, "nexmark_person", &people);
    bench_json(c, "nexmark_auction", &auctions);
    bench_json(c, "nexmark_bid", &bids);
    let w_bids: Vec<Bid> = (0..CODEC_RECORDS as u64)
        .map(|i| Bid::at(10_000_000 + i))
        .collect();
    bench_json(c, "w_bid", &w_bids);
}

fn bincode_batches(c: &mut Criterion) {
    let batch: Vec<Event<Bid>> = (10_000_000..10_000_000 + BATCH as u64)
        .map(|seq| {
            let b = Bid::at(seq);
            Event::new(b.event_time_ms, b)
        })
        .collect();
    let bytes = bincode::serialize(&batch).expect("encodes");
    let mut g = c.benchmark_group("bincode");
    g.sample_size(20)
        .throughput(Throughput::Elements(BATCH as u64));
    let mut buf = Vec::new();
    // As timely does for a message: the size first, then the bytes.
    g.bench_function("encode_event_bid_batch", |b| {
        b.iter(|| {
            let n = bincode::serialized_size(&batch).expect("sizes") as usize;
            buf.clear();
            buf.reserve(n);
            bincode::serialize_into(&mut buf, &batch).expect("encodes");
            black_box(&buf);
        })
    });
    g.bench_function("decode_event_bid_batch", |b| {
        b.iter(|| black_box(bincode::deserialize::<Vec<Event<Bid>>>(&bytes).expect("decodes")))
    });
    g.finish();
}

/// An incremental checkpoint's changes of Nexmark bids, as q18 writes them (each bid whole):
/// through serde and bincode (as until session 26), field by field with `runnel_engine::wire`
/// in fixed-width integers (`fixed_`, sessions 26-30), and as `Bid::put_wire` writes them
/// now, its integers in LEB128 varints (`wire_`). The bids are visited in a scattered order, as
/// a state's changed rows are, and in the order they are in memory: the difference between
/// the two is what the cache misses of the scattered reads cost, whichever the encoding. The
/// bytes per bid of each are printed first.
fn changes(c: &mut Criterion) {
    use runnel_engine::wire::Put;
    let bids: Vec<nexmark::Bid> = NexmarkConfig::new(CHANGES_RECORDS as u64 * 50 / 46 + 50)
        .iter()
        .filter_map(|e| match e {
            nexmark::Event::Bid(b) => Some(b),
            _ => None,
        })
        .take(CHANGES_RECORDS)
        .collect();
    assert_eq!(bids.len(), CHANGES_RECORDS);
    // A fixed permutation: stride by a number prime to the length.
    let order: Vec<&nexmark::Bid> = (0..bids.len())
        .map(|i| &bids[i * 7_919 % bids.len()])
        .collect();
    let in_order: Vec<&nexmark::Bid> = bids.iter().collect();
    // The fixed-width format of sessions 26-30.
    fn put_fixed(b: &nexmark::Bid, out: &mut Vec<u8>) {
        out.reserve(35 + b.channel.len() + b.url.len() + b.extra.len());
        out.put_u64(b.auction);
        out.put_u64(b.bidder);
        out.put_u64(b.price);
        out.put_i64(b.date_time);
        out.put_str(&b.channel);
        out.put_str(&b.url);
        out.put_str(&b.extra);
    }
    let size = |put: &dyn Fn(&nexmark::Bid, &mut Vec<u8>)| {
        let mut out = Vec::new();
        for b in &bids {
            put(b, &mut out);
        }
        out.len() as f64 / bids.len() as f64
    };
    eprintln!(
        "changes: bytes per bid: wire (varints) {:.1}, fixed {:.1}, bincode {:.1}",
        size(&|b, out| b.put_wire(out)),
        size(&put_fixed),
        size(&|b, out| bincode::serialize_into(out, b).expect("encodes")),
    );
    let mut g = c.benchmark_group("changes");
    g.sample_size(20)
        .throughput(Throughput::Elements(order.len() as u64));
    // Each its own buffer, grown before it is timed.
    let (mut a, mut b, mut f) = (Vec::<u8>::new(), Vec::<u8>::new(), Vec::<u8>::new());
    for (name, order) in [("scattered", &order), ("in_order", &in_order)] {
        g.bench_function(format!("fixed_bids_{name}"), |i| {
            i.iter(|| {
                f.clear();
                f.put_u64(7);
                f.put_len(order.len());
                for b in order.iter() {
                    put_fixed(b, &mut f);
                }
                black_box(&f);
            })
        });
        g.bench_function(format!("wire_bids_{name}"), |i| {
            i.iter(|| {
                a.clear();
                a.put_u64(7);
                a.put_len(order.len());
                for b in order.iter() {
                    b.put_wire(&mut a);
                }
                black_box(&a);
            })
        });
        g.bench_function(format!("bincode_bids_{name}"), |i| {
            i.iter(|| {
                b.clear();
                bincode::serialize_into(&mut b, &(7u64, order)).expect("encodes");
                black_box(&b);
            })
        });
    }
    g.finish();
}

fn generator(c: &mut Criterion) {
    let config = NexmarkConfig::new(2_000_000);
    let mut g = c.benchmark_group("nexmark");
    g.sample_size(20);
    // Event numbers of each kind: `n % 50 == 0` a person, `1..=3` an auction, else a bid.
    let mixed: Vec<u64> = (1_000_000..1_010_000).collect();
    let kinds: [(&str, Vec<u64>); 4] = [
        ("event_mixed", mixed.clone()),
        ("event_person", mixed.iter().map(|n| n / 50 * 50).collect()),
        (
            "event_auction",
            mixed.iter().map(|n| n / 50 * 50 + 1 + n % 3).collect(),
        ),
        (
            "event_bid",
            mixed.iter().filter(|n| *n % 50 >= 4).copied().collect(),
        ),
    ];
    for (name, ns) in &kinds {
        g.throughput(Throughput::Elements(ns.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                for &n in ns {
                    black_box(config.event(n));
                }
            })
        });
    }
    // `iter` shares the bid urls, built once per call, like the source does.
    let run = NexmarkConfig::new(200_000);
    g.throughput(Throughput::Elements(run.events()));
    g.bench_function("iter_200k", |b| {
        b.iter(|| {
            for e in run.iter() {
                black_box(e);
            }
        })
    });
    g.finish();
}

/// Every benchmark, with a second of warm-up and 3 s of measurement each (the groups set their
/// sample sizes); the command line can still filter and override (`cargo bench ... -- json`).
fn micro() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    window(&mut c);
    exchange(&mut c);
    json(&mut c);
    bincode_batches(&mut c);
    changes(&mut c);
    generator(&mut c);
}

criterion_main!(micro);
