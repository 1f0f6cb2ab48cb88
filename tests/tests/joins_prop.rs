//! Property tests of runnel's joins (windowed and interval) against a brute-force reference
//! model written here over plain vectors from the documented semantics:
//!
//! * two sources, `left` and `right`, each with one partition whose epochs are cut only by its
//!   own `TestItem::Cut`s (both get the same number of cuts, so epoch `e` of one is epoch `e` of
//!   the other); after epoch `e` the operator's watermark is `min(W_e(left), W_e(right))` with
//!   `W_e = max ts so far - B` per source (`i64::MIN` before any record), and `i64::MAX` after
//!   the input; the records of epoch `e` of both sides are applied against the watermark after
//!   epoch `e - 1`;
//! * window join (tumbling windows of `S`): a record is late iff `start + S <= W_prev`; the
//!   result is every pair of on-time left and right records with the same key and window;
//! * interval join: a record is late iff `ts < W_prev`; the result is every pair of on-time
//!   `a` (left) and `b` (right) with the same key and `a.ts - lower <= b.ts <= a.ts + upper`,
//!   each exactly once.
//!
//! Every property runs on 1 and 2 workers and compares multisets of results and the late count.

mod common;

use std::time::Duration;

use proptest::prelude::*;
use runnel_engine::testing::{Collector, TestItem, TestSource};
use runnel_engine::{run, Job, RunOptions};
use runnel_operators::prelude::*;
use runnel_operators::{Joined, WindowJoined};

use common::*;

/// The payload of a record: `(key, value)`.
type V = (u8, u64);

fn ms(x: i64) -> Duration {
    Duration::from_millis(x as u64)
}

/// Pads the side with fewer cuts with trailing cuts (empty epochs at the end), so that both
/// sides have the same number of epochs.
fn same_epochs(mut left: Vec<In>, mut right: Vec<In>) -> (Vec<In>, Vec<In>) {
    while cuts(&left) < cuts(&right) {
        left.push(In::Cut);
    }
    while cuts(&right) < cuts(&left) {
        right.push(In::Cut);
    }
    (left, right)
}

/// Two partitions with the same number of cuts.
fn two_sides(max_len: usize) -> impl Strategy<Value = (Vec<In>, Vec<In>)> {
    (partition(max_len), partition(max_len)).prop_map(|(l, r)| same_epochs(l, r))
}

// ---------------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------------

/// The epochs of both sides and, for each epoch, the watermark that held when it began.
struct Epochs {
    left: Vec<Vec<Rec>>,
    right: Vec<Vec<Rec>>,
    /// `W_prev` of each epoch: the min of both sides' watermarks after the epoch before.
    wprev: Vec<i64>,
}

fn epochs(left: &[In], right: &[In], bl: i64, br: i64) -> Epochs {
    let (left, right) = (split_epochs(left), split_epochs(right));
    assert_eq!(left.len(), right.len(), "both sides have the same epochs");
    let (wl, wr) = (watermarks(&left, bl), watermarks(&right, br));
    let mut wprev = vec![WM_MIN];
    for e in 0..left.len() - 1 {
        wprev.push(wl[e].min(wr[e]));
    }
    Epochs { left, right, wprev }
}

/// The on-time records of each side, `(ts, key, value)`, and the number of late ones, where
/// `late(ts, W_prev)` says whether a record is late.
fn on_time(eps: &Epochs, late: impl Fn(i64, i64) -> bool) -> (Vec<Rec>, Vec<Rec>, u64) {
    let (mut ls, mut rs, mut n_late) = (Vec::new(), Vec::new(), 0);
    for (e, &w) in eps.wprev.iter().enumerate() {
        for (side, out) in [(&eps.left[e], &mut ls), (&eps.right[e], &mut rs)] {
            for &r in side {
                if late(r.0, w) {
                    n_late += 1;
                } else {
                    out.push(r);
                }
            }
        }
    }
    (ls, rs, n_late)
}

type WJ = WindowJoined<u8, V, V>;
type IJ = Joined<u8, V, V>;

fn window_join_reference(eps: &Epochs, size: i64) -> (Vec<WJ>, u64) {
    let start = |ts: i64| ts.div_euclid(size) * size;
    let (ls, rs, n_late) = on_time(eps, |ts, w| start(ts) + size <= w);
    let mut out = Vec::new();
    for &(lts, lk, lv) in &ls {
        for &(rts, rk, rv) in &rs {
            if lk == rk && start(lts) == start(rts) {
                out.push(WindowJoined {
                    key: lk,
                    start: start(lts),
                    end: start(lts) + size,
                    left: (lk, lv),
                    right: (rk, rv),
                });
            }
        }
    }
    out.sort();
    (out, n_late)
}

fn interval_join_reference(eps: &Epochs, lower: i64, upper: i64) -> (Vec<IJ>, u64) {
    let (ls, rs, n_late) = on_time(eps, |ts, w| ts < w);
    let mut out = Vec::new();
    for &(a_ts, ak, av) in &ls {
        for &(b_ts, bk, bv) in &rs {
            if ak == bk && a_ts - lower <= b_ts && b_ts <= a_ts + upper {
                out.push(Joined {
                    key: ak,
                    left: (ak, av),
                    left_ts: a_ts,
                    right: (bk, bv),
                    right_ts: b_ts,
                });
            }
        }
    }
    out.sort();
    (out, n_late)
}

// ---------------------------------------------------------------------------------------------
// Running the operators.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Which {
    Window { size: i64 },
    Interval { lower: i64, upper: i64 },
}

/// Runs a join of `left` and `right` (lists of partitions) with bounds `bl` and `br`; returns
/// the sorted window-join and interval-join results and the late count.
fn run_join(
    left: Vec<Vec<TestItem<V>>>,
    right: Vec<Vec<TestItem<V>>>,
    bl: i64,
    br: i64,
    which: Which,
    opts: RunOptions,
) -> (Vec<WJ>, Vec<IJ>, u64) {
    let wj: Collector<WJ> = Collector::new();
    let ij: Collector<IJ> = Collector::new();
    let (wj2, ij2) = (wj.clone(), ij.clone());
    let job = Job::new("joins-prop", "joins against the reference", move |flow| {
        let l = flow
            .source("left", TestSource::new(left.clone()), source_options(bl))?
            .key_by(|r: &V| r.0);
        let r = flow
            .source("right", TestSource::new(right.clone()), source_options(br))?
            .key_by(|r: &V| r.0);
        match which {
            Which::Window { size } => l.window_join(&r, ms(size))?.sink("out", wj2.sink()),
            Which::Interval { lower, upper } => l
                .interval_join(&r, ms(lower), ms(upper))?
                .sink("out", ij2.sink()),
        }
    });
    let summary = run(&job, opts).expect("the job runs");
    (wj.sorted_data(), ij.sorted_data(), summary.late)
}

fn check_window_join(
    left: &[In],
    right: &[In],
    bl: i64,
    br: i64,
    size: i64,
) -> Result<(), TestCaseError> {
    let (want, want_late) = window_join_reference(&epochs(left, right, bl, br), size);
    for workers in [1, 2] {
        let (got, _, late) = run_join(
            vec![to_test_items(left)],
            vec![to_test_items(right)],
            bl,
            br,
            Which::Window { size },
            cut_only(workers),
        );
        prop_assert_eq!(&got, &want, "window join ({} workers)", workers);
        prop_assert_eq!(late, want_late, "late count ({} workers)", workers);
    }
    Ok(())
}

fn check_interval_join(
    left: &[In],
    right: &[In],
    bl: i64,
    br: i64,
    lower: i64,
    upper: i64,
) -> Result<(), TestCaseError> {
    let (want, want_late) = interval_join_reference(&epochs(left, right, bl, br), lower, upper);
    for workers in [1, 2] {
        let (_, got, late) = run_join(
            vec![to_test_items(left)],
            vec![to_test_items(right)],
            bl,
            br,
            Which::Interval { lower, upper },
            cut_only(workers),
        );
        prop_assert_eq!(&got, &want, "interval join ({} workers)", workers);
        prop_assert_eq!(late, want_late, "late count ({} workers)", workers);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    /// Window join: pairs of on-time records per key and window, late count.
    #[test]
    fn window_join_matches_reference(
        (left, right) in two_sides(120),
        bl in bound(),
        br in bound(),
        size in 1i64..50,
    ) {
        check_window_join(&left, &right, bl, br, size)?;
    }

    /// Interval join: pairs of on-time records within the bounds, each once, late count.
    #[test]
    fn interval_join_matches_reference(
        (left, right) in two_sides(120),
        bl in bound(),
        br in bound(),
        lower in zero_or_some(),
        upper in zero_or_some(),
    ) {
        check_interval_join(&left, &right, bl, br, lower, upper)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    /// Partitions each in event-time order: no record is ever late (whatever the epochs, which
    /// the timer cuts here), so both joins give the pairs of all records, on 1, 2 and 4 workers.
    #[test]
    fn same_results_on_1_2_4_workers(
        left in ordered_partitions(50),
        right in ordered_partitions(50),
        bl in 0i64..20,
        br in 0i64..20,
        size in 1i64..50,
        lower in zero_or_some(),
        upper in zero_or_some(),
    ) {
        let everything = Epochs {
            left: vec![all_records(&left)],
            right: vec![all_records(&right)],
            wprev: vec![WM_MIN],
        };
        let (want_w, _) = window_join_reference(&everything, size);
        let (want_i, _) = interval_join_reference(&everything, lower, upper);
        let items = |parts: &[Vec<In>]| parts.iter().map(|p| to_test_items(p)).collect::<Vec<_>>();
        for workers in [1, 2, 4] {
            let (got_w, _, late) = run_join(
                items(&left),
                items(&right),
                bl,
                br,
                Which::Window { size },
                timer_epochs(workers),
            );
            prop_assert_eq!(late, 0, "window join late ({} workers)", workers);
            prop_assert_eq!(&got_w, &want_w, "window join ({} workers)", workers);
            let (_, got_i, late) = run_join(
                items(&left),
                items(&right),
                bl,
                br,
                Which::Interval { lower, upper },
                timer_epochs(workers),
            );
            prop_assert_eq!(late, 0, "interval join late ({} workers)", workers);
            prop_assert_eq!(&got_i, &want_i, "interval join ({} workers)", workers);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Examples with explicit expected values.
// ---------------------------------------------------------------------------------------------

fn at(ts: i64, v: u64) -> TestItem<V> {
    TestItem::At(ts, (1, v))
}

/// The watermark of a two-input operator is the minimum of both sources' watermarks; records
/// whose window has fired are late.
#[test]
fn example_window_join_with_late_records() {
    let left = vec![
        at(1, 10),
        at(12, 11),
        TestItem::Cut,
        at(5, 12), // on time: W_prev = min(12, 3) = 3
        at(25, 13),
        TestItem::Cut,
        at(8, 14), // late: W_prev = min(25, 27) = 25 and [0,10) ended at 10
    ];
    let right = vec![
        at(3, 20),
        TestItem::Cut,
        at(14, 21),
        at(27, 22),
        TestItem::Cut,
        at(40, 23),
        at(9, 24), // late
    ];
    for workers in [1, 2] {
        let (got, _, late) = run_join(
            vec![left.clone()],
            vec![right.clone()],
            0,
            0,
            Which::Window { size: 10 },
            cut_only(workers),
        );
        let j = |start: i64, l: u64, r: u64| WindowJoined {
            key: 1u8,
            start,
            end: start + 10,
            left: (1u8, l),
            right: (1u8, r),
        };
        assert_eq!(
            got,
            vec![j(0, 10, 20), j(0, 12, 20), j(10, 11, 21), j(20, 13, 22)]
        );
        assert_eq!(late, 2);
    }
}

/// Interval join with lower 5 and upper 10: pairs within the same epoch and across epochs;
/// records behind the watermark are late.
#[test]
fn example_interval_join_with_late_records() {
    let left = vec![
        at(100, 1),
        TestItem::Cut,
        at(90, 2),  // late: W_prev = min(100, 111) = 100
        at(105, 3), // joins 110 and 111 (from the epoch before)
    ];
    let right = vec![
        at(95, 7),  // joins 100: 100 - 5 <= 95
        at(110, 8), // joins 100: 110 <= 100 + 10
        at(111, 9), // too far from 100
        TestItem::Cut,
        at(96, 10), // late
    ];
    for workers in [1, 2] {
        let (_, got, late) = run_join(
            vec![left.clone()],
            vec![right.clone()],
            0,
            0,
            Which::Interval {
                lower: 5,
                upper: 10,
            },
            cut_only(workers),
        );
        let j = |lts: i64, l: u64, rts: i64, r: u64| Joined {
            key: 1u8,
            left: (1u8, l),
            left_ts: lts,
            right: (1u8, r),
            right_ts: rts,
        };
        let mut want = vec![
            j(100, 1, 95, 7),
            j(100, 1, 110, 8),
            j(105, 3, 110, 8),
            j(105, 3, 111, 9),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(late, 2);
    }
}
