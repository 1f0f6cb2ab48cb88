//! A harness for tests: a source that replays vectors with explicit epoch cuts, and a sink that
//! collects into a shared vector.
//!
//! ```
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("double", "doubles numbers", move |flow| {
//!     let input = vec![vec![TestItem::At(1, 1u64), TestItem::Cut, TestItem::At(2, 2)]];
//!     flow.source("numbers", TestSource::new(input), SourceOptions::new())?
//!         .map(|x| x * 2)
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(2)).unwrap();
//! assert_eq!(out.sorted_data(), vec![2, 4]);
//! ```

use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::event::{Data, Event};
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::source::{PartitionId, PartitionReader, ReadStatus, Reader, Source, SourceContext};
use crate::stateful::{Emitter, EpochLogic};
use crate::time::{Epoch, Watermark};

/// One step of a test partition.
#[derive(Clone, Debug)]
pub enum TestItem<T> {
    /// A record with event time `ts`.
    At(i64, T),
    /// Close the epoch here (the source cuts its epoch after the records before this).
    Cut,
}

/// A source whose partitions are the given vectors.
#[derive(Clone, Debug)]
pub struct TestSource<T> {
    parts: Vec<Vec<TestItem<T>>>,
}

impl<T> TestSource<T> {
    /// One partition per vector.
    pub fn new(parts: Vec<Vec<TestItem<T>>>) -> Self {
        TestSource { parts }
    }
}

impl<T: Data> Source for TestSource<T> {
    type Item = T;
    fn partitions(&mut self, _ctx: &SourceContext) -> Result<Vec<String>> {
        Ok((0..self.parts.len()).map(|i| format!("test-{i}")).collect())
    }
    fn open(
        &mut self,
        partition: PartitionId,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<T>>> {
        let items = std::mem::take(&mut self.parts[partition.0 as usize]);
        Ok(Box::new(TestReader {
            items: items.into_iter(),
            offset: 0,
        }))
    }
}

struct TestReader<T> {
    items: std::vec::IntoIter<TestItem<T>>,
    offset: u64,
}

impl<T: Data> PartitionReader<T> for TestReader<T> {
    fn read(&mut self, out: &mut Reader<T>) -> Result<ReadStatus> {
        for _ in 0..out.budget() {
            match self.items.next() {
                None => return Ok(ReadStatus::Finished),
                Some(TestItem::Cut) => return Ok(ReadStatus::CutEpoch),
                Some(TestItem::At(ts, x)) => {
                    out.push_at(ts, self.offset, x);
                    self.offset += 1;
                }
            }
        }
        Ok(ReadStatus::More)
    }
}

type Shared<T> = Arc<Mutex<Vec<(Epoch, Event<T>)>>>;

/// Collects every record a job writes to its sinks, across workers.
#[derive(Debug)]
pub struct Collector<T> {
    inner: Shared<T>,
}

impl<T> Clone for Collector<T> {
    fn clone(&self) -> Self {
        Collector {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector {
            inner: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Data> Collector<T> {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }
    /// A sink that appends to this collector (make one per worker, inside the job).
    pub fn sink(&self) -> CollectSink<T> {
        CollectSink {
            inner: self.inner.clone(),
        }
    }
    /// Everything collected, with the epoch it was written in.
    pub fn events(&self) -> Vec<(Epoch, Event<T>)> {
        self.inner.lock().expect("collector").clone()
    }
    /// The records collected, without envelopes.
    pub fn data(&self) -> Vec<T> {
        self.events().into_iter().map(|(_, e)| e.data).collect()
    }
    /// The records collected, sorted (for comparing as multisets).
    pub fn sorted_data(&self) -> Vec<T>
    where
        T: Ord,
    {
        let mut d = self.data();
        d.sort();
        d
    }
}

/// The sink half of a [`Collector`].
pub struct CollectSink<T> {
    inner: Shared<T>,
}

impl<T: Data> Sink<T> for CollectSink<T> {
    fn write(&mut self, epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        let mut v = self.inner.lock().expect("collector");
        v.extend(records.drain(..).map(|e| (epoch, e)));
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Every record of every partition of `source`, read to its end outside a job, each with its
/// offset, as `(partition index, [(offset, record)])` in partition order. The source sees the
/// context of worker 0 of `workers` (what decides how many partitions some sources have).
/// Records keep the reader's event time (0 for readers that have none).
pub fn read_partitions<S: Source>(
    source: &mut S,
    workers: usize,
) -> Result<Vec<(u32, Vec<(u64, Event<S::Item>)>)>> {
    let ctx = SourceContext {
        name: "test".into(),
        worker: 0,
        workers,
        metrics: Arc::default(),
    };
    let names = source.partitions(&ctx)?;
    let mut out = Vec::with_capacity(names.len());
    for i in 0..names.len() as u32 {
        let mut reader = source.open(PartitionId(i), &ctx)?;
        let mut handle = Reader::for_test(1024);
        let mut records = Vec::new();
        loop {
            let status = reader.read(&mut handle)?;
            records.extend(handle.take_with_offsets());
            match status {
                ReadStatus::Finished => break,
                ReadStatus::Pending => std::thread::sleep(std::time::Duration::from_micros(200)),
                ReadStatus::More | ReadStatus::CutEpoch => {}
            }
        }
        out.push((i, records));
    }
    Ok(out)
}

/// Runs one epoch of a stateful operator's logic outside a job: each record with the watermark
/// `wm`, then the epoch's end with `wm`; returns what it emitted, in order (late records are
/// counted and dropped). For tests of an [`EpochLogic`] against a model of it, such as one
/// that checks its checkpoints (whole and incremental) restore the state they were taken of.
pub fn run_epoch<I, O, L: EpochLogic<I, O>>(
    logic: &mut L,
    records: impl IntoIterator<Item = Event<I>>,
    wm: Watermark,
) -> Vec<Event<O>> {
    let metrics = Arc::new(Metrics::default());
    let mut em = Emitter::new(false, metrics.counter("test.late"), metrics.clone());
    for r in records {
        logic.on_record(r, wm, &mut em);
    }
    logic.on_epoch_end(wm, &mut em);
    em.take_out()
}
