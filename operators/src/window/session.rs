//! Session windows: per key, records less than `gap` apart form one window
//! `[first ts, last ts + gap)`; a record that bridges two sessions merges them.
//!
//! Two windows merge when they overlap (`a.start < b.end && b.start < a.end`): a record exactly
//! `gap` after the previous one starts a new session. So a session `[s, e)` can only grow by
//! records with `ts < e`, which are behind the watermark once it fires (`e <= W`): results do not
//! depend on where the epochs fall. A record is late when its own window `[ts, ts + gap)` has
//! expired (`ts + gap + allowed_lateness <= W`), whatever sessions it might have joined; this
//! keeps the result independent of the order of records within an epoch.
//!
//! A session fires once when `end <= W`. Within the allowed lateness a fired session that
//! absorbs a record is emitted again (an updated result) at the end of the first epoch whose
//! watermark has reached its (possibly grown) end.
//!
//! ```
//! use std::time::Duration;
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("sessions", "views per session", move |flow| {
//!     let views = vec![vec![
//!         TestItem::At(0, 7u64), TestItem::At(4, 7), TestItem::At(30, 7), TestItem::At(40, 7),
//!         TestItem::At(2, 8),
//!     ]];
//!     flow.source("views", TestSource::new(views), SourceOptions::new()
//!             .bounded_out_of_order(Duration::from_millis(5)))?
//!         .key_by(|user: &u64| *user)
//!         .window(Session::with_gap(Duration::from_millis(10)))
//!         .aggregate(Count)?
//!         .map(|r| (r.key, r.start, r.end, r.value))
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(2)).unwrap();
//! // 30 and 40 are exactly one gap apart: two sessions.
//! assert_eq!(out.sorted_data(), vec![(7, 0, 14, 2), (7, 30, 40, 1), (7, 40, 50, 1), (8, 2, 12, 1)]);
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use runnel_engine::time::millis;
use runnel_engine::{Data, Emitter, EpochLogic, Event, ExchangeKey, KeyedState, Watermark};

use super::{WindowResult, WindowSpec};
use crate::aggregate::Aggregate;

/// Session windows.
#[derive(Clone, Copy, Debug)]
pub struct Session;

impl Session {
    /// Sessions that close after `gap` without records.
    pub fn with_gap(gap: Duration) -> WindowSpec {
        WindowSpec::Session { gap: millis(gap) }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Sess<Acc> {
    start: i64,
    end: i64,
    acc: Acc,
    fired: bool,
    dirty: bool,
}

pub(crate) struct SessionLogic<K, A: Aggregate<V>, V> {
    agg: A,
    gap: i64,
    lateness: i64,
    /// key -> sessions, sorted by start, disjoint and not touching.
    state: KeyedState<K, Vec<Sess<A::Acc>>>,
    _v: std::marker::PhantomData<fn(V)>,
}

impl<K: ExchangeKey, A: Aggregate<V>, V> SessionLogic<K, A, V> {
    pub(crate) fn new(agg: A, gap: i64, lateness: i64) -> Self {
        assert!(gap > 0, "session gap must be positive");
        SessionLogic {
            agg,
            gap,
            lateness,
            state: KeyedState::new("session"),
            _v: std::marker::PhantomData,
        }
    }
}

impl<K: ExchangeKey, V: Data, A: Aggregate<V>> EpochLogic<(K, V), WindowResult<K, A::Out>>
    for SessionLogic<K, A, V>
{
    fn on_record(
        &mut self,
        r: Event<(K, V)>,
        wm: Watermark,
        out: &mut Emitter<(K, V), WindowResult<K, A::Out>>,
    ) {
        let (start, end) = (r.ts, r.ts.saturating_add(self.gap));
        if end.saturating_add(self.lateness) <= wm {
            out.late(r, 1);
            return;
        }
        let (k, v) = (&r.data.0, &r.data.1);
        let sessions = match self.state.get_mut(k) {
            Some(s) => s,
            None => self.state.entry(k.clone()).or_default(),
        };
        let mut acc = self.agg.create();
        self.agg.add(&mut acc, v);
        let mut merged = Sess {
            start,
            end,
            acc,
            fired: false,
            dirty: false,
        };
        // Absorb every session that touches the new window.
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.start < merged.end && merged.start < s.end {
                let s = sessions.remove(i);
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
                self.agg.merge(&mut merged.acc, &s.acc);
                merged.fired |= s.fired;
            } else {
                i += 1;
            }
        }
        // A fired session that absorbed a record is emitted again once the watermark reaches
        // its end.
        merged.dirty = merged.fired;
        let pos = sessions.partition_point(|s| s.start < merged.start);
        sessions.insert(pos, merged);
    }

    fn snapshot(&self) -> runnel_engine::Result<Vec<u8>> {
        self.state.to_bytes()
    }

    fn restore(&mut self, state: &[u8]) -> runnel_engine::Result<()> {
        self.state.restore_bytes(state)
    }

    fn state_kind(&self) -> String {
        format!(
            "runnel.window.sessions/{}",
            std::any::type_name::<(K, A::Acc)>()
        )
    }

    fn on_epoch_end(&mut self, wm: Watermark, out: &mut Emitter<(K, V), WindowResult<K, A::Out>>) {
        let lateness = self.lateness;
        let agg = &self.agg;
        self.state.retain(|k, sessions| {
            for s in sessions.iter_mut() {
                if s.end <= wm && (!s.fired || s.dirty) {
                    out.emit(Event {
                        ts: s.end - 1,
                        data: WindowResult {
                            key: k.clone(),
                            start: s.start,
                            end: s.end,
                            value: agg.result(&s.acc),
                        },
                    });
                    s.fired = true;
                    s.dirty = false;
                }
            }
            sessions.retain(|s| s.end.saturating_add(lateness) > wm);
            !sessions.is_empty()
        });
    }
}
