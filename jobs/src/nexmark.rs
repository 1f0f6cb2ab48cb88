//! The Nexmark queries q0 to q22 as jobs `nexmark-q<N>`.
//!
//! Each job reads Nexmark events (see [`runnel_connectors::nexmark`]) from the generator, a
//! JSON-lines file or a Kafka topic, runs one query, and writes its results. The query logic is
//! in plain functions ([`q0`] .. [`q8`]) over a stream of events, so tests and other jobs can
//! reuse it. The definitions follow the Nexmark suite for Flink (`nexmark/nexmark`,
//! `nexmark-flink/src/main/resources/queries/q*.sql`); where runnel's differ, the function
//! says how.
//!
//! Queries whose answer changes as input arrives (q3, q6) are built on
//! updating tables ([`runnel_engine::table`], differential dataflow) and write a changelog:
//! each row is `{"op":"insert","row":...}` or `{"op":"retract","row":...}`. Those jobs run
//! with checkpoints off (table state is not checkpointed yet). q9, q4, q18, q19 and q20 write the
//! same changelog from stateful operators of their own (q9 closes each auction when the
//! watermark passes its expiry, see [`q9`]; q18 keeps a row per bidder and auction, see
//! [`q18`]; q19 keeps the top ten bids of each auction, see [`q19`]; q20 is a hash join whose
//! rows are only inserted, see [`q20`]), whose state is
//! checkpointed. Their state grows with the bids, for ever, and a checkpoint writes all of it,
//! so on a long run their checkpoints take seconds each and cost much of the throughput (see
//! BENCHMARKS.md, "Checkpoints"); incremental checkpoints are not built. q17 updates its rows too, as
//! upserts: each row replaces the previous one of its auction and day
//! ([`runnel_operators::Windowed::aggregate_updating`], whose state is checkpointed).
//!
//! Settings (`--set`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `events` | 10,000,000 | generator: events in total |
//! | `rate` | 0 (unpaced) | generator: events per second of wall time; event times then follow the wall clock (for latency) |
//! | `event_rate` | 10,000 | generator without `rate`: events per second of event time, so that an unpaced run sees event times as dense as a run paced at that rate (its windows and state as large); `benches/latency.sh` measures a query's peak so |
//! | `wall_clock` | true | generator with `rate`: `false` keeps the event times the generator's own (from its fixed base, at `rate` per second), so a run resumed from a checkpoint replays the same events; latency is then not measured |
//! | `seed` | the generator's | generator: seed |
//! | `partitions` | one per worker | generator: partitions |
//! | `file` | none | read events from this JSON-lines file (or comma-separated files) instead |
//! | `kafka.bootstrap`, `topic` | none, `nexmark` | read events from this Kafka topic instead (to its end) |
//! | `out_of_order_ms` | 0 | watermark bound for file and Kafka input |
//! | `sink` | `blackhole` | `blackhole`, `stdout`, `file:PATH` (JSON lines) or `kafka:TOPIC` (JSON, on `kafka.bootstrap`) |
//! | `dir` | none | q10 only: write into files partitioned by day and minute under this directory (see [`q10_sink`]) instead of `sink` |
//! | `day_start` | 0 | q15-q17: days start this many milliseconds after midnight UTC (57600000: midnight in UTC+8) |
//! | `side_input` | generated | q13 only: a file of `key,value` lines to join with (see [`read_side_input`]); else [`generated_side_input`] of [`SIDE_INPUT_ROWS`] rows |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hash};
use std::time::Duration;

use rustc_hash::FxHasher;

use serde::{Deserialize, Serialize};

use runnel_connectors::kafka::{KafkaConfig, KafkaSink, KafkaSource, StartAt};
use runnel_connectors::nexmark::{
    Auction, Bid, Event, NexmarkConfig, NexmarkGenerator, Person, Text,
};
use runnel_connectors::{BlackholeSink, FileSink, FileSource, PartitionedFileSink, StdoutSink};
use runnel_engine::wire::{Put, Wire};
use runnel_engine::{
    Change, Data, Either, Emitter, EpochLogic, Error, Flow, Job, Result, SourceOptions,
    StaggeredMap, Stream, Table, Watermark,
};
use runnel_operators::prelude::*;

/// The queries implemented, in order (each is the job `nexmark-q<N>`).
pub const QUERIES: [usize; 23] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
];

/// Why the table queries run without checkpoints.
const NO_CHECKPOINTS: &str = "its updating tables live in differential arrangements, which \
                              checkpoints do not cover yet";

/// Every Nexmark job.
pub fn jobs() -> Vec<Job> {
    vec![
        stream_job(0, "q0 passthrough: every bid", |e| Ok(q0(e))),
        stream_job(1, "q1 currency: bid prices in euro cents", |e| Ok(q1(e))),
        stream_job(2, "q2 selection: bids on auctions whose id is a multiple of 123", |e| {
            Ok(q2(e))
        }),
        table_job(
            3,
            "q3 local item suggestion: sellers in OR, ID or CA of category-10 auctions (updating join)",
            |e| Ok(q3(e)),
        ),
        stream_job(4, "q4 average winning bid per category (updating)", q4),
        stream_job(
            5,
            "q5 hot items: the auctions with the most bids per 10 s window sliding by 2 s",
            q5,
        ),
        table_job(
            6,
            "q6 average winning bid of each seller's last 10 auctions (updating)",
            q6,
        ),
        stream_job(7, "q7 highest bid per 10 s window", q7),
        stream_job(
            8,
            "q8 new users: people who opened an auction in the 10 s window they joined in",
            q8,
        ),
        stream_job(
            9,
            "q9 winning bids: every auction with its winning bid (updating, closed at expiry)",
            q9,
        ),
        q10_job(),
        stream_job(11, "q11 user sessions: bids per bidder per session (10 s gap)", q11),
        stream_job(
            12,
            "q12 processing-time windows: bids per bidder per 10 s of wall-clock time",
            q12,
        ),
        q13_job(),
        stream_job(
            14,
            "q14 calculation: bids in a price band, with the part of the day and a char count",
            |e| Ok(q14(e)),
        ),
        day_job(
            15,
            "q15 bidding statistics per day: bids, distinct bidders and auctions by price rank",
            q15_days,
        ),
        day_job(
            16,
            "q16 channel statistics per day: q15 per channel, with the last minute seen",
            q16_days,
        ),
        day_job(
            17,
            "q17 auction statistics per day: counts by price rank, min, max, avg, sum (upserts)",
            q17_days,
        ),
        stream_job(
            18,
            "q18 last bid: each bidder's latest bid on each auction (updating)",
            q18,
        ),
        stream_job(
            19,
            "q19 auction top-k: the 10 highest bids of each auction (updating)",
            q19,
        ),
        stream_job(
            20,
            "q20 expand bid with auction: bids on category-10 auctions with the auction (join)",
            q20,
        ),
        stream_job(21, "q21 channel ids: bids from a known channel, with its id", |e| {
            Ok(q21(e))
        }),
        stream_job(22, "q22 url directories: every bid with its url's first three directories", |e| {
            Ok(q22(e))
        }),
    ]
}

fn stream_job<O: Data>(
    n: usize,
    about: &str,
    query: for<'s> fn(&Stream<'s, Event>) -> Result<Stream<'s, O>>,
) -> Job {
    Job::new(&format!("nexmark-q{n}"), about, move |flow| {
        named(
            n,
            (|| {
                let events = events(flow)?;
                let out = query(&events)?;
                sink(flow, &out)
            })(),
        )
    })
}

/// A per-day query whose days start `day_start` milliseconds after midnight UTC (`--set
/// day_start=MS`, default 0).
fn day_job<O: Data>(
    n: usize,
    about: &str,
    query: for<'s> fn(&Stream<'s, Event>, i64) -> Result<Stream<'s, O>>,
) -> Job {
    Job::new(&format!("nexmark-q{n}"), about, move |flow| {
        named(
            n,
            (|| {
                let day_start: i64 = flow.config().get("day_start", 0)?;
                let events = events(flow)?;
                let out = query(&events, day_start)?;
                sink(flow, &out)
            })(),
        )
    })
}

fn table_job<O: runnel_engine::Row>(
    n: usize,
    about: &str,
    query: for<'s> fn(&Stream<'s, Event>) -> Result<Table<'s, O>>,
) -> Job {
    Job::new(&format!("nexmark-q{n}"), about, move |flow| {
        named(
            n,
            (|| {
                let events = events(flow)?;
                let out = query(&events)?.changelog();
                sink(flow, &out)
            })(),
        )
    })
    .without_checkpoints(NO_CHECKPOINTS)
}

/// Names the query's job (`nexmark-q<n>`) in a setting's error, which the shared helpers below
/// build without knowing which query they serve.
fn named(n: usize, r: Result<()>) -> Result<()> {
    r.map_err(|e| match e {
        Error::InvalidJob { job, reason } if job == "nexmark" => Error::InvalidJob {
            job: format!("nexmark-q{n}"),
            reason,
        },
        other => other,
    })
}

fn invalid(reason: String) -> Error {
    Error::InvalidJob {
        job: "nexmark".to_string(),
        reason,
    }
}

/// The events of the run: the generator, a file or a topic (see the module docs).
pub fn events<'s>(flow: &mut Flow<'s>) -> Result<Stream<'s, Event>> {
    let cfg = flow.config();
    let out_of_order_ms: u64 = cfg.get("out_of_order_ms", 0)?;
    let file = cfg.get_opt("file");
    let bootstrap = cfg.get_opt("kafka.bootstrap");
    let topic: String = cfg.get("topic", "nexmark".to_string())?;
    let options = || {
        let o = SourceOptions::new().event_time(|e: &Event| e.date_time());
        if out_of_order_ms > 0 {
            o.bounded_out_of_order(Duration::from_millis(out_of_order_ms))
        } else {
            o
        }
    };
    let generator_keys = [
        "events",
        "rate",
        "event_rate",
        "wall_clock",
        "seed",
        "partitions",
    ];
    if file.is_some() || bootstrap.is_some() {
        if let Some(k) = generator_keys.iter().find(|k| cfg.contains(k)) {
            return Err(invalid(format!(
                "'{k}' sets up the generator; it has no meaning with file or kafka.bootstrap"
            )));
        }
    }
    match (file, bootstrap) {
        (Some(_), Some(_)) => Err(invalid(
            "give either file or kafka.bootstrap, not both".to_string(),
        )),
        (Some(files), None) => {
            let paths: Vec<String> = files.split(',').map(|s| s.trim().to_string()).collect();
            flow.source("events", FileSource::<Event>::json(paths), options())
        }
        (None, Some(bootstrap)) => {
            let source = KafkaSource::json::<Event>(KafkaConfig::new(bootstrap), [topic])
                .start(StartAt::Earliest)
                .stop_at_end();
            flow.source("events", source, options())
        }
        (None, None) => {
            let events: u64 = cfg.get("events", 10_000_000)?;
            let rate: u64 = cfg.get("rate", 0)?;
            let partitions: u32 = cfg.get("partitions", 0)?;
            let mut config = NexmarkConfig::new(events).partitions(partitions);
            if let Some(seed) = cfg.get_opt("seed") {
                let seed: u64 = seed
                    .parse()
                    .map_err(|_| invalid(format!("seed: '{seed}' is not a number")))?;
                config = config.seed(seed);
            }
            let wall_clock: bool = cfg.get("wall_clock", true)?;
            let event_rate: u64 = cfg.get("event_rate", 0)?;
            if event_rate > 0 {
                if rate > 0 {
                    return Err(invalid(
                        "give rate or event_rate, not both: with rate, event time already \
                         advances at rate events per second"
                            .to_string(),
                    ));
                }
                config = config.event_rate(event_rate);
            }
            if rate > 0 {
                config = config.rate(rate).event_rate(rate);
                if wall_clock {
                    // Event time follows the wall clock, so latency can be measured from it.
                    // Every worker of every process starts from the same base: the end of the
                    // run's first epoch, which the processes of a cluster agree on.
                    config = config.wall_clock_base_ms(flow.start_ms());
                }
            }
            flow.source(
                "events",
                NexmarkGenerator::new(config),
                SourceOptions::new(),
            )
        }
    }
}

/// Writes a query's results where `sink` says (see the module docs).
pub fn sink<T: Data>(flow: &Flow<'_>, out: &Stream<'_, T>) -> Result<()> {
    let cfg = flow.config();
    let spec: String = cfg.get("sink", "blackhole".to_string())?;
    match spec.split_once(':') {
        None if spec == "blackhole" => out.sink("out", BlackholeSink::new()),
        None if spec == "stdout" => out.sink("out", StdoutSink::new()),
        Some(("file", path)) => out.sink("out", FileSink::json(path)),
        Some(("kafka", topic)) => {
            let Some(bootstrap) = cfg.get_opt("kafka.bootstrap") else {
                return Err(invalid(
                    "sink kafka:TOPIC needs kafka.bootstrap=HOST:PORT".to_string(),
                ));
            };
            out.sink(
                "out",
                KafkaSink::json(KafkaConfig::new(bootstrap), topic.to_string()),
            )
        }
        _ => Err(invalid(format!(
            "sink '{spec}': expected blackhole, stdout, file:PATH or kafka:TOPIC"
        ))),
    }
}

fn bids<'s>(events: &Stream<'s, Event>) -> Stream<'s, Bid> {
    events.filter_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

fn auctions<'s>(events: &Stream<'s, Event>) -> Stream<'s, Auction> {
    events.filter_map(|e| match e {
        Event::Auction(a) => Some(*a),
        _ => None,
    })
}

fn persons<'s>(events: &Stream<'s, Event>) -> Stream<'s, Person> {
    events.filter_map(|e| match e {
        Event::Person(p) => Some(*p),
        _ => None,
    })
}

/// q0, passthrough: every bid as it is.
pub fn q0<'s>(events: &Stream<'s, Event>) -> Stream<'s, Bid> {
    bids(events)
}

/// One q1 result: a bid with its price in euros.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q1 {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price in euro cents: `price * 908 / 1000`, rounded down (Flink's q1 multiplies by
    /// the decimal 0.908).
    pub price: u64,
    /// The bid's time.
    pub date_time: i64,
    /// The bid's padding.
    pub extra: Text,
}

/// q1, currency conversion: every bid with its price in euros.
pub fn q1<'s>(events: &Stream<'s, Event>) -> Stream<'s, Q1> {
    bids(events).map(|b| Q1 {
        auction: b.auction,
        bidder: b.bidder,
        price: b.price * 908 / 1000,
        date_time: b.date_time,
        extra: b.extra,
    })
}

/// One q2 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q2 {
    /// The auction.
    pub auction: u64,
    /// The bid's price.
    pub price: u64,
}

/// q2, selection: the bids on auctions whose id is a multiple of 123.
pub fn q2<'s>(events: &Stream<'s, Event>) -> Stream<'s, Q2> {
    bids(events).filter(|b| b.auction % 123 == 0).map(|b| Q2 {
        auction: b.auction,
        price: b.price,
    })
}

/// One q3 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q3 {
    /// The seller's name.
    pub name: Text,
    /// The seller's city.
    pub city: Text,
    /// The seller's state.
    pub state: Text,
    /// The auction.
    pub id: u64,
}

/// q3, local item suggestion: for every auction in category 10 whose seller lives in Oregon,
/// Idaho or California, the seller's name, city and state and the auction's id. An unwindowed
/// join: an auction and its seller meet whichever arrives first, and both are kept.
pub fn q3<'s>(events: &Stream<'s, Event>) -> Table<'s, Q3> {
    let sellers = persons(events)
        .filter(|p| matches!(p.state.as_ref(), "OR" | "ID" | "CA"))
        .map(|p| (p.id, p.name, p.city, p.state))
        .to_table()
        .key_by(|p| p.0);
    let items = auctions(events)
        .filter(|a| a.category == 10)
        .map(|a| (a.seller, a.id))
        .to_table()
        .key_by(|a| a.0);
    sellers
        .join(&items)
        .map(|(_, (_, name, city, state), (_, id))| Q3 {
            name,
            city,
            state,
            id,
        })
}

/// The winning bid of every auction that has one: `(auction, seller, category, expires,
/// price)`, where the price is the highest of the bids made while the auction was open
/// (`date_time <= bid time <= expires`, as Flink's q4 and q6). Updating: a higher bid replaces
/// the winner. Unlike Nexmark's `WinningBids` in Beam, the reserve is not checked (Flink's
/// queries do not either) and an auction counts before it closes. Built on q9's operator
/// ([`q9`]: auctions closed when the watermark passes their expiry, records behind the
/// watermark late), so the tables downstream hold one row per auction, not every bid.
fn winning_bids<'s>(events: &Stream<'s, Event>) -> Result<Table<'s, (u64, u64, u64, i64, u64)>> {
    let row = |q: Q9| (q.id, q.seller, q.category, q.expires, q.price);
    Ok(q9(events)?
        .map(move |c| match c {
            Change::Insert(q) => Change::Insert(row(q)),
            Change::Retract(q) => Change::Retract(row(q)),
        })
        .apply_changes())
}

/// One q4 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q4 {
    /// The category.
    pub category: u64,
    /// The average winning price of its auctions, rounded down (Flink's `AVG` of a `BIGINT`).
    pub avg_price: u64,
}

/// q4, average price for a category: the average of the winning bids (see the note on
/// `winning_bids` in the source) of the auctions of each category. Updating: at the end of
/// each epoch in which a category's average changed, its old row is retracted and the new
/// one inserted.
///
/// Built on q9's operator (auctions closed at expiry, records behind the watermark late), and
/// the averages are a running sum and count per category that q9's changes add to and take
/// from, so an epoch costs what changed in it (a table `reduce` would go over every winner of
/// a category each time one changes). Both operators' state is checkpointed.
pub fn q4<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Change<Q4>>> {
    Ok(q9(events)?
        .key_by(|c| c.row().category)
        .stateful("avg-per-category", false, CategoryAverages::default())?
        .0)
}

/// q4's operator: per category, the sum and the number of the winning prices.
#[derive(Debug, Default)]
struct CategoryAverages {
    totals: BTreeMap<u64, (i128, i64)>,
    /// The categories changed in this epoch: their average when it began, and the newest
    /// event time among the changes.
    changed: BTreeMap<u64, (Option<u64>, i64)>,
}

fn average((sum, n): (i128, i64)) -> Option<u64> {
    (n > 0).then(|| u64::try_from(sum / i128::from(n)).unwrap_or(0))
}

impl EpochLogic<(u64, Change<Q9>), Change<Q4>> for CategoryAverages {
    fn on_record(
        &mut self,
        r: runnel_engine::Event<(u64, Change<Q9>)>,
        _wm: Watermark,
        _out: &mut Emitter<(u64, Change<Q9>), Change<Q4>>,
    ) {
        // Changes are never late: q9 emitted them from records that were not.
        let (category, change) = r.data;
        let total = self.totals.entry(category).or_default();
        let entry = self
            .changed
            .entry(category)
            .or_insert((average(*total), r.ts));
        entry.1 = entry.1.max(r.ts);
        let d = change.diff();
        total.0 += i128::from(change.row().price) * i128::from(d);
        total.1 += d;
    }

    fn on_epoch_end(&mut self, _wm: Watermark, out: &mut Emitter<(u64, Change<Q9>), Change<Q4>>) {
        for (category, (before, ts)) in std::mem::take(&mut self.changed) {
            let total = self.totals.get(&category).copied().unwrap_or_default();
            let after = average(total);
            if total.1 == 0 {
                self.totals.remove(&category);
            }
            if after == before {
                continue;
            }
            let row = |avg_price| Q4 {
                category,
                avg_price,
            };
            if let Some(avg) = before {
                out.emit(runnel_engine::Event::new(ts, Change::Retract(row(avg))));
            }
            if let Some(avg) = after {
                out.emit(runnel_engine::Event::new(ts, Change::Insert(row(avg))));
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        runnel_engine::recovery::encode(&self.totals)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.totals = runnel_engine::recovery::decode(state)?;
        self.changed.clear();
        Ok(())
    }

    fn state_kind(&self) -> String {
        "runnel.nexmark.q4/category-averages.v1".to_string()
    }
}

/// One q5 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q5 {
    /// A hottest auction of the window.
    pub auction: u64,
    /// Its number of bids in the window.
    pub num: u64,
    /// The window's start.
    pub start: i64,
    /// The window's end (exclusive).
    pub end: i64,
}

/// q5, hot items: per window of 10 s sliding every 2 s, the auctions with the most bids (all of
/// them on a tie).
pub fn q5<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q5>> {
    // Flink's query counts bids per auction and window, then keeps the counts equal to the
    // window's maximum: a window top-1 with ties, which each worker computes for its own
    // auctions as it fires the window before the workers' bests are merged.
    let hottest = bids(events)
        .key_by(|b| b.auction)
        .window(Sliding::of(Duration::from_secs(10), Duration::from_secs(2)))
        .named("bids-per-auction")
        .aggregate_top(Count, 1, |_auction, bids| *bids)?;
    Ok(hottest.map(|w| Q5 {
        auction: w.key,
        num: w.value,
        start: w.start,
        end: w.end,
    }))
}

/// One q6 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q6 {
    /// The seller.
    pub seller: u64,
    /// The average winning price of the seller's last 10 auctions (by closing time, then id)
    /// that have a winning bid, rounded down.
    pub avg_price: u64,
}

/// q6, average selling price by seller: per seller, the average winning price of their last
/// ten auctions (by closing time). Updating: Nexmark's q6 averages the last ten *closed*
/// auctions; here an auction counts as soon as it has a bid, with its current winning price,
/// so the answer at the end of the input is the same and in between it runs ahead.
pub fn q6<'s>(events: &Stream<'s, Event>) -> Result<Table<'s, Q6>> {
    Ok(winning_bids(events)?
        .map(|(id, seller, _, expires, price)| (seller, (expires, id, price)))
        .key_by(|r| r.0)
        .reduce_to("last-10-per-seller", |_, rows| {
            // Rows come sorted by value: (seller, (expires, id, price)), so the last ten are
            // the latest auctions; each auction has one winning row.
            let last: Vec<u64> = rows
                .iter()
                .rev()
                .take(10)
                .map(|((_, (_, _, price)), _)| *price)
                .collect();
            (!last.is_empty()).then(|| last.iter().sum::<u64>() / last.len() as u64)
        })?
        .into_table()
        .map(|(seller, avg_price)| Q6 { seller, avg_price }))
}

/// One q7 result: a bid with the highest price of its window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q7 {
    /// The auction.
    pub auction: u64,
    /// The price, the highest of the window.
    pub price: u64,
    /// The bidder.
    pub bidder: u64,
    /// The bid's time.
    pub date_time: i64,
    /// The bid's padding.
    pub extra: Text,
}

/// The bids with the highest price: `(price, bids)`.
#[derive(Clone, Copy, Debug)]
struct MaxBids;

impl Aggregate<Bid> for MaxBids {
    type Acc = (u64, Vec<Bid>);
    type Out = Vec<Bid>;
    fn create(&self) -> Self::Acc {
        (0, Vec::new())
    }
    fn add(&self, acc: &mut Self::Acc, b: &Bid) {
        if b.price > acc.0 || acc.1.is_empty() {
            acc.0 = b.price;
            acc.1.clear();
            acc.1.push(b.clone());
        } else if b.price == acc.0 {
            acc.1.push(b.clone());
        }
    }
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        if other.1.is_empty() {
            return;
        }
        if other.0 > acc.0 || acc.1.is_empty() {
            *acc = other.clone();
        } else if other.0 == acc.0 {
            acc.1.extend_from_slice(&other.1);
        }
    }
    fn result(&self, acc: &Self::Acc) -> Vec<Bid> {
        acc.1.clone()
    }
}

/// q7, highest bid: per 10 s tumbling window, the bids with the highest price (all of them on
/// a tie). Every worker pre-aggregates its bids per window before the exchange.
pub fn q7<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q7>> {
    let max = bids(events)
        .key_by(|b| b.date_time.div_euclid(10_000))
        .window(Tumbling::of(Duration::from_secs(10)))
        .named("highest-bid")
        .aggregate(MaxBids)?;
    Ok(max.flat_map(|w| {
        w.value.into_iter().map(|b| Q7 {
            auction: b.auction,
            price: b.price,
            bidder: b.bidder,
            date_time: b.date_time,
            extra: b.extra,
        })
    }))
}

/// One q8 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q8 {
    /// The person.
    pub id: u64,
    /// Their name.
    pub name: Text,
    /// The start of the 10 s window in which they joined and opened an auction.
    pub start: i64,
}

/// q8, monitor new users: the people who opened an auction in the same 10 s tumbling window
/// in which they joined, once per person and window.
pub fn q8<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q8>> {
    let people = persons(events).map(|p| (p.id, p.name)).key_by(|p| p.0);
    let sellers = auctions(events).map(|a| a.seller).key_by(|s| *s);
    let pairs = people.window_join_named("new-sellers", &sellers, Duration::from_secs(10))?;
    // One row per person and window, however many auctions they opened in it.
    let once = pairs
        .key_by(|j| (j.key, j.left.1.clone(), j.start))
        .window(Tumbling::of(Duration::from_secs(10)))
        .named("once-per-window")
        .aggregate(Count)?;
    Ok(once.map(|w| {
        let (id, name, start) = w.key;
        Q8 { id, name, start }
    }))
}

/// One q9 result: an auction and its winning bid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q9 {
    /// The auction.
    pub id: u64,
    /// Its seller.
    pub seller: u64,
    /// Its category.
    pub category: u64,
    /// Its reserve price.
    pub reserve: u64,
    /// When it closes.
    pub expires: i64,
    /// The winning bidder.
    pub bidder: u64,
    /// The winning price.
    pub price: u64,
    /// When the winning bid was made.
    pub bid_time: i64,
}

/// q9, winning bids: every auction with its winning bid, the highest made while it was open
/// (`date_time <= bid time <= expires`), the earliest of those on a tie, then the larger
/// bidder (Flink's `ROW_NUMBER() ... ORDER BY price DESC, dateTime`, made deterministic).
///
/// Updating: at the end of each epoch, an auction whose winner changed has its previous row
/// retracted and the new one inserted. Unlike Flink's query, whose join keeps every bid and
/// auction for ever, the state is bounded by the watermark, as the reference's (Beam's)
/// `WinningBids` closes an auction when it expires:
/// * a record behind the watermark (its event time below the watermark that held when its epoch
///   began) is late: counted and dropped, as in every windowed operator of runnel;
/// * an auction is kept, with its winner so far, until the watermark passes its `expires`.
///   Its row is final then (a bid that could still change it would be late) and its state is
///   dropped;
/// * a bid whose auction has not arrived waits until the watermark passes the bid's time
///   (that auction, should it come later, is itself late).
///
/// So on in-order input (the generator) nothing is late and the answer is the unbounded
/// join's, while the state is the open auctions (about [`NUM_IN_FLIGHT_AUCTIONS`]
/// with the generator) and the bids waiting for theirs. The state is the operator's, so this
/// query, unlike the table queries, runs with checkpoints and exactly-once sinks.
///
/// The records' event times must be their `date_time`s (as [`events`] gives them): lateness
/// is judged on the event time, expiry and waiting on `expires` and the bids' `date_time`.
///
/// Not handled (Nexmark's ids are unique): an auction id that comes again while its first
/// auction is open is dropped with a warning, not counted, and which of two such auctions in
/// one epoch is kept depends on their order; an id that comes again after its first auction
/// closed opens a second auction, with a row of its own. Bids that never meet an open auction
/// (theirs is late, never comes, or has closed) leave no row and are not counted, as rows
/// without a match in a join.
///
/// [`NUM_IN_FLIGHT_AUCTIONS`]: runnel_connectors::nexmark::NUM_IN_FLIGHT_AUCTIONS
pub fn q9<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Change<Q9>>> {
    let auctions = auctions(events)
        .map(|a| {
            (
                a.id,
                OpenAuction {
                    seller: a.seller,
                    category: a.category,
                    reserve: a.reserve,
                    opened: a.date_time,
                    expires: a.expires,
                    best: None,
                    newest: i64::MIN,
                },
            )
        })
        .key_by(|a| a.0)
        .map_values(|(_, a)| a);
    let bids = bids(events)
        .map(|b| {
            (
                b.auction,
                WinBid {
                    price: b.price,
                    at: b.date_time,
                    bidder: b.bidder,
                },
            )
        })
        .key_by(|b| b.0)
        .map_values(|(_, b)| b);
    Ok(auctions
        .connect(&bids)
        .stateful("winning-bids", false, WinningBids::default())?
        .0)
}

/// An auction that q9 keeps open, with its winning bid so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct OpenAuction {
    seller: u64,
    category: u64,
    reserve: u64,
    opened: i64,
    expires: i64,
    best: Option<WinBid>,
    /// The newest event time among the records applied to it since its row last changed
    /// (the auction's, and the times of its bids made while it was open, winning or not):
    /// the event time of its next change, the same whatever order an epoch's records come in
    /// (exactly-once sinks need that: a replayed epoch must give the same records).
    newest: i64,
}

/// A bid as q9 weighs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WinBid {
    price: u64,
    at: i64,
    bidder: u64,
}

impl WinBid {
    /// Whether this bid wins over `other`: the higher price, then the earlier time, then the
    /// larger bidder (a total order, so the winner does not depend on arrival order).
    fn beats(&self, other: &WinBid) -> bool {
        (self.price, std::cmp::Reverse(self.at), self.bidder)
            > (other.price, std::cmp::Reverse(other.at), other.bidder)
    }
}

impl OpenAuction {
    /// Takes `b` into account; whether it is the new winner.
    fn offer(&mut self, b: WinBid) -> bool {
        let open = self.opened <= b.at && b.at <= self.expires;
        if open {
            self.newest = self.newest.max(b.at);
        }
        let wins = open && self.best.is_none_or(|best| b.beats(&best));
        if wins {
            self.best = Some(b);
        }
        wins
    }

    fn row(&self, id: u64, b: &WinBid) -> Q9 {
        Q9 {
            id,
            seller: self.seller,
            category: self.category,
            reserve: self.reserve,
            expires: self.expires,
            bidder: b.bidder,
            price: b.price,
            bid_time: b.at,
        }
    }
}

/// What q9 checkpoints: the open auctions and the bids waiting for theirs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WinningBidsState {
    open: FxMap<u64, OpenAuction>,
    waiting: FxMap<u64, Vec<WinBid>>,
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// q9's operator (see [`q9`]).
#[derive(Debug, Default)]
struct WinningBids {
    state: WinningBidsState,
    /// `(expires, id)` of every open auction.
    by_expiry: BTreeSet<(i64, u64)>,
    /// The earliest time among the waiting bids (when the watermark passes it, some go).
    waiting_since: i64,
    /// The auctions whose winner may have changed in this epoch, with their winner when the
    /// epoch began.
    changed: BTreeMap<u64, Option<WinBid>>,
}

type Q9In = (u64, Either<OpenAuction, WinBid>);

impl WinningBids {
    fn rebuild_indexes(&mut self) {
        self.by_expiry = self
            .state
            .open
            .iter()
            .map(|(id, a)| (a.expires, *id))
            .collect();
        self.waiting_since = self
            .state
            .waiting
            .values()
            .flatten()
            .map(|b| b.at)
            .min()
            .unwrap_or(i64::MAX);
    }
}

impl EpochLogic<Q9In, Change<Q9>> for WinningBids {
    fn on_record(
        &mut self,
        r: runnel_engine::Event<Q9In>,
        wm: Watermark,
        out: &mut Emitter<Q9In, Change<Q9>>,
    ) {
        if r.ts < wm {
            out.late(r, 1);
            return;
        }
        let ts = r.ts;
        let (id, side) = r.data;
        match side {
            Either::Left(mut auction) => {
                if self.state.open.contains_key(&id) {
                    tracing::warn!(
                        auction = id,
                        "q9: an auction id came again while open; dropped"
                    );
                    return;
                }
                auction.newest = ts;
                if let Some(bids) = self.state.waiting.remove(&id) {
                    for b in bids {
                        auction.offer(b);
                    }
                }
                self.by_expiry.insert((auction.expires, id));
                self.state.open.insert(id, auction);
                self.changed.insert(id, None);
            }
            Either::Right(b) => match self.state.open.get_mut(&id) {
                Some(auction) => {
                    let before = auction.best;
                    if auction.offer(b) {
                        self.changed.entry(id).or_insert(before);
                    }
                }
                None => {
                    self.state.waiting.entry(id).or_default().push(b);
                    self.waiting_since = self.waiting_since.min(b.at);
                }
            },
        }
    }

    fn on_epoch_end(&mut self, wm: Watermark, out: &mut Emitter<Q9In, Change<Q9>>) {
        for (id, before) in std::mem::take(&mut self.changed) {
            let Some(auction) = self.state.open.get_mut(&id) else {
                continue;
            };
            if auction.best == before {
                continue;
            }
            let ts = std::mem::replace(&mut auction.newest, i64::MIN);
            if let Some(b) = before {
                out.emit(runnel_engine::Event::new(
                    ts,
                    Change::Retract(auction.row(id, &b)),
                ));
            }
            if let Some(b) = auction.best {
                out.emit(runnel_engine::Event::new(
                    ts,
                    Change::Insert(auction.row(id, &b)),
                ));
            }
        }
        // Auctions the watermark has passed are final; bids waiting behind it can no longer
        // meet an auction that is not late.
        let open = self.by_expiry.split_off(&(wm, 0));
        for (_, id) in std::mem::replace(&mut self.by_expiry, open) {
            self.state.open.remove(&id);
        }
        if self.waiting_since < wm {
            let mut since = i64::MAX;
            self.state.waiting.retain(|_, bids| {
                bids.retain(|b| b.at >= wm);
                since = bids.iter().map(|b| b.at).fold(since, i64::min);
                !bids.is_empty()
            });
            self.waiting_since = since;
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        runnel_engine::recovery::encode(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.state = runnel_engine::recovery::decode(state)?;
        self.changed.clear();
        self.rebuild_indexes();
        Ok(())
    }

    fn state_kind(&self) -> String {
        "runnel.nexmark.q9/winning-bids.v2".to_string()
    }
}

/// The job `nexmark-q10`: q10 into partitioned files under the `dir` setting, or, without
/// it, into the `sink` setting's sink like every other query.
fn q10_job() -> Job {
    Job::new(
        "nexmark-q10",
        "q10 log to file system: every bid into files per day and minute under dir=PATH",
        |flow| {
            named(
                10,
                (|| {
                    let dir = flow.config().get_opt("dir");
                    if dir.is_some() && flow.config().contains("sink") {
                        return Err(invalid(
                            "give either dir (partitioned files) or sink, not both".to_string(),
                        ));
                    }
                    let events = events(flow)?;
                    let out = q10(&events);
                    match dir {
                        Some(dir) => out.sink("out", q10_sink(dir)),
                        None => sink(flow, &out),
                    }
                })(),
            )
        },
    )
}

/// One q10 result: a bid with the UTC day and minute it was made in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q10 {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// The bid's time.
    pub date_time: i64,
    /// The bid's padding.
    pub extra: Text,
    /// The day of `date_time` (UTC), `yyyy-MM-dd`.
    pub dt: String,
    /// The time of day of `date_time` (UTC), `HH:mm`.
    pub hm: String,
}

/// The UTC day of `ms` (epoch milliseconds) as `yyyy-MM-dd` and its time of day as `HH:mm`.
fn utc_day_and_minute(ms: i64) -> (String, String) {
    let days = ms.div_euclid(86_400_000);
    let of_day = ms.rem_euclid(86_400_000);
    // The proleptic Gregorian date of a day number (Howard Hinnant's `civil_from_days`): eras
    // of 400 years from 0000-03-01, so that a leap day ends its year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}", of_day / 3_600_000, of_day / 60_000 % 60),
    )
}

/// q10, log to file system: every bid with the day and minute it was made in, which q10's
/// sink ([`q10_sink`]) partitions the files by.
///
/// ```sql
/// INSERT INTO fs_sink  -- PARTITIONED BY (dt, hm), 'connector' = 'filesystem'
/// SELECT auction, bidder, price, dateTime, extra,
///     DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm')
/// FROM bid;
/// ```
pub fn q10<'s>(events: &Stream<'s, Event>) -> Stream<'s, Q10> {
    bids(events).map(|b| {
        let (dt, hm) = utc_day_and_minute(b.date_time);
        Q10 {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            date_time: b.date_time,
            extra: b.extra,
            dt,
            hm,
        }
    })
}

/// The directory of a q10 row under q10's output: `dt=<yyyy-MM-dd>/hm=<HH>%3A<mm>`, Hive-style
/// partitions as Flink's filesystem sink names them (which escapes the `:` of `HH:mm`).
pub fn q10_partition(row: &Q10) -> String {
    format!("dt={}/hm={}", row.dt, row.hm.replace(':', "%3A"))
}

/// q10's sink: JSON lines into `<dir>/dt=<yyyy-MM-dd>/hm=<HH>%3A<mm>/part-<worker>.jsonl` (see
/// [`q10_partition`] and [`PartitionedFileSink`]).
///
/// Differences from Flink's filesystem sink in the Nexmark setup: JSON lines rather than CSV,
/// with the whole row (Flink leaves the partition columns `dt` and `hm` out of the files); one
/// file per partition and worker, all appearing when the job ends (Flink rolls files every
/// minute and commits a partition, with a success file, a minute after its time has passed).
pub fn q10_sink(dir: impl Into<std::path::PathBuf>) -> PartitionedFileSink<Q10> {
    PartitionedFileSink::json(dir, q10_partition)
}

/// One q11 result: a bidder's session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q11 {
    /// The bidder.
    pub bidder: u64,
    /// Bids in the session.
    pub bid_count: u64,
    /// The session's first bid.
    pub start: i64,
    /// Its last bid plus the 10 s gap.
    pub end: i64,
}

/// q11, user sessions: bids per bidder per session, sessions closing after 10 s without a bid.
pub fn q11<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q11>> {
    Ok(bids(events)
        .key_by(|b| b.bidder)
        .window(Session::with_gap(Duration::from_secs(10)))
        .named("sessions")
        .aggregate(Count)?
        .map(|w| Q11 {
            bidder: w.key,
            bid_count: w.value,
            start: w.start,
            end: w.end,
        }))
}

/// One q12 result: a bidder's bids in one 10 s window of wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q12 {
    /// The bidder.
    pub bidder: u64,
    /// Bids in the window.
    pub bid_count: u64,
    /// The window's start, wall-clock epoch milliseconds.
    pub start: i64,
    /// The window's end (exclusive).
    pub end: i64,
}

/// q12, processing-time windows: bids per bidder per 10 s tumbling window of wall-clock time.
///
/// ```sql
/// CREATE VIEW B AS SELECT *, PROCTIME() as p_time FROM bid;
/// SELECT bidder, count(*) as bid_count, window_start AS starttime, window_end AS endtime
/// FROM TABLE(TUMBLE(TABLE B, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
/// GROUP BY bidder, window_start, window_end;
/// ```
///
/// runnel's windows run on event time only, so the query stamps each bid with the wall clock
/// as it passes (right after the source, on the worker that read it: ingestion time, in
/// effect) and windows on that. Differences from Flink's processing-time windows:
/// * A window closes when the *source's* watermark passes its end, not on a wall-clock timer.
///   When the input's event time follows the wall clock (the paced generator, `rate`), that is
///   about when the window ends; when it lags behind (the unpaced generator, a file, old events
///   on a topic), every window closes at the end of the input.
/// * Input whose event time runs ahead of the wall clock (events from the future) holds the
///   watermark ahead of the stamps, so its bids are late and dropped (and counted).
/// * Which window a bid falls in depends on when it was read, so results differ from run to
///   run; only the total per bidder over all windows is fixed.
pub fn q12<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q12>> {
    Ok(bids(events)
        .with_event_time(|_| runnel_engine::metrics::now_ms())
        .key_by(|b| b.bidder)
        .window(Tumbling::of(Duration::from_secs(10)))
        .named("bids-per-bidder")
        .aggregate(Count)?
        .map(|w| Q12 {
            bidder: w.key,
            bid_count: w.value,
            start: w.start,
            end: w.end,
        }))
}

/// The side table of q13: a value per key.
pub type SideInput = HashMap<u64, String>;

/// The rows of q13's default side table, as Nexmark's `side_input_gen.sh` writes it.
pub const SIDE_INPUT_ROWS: u64 = 10_000;

/// A side table as Nexmark's `SideInputGenerator` writes one: keys `0..rows`, each with its
/// own decimal digits as the value.
pub fn generated_side_input(rows: u64) -> SideInput {
    (0..rows).map(|k| (k, k.to_string())).collect()
}

/// Reads a side table from a file of `key,value` lines (the format of Flink's
/// `side_input.txt`): the key a number, the value the rest of the line after the first comma,
/// as it is (no CSV quoting). Blank lines are skipped; a later line wins over an earlier one
/// with the same key.
///
/// Errors: [`Error::Io`] if the file cannot be read, [`Error::InvalidJob`] naming the line if a
/// line has no comma or its key is not a number.
pub fn read_side_input(path: &str) -> Result<SideInput> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let mut table = SideInput::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| invalid(format!("side_input {path}, line {}: {why}", i + 1));
        let (key, value) = line
            .split_once(',')
            .ok_or_else(|| bad("expected key,value"))?;
        let key: u64 = key
            .trim()
            .parse()
            .map_err(|_| bad(&format!("key '{key}' is not a number")))?;
        table.insert(key, value.to_string());
    }
    Ok(table)
}

/// The job `nexmark-q13`: q13 joined with the side table of the `side_input` setting.
fn q13_job() -> Job {
    Job::new(
        "nexmark-q13",
        "q13 bounded side input join: every bid with the side table's value for auction % 10000",
        |flow| {
            named(
                13,
                (|| {
                    // Every worker reads the table for itself, once, while the job builds.
                    let side = match flow.config().get_opt("side_input") {
                        Some(path) => read_side_input(&path)?,
                        None => generated_side_input(SIDE_INPUT_ROWS),
                    };
                    let events = events(flow)?;
                    let out = q13(&events, side);
                    sink(flow, &out)
                })(),
            )
        },
    )
}

/// One q13 result: a bid with its side value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q13 {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// The bid's time.
    pub date_time: i64,
    /// The side table's value for `auction % 10000`.
    pub value: String,
}

/// q13, bounded side input join: every bid whose `auction % 10000` is a key of the side table,
/// with that key's value.
///
/// ```sql
/// SELECT B.auction, B.bidder, B.price, B.dateTime, S.value
/// FROM (SELECT *, PROCTIME() as p_time FROM bid) B
/// JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S
/// ON mod(B.auction, 10000) = S.key;
/// ```
///
/// Flink looks each bid up in the file table at processing time; here the table is given
/// whole when the job is built (by the job, from the `side_input` file or generated) and
/// every worker keeps its own copy, so a change to the file during a run is not seen. As in
/// Flink's inner lookup join, a bid whose key is not in the table is dropped (with the
/// default table of 10,000 rows, none is).
pub fn q13<'s>(events: &Stream<'s, Event>, side: SideInput) -> Stream<'s, Q13> {
    bids(events).flat_map(move |b| {
        let value = side.get(&(b.auction % 10_000))?;
        Some(Q13 {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            date_time: b.date_time,
            value: value.clone(),
        })
    })
}

/// One q14 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q14 {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price in euro cents (`price * 908 / 1000`).
    pub price: u64,
    /// `dayTime` (08:00 to 18:59 UTC), `nightTime` (up to 06:59 and from 20:00) or `otherTime`.
    pub bid_time_type: Text,
    /// The bid's time.
    pub date_time: i64,
    /// How many `c`s the padding has (Flink's `count_char` UDF).
    pub c_counts: u64,
}

/// q14, calculation: bids priced between 1,000,000 and 50,000,000 euro cents (exclusive), with
/// the part of the day they were made in and a count of `c`s in their padding.
pub fn q14<'s>(events: &Stream<'s, Event>) -> Stream<'s, Q14> {
    bids(events).flat_map(|b| {
        let price = b.price * 908 / 1000;
        if !(1_000_000 < price && price < 50_000_000) {
            return None;
        }
        let hour = b.date_time.rem_euclid(86_400_000) / 3_600_000;
        let kind = if (8..=18).contains(&hour) {
            "dayTime"
        } else if hour <= 6 || hour >= 20 {
            "nightTime"
        } else {
            "otherTime"
        };
        Some(Q14 {
            auction: b.auction,
            bidder: b.bidder,
            price,
            bid_time_type: Text::Borrowed(kind),
            date_time: b.date_time,
            c_counts: b.extra.bytes().filter(|&c| c == b'c').count() as u64,
        })
    })
}

/// The price rank of a bid in q15, q16 and q17: 0 below 10,000, 1 from 10,000 below 1,000,000,
/// 2 from 1,000,000. Prices are the generator's integers (which runnel calls cents), the same
/// numbers Flink's queries compare, so the bounds are Flink's as they are.
fn price_rank(price: u64) -> usize {
    if price < 10_000 {
        0
    } else if price < 1_000_000 {
        1
    } else {
        2
    }
}

/// The distinct ids of a group, each with the price ranks it was seen in, and how many ids
/// each rank has: the distinct counts of all ranks and of each rank are at hand when a day
/// closes. (Building the union of per-rank sets then took 2.4 s at the close of a q15 day at
/// 4.5M events/s.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Distinct {
    /// id -> bit `r` set if the id was seen in rank `r`.
    seen: HashMap<u64, u8, BuildHasherDefault<FxHasher>>,
    per_rank: [u64; 3],
}

impl Distinct {
    fn add(&mut self, id: u64, rank: usize) {
        let ranks = self.seen.entry(id).or_insert(0);
        let bit = 1u8 << rank;
        if *ranks & bit == 0 {
            *ranks |= bit;
            self.per_rank[rank] += 1;
        }
    }

    fn merge(&mut self, other: &Distinct) {
        for (&id, &theirs) in &other.seen {
            let ranks = self.seen.entry(id).or_insert(0);
            let new = theirs & !*ranks;
            if new != 0 {
                *ranks |= new;
                for (r, n) in self.per_rank.iter_mut().enumerate() {
                    *n += u64::from(new >> r & 1);
                }
            }
        }
    }

    /// `[all ranks, rank 1, rank 2, rank 3]`.
    fn counts(&self) -> [u64; 4] {
        let [a, b, c] = self.per_rank;
        [self.seen.len() as u64, a, b, c]
    }
}

/// What q15 and q16 keep per group: per price rank, the bids; the distinct bidders and
/// auctions with their ranks; and the latest bid's time.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RankAcc {
    bids: [u64; 3],
    bidders: Distinct,
    auctions: Distinct,
    last: i64,
}

/// The results of q15 and q16: each count as `[total, rank1, rank2, rank3]`, and the latest
/// bid's time.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RankCounts {
    bids: [u64; 4],
    bidders: [u64; 4],
    auctions: [u64; 4],
    last: i64,
}

/// The statistics of q15 and q16: bids, distinct bidders and distinct auctions, in total and
/// per price rank.
#[derive(Clone, Copy, Debug)]
struct RankStats;

impl Aggregate<Bid> for RankStats {
    type Acc = RankAcc;
    type Out = RankCounts;
    fn create(&self) -> Self::Acc {
        RankAcc {
            bids: [0; 3],
            bidders: Distinct::default(),
            auctions: Distinct::default(),
            last: i64::MIN,
        }
    }
    fn add(&self, acc: &mut Self::Acc, b: &Bid) {
        let r = price_rank(b.price);
        acc.bids[r] += 1;
        acc.bidders.add(b.bidder, r);
        acc.auctions.add(b.auction, r);
        acc.last = acc.last.max(b.date_time);
    }
    fn merge(&self, acc: &mut Self::Acc, o: &Self::Acc) {
        for r in 0..3 {
            acc.bids[r] += o.bids[r];
        }
        acc.bidders.merge(&o.bidders);
        acc.auctions.merge(&o.auctions);
        acc.last = acc.last.max(o.last);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        let [r1, r2, r3] = acc.bids;
        RankCounts {
            bids: [r1 + r2 + r3, r1, r2, r3],
            bidders: acc.bidders.counts(),
            auctions: acc.auctions.counts(),
            last: acc.last,
        }
    }
}

/// A day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// The number of the day that `ms` falls in, days starting `day_start` ms after midnight UTC.
fn day_of(ms: i64, day_start: i64) -> i64 {
    (ms - day_start).div_euclid(DAY_MS)
}

/// Tumbling event-time days that start `day_start` ms after midnight UTC.
fn days(day_start: i64) -> runnel_operators::WindowSpec {
    Tumbling::with_offset(
        Duration::from_millis(DAY_MS as u64),
        Duration::from_millis(day_start.rem_euclid(DAY_MS) as u64),
    )
}

/// One q15 result: the bids of one day.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q15 {
    /// The day (UTC), as the epoch milliseconds of its start.
    pub day: i64,
    /// Bids.
    pub total_bids: u64,
    /// Bids below 10,000.
    pub rank1_bids: u64,
    /// Bids from 10,000 below 1,000,000.
    pub rank2_bids: u64,
    /// Bids from 1,000,000.
    pub rank3_bids: u64,
    /// Distinct bidders.
    pub total_bidders: u64,
    /// Distinct bidders of rank-1 bids.
    pub rank1_bidders: u64,
    /// Distinct bidders of rank-2 bids.
    pub rank2_bidders: u64,
    /// Distinct bidders of rank-3 bids.
    pub rank3_bidders: u64,
    /// Distinct auctions.
    pub total_auctions: u64,
    /// Distinct auctions of rank-1 bids.
    pub rank1_auctions: u64,
    /// Distinct auctions of rank-2 bids.
    pub rank2_auctions: u64,
    /// Distinct auctions of rank-3 bids.
    pub rank3_auctions: u64,
}

/// q15, bidding statistics report: per day, the bids and the distinct bidders and auctions, in
/// total and in three price ranks.
///
/// ```sql
/// SELECT
///      DATE_FORMAT(dateTime, 'yyyy-MM-dd') as day,
///      count(*) AS total_bids,
///      count(*) filter (where price < 10000) AS rank1_bids,
///      count(*) filter (where price >= 10000 and price < 1000000) AS rank2_bids,
///      count(*) filter (where price >= 1000000) AS rank3_bids,
///      count(distinct bidder) AS total_bidders,
///      count(distinct bidder) filter (where price < 10000) AS rank1_bidders,
///      ... -- rank2_bidders, rank3_bidders likewise
///      count(distinct auction) AS total_auctions,
///      count(distinct auction) filter (where price < 10000) AS rank1_auctions,
///      ... -- rank2_auctions, rank3_auctions likewise
/// FROM bid
/// GROUP BY DATE_FORMAT(dateTime, 'yyyy-MM-dd');
/// ```
///
/// Flink groups by the formatted day without a window and updates its row with every bid; here
/// a day is an event-time tumbling window (UTC), its row comes once, when the day is over, and
/// `day` is the epoch milliseconds of its start, not a `yyyy-MM-dd` string. Bids behind the
/// watermark are late and dropped. The distinct sets of a day are kept whole until
/// it closes, and a worker pre-aggregates its bids per epoch before they go to the day's
/// worker (one worker per day: the query has no parallelism within a day).
pub fn q15<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q15>> {
    q15_days(events, 0)
}

/// [`q15`] with days that start `day_start` milliseconds after midnight UTC (for midnight in
/// UTC+8, 16 hours: `57_600_000`), as Flink's local time zone would place them.
pub fn q15_days<'s>(events: &Stream<'s, Event>, day_start: i64) -> Result<Stream<'s, Q15>> {
    Ok(bids(events)
        .key_by(move |b| day_of(b.date_time, day_start))
        .window(days(day_start))
        .named("per-day")
        .aggregate(RankStats)?
        .map(|w| {
            let RankCounts {
                bids,
                bidders,
                auctions,
                ..
            } = w.value;
            Q15 {
                day: w.start,
                total_bids: bids[0],
                rank1_bids: bids[1],
                rank2_bids: bids[2],
                rank3_bids: bids[3],
                total_bidders: bidders[0],
                rank1_bidders: bidders[1],
                rank2_bidders: bidders[2],
                rank3_bidders: bidders[3],
                total_auctions: auctions[0],
                rank1_auctions: auctions[1],
                rank2_auctions: auctions[2],
                rank3_auctions: auctions[3],
            }
        }))
}

/// One q16 result: the bids of one channel in one day.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q16 {
    /// The channel.
    pub channel: Text,
    /// The day (UTC), as the epoch milliseconds of its start.
    pub day: i64,
    /// The time of day of the channel's last bid that day, `HH:mm` (UTC).
    pub minute: String,
    /// Bids.
    pub total_bids: u64,
    /// Bids below 10,000.
    pub rank1_bids: u64,
    /// Bids from 10,000 below 1,000,000.
    pub rank2_bids: u64,
    /// Bids from 1,000,000.
    pub rank3_bids: u64,
    /// Distinct bidders.
    pub total_bidders: u64,
    /// Distinct bidders of rank-1 bids.
    pub rank1_bidders: u64,
    /// Distinct bidders of rank-2 bids.
    pub rank2_bidders: u64,
    /// Distinct bidders of rank-3 bids.
    pub rank3_bidders: u64,
    /// Distinct auctions.
    pub total_auctions: u64,
    /// Distinct auctions of rank-1 bids.
    pub rank1_auctions: u64,
    /// Distinct auctions of rank-2 bids.
    pub rank2_auctions: u64,
    /// Distinct auctions of rank-3 bids.
    pub rank3_auctions: u64,
}

/// q16, channel statistics report: q15 per channel and day, with the last minute of the day
/// that the channel had a bid in.
///
/// ```sql
/// SELECT
///     channel,
///     DATE_FORMAT(dateTime, 'yyyy-MM-dd') as day,
///     max(DATE_FORMAT(dateTime, 'HH:mm')) as minute,
///     ... -- the twelve counts of q15
/// FROM bid
/// GROUP BY channel, DATE_FORMAT(dateTime, 'yyyy-MM-dd');
/// ```
///
/// Differs from Flink as q15 does: one row per channel and day when the day is over, `day` as
/// epoch milliseconds. `minute` is, as in Flink, `HH:mm` of the latest bid (the largest
/// `HH:mm` string of a day is that of its latest time).
pub fn q16<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q16>> {
    q16_days(events, 0)
}

/// [`q16`] with days that start `day_start` milliseconds after midnight UTC; `minute` is then
/// the time of day from that start.
pub fn q16_days<'s>(events: &Stream<'s, Event>, day_start: i64) -> Result<Stream<'s, Q16>> {
    Ok(bids(events)
        .key_by(move |b| (b.channel.clone(), day_of(b.date_time, day_start)))
        .window(days(day_start))
        .named("per-channel-day")
        .aggregate(RankStats)?
        .map(move |w| {
            let RankCounts {
                bids,
                bidders,
                auctions,
                last,
            } = w.value;
            let of_day = (last - day_start).rem_euclid(DAY_MS);
            Q16 {
                channel: w.key.0,
                day: w.start,
                minute: format!("{:02}:{:02}", of_day / 3_600_000, of_day / 60_000 % 60),
                total_bids: bids[0],
                rank1_bids: bids[1],
                rank2_bids: bids[2],
                rank3_bids: bids[3],
                total_bidders: bidders[0],
                rank1_bidders: bidders[1],
                rank2_bidders: bidders[2],
                rank3_bidders: bidders[3],
                total_auctions: auctions[0],
                rank1_auctions: auctions[1],
                rank2_auctions: auctions[2],
                rank3_auctions: auctions[3],
            }
        }))
}

/// One q17 result: an auction's bids of one day.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q17 {
    /// The auction.
    pub auction: u64,
    /// The day (UTC), as the epoch milliseconds of its start.
    pub day: i64,
    /// Bids.
    pub total_bids: u64,
    /// Bids below 10,000.
    pub rank1_bids: u64,
    /// Bids from 10,000 below 1,000,000.
    pub rank2_bids: u64,
    /// Bids from 1,000,000.
    pub rank3_bids: u64,
    /// The lowest price.
    pub min_price: u64,
    /// The highest price.
    pub max_price: u64,
    /// The average price, rounded down.
    pub avg_price: u64,
    /// The sum of the prices.
    pub sum_price: u64,
}

/// The statistics of q17: counts per price rank, min, max, sum.
#[derive(Clone, Copy, Debug)]
struct DayStats;

impl Aggregate<Bid> for DayStats {
    /// `[total, rank1, rank2, rank3, min, max, sum]`.
    type Acc = [u64; 7];
    type Out = [u64; 7];
    fn create(&self) -> Self::Acc {
        [0, 0, 0, 0, u64::MAX, 0, 0]
    }
    fn add(&self, acc: &mut Self::Acc, b: &Bid) {
        acc[0] += 1;
        acc[1 + price_rank(b.price)] += 1;
        acc[4] = acc[4].min(b.price);
        acc[5] = acc[5].max(b.price);
        acc[6] += b.price;
    }
    fn merge(&self, acc: &mut Self::Acc, o: &Self::Acc) {
        for i in [0, 1, 2, 3, 6] {
            acc[i] += o[i];
        }
        acc[4] = acc[4].min(o[4]);
        acc[5] = acc[5].max(o[5]);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        *acc
    }
}

/// q17, auction statistics: per auction and day, the number of bids in three price ranks and
/// the minimum, maximum, average and sum of the prices.
///
/// ```sql
/// SELECT
///      auction,
///      DATE_FORMAT(dateTime, 'yyyy-MM-dd') as day,
///      count(*) AS total_bids,
///      count(*) filter (where price < 10000) AS rank1_bids,
///      count(*) filter (where price >= 10000 and price < 1000000) AS rank2_bids,
///      count(*) filter (where price >= 1000000) AS rank3_bids,
///      min(price) AS min_price,
///      max(price) AS max_price,
///      avg(price) AS avg_price,
///      sum(price) AS sum_price
/// FROM bid
/// GROUP BY auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd');
/// ```
///
/// Updating, as Flink's: an auction's row for a day is emitted at the end of every epoch with
/// a bid on it that day, and replaces the one before (an upsert by `(auction, day)`; Flink's
/// q17 into an upsert sink writes the same). In the generator an auction gets its bids while
/// it is among the newest (hot auctions aside), so most rows are final long before the day
/// ends; one row per auction when the day ends would be a burst of millions. `day` is the
/// epoch milliseconds of its start, not a `yyyy-MM-dd` string, and a day's state is dropped
/// when the watermark passes its end: later bids for it are late and dropped (counted).
///
/// Reading the rows: the latest row of an auction and day is its answer. The job's Kafka sink
/// is not keyed, so one auction-day's rows can land in different partitions; as its counts
/// only grow, the row with the most bids (`total_bids`) is the latest.
pub fn q17<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Q17>> {
    q17_days(events, 0)
}

/// [`q17`] with days that start `day_start` milliseconds after midnight UTC.
pub fn q17_days<'s>(events: &Stream<'s, Event>, day_start: i64) -> Result<Stream<'s, Q17>> {
    Ok(bids(events)
        .key_by(|b| b.auction)
        .window(days(day_start))
        .named("per-auction-day")
        .aggregate_updating(DayStats)?
        .map(|w| {
            let [total, r1, r2, r3, min, max, sum] = w.value;
            Q17 {
                auction: w.key,
                day: w.start,
                total_bids: total,
                rank1_bids: r1,
                rank2_bids: r2,
                rank3_bids: r3,
                min_price: min,
                max_price: max,
                avg_price: sum / total,
                sum_price: sum,
            }
        }))
}

/// How q18 picks a pair's latest bid: the later `date_time`, then, on a tie, the larger
/// `(price, channel, url, extra)` (the pair's `bidder` and `auction` are equal).
fn later_bid(a: &Bid, b: &Bid) -> std::cmp::Ordering {
    (a.date_time, a.price, &a.channel, &a.url, &a.extra).cmp(&(
        b.date_time,
        b.price,
        &b.channel,
        &b.url,
        &b.extra,
    ))
}

/// q18, find last bid: for every bidder and auction, the bidder's latest bid on it (a whole
/// bid).
///
/// ```sql
/// SELECT auction, bidder, price, channel, url, dateTime, extra
/// FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC)
///       AS rank_number FROM bid)
/// WHERE rank_number <= 1;
/// ```
///
/// Updating: a later bid of the pair replaces its row as it arrives (a retraction, then an
/// insertion, as Flink's deduplication emits an update per record), stamped with the bid's
/// event time.
/// Differences from Flink's:
/// * Ties. Flink plans this as a deduplication on the event time (keep the last row), where of
///   two bids of a pair at the same millisecond the one that arrives later wins, which depends
///   on scheduling. Here the later bid is the larger by `(date_time, price, channel, url,
///   extra)`, the same in every run; two bids equal in all of those are one row.
/// * State. As Flink's, one row per pair, kept for ever (a later bid of the pair may still
///   come), in memory ([`LastBids`]). Nothing is late.
pub fn q18<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Change<Bid>>> {
    Ok(bids(events)
        .key_by(|b| (b.bidder, b.auction))
        .map_values(|b| b)
        .stateful("last-bid-per-pair", false, LastBids::default())?
        .0)
}

/// q18's operator (see [`q18`]): each `(bidder, auction)` pair's row.
///
/// The map holds only each pair's place in `bids`, so that its entries are small (24 bytes,
/// against 120 with the bid in them): when a shard of it doubles, it copies and touches a
/// fifth as much memory. At 2.8M events/s on the benchmark machine, fresh memory for the
/// doubling tables was 30% of the samples (`clear_page_erms` under `reserve_rehash`).
///
/// Incremental checkpoints: once marked, it keeps the row count at the mark and a bit per
/// row then present, set when the row's bid is replaced; the changes are the rows added since
/// and the rows whose bit is set (a row's key is its bid's `(bidder, auction)`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct LastBids {
    /// Each pair's row: its index in `bids`.
    rows: StaggeredMap<(u64, u64), usize>,
    /// The rows' latest bids, in chunks of [`ROWS_CHUNK`] that never move.
    bids: Vec<Vec<Bid>>,
    /// What changed since the last mark (none before the first: not tracking).
    #[serde(skip)]
    changes: Option<RowChanges>,
}

/// The changes of a [`LastBids`] since its last mark or changes written (what the engine
/// takes between checkpoints costs what changed, not the state's size).
#[derive(Debug, Default)]
struct RowChanges {
    /// Rows at the mark; those from here on are new.
    rows: usize,
    /// A bit per row below `rows`: replaced since the mark.
    replaced: Vec<u64>,
    /// The rows whose bit is set.
    list: Vec<usize>,
}

impl RowChanges {
    /// Tracks anew from a state of `rows` rows (the bits kept, cleared).
    fn reset(&mut self, rows: usize) {
        for &i in &self.list {
            self.replaced[i / 64] = 0;
        }
        self.list.clear();
        self.rows = rows;
        self.replaced.resize(rows.div_ceil(64), 0);
    }
}

// [`LastBids`]' changes as written (`runnel_engine::wire`): the rows at the mark (u64), the
// rows added since (a count, then each bid, see `Bid::put_wire`), and the rows replaced (a count,
// then each row (u64) and its bid).

impl LastBids {
    fn len(&self) -> usize {
        self.bids.len().saturating_sub(1) * ROWS_CHUNK + self.bids.last().map_or(0, Vec::len)
    }

    /// Adds the row `bid` at the end; returns its index.
    fn push_row(&mut self, bid: Bid) -> usize {
        if self.bids.last().is_none_or(|c| c.len() == ROWS_CHUNK) {
            self.bids.push(Vec::with_capacity(ROWS_CHUNK));
        }
        let full = (self.bids.len() - 1) * ROWS_CHUNK;
        let chunk = self.bids.last_mut().expect("a chunk was pushed");
        chunk.push(bid);
        full + chunk.len() - 1
    }

    fn bid(&self, i: usize) -> &Bid {
        &self.bids[i / ROWS_CHUNK][i % ROWS_CHUNK]
    }
}

/// Rows per chunk of [`LastBids::bids`] (430 KB; the tests fill several).
const ROWS_CHUNK: usize = 1 << 12;

type Q18In = ((u64, u64), Bid);

impl EpochLogic<Q18In, Change<Bid>> for LastBids {
    fn on_record(
        &mut self,
        r: runnel_engine::Event<Q18In>,
        _wm: Watermark,
        out: &mut Emitter<Q18In, Change<Bid>>,
    ) {
        let (key, bid) = r.data;
        match self.rows.entry(key) {
            std::collections::hash_map::Entry::Occupied(row) => {
                let i = *row.get();
                let last = &mut self.bids[i / ROWS_CHUNK][i % ROWS_CHUNK];
                if later_bid(&bid, last) != std::cmp::Ordering::Greater {
                    return;
                }
                let old = std::mem::replace(last, bid.clone());
                out.emit(runnel_engine::Event::new(r.ts, Change::Retract(old)));
                if let Some(c) = &mut self.changes {
                    if i < c.rows && c.replaced[i / 64] & (1 << (i % 64)) == 0 {
                        c.replaced[i / 64] |= 1 << (i % 64);
                        c.list.push(i);
                    }
                }
            }
            std::collections::hash_map::Entry::Vacant(row) => {
                if self.bids.last().is_none_or(|c| c.len() == ROWS_CHUNK) {
                    self.bids.push(Vec::with_capacity(ROWS_CHUNK));
                }
                let full = (self.bids.len() - 1) * ROWS_CHUNK;
                let chunk = self.bids.last_mut().expect("a chunk was pushed");
                row.insert(full + chunk.len());
                chunk.push(bid.clone());
            }
        }
        out.emit(runnel_engine::Event::new(r.ts, Change::Insert(bid)));
    }

    fn on_epoch_end(&mut self, _wm: Watermark, _out: &mut Emitter<Q18In, Change<Bid>>) {}

    fn snapshot(&self) -> Result<Vec<u8>> {
        runnel_engine::recovery::encode(self)
    }

    fn snapshot_into(&self, out: &mut Vec<u8>) -> Result<()> {
        runnel_engine::recovery::encode_into(out, self)
    }

    fn snapshot_to(&self, out: &mut dyn std::io::Write) -> Result<()> {
        runnel_engine::recovery::encode_to(out, self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        *self = runnel_engine::recovery::decode(state)?;
        Ok(())
    }

    fn state_kind(&self) -> String {
        "runnel.nexmark.q18/last-bids.v7".to_string()
    }

    fn tracks_changes(&self) -> bool {
        true
    }

    fn state_size_hint(&self) -> Option<u64> {
        Some((self.len() * std::mem::size_of::<Bid>()) as u64)
    }

    fn mark_snapshot(&mut self) {
        let rows = self.len();
        self.changes
            .get_or_insert_with(RowChanges::default)
            .reset(rows);
    }

    fn snapshot_changes_into(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let Some(c) = &mut self.changes else {
            return Err(runnel_engine::Error::Runtime(
                "q18's changes were asked for before its state was marked".into(),
            ));
        };
        c.list.sort_unstable();
        let c = self.changes.as_ref().expect("checked above");
        // The format is above `impl LastBids`.
        out.put_u64(c.rows as u64);
        out.put_len(self.len() - c.rows);
        for i in c.rows..self.len() {
            self.bid(i).put_wire(out);
        }
        out.put_len(c.list.len());
        for &i in &c.list {
            out.put_u64(i as u64);
            self.bid(i).put_wire(out);
        }
        self.mark_snapshot();
        Ok(())
    }

    fn restore_changes(&mut self, changes: &[u8]) -> Result<()> {
        let mut w = Wire::new("q18's changes", changes);
        let rows = w.u64("the rows at the mark")?;
        if rows != self.len() as u64 {
            return Err(runnel_engine::Error::Runtime(format!(
                "q18's changes are for a state of {rows} rows, not of {}",
                self.len()
            )));
        }
        let mut added = Vec::new();
        for _ in 0..w.len("the number of rows added")? {
            added.push(Bid::get_wire(&mut w)?);
        }
        for _ in 0..w.len("the number of rows replaced")? {
            let i = w.u64("a replaced row")? as usize;
            if i >= self.len() {
                return Err(runnel_engine::Error::Runtime(format!(
                    "q18's changes replace row {i} of {rows}"
                )));
            }
            self.bids[i / ROWS_CHUNK][i % ROWS_CHUNK] = Bid::get_wire(&mut w)?;
        }
        w.end()?;
        for bid in added {
            let key = (bid.bidder, bid.auction);
            let i = self.push_row(bid);
            self.rows.insert(key, i);
        }
        Ok(())
    }
}

/// One q19 result: a bid among the ten highest of its auction, with its rank.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q19 {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// The channel.
    pub channel: Text,
    /// The url.
    pub url: Text,
    /// The bid's time.
    pub date_time: i64,
    /// The bid's padding.
    pub extra: Text,
    /// The bid's place in its auction, 1 (the highest) to 10.
    pub rank_number: u64,
}

/// How many bids per auction q19 keeps.
const Q19_TOP: usize = 10;

/// q19, auction top-k: for every auction, its ten highest bids, numbered 1 to 10.
///
/// ```sql
/// SELECT * FROM
/// (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
///  FROM bid)
/// WHERE rank_number <= 10;
/// ```
///
/// Updating: after each epoch, every auction whose top ten changed emits the rows that
/// changed: a bid that entered is inserted at its place, the bids it passed are retracted and
/// inserted again one place lower, and the tenth drops out, as Flink's rank operator updates
/// its rows (here netted over the epoch: a bid that came and was passed again within one
/// epoch leaves no trace). A change is stamped with the newest event time among the bids of
/// the epoch that are in the new top ten. Nothing is late: every bid counts, whenever it
/// comes. Like Flink's rank operator on an insert-only input (`AppendOnlyTopNFunction`), the
/// state is the top ten of each auction, not every bid. The operator's state is checkpointed;
/// it grows with the auctions, for ever, and a checkpoint writes all of it (as q18's and
/// q20's). One difference
/// from Flink's: ties. Flink ranks the earlier arrival first among bids of equal price; here
/// the earlier `date_time` ranks higher, then the smaller `(bidder, channel, url, extra)`, the
/// same in every run. Two bids equal in every field take two places.
pub fn q19<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Change<Q19>>> {
    Ok(bids(events)
        .key_by(|b| b.auction)
        .map_values(|b| b)
        .stateful("top-10-bids", false, TopBids::default())?
        .0)
}

/// A bid in an auction's top ten as q19 keeps it, in 64 bytes against 112 for the event time
/// and the whole `Bid`: the auction is the key, and the channel and url are an index into
/// the distinct pairs ([`ChannelUrls`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TopBid {
    /// The record's event time.
    ts: i64,
    bidder: u64,
    price: u64,
    date_time: i64,
    extra: Text,
    /// The bid's `(channel, url)`, in [`TopBids::pairs`].
    pair: u32,
}

const _: () = assert!(std::mem::size_of::<TopBid>() == 64);

/// q19's operator (see [`q19`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct TopBids {
    /// Each auction's top ten, best first.
    tops: FxMap<u64, Vec<TopBid>>,
    /// The channels and urls of the bids that entered a top ten.
    pairs: ChannelUrls,
    /// The auctions whose top ten changed in this epoch, with their top ten as it was before
    /// (empty between epochs, so not in a checkpoint).
    #[serde(skip)]
    before: FxMap<u64, Vec<TopBid>>,
    /// For incremental checkpoints, once marked: the pairs at the mark, and the auctions whose
    /// top ten changed since, each with the first place that changed (once per epoch they
    /// changed in).
    #[serde(skip)]
    changes: Option<(usize, Vec<(u64, u8)>)>,
}

// [`TopBids`]' changes as written (`runnel_engine::wire`): the pairs at the mark (u64), the
// pairs added since (a count, then each channel and url), and each changed auction's top ten
// from the first place that changed on (a count, then each auction (a LEB128 varint), the place
// (u8), the number of bids from there (u8) and each bid: its ts less the ts written before it
// (0 for the first; a zigzag varint), bidder and price (varints), its date_time less its ts
// (zigzag varint), pair (varint) and extra); the places above it are as they were.

type Q19In = (u64, Bid);

/// How q19 orders an auction's bids, best first: the higher price, then the earlier
/// `date_time`, then the smaller `(bidder, channel, url, extra)`, then the earlier event time;
/// here between a bid (`ts`, `b`) and a kept one: `Less` when the bid ranks higher.
fn order_bid(pairs: &ChannelUrls, ts: i64, b: &Bid, k: &TopBid) -> std::cmp::Ordering {
    k.price.cmp(&b.price).then_with(|| {
        let (channel, url) = &pairs.all[k.pair as usize];
        (b.date_time, b.bidder, &b.channel, &b.url, &b.extra, ts).cmp(&(
            k.date_time,
            k.bidder,
            channel,
            url,
            &k.extra,
            k.ts,
        ))
    })
}

/// The same order between two kept bids.
fn order_kept(pairs: &ChannelUrls, a: &TopBid, k: &TopBid) -> std::cmp::Ordering {
    k.price.cmp(&a.price).then_with(|| {
        let (channel, url) = &pairs.all[a.pair as usize];
        let (kc, ku) = &pairs.all[k.pair as usize];
        (a.date_time, a.bidder, channel, url, &a.extra, a.ts).cmp(&(
            k.date_time,
            k.bidder,
            kc,
            ku,
            &k.extra,
            k.ts,
        ))
    })
}

impl TopBids {
    /// Whether two kept bids make the same row (their event times aside).
    fn same_row(&self, a: &TopBid, b: &TopBid) -> bool {
        (a.bidder, a.price, a.date_time, &a.extra) == (b.bidder, b.price, b.date_time, &b.extra)
            && (a.pair == b.pair
                || self.pairs.all[a.pair as usize] == self.pairs.all[b.pair as usize])
    }

    fn row(&self, auction: u64, k: &TopBid, place: usize) -> Q19 {
        let (channel, url) = &self.pairs.all[k.pair as usize];
        Q19 {
            auction,
            bidder: k.bidder,
            price: k.price,
            channel: channel.clone(),
            url: url.clone(),
            date_time: k.date_time,
            extra: k.extra.clone(),
            rank_number: place as u64 + 1,
        }
    }
}

impl EpochLogic<Q19In, Change<Q19>> for TopBids {
    fn on_record(
        &mut self,
        r: runnel_engine::Event<Q19In>,
        _wm: Watermark,
        _out: &mut Emitter<Q19In, Change<Q19>>,
    ) {
        let (auction, bid) = r.data;
        if let Some(top) = self.tops.get(&auction) {
            if top.len() == Q19_TOP
                && order_bid(&self.pairs, r.ts, &bid, &top[Q19_TOP - 1]) != std::cmp::Ordering::Less
            {
                return;
            }
        }
        let kept = TopBid {
            ts: r.ts,
            bidder: bid.bidder,
            price: bid.price,
            date_time: bid.date_time,
            extra: bid.extra,
            pair: self.pairs.id((bid.channel, bid.url)),
        };
        let pairs = &self.pairs;
        let top = self
            .tops
            .entry(auction)
            .or_insert_with(|| Vec::with_capacity(Q19_TOP));
        self.before.entry(auction).or_insert_with(|| top.clone());
        let at = top.partition_point(|k| order_kept(pairs, k, &kept) == std::cmp::Ordering::Less);
        if top.len() == Q19_TOP {
            top.pop();
        }
        top.insert(at, kept);
    }

    fn on_epoch_end(&mut self, _wm: Watermark, out: &mut Emitter<Q19In, Change<Q19>>) {
        let mut before = std::mem::take(&mut self.before);
        for (auction, old) in before.drain() {
            let new = &self.tops[&auction];
            if let Some((_, changed)) = &mut self.changes {
                let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
                changed.push((auction, same as u8));
            }
            // The newest of the epoch's bids in the new top ten: what the new one holds more
            // often than the old one (a bid may come twice).
            let count = |v: &[TopBid], e: &TopBid| v.iter().filter(|x| *x == e).count();
            let Some(ts) = new
                .iter()
                .filter(|e| count(new, e) > count(&old, e))
                .map(|e| e.ts)
                .max()
            else {
                continue;
            };
            for i in 0..new.len().max(old.len()) {
                let (was, is) = (old.get(i), new.get(i));
                if let (Some(a), Some(b)) = (was, is) {
                    if self.same_row(a, b) {
                        continue;
                    }
                }
                if let Some(k) = was {
                    let row = self.row(auction, k, i);
                    out.emit(runnel_engine::Event::new(ts, Change::Retract(row)));
                }
                if let Some(k) = is {
                    let row = self.row(auction, k, i);
                    out.emit(runnel_engine::Event::new(ts, Change::Insert(row)));
                }
            }
        }
        // Kept, with its capacity, for the next epoch.
        self.before = before;
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        runnel_engine::recovery::encode(self)
    }

    fn snapshot_into(&self, out: &mut Vec<u8>) -> Result<()> {
        runnel_engine::recovery::encode_into(out, self)
    }

    fn snapshot_to(&self, out: &mut dyn std::io::Write) -> Result<()> {
        runnel_engine::recovery::encode_to(out, self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        *self = runnel_engine::recovery::decode(state)?;
        Ok(())
    }

    fn state_kind(&self) -> String {
        "runnel.nexmark.q19/top-bids.v4".to_string()
    }

    fn tracks_changes(&self) -> bool {
        true
    }

    fn state_size_hint(&self) -> Option<u64> {
        // Most auctions that get bids fill their ten places.
        Some((self.tops.len() * Q19_TOP * std::mem::size_of::<TopBid>()) as u64)
    }

    fn mark_snapshot(&mut self) {
        let (pairs, changed) = self.changes.get_or_insert_with(Default::default);
        *pairs = self.pairs.all.len();
        changed.clear();
    }

    fn snapshot_changes_into(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let Some((_, changed)) = &mut self.changes else {
            return Err(runnel_engine::Error::Runtime(
                "q19's changes were asked for before its state was marked".into(),
            ));
        };
        // In auction order, each once from the first place that changed since the last
        // changes (the same state gives the same bytes).
        changed.sort_unstable();
        changed.dedup_by_key(|(a, _)| *a);
        let (pairs, changed) = self.changes.as_ref().expect("checked above");
        // The pairs at the mark and those added since, then each changed auction's top ten
        // from its first changed place (the format is above `Q19In`), field by field.
        out.put_u64(*pairs as u64);
        let added = &self.pairs.all[*pairs..];
        out.put_len(added.len());
        for (channel, url) in added {
            out.put_str(channel);
            out.put_str(url);
        }
        // The look-ups first, then the writing: independent look-ups overlap their cache
        // misses (interleaved with the writing, about a third longer in a scratch benchmark).
        let tops: Vec<(u64, u8, &[TopBid])> = changed
            .iter()
            .map(|&(a, place)| {
                let top = &self.tops[&a];
                (a, place, &top[(place as usize).min(top.len())..])
            })
            .collect();
        out.put_len(tops.len());
        let mut ts = 0i64;
        for (auction, place, below) in tops {
            out.put_var_u64(auction);
            out.put_u8(place);
            out.put_u8(below.len() as u8);
            for k in below {
                out.reserve(47 + k.extra.len());
                out.put_var_i64(k.ts.wrapping_sub(ts));
                ts = k.ts;
                out.put_var_u64(k.bidder);
                out.put_var_u64(k.price);
                out.put_var_i64(k.date_time.wrapping_sub(k.ts));
                out.put_var_u64(u64::from(k.pair));
                out.put_str(&k.extra);
            }
        }
        self.mark_snapshot();
        Ok(())
    }

    fn restore_changes(&mut self, changes: &[u8]) -> Result<()> {
        let mut w = Wire::new("q19's changes", changes);
        let pairs = w.u64("the pairs at the mark")?;
        if pairs != self.pairs.all.len() as u64 {
            return Err(runnel_engine::Error::Runtime(format!(
                "q19's changes are for a state of {pairs} channel and url pairs, not of {}",
                self.pairs.all.len()
            )));
        }
        for _ in 0..w.len("the number of pairs added")? {
            let channel = w.str("a channel")?.to_string();
            let url = w.str("a url")?.to_string();
            self.pairs.push((channel.into(), url.into()));
        }
        let mut ts = 0i64;
        for _ in 0..w.len("the number of changed auctions")? {
            let auction = w.var_u64("an auction")?;
            let place = w.u8("its first changed place")? as usize;
            let below = w.u8("its number of bids from there")? as usize;
            let top = self.tops.entry(auction).or_default();
            if place > top.len() || place + below > Q19_TOP {
                return Err(runnel_engine::Error::Runtime(format!(
                    "q19's changes put {below} bids from place {place} of auction {auction}, \
                     which has {}",
                    top.len()
                )));
            }
            top.truncate(place);
            for _ in 0..below {
                ts = ts.wrapping_add(w.var_i64("a bid's event time")?);
                let bidder = w.var_u64("a bidder")?;
                let price = w.var_u64("a price")?;
                let date_time = ts.wrapping_add(w.var_i64("a bid's date_time")?);
                let pair = w.var_u64("a bid's channel and url")?;
                let pair = match u32::try_from(pair) {
                    Ok(p) if (p as usize) < self.pairs.all.len() => p,
                    _ => {
                        return Err(w.error(
                            "a bid's channel and url",
                            &format!("pair {pair} of {}", self.pairs.all.len()),
                        ))
                    }
                };
                let extra = w.str("a bid's extra")?.to_string().into();
                top.push(TopBid {
                    ts,
                    bidder,
                    price,
                    date_time,
                    extra,
                    pair,
                });
            }
        }
        w.end()
    }
}

/// One q20 result: a bid with the auction it is on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q20 {
    /// The auction (the bid's `auction`, the auction's `id`).
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The bid's price.
    pub price: u64,
    /// The bid's channel.
    pub channel: Text,
    /// The bid's url.
    pub url: Text,
    /// The bid's time.
    pub bid_date_time: i64,
    /// The bid's padding.
    pub bid_extra: Text,
    /// The auction's item name.
    pub item_name: Text,
    /// The auction's item description.
    pub description: Text,
    /// The auction's opening price.
    pub initial_bid: u64,
    /// The auction's reserve price.
    pub reserve: u64,
    /// When the auction opened.
    pub auction_date_time: i64,
    /// When it closes.
    pub expires: i64,
    /// The seller.
    pub seller: u64,
    /// The auction's category (always 10).
    pub category: u64,
    /// The auction's padding.
    pub auction_extra: Text,
}

/// q20, expand bid with auction: every bid on an auction of category 10, with every field of
/// the bid and of the auction.
///
/// ```sql
/// SELECT auction, bidder, price, channel, url, B.dateTime, B.extra,
///     itemName, description, initialBid, reserve, A.dateTime, expires, seller, category, A.extra
/// FROM bid AS B INNER JOIN auction AS A on B.auction = A.id
/// WHERE A.category = 10;
/// ```
///
/// An unwindowed join, as Flink's regular join: a bid and an auction with its id meet
/// whichever arrives first, whatever their times (nothing is late, and a bid counts whether or
/// not it was made while the auction was open, unlike q9). Its rows are only ever inserted,
/// each once both sides are there, so it is a symmetric hash join ([`ExpandBids`]) rather than
/// a differential join: an update costs a hash lookup, and no arrangement is merged. Its
/// changelog is the same as the updating join's (inserts only), each row stamped with the
/// newer of its bid's and its auction's event times (so the same whatever order they came
/// in, as exactly-once sinks need).
///
/// Only category-10 auctions are kept, but every bid is (an auction with its id may come
/// later, and the join, like Flink's, does not assume that ids are unique), so the state grows
/// with the bids, as Flink's does: 64 bytes a bid (its node and [`KeptBid`], whose channel and
/// url are an index into the distinct pairs), plus whatever the bid's `extra` owns. The
/// operator's state is checkpointed, and a checkpoint writes all of it (Flink keeps such state
/// in RocksDB, whose incremental checkpoints write only what changed).
pub fn q20<'s>(events: &Stream<'s, Event>) -> Result<Stream<'s, Change<Q20>>> {
    let auctions = auctions(events)
        .filter(|a| a.category == 10)
        .key_by(|a| a.id)
        .map_values(|a| a);
    let bids = bids(events).key_by(|b| b.auction).map_values(|b| b);
    Ok(auctions
        .connect(&bids)
        .stateful("expand-bids", false, ExpandBids::default())?
        .0)
}

/// q20's operator (see [`q20`]): the category-10 auctions and every bid, by auction id, each
/// with its event time. A bid is kept as a [`KeptBid`] (64 bytes with its node, against 120
/// for the whole [`Bid`]): q20's state is mostly bids, and on a machine that provides memory
/// on first touch its growth is what q20's latency pays for.
///
/// Incremental checkpoints: its state only grows (nodes and pairs are appended; only the
/// lists' heads change), so its changes are the nodes and pairs added since the mark, and the
/// nodes' keys (restoring them moves the heads).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ExpandBids {
    auctions: Lists<Auction>,
    /// Each bid with its channel and url as an index into `channel_urls`.
    bids: Lists<KeptBid>,
    channel_urls: ChannelUrls,
    /// Once marked: the auctions, bids and pairs there were at the mark.
    #[serde(skip)]
    marked: Option<(u32, u32, usize)>,
}

/// What [`Lists`] keeps, as its changes write it ([`runnel_engine::wire`]).
trait WireItem: Sized {
    /// Writes the item of a node whose event time is `ts`.
    fn put(&self, ts: i64, out: &mut Vec<u8>);
    /// Reads what [`WireItem::put`] wrote for a node whose event time is `ts`.
    fn get(ts: i64, w: &mut Wire<'_>) -> Result<Self>;
}

/// A kept bid as LEB128 varints (ids and prices far below 2^64 take 2-4 bytes instead of
/// 8) with its `date_time` as the difference from the node's event time (its own, so 0 and
/// one byte), then its padding: about 10 bytes and the padding instead of 24 and the padding.
impl WireItem for KeptBid {
    fn put(&self, ts: i64, out: &mut Vec<u8>) {
        out.reserve(31 + self.extra.len());
        out.put_var_u64(self.bidder);
        out.put_var_u64(self.price);
        out.put_var_i64(self.date_time.wrapping_sub(ts));
        out.put_str(&self.extra);
    }

    fn get(ts: i64, w: &mut Wire<'_>) -> Result<Self> {
        Ok(KeptBid {
            bidder: w.var_u64("a bid's bidder")?,
            price: w.var_u64("a bid's price")?,
            date_time: ts.wrapping_add(w.var_i64("a bid's date_time")?),
            extra: w.str("a bid's extra")?.to_string().into(),
        })
    }
}

/// An auction whole ([`Auction::put_wire`]): q20 keeps one for every 77 bids.
impl WireItem for Auction {
    fn put(&self, _ts: i64, out: &mut Vec<u8>) {
        self.put_wire(out);
    }

    fn get(_ts: i64, w: &mut Wire<'_>) -> Result<Self> {
        Auction::get_wire(w)
    }
}

/// A bid as q20 keeps it: its auction is its key in [`Lists`], its channel and url the
/// node's `aux`, an index into [`ChannelUrls`].
#[derive(Debug, Serialize, Deserialize)]
struct KeptBid {
    bidder: u64,
    price: u64,
    date_time: i64,
    extra: Text,
}

/// The distinct `(channel, url)` pairs of the bids (a few thousand in Nexmark: one url per
/// channel), each stored once.
#[derive(Debug, Default)]
struct ChannelUrls {
    ids: HashMap<(Text, Text), u32, BuildHasherDefault<FxHasher>>,
    all: Vec<(Text, Text)>,
}

/// Past this many distinct pairs, new ones are stored without looking for them again (input
/// whose urls are all different costs a slot per bid, not a hash map that grows with it).
const CHANNEL_URLS_DEDUP: usize = 1 << 20;

impl ChannelUrls {
    /// The index of `pair`, stored if it is new.
    fn id(&mut self, pair: (Text, Text)) -> u32 {
        if let Some(&id) = self.ids.get(&pair) {
            return id;
        }
        let id = u32::try_from(self.all.len()).expect("fewer than 2^32 channels and urls");
        if self.all.len() < CHANNEL_URLS_DEDUP {
            self.ids.insert(pair.clone(), id);
        }
        self.all.push(pair);
        id
    }

    fn from_all(all: Vec<(Text, Text)>) -> Self {
        let mut ids = HashMap::default();
        for (i, pair) in all.iter().enumerate().take(CHANNEL_URLS_DEDUP) {
            ids.entry(pair.clone()).or_insert(i as u32);
        }
        ChannelUrls { ids, all }
    }

    /// Adds `pair` at the end (as [`ChannelUrls::from_all`] reads it: restoring changes).
    fn push(&mut self, pair: (Text, Text)) {
        let i = self.all.len();
        if i < CHANNEL_URLS_DEDUP {
            self.ids.entry(pair.clone()).or_insert(i as u32);
        }
        self.all.push(pair);
    }
}

/// A checkpoint keeps the pairs in order (their indices are in the bids).
impl Serialize for ChannelUrls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.all.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ChannelUrls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Vec::<(Text, Text)>::deserialize(d).map(ChannelUrls::from_all)
    }
}

/// Records by key, each with its event time and a `u32` of the caller's (`aux`): chains of
/// nodes in chunks that never move (no per-key vector with its spare capacity and its copies
/// as it grows; q20's state is mostly these nodes).
#[derive(Debug, Serialize, Deserialize)]
struct Lists<T> {
    /// Key -> its newest node, as index + 1.
    heads: StaggeredMap<u64, u32>,
    chunks: Vec<Vec<Node<T>>>,
    len: u32,
    /// Once marked: the keys of the nodes added since the mark or the changes written.
    #[serde(skip)]
    added: Option<Vec<u64>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Node<T> {
    ts: i64,
    /// The key's next older node, as index + 1 (0: none).
    next: u32,
    /// The caller's (it fills the space `next` leaves before an 8-byte aligned `item`).
    aux: u32,
    item: T,
}

/// Nodes per chunk of [`Lists`].
const CHUNK: usize = 1 << 15;

// A kept bid's node is 64 bytes (the whole `Bid`'s was 120).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Node<KeptBid>>() == 64);

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Lists {
            heads: StaggeredMap::default(),
            chunks: Vec::new(),
            len: 0,
            added: None,
        }
    }
}

impl<T> Lists<T> {
    fn push(&mut self, key: u64, ts: i64, aux: u32, item: T) {
        let head = self.heads.entry(key).or_default();
        let node = Node {
            ts,
            next: *head,
            aux,
            item,
        };
        *head = self
            .len
            .checked_add(1)
            .expect("fewer than 2^32 records per worker");
        self.push_node(node);
        if let Some(added) = &mut self.added {
            added.push(key);
        }
    }

    /// Tracks the keys of the nodes added from here on (anew).
    fn mark(&mut self) {
        self.added.get_or_insert_with(Vec::new).clear();
    }

    /// Adds `node` at the end (its `next` and the heads are the caller's).
    fn push_node(&mut self, node: Node<T>) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(node),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(node);
                self.chunks.push(c);
            }
        }
        self.len = self
            .len
            .checked_add(1)
            .expect("fewer than 2^32 records per worker");
    }

    /// Writes the nodes added after the first `len` (the length at the mark) with their keys:
    /// `len` (u32), their count, then for each its key (a LEB128 varint), its `ts` less the
    /// one before it (the first's less 0; zigzag varint: in-order times take a byte), its
    /// `aux` (varint) and its item. Not `next`: a node's is its key's newest node at the time,
    /// as applying them in order rebuilds it.
    fn put_changes_since(&self, len: u32, out: &mut Vec<u8>) -> Result<()>
    where
        T: WireItem,
    {
        let keys = self.added.as_deref().unwrap_or_default();
        if keys.len() != (self.len - len) as usize {
            return Err(runnel_engine::Error::Runtime(format!(
                "q20 has {} records added since its mark and the keys of {}",
                self.len - len,
                keys.len()
            )));
        }
        out.put_u32(len);
        out.put_len(keys.len());
        let mut ts = 0i64;
        for (i, key) in (len as usize..self.len as usize).zip(keys) {
            let node = &self.chunks[i / CHUNK][i % CHUNK];
            out.put_var_u64(*key);
            out.put_var_i64(node.ts.wrapping_sub(ts));
            ts = node.ts;
            out.put_var_u64(u64::from(node.aux));
            node.item.put(node.ts, out);
        }
        Ok(())
    }

    /// Applies what [`Lists::put_changes_since`] wrote.
    fn apply(&mut self, w: &mut Wire<'_>) -> Result<()>
    where
        T: WireItem,
    {
        let bad = |what: String| {
            Err(runnel_engine::Error::Runtime(format!(
                "q20's changes {what}"
            )))
        };
        let len = w.u32("the records at the mark")?;
        if len != self.len {
            return bad(format!(
                "are for lists of {len} records, not of {}",
                self.len
            ));
        }
        let mut ts = 0i64;
        for _ in 0..w.len("the number of records added")? {
            let key = w.var_u64("a record's key")?;
            ts = ts.wrapping_add(w.var_i64("a record's event time")?);
            let aux = w.var_u64("a record's aux")?;
            let Ok(aux) = u32::try_from(aux) else {
                return Err(w.error("a record's aux", &format!("{aux} is past 2^32")));
            };
            let item = T::get(ts, w)?;
            let head = self.heads.entry(key).or_default();
            let node = Node {
                ts,
                next: *head,
                aux,
                item,
            };
            *head = self.len + 1;
            self.push_node(node);
        }
        Ok(())
    }

    /// The records of `key` with their times and `aux`, newest first.
    fn get(&self, key: u64) -> impl Iterator<Item = (i64, u32, &T)> {
        let mut at = self.heads.get(&key).copied().unwrap_or(0);
        std::iter::from_fn(move || {
            let i = at.checked_sub(1)? as usize;
            let node = &self.chunks[i / CHUNK][i % CHUNK];
            at = node.next;
            Some((node.ts, node.aux, &node.item))
        })
    }
}

type Q20In = (u64, Either<Auction, Bid>);

/// The row of the bid `b` on auction `id`, with its `(channel, url)`, and the auction `a`.
fn q20_row(id: u64, b: &KeptBid, (channel, url): &(Text, Text), a: &Auction) -> Q20 {
    Q20 {
        auction: id,
        bidder: b.bidder,
        price: b.price,
        channel: channel.clone(),
        url: url.clone(),
        bid_date_time: b.date_time,
        bid_extra: b.extra.clone(),
        item_name: a.item_name.clone(),
        description: a.description.clone(),
        initial_bid: a.initial_bid,
        reserve: a.reserve,
        auction_date_time: a.date_time,
        expires: a.expires,
        seller: a.seller,
        category: a.category,
        auction_extra: a.extra.clone(),
    }
}

impl EpochLogic<Q20In, Change<Q20>> for ExpandBids {
    fn on_record(
        &mut self,
        r: runnel_engine::Event<Q20In>,
        _wm: Watermark,
        out: &mut Emitter<Q20In, Change<Q20>>,
    ) {
        let ts = r.ts;
        let (id, side) = r.data;
        match side {
            Either::Left(auction) => {
                for (at, cu, b) in self.bids.get(id) {
                    let pair = &self.channel_urls.all[cu as usize];
                    out.emit(runnel_engine::Event::new(
                        ts.max(at),
                        Change::Insert(q20_row(id, b, pair, &auction)),
                    ));
                }
                self.auctions.push(id, ts, 0, auction);
            }
            Either::Right(bid) => {
                let Bid {
                    auction: _,
                    bidder,
                    price,
                    channel,
                    url,
                    date_time,
                    extra,
                } = bid;
                let cu = self.channel_urls.id((channel, url));
                let kept = KeptBid {
                    bidder,
                    price,
                    date_time,
                    extra,
                };
                let pair = &self.channel_urls.all[cu as usize];
                for (at, _, a) in self.auctions.get(id) {
                    out.emit(runnel_engine::Event::new(
                        ts.max(at),
                        Change::Insert(q20_row(id, &kept, pair, a)),
                    ));
                }
                self.bids.push(id, ts, cu, kept);
            }
        }
    }

    fn on_epoch_end(&mut self, _wm: Watermark, _out: &mut Emitter<Q20In, Change<Q20>>) {}

    fn snapshot(&self) -> Result<Vec<u8>> {
        runnel_engine::recovery::encode(self)
    }

    fn snapshot_into(&self, out: &mut Vec<u8>) -> Result<()> {
        runnel_engine::recovery::encode_into(out, self)
    }

    fn snapshot_to(&self, out: &mut dyn std::io::Write) -> Result<()> {
        runnel_engine::recovery::encode_to(out, self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        *self = runnel_engine::recovery::decode(state)?;
        Ok(())
    }

    fn state_kind(&self) -> String {
        "runnel.nexmark.q20/expand-bids.v7".to_string()
    }

    fn tracks_changes(&self) -> bool {
        true
    }

    fn state_size_hint(&self) -> Option<u64> {
        Some(
            u64::from(self.auctions.len) * std::mem::size_of::<Node<Auction>>() as u64
                + u64::from(self.bids.len) * std::mem::size_of::<Node<KeptBid>>() as u64,
        )
    }

    fn mark_snapshot(&mut self) {
        self.marked = Some((
            self.auctions.len,
            self.bids.len,
            self.channel_urls.all.len(),
        ));
        self.auctions.mark();
        self.bids.mark();
    }

    fn snapshot_changes_into(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let Some((auctions, bids, pairs)) = self.marked else {
            return Err(runnel_engine::Error::Runtime(
                "q20's changes were asked for before its state was marked".into(),
            ));
        };
        // The auctions' changes, the bids', the pairs at the mark (u64), and the pairs added
        // since (a count, then each channel and url).
        self.auctions.put_changes_since(auctions, out)?;
        self.bids.put_changes_since(bids, out)?;
        out.put_u64(pairs as u64);
        let added = &self.channel_urls.all[pairs..];
        out.put_len(added.len());
        for (channel, url) in added {
            out.put_str(channel);
            out.put_str(url);
        }
        self.mark_snapshot();
        Ok(())
    }

    fn restore_changes(&mut self, changes: &[u8]) -> Result<()> {
        let mut w = Wire::new("q20's changes", changes);
        self.auctions.apply(&mut w)?;
        let bids_before = self.bids.len;
        self.bids.apply(&mut w)?;
        let pairs = w.u64("the pairs at the mark")?;
        if pairs != self.channel_urls.all.len() as u64 {
            return Err(runnel_engine::Error::Runtime(format!(
                "q20's changes are for a state of {pairs} channel and url pairs, not of {}",
                self.channel_urls.all.len()
            )));
        }
        for _ in 0..w.len("the number of pairs added")? {
            let channel = w.str("a channel")?.to_string();
            let url = w.str("a url")?.to_string();
            self.channel_urls.push((channel.into(), url.into()));
        }
        // Each added bid's channel and url must be one of the pairs.
        for i in bids_before as usize..self.bids.len as usize {
            let aux = self.bids.chunks[i / CHUNK][i % CHUNK].aux;
            if aux as usize >= self.channel_urls.all.len() {
                return Err(runnel_engine::Error::Runtime(format!(
                    "q20's changes give bid {i} the channel and url pair {aux} of {}",
                    self.channel_urls.all.len()
                )));
            }
        }
        w.end()
    }
}

/// One q21 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q21 {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// The channel.
    pub channel: Text,
    /// `0` to `3` for Apple, Google, Facebook and Baidu, else the url's `channel_id` parameter.
    pub channel_id: Text,
}

/// The value of the url's `channel_id` parameter (Flink's `REGEXP_EXTRACT(url,
/// '(&|^)channel_id=([^&]*)', 2)`), if it has one.
fn channel_id(url: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(i) = url[from..].find("channel_id=") {
        let at = from + i;
        if at == 0 || url.as_bytes()[at - 1] == b'&' {
            let rest = &url[at + "channel_id=".len()..];
            return Some(rest.split('&').next().unwrap_or(""));
        }
        from = at + 1;
    }
    None
}

/// q21, add a channel id: bids from a known channel, or whose url names one, with that id.
pub fn q21<'s>(events: &Stream<'s, Event>) -> Stream<'s, Q21> {
    bids(events).flat_map(|b| {
        let known = match b.channel.to_ascii_lowercase().as_str() {
            "apple" => Some("0"),
            "google" => Some("1"),
            "facebook" => Some("2"),
            "baidu" => Some("3"),
            _ => None,
        };
        let id: Text = match (known, channel_id(&b.url)) {
            (Some(k), _) => Text::Borrowed(k),
            (None, Some(id)) => Text::Owned(id.to_string()),
            (None, None) => return None,
        };
        Some(Q21 {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            channel: b.channel,
            channel_id: id,
        })
    })
}

/// One q22 result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Q22 {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// The channel.
    pub channel: Text,
    /// The url's first directory (Flink's `SPLIT_INDEX(url, '/', 3)`), empty if none.
    pub dir1: String,
    /// The second (`SPLIT_INDEX(url, '/', 4)`).
    pub dir2: String,
    /// The third (`SPLIT_INDEX(url, '/', 5)`).
    pub dir3: String,
}

/// q22, get URL directories: every bid with the first three directories of its url.
pub fn q22<'s>(events: &Stream<'s, Event>) -> Stream<'s, Q22> {
    bids(events).map(|b| {
        let mut parts = b.url.split('/').skip(3);
        let mut next = || parts.next().unwrap_or("").to_string();
        let (dir1, dir2, dir3) = (next(), next(), next());
        Q22 {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            channel: b.channel,
            dir1,
            dir2,
            dir3,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use runnel_engine::testing::run_epoch;

    /// A bid of the incremental-checkpoint tests, from small numbers (so that pairs repeat,
    /// rows are replaced and top tens change), spread over each field's range as the
    /// changes' varints see it: ids and prices of 1 to 10 bytes, and a `date_time` that is
    /// the event time ([`bid_time`]) or far from it, either way, up to `i64::MIN` and
    /// `i64::MAX`.
    fn small_bid(auction: u8, bidder: u8, price: u16, channel: u8, time: u8) -> Bid {
        let ts = bid_time(time);
        Bid {
            auction: wide_id(auction),
            bidder: wide_id(bidder),
            price: u64::from(price) * 70_001,
            channel: format!("c{channel}").into(),
            url: format!("u{channel}").into(),
            date_time: match time % 4 {
                0 => ts,
                1 => ts - 5_000_000_000,
                2 => i64::MIN + i64::from(time),
                _ => i64::MAX - i64::from(time),
            },
            extra: format!("x{}", price % 3).into(),
        }
    }

    /// The event time of a test bid or auction at `time`: today's epoch milliseconds, so the
    /// first of a record of changes takes 6 bytes and the next ones their differences.
    fn bid_time(time: u8) -> i64 {
        1_700_000_000_000 + 1_000 * i64::from(time)
    }

    /// A distinct id for each small number: 0, 1 byte, 4 bytes or the largest.
    fn wide_id(n: u8) -> u64 {
        match n {
            0..=3 => u64::from(n),
            5 => u64::MAX,
            _ => u64::from(n) * 1_000_003,
        }
    }

    /// Epochs of `(auction, bidder, price, channel, time)`.
    fn epochs() -> impl Strategy<Value = Vec<Vec<(u8, u8, u16, u8, u8)>>> {
        prop::collection::vec(
            prop::collection::vec((0u8..12, 0u8..6, 0u16..200, 0u8..5, 0u8..40), 0..25),
            1..12,
        )
    }

    /// Runs `epochs` through a logic, putting its state into a checkpoint after each: whole
    /// after the first and every `whole_every`-th, otherwise, after every `changes_every`-th,
    /// as its changes since the one before (which then span several epochs, as the engine's
    /// may when epochs end together). After each, a logic restored from the chain (the last whole state, then the
    /// changes after it, as the engine restores) must hold what the running one holds, in
    /// the form `canon` (written here, not by the logic); and from there both must emit the
    /// same for the remaining epochs (sorted, as an epoch's order is not the contract).
    fn check_chain<I: Clone, O: std::fmt::Debug, L: EpochLogic<I, O> + Default, C>(
        epochs: &[Vec<runnel_engine::Event<I>>],
        whole_every: usize,
        changes_every: usize,
        canon: impl Fn(&L) -> C,
    ) -> std::result::Result<(), TestCaseError>
    where
        C: PartialEq + std::fmt::Debug,
    {
        let emitted = |out: Vec<runnel_engine::Event<O>>| {
            let mut v: Vec<String> = out.iter().map(|e| format!("{e:?}")).collect();
            v.sort();
            v
        };
        let mut live = L::default();
        let mut chain: Vec<Vec<u8>> = Vec::new();
        for (n, epoch) in epochs.iter().enumerate() {
            run_epoch(&mut live, epoch.iter().cloned(), 0);
            let mut part = Vec::new();
            if n % whole_every == 0 {
                live.snapshot_to(&mut part).unwrap();
                live.mark_snapshot();
                chain.clear();
            } else if n % changes_every == 0 {
                live.snapshot_changes_into(&mut part).unwrap();
            } else {
                continue;
            }
            chain.push(part);
            let mut restored = L::default();
            restored.restore(&chain[0]).unwrap();
            for changes in &chain[1..] {
                restored.restore_changes(changes).unwrap();
            }
            prop_assert_eq!(canon(&restored), canon(&live), "after epoch {}", n);
            if n == epochs.len() / 2 {
                // Both go on from here (the live one to the end below).
                restored.mark_snapshot();
                let mut twin = L::default();
                twin.restore(&live.snapshot().unwrap()).unwrap();
                for later in &epochs[n + 1..] {
                    let a = emitted(run_epoch(&mut restored, later.iter().cloned(), 0));
                    let b = emitted(run_epoch(&mut twin, later.iter().cloned(), 0));
                    prop_assert_eq!(a, b);
                }
                prop_assert_eq!(canon(&restored), canon(&twin));
            }
        }
        Ok(())
    }

    fn bid_events(epochs: &[Vec<(u8, u8, u16, u8, u8)>]) -> Vec<Vec<runnel_engine::Event<Bid>>> {
        epochs
            .iter()
            .map(|e| {
                e.iter()
                    .map(|&(a, b, p, c, t)| {
                        runnel_engine::Event::new(bid_time(t), small_bid(a, b, p, c, t))
                    })
                    .collect()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// q18's rows, restored from a whole state and its changes, are the live rows: each
        /// pair with its bid, keyed by the bid's own bidder and auction.
        #[test]
        fn q18_changes_restore_the_rows(epochs in epochs(), whole_every in 1usize..5, changes_every in 1usize..4) {
            let events: Vec<Vec<runnel_engine::Event<Q18In>>> = bid_events(&epochs)
                .into_iter()
                .map(|e| {
                    e.into_iter()
                        .map(|r| runnel_engine::Event::new(r.ts, ((r.data.bidder, r.data.auction), r.data)))
                        .collect()
                })
                .collect();
            check_chain(&events, whole_every, changes_every, |l: &LastBids| {
                let mut rows: Vec<((u64, u64), Bid)> = l
                    .rows
                    .iter()
                    .map(|(k, &i)| (*k, l.bids[i / ROWS_CHUNK][i % ROWS_CHUNK].clone()))
                    .collect();
                rows.sort();
                (rows, l.bids.iter().map(Vec::len).sum::<usize>())
            })?;
        }

        /// q19's top tens, restored from a whole state and its changes, are the live ones,
        /// bid by bid with their channels and urls.
        #[test]
        fn q19_changes_restore_the_top_tens(epochs in epochs(), whole_every in 1usize..5, changes_every in 1usize..4) {
            let events: Vec<Vec<runnel_engine::Event<Q19In>>> = bid_events(&epochs)
                .into_iter()
                .map(|e| e.into_iter().map(|r| runnel_engine::Event::new(r.ts, (r.data.auction, r.data))).collect())
                .collect();
            check_chain(&events, whole_every, changes_every, |l: &TopBids| {
                let mut tops: Vec<(u64, Vec<(i64, u64, u64, i64, String, (Text, Text))>)> = l
                    .tops
                    .iter()
                    .map(|(a, top)| {
                        let top = top
                            .iter()
                            .map(|k| {
                                let pair = l.pairs.all[k.pair as usize].clone();
                                (k.ts, k.bidder, k.price, k.date_time, k.extra.to_string(), pair)
                            })
                            .collect();
                        (*a, top)
                    })
                    .collect();
                tops.sort();
                (tops, l.pairs.all.clone())
            })?;
        }

        /// q20's lists, restored from a whole state and its changes, are the live ones: each
        /// auction's bids and auctions, newest first, with their times and pairs.
        #[test]
        fn q20_changes_restore_the_lists(
            epochs in epochs(),
            opened in prop::collection::vec((0u8..12, 0u8..12), 1..12),
            whole_every in 1usize..5, changes_every in 1usize..4,
        ) {
            // Bids, and in each epoch the auction of `opened` (its id, and which epoch).
            let mut events: Vec<Vec<runnel_engine::Event<Q20In>>> = bid_events(&epochs)
                .into_iter()
                .map(|e| {
                    e.into_iter()
                        .map(|r| runnel_engine::Event::new(r.ts, (r.data.auction, Either::Right(r.data))))
                        .collect()
                })
                .collect();
            for &(id, at) in &opened {
                let n = at as usize % events.len();
                let a = Auction {
                    id: wide_id(id),
                    item_name: format!("item{id}").into(),
                    description: "".into(),
                    initial_bid: 1,
                    reserve: 2,
                    date_time: i64::from(at),
                    expires: 100,
                    seller: 7,
                    category: 10,
                    extra: "".into(),
                };
                events[n].push(runnel_engine::Event::new(bid_time(at), (a.id, Either::Left(a))));
            }
            check_chain(&events, whole_every, changes_every, |l: &ExpandBids| {
                let mut keys: Vec<u64> = l.bids.heads.iter().map(|(k, _)| *k).collect();
                keys.extend(l.auctions.heads.iter().map(|(k, _)| *k));
                keys.sort();
                keys.dedup();
                keys.into_iter()
                    .map(|k| {
                        let bids: Vec<(i64, (Text, Text), u64, u64, i64)> = l
                            .bids
                            .get(k)
                            .map(|(ts, cu, b)| {
                                let pair = l.channel_urls.all[cu as usize].clone();
                                (ts, pair, b.bidder, b.price, b.date_time)
                            })
                            .collect();
                        let auctions: Vec<(i64, Auction)> =
                            l.auctions.get(k).map(|(ts, _, a)| (ts, a.clone())).collect();
                        (k, bids, auctions)
                    })
                    .collect::<Vec<_>>()
            })?;
        }
    }

    /// q19's two comparisons (a bid against a kept one, two kept ones) agree with a sort key
    /// written out from the documented order, on bids that tie on every prefix of it.
    #[test]
    fn q19_orders_ties_field_by_field() {
        let mut pairs = ChannelUrls::default();
        let mut bids = Vec::new();
        for v in 0..96u64 {
            let bid = Bid {
                auction: 1,
                bidder: v % 2,
                price: (v / 2) % 2,
                channel: format!("c{}", (v / 4) % 2).into(),
                url: format!("u{}", (v / 8) % 2).into(),
                date_time: ((v / 16) % 2) as i64,
                extra: format!("e{}", (v / 32) % 3).into(),
            };
            // The event time ties too, except between some otherwise equal bids.
            let ts = (v % 5 == 0) as i64;
            let kept = TopBid {
                ts,
                bidder: bid.bidder,
                price: bid.price,
                date_time: bid.date_time,
                extra: bid.extra.clone(),
                pair: pairs.id((bid.channel.clone(), bid.url.clone())),
            };
            bids.push((ts, bid, kept));
        }
        let key = |ts: i64, b: &Bid| {
            (
                std::cmp::Reverse(b.price),
                b.date_time,
                b.bidder,
                b.channel.to_string(),
                b.url.to_string(),
                b.extra.to_string(),
                ts,
            )
        };
        for (ta, a, ka) in &bids {
            for (tb, b, kb) in &bids {
                let want = key(*ta, a).cmp(&key(*tb, b));
                assert_eq!(order_bid(&pairs, *ta, a, kb), want, "{a:?} {b:?}");
                assert_eq!(order_kept(&pairs, ka, kb), want, "{a:?} {b:?}");
            }
        }
    }

    /// Every index gives back its pair, repeats get the first index while pairs are looked
    /// for, and past the limit every pair gets a new one; a checkpoint round trip keeps the
    /// indices.
    #[test]
    fn channel_urls_give_each_pair_back() {
        let pair = |i: usize| -> (Text, Text) { (format!("c{i}").into(), format!("u{i}").into()) };
        let mut cu = ChannelUrls::default();
        let mut ids = Vec::new();
        for i in 0..CHANNEL_URLS_DEDUP + 10 {
            ids.push(cu.id(pair(i)));
        }
        // Repeats of a pair below the limit, and of one past it.
        let again = cu.id(pair(7));
        let past = cu.id(pair(CHANNEL_URLS_DEDUP + 3));
        assert_eq!(again, ids[7]);
        assert_ne!(past, ids[CHANNEL_URLS_DEDUP + 3]);
        let distinct: std::collections::HashSet<u32> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len());
        let back: ChannelUrls =
            runnel_engine::recovery::decode(&runnel_engine::recovery::encode(&cu).unwrap())
                .unwrap();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(cu.all[id as usize], pair(i));
            assert_eq!(back.all[id as usize], pair(i));
        }
        assert_eq!(back.all[past as usize], pair(CHANNEL_URLS_DEDUP + 3));
        let mut back = back;
        assert_eq!(back.id(pair(7)), ids[7]);
        assert_eq!(back.ids.len(), CHANNEL_URLS_DEDUP);
    }
}
