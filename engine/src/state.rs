//! Keyed operator state: the one API through which every stateful operator keeps its state, so
//! that a checkpoint can snapshot it and a restore can rebuild it.
//!
//! A [`KeyedState`] belongs to one operator (its *step id*, the operator's stable name) and maps
//! keys to values. Both must be serde types: a [`Snapshot`] is the list of `(key, value)` pairs in key
//! order, which the checkpoint store writes.

use std::collections::hash_map::{Entry, Iter, IterMut};
use std::collections::HashMap;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The state of one operator instance: a map from keys to values, named by the operator.
#[derive(Debug, Clone)]
pub struct KeyedState<K, V> {
    step_id: String,
    map: HashMap<K, V, rustc_hash::FxBuildHasher>,
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
            map: HashMap::default(),
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
    pub fn drain(&mut self) -> std::collections::hash_map::Drain<'_, K, V> {
        self.map.drain()
    }
    /// All entries.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.map.iter()
    }
    /// All entries, mutably.
    pub fn iter_mut(&mut self) -> IterMut<'_, K, V> {
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
        let entries: Vec<(&K, &V)> = self.map.iter().collect();
        crate::recovery::encode(&entries)
    }

    /// Replaces every entry with those [`KeyedState::to_bytes`] wrote.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> crate::Result<()> {
        let entries: Vec<(K, V)> = crate::recovery::decode(bytes)?;
        self.map = entries.into_iter().collect();
        Ok(())
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
}
