//! The windowed join: records of two keyed streams with the same key in the same tumbling window
//! join, pairwise. A pair is emitted as soon as its second record arrives (in that record's
//! epoch), stamped with the window's `end - 1`, so downstream windows place it in its window.
//! Flink's window join emits a window's pairs when the window fires; an inner join's pairs can
//! never be taken back, so the results are the same, only earlier, and firing a window costs
//! nothing but dropping its state. A window closes when the watermark passes its end; records
//! for a closed window are late: counted (`<operator>.late`) and dropped.
//!
//! ```
//! use std::time::Duration;
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("join", "orders with payments", move |flow| {
//!     let orders = vec![vec![TestItem::At(1, (1u32, 'x')), TestItem::At(12, (1, 'y'))]];
//!     let payments = vec![vec![TestItem::At(5, (1u32, 100u64)), TestItem::At(25, (1, 7))]];
//!     let o = flow.source("orders", TestSource::new(orders), SourceOptions::new())?
//!         .key_by(|o: &(u32, char)| o.0);
//!     let p = flow.source("payments", TestSource::new(payments), SourceOptions::new())?
//!         .key_by(|p: &(u32, u64)| p.0);
//!     o.window_join(&p, Duration::from_millis(10))?
//!         .map(|j| (j.start, j.left.1, j.right.1))
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(2)).unwrap();
//! assert_eq!(out.sorted_data(), vec![(0, 'x', 100)]);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use runnel_engine::time::millis;
use runnel_engine::{
    Data, Either, Emitter, EpochLogic, Event, ExchangeKey, KeyedStream, Result, Stream, Watermark,
};

/// A pair joined in a window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowJoined<K, L, R> {
    /// The key both records share.
    pub key: K,
    /// The window's start.
    pub start: i64,
    /// The window's end (exclusive).
    pub end: i64,
    /// The left record.
    pub left: L,
    /// The right record.
    pub right: R,
}

/// `left.window_join(&right, size)`.
pub trait WindowJoinExt<'s, K, L> {
    /// Joins records of `self` and `right` with the same key in the same tumbling window of
    /// `size`. A pair is emitted as soon as both its records have arrived, with event time
    /// `end - 1` (which may be ahead of the watermark).
    fn window_join<R: Data>(
        &self,
        right: &KeyedStream<'s, K, R>,
        size: Duration,
    ) -> Result<Stream<'s, WindowJoined<K, L, R>>>;

    /// Like [`WindowJoinExt::window_join`], with an operator name.
    fn window_join_named<R: Data>(
        &self,
        name: &str,
        right: &KeyedStream<'s, K, R>,
        size: Duration,
    ) -> Result<Stream<'s, WindowJoined<K, L, R>>>;
}

impl<'s, K: ExchangeKey, L: Data> WindowJoinExt<'s, K, L> for KeyedStream<'s, K, L> {
    #[track_caller]
    fn window_join<R: Data>(
        &self,
        right: &KeyedStream<'s, K, R>,
        size: Duration,
    ) -> Result<Stream<'s, WindowJoined<K, L, R>>> {
        self.window_join_named("", right, size)
    }

    #[track_caller]
    fn window_join_named<R: Data>(
        &self,
        name: &str,
        right: &KeyedStream<'s, K, R>,
        size: Duration,
    ) -> Result<Stream<'s, WindowJoined<K, L, R>>> {
        let size = millis(size);
        assert!(size > 0, "join window size must be positive");
        let logic = WindowJoinLogic {
            size,
            windows: BTreeMap::new(),
        };
        Ok(self.connect(right).stateful(name, false, logic)?.0)
    }
}

/// The end of a chain of records.
const NONE: usize = usize::MAX;

/// One open window's records: each side in one vector, chained per key (newest first) from the
/// key's heads, so that closing a window frees three blocks (plus what the records own)
/// instead of two vectors per key.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Eq + std::hash::Hash, L: Serialize, R: Serialize",
    deserialize = "K: Deserialize<'de> + Eq + std::hash::Hash, L: Deserialize<'de>, R: Deserialize<'de>"
))]
struct Window<K, L, R> {
    /// key -> (index of its newest left record, of its newest right record), `NONE` for none.
    heads: HashMap<K, (usize, usize), FxBuildHasher>,
    /// Left records, each with the index of the key's previous left record.
    left: Vec<(L, usize)>,
    /// Right records, likewise.
    right: Vec<(R, usize)>,
}

impl<K, L, R> Default for Window<K, L, R> {
    fn default() -> Self {
        Window {
            heads: HashMap::default(),
            left: Vec::new(),
            right: Vec::new(),
        }
    }
}

/// State: per open window (by start), its records chained per key. A pair is emitted as soon
/// as its second record arrives, so firing a window only drops its state.
struct WindowJoinLogic<K, L, R> {
    size: i64,
    windows: BTreeMap<i64, Window<K, L, R>>,
}

/// A joined pair, stamped with its window's end - 1.
fn pair<K: Clone, L: Clone, R: Clone>(
    key: &K,
    start: i64,
    end: i64,
    l: &L,
    r: &R,
) -> Event<WindowJoined<K, L, R>> {
    Event {
        ts: end - 1,
        data: WindowJoined {
            key: key.clone(),
            start,
            end,
            left: l.clone(),
            right: r.clone(),
        },
    }
}

impl<K: ExchangeKey, L: Data, R: Data> EpochLogic<(K, Either<L, R>), WindowJoined<K, L, R>>
    for WindowJoinLogic<K, L, R>
{
    fn on_record(
        &mut self,
        r: Event<(K, Either<L, R>)>,
        wm: Watermark,
        out: &mut Emitter<(K, Either<L, R>), WindowJoined<K, L, R>>,
    ) {
        let start = r.ts.div_euclid(self.size) * self.size;
        let end = start.saturating_add(self.size);
        if end <= wm {
            out.late(r, 1);
            return;
        }
        let (k, side) = r.data;
        let Window { heads, left, right } = self.windows.entry(start).or_default();
        let head = match heads.get_mut(&k) {
            Some(head) => head,
            None => heads.entry(k.clone()).or_insert((NONE, NONE)),
        };
        match side {
            Either::Left(l) => {
                let mut i = head.1;
                while i != NONE {
                    let (x, next) = &right[i];
                    out.emit(pair(&k, start, end, &l, x));
                    i = *next;
                }
                left.push((l, head.0));
                head.0 = left.len() - 1;
            }
            Either::Right(x) => {
                let mut i = head.0;
                while i != NONE {
                    let (l, next) = &left[i];
                    out.emit(pair(&k, start, end, l, &x));
                    i = *next;
                }
                right.push((x, head.1));
                head.1 = right.len() - 1;
            }
        }
    }

    fn snapshot(&self) -> runnel_engine::Result<Vec<u8>> {
        runnel_engine::recovery::encode(&self.windows)
    }

    fn restore(&mut self, state: &[u8]) -> runnel_engine::Result<()> {
        self.windows = runnel_engine::recovery::decode(state)?;
        Ok(())
    }

    fn state_kind(&self) -> String {
        format!(
            "runnel.join.window.v3/{}",
            std::any::type_name::<(K, L, R)>()
        )
    }

    fn on_epoch_end(
        &mut self,
        wm: Watermark,
        _out: &mut Emitter<(K, Either<L, R>), WindowJoined<K, L, R>>,
    ) {
        // Every pair of a window was emitted when its second record arrived; a window that
        // the watermark has passed can get no more records, so its state goes.
        while let Some((&start, _)) = self.windows.first_key_value() {
            if start.saturating_add(self.size) > wm {
                break;
            }
            if let Some((_, window)) = self.windows.pop_first() {
                runnel_engine::reclaim::drop_in_background(window);
            }
        }
    }
}
