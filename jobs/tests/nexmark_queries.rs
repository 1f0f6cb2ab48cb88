//! The Nexmark queries on a small generated event set, each checked against a brute-force
//! computation written here, separately, over a plain `Vec` of the same events.
//!
//! The queries run on 2 workers over 5 generator partitions (so the split is uneven). Updating
//! queries (q3, q4, q6, q9, q18, q19, q20) are checked by applying their changelog in order (no
//! row may go below zero) and comparing the final table. q10's files are read back: each bid
//! once, in the directory of its day and minute. q12 windows on the wall clock, so only what
//! does not depend on timing is checked: the windows' shape and the total per bidder.
//!
//! The updating queries, and q10's partitioned files, also run as `runnel` jobs on a cluster of
//! two processes (reading the same events from files), checked against the same brute-force
//! answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use runnel_connectors::nexmark::{Auction, Bid, Event, NexmarkConfig, NexmarkGenerator, Person};
use runnel_engine::checkpoint::PartInfo;
use runnel_engine::recovery::STREAM_STATE_ABOVE;
use runnel_engine::testing::Collector;
use runnel_engine::{run, Change, Data, Job, JobConfig, RunOptions, SourceOptions, Stream, Table};
use runnel_jobs::nexmark::{
    self, Q1, Q10, Q11, Q12, Q13, Q14, Q15, Q16, Q17, Q19, Q2, Q20, Q21, Q22, Q3, Q4, Q5, Q6, Q7,
    Q8, Q9,
};

/// 60,000 events at 1,000 per second of event time: a minute, six 10 s windows, from
/// 07:59:30 UTC (so q14 sees two parts of the day).
fn config() -> NexmarkConfig {
    NexmarkConfig::new(60_000)
        .event_rate(1000)
        .partitions(5)
        .seed(7)
        .base_time_ms(1_436_918_400_000 + (7 * 3600 + 59 * 60 + 30) * 1000)
}

fn all_events() -> Vec<Event> {
    config().iter().collect()
}

fn bids(events: &[Event]) -> Vec<Bid> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Bid(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn auctions(events: &[Event]) -> Vec<Auction> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((**a).clone()),
            _ => None,
        })
        .collect()
}

fn persons(events: &[Event]) -> Vec<Person> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) => Some((**p).clone()),
            _ => None,
        })
        .collect()
}

/// The events of [`config`] moved to start at 23:59:30 UTC, so that they span two days.
fn midnight_config() -> NexmarkConfig {
    config().base_time_ms(1_436_918_400_000 + 86_400_000 - 30_000)
}

/// Runs a stream query on the generator and returns its results, sorted.
fn run_stream<O: Data + Ord>(
    query: for<'s> fn(&Stream<'s, Event>) -> runnel_engine::Result<Stream<'s, O>>,
) -> Vec<O> {
    run_stream_on(config(), query)
}

/// [`run_stream`] on the events of `config`.
fn run_stream_on<O: Data + Ord>(
    config: NexmarkConfig,
    query: for<'s> fn(&Stream<'s, Event>) -> runnel_engine::Result<Stream<'s, O>>,
) -> Vec<O> {
    collect_stream(config, RunOptions::workers(2), None, query).sorted_data()
}

/// Runs a stream query on the generator and returns its results in the order the sink got them.
/// The run has many epochs, so that an updating query's rows change: the generator is paced to
/// 300,000 events per second of wall time (event times stay those of [`config`]), so the run
/// lasts about 0.2 s, and epochs are cut every millisecond, between reads of at most 100
/// events.
fn run_stream_in_order<O: Data + Ord>(
    query: for<'s> fn(&Stream<'s, Event>) -> runnel_engine::Result<Stream<'s, O>>,
) -> Vec<O> {
    let options = RunOptions {
        epoch_interval: std::time::Duration::from_millis(1),
        ..RunOptions::workers(2)
    };
    collect_stream(config().rate(300_000), options, Some(100), query).data()
}

/// Runs a stream query on the events of `config`, read at most `batch` at a time if given, and
/// returns what its sink collected.
fn collect_stream<O: Data + Ord>(
    config: NexmarkConfig,
    options: RunOptions,
    batch: Option<usize>,
    query: for<'s> fn(&Stream<'s, Event>) -> runnel_engine::Result<Stream<'s, O>>,
) -> Collector<O> {
    let out = Collector::<O>::new();
    let sink = out.clone();
    let job = Job::new("q", "a query", move |flow| {
        let source = match batch {
            Some(n) => SourceOptions::new().batch_size(n),
            None => SourceOptions::new(),
        };
        let events = flow.source("events", NexmarkGenerator::new(config), source)?;
        query(&events)?.sink("out", sink.sink())
    });
    let summary = run(&job, options).expect("the query runs");
    assert_eq!(summary.late, 0, "in-order input has no late records");
    out
}

/// Runs a table query on the generator and returns its changelog, in the order the sink got it.
fn run_changelog<O: Data + Ord>(
    query: for<'s> fn(&Stream<'s, Event>) -> runnel_engine::Result<Table<'s, O>>,
) -> Vec<Change<O>> {
    let out = Collector::<Change<O>>::new();
    let sink = out.clone();
    let job = Job::new("q", "a query", move |flow| {
        let events = flow.source(
            "events",
            NexmarkGenerator::new(config()),
            SourceOptions::new(),
        )?;
        query(&events)?.sink("out", sink.sink())
    });
    run(&job, RunOptions::workers(2)).expect("the query runs");
    out.events().into_iter().map(|(_, e)| e.data).collect()
}

/// Runs a table query on the generator and returns its final rows (the changelog applied).
fn run_table<O: Data + Ord>(
    query: for<'s> fn(&Stream<'s, Event>) -> runnel_engine::Result<Table<'s, O>>,
) -> Vec<O> {
    final_rows(run_changelog(query))
}

/// Applies a changelog in order (no row may go below zero) and returns the rows left, sorted.
fn final_rows<O: Data + Ord>(changes: Vec<Change<O>>) -> Vec<O> {
    let mut rows: BTreeMap<O, i64> = BTreeMap::new();
    for change in changes {
        let (row, d) = match change {
            Change::Insert(r) => (r, 1),
            Change::Retract(r) => (r, -1),
        };
        let n = rows.entry(row.clone()).or_default();
        *n += d;
        assert!(*n >= 0, "{row:?} retracted before it was inserted");
    }
    let mut out = Vec::new();
    for (row, n) in rows {
        for _ in 0..n {
            out.push(row.clone());
        }
    }
    out
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The rows of a JSON-lines file a job wrote, sorted.
fn sorted_json_lines<T: serde::de::DeserializeOwned + Ord>(path: &Path) -> Vec<T> {
    sorted(
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<T>(l).unwrap())
            .collect(),
    )
}

#[test]
fn the_generated_set_is_big_enough_to_mean_something() {
    let events = all_events();
    assert_eq!(events.len(), 60_000);
    let span = events.last().unwrap().date_time() - events[0].date_time();
    assert!(span >= 59_000, "{span} ms of event time");
}

#[test]
fn q0_passes_every_bid() {
    let want = sorted(bids(&all_events()));
    assert_eq!(want.len(), 60_000 / 50 * 46);
    assert_eq!(run_stream(|e| Ok(nexmark::q0(e))), want);
}

/// `event_rate` gives an unpaced run event times at that rate: q0's output is the generator's
/// bids at that event-time rate, built here from the generator's config.
#[test]
fn the_event_rate_setting_spaces_an_unpaced_runs_event_times_at_that_rate() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let job = nexmark::jobs()
        .into_iter()
        .find(|j| j.name() == "nexmark-q0")
        .unwrap();
    let events: Vec<Event> = NexmarkConfig::new(5000)
        .seed(7)
        .event_rate(2_000_000)
        .iter()
        .collect();
    let want = sorted(bids(&events));
    let span = want.last().unwrap().date_time - want.first().unwrap().date_time;
    assert!(
        (2..=3).contains(&span),
        "5000 events at 2M/s span {span} ms"
    );
    let config = JobConfig::new()
        .with("events", 5000)
        .with("seed", 7)
        .with("event_rate", 2_000_000)
        .with("sink", format!("file:{}", out_path.display()));
    run(&job, RunOptions::workers(2).config(config)).expect("the job runs");
    assert_eq!(sorted_json_lines::<Bid>(&out_path), want);

    // With a rate too, the job is refused before it runs.
    let config = JobConfig::new()
        .with("events", 10)
        .with("rate", 1000)
        .with("event_rate", 2_000_000);
    let err = run(&job, RunOptions::workers(1).config(config)).unwrap_err();
    assert!(err.to_string().contains("rate or event_rate"), "{err}");
}

#[test]
fn q1_converts_prices() {
    let want = sorted(
        bids(&all_events())
            .into_iter()
            .map(|b| Q1 {
                auction: b.auction,
                bidder: b.bidder,
                price: (b.price as u128 * 908 / 1000) as u64,
                date_time: b.date_time,
                extra: b.extra,
            })
            .collect(),
    );
    assert_eq!(run_stream(|e| Ok(nexmark::q1(e))), want);
}

#[test]
fn q2_selects_auctions_divisible_by_123() {
    let want = sorted(
        bids(&all_events())
            .into_iter()
            .filter(|b| b.auction % 123 == 0)
            .map(|b| Q2 {
                auction: b.auction,
                price: b.price,
            })
            .collect(),
    );
    assert!(!want.is_empty());
    assert_eq!(run_stream(|e| Ok(nexmark::q2(e))), want);
}

/// q3 by brute force: every category-10 auction of a seller from Oregon, Idaho or California,
/// with the seller's name, city and state.
fn q3_reference() -> Vec<Q3> {
    let events = all_events();
    let mut want = Vec::new();
    for p in persons(&events) {
        if !["OR", "ID", "CA"].contains(&p.state.as_ref()) {
            continue;
        }
        for a in auctions(&events) {
            if a.category == 10 && a.seller == p.id {
                want.push(Q3 {
                    name: p.name.clone(),
                    city: p.city.clone(),
                    state: p.state.clone(),
                    id: a.id,
                });
            }
        }
    }
    sorted(want)
}

#[test]
fn q3_joins_local_sellers_with_category_10_auctions() {
    let want = q3_reference();
    assert!(want.len() > 10, "{} rows", want.len());
    assert_eq!(run_table(|e| Ok(nexmark::q3(e))), want);
}

/// Per auction with at least one bid while it was open: (auction, its highest such price).
fn winners(events: &[Event]) -> Vec<(Auction, u64)> {
    let bids = bids(events);
    let mut out = Vec::new();
    for a in auctions(events) {
        let best = bids
            .iter()
            .filter(|b| b.auction == a.id && a.date_time <= b.date_time && b.date_time <= a.expires)
            .map(|b| b.price)
            .max();
        if let Some(p) = best {
            out.push((a, p));
        }
    }
    out
}

/// q4 by brute force: per category, the average of its auctions' winning prices.
fn q4_reference() -> Vec<Q4> {
    let mut per_cat: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (a, p) in winners(&all_events()) {
        per_cat.entry(a.category).or_default().push(p);
    }
    per_cat
        .into_iter()
        .map(|(category, ps)| Q4 {
            category,
            avg_price: (ps.iter().map(|&p| p as u128).sum::<u128>() / ps.len() as u128) as u64,
        })
        .collect()
}

#[test]
fn q4_averages_winning_bids_per_category() {
    let want = q4_reference();
    assert_eq!(want.len(), 5);
    let changes = collect_stream(config(), RunOptions::workers(2), None, nexmark::q4).data();
    assert_eq!(final_rows(changes), want);
    // Many epochs: winners change and auctions close while the averages are kept.
    assert_eq!(final_rows(run_stream_in_order(nexmark::q4)), want);
}

#[test]
fn q5_finds_the_hottest_auctions_per_sliding_window() {
    let bids = bids(&all_events());
    let (lo, hi) = (
        bids.iter().map(|b| b.date_time).min().unwrap(),
        bids.iter().map(|b| b.date_time).max().unwrap(),
    );
    let mut want = Vec::new();
    // Windows [s, s + 10000) for every s that is a multiple of 2000 and holds a bid.
    let mut s = (lo - 9_999).div_euclid(2000) * 2000;
    while s <= hi {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for b in &bids {
            if s <= b.date_time && b.date_time < s + 10_000 {
                *counts.entry(b.auction).or_default() += 1;
            }
        }
        if let Some(&max) = counts.values().max() {
            for (&auction, &n) in &counts {
                if n == max {
                    want.push(Q5 {
                        auction,
                        num: n,
                        start: s,
                        end: s + 10_000,
                    });
                }
            }
        }
        s += 2000;
    }
    let want = sorted(want);
    assert!(want.len() >= 30, "{} rows", want.len());
    assert_eq!(run_stream(nexmark::q5), want);
}

/// q6 by brute force: per seller, the average winning price of its last ten auctions (by
/// expiry) with a winner.
fn q6_reference() -> Vec<Q6> {
    let mut per_seller: BTreeMap<u64, Vec<(i64, u64, u64)>> = BTreeMap::new();
    for (a, p) in winners(&all_events()) {
        per_seller
            .entry(a.seller)
            .or_default()
            .push((a.expires, a.id, p));
    }
    per_seller
        .into_iter()
        .map(|(seller, mut v)| {
            v.sort();
            let last: Vec<u64> = v.iter().rev().take(10).map(|x| x.2).collect();
            Q6 {
                seller,
                avg_price: last.iter().sum::<u64>() / last.len() as u64,
            }
        })
        .collect()
}

#[test]
fn q6_averages_each_sellers_last_ten_auctions() {
    let want = q6_reference();
    assert!(want.len() > 10);
    assert_eq!(run_table(nexmark::q6), want);
    let changes = run_stream_in_order(|e| Ok(nexmark::q6(e)?.changelog()));
    assert_eq!(final_rows(changes), want);
}

#[test]
fn q7_finds_the_highest_bids_per_window() {
    let bids = bids(&all_events());
    let mut per_window: BTreeMap<i64, Vec<&Bid>> = BTreeMap::new();
    for b in &bids {
        per_window
            .entry(b.date_time.div_euclid(10_000))
            .or_default()
            .push(b);
    }
    let mut want = Vec::new();
    for (_, bs) in per_window {
        let max = bs.iter().map(|b| b.price).max().unwrap();
        for b in bs.into_iter().filter(|b| b.price == max) {
            want.push(Q7 {
                auction: b.auction,
                price: b.price,
                bidder: b.bidder,
                date_time: b.date_time,
                extra: b.extra.clone(),
            });
        }
    }
    let want = sorted(want);
    assert!(want.len() >= 6);
    assert_eq!(run_stream(nexmark::q7), want);
}

#[test]
fn q8_finds_people_who_sold_in_the_window_they_joined() {
    let events = all_events();
    let auctions = auctions(&events);
    let mut want = Vec::new();
    for p in persons(&events) {
        let w = p.date_time.div_euclid(10_000);
        if auctions
            .iter()
            .any(|a| a.seller == p.id && a.date_time.div_euclid(10_000) == w)
        {
            want.push(Q8 {
                id: p.id,
                name: p.name.clone(),
                start: w * 10_000,
            });
        }
    }
    let want = sorted(want);
    assert!(want.len() > 10, "{} rows", want.len());
    assert_eq!(run_stream(nexmark::q8), want);
}

/// q9 by brute force: per auction, the highest bid made while it was open, the earliest on a
/// tie.
fn q9_reference(events: &[Event]) -> Vec<Q9> {
    let bids = bids(events);
    let mut want = Vec::new();
    for a in auctions(events) {
        let mut best: Option<&Bid> = None;
        for b in bids
            .iter()
            .filter(|b| b.auction == a.id && a.date_time <= b.date_time && b.date_time <= a.expires)
        {
            let better = match best {
                None => true,
                Some(x) => b.price > x.price || (b.price == x.price && b.date_time < x.date_time),
            };
            if better {
                best = Some(b);
            }
        }
        if let Some(b) = best {
            want.push(Q9 {
                id: a.id,
                seller: a.seller,
                category: a.category,
                reserve: a.reserve,
                expires: a.expires,
                bidder: b.bidder,
                price: b.price,
                bid_time: b.date_time,
            });
        }
    }
    sorted(want)
}

#[test]
fn q9_pairs_each_auction_with_its_winning_bid() {
    let want = q9_reference(&all_events());
    assert!(want.len() > 100);
    // Many epochs, so winners change and auctions close while the run goes on.
    assert_eq!(final_rows(run_stream_in_order(nexmark::q9)), want);
}

/// Runs `query` with checkpoints on the generator, paced so that the run is stopped (after
/// its second checkpoint) midway, resumes it from the latest checkpoint, and returns its
/// changelog file applied (both runs' lines, each once). `stream_above`: see
/// [`runnel_engine::CheckpointOptions::stream_above`]; at 0 every state after the first
/// checkpoint's goes into parts of its own, and the resumed run reads them back.
fn stop_and_resume<O: Data + Ord + serde::de::DeserializeOwned>(
    query: for<'s> fn(&Stream<'s, Event>) -> runnel_engine::Result<Stream<'s, Change<O>>>,
    stream_above: usize,
) -> Vec<O> {
    use runnel_connectors::FileSink;
    use runnel_engine::checkpoint::{CheckpointStore, LocalDirStore};
    use runnel_engine::{CheckpointOptions, Restore};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "q").unwrap());
    let out = dir.path().join("changes.jsonl");
    let path = out.clone();
    // 60,000 events at 100,000 per second of wall time: the first run is stopped midway.
    let job = Job::new("q", "a query with checkpoints", move |flow| {
        let events = flow.source(
            "events",
            NexmarkGenerator::new(config().rate(100_000)),
            SourceOptions::new(),
        )?;
        query(&events)?.sink("out", FileSink::json(&path))
    });
    let options = || RunOptions {
        epoch_interval: Duration::from_millis(10),
        checkpoint: Some(CheckpointOptions {
            store: store.clone(),
            // Every 7 epochs: the input (600 ms, 60 epochs) ends between two checkpoints,
            // so the final one takes changes written for the next, which never comes.
            every: Duration::from_millis(70),
            // All of them: the one the watcher picks is there when the run has stopped, and the
            // first run's counters are checked against every checkpoint it committed.
            keep: 1_000,
            restore: Restore::Latest,
            stream_above,
            incremental: true,
            // Every 2 epochs: between checkpoints (7 epochs apart), so that the changes go
            // into each checkpoint's part in several takes.
            changes_every: Duration::from_millis(20),
        }),
        ..RunOptions::workers(2)
    };
    let first = options();
    let stop = first.stop.clone();
    let watch = store.clone();
    // Parts of their own in a checkpoint: the most any operator of a worker has (a chain of
    // its whole state and the changes after it), named `w<worker>-s<operator>-<checkpoint>`.
    let longest_chain = |info: &runnel_engine::CheckpointInfo| {
        let mut chains = std::collections::BTreeMap::new();
        for p in &info.parts {
            if let Some((chain, _)) = p.name.rsplit_once('-').filter(|_| p.name.contains("-s")) {
                *chains.entry(chain.to_string()).or_insert(0) += 1;
            }
        }
        chains.into_values().max().unwrap_or(0)
    };
    // Stops the run after two checkpoints, and with streamed state once one has changes after
    // a whole state: the one the second run resumes from (the latest, otherwise).
    let watcher = std::thread::spawn(move || {
        let t = Instant::now();
        let chained = loop {
            if let Ok(l) = watch.list() {
                if l.len() >= 2 && stream_above > 0 {
                    break None;
                }
                if let Some(c) = l.iter().rev().find(|c| longest_chain(c) >= 2) {
                    break Some(c.id);
                }
            }
            assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint");
            std::thread::sleep(Duration::from_millis(2));
        };
        stop.store(true, Ordering::SeqCst);
        chained
    });
    let summary = run(&job, first).expect("the first run");
    let chained = watcher.join().unwrap();
    counters_match_the_files(&store, &summary, 0, stream_above == 0);
    let latest = match chained {
        Some(id) => store.get(id).unwrap(),
        None => store.latest().unwrap().expect("a checkpoint"),
    };
    assert!(latest.epoch > 0);
    // Each worker's stateful operators wrote their state into parts of their own, or none did.
    let own = latest
        .parts
        .iter()
        .filter(|p| p.name.contains("-s"))
        .count();
    let expected = if stream_above == 0 {
        own >= 2
    } else {
        own == 0
    };
    assert!(expected, "{own} parts of their own: {latest:?}");

    let mut resume = options();
    let resume_on = resume.checkpoint.as_mut().expect("on");
    if let Some(id) = chained {
        resume_on.restore = Restore::Id(id);
    }
    // The resumed run runs to its end, which clears its checkpoints: on this store it keeps
    // them, so that its final checkpoint can be restored below.
    resume_on.store = Arc::new(KeepsCheckpoints(
        LocalDirStore::new(dir.path().join("state"), "q").unwrap(),
    ));
    let summary = run(&job, resume).expect("the resumed run");
    // Its first checkpoint links the chains' parts of the one it resumed from, not new bytes.
    counters_match_the_files(&store, &summary, latest.id, stream_above == 0);
    assert!(
        0 < summary.events_in && summary.events_in < 60_000,
        "the resumed run reads only what comes after the checkpoint ({})",
        summary.events_in
    );
    assert_eq!(summary.late, 0);
    let written = std::fs::read_to_string(&out).unwrap();
    // The final checkpoint (the input had ended: with a chain, its last part holds the changes
    // since the checkpoint before, most of them written for the next one, which never came)
    // restores, and a run from it has nothing left to read or write.
    let last = store.latest().unwrap().expect("the final checkpoint");
    assert_eq!(last.id, runnel_engine::recovery::FINAL);
    let again = run(&job, options()).expect("a run from the final checkpoint");
    assert_eq!(again.events_in, 0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
    let changes: Vec<Change<O>> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    final_rows(changes)
}

/// Checks a run's checkpoint counters against the files of `store`, whose checkpoints after
/// `after` are those the run committed (none deleted), and those up to `after` what it resumed
/// from: `checkpoints` is how many, `checkpoint_full_bytes` their whole size and
/// `checkpoint_bytes` the bytes of the distinct files among their parts (a part linked into a
/// later checkpoint is the same file, its inode) that no checkpoint up to `after` has.
/// With `chains`, some parts must be linked.
fn counters_match_the_files(
    store: &runnel_engine::checkpoint::LocalDirStore,
    summary: &runnel_engine::RunSummary,
    after: u64,
    chains: bool,
) {
    use runnel_engine::checkpoint::CheckpointStore;
    use std::os::unix::fs::MetadataExt;
    let all = store.list().unwrap();
    let files = |id: u64| {
        std::fs::read_dir(store.checkpoint_dir(id))
            .unwrap()
            .map(|f| f.unwrap())
            .filter(|f| f.file_name() != "MANIFEST.json")
            .map(|f| {
                let m = f.metadata().unwrap();
                ((m.dev(), m.ino()), m.len())
            })
            .collect::<Vec<_>>()
    };
    let before: std::collections::BTreeSet<(u64, u64)> = all
        .iter()
        .filter(|c| c.id <= after)
        .flat_map(|c| files(c.id))
        .map(|(inode, _)| inode)
        .collect();
    let ran: Vec<_> = all.iter().filter(|c| c.id > after).collect();
    assert!(!ran.is_empty(), "the run committed a checkpoint");
    let full: u64 = ran.iter().map(|c| c.size()).sum();
    let new: std::collections::BTreeMap<(u64, u64), u64> = ran
        .iter()
        .flat_map(|c| files(c.id))
        .filter(|(inode, _)| !before.contains(inode))
        .collect();
    let written: u64 = new.values().sum();
    let counter = |name: &str| summary.counters.get(name).copied().unwrap_or(0);
    assert_eq!(counter("checkpoints"), ran.len() as u64);
    assert_eq!(counter("checkpoint_full_bytes"), full);
    assert_eq!(counter("checkpoint_bytes"), written);
    if chains {
        assert!(
            written < full,
            "chains link parts: {written} of {full} bytes"
        );
    }
}

/// A local folder's store that keeps its checkpoints when a run that ended clears them.
#[derive(Debug)]
struct KeepsCheckpoints(runnel_engine::checkpoint::LocalDirStore);

impl runnel_engine::checkpoint::CheckpointStore for KeepsCheckpoints {
    fn write_part(&self, id: u64, part: &str, bytes: &[u8]) -> runnel_engine::Result<PartInfo> {
        self.0.write_part(id, part, bytes)
    }
    fn write_part_with(
        &self,
        id: u64,
        part: &str,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> runnel_engine::Result<()>,
    ) -> runnel_engine::Result<PartInfo> {
        self.0.write_part_with(id, part, write)
    }
    fn links_parts(&self) -> bool {
        self.0.links_parts()
    }
    fn link_part(&self, from: u64, to: u64, part: &PartInfo) -> runnel_engine::Result<PartInfo> {
        self.0.link_part(from, to, part)
    }
    fn has_part(&self, id: u64, part: &str) -> bool {
        self.0.has_part(id, part)
    }
    fn part_names(&self, id: u64) -> runnel_engine::Result<Vec<String>> {
        self.0.part_names(id)
    }
    fn commit(
        &self,
        id: u64,
        epoch: u64,
        parts: &[String],
        meta: BTreeMap<String, String>,
    ) -> runnel_engine::Result<runnel_engine::CheckpointInfo> {
        self.0.commit(id, epoch, parts, meta)
    }
    fn list(&self) -> runnel_engine::Result<Vec<runnel_engine::CheckpointInfo>> {
        self.0.list()
    }
    fn latest(&self) -> runnel_engine::Result<Option<runnel_engine::CheckpointInfo>> {
        self.0.latest()
    }
    fn newest_complete_id(&self) -> runnel_engine::Result<Option<u64>> {
        self.0.newest_complete_id()
    }
    fn get(&self, id: u64) -> runnel_engine::Result<runnel_engine::CheckpointInfo> {
        self.0.get(id)
    }
    fn read_part(&self, id: u64, part: &str) -> runnel_engine::Result<Vec<u8>> {
        self.0.read_part(id, part)
    }
    fn retain(&self, keep: usize) -> runnel_engine::Result<()> {
        self.0.retain(keep)
    }
    fn clear(&self) -> runnel_engine::Result<()> {
        Ok(())
    }
    fn scan(&self) -> runnel_engine::Result<Vec<runnel_engine::checkpoint::CheckpointEntry>> {
        self.0.scan()
    }
    fn next_id(&self) -> runnel_engine::Result<u64> {
        self.0.next_id()
    }
    fn discard(&self, id: u64) -> runnel_engine::Result<()> {
        self.0.discard(id)
    }
    fn discard_after(&self, id: Option<u64>) -> runnel_engine::Result<()> {
        self.0.discard_after(id)
    }
    fn log_dir(&self) -> Option<&std::path::Path> {
        self.0.log_dir()
    }
}

/// q9's state is checkpointed: stopped and resumed, its changelog applies to the brute-force
/// answer, each change once (fails when q9's restore drops its state).
#[test]
fn q9_resumes_from_a_checkpoint_with_each_change_once() {
    assert_eq!(
        stop_and_resume(nexmark::q9, STREAM_STATE_ABOVE),
        q9_reference(&all_events())
    );
}

/// q18's rows are checkpointed: stopped and resumed, its changelog applies to the brute-force
/// answer, each change once (fails when q18's restore drops its state). Its state goes into
/// parts of its own (streamed), as a large state does.
#[test]
fn q18_resumes_from_a_checkpoint_with_each_change_once() {
    assert_eq!(stop_and_resume(nexmark::q18, 0), q18_reference());
}

/// q4's state (q9's and the running averages) is checkpointed, as q9's.
#[test]
fn q4_resumes_from_a_checkpoint_with_each_change_once() {
    assert_eq!(
        stop_and_resume(nexmark::q4, STREAM_STATE_ABOVE),
        q4_reference()
    );
}

/// q20's state, streamed into parts of its own, as q18's.
#[test]
fn q20_resumes_from_a_checkpoint_with_each_row_once() {
    assert_eq!(stop_and_resume(nexmark::q20, 0), q20_reference());
}

fn auction(id: u64, opened: i64, expires: i64) -> Event {
    Event::Auction(Box::new(Auction {
        id,
        item_name: "item".into(),
        description: "".into(),
        initial_bid: 1,
        reserve: 7,
        date_time: opened,
        expires,
        seller: 100 + id,
        category: 10,
        extra: "".into(),
    }))
}

fn bid(auction: u64, bidder: u64, price: u64, at: i64) -> Event {
    Event::Bid(Bid {
        auction,
        bidder,
        price,
        channel: "c".into(),
        url: "u".into(),
        date_time: at,
        extra: "".into(),
    })
}

/// q9 with input out of order, epoch by epoch, against changes worked out by hand: a bid that
/// comes before its auction waits for it, a bid after the auction's expiry does not count,
/// records behind the watermark (50 ms behind the newest) are late, and an auction the
/// watermark has passed is final (a late bid that would have won does not change it).
#[test]
fn q9_closes_auctions_at_expiry_and_counts_late_records() {
    let epochs = vec![
        // Epoch 1; the watermark after it is 130 - 50 = 80.
        vec![
            auction(1, 100, 200),
            bid(1, 11, 10, 110),
            bid(2, 21, 50, 130), // auction 2 is not there yet: waits
        ],
        // Epoch 2; watermark 150 - 50 = 100 after it.
        vec![
            auction(2, 120, 300), // takes the waiting bid
            bid(1, 12, 30, 150),
        ],
        // Epoch 3; watermark 260 - 50 = 210 after it: auction 1 (expires 200) is final.
        vec![
            bid(1, 13, 99, 260), // after auction 1 expired: does not count
            bid(3, 31, 5, 260),  // waits for auction 3
        ],
        // Epoch 4, watermark 210 when it began.
        vec![
            bid(1, 14, 70, 190),  // late: would have won auction 1
            auction(3, 150, 400), // late
            bid(2, 22, 60, 250),
            bid(2, 23, 60, 260), // same price, later: loses
            bid(4, 41, 1, 215),  // waits for an auction that never comes
            bid(2, 24, 1, 330),  // after auction 2 expired
        ],
    ];
    let want = q9_by_hand();
    // The same changes, with the same event times, whatever the order within each epoch.
    for reversed in [false, true] {
        let (late, got) = run_q9_by_epoch(&epochs, reversed);
        assert_eq!(late, 2, "the bid at 190 and auction 3");
        assert_eq!(got, want, "each epoch's records reversed: {reversed}");
    }
}

/// Runs q9 on one partition holding `epochs` (each reversed if asked), 50 ms out of order,
/// and returns the late count and the changes of each epoch that had any, sorted, in epoch
/// order.
fn run_q9_by_epoch(epochs: &[Vec<Event>], reversed: bool) -> (u64, Vec<Vec<(i64, Change<Q9>)>>) {
    use runnel_engine::testing::{TestItem, TestSource};
    let mut input = Vec::new();
    for epoch in epochs {
        let mut records = epoch.clone();
        if reversed {
            records.reverse();
        }
        input.extend(
            records
                .into_iter()
                .map(|ev| TestItem::At(ev.date_time(), ev)),
        );
        input.push(TestItem::Cut);
    }
    let input = vec![input];
    let out = Collector::<Change<Q9>>::new();
    let sink = out.clone();
    let job = Job::new("q9", "q9 by hand", move |flow| {
        let events = flow.source(
            "events",
            TestSource::new(input.clone()),
            SourceOptions::new().bounded_out_of_order(std::time::Duration::from_millis(50)),
        )?;
        nexmark::q9(&events)?.sink("out", sink.sink())
    });
    let summary = run(&job, RunOptions::workers(2)).expect("q9 runs");
    let mut by_epoch: BTreeMap<_, Vec<(i64, Change<Q9>)>> = BTreeMap::new();
    for (epoch, ev) in out.events() {
        by_epoch.entry(epoch).or_default().push((ev.ts, ev.data));
    }
    (summary.late, by_epoch.into_values().map(sorted).collect())
}

/// The changes of [`q9_closes_auctions_at_expiry_and_counts_late_records`], worked out by
/// hand.
fn q9_by_hand() -> Vec<Vec<(i64, Change<Q9>)>> {
    let row = |id: u64, bidder: u64, price: u64, at: i64| {
        let expires = [0, 200, 300][id as usize];
        Q9 {
            id,
            seller: 100 + id,
            category: 10,
            reserve: 7,
            expires,
            bidder,
            price,
            bid_time: at,
        }
    };
    use Change::{Insert, Retract};
    // Each change's event time is the newest among the auction's records (and its bids made
    // while it was open) since its row last changed.
    let want: Vec<Vec<(i64, Change<Q9>)>> = vec![
        vec![(110, Insert(row(1, 11, 10, 110)))],
        vec![
            (150, Insert(row(1, 12, 30, 150))),
            (150, Retract(row(1, 11, 10, 110))),
            (130, Insert(row(2, 21, 50, 130))),
        ],
        vec![
            (260, Insert(row(2, 22, 60, 250))),
            (260, Retract(row(2, 21, 50, 130))),
        ],
    ];
    want.into_iter().map(sorted).collect()
}

/// `(yyyy-MM-dd, HH:mm)` of `ms` (epoch milliseconds, not before 1970, UTC), counting whole
/// years and months from 1970-01-01.
fn naive_day_and_minute(ms: i64) -> (String, String) {
    let secs = ms / 1000;
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let (mut year, mut days) = (1970, secs / 86_400);
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 1;
    for len in lengths {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    let of_day = secs % 86_400;
    (
        format!("{year:04}-{month:02}-{:02}", days + 1),
        format!("{:02}:{:02}", of_day / 3600, of_day % 3600 / 60),
    )
}

/// Every file under `dir`, as its path relative to `dir`, with its contents.
fn files_under(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Checks that the files under `dir` hold every bid of `events` exactly once, in
/// `dt=<day>/hm=<HH>%3A<mm>/part-<worker>.jsonl` for its day and minute, and nothing else;
/// returns the partitions.
fn check_q10_files(dir: &Path, events: &[Event]) -> BTreeSet<String> {
    let mut want: BTreeMap<(String, Q10), u64> = BTreeMap::new();
    for b in bids(events) {
        let (dt, hm) = naive_day_and_minute(b.date_time);
        let partition = format!("dt={dt}/hm={}", hm.replace(':', "%3A"));
        let row = Q10 {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            date_time: b.date_time,
            extra: b.extra,
            dt,
            hm,
        };
        *want.entry((partition, row)).or_default() += 1;
    }
    let mut got: BTreeMap<(String, Q10), u64> = BTreeMap::new();
    for (path, text) in files_under(dir) {
        let (partition, file) = path.rsplit_once('/').unwrap();
        let worker = file
            .strip_prefix("part-")
            .and_then(|f| f.strip_suffix(".jsonl"));
        assert!(
            worker.is_some_and(|w| w.parse::<usize>().is_ok()),
            "{path} is not a part file"
        );
        for line in text.lines() {
            let row: Q10 = serde_json::from_str(line).unwrap();
            *got.entry((partition.to_string(), row)).or_default() += 1;
        }
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    want.into_keys().map(|(p, _)| p).collect()
}

#[test]
fn q10_writes_every_bid_once_into_its_day_and_minute() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bids");
    let o = out.clone();
    let job = Job::new("q10", "q10 into files", move |flow| {
        let events = flow.source(
            "events",
            NexmarkGenerator::new(midnight_config()),
            SourceOptions::new(),
        )?;
        nexmark::q10(&events).sink("out", nexmark::q10_sink(&o))
    });
    run(&job, RunOptions::workers(2)).expect("the query runs");
    let events: Vec<Event> = midnight_config().iter().collect();
    let partitions = check_q10_files(&out, &events);
    let both: BTreeSet<String> = ["dt=2015-07-15/hm=23%3A59", "dt=2015-07-16/hm=00%3A00"]
        .map(String::from)
        .into();
    assert_eq!(
        partitions, both,
        "the events span two days, a minute of each"
    );
}

#[test]
fn q10_job_writes_under_dir() {
    let dir = tempfile::tempdir().unwrap();
    let job = nexmark::jobs()
        .into_iter()
        .find(|j| j.name() == "nexmark-q10")
        .unwrap();
    let config = JobConfig::new()
        .with("events", 5000)
        .with("seed", 7)
        .with("dir", dir.path().display());
    run(&job, RunOptions::workers(2).config(config)).expect("the job runs");
    let events: Vec<Event> = NexmarkConfig::new(5000).seed(7).iter().collect();
    assert!(!check_q10_files(dir.path(), &events).is_empty());

    let config = JobConfig::new()
        .with("events", 10)
        .with("dir", dir.path().display())
        .with("sink", "stdout");
    let err = run(&job, RunOptions::workers(1).config(config)).unwrap_err();
    assert!(err.to_string().contains("either dir"), "{err}");
}

/// q11 by brute force: each bidder's bid times, sorted, cut where two are 10 s or more apart.
fn q11_reference(bids: impl Iterator<Item = (u64, i64)>) -> Vec<Q11> {
    let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for (bidder, t) in bids {
        times.entry(bidder).or_default().push(t);
    }
    let mut want = Vec::new();
    for (bidder, mut ts) in times {
        ts.sort_unstable();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0u64);
        for &t in &ts {
            if t - last >= 10_000 {
                want.push(Q11 {
                    bidder,
                    bid_count: n,
                    start,
                    end: last + 10_000,
                });
                (start, n) = (t, 0);
            }
            last = t;
            n += 1;
        }
        want.push(Q11 {
            bidder,
            bid_count: n,
            start,
            end: last + 10_000,
        });
    }
    sorted(want)
}

#[test]
fn q11_counts_bids_per_bidder_session() {
    let want = q11_reference(bids(&all_events()).iter().map(|b| (b.bidder, b.date_time)));
    assert!(want.iter().any(|s| s.bid_count > 1));
    assert_eq!(run_stream(nexmark::q11), want);
}

/// q11 with more bidders in open sessions at once than a worker's session state keeps in one
/// map (it splits into staggered shards at 16,384 keys): 6M events at 250,000 events/s of
/// event time, about 50,000 sessions open at once (25,000 on each of the 2 workers), and
/// sessions closing throughout the run.
#[test]
fn q11_sessions_of_many_bidders_at_once() {
    let config = NexmarkConfig::new(6_000_000).event_rate(250_000).seed(11);
    let bids = config.iter().filter_map(|e| match e {
        Event::Bid(b) => Some((b.bidder, b.date_time)),
        _ => None,
    });
    let want = q11_reference(bids);
    let open_at_10s = want
        .iter()
        .filter(|s| s.start <= config.timestamp(2_500_000) && config.timestamp(2_500_000) < s.end)
        .count();
    assert!(
        open_at_10s > 2 * 16_384,
        "{open_at_10s} sessions open at once"
    );
    assert!(want.iter().any(|s| s.end < config.timestamp(5_000_000)));
    assert_eq!(run_stream_on(config, nexmark::q11), want);
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

#[test]
fn q12_counts_every_bid_once_in_wall_clock_windows() {
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    for b in bids(&all_events()) {
        *want.entry(b.bidder).or_default() += 1;
    }
    let before = wall_clock_ms();
    let got = run_stream(nexmark::q12);
    let after = wall_clock_ms();
    let mut per_bidder: BTreeMap<u64, u64> = BTreeMap::new();
    let mut windows = BTreeSet::new();
    for &Q12 {
        bidder,
        bid_count,
        start,
        end,
    } in &got
    {
        assert_eq!((end - start, start.rem_euclid(10_000)), (10_000, 0));
        assert!(
            before - 10_000 < start && start <= after,
            "[{start}, {end}) is not a window of the run's wall-clock time ({before}..{after})"
        );
        assert!(bid_count > 0);
        assert!(windows.insert((bidder, start)), "{bidder} twice at {start}");
        *per_bidder.entry(bidder).or_default() += bid_count;
    }
    assert!(want.len() > 100, "{} bidders", want.len());
    assert_eq!(per_bidder, want);
}

#[test]
fn q13_joins_bids_with_the_generated_side_table() {
    let want = sorted(
        bids(&all_events())
            .into_iter()
            .map(|b| Q13 {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                date_time: b.date_time,
                value: format!("{}", b.auction % 10_000),
            })
            .collect(),
    );
    assert_eq!(
        run_stream(|e| Ok(nexmark::q13(e, nexmark::generated_side_input(10_000)))),
        want
    );
}

#[test]
fn q13_job_joins_with_a_side_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let side_path = dir.path().join("side_input.txt");
    let out_path = dir.path().join("out.jsonl");
    // Every third key from 1000 to 1098, with a value that has a comma in it; a blank line.
    let mut side = HashMap::new();
    let mut text = String::from("\n");
    for k in (1000u64..1100).step_by(3) {
        let value = format!("v{k},x");
        text.push_str(&format!("{k},{value}\n"));
        side.insert(k, value);
    }
    std::fs::write(&side_path, text).unwrap();

    let events: Vec<Event> = NexmarkConfig::new(5000).seed(7).iter().collect();
    let want = sorted(
        bids(&events)
            .into_iter()
            .filter_map(|b| {
                let value = side.get(&(b.auction % 10_000))?;
                Some(Q13 {
                    auction: b.auction,
                    bidder: b.bidder,
                    price: b.price,
                    date_time: b.date_time,
                    value: value.clone(),
                })
            })
            .collect(),
    );
    assert!(want.len() > 100, "{} rows", want.len());

    let job = nexmark::jobs()
        .into_iter()
        .find(|j| j.name() == "nexmark-q13")
        .unwrap();
    let config = JobConfig::new()
        .with("events", 5000)
        .with("seed", 7)
        .with("side_input", side_path.display())
        .with("sink", format!("file:{}", out_path.display()));
    run(&job, RunOptions::workers(2).config(config)).expect("the job runs");
    assert_eq!(sorted_json_lines::<Q13>(&out_path), want);

    // A line without a comma fails the job before it runs, naming the line.
    std::fs::write(&side_path, "1,one\n2\n").unwrap();
    let config = JobConfig::new()
        .with("events", 10)
        .with("side_input", side_path.display());
    let err = run(&job, RunOptions::workers(1).config(config)).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn q14_selects_a_price_band_and_classifies_times() {
    let want = sorted(
        bids(&all_events())
            .into_iter()
            .filter_map(|b| {
                let euro = b.price as f64 * 0.908;
                let price = b.price * 908 / 1000;
                // The band on the exact product, as Flink's decimal would compare it.
                if !(euro > 1_000_000.0 && euro < 50_000_000.0) || price <= 1_000_000 {
                    return None;
                }
                let secs_of_day = (b.date_time / 1000) % 86_400;
                let hour = secs_of_day / 3600;
                let kind = match hour {
                    8..=18 => "dayTime",
                    0..=6 | 20..=23 => "nightTime",
                    _ => "otherTime",
                };
                Some(Q14 {
                    auction: b.auction,
                    bidder: b.bidder,
                    price,
                    bid_time_type: kind.into(),
                    date_time: b.date_time,
                    c_counts: b.extra.chars().filter(|&c| c == 'c').count() as u64,
                })
            })
            .collect(),
    );
    assert!(want.len() > 100, "{}", want.len());
    for kind in ["dayTime", "otherTime"] {
        assert!(want.iter().any(|q| q.bid_time_type == kind), "no {kind}");
    }
    assert_eq!(run_stream(|e| Ok(nexmark::q14(e))), want);
}

/// Bids, distinct bidders and distinct auctions of `bids`, each `[total, rank1, rank2, rank3]`.
fn rank_counts(bids: &[&Bid]) -> [[u64; 4]; 3] {
    let in_rank = |b: &Bid, r: usize| match r {
        0 => true,
        1 => b.price < 10_000,
        2 => 10_000 <= b.price && b.price < 1_000_000,
        _ => b.price >= 1_000_000,
    };
    let count = |r: usize| bids.iter().filter(|b| in_rank(b, r)).count() as u64;
    let distinct = |r: usize, f: fn(&Bid) -> u64| {
        let set: BTreeSet<u64> = bids
            .iter()
            .filter(|b| in_rank(b, r))
            .map(|b| f(b))
            .collect();
        set.len() as u64
    };
    [
        [0, 1, 2, 3].map(count),
        [0, 1, 2, 3].map(|r| distinct(r, |b| b.bidder)),
        [0, 1, 2, 3].map(|r| distinct(r, |b| b.auction)),
    ]
}

/// q15 by brute force over the events of [`midnight_config`]: per day, bids, distinct bidders
/// and distinct auctions, in all and by price rank.
fn q15_reference() -> Vec<Q15> {
    let bids = bids(&midnight_config().iter().collect::<Vec<_>>());
    let mut per_day: BTreeMap<i64, Vec<&Bid>> = BTreeMap::new();
    for b in &bids {
        let day = b.date_time - b.date_time.rem_euclid(86_400_000);
        per_day.entry(day).or_default().push(b);
    }
    per_day
        .into_iter()
        .map(|(day, bs)| {
            let [n, bidders, auctions] = rank_counts(&bs);
            Q15 {
                day,
                total_bids: n[0],
                rank1_bids: n[1],
                rank2_bids: n[2],
                rank3_bids: n[3],
                total_bidders: bidders[0],
                rank1_bidders: bidders[1],
                rank2_bidders: bidders[2],
                rank3_bidders: bidders[3],
                total_auctions: auctions[0],
                rank1_auctions: auctions[1],
                rank2_auctions: auctions[2],
                rank3_auctions: auctions[3],
            }
        })
        .collect()
}

#[test]
fn q15_counts_bids_bidders_and_auctions_per_day() {
    let want = q15_reference();
    assert_eq!(want.len(), 2, "the events span two days");
    assert!(want
        .iter()
        .all(|q| q.rank1_bids > 0 && q.rank3_auctions > 0));
    assert_eq!(run_stream_on(midnight_config(), nexmark::q15), want);
}

/// q16 by brute force, days starting `day_start` ms after midnight UTC.
fn q16_reference(day_start: i64) -> Vec<Q16> {
    let bids = bids(&midnight_config().iter().collect::<Vec<_>>());
    let mut per: BTreeMap<(String, i64), Vec<&Bid>> = BTreeMap::new();
    for b in &bids {
        let day = b.date_time - (b.date_time - day_start).rem_euclid(86_400_000);
        per.entry((b.channel.to_string(), day)).or_default().push(b);
    }
    sorted(
        per.into_iter()
            .map(|((channel, day), bs)| {
                // Flink's max(DATE_FORMAT(dateTime, 'HH:mm')): the largest of the strings.
                let minute = bs
                    .iter()
                    .map(|b| {
                        let secs = (b.date_time - day_start).rem_euclid(86_400_000) / 1000;
                        format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
                    })
                    .max()
                    .unwrap();
                let [n, bidders, auctions] = rank_counts(&bs);
                Q16 {
                    channel: channel.into(),
                    day,
                    minute,
                    total_bids: n[0],
                    rank1_bids: n[1],
                    rank2_bids: n[2],
                    rank3_bids: n[3],
                    total_bidders: bidders[0],
                    rank1_bidders: bidders[1],
                    rank2_bidders: bidders[2],
                    rank3_bidders: bidders[3],
                    total_auctions: auctions[0],
                    rank1_auctions: auctions[1],
                    rank2_auctions: auctions[2],
                    rank3_auctions: auctions[3],
                }
            })
            .collect(),
    )
}

#[test]
fn q16_counts_per_channel_and_day() {
    let want = q16_reference(0);
    assert!(want.len() > 1000, "{} rows", want.len());
    assert!(want.iter().any(|q| q.minute == "23:59"));
    assert!(want.iter().any(|q| q.minute == "00:00"));
    assert_eq!(run_stream_on(midnight_config(), nexmark::q16), want);
}

/// Days that start 10 s before midnight UTC (`day_start`, as a time zone would move them):
/// the events' day boundary moves 10 s earlier, and `minute` counts from the new start.
#[test]
fn q16_with_days_from_an_offset() {
    const START: i64 = 86_400_000 - 10_000;
    let want = q16_reference(START);
    assert_ne!(
        want,
        q16_reference(0),
        "the offset moves some bids to the next day"
    );
    assert!(want.iter().any(|q| q.minute == "00:00"));
    assert!(want.iter().any(|q| q.minute == "23:59"));
    assert_eq!(
        run_stream_on(midnight_config(), |e| nexmark::q16_days(e, START)),
        want
    );
}

/// q17 by brute force: per auction and day, its bids' counts by price rank, lowest, highest,
/// average and total price.
fn q17_reference() -> Vec<Q17> {
    let mut per: BTreeMap<(u64, i64), Vec<u64>> = BTreeMap::new();
    for b in bids(&all_events()) {
        let day = b.date_time - b.date_time.rem_euclid(86_400_000);
        per.entry((b.auction, day)).or_default().push(b.price);
    }
    per.into_iter()
        .map(|((auction, day), ps)| Q17 {
            auction,
            day,
            total_bids: ps.len() as u64,
            rank1_bids: ps.iter().filter(|&&p| p < 10_000).count() as u64,
            rank2_bids: ps
                .iter()
                .filter(|&&p| (10_000..1_000_000).contains(&p))
                .count() as u64,
            rank3_bids: ps.iter().filter(|&&p| p >= 1_000_000).count() as u64,
            min_price: *ps.iter().min().unwrap(),
            max_price: *ps.iter().max().unwrap(),
            avg_price: ps.iter().sum::<u64>() / ps.len() as u64,
            sum_price: ps.iter().sum(),
        })
        .collect()
}

#[test]
fn q17_sums_up_each_auctions_day() {
    let want = q17_reference();
    // Upserts: the last row of each auction and day stands.
    let rows = run_stream_in_order(nexmark::q17);
    let mut last: BTreeMap<(u64, i64), Q17> = BTreeMap::new();
    for row in &rows {
        last.insert((row.auction, row.day), row.clone());
    }
    assert!(
        rows.len() > last.len(),
        "rows are updated as bids come: {} rows for {} auction days",
        rows.len(),
        last.len()
    );
    assert_eq!(last.into_values().collect::<Vec<_>>(), want);
}

/// q18 by brute force: each bidder's latest bid on each auction, over the generated set.
fn q18_reference() -> Vec<Bid> {
    let mut per_pair: BTreeMap<(u64, u64), Vec<Bid>> = BTreeMap::new();
    for b in bids(&all_events()) {
        per_pair.entry((b.bidder, b.auction)).or_default().push(b);
    }
    let several = per_pair.values().filter(|bs| bs.len() > 1).count();
    assert!(several > 20, "{several} pairs with more than one bid");
    sorted(
        per_pair
            .into_values()
            .map(|mut bs| {
                // The latest; of bids at the same time, the larger (price, channel, url, extra).
                bs.sort_by_key(|b| {
                    (
                        b.date_time,
                        b.price,
                        b.channel.to_string(),
                        b.url.to_string(),
                        b.extra.to_string(),
                    )
                });
                bs.pop().unwrap()
            })
            .collect(),
    )
}

#[test]
fn q18_keeps_each_bidders_last_bid_per_auction() {
    assert_eq!(
        final_rows(run_stream_in_order(nexmark::q18)),
        q18_reference()
    );
}

/// q19 by brute force (common/nexmark.rs), on an input with enough auctions of more than ten
/// bids to rank.
fn q19_reference() -> Vec<Q19> {
    let bids = bids(&all_events());
    let mut per_auction: HashMap<u64, usize> = HashMap::new();
    for b in &bids {
        *per_auction.entry(b.auction).or_default() += 1;
    }
    let crowded = per_auction.values().filter(|&&n| n > 10).count();
    assert!(crowded >= 20, "{crowded} auctions with more than 10 bids");
    sorted(q19_top_tens(bids))
}

include!("common/nexmark.rs");

#[test]
fn q19_keeps_the_ten_highest_bids_per_auction() {
    assert_eq!(
        final_rows(run_stream_in_order(nexmark::q19)),
        q19_reference()
    );
}

/// q19's top tens are checkpointed: stopped and resumed, its changelog applies to the
/// brute-force answer, each change once (fails when q19's restore drops its state).
#[test]
fn q19_resumes_from_a_checkpoint_with_each_change_once() {
    assert_eq!(stop_and_resume(nexmark::q19, 0), q19_reference());
}

/// q20 by brute force: each bid with the category-10 auction of its id.
fn q20_reference() -> Vec<Q20> {
    let events = all_events();
    let by_id: HashMap<u64, Auction> = auctions(&events)
        .into_iter()
        .filter(|a| a.category == 10)
        .map(|a| (a.id, a))
        .collect();
    sorted(
        bids(&events)
            .iter()
            .filter_map(|b| {
                let a = by_id.get(&b.auction)?;
                Some(Q20 {
                    auction: b.auction,
                    bidder: b.bidder,
                    price: b.price,
                    channel: b.channel.clone(),
                    url: b.url.clone(),
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
                })
            })
            .collect(),
    )
}

#[test]
fn q20_joins_bids_with_their_category_10_auctions() {
    let all_bids = bids(&all_events());
    let want = q20_reference();
    let joined: BTreeSet<u64> = want.iter().map(|q| q.auction).collect();
    assert!(
        joined.len() > 50,
        "{} category-10 auctions with bids",
        joined.len()
    );
    assert!(
        want.len() > 1000 && want.len() < all_bids.len() / 2,
        "{} of {} bids",
        want.len(),
        all_bids.len()
    );
    let changes = run_stream_in_order(nexmark::q20);
    assert!(
        changes.iter().all(Change::is_insert),
        "a join of inserts retracts nothing"
    );
    assert_eq!(final_rows(changes), want);
}

#[test]
fn q21_extracts_channel_ids() {
    let want = sorted(
        bids(&all_events())
            .into_iter()
            .filter_map(|b| {
                let known = ["apple", "google", "facebook", "baidu"]
                    .iter()
                    .position(|c| b.channel.eq_ignore_ascii_case(c));
                let from_url = b
                    .url
                    .split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("channel_id="))
                    .map(str::to_string);
                let id = match (known, from_url) {
                    (Some(i), _) => i.to_string(),
                    (None, Some(id)) => id,
                    (None, None) => return None,
                };
                Some(Q21 {
                    auction: b.auction,
                    bidder: b.bidder,
                    price: b.price,
                    channel: b.channel,
                    channel_id: id.into(),
                })
            })
            .collect(),
    );
    assert!(want.iter().any(|q| q.channel_id.len() > 1));
    assert_eq!(run_stream(|e| Ok(nexmark::q21(e))), want);
}

#[test]
fn q22_splits_urls_into_directories() {
    let want = sorted(
        bids(&all_events())
            .into_iter()
            .map(|b| {
                let parts: Vec<&str> = b.url.split('/').collect();
                let dir = |i: usize| parts.get(i).map_or(String::new(), |s| s.to_string());
                Q22 {
                    auction: b.auction,
                    bidder: b.bidder,
                    price: b.price,
                    channel: b.channel.clone(),
                    dir1: dir(3),
                    dir2: dir(4),
                    dir3: dir(5),
                }
            })
            .collect(),
    );
    assert_eq!(run_stream(|e| Ok(nexmark::q22(e))), want);
}

// ---------------------------------------------------------------------------------------------
// On a cluster

include!("common/runnel.rs");

/// The events of `config` dealt round-robin into `files` JSON-lines files under `dir` (each
/// file in event-time order, as a generator partition is); returns the `file=` setting that
/// reads them, one partition per file.
fn event_files(config: &NexmarkConfig, dir: &Path, name: &str, files: usize) -> String {
    use std::io::Write;
    let paths: Vec<_> = (0..files)
        .map(|i| dir.join(format!("{name}-{i}.jsonl")))
        .collect();
    let mut writers: Vec<_> = paths
        .iter()
        .map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("an events file")))
        .collect();
    for (i, event) in config.iter().enumerate() {
        let w = &mut writers[i % files];
        serde_json::to_writer(&mut *w, &event).unwrap();
        w.write_all(b"\n").unwrap();
    }
    for mut w in writers {
        w.flush().unwrap();
    }
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("file={}", paths.join(","))
}

/// How a query's output file is read back.
enum ReadBack {
    /// Rows, each once: compared as a multiset.
    Rows,
    /// A changelog (`{"op":"insert"|"retract","row":..}`), applied in order: the rows left.
    Changes,
    /// Upserts by the fields named: the last row of each key stands.
    Upserts(&'static [&'static str]),
}

/// The rows of a query's output file read back as `how` says, as JSON texts, sorted.
fn output_rows(path: &Path, how: &ReadBack) -> Vec<String> {
    let lines = || {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .collect::<Vec<_>>()
    };
    let rows: Vec<String> = match how {
        ReadBack::Rows => lines().into_iter().map(|v| v.to_string()).collect(),
        ReadBack::Changes => changelog_rows(path),
        ReadBack::Upserts(key) => {
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            for v in lines() {
                let k: Vec<String> = key.iter().map(|f| v[*f].to_string()).collect();
                last.insert(k.join(","), v.to_string());
            }
            last.into_values().collect()
        }
    };
    sorted(rows)
}

/// Rows as the file sink writes them (JSON texts), sorted.
fn json_rows<T: serde::Serialize>(rows: Vec<T>) -> Vec<String> {
    sorted(
        rows.iter()
            .map(|r| serde_json::to_value(r).unwrap().to_string())
            .collect(),
    )
}

/// The updating queries (q3, q4, q6, q9, q15-q20) on a cluster of two processes of two
/// workers, each job run by the `runnel` binary on the events of [`config`] (or
/// [`midnight_config`] for the per-day q15 and q16) dealt into 5 files: their changes cross
/// processes (bincode over TCP) on the way to their operators' workers and to the file sink on
/// process 0. The output read back must be the brute-force answer above. Every query is run
/// before the test fails, so that one failure does not hide another.
#[test]
fn updating_queries_on_two_processes_match_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let files = event_files(&config(), dir.path(), "events", 5);
    let midnight = event_files(&midnight_config(), dir.path(), "midnight", 5);
    let cases: Vec<(&str, &String, ReadBack, Vec<String>)> = vec![
        ("q3", &files, ReadBack::Changes, json_rows(q3_reference())),
        ("q4", &files, ReadBack::Changes, json_rows(q4_reference())),
        ("q6", &files, ReadBack::Changes, json_rows(q6_reference())),
        (
            "q9",
            &files,
            ReadBack::Changes,
            json_rows(q9_reference(&all_events())),
        ),
        ("q15", &midnight, ReadBack::Rows, json_rows(q15_reference())),
        (
            "q16",
            &midnight,
            ReadBack::Rows,
            json_rows(q16_reference(0)),
        ),
        (
            "q17",
            &files,
            ReadBack::Upserts(&["auction", "day"]),
            json_rows(q17_reference()),
        ),
        ("q18", &files, ReadBack::Changes, json_rows(q18_reference())),
        ("q19", &files, ReadBack::Changes, json_rows(q19_reference())),
        ("q20", &files, ReadBack::Changes, json_rows(q20_reference())),
    ];
    let mut failed = Vec::new();
    for (query, input, how, want) in cases {
        let out = dir.path().join(format!("{query}.jsonl"));
        let sink = format!("sink=file:{}", out.display());
        let job = format!("nexmark-{query}");
        let outputs = run_cluster(
            dir.path(),
            2,
            2,
            &["run", &job, "--set", input, "--set", &sink],
        );
        let summaries: Vec<serde_json::Value> = outputs.iter().map(summary).collect();
        let read: u64 = summaries
            .iter()
            .map(|s| s["events_in"].as_u64().unwrap())
            .sum();
        assert_eq!(read, 60_000, "{query}: events read by both processes");
        for (p, s) in summaries.iter().enumerate() {
            assert_eq!(s["late"], 0, "{query}: late records on process {p}");
        }
        assert!(
            want.len() > 1,
            "{query}: {} rows by brute force",
            want.len()
        );
        let got = output_rows(&out, &how);
        if got == want {
            eprintln!("{query}: {} rows, as by brute force", want.len());
        } else {
            let (got_set, want_set): (BTreeSet<_>, BTreeSet<_>) =
                (got.iter().collect(), want.iter().collect());
            eprintln!(
                "{query}: {} rows against {} by brute force; first missing: {:?}; first not \
                 wanted: {:?}",
                got.len(),
                want.len(),
                want_set.difference(&got_set).next(),
                got_set.difference(&want_set).next(),
            );
            failed.push(query);
        }
    }
    assert!(
        failed.is_empty(),
        "wrong answers on two processes: {failed:?}"
    );
}

/// q10 on a cluster of two processes of two workers: each worker writes the bids it gets into
/// part files of its own under the shared folder, committed with the job's checkpoints; every
/// bid must be there once, in the folder of its day and minute, and nothing else.
#[test]
fn q10_on_two_processes_writes_every_bid_once_into_its_day_and_minute() {
    let dir = tempfile::tempdir().unwrap();
    let files = event_files(&midnight_config(), dir.path(), "midnight", 5);
    let out = dir.path().join("bids");
    let set_dir = format!("dir={}", out.display());
    let outputs = run_cluster(
        dir.path(),
        2,
        2,
        &["run", "nexmark-q10", "--set", &files, "--set", &set_dir],
    );
    let read: u64 = outputs
        .iter()
        .map(|o| summary(o)["events_in"].as_u64().unwrap())
        .sum();
    assert_eq!(read, 60_000, "events read by both processes");
    let events: Vec<Event> = midnight_config().iter().collect();
    let partitions = check_q10_files(&out, &events);
    assert_eq!(partitions.len(), 2, "{partitions:?}");
    let workers: BTreeSet<String> = files_under(&out)
        .into_keys()
        .map(|path| path.rsplit_once('/').unwrap().1.to_string())
        .collect();
    assert!(
        workers.len() > 2,
        "the workers of both processes wrote parts: {workers:?}"
    );
}
