//! The record envelope that flows between operators, and the data bounds.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

use crate::time::EventTime;

/// What a record type must be to flow through a job: cloneable, sendable between worker threads
/// and serialisable between processes.
pub trait Data: Clone + Send + Serialize + DeserializeOwned + std::fmt::Debug + 'static {}
impl<T: Clone + Send + Serialize + DeserializeOwned + std::fmt::Debug + 'static> Data for T {}

/// What a key must be: [`Data`] that can be hashed (for the exchange between workers) and compared.
pub trait ExchangeKey: Data + Hash + Eq + Ord {}
impl<T: Data + Hash + Eq + Ord> ExchangeKey for T {}

/// A record with its event time. Operators see and produce `Event`s; user closures see only
/// [`Event::data`].
///
/// Records carry no origin (source partition and offset): the source keeps the offset after
/// each epoch's last record per partition, which is what checkpoints and completion need, and
/// exactly-once sinks hold results until a checkpoint covers them rather than ordering them by
/// origin. Leaving it out keeps a bid's envelope at 48 bytes instead of 64.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event<T> {
    /// Event time in milliseconds.
    pub ts: EventTime,
    /// The user's record.
    pub data: T,
}

impl<T> Event<T> {
    /// A new record.
    pub fn new(ts: EventTime, data: T) -> Self {
        Event { ts, data }
    }
    /// The same envelope around other data.
    pub fn with<U>(&self, data: U) -> Event<U> {
        Event { ts: self.ts, data }
    }
}

/// One of two things: the input of a two-input operator (a join).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Either<L, R> {
    /// From the left input.
    Left(L),
    /// From the right input.
    Right(R),
}

/// A record that a source could not decode, sent to the dead-letter stream when the source's
/// policy is [`crate::BadRecordPolicy::Skip`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source operator's name.
    pub source: String,
    /// Where the record was (file:line, topic/partition@offset).
    pub location: String,
    /// Why it could not be decoded.
    pub reason: String,
    /// The raw record, lossily as UTF-8.
    pub raw: String,
}

/// The hash that spreads keys over workers: stable across processes and runs (FxHash), so that
/// every process of a cluster sends a key to the same worker.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    // FxHash's low bits are weak for small integers; mix before timely takes `hash % peers`.
    let x = h.finish();
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}
