//! Updating window results: [`super::Windowed::aggregate_updating`].
//!
//! Instead of one result per key and window when the window closes, the operator keeps each
//! window's result up to date as records arrive: at the end of every epoch in which a key's
//! window received records, it emits the window's result so far, which replaces the one it
//! emitted before (an upsert, keyed by key and window start). This is what Kafka Streams'
//! windowed aggregations emit (a `KTable<Windowed<K>, V>`, with its cache flushed at each
//! commit) and what Flink's group-by on a time bucket writes to an upsert sink: results come
//! when the epoch ends, not when the window does, so a long window (a day) holds no burst of
//! results back until its end.
//!
//! A window is kept until the watermark passes its end plus the allowed lateness; then its
//! state is dropped and its last row stands. A record whose every window has expired is late
//! (counted, and dropped).
//!
//! A window's keys are spread over [`SHARDS`] hash maps of staggered sizes. A hash map that
//! doubles moves all its entries at once into a new table, whose fresh pages the kernel zeroes:
//! one map per window would stall its worker for over a second when a day-long window of
//! millions of keys doubles, holding every result of that epoch back. Equal shards would not
//! help, as they fill at one pace and double in the same epoch. So the shards take unequal
//! shares of the keys, spread evenly over one octave (shard `i` about `2^(i/SHARDS)` times the
//! first's), and their doublings are spread evenly over the time the window takes to double.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use runnel_engine::event::key_hash;
use runnel_engine::{Data, Emitter, EpochLogic, Event, ExchangeKey, Watermark};

use super::{Panes, Partial, WindowResult};
use crate::aggregate::Aggregate;

/// How many hash maps hold a window's keys (at most 256: a shard's index is a `u8`).
const SHARDS: usize = 64;
const _: () = assert!(SHARDS <= 256 && SHARDS.is_power_of_two());

/// The resolution of [`ShardTable`].
const SLOTS: usize = 4096;

/// Which shard a key goes to, by the top bits of its exchange hash (the exchange routes on the
/// low bits, and the maps hash keys with their own hasher): slot `j` of `SLOTS` holds the shard
/// of hashes in `[j, j + 1) / SLOTS`, and shard `i` has slots in proportion to `2^(i/SHARDS)`.
struct ShardTable(Box<[u8; SLOTS]>);

impl ShardTable {
    fn new() -> Self {
        let weight = |i: usize| (i as f64 / SHARDS as f64).exp2();
        let total: f64 = (0..SHARDS).map(weight).sum();
        let mut table = Box::new([0u8; SLOTS]);
        let mut upto = 0.0;
        let mut shard = 0;
        for (j, slot) in table.iter_mut().enumerate() {
            // The slot's middle decides: shards before `shard` end at `upto`.
            let at = (j as f64 + 0.5) / SLOTS as f64;
            while shard + 1 < SHARDS && at >= upto + weight(shard) / total {
                upto += weight(shard) / total;
                shard += 1;
            }
            *slot = shard as u8;
        }
        ShardTable(table)
    }

    #[inline]
    fn of<K: std::hash::Hash>(&self, k: &K) -> usize {
        self.0[(key_hash(k) >> (64 - SLOTS.trailing_zeros())) as usize] as usize
    }
}

/// One key's state in one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry<Acc> {
    /// The window's records so far.
    acc: Acc,
    /// The event time of the newest record since the last emission (what the next emission's
    /// latency is measured from).
    #[serde(skip, default = "no_time")]
    newest: i64,
    /// Whether the entry is in the epoch's list of changed windows.
    #[serde(skip)]
    dirty: bool,
}

fn no_time() -> i64 {
    i64::MIN
}

type Shard<K, Acc> = HashMap<K, Entry<Acc>, FxBuildHasher>;

/// The keyed half of [`super::Windowed::aggregate_updating`]: merges the combiners' partials
/// into every window of their pane and, at each epoch end, emits the changed windows' results.
pub(crate) struct UpdatingLogic<K, A: Aggregate<V>, V> {
    agg: A,
    panes: Panes,
    lateness: i64,
    /// Which shard each key goes to.
    shards: ShardTable,
    /// Window start -> the window's keys, in [`SHARDS`] maps by [`ShardTable::of`].
    state: BTreeMap<i64, Vec<Shard<K, A::Acc>>>,
    /// The windows that changed in this epoch: (start, shard, key), each once.
    dirty: Vec<(i64, u8, K)>,
    _v: std::marker::PhantomData<fn(V)>,
}

impl<K: ExchangeKey, V: Data, A: Aggregate<V>> UpdatingLogic<K, A, V> {
    pub(crate) fn new(agg: A, panes: Panes, lateness: i64) -> Self {
        UpdatingLogic {
            agg,
            panes,
            lateness,
            shards: ShardTable::new(),
            state: BTreeMap::new(),
            dirty: Vec::new(),
            _v: std::marker::PhantomData,
        }
    }

    /// When the window starting at `s` expires: its end plus the allowed lateness.
    #[inline]
    fn expiry(&self, s: i64) -> i64 {
        s.saturating_add(self.panes.size)
            .saturating_add(self.lateness)
    }
}

fn empty_window<K, Acc>() -> Vec<Shard<K, Acc>> {
    (0..SHARDS).map(|_| HashMap::default()).collect()
}

impl<K: ExchangeKey, V: Data, A: Aggregate<V>, R: Data>
    EpochLogic<(K, Partial<A::Acc, R>), WindowResult<K, A::Out>> for UpdatingLogic<K, A, V>
{
    #[inline]
    fn on_record(
        &mut self,
        r: Event<(K, Partial<A::Acc, R>)>,
        wm: Watermark,
        out: &mut Emitter<(K, Partial<A::Acc, R>), WindowResult<K, A::Out>>,
    ) {
        let p = r.data.1.pane;
        let shard = self.shards.of(&r.data.0);
        let mut taken = false;
        for s in self.panes.windows(p) {
            if self.expiry(s) <= wm {
                continue;
            }
            taken = true;
            let map = &mut self.state.entry(s).or_insert_with(empty_window)[shard];
            let k = &r.data.0;
            let entry = match map.get_mut(k) {
                Some(e) => {
                    self.agg.merge(&mut e.acc, &r.data.1.acc);
                    e
                }
                None => map.entry(k.clone()).or_insert(Entry {
                    acc: r.data.1.acc.clone(),
                    newest: r.ts,
                    dirty: false,
                }),
            };
            entry.newest = entry.newest.max(r.ts);
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push((s, shard as u8, k.clone()));
            }
        }
        if !taken {
            // Every window holding the record's pane has expired (or there is none: a slide
            // longer than the size leaves gaps).
            let n = r.data.1.n;
            out.late(r, n);
        }
    }

    fn on_epoch_end(
        &mut self,
        wm: Watermark,
        out: &mut Emitter<(K, Partial<A::Acc, R>), WindowResult<K, A::Out>>,
    ) {
        let size = self.panes.size;
        for (s, shard, key) in self.dirty.drain(..) {
            let Some(entry) = self
                .state
                .get_mut(&s)
                .and_then(|w| w[shard as usize].get_mut(&key))
            else {
                continue;
            };
            entry.dirty = false;
            let ts = std::mem::replace(&mut entry.newest, i64::MIN);
            out.emit(Event {
                ts,
                data: WindowResult {
                    key,
                    start: s,
                    end: s.saturating_add(size),
                    value: self.agg.result(&entry.acc),
                },
            });
        }
        // Expired windows are dropped; their last rows stand.
        while let Some((&s, _)) = self.state.first_key_value() {
            if self.expiry(s) > wm {
                break;
            }
            self.state.pop_first();
        }
    }

    fn snapshot(&self) -> runnel_engine::Result<Vec<u8>> {
        runnel_engine::recovery::encode(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> runnel_engine::Result<()> {
        let saved: BTreeMap<i64, Vec<Shard<K, A::Acc>>> = runnel_engine::recovery::decode(state)?;
        // Placed again by this build's shard function, whatever wrote the checkpoint.
        self.state = saved
            .into_iter()
            .map(|(s, shards)| {
                let mut window = empty_window();
                for (k, e) in shards.into_iter().flatten() {
                    window[self.shards.of(&k)].insert(k, e);
                }
                (s, window)
            })
            .collect();
        self.dirty.clear();
        Ok(())
    }

    fn state_kind(&self) -> String {
        format!(
            "runnel.window.updating.v1/{}",
            std::any::type_name::<(K, A::Acc)>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_take_shares_spread_over_one_octave() {
        let table = ShardTable::new();
        let mut slots = [0usize; SHARDS];
        for &s in table.0.iter() {
            slots[s as usize] += 1;
        }
        // In order, every shard has slots, and the last about twice the first's.
        assert!(table.0.windows(2).all(|w| w[0] <= w[1]));
        assert!(slots.iter().all(|&n| n > 0), "{slots:?}");
        let ratio = slots[SHARDS - 1] as f64 / slots[0] as f64;
        assert!((1.8..2.2).contains(&ratio), "{slots:?}");
        // Keys spread as the slots say (100,000 small integers, as keys often are).
        let mut keys = [0usize; SHARDS];
        for k in 0u64..100_000 {
            keys[table.of(&k)] += 1;
        }
        let (first, last) = (keys[0] as f64, keys[SHARDS - 1] as f64);
        assert!((1.5..2.6).contains(&(last / first)), "{keys:?}");
    }
}
