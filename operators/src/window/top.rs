//! The top keys of each window: [`Windowed::aggregate_top`](super::Windowed::aggregate_top),
//! like Flink's window top-N (`ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY
//! ...) <= n` after a window aggregate), computed local-global: each worker keeps, as it fires a
//! window, only its own best keys instead of emitting a result for every key; one record per
//! worker and window then travels to the window's owner, which keeps the best of those.
//!
//! ```
//! use std::time::Duration;
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("hot", "the most clicked page per 10 ms", move |flow| {
//!     let clicks = vec![vec![
//!         TestItem::At(1, 'a'), TestItem::At(2, 'b'), TestItem::At(3, 'b'),
//!         TestItem::At(4, 'c'), TestItem::At(5, 'c'), TestItem::At(12, 'a'),
//!     ]];
//!     flow.source("clicks", TestSource::new(clicks), SourceOptions::new())?
//!         .key_by(|page: &char| *page)
//!         .window(Tumbling::of(Duration::from_millis(10)))
//!         .aggregate_top(Count, 1, |_page, clicks| *clicks)?
//!         .map(|w| (w.start, w.key, w.value))
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(2)).unwrap();
//! // 'b' and 'c' tie for the first place in [0, 10): both are kept.
//! assert_eq!(out.sorted_data(), vec![(0, 'b', 2), (0, 'c', 2), (10, 'a', 1)]);
//! ```

use std::cmp::Ordering;
use std::rc::Rc;

use runnel_engine::{Data, Emitter, Event};

use super::WindowResult;
use crate::aggregate::Aggregate;

/// Orders two `(key, result)` entries: `Greater` when the first is the better one.
pub(crate) type Rank<K, O> = Rc<dyn Fn(&(K, O), &(K, O)) -> Ordering>;

/// Keeps the `n` best entries of `buf` and every entry tied with the `n`-th best (in no order).
fn prune<K, O>(buf: &mut Vec<(K, O)>, n: usize, rank: &Rank<K, O>) {
    if buf.len() <= n {
        return;
    }
    // Best first: the `n - 1`-th is the `n`-th best, those before it are at least as good.
    buf.select_nth_unstable_by(n - 1, |a, b| rank(b, a));
    let mut keep = n;
    for i in n..buf.len() {
        if rank(&buf[i], &buf[n - 1]) == Ordering::Equal {
            buf.swap(keep, i);
            keep += 1;
        }
    }
    buf.truncate(keep);
}

/// Sorts the best first.
fn sort_best_first<K, O>(buf: &mut [(K, O)], rank: &Rank<K, O>) {
    buf.sort_by(|a, b| rank(b, a));
}

/// One worker's selection of the best keys of the window being fired.
pub(crate) struct LocalTop<K, O> {
    n: usize,
    rank: Rank<K, O>,
    buf: Vec<(K, O)>,
    /// Prune when the buffer reaches this length (grows when ties keep it long).
    cap: usize,
}

impl<K: Data, O: Data> LocalTop<K, O> {
    pub(crate) fn new(n: usize, rank: Rank<K, O>) -> Self {
        LocalTop {
            n,
            rank,
            buf: Vec::new(),
            cap: (4 * n).max(1024),
        }
    }

    /// A key's result in the window being fired.
    #[inline]
    pub(crate) fn offer(&mut self, key: K, value: O) {
        self.buf.push((key, value));
        if self.buf.len() >= self.cap {
            prune(&mut self.buf, self.n, &self.rank);
            self.cap = self.cap.max(2 * self.buf.len());
        }
    }

    /// The window `[start, start + size)` is done: emits its best keys and starts over.
    pub(crate) fn finish<I>(
        &mut self,
        start: i64,
        size: i64,
        out: &mut Emitter<I, WindowResult<K, O>>,
    ) {
        prune(&mut self.buf, self.n, &self.rank);
        for (key, value) in self.buf.drain(..) {
            out.emit(Event {
                ts: start + size - 1,
                data: WindowResult {
                    key,
                    start,
                    end: start + size,
                    value,
                },
            });
        }
        self.cap = (4 * self.n).max(1024);
    }
}

/// The global half: merges the workers' best keys of one window (keyed by the window).
#[derive(Clone)]
pub(crate) struct MergeTop<K, O> {
    pub(crate) n: usize,
    pub(crate) rank: Rank<K, O>,
}

impl<K: Data, O: Data> Aggregate<WindowResult<K, O>> for MergeTop<K, O> {
    type Acc = Vec<(K, O)>;
    type Out = Vec<(K, O)>;
    fn create(&self) -> Self::Acc {
        Vec::new()
    }
    fn add(&self, acc: &mut Self::Acc, w: &WindowResult<K, O>) {
        acc.push((w.key.clone(), w.value.clone()));
        if acc.len() >= (4 * self.n).max(64) {
            prune(acc, self.n, &self.rank);
        }
    }
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        acc.extend(other.iter().cloned());
        prune(acc, self.n, &self.rank);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        let mut best = acc.clone();
        prune(&mut best, self.n, &self.rank);
        sort_best_first(&mut best, &self.rank);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_n_best_and_their_ties() {
        let rank: Rank<u32, u32> = Rc::new(|a, b| a.1.cmp(&b.1));
        for n in 1..6 {
            for seed in 0..50u32 {
                let mut buf: Vec<(u32, u32)> = (0..40).map(|k| (k, (k * 7 + seed) % 9)).collect();
                // Reference: the n-th largest value, and every entry at least as large.
                let mut values: Vec<u32> = buf.iter().map(|e| e.1).collect();
                values.sort_unstable_by(|a, b| b.cmp(a));
                let nth = values[n - 1];
                let mut want: Vec<(u32, u32)> =
                    buf.iter().copied().filter(|e| e.1 >= nth).collect();
                want.sort_unstable();
                prune(&mut buf, n, &rank);
                buf.sort_unstable();
                assert_eq!(buf, want, "n {n} seed {seed}");
            }
        }
    }
}
