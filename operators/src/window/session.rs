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

use std::collections::BTreeMap;
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
    /// The timer bucket its key is queued in for it ([`UNQUEUED`] if none): always at or
    /// before the bucket of its due time. Rebuilt on restore.
    #[serde(skip, default = "unqueued")]
    queued: i64,
}

/// [`Sess::queued`] of a session whose key is in no timer bucket for it.
const UNQUEUED: i64 = i64::MAX;

fn unqueued() -> i64 {
    UNQUEUED
}

impl<Acc> Sess<Acc> {
    /// When the session next needs the operator: its end while it has a result to emit, then
    /// its end plus the lateness, when it is dropped.
    fn due(&self, lateness: i64) -> i64 {
        if !self.fired || self.dirty {
            self.end
        } else {
            self.end.saturating_add(lateness)
        }
    }
}

/// Timer buckets per gap: a key waiting in the bucket that the watermark is in is looked at
/// again every epoch until the bucket has passed, so a bucket is kept short.
const BUCKETS_PER_GAP: i64 = 16;

pub(crate) struct SessionLogic<K, A: Aggregate<V>, V> {
    agg: A,
    gap: i64,
    lateness: i64,
    /// key -> sessions, sorted by start, disjoint and not touching.
    state: KeyedState<K, Vec<Sess<A::Acc>>>,
    /// Timers: bucket (due time / `bucket`) -> the keys with a session due in it or later. An
    /// epoch's end looks only at the keys of the buckets the watermark has reached, instead
    /// of every key (that scan was a third of q11's time at half load). A session's end only
    /// grows as records join it, so its key stays queued where it was and is queued again,
    /// for the later end, when that bucket comes up; a key may be in a bucket for nothing
    /// (its session grew, merged or was dropped), and is then passed over.
    timers: Timers<K>,
    /// The width of a timer bucket, event-time milliseconds.
    bucket: i64,
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
            timers: Timers::default(),
            bucket: (gap / BUCKETS_PER_GAP).max(1),
            _v: std::marker::PhantomData,
        }
    }
}

/// The timer buckets, with the bucket written last kept aside: records mostly open sessions
/// due in one bucket, so most pushes skip the map.
struct Timers<K> {
    buckets: BTreeMap<i64, Vec<K>>,
    /// The bucket written last and its keys (not in `buckets` yet).
    staged: (i64, Vec<K>),
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            buckets: BTreeMap::new(),
            staged: (i64::MIN, Vec::new()),
        }
    }
}

impl<K> Timers<K> {
    fn push(&mut self, bucket: i64, key: K) {
        if bucket != self.staged.0 {
            self.flush();
            self.staged.0 = bucket;
        }
        self.staged.1.push(key);
    }

    /// Moves the staged keys into their bucket.
    fn flush(&mut self) {
        let (b, keys) = &mut self.staged;
        if !keys.is_empty() {
            self.buckets.entry(*b).or_default().append(keys);
        }
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.staged.1.clear();
    }
}

/// Queues `key` for session `s` in the bucket of its due time, unless it is already queued in
/// that bucket or an earlier one.
fn schedule<K: Clone, Acc>(
    timers: &mut Timers<K>,
    bucket: i64,
    lateness: i64,
    key: &K,
    s: &mut Sess<Acc>,
) {
    let b = s.due(lateness).div_euclid(bucket);
    if b < s.queued {
        timers.push(b, key.clone());
        s.queued = b;
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
            queued: UNQUEUED,
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
                // The key's earliest timer among the merged sessions stands for the whole.
                merged.queued = merged.queued.min(s.queued);
            } else {
                i += 1;
            }
        }
        // A fired session that absorbed a record is emitted again once the watermark reaches
        // its end.
        merged.dirty = merged.fired;
        schedule(&mut self.timers, self.bucket, self.lateness, k, &mut merged);
        let pos = sessions.partition_point(|s| s.start < merged.start);
        sessions.insert(pos, merged);
    }

    fn snapshot(&self) -> runnel_engine::Result<Vec<u8>> {
        self.state.to_bytes()
    }

    fn restore(&mut self, state: &[u8]) -> runnel_engine::Result<()> {
        self.state.restore_bytes(state)?;
        // Timers are not in the snapshot: queue every restored session again.
        self.timers.clear();
        for (k, sessions) in self.state.iter_mut() {
            for s in sessions.iter_mut() {
                s.queued = UNQUEUED;
                schedule(&mut self.timers, self.bucket, self.lateness, k, s);
            }
        }
        Ok(())
    }

    fn state_kind(&self) -> String {
        format!(
            "runnel.window.sessions/{}",
            std::any::type_name::<(K, A::Acc)>()
        )
    }

    fn on_epoch_end(&mut self, wm: Watermark, out: &mut Emitter<(K, V), WindowResult<K, A::Out>>) {
        let (lateness, bucket) = (self.lateness, self.bucket);
        // The buckets the watermark has reached; the last may hold sessions due later, which
        // go back into it (taken out first, so that they wait for the next epoch).
        self.timers.flush();
        let reached: Vec<i64> = self
            .timers
            .buckets
            .range(..=wm.div_euclid(bucket))
            .map(|(&b, _)| b)
            .collect();
        for b in reached {
            let keys = self.timers.buckets.remove(&b).unwrap_or_default();
            // Keys that stay in this bucket (the one the watermark is in) for a session due
            // later in it: put back as they were, one entry for one, so that a key queued
            // twice is not queued again for each entry at every epoch.
            let mut stay = Vec::new();
            for k in keys {
                let Some(sessions) = self.state.get_mut(&k) else {
                    continue;
                };
                for s in sessions.iter_mut() {
                    if s.end <= wm && (!s.fired || s.dirty) {
                        out.emit(Event {
                            ts: s.end - 1,
                            data: WindowResult {
                                key: k.clone(),
                                start: s.start,
                                end: s.end,
                                value: self.agg.result(&s.acc),
                            },
                        });
                        s.fired = true;
                        s.dirty = false;
                    }
                }
                sessions.retain(|s| s.end.saturating_add(lateness) > wm);
                if sessions.is_empty() {
                    self.state.remove(&k);
                    continue;
                }
                let mut stays = false;
                for s in sessions.iter_mut() {
                    if s.queued == b {
                        if s.due(lateness).div_euclid(bucket) == b {
                            stays = true;
                        } else {
                            // This entry was the session's: queue it where it is due now.
                            s.queued = UNQUEUED;
                        }
                    }
                }
                // A key's sessions due in one bucket share one entry.
                let mut last = UNQUEUED;
                for s in sessions.iter_mut() {
                    let due = s.due(lateness).div_euclid(bucket);
                    if due < s.queued {
                        if due != last {
                            self.timers.push(due, k.clone());
                            last = due;
                        }
                        s.queued = due;
                    }
                }
                if stays {
                    stay.push(k);
                }
            }
            if !stay.is_empty() {
                self.timers.buckets.entry(b).or_default().append(&mut stay);
            }
        }
    }
}
