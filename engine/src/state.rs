//! Keyed operator state: the one API through which every stateful operator keeps its state, so
//! that a checkpoint can snapshot it and a restore can rebuild it.
//!
//! A [`KeyedState`] belongs to one operator (its *step id*, the operator's stable name) and maps
//! keys to values. Both must be serde types: a [`Snapshot`] is the list of `(key, value)` pairs in key
//! order, which the checkpoint store writes.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use rustc_hash::FxBuildHasher;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The state of one operator instance: a map from keys to values, named by the operator.
#[derive(Debug, Clone)]
pub struct KeyedState<K, V> {
    step_id: String,
    map: StaggeredMap<K, V>,
}

/// A snapshot of a [`KeyedState`]: what a checkpoint stores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot<K, V> {
    /// The operator the state belongs to.
    pub step_id: String,
    /// The entries.
    pub entries: Vec<(K, V)>,
}

impl<K: Hash + Eq, V> KeyedState<K, V> {
    /// Empty state for the operator named `step_id`.
    pub fn new(step_id: impl Into<String>) -> Self {
        KeyedState {
            step_id: step_id.into(),
            map: StaggeredMap::new(),
        }
    }
    /// The operator this state belongs to.
    pub fn step_id(&self) -> &str {
        &self.step_id
    }
    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }
    /// The value for `key`, mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }
    /// The entry for `key`.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.map.entry(key)
    }
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.map.insert(key, value)
    }
    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }
    /// Keeps the entries for which `f` is true.
    pub fn retain(&mut self, f: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(f)
    }
    /// Removes and returns every entry.
    pub fn drain(&mut self) -> impl Iterator<Item = (K, V)> + '_ {
        self.map.drain()
    }
    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.map.iter()
    }
    /// All entries, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> + '_ {
        self.map.iter_mut()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<
        K: Hash + Eq + Clone + Ord + Serialize + DeserializeOwned,
        V: Clone + Serialize + DeserializeOwned,
    > KeyedState<K, V>
{
    /// A snapshot of every entry, in key order (so that equal states give equal snapshots).
    pub fn snapshot(&self) -> Snapshot<K, V> {
        let mut entries: Vec<(K, V)> = self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            step_id: self.step_id.clone(),
            entries,
        }
    }

    /// Rebuilds the state from a snapshot of the same operator.
    pub fn restore(snapshot: Snapshot<K, V>) -> Self {
        KeyedState {
            step_id: snapshot.step_id,
            map: snapshot.entries.into_iter().collect(),
        }
    }
}

impl<K: Hash + Eq + Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>
    KeyedState<K, V>
{
    /// Every entry, serialized for a checkpoint (in no particular order; nothing is cloned).
    pub fn to_bytes(&self) -> crate::Result<Vec<u8>> {
        crate::recovery::encode(&self.map)
    }

    /// Replaces every entry with those [`KeyedState::to_bytes`] wrote.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> crate::Result<()> {
        self.map = crate::recovery::decode(bytes)?;
        Ok(())
    }
}

/// Shards of a [`StaggeredMap`] once it has split.
const SHARD_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;
/// Keys at which a [`StaggeredMap`] splits its one map into [`SHARDS`] (a rehash of this many
/// keys takes well under a millisecond).
const SPLIT_AT: usize = 1 << 14;

/// A hash map (FxHash) that grows a small part at a time, for state that grows large.
///
/// One large hash map stops its worker for a whole rehash each time it doubles: it copies
/// every entry into a new table, and on a machine that provides fresh memory slowly (a VM
/// whose host backs a page on first touch, 4 s per GB on the benchmark machine) that stopped
/// both workers of Nexmark q11 (sessions per bidder) for about 220 ms in the same moment. So once
/// it holds [`SPLIT_AT`] keys, the map splits into 256 maps (shards), chosen by a hash of the
/// key other than the maps' own. The shards get unequal shares of the keys (see [`stagger`]),
/// so that they do not all double at once: equal shares grow in step, and 256 rehashes in a
/// row stop the worker as one map's rehash would.
///
/// It serializes as a sequence of `(key, value)` pairs, in no particular order.
#[derive(Clone, Debug)]
pub struct StaggeredMap<K, V> {
    /// One map until [`SPLIT_AT`] keys, then [`SHARDS`].
    shards: Vec<HashMap<K, V, FxBuildHasher>>,
}

/// The shard of a hash's top 16 bits `u`: about `256 * log2(1 + u / 2^16)`, so that shard `i`
/// gets a share of the hashes proportional to about `2^(i / 256)`. The shares run from 1 to
/// 2 smoothly, and as the keys grow, the shards reach their next doubling one after another
/// over the whole time it takes the map to double. It is `x * (1 + c * (1 - x))` for
/// `x = u / 2^16` and `c = 11 / 32`, within 0.01 of the logarithm, in integer arithmetic (a
/// 64 KiB table of the exact logarithm cost q11's sessions a cache miss per record).
#[inline]
fn stagger(u: u64) -> usize {
    debug_assert!(u < 1 << 16);
    let x = u * ((1 << 16) + ((11 * ((1 << 16) - u)) >> 5));
    (x >> 24) as usize
}

impl<K, V> Default for StaggeredMap<K, V> {
    fn default() -> Self {
        StaggeredMap {
            shards: vec![HashMap::default()],
        }
    }
}

impl<K: Hash + Eq, V> StaggeredMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shard of `key`: a multiple of its hash (so that the keys of one shard still
    /// spread over its map's buckets, which the hash's low and top bits choose), looked up
    /// in [`stagger`].
    #[inline]
    fn shard(&self, key: &K) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        let h = FxBuildHasher
            .hash_one(key)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        stagger(h >> 48)
    }

    /// Splits the one map into [`SHARDS`] once it has [`SPLIT_AT`] keys.
    #[inline]
    fn grow(&mut self) {
        if self.shards.len() == 1 && self.shards[0].len() >= SPLIT_AT {
            let one = std::mem::replace(
                &mut self.shards,
                (0..SHARDS).map(|_| HashMap::default()).collect(),
            );
            for (k, v) in one.into_iter().flatten() {
                let i = self.shard(&k);
                self.shards[i].insert(k, v);
            }
        }
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards[self.shard(key)].get(key)
    }
    /// The value for `key`, mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.shard(key);
        self.shards[i].get_mut(key)
    }
    /// The entry for `key`.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.grow();
        let i = self.shard(&key);
        self.shards[i].entry(key)
    }
    /// Sets `key` to `value`, returning the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.grow();
        let i = self.shard(&key);
        self.shards[i].insert(key, value)
    }
    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.shard(key);
        self.shards[i].remove(key)
    }
    /// Keeps the entries for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        for s in &mut self.shards {
            s.retain(&mut f);
        }
    }
    /// Removes and returns every entry.
    pub fn drain(&mut self) -> impl Iterator<Item = (K, V)> + '_ {
        self.shards.iter_mut().flat_map(|s| s.drain())
    }
    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(|s| s.iter())
    }
    /// All entries, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> + '_ {
        self.shards.iter_mut().flat_map(|s| s.iter_mut())
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for StaggeredMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = StaggeredMap::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<K: Hash + Eq + Serialize, V: Serialize> Serialize for StaggeredMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for entry in self.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de, K: Hash + Eq + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de>
    for StaggeredMap<K, V>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Inserts the pairs as they are read (a large state is not held twice).
        struct Pairs<K, V>(PhantomData<fn() -> (K, V)>);
        impl<'de, K: Hash + Eq + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Pairs<K, V> {
            type Value = StaggeredMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of (key, value) pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut m = StaggeredMap::new();
                while let Some((k, v)) = seq.next_element::<(K, V)>()? {
                    m.insert(k, v);
                }
                Ok(m)
            }
        }
        deserializer.deserialize_seq(Pairs(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_in_key_order() {
        let mut s = KeyedState::new("count");
        for k in [5u64, 1, 3] {
            *s.entry(k).or_insert(0u64) += k;
        }
        let snap = s.snapshot();
        assert_eq!(snap.entries, vec![(1, 1), (3, 3), (5, 5)]);
        let back = KeyedState::restore(snap.clone());
        assert_eq!(back.snapshot(), snap);
        assert_eq!(back.step_id(), "count");
    }

    /// Every shard gets keys, and the shares grow from the first shard to the last by a
    /// factor of about 2 (so their doublings are spread over one doubling of the map).
    #[test]
    fn stagger_spreads_the_shards_shares_from_one_to_two() {
        let mut share = vec![0u32; SHARDS];
        for u in 0..1 << 16 {
            share[stagger(u)] += 1;
        }
        assert!(share.iter().all(|&n| n > 0), "{share:?}");
        assert!(share.windows(2).all(|w| w[1] + 2 >= w[0]), "{share:?}");
        let ratio = f64::from(share[SHARDS - 1]) / f64::from(share[0]);
        assert!((1.9..2.1).contains(&ratio), "{ratio}: {share:?}");
    }

    /// A staggered map against a plain `HashMap` under the same inserts, updates and removes,
    /// across its split: same entries, same lengths, and it round-trips through bincode.
    #[test]
    fn staggered_map_behaves_as_a_hash_map_across_its_split() {
        let mut m: StaggeredMap<u64, u64> = StaggeredMap::new();
        let mut reference: std::collections::HashMap<u64, u64> = Default::default();
        let n = 3 * SPLIT_AT as u64;
        for i in 0..n {
            let k = i.wrapping_mul(0x2545_F491_4F6C_DD1D) % (2 * SPLIT_AT as u64);
            match i % 5 {
                0 => assert_eq!(m.remove(&k), reference.remove(&k)),
                1 => assert_eq!(m.insert(k, i), reference.insert(k, i)),
                _ => {
                    *m.entry(k).or_default() += i;
                    *reference.entry(k).or_default() += i;
                }
            }
            assert_eq!(m.get(&k), reference.get(&k));
        }
        assert_eq!(m.shards.len(), SHARDS, "it has split");
        assert!(m.shards.iter().all(|s| !s.is_empty()));
        assert_eq!(m.len(), reference.len());
        let mut all: Vec<(u64, u64)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        let mut want: Vec<(u64, u64)> = reference.iter().map(|(k, v)| (*k, *v)).collect();
        want.sort_unstable();
        assert_eq!(all, want);
        let back: StaggeredMap<u64, u64> =
            crate::recovery::decode(&crate::recovery::encode(&m).unwrap()).unwrap();
        let mut again: Vec<(u64, u64)> = back.iter().map(|(k, v)| (*k, *v)).collect();
        again.sort_unstable();
        assert_eq!(again, want);
        m.retain(|k, _| k % 2 == 0);
        reference.retain(|k, _| k % 2 == 0);
        assert_eq!(m.len(), reference.len());
        assert_eq!(m.drain().count(), reference.len());
        assert!(m.is_empty());
    }
}
