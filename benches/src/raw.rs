//! W0, W1 and W2 directly on timely.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::{Scope, StreamVec};

/// The benchmark's bid, as in the generator connector (repeated so the baseline has no runnel code).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct RawBid {
    /// Sequence number.
    pub seq: u64,
    /// `(seq * 7919) % 1000`.
    pub auction: u64,
    /// `(seq * 31) % 100000`.
    pub bidder: u64,
    /// `100 + (seq * 17) % 10000`.
    pub price: u64,
    /// `seq`.
    pub ts: i64,
}

#[inline(always)]
fn bid(seq: u64) -> RawBid {
    RawBid {
        seq,
        auction: seq.wrapping_mul(7919) % 1000,
        bidder: seq.wrapping_mul(31) % 100_000,
        price: 100 + seq.wrapping_mul(17) % 10_000,
        ts: seq as i64,
    }
}

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Generate, discard.
    W0,
    /// Filter and map, discard.
    W1,
    /// Count and max price per auction per 10 s window.
    W2,
}

/// Records per batch: each batch is built in its own exactly-sized vector and handed to timely
/// whole (`give_container`), the fastest way to feed timely (pushing records one by one through
/// a session copies each through the stack, which stalls store forwarding).
const BATCH: usize = 1024;

/// A generator source: worker `w` of `n` produces seq `w, w+n, ...`; the timestamp advances
/// every 100 ms (W0, W1) or is the 10 s window index (W2).
fn generate<'s>(scope: Scope<'s, u64>, events: u64, by_window: bool) -> StreamVec<'s, u64, RawBid> {
    let (index, peers) = (scope.index() as u64, scope.peers() as u64);
    source(scope, "generate", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut next = index;
        let mut epoch_start = Instant::now();
        let mut epoch = 0u64;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            for _ in 0..16 {
                if next >= events {
                    break;
                }
                if by_window {
                    let w = next / 10_000;
                    if w > *c.time() {
                        c.downgrade(&w);
                    }
                    // Stay within one window per batch.
                    let window_end = (w + 1) * 10_000;
                    let mut batch = Vec::with_capacity(BATCH);
                    while next < events && next < window_end && batch.len() < BATCH {
                        batch.push(bid(next));
                        next += peers;
                    }
                    output.session(&*c).give_container(&mut batch);
                } else {
                    let mut batch = Vec::with_capacity(BATCH);
                    while next < events && batch.len() < BATCH {
                        batch.push(bid(next));
                        next += peers;
                    }
                    output.session(&*c).give_container(&mut batch);
                }
            }
            if next >= events {
                cap = None;
                return;
            }
            if !by_window && epoch_start.elapsed() >= Duration::from_millis(100) {
                epoch += 1;
                c.downgrade(&epoch);
                epoch_start = Instant::now();
            }
            activator.activate();
        }
    })
}

/// Runs `workload` on `workers` threads over `events` bids; returns (results out, wall time).
pub fn run(workload: Workload, workers: usize, events: u64) -> (u64, Duration) {
    let out = Arc::new(AtomicU64::new(0));
    let out2 = out.clone();
    let config = if workers > 1 {
        timely::Config::process(workers)
    } else {
        timely::Config::thread()
    };
    let started = Instant::now();
    timely::execute(config, move |worker| {
        let counted = Rc::new(Cell::new(0u64));
        worker.dataflow::<u64, _, _>(|scope| {
            match workload {
                Workload::W0 => {
                    generate(scope, events, false).sink(Pipeline, "count", {
                        let counted = counted.clone();
                        move |(input, _)| {
                            input.for_each(|_, data| {
                                counted.set(counted.get() + data.len() as u64);
                                data.clear();
                            })
                        }
                    });
                }
                Workload::W1 => {
                    generate(scope, events, false)
                        .filter(|b: &RawBid| b.auction.is_multiple_of(10))
                        .map(|b: RawBid| (b.auction, b.price as f64 * 0.908))
                        .sink(Pipeline, "count", {
                            let counted = counted.clone();
                            move |(input, _)| {
                                input.for_each(|_, data| {
                                    counted.set(counted.get() + data.len() as u64);
                                    data.clear();
                                })
                            }
                        });
                }
                Workload::W2 => {
                    // Pre-aggregate per (auction, window) per timestamp, exchange, merge, emit.
                    let partial = generate(scope, events, true).unary_frontier(
                        Pipeline,
                        "combine",
                        |_, _| {
                            let mut state: HashMap<u64, HashMap<u64, (u64, u64)>> = HashMap::new();
                            let mut caps = HashMap::new();
                            move |(input, frontier), output| {
                                input.for_each(|cap, data| {
                                    let t = *cap.least().unwrap();
                                    caps.entry(t)
                                        .or_insert_with(|| cap.retain_least(0).unwrap());
                                    let m = state.entry(t).or_default();
                                    for b in data.drain(..) {
                                        let e = m.entry(b.auction).or_insert((0, 0));
                                        e.0 += 1;
                                        e.1 = e.1.max(b.price);
                                    }
                                });
                                let done: Vec<u64> = caps
                                    .keys()
                                    .copied()
                                    .filter(|t| !frontier.less_equal(t))
                                    .collect();
                                for t in done {
                                    let cap = caps.remove(&t).unwrap();
                                    if let Some(m) = state.remove(&t) {
                                        output.session(&cap).give_iterator(
                                            m.into_iter().map(|(a, (c, p))| (a, t, c, p)),
                                        );
                                    }
                                }
                            }
                        },
                    );
                    partial
                        .unary_frontier(
                            Exchange::new(|x: &(u64, u64, u64, u64)| x.0),
                            "windows",
                            |_, _| {
                                let mut state: HashMap<u64, HashMap<u64, (u64, u64)>> =
                                    HashMap::new();
                                let mut caps = HashMap::new();
                                move |(input, frontier), output| {
                                    input.for_each(|cap, data| {
                                        let t = *cap.least().unwrap();
                                        caps.entry(t)
                                            .or_insert_with(|| cap.retain_least(0).unwrap());
                                        let m = state.entry(t).or_default();
                                        for (a, _, c, p) in data.drain(..) {
                                            let e = m.entry(a).or_insert((0, 0));
                                            e.0 += c;
                                            e.1 = e.1.max(p);
                                        }
                                    });
                                    let done: Vec<u64> = caps
                                        .keys()
                                        .copied()
                                        .filter(|t| !frontier.less_equal(t))
                                        .collect();
                                    for t in done {
                                        let cap = caps.remove(&t).unwrap();
                                        if let Some(m) = state.remove(&t) {
                                            output.session(&cap).give_iterator(
                                                m.into_iter()
                                                    .map(|(a, (c, p))| (a, t * 10_000, c, p)),
                                            );
                                        }
                                    }
                                }
                            },
                        )
                        .sink(Pipeline, "count", {
                            let counted = counted.clone();
                            move |(input, _)| {
                                input.for_each(|_, data: &mut Vec<(u64, u64, u64, u64)>| {
                                    counted.set(counted.get() + data.len() as u64);
                                    data.clear();
                                })
                            }
                        });
                }
            }
        });
        while worker.has_dataflows() {
            worker.step_or_park(None);
        }
        out2.fetch_add(counted.get(), Ordering::Relaxed);
    })
    .expect("timely runs")
    .join();
    let wall = started.elapsed();
    (out.load(Ordering::Relaxed), wall)
}
