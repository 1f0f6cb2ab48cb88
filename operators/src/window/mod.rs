//! Event-time windows on keyed streams, and the aggregation that runs in them.
//!
//! `keyed.window(spec)` gives a [`Windowed`] builder; `.aggregate(agg)` runs an
//! [`Aggregate`] per key and window and emits one [`WindowResult`] per key and window when the
//! watermark passes the window's end.
//!
//! Windows exist only on keyed streams; a window on a stream that was not keyed does not
//! compile:
//!
//! ```compile_fail,E0599
//! use std::time::Duration;
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{Job, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let job = Job::new("unkeyed", "", |flow| {
//!     flow.source("n", TestSource::new(vec![vec![TestItem::At(1, 1u64)]]), SourceOptions::new())?
//!         .window(Tumbling::of(Duration::from_secs(1))) // error: no method `window` on `Stream`
//!         .aggregate(Count)?
//!         .sink("out", Collector::new().sink())
//! });
//! ```
//!
//! ## Lateness
//! A window `[start, end)` fires when the watermark `W` reaches `end`. It is kept for
//! `allowed_lateness` after that: a record that arrives for a fired but kept window updates it and
//! the window is emitted again (an updated result) at the end of that epoch. A record is *late*
//! when every window it belongs to has expired (`end + allowed_lateness <= W` at the start of the
//! record's epoch); late records are counted (`<operator>.late`) and dropped, or sent to the late
//! output of [`Windowed::aggregate_with_late`].
//!
//! ## Combiner
//! Tumbling and sliding windows are computed over *panes* (slices of `gcd(size, slide)`): each
//! worker pre-aggregates its records per key and pane for each epoch before the exchange, and
//! the keyed operator merges panes into windows. With a late output the combiner is off (late
//! records must travel whole).

pub mod global;
pub mod session;
pub mod sliding;
pub mod top;
pub mod tumbling;
mod updating;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use runnel_engine::time::millis;
use runnel_engine::{
    Batcher, Data, Emitter, EpochLogic, Event, ExchangeKey, KeyedStream, LocalEpochLogic, Result,
    Stream, Watermark,
};

use crate::aggregate::Aggregate;

/// One window's result for one key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowResult<K, O> {
    /// The key.
    pub key: K,
    /// The window's start (inclusive), event-time milliseconds.
    pub start: i64,
    /// The window's end (exclusive).
    pub end: i64,
    /// The aggregate's result.
    pub value: O,
}

/// Which windows a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size` ms, starting at `offset` past the multiples of
    /// `size` (0 for windows aligned to the epoch).
    Tumbling {
        /// Window length in ms.
        size: i64,
        /// Where windows start past the multiples of `size`, ms, in `0..size`.
        offset: i64,
    },
    /// Windows of `size` ms starting every `slide` ms, at `offset` past the multiples of `slide`.
    Sliding {
        /// Window length in ms.
        size: i64,
        /// Distance between window starts in ms.
        slide: i64,
        /// Where windows start past the multiples of `slide`, ms, in `0..slide`.
        offset: i64,
    },
    /// Per-key sessions: records closer than `gap` ms belong to one window.
    Session {
        /// Inactivity gap in ms.
        gap: i64,
    },
    /// One window per key over all time, emitted when the input ends.
    Global,
}

/// `keyed.window(spec)`: windows on keyed streams.
pub trait WindowExt<'s, K, V> {
    /// Windows of `spec` over this keyed stream.
    fn window(&self, spec: WindowSpec) -> Windowed<'s, K, V>;
}

impl<'s, K: ExchangeKey, V: Data> WindowExt<'s, K, V> for KeyedStream<'s, K, V> {
    fn window(&self, spec: WindowSpec) -> Windowed<'s, K, V> {
        Windowed {
            stream: self.clone(),
            spec,
            lateness: 0,
            name: String::new(),
            combine: true,
        }
    }
}

/// A keyed stream with a window spec, waiting for its aggregate.
pub struct Windowed<'s, K, V> {
    stream: KeyedStream<'s, K, V>,
    spec: WindowSpec,
    lateness: i64,
    name: String,
    combine: bool,
}

impl<'s, K: ExchangeKey, V: Data> Windowed<'s, K, V> {
    /// Keeps windows for `d` after they fire; records in that time update them.
    pub fn allowed_lateness(mut self, d: Duration) -> Self {
        self.lateness = millis(d);
        self
    }

    /// Names the window operator (its state's name in checkpoints; must be unique in the job).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Turns the pre-aggregation before the exchange off (for measuring what it saves).
    pub fn without_combiner(mut self) -> Self {
        self.combine = false;
        self
    }

    /// Aggregates each key's records per window with `agg`; late records are counted and dropped.
    #[track_caller]
    pub fn aggregate<A: Aggregate<V>>(self, agg: A) -> Result<Stream<'s, WindowResult<K, A::Out>>> {
        Ok(self.build(agg, false)?.0)
    }

    /// Like [`Windowed::aggregate`], and also returns the late records as a stream.
    #[track_caller]
    pub fn aggregate_with_late<A: Aggregate<V>>(
        self,
        agg: A,
    ) -> Result<(Stream<'s, WindowResult<K, A::Out>>, Stream<'s, (K, V)>)> {
        let (main, late) = self.build(agg, true)?;
        Ok((main, late.expect("a late output was asked for")))
    }

    /// Aggregates each key's records per window with `agg`, and emits each key's window
    /// result at the end of every epoch in which the window received records, instead of once
    /// when the window closes. Each result replaces the one emitted before for its key and
    /// window start: an upsert stream, as Kafka Streams' windowed aggregations and Flink's
    /// group-by on a time bucket into an upsert sink write (a Kafka sink keyed by key and start
    /// into a compacted topic keeps exactly the latest). When the watermark passes a window's
    /// end plus the allowed lateness, its state is dropped and its last result stands; records
    /// whose every window has expired are late (counted and dropped).
    ///
    /// For long windows (days) whose results should not wait for the window's end, or all
    /// come at once then. A result's event time is that of the newest record it includes
    /// (what latency is measured from), which can be behind the watermark: an event-time
    /// operator after this one may find such results late. Tumbling and sliding windows only
    /// (a session or global window is an invalid job); a sliding window keeps one accumulator
    /// per window, so a record updates `size / slide` of them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use runnel_engine::testing::{Collector, TestItem, TestSource};
    /// use runnel_engine::{run, Job, RunOptions, SourceOptions};
    /// use runnel_operators::prelude::*;
    ///
    /// let out = Collector::new();
    /// let sink = out.clone();
    /// let job = Job::new("running-counts", "counts per key and 10 ms, as they grow", move |flow| {
    ///     // Two epochs (`Cut`): 'a' has one record in the first and two in the second.
    ///     let input = vec![vec![
    ///         TestItem::At(1, 'a'), TestItem::Cut, TestItem::At(3, 'a'), TestItem::At(4, 'a'),
    ///     ]];
    ///     flow.source("in", TestSource::new(input), SourceOptions::new())?
    ///         .key_by(|k: &char| *k)
    ///         .window(Tumbling::of(Duration::from_millis(10)))
    ///         .aggregate_updating(Count)?
    ///         .map(|r| (r.key, r.start, r.value))
    ///         .sink("out", sink.sink())
    /// });
    /// run(&job, RunOptions::workers(1)).unwrap();
    /// assert_eq!(out.data(), vec![('a', 0, 1), ('a', 0, 3)]);
    /// ```
    #[track_caller]
    pub fn aggregate_updating<A: Aggregate<V>>(
        self,
        agg: A,
    ) -> Result<Stream<'s, WindowResult<K, A::Out>>> {
        let panes = match self.spec {
            WindowSpec::Tumbling { size, offset } => Panes::new(size, size, offset),
            WindowSpec::Sliding {
                size,
                slide,
                offset,
            } => Panes::new(size, slide, offset),
            WindowSpec::Session { .. } | WindowSpec::Global => {
                return Err(self.stream.invalid(
                    "aggregate_updating needs tumbling or sliding windows (session and global \
                     windows emit their results when they close)",
                ))
            }
        };
        let name = self.name.clone();
        let combiner_name = if name.is_empty() {
            String::new()
        } else {
            format!("{name}.combiner")
        };
        let logic = updating::UpdatingLogic::new(agg.clone(), panes, self.lateness);
        if self.combine {
            let partials: KeyedStream<'s, K, Partial<A::Acc, ()>> = self
                .stream
                .local(&combiner_name, Combiner::new(agg, panes))?;
            Ok(partials.stateful(&name, false, logic)?.0)
        } else {
            let partials = one_record_partials(&self.stream, &combiner_name, agg, panes, false)?;
            Ok(partials.stateful(&name, false, logic)?.0)
        }
    }

    /// Aggregates each key's records per window with `agg`, and keeps, per window, the `n`
    /// keys with the largest `by(key, result)` and every key tied with the `n`-th (Flink's
    /// window top-N). Each worker picks its own best keys as it fires a window, so the
    /// results of the other keys are never emitted or sent anywhere. A window's results come
    /// best first on the worker that owns the window.
    ///
    /// Tumbling and sliding windows without allowed lateness only (a late update could change
    /// a window's top after it was emitted); anything else, or `n == 0`, is an invalid job.
    #[track_caller]
    pub fn aggregate_top<A: Aggregate<V>, R: Ord + 'static>(
        self,
        agg: A,
        n: usize,
        by: impl Fn(&K, &A::Out) -> R + 'static,
    ) -> Result<Stream<'s, WindowResult<K, A::Out>>> {
        let (size, slide, offset) = match self.spec {
            WindowSpec::Tumbling { size, offset } => (size, size, offset),
            WindowSpec::Sliding {
                size,
                slide,
                offset,
            } => (size, slide, offset),
            WindowSpec::Session { .. } | WindowSpec::Global => {
                return Err(self.stream.invalid(
                    "aggregate_top needs tumbling or sliding windows (a session or global window \
                     is one key's)",
                ))
            }
        };
        if n == 0 {
            return Err(self.stream.invalid("aggregate_top needs n >= 1"));
        }
        if self.lateness > 0 {
            return Err(self.stream.invalid(
                "aggregate_top does not take allowed lateness: a late update could change a \
                 window's top after it was emitted",
            ));
        }
        let rank: top::Rank<K, A::Out> = Rc::new(move |a, b| by(&a.0, &a.1).cmp(&by(&b.0, &b.1)));
        let top_name = if self.name.is_empty() {
            String::new()
        } else {
            format!("{}.top", self.name)
        };
        let name = self.name.clone();
        let local = top::LocalTop::new(n, rank.clone());
        let panes = Panes::new(size, slide, offset);
        let (best, _) = self.aligned(name, agg, panes, false, Some(local))?;
        // The window's result stamp is its end - 1: a 1 ms window holds exactly that.
        let merged = best
            .key_by(|w| (w.start, w.end))
            .window(WindowSpec::Tumbling { size: 1, offset: 0 })
            .named(&top_name)
            .aggregate(top::MergeTop { n, rank })?;
        Ok(merged.flat_map(|w| {
            let (start, end) = w.key;
            w.value.into_iter().map(move |(key, value)| WindowResult {
                key,
                start,
                end,
                value,
            })
        }))
    }

    #[track_caller]
    fn build<A: Aggregate<V>>(
        self,
        agg: A,
        late_output: bool,
    ) -> Result<(
        Stream<'s, WindowResult<K, A::Out>>,
        Option<Stream<'s, (K, V)>>,
    )> {
        let name = if self.name.is_empty() {
            String::new()
        } else {
            self.name.clone()
        };
        match self.spec {
            WindowSpec::Session { gap } => {
                let logic = session::SessionLogic::new(agg, gap, self.lateness);
                self.stream.stateful(&name, late_output, logic)
            }
            WindowSpec::Global => {
                let logic = global::GlobalLogic::new(agg);
                self.stream.stateful(&name, late_output, logic)
            }
            WindowSpec::Tumbling { size, offset } => {
                self.aligned(name, agg, Panes::new(size, size, offset), late_output, None)
            }
            WindowSpec::Sliding {
                size,
                slide,
                offset,
            } => self.aligned(
                name,
                agg,
                Panes::new(size, slide, offset),
                late_output,
                None,
            ),
        }
    }

    #[track_caller]
    fn aligned<A: Aggregate<V>>(
        self,
        name: String,
        agg: A,
        panes: Panes,
        late_output: bool,
        top: Option<top::LocalTop<K, A::Out>>,
    ) -> Result<(
        Stream<'s, WindowResult<K, A::Out>>,
        Option<Stream<'s, (K, V)>>,
    )> {
        let combiner_name = if name.is_empty() {
            String::new()
        } else {
            format!("{name}.combiner")
        };
        let state_name = if name.is_empty() {
            "window".to_string()
        } else {
            name.clone()
        };
        if self.combine && !late_output {
            // Partials carry no record: `Partial<_, ()>` keeps them small for the exchange.
            let partials: KeyedStream<'s, K, Partial<A::Acc, ()>> = self
                .stream
                .local(&combiner_name, Combiner::new(agg.clone(), panes))?;
            let logic = PaneWindowLogic::new(&state_name, agg, panes, self.lateness, top);
            let (main, _) = partials.stateful(&name, false, logic)?;
            Ok((main, None))
        } else {
            let partials = one_record_partials(
                &self.stream,
                &combiner_name,
                agg.clone(),
                panes,
                late_output,
            )?;
            let logic = PaneWindowLogic::new(&state_name, agg, panes, self.lateness, top);
            let (main, late) = partials.stateful(&name, late_output, logic)?;
            let late = late.map(|s| {
                s.map(|(k, p): (K, Partial<A::Acc, Option<V>>)| (k, p.raw.expect("raw kept")))
            });
            Ok((main, late))
        }
    }
}

/// Without a combiner: each record becomes a partial of one record, stamped with its pane by
/// the `name`d local operator, which also carries the record itself when `keep_raw` (for a
/// late output).
#[track_caller]
fn one_record_partials<'s, K: ExchangeKey, V: Data, A: Aggregate<V>>(
    stream: &KeyedStream<'s, K, V>,
    name: &str,
    agg: A,
    panes: Panes,
    keep_raw: bool,
) -> Result<KeyedStream<'s, K, Partial<A::Acc, Option<V>>>> {
    stream
        .map_values(move |v: V| {
            let mut acc = agg.create();
            agg.add(&mut acc, &v);
            Partial {
                pane: i64::MIN,
                acc,
                n: 1,
                raw: keep_raw.then_some(v),
            }
        })
        .local(name, PaneStamp { panes })
}

/// Window geometry for tumbling and sliding windows, in panes of `gcd(size, slide)`: windows
/// start at `offset + k * slide`, panes at `offset + j * pane`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Panes {
    size: i64,
    slide: i64,
    pane: i64,
    offset: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Panes {
    fn new(size: i64, slide: i64, offset: i64) -> Self {
        assert!(
            size > 0 && slide > 0,
            "window size and slide must be positive"
        );
        Panes {
            size,
            slide,
            pane: gcd(size, slide),
            offset: offset.rem_euclid(slide),
        }
    }
    #[inline]
    fn pane_of(&self, ts: i64) -> i64 {
        let o = self.offset;
        ts.saturating_sub(o).div_euclid(self.pane) * self.pane + o
    }
    /// The start of the last (latest) window that contains pane `p`.
    #[inline]
    fn last_window(&self, p: i64) -> i64 {
        let o = self.offset;
        (p - o).div_euclid(self.slide) * self.slide + o
    }
    /// The starts of every window containing pane `p`, ascending.
    fn windows(&self, p: i64) -> impl Iterator<Item = i64> {
        let last = self.last_window(p);
        let first_bound = p + self.pane - self.size; // s >= this
        let slide = self.slide;
        let n = if last >= first_bound {
            (last - first_bound) / slide + 1
        } else {
            0
        };
        (0..n).rev().map(move |k| last - k * slide)
    }
}

/// A partial aggregate of one key's records in one pane, and `raw`: `()` after a combiner, or
/// without one the record itself when a late output needs it (`Option<V>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Partial<Acc, R> {
    pane: i64,
    acc: Acc,
    n: u64,
    raw: R,
}

/// Pre-aggregates a worker's records per key and pane, for one epoch.
///
/// Records mostly arrive in event-time order, so the pane of the last record is kept out of the
/// tree: a record is then one comparison and one update in a map of the pane's keys.
struct Combiner<K, A: Aggregate<V>, V> {
    agg: A,
    panes: Panes,
    /// The pane of the last record and its map: key -> (accumulator, records, newest time).
    current: Option<(i64, CombinerMap<K, A::Acc>)>,
    /// The epoch's other panes.
    state: BTreeMap<i64, CombinerMap<K, A::Acc>>,
    /// Emptied maps, kept to reuse their allocations.
    spare: Vec<CombinerMap<K, A::Acc>>,
    /// The most keys a pane had in the last epoch: new maps start with room for that many.
    keys_per_pane: usize,
    _v: std::marker::PhantomData<fn(V)>,
}

type CombinerMap<K, Acc> = HashMap<K, (Acc, u64, i64), FxBuildHasher>;

impl<K, A: Aggregate<V>, V> Combiner<K, A, V> {
    fn new(agg: A, panes: Panes) -> Self {
        Combiner {
            agg,
            panes,
            current: None,
            state: BTreeMap::new(),
            spare: Vec::new(),
            keys_per_pane: 0,
            _v: std::marker::PhantomData,
        }
    }
}

impl<K: ExchangeKey, V: Data, A: Aggregate<V>> LocalEpochLogic<(K, V), (K, Partial<A::Acc, ()>)>
    for Combiner<K, A, V>
{
    #[inline]
    fn on_record(&mut self, r: Event<(K, V)>, _out: &mut Batcher<Event<(K, Partial<A::Acc, ()>)>>) {
        let pane = self.panes.pane_of(r.ts);
        if self.current.as_ref().map(|c| c.0) != Some(pane) {
            if let Some((p, map)) = self.current.take() {
                self.state.insert(p, map);
            }
            let map = match self.state.remove(&pane) {
                Some(map) => map,
                None => self.spare.pop().unwrap_or_else(|| {
                    HashMap::with_capacity_and_hasher(self.keys_per_pane, FxBuildHasher)
                }),
            };
            self.current = Some((pane, map));
        }
        let map = &mut self.current.as_mut().expect("just set").1;
        let (k, v) = r.data;
        match map.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let e = e.get_mut();
                self.agg.add(&mut e.0, &v);
                e.1 += 1;
                e.2 = e.2.max(r.ts);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut acc = self.agg.create();
                self.agg.add(&mut acc, &v);
                e.insert((acc, 1, r.ts));
            }
        }
    }
    fn on_epoch_end(&mut self, out: &mut Batcher<Event<(K, Partial<A::Acc, ()>)>>) {
        if let Some((p, map)) = self.current.take() {
            self.state.insert(p, map);
        }
        self.keys_per_pane = self.state.values().map(|m| m.len()).max().unwrap_or(0);
        while let Some((pane, mut map)) = self.state.pop_first() {
            out.extend(map.drain().map(|(k, (acc, n, ts))| Event {
                ts,
                data: (
                    k,
                    Partial {
                        pane,
                        acc,
                        n,
                        raw: (),
                    },
                ),
            }));
            if self.spare.len() < 64 {
                self.spare.push(map);
            }
        }
    }
}

/// Without a combiner: stamps each one-record partial with its pane.
struct PaneStamp {
    panes: Panes,
}

impl<K: ExchangeKey, Acc: Data, R: Data> LocalEpochLogic<(K, Partial<Acc, R>), (K, Partial<Acc, R>)>
    for PaneStamp
{
    #[inline]
    fn on_record(
        &mut self,
        mut r: Event<(K, Partial<Acc, R>)>,
        out: &mut Batcher<Event<(K, Partial<Acc, R>)>>,
    ) {
        r.data.1.pane = self.panes.pane_of(r.ts);
        out.push(r);
    }
    fn on_epoch_end(&mut self, _out: &mut Batcher<Event<(K, Partial<Acc, R>)>>) {}
}

/// The keyed half of tumbling and sliding windows: merges partials per pane and key, and fires
/// the windows that end at or before the watermark at the end of each epoch.
///
/// State: per pane (a slice of `gcd(size, slide)`), a hash map from key to accumulator, the
/// panes in a tree ordered by start. A record is one tree lookup among the few open panes and
/// one hash-map update; a tumbling window is one pane, so firing it walks its map once and
/// emits its entries as they are, with no per-key lookups or timers. A sliding window merges its
/// panes' maps. Panes are dropped, oldest first, once every window holding them has expired.
struct PaneWindowLogic<K, A: Aggregate<V>, V> {
    agg: A,
    panes: Panes,
    lateness: i64,
    /// pane start -> key -> accumulator of the key's records in that pane.
    state: BTreeMap<i64, HashMap<K, A::Acc, FxBuildHasher>>,
    /// The watermark at the end of the last epoch: every window ending at or before it fired.
    fired: Watermark,
    /// Fired windows that received records within their allowed lateness: (start, key).
    dirty: BTreeSet<(i64, K)>,
    /// Emptied pane maps, kept to reuse their allocations.
    spare: Vec<HashMap<K, A::Acc, FxBuildHasher>>,
    /// The most keys a pane held when it was dropped: new maps start with room for that many.
    keys_per_pane: usize,
    /// Scratch map for merging the panes of a sliding window.
    merged: HashMap<K, A::Acc, FxBuildHasher>,
    /// Sliding windows without lateness: the next window to fire, merged ahead of time over
    /// its panes before `upto`, in an epoch in which nothing fired (see
    /// [`PaneWindowLogic::premerge`]). Records for those panes update it too.
    premerged: Option<Premerged<K, A::Acc>>,
    /// Whether a window fired at the last epoch end (the next merge ahead waits an epoch, so
    /// that it does not delay the results just emitted).
    just_fired: bool,
    /// For [`Windowed::aggregate_top`]: this worker's best keys of the window being fired;
    /// only they are emitted.
    top: Option<top::LocalTop<K, A::Out>>,
}

/// The panes `[start, upto)` of the window starting at `start`, merged per key.
struct Premerged<K, Acc> {
    start: i64,
    upto: i64,
    map: HashMap<K, Acc, FxBuildHasher>,
}

impl<K: ExchangeKey, V: Data, A: Aggregate<V>> PaneWindowLogic<K, A, V> {
    fn new(
        _name: &str,
        agg: A,
        panes: Panes,
        lateness: i64,
        top: Option<top::LocalTop<K, A::Out>>,
    ) -> Self {
        PaneWindowLogic {
            agg,
            panes,
            lateness,
            state: BTreeMap::new(),
            fired: runnel_engine::time::WATERMARK_MIN,
            dirty: BTreeSet::new(),
            spare: Vec::new(),
            keys_per_pane: 0,
            merged: HashMap::default(),
            premerged: None,
            just_fired: false,
            top,
        }
    }

    /// Merges, ahead of time, the panes of the next sliding window to fire, one pane per call
    /// (per epoch), so that firing it only hands its entries out. Most of a sliding window's
    /// merging then happens in epochs in which nothing fires, off the results' path, and no
    /// epoch stalls its worker for more than one pane's merge. Once a pane is merged, its later
    /// records update the merged map as they arrive ([`PaneWindowLogic::on_record`]); a pane
    /// that has no records yet is merged by its records alone.
    fn premerge(&mut self) {
        let (size, slide) = (self.panes.size, self.panes.slide);
        // The first window that has not fired: the least start `s`, the offset past a
        // multiple of the slide, with `s + size > fired`.
        let Some(lo) = self.fired.checked_sub(size) else {
            return;
        };
        let o = self.panes.offset;
        let start = (lo.saturating_sub(o).div_euclid(slide) + 1) * slide + o;
        let end = start.saturating_add(size);
        let mut pre = match self.premerged.take() {
            Some(pre) if pre.start == start => pre,
            _ => {
                let mut map = std::mem::take(&mut self.merged);
                map.clear();
                // Room for every key of the window's panes so far, and as many again as the
                // largest pane holds for the pane still filling: the map does not grow (and
                // rehash) while the window fires.
                let (sum, most) = self
                    .state
                    .range(start..end)
                    .fold((0, 0), |(sum, most), (_, m)| {
                        (sum + m.len(), most.max(m.len()))
                    });
                map.reserve(sum + most);
                Premerged {
                    start,
                    upto: start,
                    map,
                }
            }
        };
        match self.state.range(pre.upto..end).next() {
            Some((&p, pane)) => {
                self.keys_per_pane = self.keys_per_pane.max(pane.len());
                for (k, acc) in pane {
                    match pre.map.get_mut(k) {
                        Some(m) => self.agg.merge(m, acc),
                        None => {
                            pre.map.insert(k.clone(), acc.clone());
                        }
                    }
                }
                pre.upto = p.saturating_add(self.panes.pane);
            }
            // No pane left to merge: records of the window's later panes update the map.
            None => pre.upto = end,
        }
        self.premerged = Some(pre);
    }

    /// When pane `p` can be dropped: its last window's end plus the allowed lateness.
    #[inline]
    fn expiry(&self, p: i64) -> i64 {
        self.panes
            .last_window(p)
            .saturating_add(self.panes.size)
            .saturating_add(self.lateness)
    }

    /// The merged accumulator of `key`'s panes in the window starting at `start`.
    fn window_acc(&self, key: &K, start: i64) -> Option<A::Acc> {
        let mut merged: Option<A::Acc> = None;
        let end = start.saturating_add(self.panes.size);
        for (_, map) in self.state.range(start..end) {
            if let Some(acc) = map.get(key) {
                match merged.as_mut() {
                    Some(m) => self.agg.merge(m, acc),
                    None => merged = Some(acc.clone()),
                }
            }
        }
        merged
    }

    /// The starts of the windows that end in `(self.fired, wm]` and hold at least one pane,
    /// ascending.
    fn windows_to_fire(&self, wm: Watermark) -> Vec<i64> {
        let size = self.panes.size;
        // A pane at or after `wm` is in no window ending by `wm`; one before `fired - size` is
        // in no window ending after `fired`.
        let lo = self.fired.saturating_sub(size);
        let mut starts: Vec<i64> = Vec::new();
        for (&p, map) in self.state.range(lo..wm) {
            if map.is_empty() {
                continue;
            }
            for s in self.panes.windows(p) {
                let end = s.saturating_add(size);
                if end > self.fired && end <= wm && starts.last() != Some(&s) {
                    starts.push(s);
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();
        starts
    }
}

impl<K: ExchangeKey, V: Data, A: Aggregate<V>, R: Data>
    EpochLogic<(K, Partial<A::Acc, R>), WindowResult<K, A::Out>> for PaneWindowLogic<K, A, V>
{
    #[inline]
    fn on_record(
        &mut self,
        r: Event<(K, Partial<A::Acc, R>)>,
        wm: Watermark,
        out: &mut Emitter<(K, Partial<A::Acc, R>), WindowResult<K, A::Out>>,
    ) {
        let p = r.data.1.pane;
        // Late when even the last window holding this pane has expired, or when the pane is in
        // no window at all (a slide longer than the size leaves gaps): nothing holds it.
        if self.expiry(p) <= wm || self.panes.windows(p).next().is_none() {
            let n = r.data.1.n;
            out.late(r, n);
            return;
        }
        let (k, part) = r.data;
        if self.lateness > 0 {
            // Fired windows still within their lateness are emitted again at the epoch's end.
            let size = self.panes.size;
            for s in self.panes.windows(p) {
                let end = s + size;
                if end <= wm && end.saturating_add(self.lateness) > wm {
                    self.dirty.insert((s, k.clone()));
                }
            }
        }
        let map = match self.state.get_mut(&p) {
            Some(map) => map,
            None => {
                let n = self.keys_per_pane;
                let fresh = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| HashMap::with_capacity_and_hasher(n, FxBuildHasher));
                self.state.entry(p).or_insert(fresh)
            }
        };
        if let Some(pre) = self.premerged.as_mut() {
            if pre.start <= p && p < pre.upto {
                match pre.map.get_mut(&k) {
                    Some(m) => self.agg.merge(m, &part.acc),
                    None => {
                        pre.map.insert(k.clone(), part.acc.clone());
                    }
                }
            }
        }
        match map.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                self.agg.merge(e.get_mut(), &part.acc)
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(part.acc);
            }
        }
    }

    fn snapshot(&self) -> runnel_engine::Result<Vec<u8>> {
        runnel_engine::recovery::encode(&(&self.state, self.fired, &self.dirty))
    }

    fn restore(&mut self, state: &[u8]) -> runnel_engine::Result<()> {
        (self.state, self.fired, self.dirty) = runnel_engine::recovery::decode(state)?;
        self.premerged = None;
        Ok(())
    }

    fn state_kind(&self) -> String {
        format!(
            "runnel.window.panes.v2/{}",
            std::any::type_name::<(K, A::Acc)>()
        )
    }

    fn on_epoch_end(
        &mut self,
        wm: Watermark,
        out: &mut Emitter<(K, Partial<A::Acc, R>), WindowResult<K, A::Out>>,
    ) {
        let size = self.panes.size;
        // Updated results for fired windows that received records within their lateness.
        for (s, k) in std::mem::take(&mut self.dirty) {
            if let Some(acc) = self.window_acc(&k, s) {
                out.emit(result_event(&self.agg, k, s, size, &acc));
            }
        }
        let mut fired_any = false;
        if wm > self.fired {
            // Windows that end in (fired, wm] fire, in order of their end.
            let starts = self.windows_to_fire(wm);
            fired_any = !starts.is_empty();
            for s in starts {
                if self.panes.pane == size {
                    // Tumbling: the window is its one pane.
                    if self.lateness == 0 {
                        // Nothing can update it any more: hand its entries out as they are.
                        if let Some(mut map) = self.state.remove(&s) {
                            self.keys_per_pane = map.len();
                            match self.top.as_mut() {
                                Some(top) => {
                                    for (k, acc) in map.drain() {
                                        top.offer(k, self.agg.result(&acc));
                                    }
                                    top.finish(s, size, out);
                                }
                                None => {
                                    for (k, acc) in map.drain() {
                                        out.emit(result_event(&self.agg, k, s, size, &acc));
                                    }
                                }
                            }
                            self.spare.push(map);
                        }
                    } else if let Some(map) = self.state.get(&s) {
                        for (k, acc) in map {
                            out.emit(result_event(&self.agg, k.clone(), s, size, acc));
                        }
                    }
                } else {
                    // Sliding: merge the window's panes per key, starting from those merged
                    // ahead of time.
                    let (mut merged, from) = match self.premerged.take() {
                        Some(pre) if pre.start == s => (pre.map, pre.upto),
                        _ => (std::mem::take(&mut self.merged), s),
                    };
                    for (_, map) in self.state.range(from..s.saturating_add(size)) {
                        for (k, acc) in map {
                            match merged.get_mut(k) {
                                Some(m) => self.agg.merge(m, acc),
                                None => {
                                    merged.insert(k.clone(), acc.clone());
                                }
                            }
                        }
                    }
                    match self.top.as_mut() {
                        Some(top) => {
                            for (k, acc) in merged.drain() {
                                top.offer(k, self.agg.result(&acc));
                            }
                            top.finish(s, size, out);
                        }
                        None => {
                            for (k, acc) in merged.drain() {
                                out.emit(result_event(&self.agg, k, s, size, &acc));
                            }
                        }
                    }
                    self.merged = merged;
                }
            }
            self.fired = wm;
        }
        if fired_any {
            self.just_fired = true;
        } else if self.just_fired {
            self.just_fired = false;
        } else if self.lateness == 0 && self.panes.pane != size {
            self.premerge();
        }
        // Panes whose every window has expired are dropped, oldest first.
        while let Some((&p, _)) = self.state.first_key_value() {
            if self.expiry(p) > wm {
                break;
            }
            if let Some((_, mut map)) = self.state.pop_first() {
                self.keys_per_pane = self.keys_per_pane.max(map.len());
                map.clear();
                self.spare.push(map);
            }
        }
        // A few spare maps are enough (one per pane opened between two firings).
        self.spare.truncate(64);
    }
}

fn result_event<K, V, A: Aggregate<V>>(
    agg: &A,
    key: K,
    start: i64,
    size: i64,
    acc: &A::Acc,
) -> Event<WindowResult<K, A::Out>> {
    Event {
        ts: start + size - 1,
        data: WindowResult {
            key,
            start,
            end: start + size,
            value: agg.result(acc),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_cover_every_window_of_a_record() {
        // Brute force: windows [s, s+size) with s = offset (mod slide) that contain ts.
        for (size, slide) in [(10, 10), (10, 2), (10, 4), (6, 4), (5, 7)] {
            for offset in [0i64, 1, 3, -1, 9, 23] {
                let p = Panes::new(size, slide, offset);
                for ts in -50i64..50 {
                    let want: Vec<i64> = (-200i64..200)
                        .filter(|s| {
                            (s - offset).rem_euclid(slide) == 0 && *s <= ts && ts < s + size
                        })
                        .collect();
                    let got: Vec<i64> = p.windows(p.pane_of(ts)).collect();
                    assert_eq!(
                        got, want,
                        "size {size} slide {slide} offset {offset} ts {ts}"
                    );
                    let pane = p.pane_of(ts);
                    assert!(
                        pane <= ts && ts < pane + p.pane,
                        "ts {ts} outside its pane {pane}"
                    );
                }
            }
        }
    }
}
