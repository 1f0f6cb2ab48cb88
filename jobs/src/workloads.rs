//! The generator workloads of BENCHMARKS.md: W0 passthrough, W1 map/filter, W2 tumbling window.
//!
//! Settings (`--set`): `events` (default 10,000,000), `rate` (events/s in total, default
//! unlimited), `partitions` (generator partitions, default one per worker), and for W2
//! `check` (default true: every window result is checked against the closed form and the run
//! fails on a mismatch or a missing window) and `out` (a JSON-lines file for the results).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use runnel_connectors::{Bid, BidGenerator, BlackholeSink, FileSink};
use runnel_engine::{Error, Event, Flow, Job, Result, Sink, SourceOptions, Stream};
use runnel_operators::prelude::*;

/// The W2 window length (10 s of event time).
pub const W2_WINDOW_MS: i64 = 10_000;

fn bids<'s>(flow: &mut Flow<'s>) -> Result<Stream<'s, Bid>> {
    let cfg = flow.config();
    let events: u64 = cfg.get("events", 10_000_000)?;
    let rate: u64 = cfg.get("rate", 0)?;
    let partitions: u32 = cfg.get("partitions", 0)?;
    let generator = BidGenerator::new(events)
        .partitions(partitions)
        .with_rate((rate > 0).then_some(rate));
    // The generator stamps each bid with its own event time and emits in order per partition.
    flow.source("bids", generator, SourceOptions::new())
}

/// W0: generate, discard.
pub fn w0_passthrough() -> Job {
    Job::new(
        "w0-passthrough",
        "benchmark W0: generated bids straight into a blackhole sink",
        |flow| bids(flow)?.sink("blackhole", BlackholeSink::new()),
    )
}

/// W1: keep `auction % 10 == 0`, map the price to `price * 0.908`, discard.
pub fn w1_map_filter() -> Job {
    Job::new(
        "w1-map-filter",
        "benchmark W1: filter auction % 10 == 0, price * 0.908, into a blackhole",
        |flow| {
            bids(flow)?
                .filter(|b| b.auction % 10 == 0)
                .map(|b| (b.auction, b.price as f64 * 0.908))
                .sink("blackhole", BlackholeSink::new())
        },
    )
}

/// One W2 output row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuctionWindow {
    /// The auction.
    pub auction: u64,
    /// The window's start (event-time ms).
    pub window_start: i64,
    /// The window's end (exclusive).
    pub window_end: i64,
    /// Bids in the window.
    pub count: u64,
    /// The highest price in the window.
    pub max_price: u64,
}

/// The W2 computation: per auction, the bids and the highest price in 10 s tumbling event-time
/// windows (the operator is named `per-auction`). Shared by `w2-tumbling` and `kafka-w2`.
pub fn w2_windows<'s>(bids: &Stream<'s, Bid>) -> Result<Stream<'s, AuctionWindow>> {
    Ok(bids
        .key_by(|b| b.auction)
        .window(Tumbling::of(Duration::from_millis(W2_WINDOW_MS as u64)))
        .named("per-auction")
        .aggregate((Count, Max::of(|b: &Bid| b.price)))?
        .map(|r| AuctionWindow {
            auction: r.key,
            window_start: r.start,
            window_end: r.end,
            count: r.value.0,
            max_price: r.value.1,
        }))
}

/// W2: per auction, count and max price in 10 s tumbling windows.
pub fn w2_tumbling() -> Job {
    Job::new(
        "w2-tumbling",
        "benchmark W2: per auction, bids and max price per 10 s tumbling window (checked)",
        |flow| {
            let events: u64 = flow.config().get("events", 10_000_000)?;
            let check: bool = flow.config().get("check", true)?;
            let out = flow.config().get_opt("out");
            let results = w2_windows(&bids(flow)?)?;
            if check {
                results.sink("check", W2Check::new(events))?;
            }
            match out {
                Some(path) => results.sink("out", FileSink::json(path).sorted()),
                None => results.sink("blackhole", BlackholeSink::new()),
            }
        },
    )
}

/// The expected W2 row for `auction` in the window starting at `start`, computed from the
/// generator's formulas (not from the engine): the bids of the window are the `seq` in
/// `[start, min(start + 10 s, events))` with `(seq * 7919) % 1000 == auction`.
pub fn w2_expected(events: u64, auction: u64, start: i64) -> Option<(u64, u64)> {
    let lo = start.max(0) as u64;
    let hi = ((start + W2_WINDOW_MS).max(0) as u64).min(events);
    // 7919 is invertible mod 1000, so one residue of seq mod 1000 maps to each auction.
    let first = (lo..(lo + 1000).min(hi)).find(|s| s.wrapping_mul(7919) % 1000 == auction)?;
    let mut count = 0;
    let mut max = 0;
    let mut s = first;
    while s < hi {
        count += 1;
        max = max.max(100 + s.wrapping_mul(17) % 10_000);
        s += 1000;
    }
    Some((count, max))
}

/// The number of W2 rows `events` bids produce: every (auction, window) pair that holds a bid.
pub fn w2_expected_rows(events: u64) -> u64 {
    let full = events / W2_WINDOW_MS as u64;
    let rest = events % W2_WINDOW_MS as u64;
    full * 1000 + rest.min(1000)
}

/// Checks W2 rows against [`w2_expected`]: each row as it comes ([`W2Check::add`]), then, at
/// the end, that every expected row arrived exactly once ([`W2Check::finish`]). As a sink it
/// runs on one worker ([`runnel_engine::Routing::Single`]) and fails the job on a mismatch;
/// its checkpointed state is the rows (and problems) of the epochs a checkpoint covers, so a
/// resumed run checks the whole output.
pub struct W2Check {
    events: u64,
    /// Each row seen, with the epoch it came in.
    seen: HashMap<(u64, i64), u64>,
    errors: Vec<(u64, String)>,
    epoch: u64,
}

impl W2Check {
    /// A checker for a run of `events` bids.
    pub fn new(events: u64) -> Self {
        W2Check {
            events,
            seen: HashMap::new(),
            errors: Vec::new(),
            epoch: 0,
        }
    }

    /// Checks one row (a duplicate, or a count or maximum that is not the closed form's).
    pub fn add(&mut self, r: &AuctionWindow) {
        if self
            .seen
            .insert((r.auction, r.window_start), self.epoch)
            .is_some()
        {
            self.problem(format!("duplicate row {r:?}"));
        }
        let want = w2_expected(self.events, r.auction, r.window_start);
        if want != Some((r.count, r.max_price)) {
            self.problem(format!("row {r:?}: expected (count, max) {want:?}"));
        }
    }

    /// Records a problem found outside [`W2Check::add`] (the first ten are kept).
    pub fn problem(&mut self, what: String) {
        if self.errors.len() < 10 {
            self.errors.push((self.epoch, what));
        }
    }

    /// After the last row: the number of rows when every expected row arrived once and all
    /// matched, else what was wrong.
    pub fn finish(&mut self) -> std::result::Result<usize, String> {
        let want = w2_expected_rows(self.events);
        if self.seen.len() as u64 != want {
            let what = format!("{} window results, expected {want}", self.seen.len());
            self.errors.push((self.epoch, what));
        }
        if self.errors.is_empty() {
            Ok(self.seen.len())
        } else {
            let all: Vec<&str> = self.errors.iter().map(|(_, e)| e.as_str()).collect();
            Err(all.join("; "))
        }
    }
}

impl Sink<AuctionWindow> for W2Check {
    fn routing(&self) -> runnel_engine::Routing {
        runnel_engine::Routing::Single
    }
    fn write(
        &mut self,
        epoch: runnel_engine::Epoch,
        records: &mut Vec<Event<AuctionWindow>>,
    ) -> Result<()> {
        self.epoch = epoch.0;
        for e in records.drain(..) {
            self.add(&e.data);
        }
        Ok(())
    }
    fn snapshot(&mut self, through: runnel_engine::Epoch) -> Result<Option<Vec<u8>>> {
        let seen: Vec<(&(u64, i64), &u64)> =
            self.seen.iter().filter(|(_, &e)| e <= through.0).collect();
        let errors: Vec<&(u64, String)> = self
            .errors
            .iter()
            .filter(|(e, _)| *e <= through.0)
            .collect();
        Ok(Some(runnel_engine::recovery::encode(&(seen, errors))?))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let (seen, errors): (Vec<((u64, i64), u64)>, Vec<(u64, String)>) =
            runnel_engine::recovery::decode(state)?;
        self.seen = seen.into_iter().collect();
        self.errors = errors;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let n = self.finish().map_err(|reason| Error::Sink {
            sink: "check".into(),
            reason,
        })?;
        eprintln!("w2 check: {n} window results, each matches the closed form");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_matches_brute_force_on_small_inputs() {
        for events in [0u64, 1, 999, 10_000, 12_345, 30_001] {
            let mut brute = std::collections::BTreeMap::<(u64, i64), (u64, u64)>::new();
            for seq in 0..events {
                let b = Bid::at(seq);
                let e = brute
                    .entry((b.auction, (seq as i64 / W2_WINDOW_MS) * W2_WINDOW_MS))
                    .or_default();
                e.0 += 1;
                e.1 = e.1.max(b.price);
            }
            assert_eq!(
                brute.len() as u64,
                w2_expected_rows(events),
                "events {events}"
            );
            for ((a, s), v) in &brute {
                assert_eq!(w2_expected(events, *a, *s), Some(*v));
            }
        }
    }
}
