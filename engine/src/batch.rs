//! Output in bounded batches, and the keyed exchange that ships them.
//!
//! An operator that emits a whole epoch's results at once (a window firing, a combiner's
//! partials) used to grow one vector for the epoch. At a few hundred thousand results that is
//! tens of megabytes: the allocator hands it out as fresh pages each epoch (page faults that
//! zero 2 MB huge pages), the vector is copied every time it doubles, and downstream sees one
//! batch far larger than its caches. [`Batcher`] keeps batches of about [`BATCH_BYTES`] instead,
//! which the allocator recycles from its free lists.
//!
//! [`KeyDistributor`] is the exchange behind every keyed operator: it partitions records by key
//! hash into per-worker batches of the same size (timely's default `Exchange` ships 8 KiB
//! batches, so a worker's partials crossed threads in messages of 80-150 records).

use timely::communication::Push;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::Message;
use timely::progress::Stamp;

/// The size a batch of records aims at, in bytes.
pub const BATCH_BYTES: usize = 1 << 16;

/// The records per batch for records of type `T`: [`BATCH_BYTES`] worth, at least 64.
pub const fn batch_capacity<T>() -> usize {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        BATCH_BYTES
    } else if size * 64 >= BATCH_BYTES {
        64
    } else {
        BATCH_BYTES / size
    }
}

/// Records collected into batches of [`batch_capacity`] records, for an operator to ship.
#[derive(Debug)]
pub struct Batcher<T> {
    current: Vec<T>,
    full: Vec<Vec<T>>,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            current: Vec::new(),
            full: Vec::new(),
        }
    }
}

impl<T> Batcher<T> {
    /// Adds a record.
    #[inline]
    pub fn push(&mut self, record: T) {
        if self.current.len() == self.current.capacity() {
            self.rotate();
        }
        self.current.push(record);
    }

    #[cold]
    fn rotate(&mut self) {
        let next = Vec::with_capacity(batch_capacity::<T>());
        let done = std::mem::replace(&mut self.current, next);
        if !done.is_empty() {
            self.full.push(done);
        }
    }

    /// Adds every record of `records`.
    pub fn extend(&mut self, records: impl IntoIterator<Item = T>) {
        for r in records {
            self.push(r);
        }
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.full.is_empty()
    }

    /// The records waiting.
    pub fn len(&self) -> usize {
        self.current.len() + self.full.iter().map(Vec::len).sum::<usize>()
    }

    /// Hands every waiting batch to `ship`, oldest first (each batch is left for `ship` to take
    /// or to drain).
    pub(crate) fn ship(&mut self, mut ship: impl FnMut(&mut Vec<T>)) {
        for mut batch in self.full.drain(..) {
            ship(&mut batch);
        }
        if !self.current.is_empty() {
            ship(&mut self.current);
            self.current = Vec::new();
        }
    }

    /// Every waiting record, in order (for tests and local operators).
    pub fn take_all(&mut self) -> Vec<T> {
        let mut all = Vec::with_capacity(self.len());
        self.ship(|b| all.append(b));
        all
    }
}

/// Partitions records by `hash` into per-worker batches of [`batch_capacity`] records.
pub(crate) struct KeyDistributor<T, H> {
    buffers: Vec<Vec<T>>,
    hash: H,
}

impl<T, H> KeyDistributor<T, H> {
    pub(crate) fn new(hash: H, peers: usize) -> Self {
        KeyDistributor {
            buffers: (0..peers).map(|_| Vec::new()).collect(),
            hash,
        }
    }
}

impl<T, H: FnMut(&T) -> u64> Distributor<Vec<T>> for KeyDistributor<T, H> {
    fn partition<S: Clone, P: Push<Message<S, Vec<T>>>>(
        &mut self,
        container: &mut Vec<T>,
        stamp: &Stamp<S>,
        pushers: &mut [P],
    ) {
        let peers = pushers.len() as u64;
        let cap = batch_capacity::<T>();
        for datum in container.drain(..) {
            let h = (self.hash)(&datum);
            let i = if peers.is_power_of_two() {
                (h & (peers - 1)) as usize
            } else {
                (h % peers) as usize
            };
            let buf = &mut self.buffers[i];
            if buf.capacity() == 0 {
                buf.reserve_exact(cap);
            }
            buf.push(datum);
            if buf.len() >= cap {
                Message::push_at(buf, stamp.clone(), &mut pushers[i]);
                buf.clear();
            }
        }
    }

    fn flush<S: Clone, P: Push<Message<S, Vec<T>>>>(
        &mut self,
        stamp: &Stamp<S>,
        pushers: &mut [P],
    ) {
        for (buf, pusher) in self.buffers.iter_mut().zip(pushers.iter_mut()) {
            if !buf.is_empty() {
                Message::push_at(buf, stamp.clone(), pusher);
                buf.clear();
            }
        }
    }

    fn relax(&mut self) {
        for buf in &mut self.buffers {
            if buf.is_empty() {
                *buf = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batcher_keeps_order_and_bounds_batches() {
        let mut b = Batcher::default();
        let n = 3 * batch_capacity::<u64>() + 17;
        b.extend(0..n as u64);
        assert_eq!(b.len(), n);
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        b.ship(|batch| {
            sizes.push(batch.len());
            all.append(batch);
        });
        assert!(sizes.iter().all(|&s| s <= batch_capacity::<u64>()));
        assert_eq!(sizes.len(), 4);
        assert_eq!(all, (0..n as u64).collect::<Vec<_>>());
        assert!(b.is_empty());
    }

    #[test]
    fn take_all_returns_every_record_in_order_and_empties() {
        let mut b: Batcher<(u32, String)> = Batcher::default();
        assert!(b.take_all().is_empty());
        // Across several full batches and a partial one, twice: the batcher is reusable.
        for round in 0..2u32 {
            let n = 2 * batch_capacity::<(u32, String)>() + 5 + round as usize;
            let want: Vec<(u32, String)> =
                (0..n as u32).map(|i| (i, format!("{round}-{i}"))).collect();
            for r in want.iter().cloned() {
                b.push(r);
            }
            assert_eq!(b.len(), n);
            assert_eq!(b.take_all(), want);
            assert!(b.is_empty());
            assert_eq!(b.len(), 0);
        }
    }
}
