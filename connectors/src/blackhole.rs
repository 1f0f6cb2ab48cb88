//! [`BlackholeSink`]: counts records and drops them, for benchmarks that measure everything but
//! the output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use runnel_engine::{Data, Epoch, Event, Result, Sink};

/// A sink that counts the records it receives and drops them: one atomic add per batch.
///
/// Clones share the count, so make one before the job, clone it into the job's build function
/// (which runs on every worker) and read the total afterwards with [`BlackholeSink::count`] or a
/// [`BlackholeHandle`].
///
/// ```
/// use runnel_connectors::{BidGenerator, BlackholeSink};
/// use runnel_engine::{run, Job, RunOptions, SourceOptions};
///
/// let hole = BlackholeSink::new();
/// let sink = hole.clone();
/// let job = Job::new("count", "counts bids", move |flow| {
///     flow.source("bids", BidGenerator::new(1000), SourceOptions::new())?
///         .sink("hole", sink.clone())
/// });
/// run(&job, RunOptions::workers(2)).unwrap();
/// assert_eq!(hole.count(), 1000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct BlackholeSink {
    count: Arc<AtomicU64>,
}

/// Reads the count of a [`BlackholeSink`] (and of all its clones).
#[derive(Clone, Debug)]
pub struct BlackholeHandle {
    count: Arc<AtomicU64>,
}

impl BlackholeHandle {
    /// The records received so far.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl BlackholeSink {
    /// A sink with a count of zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle to the shared count.
    pub fn handle(&self) -> BlackholeHandle {
        BlackholeHandle {
            count: self.count.clone(),
        }
    }

    /// The records received so far by this sink and its clones.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl<T: Data> Sink<T> for BlackholeSink {
    #[inline]
    fn write(&mut self, _epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        self.count
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        records.clear();
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}
