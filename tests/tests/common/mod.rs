//! Shared helpers of the property tests: input generation, the epochs and watermarks of the
//! reference model, and running jobs deterministically (epochs cut only by `TestItem::Cut`).
//!
//! Nothing here calls into the operators under test: the reference models in the test files are
//! written from the documented semantics over plain vectors.
#![allow(dead_code)]

use std::time::Duration;

use proptest::prelude::*;
use runnel_engine::testing::TestItem;
use runnel_engine::{RunOptions, SourceOptions};

/// A record of the reference model: `(ts, key, value)`.
pub type Rec = (i64, u8, u64);

/// One step of a test partition: a record or an epoch cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum In {
    /// A record.
    R(Rec),
    /// Close the epoch here.
    Cut,
}

/// The watermark before anything was seen.
pub const WM_MIN: i64 = i64::MIN;
/// The watermark at the end of the input.
pub const WM_MAX: i64 = i64::MAX;

/// Splits a partition at its cuts: epoch 0 is everything before the first cut, and so on. There
/// is always at least one epoch (a trailing cut makes an empty last epoch).
pub fn split_epochs(items: &[In]) -> Vec<Vec<Rec>> {
    let mut eps = vec![Vec::new()];
    for it in items {
        match it {
            In::R(r) => eps.last_mut().expect("non-empty").push(*r),
            In::Cut => eps.push(Vec::new()),
        }
    }
    eps
}

/// The partition watermark after each epoch with bounded out-of-orderness `b`:
/// `W_e = max(ts of epochs <= e) - b`, or `i64::MIN` while nothing was read.
pub fn watermarks(eps: &[Vec<Rec>], b: i64) -> Vec<i64> {
    let mut max: Option<i64> = None;
    eps.iter()
        .map(|ep| {
            for r in ep {
                max = Some(max.map_or(r.0, |m| m.max(r.0)));
            }
            max.map_or(WM_MIN, |m| m - b)
        })
        .collect()
}

/// The number of proptest cases: `default`, or `RUNNEL_PROP_CASES` when set (for longer runs).
pub fn cases(default: u32) -> u32 {
    std::env::var("RUNNEL_PROP_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Number of cuts in a partition.
pub fn cuts(items: &[In]) -> usize {
    items.iter().filter(|i| matches!(i, In::Cut)).count()
}

/// The partition as the engine's test source wants it; the payload is `(key, value)`.
pub fn to_test_items(items: &[In]) -> Vec<TestItem<(u8, u64)>> {
    items
        .iter()
        .map(|i| match *i {
            In::R((ts, k, v)) => TestItem::At(ts, (k, v)),
            In::Cut => TestItem::Cut,
        })
        .collect()
}

/// Source options with bounded out-of-orderness `b` ms (the default, monotonic, for 0), reading
/// at most 3 records per call (many reads per partition; with timer epochs, many epochs).
pub fn source_options<T>(b: i64) -> SourceOptions<T> {
    let o = SourceOptions::new().batch_size(3);
    if b == 0 {
        o
    } else {
        o.bounded_out_of_order(Duration::from_millis(b as u64))
    }
}

/// Run options whose timer never cuts an epoch: epochs are cut only by `TestItem::Cut`.
pub fn cut_only(workers: usize) -> RunOptions {
    RunOptions {
        workers,
        epoch_interval: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// Run options whose timer cuts epochs every millisecond (non-deterministic epochs).
pub fn timer_epochs(workers: usize) -> RunOptions {
    RunOptions {
        workers,
        epoch_interval: Duration::from_millis(1),
        ..Default::default()
    }
}

/// One partition of up to `max_len` records, keys `0..4`, with cuts at random places.
///
/// Event times follow a clock that moves forward by 0..4 ms a record, from a start in
/// `-50..50`. Most records are near the clock (up to 4 ms behind); one in four (per case: one in
/// two to one in ten) lags it by up to `spread` ms (0..=100, per case), which makes out-of-order,
/// late and nearly-late data. One case in six draws times uniformly from `-50..400` instead
/// (wildly out of order).
pub fn partition(max_len: usize) -> impl Strategy<Value = Vec<In>> {
    let rec = (
        0i64..4,
        0i64..=4,
        0u32..100,
        0i64..=100,
        -50i64..400,
        0u8..4,
        0u64..100,
        prop::bool::weighted(0.12),
    );
    (
        -50i64..50,
        0i64..=100,
        10u32..50,
        prop::bool::weighted(0.17),
        prop::collection::vec(rec, 0..max_len),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(start, spread, lag_pct, uniform, recs, trailing_cut)| {
            let mut clock = start;
            let mut out = Vec::with_capacity(recs.len() + 8);
            for (step, jitter, dice, lag, uni, k, v, cut) in recs {
                if cut {
                    out.push(In::Cut);
                }
                clock += step;
                let ts = if uniform {
                    uni
                } else if dice < lag_pct {
                    clock - lag * spread / 100
                } else {
                    clock - jitter
                };
                out.push(In::R((ts, k, v)));
            }
            if trailing_cut {
                out.push(In::Cut);
            }
            out
        })
}

/// A bound of out-of-orderness: `0..60`, small (`0..8`) half the time.
pub fn bound() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..8, 0i64..60]
}

/// 1 to 4 partitions, each in event-time order (ts never decreases), with cuts.
pub fn ordered_partitions(max_len: usize) -> impl Strategy<Value = Vec<Vec<In>>> {
    let rec = (0i64..5, 0u8..4, 0u64..100, prop::bool::weighted(0.1));
    let part = (-50i64..50, prop::collection::vec(rec, 0..max_len)).prop_map(|(start, recs)| {
        let mut clock = start;
        let mut out = Vec::new();
        for (step, k, v, cut) in recs {
            if cut {
                out.push(In::Cut);
            }
            clock += step;
            out.push(In::R((clock, k, v)));
        }
        out
    });
    prop::collection::vec(part, 1..5)
}

/// Every record of every partition.
pub fn all_records(parts: &[Vec<In>]) -> Vec<Rec> {
    parts
        .iter()
        .flatten()
        .filter_map(|i| match i {
            In::R(r) => Some(*r),
            In::Cut => None,
        })
        .collect()
}

/// A lateness or interval bound: 0 half the time, else `1..60`.
pub fn zero_or_some() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), 1i64..60]
}
