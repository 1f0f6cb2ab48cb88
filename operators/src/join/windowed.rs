//! The windowed join: records of two keyed streams with the same key in the same tumbling window
//! join, pairwise, when the window fires. Records whose window has already fired are late:
//! counted (`<operator>.late`) and dropped.
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

use std::collections::BTreeMap;
use std::time::Duration;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use runnel_engine::time::millis;
use runnel_engine::{
    Data, Either, Emitter, EpochLogic, Event, ExchangeKey, KeyedState, KeyedStream, Origin, Result,
    Stream, Watermark,
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
    /// `size`; results are emitted when the window fires, with event time `end - 1`.
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
            state: KeyedState::new("window-join"),
            fire: BTreeMap::new(),
        };
        Ok(self.connect(right).stateful(name, false, logic)?.0)
    }
}

type Sides<L, R> = (Vec<L>, Vec<R>);

/// State: per key, the records of each open window ([`KeyedState`]); the timers (which keys
/// have a window ending when) are derived from it.
struct WindowJoinLogic<K, L, R> {
    size: i64,
    state: KeyedState<K, BTreeMap<i64, Sides<L, R>>>,
    fire: BTreeMap<i64, FxHashSet<K>>,
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
        let windows = match self.state.get_mut(&k) {
            Some(w) => w,
            None => self.state.entry(k.clone()).or_default(),
        };
        let entry = windows.entry(start).or_insert_with(|| {
            self.fire.entry(end).or_default().insert(k.clone());
            (Vec::new(), Vec::new())
        });
        match side {
            Either::Left(l) => entry.0.push(l),
            Either::Right(x) => entry.1.push(x),
        }
    }

    fn snapshot(&self) -> runnel_engine::Result<Vec<u8>> {
        runnel_engine::recovery::encode(&(self.state.to_bytes()?, &self.fire))
    }

    fn restore(&mut self, state: &[u8]) -> runnel_engine::Result<()> {
        let (entries, fire): (Vec<u8>, _) = runnel_engine::recovery::decode(state)?;
        self.state.restore_bytes(&entries)?;
        self.fire = fire;
        Ok(())
    }

    fn state_kind(&self) -> String {
        format!("runnel.join.window/{}", std::any::type_name::<(K, L, R)>())
    }

    fn on_epoch_end(
        &mut self,
        wm: Watermark,
        out: &mut Emitter<(K, Either<L, R>), WindowJoined<K, L, R>>,
    ) {
        while let Some(entry) = self.fire.first_entry() {
            let end = *entry.key();
            if end > wm {
                break;
            }
            let start = end - self.size;
            for k in entry.remove() {
                let Some(windows) = self.state.get_mut(&k) else {
                    continue;
                };
                if let Some((ls, rs)) = windows.remove(&start) {
                    for l in &ls {
                        for x in &rs {
                            out.emit(Event {
                                ts: end - 1,
                                origin: Origin::default(),
                                data: WindowJoined {
                                    key: k.clone(),
                                    start,
                                    end,
                                    left: l.clone(),
                                    right: x.clone(),
                                },
                            });
                        }
                    }
                }
                if windows.is_empty() {
                    self.state.remove(&k);
                }
            }
        }
    }
}
