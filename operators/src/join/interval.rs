//! The interval join: a left record `a` and a right record `b` with the same key join when
//! `a.ts - lower <= b.ts <= a.ts + upper`. Pairs are emitted as soon as both sides are there,
//! with event time `max(a.ts, b.ts)`. Records behind the watermark (`ts < W` at the start of
//! their epoch) are late: counted and dropped. State is dropped once the watermark guarantees
//! that no on-time record can match it.
//!
//! ```
//! use std::time::Duration;
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("clicks-after-ads", "interval join", move |flow| {
//!     let ads = vec![vec![TestItem::At(100, 1u32)]];
//!     let clicks = vec![vec![TestItem::At(95, 1u32), TestItem::At(130, 1), TestItem::At(300, 1)]];
//!     let a = flow.source("ads", TestSource::new(ads), SourceOptions::new())?.key_by(|x: &u32| *x);
//!     let c = flow.source("clicks", TestSource::new(clicks), SourceOptions::new())?.key_by(|x: &u32| *x);
//!     a.interval_join(&c, Duration::from_millis(10), Duration::from_millis(50))?
//!         .map(|j| j.right_ts)
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(1)).unwrap();
//! assert_eq!(out.sorted_data(), vec![95, 130]);
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use runnel_engine::time::millis;
use runnel_engine::{
    Data, Either, Emitter, EpochLogic, Event, ExchangeKey, KeyedState, KeyedStream, Result, Stream,
    Watermark,
};

/// A pair joined by the interval join.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Joined<K, L, R> {
    /// The key both records share.
    pub key: K,
    /// The left record.
    pub left: L,
    /// The left record's event time.
    pub left_ts: i64,
    /// The right record.
    pub right: R,
    /// The right record's event time.
    pub right_ts: i64,
}

/// `left.interval_join(&right, lower, upper)`.
pub trait IntervalJoinExt<'s, K, L> {
    /// Joins `a` of `self` with `b` of `right` (same key) when
    /// `a.ts - lower <= b.ts <= a.ts + upper`.
    fn interval_join<R: Data>(
        &self,
        right: &KeyedStream<'s, K, R>,
        lower: Duration,
        upper: Duration,
    ) -> Result<Stream<'s, Joined<K, L, R>>>;

    /// Like [`IntervalJoinExt::interval_join`], with an operator name.
    fn interval_join_named<R: Data>(
        &self,
        name: &str,
        right: &KeyedStream<'s, K, R>,
        lower: Duration,
        upper: Duration,
    ) -> Result<Stream<'s, Joined<K, L, R>>>;
}

impl<'s, K: ExchangeKey, L: Data> IntervalJoinExt<'s, K, L> for KeyedStream<'s, K, L> {
    #[track_caller]
    fn interval_join<R: Data>(
        &self,
        right: &KeyedStream<'s, K, R>,
        lower: Duration,
        upper: Duration,
    ) -> Result<Stream<'s, Joined<K, L, R>>> {
        self.interval_join_named("", right, lower, upper)
    }

    #[track_caller]
    fn interval_join_named<R: Data>(
        &self,
        name: &str,
        right: &KeyedStream<'s, K, R>,
        lower: Duration,
        upper: Duration,
    ) -> Result<Stream<'s, Joined<K, L, R>>> {
        let logic = IntervalJoinLogic {
            lower: millis(lower),
            upper: millis(upper),
            state: KeyedState::new("interval-join"),
        };
        Ok(self.connect(right).stateful(name, false, logic)?.0)
    }
}

type Buffers<L, R> = (Vec<(i64, L)>, Vec<(i64, R)>);

struct IntervalJoinLogic<K, L, R> {
    lower: i64,
    upper: i64,
    state: KeyedState<K, Buffers<L, R>>,
}

impl<K: ExchangeKey, L: Data, R: Data> EpochLogic<(K, Either<L, R>), Joined<K, L, R>>
    for IntervalJoinLogic<K, L, R>
{
    fn on_record(
        &mut self,
        r: Event<(K, Either<L, R>)>,
        wm: Watermark,
        out: &mut Emitter<(K, Either<L, R>), Joined<K, L, R>>,
    ) {
        if r.ts < wm {
            out.late(r, 1);
            return;
        }
        let ts = r.ts;
        let (k, side) = r.data;
        let (lower, upper) = (self.lower, self.upper);
        let (ls, rs) = self.state.entry(k.clone()).or_default();
        match side {
            Either::Left(a) => {
                for (bts, b) in rs.iter() {
                    if ts - lower <= *bts && *bts <= ts + upper {
                        out.emit(joined(&k, &a, ts, b, *bts));
                    }
                }
                ls.push((ts, a));
            }
            Either::Right(b) => {
                for (ats, a) in ls.iter() {
                    if *ats - lower <= ts && ts <= *ats + upper {
                        out.emit(joined(&k, a, *ats, &b, ts));
                    }
                }
                rs.push((ts, b));
            }
        }
    }

    fn snapshot(&self) -> runnel_engine::Result<Vec<u8>> {
        self.state.to_bytes()
    }

    fn restore(&mut self, state: &[u8]) -> runnel_engine::Result<()> {
        self.state.restore_bytes(state)
    }

    fn state_kind(&self) -> String {
        format!(
            "runnel.join.interval/{}",
            std::any::type_name::<(K, L, R)>()
        )
    }

    fn on_epoch_end(
        &mut self,
        wm: Watermark,
        _out: &mut Emitter<(K, Either<L, R>), Joined<K, L, R>>,
    ) {
        let (lower, upper) = (self.lower, self.upper);
        self.state.retain(|_, (ls, rs)| {
            ls.retain(|(ts, _)| ts.saturating_add(upper) >= wm);
            rs.retain(|(ts, _)| ts.saturating_add(lower) >= wm);
            !(ls.is_empty() && rs.is_empty())
        });
    }
}

fn joined<K: Clone, L: Clone, R: Clone>(
    k: &K,
    a: &L,
    ats: i64,
    b: &R,
    bts: i64,
) -> Event<Joined<K, L, R>> {
    Event {
        ts: ats.max(bts),
        data: Joined {
            key: k.clone(),
            left: a.clone(),
            left_ts: ats,
            right: b.clone(),
            right_ts: bts,
        },
    }
}
