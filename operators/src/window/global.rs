//! The global window: one window per key over all of event time, which fires when the input
//! ends (the watermark reaches its maximum). For bounded inputs (files): word counts, totals.
//!
//! ```
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("totals", "count per key", move |flow| {
//!     let input = vec![vec![TestItem::At(5, 1u8), TestItem::Cut, TestItem::At(1, 1), TestItem::At(9, 2)]];
//!     flow.source("in", TestSource::new(input), SourceOptions::new())?
//!         .key_by(|k: &u8| *k)
//!         .window(Global::window())
//!         .aggregate(Count)?
//!         .map(|r| (r.key, r.value))
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(2)).unwrap();
//! assert_eq!(out.sorted_data(), vec![(1, 2), (2, 1)]);
//! ```

use runnel_engine::time::WATERMARK_MAX;
use runnel_engine::{Data, Emitter, EpochLogic, Event, ExchangeKey, KeyedState, Watermark};

use super::{WindowResult, WindowSpec};
use crate::aggregate::Aggregate;

/// The global window.
#[derive(Clone, Copy, Debug)]
pub struct Global;

impl Global {
    /// One window per key, `[i64::MIN, i64::MAX)`, emitted when the input ends.
    pub fn window() -> WindowSpec {
        WindowSpec::Global
    }
}

pub(crate) struct GlobalLogic<K, A: Aggregate<V>, V> {
    agg: A,
    state: KeyedState<K, A::Acc>,
    _v: std::marker::PhantomData<fn(V)>,
}

impl<K: ExchangeKey, A: Aggregate<V>, V> GlobalLogic<K, A, V> {
    pub(crate) fn new(agg: A) -> Self {
        GlobalLogic {
            agg,
            state: KeyedState::new("global"),
            _v: std::marker::PhantomData,
        }
    }
}

impl<K: ExchangeKey, V: Data, A: Aggregate<V>> EpochLogic<(K, V), WindowResult<K, A::Out>>
    for GlobalLogic<K, A, V>
{
    #[inline]
    fn on_record(
        &mut self,
        r: Event<(K, V)>,
        _wm: Watermark,
        _out: &mut Emitter<(K, V), WindowResult<K, A::Out>>,
    ) {
        let (k, v) = r.data;
        match self.state.get_mut(&k) {
            Some(acc) => self.agg.add(acc, &v),
            None => {
                let mut acc = self.agg.create();
                self.agg.add(&mut acc, &v);
                self.state.insert(k, acc);
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
            "runnel.window.global/{}",
            std::any::type_name::<(K, A::Acc)>()
        )
    }

    fn on_epoch_end(&mut self, wm: Watermark, out: &mut Emitter<(K, V), WindowResult<K, A::Out>>) {
        if wm == WATERMARK_MAX {
            for (k, acc) in self.state.drain() {
                out.emit(Event {
                    ts: WATERMARK_MAX - 1,
                    data: WindowResult {
                        key: k,
                        start: i64::MIN,
                        end: i64::MAX,
                        value: self.agg.result(&acc),
                    },
                });
            }
        }
    }
}
