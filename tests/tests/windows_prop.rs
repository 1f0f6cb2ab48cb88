//! Property tests of runnel's windows (tumbling, sliding, session), their late-data policies
//! (drop, allowed lateness with updated results, late side output) and session merging, against
//! a brute-force reference model written here over plain vectors from the documented semantics:
//!
//! * one source partition, epochs cut only by `TestItem::Cut`; after epoch `e` the watermark is
//!   `W_e = max ts so far - B` (`i64::MIN` before any record), and `i64::MAX` after the input;
//! * the records of epoch `e` are applied against `W_prev`, the watermark after epoch `e - 1`;
//!   then the watermark becomes `W_e` and what it closes fires;
//! * a window `[start, end)` has expired at `W` iff `end + L <= W`; a record is late iff every
//!   window it belongs to has expired at `W_prev`; a window fires (per key, if it holds a record)
//!   at the end of the first epoch with `end <= W`, and is emitted again at the end of an epoch
//!   in which it received a record after firing (within its allowed lateness `L`);
//! * sessions: a record's window is `[ts, ts + G)`; late iff `ts + G + L <= W_prev`; otherwise it
//!   merges with every session of its key that it overlaps (`a.start < b.end && b.start <
//!   a.end`: windows that only touch stay apart); sessions fire once when `end <= W`, again
//!   (once `end <= W`) after a fired session absorbed a record, and are dropped when
//!   `end + L <= W`.
//!
//! Every property is checked on 1 and on 2 workers (with one partition the second worker reads
//! nothing and reports `+inf`, so the results must be the same), both as a multiset of results
//! and as a multiset of `(epoch, result)`, with the run's late count and, for
//! `aggregate_with_late`, the late stream.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use runnel_engine::testing::{Collector, TestItem, TestSource};
use runnel_engine::{run, Data, Job};
use runnel_operators::prelude::*;
use runnel_operators::{WindowResult, WindowSpec};

use common::*;

/// The payload of a record: `(key, value)`.
type V = (u8, u64);

fn ms(x: i64) -> Duration {
    Duration::from_millis(x as u64)
}

fn value(r: &V) -> u64 {
    r.1
}

fn value_f64(r: &V) -> f64 {
    r.1 as f64
}

// ---------------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------------

/// What the reference says a run emits.
#[derive(Debug, Default)]
struct RefOut {
    /// `(epoch, key, start, end, values of the records in the window)`, one per emission.
    emitted: Vec<(u64, u8, i64, i64, Vec<u64>)>,
    /// `(key, value, belongs to no window)` of each late record.
    late: Vec<(u8, u64, bool)>,
}

/// The watermarks that close epoch `e` of `n`: `W_e`, and after the last epoch also `+inf`.
fn closing_marks(wms: &[i64], e: usize) -> Vec<i64> {
    if e + 1 == wms.len() {
        vec![wms[e], WM_MAX]
    } else {
        vec![wms[e]]
    }
}

/// The starts of every window `[s, s + size)` with `s == offset (mod slide)` that contains
/// `ts`.
fn windows_of(ts: i64, size: i64, slide: i64, offset: i64) -> Vec<i64> {
    (ts - size + 1..=ts)
        .filter(|s| (s - offset).rem_euclid(slide) == 0)
        .collect()
}

/// Tumbling (`slide == size`) and sliding windows.
fn aligned_reference(
    eps: &[Vec<Rec>],
    wms: &[i64],
    (size, slide, offset): (i64, i64, i64),
    l: i64,
) -> RefOut {
    // (key, window start) -> values of the records added to the window
    let mut contents: BTreeMap<(u8, i64), Vec<u64>> = BTreeMap::new();
    let mut out = RefOut::default();
    let mut wprev = WM_MIN;
    for (e, ep) in eps.iter().enumerate() {
        let epoch = e as u64;
        let mut updated: BTreeSet<(u8, i64)> = BTreeSet::new();
        for &(ts, k, v) in ep {
            let all = windows_of(ts, size, slide, offset);
            let live: Vec<i64> = all
                .iter()
                .copied()
                .filter(|s| s + size + l > wprev)
                .collect();
            if live.is_empty() {
                out.late.push((k, v, all.is_empty()));
                continue;
            }
            for s in live {
                contents.entry((k, s)).or_default().push(v);
                if s + size <= wprev {
                    // Already fired, still within its lateness: an updated result is due.
                    updated.insert((k, s));
                }
            }
        }
        for (k, s) in updated {
            out.emitted
                .push((epoch, k, s, s + size, contents[&(k, s)].clone()));
        }
        for w in closing_marks(wms, e) {
            for (&(k, s), vals) in &contents {
                let end = s + size;
                if end > wprev && end <= w {
                    out.emitted.push((epoch, k, s, end, vals.clone()));
                }
            }
            wprev = wprev.max(w);
        }
    }
    out
}

struct RefSession {
    start: i64,
    end: i64,
    vals: Vec<u64>,
    fired: bool,
    updated: bool,
}

/// Session windows with gap `gap` and allowed lateness `l`.
fn session_reference(eps: &[Vec<Rec>], wms: &[i64], gap: i64, l: i64) -> RefOut {
    let mut sessions: BTreeMap<u8, Vec<RefSession>> = BTreeMap::new();
    let mut out = RefOut::default();
    let mut wprev = WM_MIN;
    for (e, ep) in eps.iter().enumerate() {
        let epoch = e as u64;
        for &(ts, k, v) in ep {
            if ts + gap + l <= wprev {
                out.late.push((k, v, false));
                continue;
            }
            let list = sessions.entry(k).or_default();
            let mut cur = RefSession {
                start: ts,
                end: ts + gap,
                vals: vec![v],
                fired: false,
                updated: false,
            };
            // Merge until nothing touches (brute force, to a fixed point).
            while let Some(i) = list
                .iter()
                .position(|s| s.start < cur.end && cur.start < s.end)
            {
                let s = list.remove(i);
                cur.start = cur.start.min(s.start);
                cur.end = cur.end.max(s.end);
                cur.vals.extend(s.vals);
                cur.fired |= s.fired;
            }
            // A fired session that absorbed a record is emitted again once the watermark has
            // reached its end.
            cur.updated = cur.fired;
            list.push(cur);
        }
        for w in closing_marks(wms, e) {
            for (&k, list) in sessions.iter_mut() {
                for s in list.iter_mut() {
                    if s.end <= w && (!s.fired || s.updated) {
                        out.emitted.push((epoch, k, s.start, s.end, s.vals.clone()));
                        s.fired = true;
                        s.updated = false;
                    }
                }
                list.retain(|s| s.end + l > w);
            }
            wprev = wprev.max(w);
        }
    }
    out
}

fn reference(items: &[In], b: i64, spec: WindowSpec, l: i64) -> RefOut {
    let eps = split_epochs(items);
    let wms = watermarks(&eps, b);
    match spec {
        WindowSpec::Tumbling { size, offset } => {
            aligned_reference(&eps, &wms, (size, size, offset), l)
        }
        WindowSpec::Sliding {
            size,
            slide,
            offset,
        } => aligned_reference(&eps, &wms, (size, slide, offset), l),
        WindowSpec::Session { gap } => session_reference(&eps, &wms, gap, l),
        #[allow(unreachable_patterns)]
        other => unreachable!("no reference for {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running the operators.
// ---------------------------------------------------------------------------------------------

/// How the window operator is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `aggregate` (tumbling and sliding windows pre-aggregate per pane before the exchange).
    Combiner,
    /// `without_combiner().aggregate`.
    NoCombiner,
    /// `aggregate_with_late`: late records on a second stream.
    LateOutput,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Combiner),
        Just(Mode::NoCombiner),
        Just(Mode::LateOutput)
    ]
}

/// What a run produced.
struct Got<O> {
    /// `(epoch, (key, start, end, value))`, sorted.
    results: Vec<(u64, (u8, i64, i64, O))>,
    /// The late stream (with [`Mode::LateOutput`]), sorted.
    late: Vec<(u8, V)>,
    /// `RunSummary::late`.
    late_count: u64,
}

#[allow(clippy::too_many_arguments)]
fn run_windows<A, O>(
    parts: Vec<Vec<TestItem<V>>>,
    workers: usize,
    b: i64,
    spec: WindowSpec,
    l: i64,
    mode: Mode,
    agg: A,
    conv: fn(A::Out) -> O,
) -> Got<O>
where
    A: Aggregate<V> + Send + Sync,
    O: Data + Ord,
{
    let out: Collector<(u8, i64, i64, O)> = Collector::new();
    let late: Collector<(u8, V)> = Collector::new();
    let (out_sink, late_sink) = (out.clone(), late.clone());
    let job = Job::new(
        "windows-prop",
        "windows against the reference",
        move |flow| {
            let keyed = flow
                .source("in", TestSource::new(parts.clone()), source_options(b))?
                .key_by(|r: &V| r.0);
            let mut w = keyed.window(spec);
            if l > 0 {
                w = w.allowed_lateness(ms(l));
            }
            let results = match mode {
                Mode::Combiner => w.aggregate(agg.clone())?,
                Mode::NoCombiner => w.without_combiner().aggregate(agg.clone())?,
                Mode::LateOutput => {
                    let (main, late) = w.aggregate_with_late(agg.clone())?;
                    late.sink("late", late_sink.sink())?;
                    main
                }
            };
            results
                .map(move |r| (r.key, r.start, r.end, conv(r.value)))
                .sink("out", out_sink.sink())
        },
    );
    let summary = run(&job, cut_only(workers)).expect("the job runs");
    let mut results: Vec<(u64, (u8, i64, i64, O))> = out
        .events()
        .into_iter()
        .map(|(epoch, e)| (epoch.0, e.data))
        .collect();
    results.sort();
    Got {
        results,
        late: late.sorted_data(),
        late_count: summary.late,
    }
}

/// Runs the operator on 1 and 2 workers and compares with the reference `want`, whose window
/// contents are aggregated with `refagg`.
#[allow(clippy::too_many_arguments)]
fn compare<A, O>(
    items: &[In],
    b: i64,
    spec: WindowSpec,
    l: i64,
    mode: Mode,
    want: &RefOut,
    agg: A,
    conv: fn(A::Out) -> O,
    refagg: fn(&[u64]) -> O,
) -> Result<(), TestCaseError>
where
    A: Aggregate<V> + Send + Sync,
    O: Data + Ord,
{
    let mut want_results: Vec<(u64, (u8, i64, i64, O))> = want
        .emitted
        .iter()
        .map(|(e, k, s, end, vals)| (*e, (*k, *s, *end, refagg(vals))))
        .collect();
    want_results.sort();
    let want_plain = strip_epochs(&want_results);
    // Records in no window at all (only when slide > size) are "late" by the letter of the
    // rule (every window they belong to has expired, vacuously); see `sliding_with_gaps`.
    let no_window = want.late.iter().filter(|x| x.2).count() as u64;
    let late_min = want.late.len() as u64 - no_window;
    let mut want_late: Vec<(u8, V)> = want
        .late
        .iter()
        .filter(|x| !x.2)
        .map(|&(k, v, _)| (k, (k, v)))
        .collect();
    want_late.sort();

    for workers in [1, 2] {
        let got = run_windows(
            vec![to_test_items(items)],
            workers,
            b,
            spec,
            l,
            mode,
            agg.clone(),
            conv,
        );
        prop_assert_eq!(
            &strip_epochs(&got.results),
            &want_plain,
            "results ({} workers)",
            workers
        );
        prop_assert_eq!(
            &got.results,
            &want_results,
            "epochs of the results ({} workers)",
            workers
        );
        if no_window == 0 {
            prop_assert_eq!(got.late_count, late_min, "late count ({} workers)", workers);
            if mode == Mode::LateOutput {
                prop_assert_eq!(&got.late, &want_late, "late output ({} workers)", workers);
            }
        } else {
            prop_assert!(
                late_min <= got.late_count && got.late_count <= late_min + no_window,
                "late count {} not in {}..={} ({} workers)",
                got.late_count,
                late_min,
                late_min + no_window,
                workers
            );
        }
    }
    Ok(())
}

fn strip_epochs<T: Clone + Ord>(xs: &[(u64, T)]) -> Vec<T> {
    let mut v: Vec<T> = xs.iter().map(|(_, x)| x.clone()).collect();
    v.sort();
    v
}

fn ref_count(v: &[u64]) -> u64 {
    v.len() as u64
}
fn ref_sum(v: &[u64]) -> u64 {
    v.iter().sum()
}
fn ref_min(v: &[u64]) -> u64 {
    *v.iter().min().expect("a window holds a record")
}
fn ref_max(v: &[u64]) -> u64 {
    *v.iter().max().expect("a window holds a record")
}
/// The mean as f64 bits (the values are small integers, so sums are exact in any order).
fn ref_avg(v: &[u64]) -> u64 {
    (ref_sum(v) as f64 / v.len() as f64).to_bits()
}
fn ref_count_max(v: &[u64]) -> (u64, u64) {
    (ref_count(v), ref_max(v))
}

/// Checks the operator for `spec` with aggregate number `agg` (Count, Sum, Min, Max, Avg,
/// (Count, Max)) against the reference.
fn check(
    items: &[In],
    b: i64,
    spec: WindowSpec,
    l: i64,
    mode: Mode,
    agg: u8,
) -> Result<(), TestCaseError> {
    let want = reference(items, b, spec, l);
    let id: fn(u64) -> u64 = |x| x;
    let value: fn(&V) -> u64 = value;
    match agg {
        0 => compare(items, b, spec, l, mode, &want, Count, id, ref_count),
        1 => compare(items, b, spec, l, mode, &want, Sum::of(value), id, ref_sum),
        2 => compare(items, b, spec, l, mode, &want, Min::of(value), id, ref_min),
        3 => compare(items, b, spec, l, mode, &want, Max::of(value), id, ref_max),
        4 => compare(
            items,
            b,
            spec,
            l,
            mode,
            &want,
            Avg::of(value_f64 as fn(&V) -> f64),
            f64::to_bits,
            ref_avg,
        ),
        _ => compare(
            items,
            b,
            spec,
            l,
            mode,
            &want,
            (Count, Max::of(value)),
            |x: (u64, u64)| x,
            ref_count_max,
        ),
    }
}

/// `aggregate_top(Count, n, count)` per window, from the reference's window contents: the
/// keys whose count is at least the window's `n`-th largest, with the epoch the window fired in.
fn top_reference(want: &RefOut, n: usize) -> Vec<(u64, (u8, i64, i64, u64))> {
    // (epoch, start, end) -> (key, count)
    let mut windows: BTreeMap<(u64, i64, i64), Vec<(u8, u64)>> = BTreeMap::new();
    for (e, k, s, end, vals) in &want.emitted {
        windows
            .entry((*e, *s, *end))
            .or_default()
            .push((*k, vals.len() as u64));
    }
    let mut out = Vec::new();
    for ((e, s, end), keys) in windows {
        let mut counts: Vec<u64> = keys.iter().map(|kc| kc.1).collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let nth = counts[(n - 1).min(counts.len() - 1)];
        for (k, c) in keys {
            if c >= nth {
                out.push((e, (k, s, end, c)));
            }
        }
    }
    out.sort();
    out
}

fn run_top(
    items: &[In],
    workers: usize,
    b: i64,
    spec: WindowSpec,
    n: usize,
) -> Vec<(u64, (u8, i64, i64, u64))> {
    let out: Collector<(u8, i64, i64, u64)> = Collector::new();
    let sink = out.clone();
    let parts = vec![to_test_items(items)];
    let job = Job::new(
        "windows-top-prop",
        "window top-N against the reference",
        move |flow| {
            flow.source("in", TestSource::new(parts.clone()), source_options(b))?
                .key_by(|r: &V| r.0)
                .window(spec)
                .aggregate_top(Count, n, |_k, c| *c)?
                .map(|r| (r.key, r.start, r.end, r.value))
                .sink("out", sink.sink())
        },
    );
    run(&job, cut_only(workers)).expect("the job runs");
    let mut got: Vec<(u64, (u8, i64, i64, u64))> = out
        .events()
        .into_iter()
        .map(|(epoch, e)| (epoch.0, e.data))
        .collect();
    got.sort();
    got
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

/// `(size, slide)` with `1 <= slide <= size < 50`; a third of the time the slide divides the
/// size, otherwise it is anything up to the size (size 10 slide 4 and the like).
fn size_and_slide() -> impl Strategy<Value = (i64, i64)> {
    (1i64..50).prop_flat_map(|size| {
        let divisors: Vec<i64> = (1..=size).filter(|d| size % d == 0).collect();
        (
            Just(size),
            prop_oneof![1 => prop::sample::select(divisors), 2 => 1..=size],
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    /// Tumbling windows: results (with their epochs), late count and late output.
    #[test]
    fn tumbling_matches_reference(
        items in partition(200),
        b in bound(),
        size in 1i64..50,
        // Windows aligned to 0, or starting at an offset (which counts modulo the size).
        offset in prop_oneof![Just(0i64), 0i64..120],
        l in zero_or_some(),
        mode in mode(),
        agg in 0u8..6,
    ) {
        check(&items, b, Tumbling::with_offset(ms(size), ms(offset)), l, mode, agg)?;
    }

    /// Sliding windows with `slide <= size` (dividing it or not).
    #[test]
    fn sliding_matches_reference(
        items in partition(200),
        b in bound(),
        (size, slide) in size_and_slide(),
        offset in prop_oneof![Just(0i64), 0i64..120],
        l in zero_or_some(),
        mode in mode(),
        agg in 0u8..6,
    ) {
        check(&items, b, Sliding::with_offset(ms(size), ms(slide), ms(offset)), l, mode, agg)?;
    }

    /// `aggregate_top`: per tumbling or sliding window, the keys with the `n` largest counts
    /// and their ties, in the epoch the window fires, on 1 and 2 workers.
    #[test]
    fn top_keys_match_reference(
        items in partition(200),
        b in bound(),
        (size, slide) in size_and_slide(),
        tumbling in any::<bool>(),
        n in 1usize..4,
    ) {
        let spec = if tumbling {
            WindowSpec::Tumbling { size, offset: 0 }
        } else {
            WindowSpec::Sliding { size, slide, offset: 0 }
        };
        let want = top_reference(&reference(&items, b, spec, 0), n);
        for workers in [1, 2] {
            prop_assert_eq!(&run_top(&items, workers, b, spec, n), &want, "{} workers", workers);
        }
    }

    /// Sliding windows with `slide > size`: some records belong to no window. Results must
    /// match; such records may or may not be counted late (the rule is vacuous for them), and
    /// every other record is counted exactly as the reference says.
    #[test]
    fn sliding_with_gaps(
        items in partition(120),
        b in bound(),
        (size, slide) in (1i64..20).prop_flat_map(|s| (Just(s), s + 1..40)),
        offset in prop_oneof![Just(0i64), 0i64..120],
        l in zero_or_some(),
        mode in prop_oneof![Just(Mode::Combiner), Just(Mode::NoCombiner)],
        agg in 0u8..6,
    ) {
        check(&items, b, Sliding::with_offset(ms(size), ms(slide), ms(offset)), l, mode, agg)?;
    }

    /// Session windows: merging (also of sessions that already fired), re-emission within the
    /// allowed lateness, dropping, late count and late output.
    #[test]
    fn sessions_match_reference(
        items in partition(200),
        b in bound(),
        // Gaps of 32 ms and more have timer buckets wider than a millisecond.
        gap in prop_oneof![1i64..30, 30i64..200],
        l in zero_or_some(),
        late_output in any::<bool>(),
        agg in 0u8..6,
    ) {
        let mode = if late_output { Mode::LateOutput } else { Mode::Combiner };
        check(&items, b, Session::with_gap(ms(gap)), l, mode, agg)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Updating windows (`aggregate_updating`): a window's result at each epoch it changed in.
// ---------------------------------------------------------------------------------------------

/// What `aggregate_updating` emits, by the documented rule: records of epoch `e` are applied
/// against `W_prev` (late iff every window they belong to has expired, `end + L <= W_prev`);
/// at the end of the epoch every window that received a record emits its result over all its
/// records so far, with the event time of the newest record it took in the epoch. Windows are
/// dropped once `end + L <= W`; nothing is emitted for that. Returns `(epoch, (key, start, end,
/// value), event time)` sorted, and the late count.
fn updating_reference(
    items: &[In],
    b: i64,
    (size, slide, offset): (i64, i64, i64),
    l: i64,
    refagg: fn(&[u64]) -> u64,
) -> (Vec<Updated>, u64) {
    let eps = split_epochs(items);
    let wms = watermarks(&eps, b);
    let mut contents: BTreeMap<(u8, i64), Vec<u64>> = BTreeMap::new();
    let mut out = Vec::new();
    let mut late = 0;
    let mut wprev = WM_MIN;
    for (e, ep) in eps.iter().enumerate() {
        let epoch = e as u64;
        // (key, window start) -> the newest event time the window took in this epoch
        let mut touched: BTreeMap<(u8, i64), i64> = BTreeMap::new();
        for &(ts, k, v) in ep {
            let live: Vec<i64> = windows_of(ts, size, slide, offset)
                .into_iter()
                .filter(|s| s + size + l > wprev)
                .collect();
            if live.is_empty() {
                late += 1;
            }
            for s in live {
                contents.entry((k, s)).or_default().push(v);
                let newest = touched.entry((k, s)).or_insert(ts);
                *newest = (*newest).max(ts);
            }
        }
        for ((k, s), newest) in touched {
            out.push((epoch, (k, s, s + size, refagg(&contents[&(k, s)])), newest));
        }
        for w in closing_marks(&wms, e) {
            wprev = wprev.max(w);
        }
    }
    out.sort();
    (out, late)
}

/// A result of `aggregate_updating`: `(epoch, (key, start, end, value), event time)`.
type Updated = (u64, (u8, i64, i64, u64), i64);

/// Runs `aggregate_updating` (count, or max of the values) and returns its results with their
/// epochs and event times, sorted; the late count; and the last result of each key and window
/// in the order the sink got them.
fn run_updating(
    items: &[In],
    workers: usize,
    b: i64,
    spec: WindowSpec,
    l: i64,
    max: bool,
    combiner: bool,
) -> (Vec<Updated>, u64, BTreeMap<(u8, i64, i64), u64>) {
    let parts = vec![to_test_items(items)];
    let out: Collector<(u8, i64, i64, u64)> = Collector::new();
    let sink = out.clone();
    let job = Job::new("updating-prop", "aggregate_updating", move |flow| {
        let keyed = flow
            .source("in", TestSource::new(parts.clone()), source_options(b))?
            .key_by(|r: &V| r.0);
        let mut w = keyed.window(spec);
        if l > 0 {
            w = w.allowed_lateness(ms(l));
        }
        if !combiner {
            w = w.without_combiner();
        }
        let results = if max {
            w.aggregate_updating(Max::of(value as fn(&V) -> u64))?
        } else {
            w.aggregate_updating(Count)?
        };
        results
            .map(|r| (r.key, r.start, r.end, r.value))
            .sink("out", sink.sink())
    });
    let summary = run(&job, cut_only(workers)).expect("the job runs");
    let events = out.events();
    let mut last = BTreeMap::new();
    for (_, e) in &events {
        let (k, s, end, v) = e.data;
        last.insert((k, s, end), v);
    }
    let mut got: Vec<Updated> = events
        .into_iter()
        .map(|(epoch, e)| (epoch.0, e.data, e.ts))
        .collect();
    got.sort();
    (got, summary.late, last)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    /// `aggregate_updating` on tumbling and sliding windows (slide up to the size, offsets,
    /// allowed lateness, with and without the combiner): the results of every epoch with their
    /// event times, the late count, and that the last result of each key and window, in the order the sink got
    /// them, is its aggregate over every record it took.
    #[test]
    fn updating_windows_match_reference(
        items in partition(200),
        b in bound(),
        (size, slide) in size_and_slide(),
        tumbling in any::<bool>(),
        offset in prop_oneof![Just(0i64), 0i64..120],
        l in zero_or_some(),
        max in any::<bool>(),
        combiner in any::<bool>(),
    ) {
        let (slide, spec) = if tumbling {
            (size, Tumbling::with_offset(ms(size), ms(offset)))
        } else {
            (slide, Sliding::with_offset(ms(size), ms(slide), ms(offset)))
        };
        let refagg = if max { ref_max } else { ref_count };
        let (want, want_late) =
            updating_reference(&items, b, (size, slide, offset), l, refagg);
        // The reference's results of the latest epoch per key and window.
        let mut want_last: BTreeMap<(u8, i64, i64), u64> = BTreeMap::new();
        for (_, (k, s, e, v), _) in &want {
            want_last.insert((*k, *s, *e), *v);
        }
        for workers in [1, 2] {
            let (got, late, last) = run_updating(&items, workers, b, spec, l, max, combiner);
            prop_assert_eq!(&got, &want, "results ({} workers)", workers);
            prop_assert_eq!(late, want_late, "late count ({} workers)", workers);
            prop_assert_eq!(&last, &want_last, "last results ({} workers)", workers);
        }
    }
}

/// Session and global windows close when they close; updating them is an invalid job, with
/// the reason.
#[test]
fn updating_needs_tumbling_or_sliding_windows() {
    for spec in [Session::with_gap(ms(10)), Global::window()] {
        let job = Job::new("updating-invalid", "aggregate_updating", move |flow| {
            let out: Collector<WindowResult<u8, u64>> = Collector::new();
            flow.source(
                "in",
                TestSource::new(vec![vec![TestItem::At(1, (1u8, 1u64))]]),
                source_options(0),
            )?
            .key_by(|r: &V| r.0)
            .window(spec)
            .aggregate_updating(Count)?
            .sink("out", out.sink())
        });
        let err = run(&job, cut_only(1)).expect_err("an invalid job");
        assert!(
            err.to_string()
                .contains("aggregate_updating needs tumbling or sliding windows"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism: several partitions, timer-cut epochs, 1, 2 and 4 workers.
// ---------------------------------------------------------------------------------------------

type Triple = (
    Vec<(u8, i64, i64, u64)>,
    Vec<(u8, i64, i64, u64)>,
    Vec<(u8, i64, i64, (u64, u64))>,
);

/// One job, three windows over the same keyed stream: tumbling count, sliding sum, session
/// (count, max).
fn run_three(
    parts: &[Vec<In>],
    workers: usize,
    b: i64,
    size: i64,
    slide: i64,
    gap: i64,
) -> (Triple, u64) {
    let parts: Vec<Vec<TestItem<V>>> = parts.iter().map(|p| to_test_items(p)).collect();
    let t: Collector<(u8, i64, i64, u64)> = Collector::new();
    let s: Collector<(u8, i64, i64, u64)> = Collector::new();
    let g: Collector<(u8, i64, i64, (u64, u64))> = Collector::new();
    let (t2, s2, g2) = (t.clone(), s.clone(), g.clone());
    let job = Job::new("windows-determinism", "three windows", move |flow| {
        let keyed = flow
            .source("in", TestSource::new(parts.clone()), source_options(b))?
            .key_by(|r: &V| r.0);
        keyed
            .window(Tumbling::of(ms(size)))
            .aggregate(Count)?
            .map(|r| (r.key, r.start, r.end, r.value))
            .sink("tumbling", t2.sink())?;
        keyed
            .window(Sliding::of(ms(size), ms(slide)))
            .aggregate(Sum::of(value as fn(&V) -> u64))?
            .map(|r| (r.key, r.start, r.end, r.value))
            .sink("sliding", s2.sink())?;
        keyed
            .window(Session::with_gap(ms(gap)))
            .aggregate((Count, Max::of(value as fn(&V) -> u64)))?
            .map(|r| (r.key, r.start, r.end, r.value))
            .sink("session", g2.sink())
    });
    let summary = run(&job, timer_epochs(workers)).expect("the job runs");
    (
        (t.sorted_data(), s.sorted_data(), g.sorted_data()),
        summary.late,
    )
}

fn plain<O: Ord>(r: RefOut, f: fn(&[u64]) -> O) -> Vec<(u8, i64, i64, O)> {
    let mut v: Vec<_> = r
        .emitted
        .iter()
        .map(|(_, k, s, e, vals)| (*k, *s, *e, f(vals)))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    /// Partitions each in event-time order: nothing is ever late, whatever the epochs, so the
    /// results are those of one epoch holding everything, on 1, 2 and 4 workers.
    ///
    /// Sessions too, with any bound: a fired session `[s, e)` could only grow by a record with
    /// `ts < e`, and every record still to come has `ts >= W >= e` (see
    /// `example_session_touching_the_watermark`).
    #[test]
    fn same_results_on_1_2_4_workers(
        parts in ordered_partitions(60),
        b in 0i64..20,
        (size, slide) in size_and_slide(),
        gap in 1i64..30,
    ) {
        let everything = vec![all_records(&parts)];
        let one = [WM_MIN];
        let want = (
            plain(aligned_reference(&everything, &one, (size, size, 0), 0), ref_count),
            plain(aligned_reference(&everything, &one, (size, slide, 0), 0), ref_sum),
            plain(session_reference(&everything, &one, gap, 0), ref_count_max),
        );
        for workers in [1, 2, 4] {
            let (got, late) = run_three(&parts, workers, b, size, slide, gap);
            prop_assert_eq!(late, 0, "late ({} workers)", workers);
            prop_assert_eq!(&got.0, &want.0, "tumbling ({} workers)", workers);
            prop_assert_eq!(&got.1, &want.1, "sliding ({} workers)", workers);
            prop_assert_eq!(&got.2, &want.2, "session ({} workers)", workers);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Examples of the late-data policies, with explicit expected values.
// ---------------------------------------------------------------------------------------------

fn at(ts: i64, v: u64) -> TestItem<V> {
    TestItem::At(ts, (1, v))
}

/// Runs `spec` with Count (or Sum) over one partition on 1 and 2 workers; returns
/// `(epoch, (key, start, end, value))`, the late stream, and the late count, checking that both
/// worker counts agree.
fn example<A>(
    items: Vec<TestItem<V>>,
    b: i64,
    spec: WindowSpec,
    l: i64,
    mode: Mode,
    agg: A,
) -> Got<u64>
where
    A: Aggregate<V, Out = u64> + Send + Sync,
{
    let one = run_windows(vec![items.clone()], 1, b, spec, l, mode, agg.clone(), |x| x);
    let two = run_windows(vec![items], 2, b, spec, l, mode, agg, |x| x);
    assert_eq!(one.results, two.results, "1 vs 2 workers");
    assert_eq!(one.late, two.late, "1 vs 2 workers");
    assert_eq!(one.late_count, two.late_count, "1 vs 2 workers");
    one
}

/// Drop (the default): a record whose window has fired is counted late and dropped.
#[test]
fn example_late_record_is_dropped() {
    // Epoch 0: 1, 5 -> [0,10); 12 -> [10,20). W_0 = 12 fires [0,10) with 2.
    // Epoch 1: 3 is for [0,10), which expired (10 <= 12): late. 15 -> [10,20).
    let items = vec![
        at(1, 0),
        at(5, 0),
        at(12, 0),
        TestItem::Cut,
        at(3, 0),
        at(15, 0),
    ];
    let got = example(items, 0, Tumbling::of(ms(10)), 0, Mode::Combiner, Count);
    assert_eq!(got.results, vec![(0, (1, 0, 10, 2)), (1, (1, 10, 20, 2))]);
    assert_eq!(got.late_count, 1);
}

/// Allowed lateness: a record for a fired window within the lateness updates it and the window
/// is emitted again, at the end of that epoch; past the lateness the record is late.
#[test]
fn example_allowed_lateness_emits_an_update() {
    let items = vec![
        at(1, 0),
        at(5, 0),
        at(12, 0), // W_0 = 12: [0,10) fires with 2
        TestItem::Cut,
        at(3, 0),  // [0,10) fired, 10 + 5 > 12: updated to 3, emitted again in epoch 1
        at(15, 0), // W_1 = 15
        TestItem::Cut,
        at(30, 0), // W_2 = 30: [10,20) fires; [0,10) expires (15 <= 30)
        TestItem::Cut,
        at(4, 0), // late: [0,10) expired
    ];
    let got = example(items, 0, Tumbling::of(ms(10)), 5, Mode::Combiner, Count);
    assert_eq!(
        got.results,
        vec![
            (0, (1, 0, 10, 2)),
            (1, (1, 0, 10, 3)),
            (2, (1, 10, 20, 2)),
            (3, (1, 30, 40, 1)),
        ]
    );
    assert_eq!(got.late_count, 1);
}

/// Side output: late records come out whole, as `(key, record)`.
#[test]
fn example_late_side_output() {
    let items = vec![
        at(1, 100),
        at(5, 101),
        at(12, 102),
        TestItem::Cut,
        at(3, 103), // late
        at(15, 104),
        TestItem::Cut,
        at(9, 105), // late
    ];
    let got = example(
        items,
        0,
        Tumbling::of(ms(10)),
        0,
        Mode::LateOutput,
        Sum::of(value as fn(&V) -> u64),
    );
    assert_eq!(
        got.results,
        vec![(0, (1, 0, 10, 201)), (2, (1, 10, 20, 206))]
    );
    assert_eq!(got.late, vec![(1, (1, 103)), (1, (1, 105))]);
    assert_eq!(got.late_count, 2);
}

/// Bounded out-of-orderness: with B = 5 the watermark trails the largest time by 5, so a record
/// 5 behind is on time.
#[test]
fn example_bounded_out_of_orderness() {
    // W_0 = 12 - 5 = 7: nothing fires. Epoch 1: 8 is on time for [0,10). W_1 = 16 - 5 = 11.
    let items = vec![at(2, 0), at(12, 0), TestItem::Cut, at(8, 0), at(16, 0)];
    let got = example(items, 5, Tumbling::of(ms(10)), 0, Mode::Combiner, Count);
    assert_eq!(got.results, vec![(1, (1, 0, 10, 2)), (1, (1, 10, 20, 2))]);
    assert_eq!(got.late_count, 0);
}

/// Sliding windows: a record whose earliest window expired still goes to its later windows,
/// and is not late.
#[test]
fn example_sliding_partial_expiry() {
    // size 10, slide 5. Epoch 0: 7 -> [0,10),[5,15); 12 -> [5,15),[10,20). W_0 = 12 fires
    // [0,10) with 1. Epoch 1: 8 -> [0,10) expired, skipped; [5,15) gets it. Not late.
    let items = vec![at(7, 0), at(12, 0), TestItem::Cut, at(8, 0)];
    for mode in [Mode::Combiner, Mode::NoCombiner, Mode::LateOutput] {
        let got = example(items.clone(), 0, Sliding::of(ms(10), ms(5)), 0, mode, Count);
        assert_eq!(
            got.results,
            vec![(0, (1, 0, 10, 1)), (1, (1, 5, 15, 3)), (1, (1, 10, 20, 1))],
            "{mode:?}"
        );
        assert_eq!(got.late_count, 0);
        assert!(got.late.is_empty());
    }
}

/// Sessions: merging, a fired session updated within the lateness, and a late record.
#[test]
fn example_sessions_merge_update_and_late() {
    // gap 10, lateness 20.
    let items = vec![
        at(0, 0),
        at(5, 0),  // merges with [0,10): [0,15) count 2
        at(30, 0), // [30,40); W_0 = 30: [0,15) fires with 2
        TestItem::Cut,
        at(14, 0), // [14,24) touches the fired [0,15): [0,24) count 3, emitted again
        TestItem::Cut,
        at(60, 0), // W_2 = 60: [30,40) fires; both sessions are dropped (44, 60 <= 60)
        TestItem::Cut,
        at(2, 0), // 2 + 10 + 20 <= 60: late
    ];
    let got = example(
        items,
        0,
        Session::with_gap(ms(10)),
        20,
        Mode::LateOutput,
        Count,
    );
    assert_eq!(
        got.results,
        vec![
            (0, (1, 0, 15, 2)),
            (1, (1, 0, 24, 3)),
            (2, (1, 30, 40, 1)),
            (3, (1, 60, 70, 1)),
        ]
    );
    assert_eq!(got.late, vec![(1, (1, 0))]);
    assert_eq!(got.late_count, 1);
}

/// Sessions at the watermark: a session `[0, 3)` fires and (with no lateness) is dropped when
/// the watermark reaches 3; a record at 3 in a later epoch is on time (`3 + 3 > 3`) and only
/// touches `[0, 3)`, so it starts `[3, 6)`, exactly as it does when both records share an epoch:
/// the result does not depend on where the epochs fall.
#[test]
fn example_session_touching_the_watermark() {
    let items = vec![
        at(0, 0),
        TestItem::At(3, (2, 0)), // another key moves the watermark to 3: [0,3) of key 1 fires
        TestItem::Cut,
        at(3, 0),
    ];
    let got = example(items, 0, Session::with_gap(ms(3)), 0, Mode::Combiner, Count);
    assert_eq!(
        got.results,
        vec![(0, (1, 0, 3, 1)), (1, (1, 3, 6, 1)), (1, (2, 3, 6, 1))]
    );
    assert_eq!(got.late_count, 0);

    let one_epoch = vec![at(0, 0), TestItem::At(3, (2, 0)), at(3, 0)];
    let got = example(
        one_epoch,
        0,
        Session::with_gap(ms(3)),
        0,
        Mode::Combiner,
        Count,
    );
    assert_eq!(
        got.results,
        vec![(0, (1, 0, 3, 1)), (0, (1, 3, 6, 1)), (0, (2, 3, 6, 1))]
    );
}

/// The reference agrees with the hand-computed examples too (a check of the checker).
#[test]
fn reference_agrees_with_the_examples() {
    let r = |items: Vec<In>, b, spec, l| {
        let out = reference(&items, b, spec, l);
        let mut v: Vec<(u64, u8, i64, i64, u64)> = out
            .emitted
            .iter()
            .map(|(e, k, s, end, vals)| (*e, *k, *s, *end, vals.len() as u64))
            .collect();
        v.sort();
        (v, out.late.len())
    };
    let rec = |ts| In::R((ts, 1, 0));
    assert_eq!(
        r(
            vec![
                rec(1),
                rec(5),
                rec(12),
                In::Cut,
                rec(3),
                rec(15),
                In::Cut,
                rec(30),
                In::Cut,
                rec(4)
            ],
            0,
            Tumbling::of(ms(10)),
            5
        ),
        (
            vec![
                (0, 1, 0, 10, 2),
                (1, 1, 0, 10, 3),
                (2, 1, 10, 20, 2),
                (3, 1, 30, 40, 1)
            ],
            1
        )
    );
    assert_eq!(
        r(
            vec![
                rec(0),
                rec(5),
                rec(30),
                In::Cut,
                rec(14),
                In::Cut,
                rec(60),
                In::Cut,
                rec(2)
            ],
            0,
            Session::with_gap(ms(10)),
            20
        ),
        (
            vec![
                (0, 1, 0, 15, 2),
                (1, 1, 0, 24, 3),
                (2, 1, 30, 40, 1),
                (3, 1, 60, 70, 1)
            ],
            1
        )
    );
}
