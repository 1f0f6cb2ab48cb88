//! Sources: the contract a connector implements, the options a job sets per source, and the
//! source operator that cuts epochs and reports watermarks.
//!
//! # Contract
//! A [`Source`] lists its partitions ([`Source::partitions`]); the list must be the same on every
//! worker of every process, because partition `i` is read by global worker `i % workers`. Each
//! worker then opens a [`PartitionReader`] for each of its partitions and calls
//! [`PartitionReader::read`] repeatedly. A reader pushes at most [`Reader::budget`] records per
//! call, each with its offset in the partition (and its own event time if it has one), or a bad
//! record with where it was and why it failed. It returns what it can say about the partition:
//! more to read now, nothing now, a request to cut the epoch here, or finished.
//!
//! The engine promises a reader that it is called from one thread, that its records are stamped
//! with event time (the source options' extractor, else the reader's time, else ingestion time),
//! and that its partition's watermark follows the job's [`WatermarkStrategy`]. A reader that knows
//! the time of its next record (a generator, a clock) can say so with
//! [`Reader::advance_event_time`]: the partition's watermark then moves without waiting for it.
//!
//! # New partitions
//! A source whose partitions can grow while the job runs (Kafka topics gain partitions, a
//! pattern matches new topics) returns a [`Source::discovery_interval`]. Every worker then calls
//! [`Source::partitions`] again at that interval; each name it has not seen before is read by
//! worker [`Source::owner`]`(name)`, which must depend on the name alone, since workers
//! discover at different moments and must agree without talking. A new partition holds the
//! source's watermark where it is (never back) until it has read a record or gone idle. An
//! instance of a discovering source never finishes on its own, even with no partitions.
//!
//! # Completion
//! The engine keeps, per partition, the offset after the last record of each epoch. Once every
//! sink of the job has finished an epoch, it calls [`PartitionReader::complete`] with that
//! offset: every record before it has been written by every sink. Connectors use it to report
//! progress (Kafka commits it to the consumer group); checkpoints build on it.

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;

use crate::align;
use crate::epoch_log::{EpochEntry, EpochLog};
use crate::error::{Error, Result};
use crate::event::{Data, DeadLetter, Event};
use crate::flow::{Shared, TStream};
use crate::metrics::Metrics;
use crate::recovery::{decode, encode, FINAL};
use crate::time::WATERMARK_MAX;
use crate::watermark::{WatermarkStrategy, WmReport, WmValue};
use serde::{Deserialize, Serialize};

/// The index of a partition in its source's partition list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

/// What a source instance knows about where it runs.
#[derive(Clone, Debug)]
pub struct SourceContext {
    /// The source operator's name.
    pub name: String,
    /// This worker's global index.
    pub worker: usize,
    /// The number of workers over all processes.
    pub workers: usize,
    /// The run's counters, for the connector's own (name them `"<source name>.<what>"`).
    pub metrics: Arc<Metrics>,
}

/// A connector that produces records of type [`Source::Item`] from a list of partitions.
pub trait Source: 'static {
    /// The records it produces.
    type Item: Data;
    /// The partitions, the same list on every worker (see the module's contract).
    fn partitions(&mut self, ctx: &SourceContext) -> Result<Vec<String>>;
    /// Opens partition `partition` (an index into the list the last call to
    /// [`Source::partitions`] returned) for reading.
    fn open(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<Self::Item>>>;
    /// Opens `partition` to continue after a checkpoint: its first record is the one at offset
    /// `next`. The default opens it from the start and skips the records below `next`; a
    /// source that can seek (Kafka) does better.
    fn resume(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
        next: u64,
    ) -> Result<Box<dyn PartitionReader<Self::Item>>> {
        let inner = self.open(partition, ctx)?;
        Ok(Box::new(SkipBelow { inner, next }))
    }
    /// How often to look for new partitions; `None` (the default) for a fixed list.
    fn discovery_interval(&self) -> Option<Duration> {
        None
    }
    /// The global worker that reads the partition `name`, at `index` in the list, out of
    /// `workers`. The default spreads the list round-robin (`index % workers`); a source that
    /// discovers partitions must answer from the name alone (see the module's docs).
    fn owner(&self, name: &str, index: usize, workers: usize) -> usize {
        let _ = name;
        index % workers
    }
}

/// What a reader says after a call to [`PartitionReader::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// There may be more to read right now.
    More,
    /// Nothing (more) to read right now; ask again later. The records pushed in the call are
    /// kept: a paced reader that has read all that is due says so, and is asked again about a
    /// millisecond later, so that what falls due meanwhile comes as one batch.
    Pending,
    /// Close the current epoch after the records pushed so far (used by replay and tests).
    CutEpoch,
    /// The partition has ended.
    Finished,
}

/// Reads one partition.
pub trait PartitionReader<T>: 'static {
    /// Pushes up to `out.budget()` records into `out` and says what comes next.
    fn read(&mut self, out: &mut Reader<T>) -> Result<ReadStatus>;
    /// Every record of this partition before offset `next` has been written by every sink of
    /// the job (see the module's docs). Called in increasing order of `next`; the default
    /// ignores it.
    fn complete(&mut self, next: u64) -> Result<()> {
        let _ = next;
        Ok(())
    }
    /// Where this reader starts, when it is known before a record is read: every record it
    /// will read is at or after this offset. `None` (the default) when it is not known. A reader whose start is resolved when it
    /// opens (Kafka's `latest`, which is wherever the partition's end is at that moment) says
    /// where it resolved to: then an epoch or checkpoint before the partition's first record
    /// holds that place, and a restart resumes there, instead of resolving the start again
    /// and missing the records written in between.
    fn start_offset(&self) -> Option<u64> {
        None
    }
}

/// When the sources of a run close their epochs: epoch `base + n` of a run (`base` is 0, or the
/// epoch after the checkpoint it resumed from) closes at `origin + n * interval`, on every worker.
///
/// Scheduling each close as "the last close plus the interval" made each worker's epochs drift
/// later by however long its activations overran the deadline, by different amounts on
/// different workers. An epoch is complete only when every worker has closed it, so the
/// worker furthest behind set the pace, and the watermark of a complete epoch lagged the wall
/// clock by the drift. On this schedule a worker that falls behind closes its late epochs at
/// once, and is back in step.
///
/// `origin` is a multiple of `interval` on the wall clock, so the processes of a cluster close
/// epochs at the same moments (as far as their clocks agree). They also give them the same
/// numbers: each worker proposes the next multiple after it has connected, and all take the
/// latest proposal ([`crate::runtime`]'s `agree_on_origin`); a process that started its epochs
/// one slot earlier than another would run an epoch ahead of it for the whole run, its records
/// waiting an extra interval for the other's epoch to close. Window ends that are multiples of
/// the interval fall on an epoch's end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpochClock {
    /// The time between two epoch ends.
    pub(crate) interval: Duration,
    /// When the first epoch of the run closes.
    origin: Instant,
    /// The same, on the wall clock: epoch milliseconds.
    origin_ms: i64,
}

impl EpochClock {
    /// Epochs of `interval` (at least 1 ms) whose ends fall on the wall clock's multiples of it,
    /// from the next multiple on.
    pub(crate) fn aligned(interval: Duration) -> Self {
        Self::from_wall_origin(interval, Self::next_origin(interval))
    }

    /// The next multiple of `interval` (at least 1 ms) on the wall clock, in nanoseconds since
    /// the Unix epoch: this worker's proposal for the run's first epoch end.
    pub(crate) fn next_origin(interval: Duration) -> u64 {
        let step = interval.max(Duration::from_millis(1)).as_nanos();
        let since = wall_nanos();
        u64::try_from((since / step + 1) * step).unwrap_or(u64::MAX)
    }

    /// Epochs of `interval` (at least 1 ms) whose first ends at `origin` nanoseconds since the
    /// Unix epoch on the wall clock (which may have passed: its epochs then close at once).
    pub(crate) fn from_wall_origin(interval: Duration, origin: u64) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let (now, since) = (Instant::now(), wall_nanos());
        let origin_ms = i64::try_from(origin / 1_000_000).unwrap_or(i64::MAX);
        let origin = match u64::try_from(since) {
            Ok(since) if origin >= since => now + Duration::from_nanos(origin - since),
            Ok(since) => now
                .checked_sub(Duration::from_nanos(since - origin))
                .unwrap_or(now),
            Err(_) => now,
        };
        EpochClock {
            interval,
            origin,
            origin_ms,
        }
    }

    /// When the first epoch of the run closes, on the wall clock (epoch milliseconds).
    pub(crate) fn origin_ms(&self) -> i64 {
        self.origin_ms
    }

    /// When the `n`-th epoch of the run (counting from 0) closes.
    pub(crate) fn deadline(&self, n: u64) -> Instant {
        let nanos = self.interval.as_nanos().saturating_mul(u128::from(n));
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX / 2))
    }
}

/// The wall clock, nanoseconds since the Unix epoch.
fn wall_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// A reader that drops the records below an offset (resuming a source that cannot seek).
struct SkipBelow<T> {
    inner: Box<dyn PartitionReader<T>>,
    next: u64,
}

impl<T: 'static> PartitionReader<T> for SkipBelow<T> {
    fn read(&mut self, out: &mut Reader<T>) -> Result<ReadStatus> {
        let bad = out.bad.len();
        // The reader drops the records below `next` as they are pushed.
        out.skip_below = self.next;
        let status = self.inner.read(out);
        out.skip_below = 0;
        let status = status?;
        let next = self.next;
        let mut i = 0;
        out.bad.retain(|b| {
            i += 1;
            i <= bad || b.0 >= next
        });
        Ok(status)
    }

    fn complete(&mut self, next: u64) -> Result<()> {
        self.inner.complete(next)
    }
}

/// A source instance's state in a checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SourceSnapshot {
    /// Per partition this instance reads: name, the offset after its last record, and the
    /// largest event time read.
    partitions: Vec<(String, u64, i64)>,
    /// The last watermark reported.
    last_report: Option<WmValue>,
    /// Every partition had ended (in the job's final checkpoint, and in the later checkpoints
    /// of a worker whose source ended before the others').
    finished: bool,
}

const SOURCE_STATE: &str = "runnel.source.v1";

/// The event time of a record carried over to a later epoch in replay that is to get that
/// epoch's ingestion time.
const INGEST_LATER: i64 = i64::MIN;

/// The handle a [`PartitionReader`] pushes records into.
///
/// Records leave the source as [`Event`]s (event time and data). Their offsets stay here: the
/// reader keeps the offset after the last record pushed, which is all the engine needs for
/// checkpoints and completion, so the batches that flow downstream carry no per-record origin.
pub struct Reader<T> {
    events: Vec<Event<T>>,
    bad: Vec<(u64, String, String, String)>,
    budget: usize,
    event_time: Option<Rc<EventTimeFn<T>>>,
    ingest: i64,
    /// The offset after the last record pushed since the engine last looked (0: none).
    next: u64,
    /// Records below this offset are dropped as they are pushed (resuming without a seek).
    skip_below: u64,
    /// Each pushed record's offset, kept only by readers made with [`Reader::for_test`].
    offsets: Option<Vec<u64>>,
    /// The reader's promise: no record from now on has an event time below this.
    time_floor: Option<i64>,
    /// Replay: records at this offset or later belong to a later epoch; they are held in
    /// `over` / `over_bad` (`u64::MAX`: no limit).
    limit: u64,
    /// Records pushed at or past `limit`, with their offsets.
    over: Vec<(u64, Event<T>)>,
    /// Bad records at or past `limit`.
    over_bad: Vec<(u64, String, String, String)>,
}

impl<T> Reader<T> {
    fn new(budget: usize, event_time: Option<Rc<EventTimeFn<T>>>) -> Self {
        Reader {
            events: Vec::with_capacity(budget),
            bad: Vec::new(),
            budget,
            event_time,
            ingest: 0,
            next: 0,
            skip_below: 0,
            offsets: None,
            time_floor: None,
            limit: u64::MAX,
            over: Vec::new(),
            over_bad: Vec::new(),
        }
    }

    /// A reader for testing a [`PartitionReader`] on its own: records get the reader's time
    /// (or 0 with [`Reader::push`]), and it keeps their offsets; see [`Reader::take`].
    pub fn for_test(budget: usize) -> Self {
        let mut r = Self::new(budget, None);
        r.offsets = Some(Vec::new());
        r
    }

    /// What was pushed so far (records, and bad records as `(offset, location, reason, raw)`),
    /// emptying the reader. For tests.
    pub fn take(&mut self) -> (Vec<Event<T>>, Vec<(u64, String, String, String)>) {
        if let Some(o) = self.offsets.as_mut() {
            o.clear();
        }
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.bad),
        )
    }

    /// What was pushed so far, each record with its offset, emptying the reader (bad records
    /// are dropped). Only for a reader made with [`Reader::for_test`].
    pub fn take_with_offsets(&mut self) -> Vec<(u64, Event<T>)> {
        let offsets = self
            .offsets
            .as_mut()
            .map(std::mem::take)
            .expect("take_with_offsets needs a reader made with Reader::for_test");
        self.bad.clear();
        offsets
            .into_iter()
            .zip(std::mem::take(&mut self.events))
            .collect()
    }

    /// How many records the reader may push in this call.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// A record at `offset` in the partition; its event time comes from the job's extractor
    /// (or is the time the call began, when the job has none).
    #[inline]
    pub fn push(&mut self, offset: u64, item: T) {
        if offset >= self.limit && offset >= self.skip_below && self.event_time.is_none() {
            // Replay, past the epoch's end: the record gets the ingestion time of the epoch
            // it goes out in, as it did when that epoch was cut.
            self.over.push((
                offset,
                Event {
                    ts: INGEST_LATER,
                    data: item,
                },
            ));
            return;
        }
        self.push_at(self.ingest, offset, item);
    }

    /// A record at `offset` with its own event time (a Kafka timestamp, a generator's clock);
    /// the job's extractor, if it set one, takes precedence.
    #[inline]
    pub fn push_at(&mut self, ts: i64, offset: u64, item: T) {
        // Build the record in the batch and apply the extractor there: taking `&item` before
        // the push would spill it to the stack and copy it back with wider loads than its
        // stores, which stalls store forwarding (most of W0's time per record).
        if offset < self.skip_below || offset >= self.limit {
            if offset >= self.limit && offset >= self.skip_below {
                let ts = self.event_time.as_ref().map_or(ts, |f| f(&item));
                self.over.push((offset, Event { ts, data: item }));
            }
            return;
        }
        self.events.push(Event { ts, data: item });
        if let Some(f) = &self.event_time {
            let e = self.events.last_mut().expect("just pushed");
            e.ts = f(&e.data);
        }
        self.next = offset + 1;
        if let Some(o) = self.offsets.as_mut() {
            o.push(offset);
        }
    }

    /// Pushes every `(event time, offset, item)` of `records`, in order, as
    /// [`Reader::push_at`] would one by one. For readers that make records in a loop
    /// (generators): with no extractor, no offsets to skip and no test bookkeeping, the records
    /// go into the batch in one `extend`, without the per-record checks of `push_at`.
    #[inline]
    pub fn extend_at(&mut self, records: impl IntoIterator<Item = (i64, u64, T)>) {
        if self.skip_below > 0
            || self.limit != u64::MAX
            || self.event_time.is_some()
            || self.offsets.is_some()
        {
            for (ts, offset, item) in records {
                self.push_at(ts, offset, item);
            }
            return;
        }
        let mut last = None;
        self.events
            .extend(records.into_iter().map(|(ts, offset, data)| {
                last = Some(offset);
                Event { ts, data }
            }));
        if let Some(offset) = last {
            self.next = offset + 1;
        }
    }

    /// Promises that this partition pushes no record with an event time below `ts` from now on
    /// (a generator, or any reader that knows its next record's time). The partition's
    /// watermark then moves up to `ts` without waiting for a record: a paced generator that
    /// is caught up says when its next event is due, so a window ending before then closes at
    /// the end of this epoch rather than at the end of the first epoch with a later record.
    /// Ignored when the job sets an event-time extractor (the promise is about the reader's
    /// own times).
    pub fn advance_event_time(&mut self, ts: i64) {
        if self.event_time.is_none() {
            self.time_floor = Some(self.time_floor.map_or(ts, |t| t.max(ts)));
        }
    }

    /// The event time [`Reader::advance_event_time`] promised, if any, forgetting it.
    pub fn take_event_time_floor(&mut self) -> Option<i64> {
        self.time_floor.take()
    }

    /// A record at `offset` that could not be decoded: `location` names where it is
    /// (`file:line`, `topic/partition@offset`), `reason` why, `raw` what it was.
    pub fn bad(&mut self, offset: u64, location: String, reason: String, raw: String) {
        if offset >= self.limit {
            self.over_bad.push((offset, location, reason, raw));
            return;
        }
        self.bad.push((offset, location, reason, raw));
    }
}

/// What a source does with a record it cannot decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Stop the job with an error naming the record's location and the reason.
    #[default]
    Fail,
    /// Count it, skip it, and send it to the dead-letter stream.
    Skip,
}

type EventTimeFn<T> = Box<dyn Fn(&T) -> i64>;

/// The outputs of a source operator: data, watermark reports, dead letters.
pub(crate) type SourceStreams<'s, T> = (
    TStream<'s, Event<T>>,
    TStream<'s, WmReport>,
    TStream<'s, Event<DeadLetter>>,
);

/// A job's settings for one source: event time, watermarks, idleness, bad records.
pub struct SourceOptions<T> {
    event_time: Option<Rc<EventTimeFn<T>>>,
    watermark: WatermarkStrategy,
    idle_timeout: Option<Duration>,
    bad_records: BadRecordPolicy,
    budget: usize,
    max_drift: Option<Duration>,
}

/// The default of [`SourceOptions::watermark_alignment`]: one minute of event time.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(60);

impl<T> Default for SourceOptions<T> {
    fn default() -> Self {
        SourceOptions {
            event_time: None,
            watermark: WatermarkStrategy::Monotonic,
            idle_timeout: None,
            bad_records: BadRecordPolicy::Fail,
            budget: 1024,
            max_drift: Some(DEFAULT_MAX_DRIFT),
        }
    }
}

impl<T> SourceOptions<T> {
    /// Monotonic watermarks, the reader's (or ingestion) time, fail on bad records.
    pub fn new() -> Self {
        Self::default()
    }
    /// Takes each record's event time (milliseconds) from `f`.
    pub fn event_time(mut self, f: impl Fn(&T) -> i64 + 'static) -> Self {
        self.event_time = Some(Rc::new(Box::new(f)));
        self
    }
    /// The watermark strategy per partition.
    pub fn watermark(mut self, strategy: WatermarkStrategy) -> Self {
        self.watermark = strategy;
        self
    }
    /// Bounded out-of-orderness of `bound` (shorthand for [`Self::watermark`]).
    pub fn bounded_out_of_order(self, bound: Duration) -> Self {
        self.watermark(WatermarkStrategy::bounded(bound))
    }
    /// A partition that has produced nothing for `timeout` stops holding the watermark back
    /// until it produces again.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
    /// What to do with records that do not decode.
    pub fn on_bad_record(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }
    /// Records per read call (default 1024).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.budget = n.max(1);
        self
    }
    /// Watermark alignment: a partition whose watermark is more than `max_drift` ahead of the
    /// slowest partition of this source that still has a backlog pauses until that one catches
    /// up, so that reading a backlog on several workers does not let one of them run ahead in
    /// event time and keep windows open on the others (Flink's `withWatermarkAlignment`).
    /// Partitions that are caught up hold no one back. On by default with
    /// [`DEFAULT_MAX_DRIFT`]; the instances of one process are aligned with each other.
    pub fn watermark_alignment(mut self, max_drift: Duration) -> Self {
        self.max_drift = Some(max_drift);
        self
    }
    /// Turns watermark alignment off: every partition reads as fast as it can.
    pub fn without_watermark_alignment(mut self) -> Self {
        self.max_drift = None;
        self
    }
}

struct Part<T> {
    name: String,
    reader: Box<dyn PartitionReader<T>>,
    max_ts: i64,
    last_data: Instant,
    finished: bool,
    pending_until: Option<Instant>,
    /// Whether the last read said there is more to read (so alignment waits for it).
    backlogged: bool,
    /// The offset after the last record (good or bad) read so far.
    next: Option<u64>,
    /// `(epoch, next offset at its end)` for epochs not yet complete at every sink.
    positions: VecDeque<(u64, u64)>,
    /// The last next offset put in `positions`.
    recorded: Option<u64>,
    /// Replay: records read past the end of the epoch being replayed, for the next epochs.
    carry: Vec<(u64, Event<T>)>,
    /// The same, for bad records.
    carry_bad: Vec<(u64, String, String, String)>,
}

impl<T: 'static> Part<T> {
    fn new(name: String, reader: Box<dyn PartitionReader<T>>) -> Self {
        Part {
            name,
            reader,
            max_ts: i64::MIN,
            last_data: Instant::now(),
            finished: false,
            pending_until: None,
            backlogged: false,
            next: None,
            positions: VecDeque::new(),
            recorded: None,
            carry: Vec::new(),
            carry_bad: Vec::new(),
        }
    }

    /// Replay: whether the partition has read everything up to `target` (the offset after the
    /// last record of the epoch being replayed; `None`: it had read nothing by then).
    fn reached(&self, target: Option<u64>) -> bool {
        match target {
            None => true,
            Some(t) => self.next.is_some_and(|n| n >= t),
        }
    }

    /// Replay: moves the records carried over from earlier reads with offsets below `target`
    /// into `out`, then reads at most up to `target` (records past it are carried over).
    fn read_to(&mut self, out: &mut Reader<T>, target: u64) -> Result<ReadStatus> {
        let budget = out.budget;
        let below = self.carry.partition_point(|(o, _)| *o < target);
        let later = self.carry.split_off(below);
        for (o, mut e) in std::mem::replace(&mut self.carry, later) {
            if e.ts == INGEST_LATER {
                e.ts = out.ingest;
            }
            out.events.push(e);
            out.next = o + 1;
        }
        let below = self.carry_bad.partition_point(|b| b.0 < target);
        let later = self.carry_bad.split_off(below);
        out.bad
            .extend(std::mem::replace(&mut self.carry_bad, later));
        if !self.carry.is_empty() || !self.carry_bad.is_empty() {
            // The reader is past the target already.
            return Ok(ReadStatus::More);
        }
        let at = self.next.unwrap_or(0).max(out.next);
        if at >= target {
            return Ok(ReadStatus::More);
        }
        // Offsets grow by at least one per record: this many cannot pass the target.
        out.budget = budget
            .min((target - at).try_into().unwrap_or(usize::MAX))
            .max(1);
        out.limit = target;
        let status = self.reader.read(out);
        out.limit = u64::MAX;
        out.budget = budget;
        self.carry.append(&mut out.over);
        self.carry_bad.append(&mut out.over_bad);
        status
    }

    /// After a replay: the records carried over go out in the next read.
    fn release_carry(&mut self, out: &mut Reader<T>) {
        for (o, mut e) in self.carry.drain(..) {
            if e.ts == INGEST_LATER {
                e.ts = out.ingest;
            }
            out.events.push(e);
            out.next = o + 1;
        }
        out.bad.append(&mut self.carry_bad);
    }

    /// Notes where the partition is at the end of `epoch`.
    fn end_epoch(&mut self, epoch: u64) {
        if self.next.is_some() && self.next != self.recorded {
            self.recorded = self.next;
            self.positions
                .push_back((epoch, self.next.unwrap_or_default()));
        }
    }

    /// Tells the reader about the epochs below `complete` that every sink has finished.
    fn complete_below(&mut self, complete: u64) -> Result<()> {
        let mut last = None;
        while let Some(&(e, next)) = self.positions.front() {
            if e >= complete {
                break;
            }
            last = Some(next);
            self.positions.pop_front();
        }
        match last {
            Some(next) => self.reader.complete(next),
            None => Ok(()),
        }
    }
}

/// Opens the partitions of `names` that this worker owns and has not seen yet.
/// A partition restored from a checkpoint resumes after its offset, with its event-time
/// progress.
fn open_new<S: Source>(
    source: &mut S,
    ctx: &SourceContext,
    names: &[String],
    known: &mut HashSet<String>,
    parts: &mut Vec<Part<S::Item>>,
    restored: &mut std::collections::HashMap<String, (u64, i64)>,
) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if known.insert(name.clone()) && source.owner(name, i, ctx.workers) == ctx.worker {
            let id = PartitionId(i as u32);
            match restored.remove(name) {
                Some((next, max_ts)) => {
                    let reader = source.resume(id, ctx, next)?;
                    let mut p = Part::new(name.clone(), reader);
                    p.next = Some(next);
                    p.recorded = Some(next);
                    p.max_ts = max_ts;
                    parts.push(p);
                }
                None => {
                    let reader = source.open(id, ctx)?;
                    let start = reader.start_offset();
                    let mut p = Part::new(name.clone(), reader);
                    // A start known before any record counts as where the partition is (see
                    // `PartitionReader::start_offset`).
                    p.next = start;
                    parts.push(p);
                }
            }
        }
    }
    Ok(())
}

/// The smallest watermark of `ps`' backlogged partitions, for watermark alignment.
fn backlog_watermark<T>(ps: &[Part<T>], strategy: &WatermarkStrategy) -> i64 {
    ps.iter()
        .filter(|p| p.backlogged && !p.finished && p.max_ts != i64::MIN)
        .map(|p| strategy.watermark(p.max_ts))
        .min()
        .unwrap_or(align::NOT_BACKLOGGED)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long watermark alignment may hold an instance back before a warning says so (and how
/// often it is repeated).
const LONG_PAUSE: Duration = Duration::from_secs(10);

/// Sends this instance's published alignment watermark to every worker if it changed since
/// the last report, or that report is [`align::RESEND_EVERY`] old.
fn send_alignment(
    out: &mut OutputBuilder<u64, CapacityContainerBuilder<Vec<(u32, i64)>>>,
    cap: &timely::dataflow::operators::Capability<u64>,
    worker: u32,
    aligner: &align::Aligner,
    sent: &mut Option<(i64, Instant)>,
) {
    let wm = aligner.published();
    if sent.is_none_or(|(last, at)| last != wm || at.elapsed() >= align::RESEND_EVERY) {
        out.activate().session(cap).give((worker, wm));
        *sent = Some((wm, Instant::now()));
    }
}

/// Builds the source operator: outputs are data, watermark reports and dead letters (and,
/// across processes, alignment reports to the other instances).
pub(crate) fn build<'s, S: Source>(
    scope: timely::dataflow::Scope<'s, u64>,
    shared: &Rc<Shared>,
    name: &str,
    source_id: u32,
    mut source: S,
    options: SourceOptions<S::Item>,
) -> SourceStreams<'s, S::Item> {
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let info = builder.operator_info();
    let (out_data, data) = builder.new_output();
    let (out_wm, wm) = builder.new_output();
    let (out_dead, dead) = builder.new_output();
    let mut out_data: OutputBuilder<u64, CapacityContainerBuilder<Vec<Event<S::Item>>>> =
        OutputBuilder::from(out_data);
    let mut out_wm: OutputBuilder<u64, CapacityContainerBuilder<Vec<WmReport>>> =
        OutputBuilder::from(out_wm);
    let mut out_dead: OutputBuilder<u64, CapacityContainerBuilder<Vec<Event<DeadLetter>>>> =
        OutputBuilder::from(out_dead);
    // Alignment reports to the instances in other processes: (global worker, watermark).
    let (out_align, align_reports) = builder.new_output();
    let mut out_align: OutputBuilder<u64, CapacityContainerBuilder<Vec<(u32, i64)>>> =
        OutputBuilder::from(out_align);

    let activator = scope.activator_for(info.address.clone());
    let ctx = SourceContext {
        name: name.to_string(),
        worker: scope.index(),
        workers: scope.peers(),
        metrics: shared.metrics.clone(),
    };
    let shared = shared.clone();
    let worker = scope.index() as u32;
    let control = shared.control.clone();
    let metrics = shared.metrics.clone();
    let bad_counter = metrics.counter(&format!("{name}.bad_records"));
    let in_counter = metrics.counter(&format!("{name}.records_in"));
    let clock = shared.epoch_clock;
    let name = name.to_string();
    let aligner = shared.alignment.join(&name, scope.index());
    let max_drift = options.max_drift.map(crate::time::millis);
    // Across processes, each instance sends its published watermark whenever it changes, and
    // every worker writes the others' into its process's slots.
    let cluster = shared.alignment.spans_processes();
    let cross = max_drift.is_some() && cluster;
    if cross {
        use timely::dataflow::operators::vec::Broadcast;
        use timely::dataflow::operators::Inspect;
        let remote = aligner.remote();
        align_reports
            .broadcast()
            .inspect(move |&(w, wm)| remote.receive(w as usize, wm));
    }
    let mut sent: Option<(i64, Instant)> = None;
    let paused_counter = metrics.counter(&format!("{name}.alignment_waits"));
    let held_counter = metrics.counter(&format!("{name}.backpressure_waits"));
    let in_flight = shared.epochs_in_flight;

    let discovery = source.discovery_interval();
    // A restored run: where each partition was, and the epoch to continue after.
    let mut restored: std::collections::HashMap<String, (u64, i64)> = Default::default();
    let mut restored_report = None;
    let mut restored_finished = false;
    let mut resumed_epoch = 0;
    let mut restore_error = None;
    if let Some(r) = &shared.recovery {
        let mut r = r.borrow_mut();
        r.register();
        resumed_epoch = r.resumed_epoch();
        match r
            .restored_state(&name, SOURCE_STATE)
            .and_then(|b| b.map(|b| decode::<SourceSnapshot>(&b)).transpose())
        {
            Ok(Some(snap)) => {
                restored = snap
                    .partitions
                    .into_iter()
                    .map(|(n, next, max_ts)| (n, (next, max_ts)))
                    .collect();
                restored_report = snap.last_report;
                restored_finished = snap.finished;
            }
            Ok(None) => {}
            Err(e) => restore_error = Some(e),
        }
    }
    builder.build_reschedule(move |caps| {
        let mut caps: Option<Vec<timely::dataflow::operators::Capability<u64>>> = Some(caps);
        let mut epoch: u64 = 0;
        // The first epoch of this run (set on the first activation, after a restore): epoch
        // `base + n` closes at `clock.deadline(n)`.
        let mut base: Option<u64> = None;
        let mut parts: Option<Vec<Part<S::Item>>> = None;
        let mut known: HashSet<String> = HashSet::new();
        let mut next_discovery = Instant::now();
        let mut last_report: Option<WmValue> = None;
        let mut reader = Reader::new(options.budget, options.event_time.clone());
        // After the last epoch: waiting for the sinks to finish it, to report completion.
        let mut draining = false;
        // Since when alignment has held this instance back, and when that was last reported.
        let mut paused_since: Option<Instant> = None;
        let mut last_pause_warning: Option<Instant> = None;
        // Since when backpressure has held this instance back, and when that was last reported.
        let mut held_since: Option<Instant> = None;
        let mut last_held_warning: Option<Instant> = None;
        // The epoch log (when a sink replays), and the logged epochs still to replay.
        let mut elog: Option<EpochLog> = None;
        // With the epoch log: the ingestion time of this epoch's records (see `EpochEntry`).
        let mut epoch_ingest: Option<i64> = None;
        let mut elog_opened = false;
        let mut replay: VecDeque<EpochEntry> = VecDeque::new();

        move |_frontiers| {
            // A failed run stops reading. On one process it drops its capabilities, so that
            // the dataflow ends (the sinks abort). In a cluster it keeps them: the other
            // processes do not know of the failure, and with this input ended they would
            // finish and commit their output; instead they wait, and fail once this process
            // has left (see `runtime::run`).
            macro_rules! give_up {
                () => {{
                    if !cluster {
                        caps = None;
                    }
                    return false;
                }};
            }
            if control.aborted() {
                give_up!();
            }
            if draining {
                // Every capability is gone; tell the readers what the sinks have finished,
                // until they have finished everything.
                let complete = shared.sinks_complete();
                if let Some(ps) = parts.as_mut() {
                    for p in ps.iter_mut() {
                        if let Err(e) = p.complete_below(complete) {
                            control.fail(e);
                            return false;
                        }
                    }
                }
                if complete == u64::MAX {
                    return false;
                }
                activator.activate_after(Duration::from_millis(1));
                return true;
            }
            let Some(c) = caps.as_mut() else {
                return false;
            };
            if control.stopping() {
                // Ctrl-C: stop reading, close what is open, do not advance the watermark.
                aligner.publish(align::NOT_BACKLOGGED);
                if cross {
                    send_alignment(&mut out_align, &c[3], worker, &aligner, &mut sent);
                }
                for p in parts.iter_mut().flatten() {
                    p.end_epoch(epoch);
                }
                caps = None;
                draining = true;
                activator.activate();
                return true;
            }
            if let Some(e) = restore_error.take() {
                control.fail(e);
                give_up!();
            }
            if parts.is_none() && resumed_epoch > 0 {
                // Restored: continue after the checkpoint's epoch.
                epoch = resumed_epoch + 1;
                for cap in c.iter_mut() {
                    cap.downgrade(&epoch);
                }
                last_report = restored_report;
            }
            if !elog_opened {
                elog_opened = true;
                let dir = shared
                    .replay
                    .get()
                    .then_some(())
                    .and_then(|()| shared.recovery.as_ref().and_then(|r| r.borrow().log_dir()));
                if let Some(dir) = dir {
                    match EpochLog::open(&dir, &name, ctx.worker, ctx.workers, resumed_epoch) {
                        Ok((log, entries)) => {
                            if !entries.is_empty() {
                                tracing::info!(
                                    "source '{name}' on worker {worker}: replaying epochs {} to \
                                     {} from its epoch log",
                                    entries[0].epoch,
                                    entries[entries.len() - 1].epoch
                                );
                            }
                            elog = Some(log);
                            replay = entries;
                        }
                        Err(e) => {
                            control.fail(e);
                            give_up!();
                        }
                    }
                }
            }
            let epoch_deadline = clock.deadline(epoch - *base.get_or_insert(epoch));
            if let Some(r) = &shared.recovery {
                if let Err(e) = r.borrow_mut().poll() {
                    control.fail(e);
                    give_up!();
                }
            }
            // Open this worker's partitions on the first activation, and new ones as they
            // are discovered.
            let now = Instant::now();
            if restored_finished && parts.is_none() {
                // Restored from a checkpoint taken after this source had ended.
                parts = Some(Vec::new());
            }
            if parts.is_none() || discovery.is_some_and(|_| now >= next_discovery) {
                let ps = parts.get_or_insert_with(Vec::new);
                let opened = source.partitions(&ctx).and_then(|names| {
                    open_new(&mut source, &ctx, &names, &mut known, ps, &mut restored)
                });
                if let Err(e) = opened {
                    control.fail(e);
                    give_up!();
                }
                if let Some(every) = discovery {
                    next_discovery = now + every;
                }
            }
            let ps = parts.as_mut().expect("opened");
            // Replaying a logged epoch: where each partition ends it.
            let replaying = match replay.front() {
                Some(entry) if entry.epoch == epoch => true,
                Some(entry) => {
                    control.fail(Error::Runtime(format!(
                        "source '{name}' on worker {worker}: the epoch log holds epoch {} \
                         where epoch {epoch} was to be replayed",
                        entry.epoch
                    )));
                    give_up!();
                }
                None => false,
            };
            let mut targets: Vec<Option<u64>> = Vec::new();
            if let Some(entry) = replay.front().filter(|_| replaying) {
                for (logged, ..) in &entry.parts {
                    if !ps.iter().any(|p| &p.name == logged) {
                        control.fail(Error::Source {
                            source_name: name.clone(),
                            reason: format!(
                                "replaying epoch {epoch} from the epoch log: partition \
                                 '{logged}' is not among this worker's partitions"
                            ),
                        });
                        give_up!();
                    }
                }
                targets = ps
                    .iter()
                    .map(|p| {
                        entry
                            .parts
                            .iter()
                            .find(|(n, ..)| *n == p.name)
                            .map(|&(_, next, _)| next)
                    })
                    .collect();
            }
            // Epochs below the sinks' frontier are complete: tell the readers.
            let complete = shared.sinks_complete();
            for p in ps.iter_mut() {
                if let Err(e) = p.complete_below(complete) {
                    control.fail(e);
                    give_up!();
                }
            }
            // Backpressure: the sinks have not finished the epochs `in_flight` before this one
            // (a worker writing a checkpoint, a slow operator): read nothing until they have,
            // so that what the others send them does not pile up without bound.
            if epoch >= complete.saturating_add(in_flight) {
                held_counter.add(1);
                let since = *held_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= LONG_PAUSE
                    && last_held_warning.is_none_or(|t: Instant| t.elapsed() >= LONG_PAUSE)
                {
                    last_held_warning = Some(Instant::now());
                    tracing::warn!(
                        "source '{name}' on worker {worker} has waited {} s for the job's sinks: \
                         it is at epoch {epoch}, they have not finished epoch {complete} (at \
                         most {in_flight} epochs may be in flight)",
                        since.elapsed().as_secs()
                    );
                }
                activator.activate_after(Duration::from_millis(1));
                return true;
            }
            held_since = None;
            let mut cut = false;
            let mut worked = false;
            let mut paused = false;
            let mut data_out = out_data.activate();
            let mut dead_out = out_dead.activate();

            // Read a bounded amount per activation so downstream operators run between reads.
            let started = Instant::now();
            'rounds: for _round in 0..16 {
                let mut any_more = false;
                for (i, p) in ps.iter_mut().enumerate() {
                    if p.finished {
                        continue;
                    }
                    let target = targets.get(i).copied().flatten();
                    if replaying && p.reached(target) {
                        continue;
                    }
                    if let Some(until) = p.pending_until {
                        // A pending partition waits a little before it is asked again, except
                        // in the activation that closes the epoch: what became due by the
                        // deadline (and the event time it can promise) belongs in the epoch.
                        if Instant::now() < until && started < epoch_deadline {
                            continue;
                        }
                        p.pending_until = None;
                    }
                    if let Some(drift) = max_drift.filter(|_| !replaying) {
                        // Watermark alignment: wait for the slowest backlogged partition.
                        if p.max_ts != i64::MIN
                            && options.watermark.watermark(p.max_ts)
                                > aligner.group_min().saturating_add(drift)
                        {
                            paused = true;
                            // Waiting is not idleness: keep the partition in the watermark.
                            p.last_data = Instant::now();
                            continue;
                        }
                    }
                    if options.event_time.is_none() {
                        reader.ingest = match (&elog, replay.front().filter(|_| replaying)) {
                            (None, _) => now_ms(),
                            // One ingestion time per epoch, as logged when replaying.
                            (Some(_), Some(entry)) => {
                                *epoch_ingest.get_or_insert(entry.ingest.unwrap_or_else(now_ms))
                            }
                            (Some(_), None) => *epoch_ingest.get_or_insert_with(now_ms),
                        };
                    }
                    let read = match target.filter(|_| replaying) {
                        Some(t) => p.read_to(&mut reader, t),
                        None => {
                            if !p.carry.is_empty() || !p.carry_bad.is_empty() {
                                p.release_carry(&mut reader);
                            }
                            p.reader.read(&mut reader)
                        }
                    };
                    let status = match read {
                        Ok(s) => s,
                        Err(e) => {
                            control.fail(match e {
                                Error::Source { .. }
                                | Error::BadRecord { .. }
                                | Error::Io { .. } => e,
                                other => Error::Source {
                                    source_name: name.clone(),
                                    reason: other.to_string(),
                                },
                            });
                            give_up!();
                        }
                    };
                    if let Some(t) = reader.time_floor.take() {
                        p.max_ts = p.max_ts.max(t);
                    }
                    if reader.next > 0 {
                        let next = std::mem::take(&mut reader.next);
                        p.next = Some(p.next.map_or(next, |n| n.max(next)));
                    }
                    if let Some(&(offset, ..)) = reader.bad.last() {
                        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
                    }
                    if !reader.events.is_empty() {
                        worked = true;
                        p.last_data = Instant::now();
                        let n = reader.events.len() as u64;
                        let max_ts = reader.events.iter().map(|e| e.ts).max().unwrap_or(i64::MIN);
                        p.max_ts = p.max_ts.max(max_ts);
                        data_out.session(&c[0]).give_container(&mut reader.events);
                        // The batch went downstream with its buffer: size the next one at once.
                        reader.events.clear();
                        reader.events.reserve(options.budget);
                        metrics.records_in.add(n);
                        in_counter.add(n);
                    }
                    if !reader.bad.is_empty() {
                        worked = true;
                        match options.bad_records {
                            BadRecordPolicy::Fail => {
                                let (_, location, reason, _) = reader.bad.remove(0);
                                reader.bad.clear();
                                control.fail(Error::BadRecord {
                                    source_name: name.clone(),
                                    location,
                                    reason,
                                });
                                give_up!();
                            }
                            BadRecordPolicy::Skip => {
                                let n = reader.bad.len() as u64;
                                metrics.bad_records.add(n);
                                bad_counter.add(n);
                                let now = now_ms();
                                let mut dead: Vec<Event<DeadLetter>> = reader
                                    .bad
                                    .drain(..)
                                    .map(|(_, location, reason, raw)| Event {
                                        ts: now,
                                        data: DeadLetter {
                                            source: name.clone(),
                                            location,
                                            reason,
                                            raw,
                                        },
                                    })
                                    .collect();
                                dead_out.session(&c[2]).give_container(&mut dead);
                            }
                        }
                    }
                    match status {
                        ReadStatus::More => any_more = true,
                        ReadStatus::Pending => {
                            p.pending_until = Some(Instant::now() + Duration::from_millis(1));
                        }
                        // Replay cuts where the log says, not where the reader asks.
                        ReadStatus::CutEpoch if replaying => any_more = true,
                        ReadStatus::CutEpoch => {
                            cut = true;
                        }
                        ReadStatus::Finished => {
                            if replaying && !p.reached(target) {
                                control.fail(Error::Source {
                                    source_name: name.clone(),
                                    reason: format!(
                                        "replaying epoch {epoch} from the epoch log: partition \
                                         '{}' ended at offset {} before offset {}, where the \
                                         epoch ended when it was first read (were records \
                                         deleted?)",
                                        p.name,
                                        p.next.unwrap_or(0),
                                        target.unwrap_or(0)
                                    ),
                                });
                                give_up!();
                            }
                            p.finished = true;
                        }
                    }
                    p.backlogged = matches!(status, ReadStatus::More | ReadStatus::CutEpoch);
                    if cut {
                        break 'rounds;
                    }
                }
                if max_drift.is_some() {
                    aligner.publish(backlog_watermark(ps, &options.watermark));
                }
                if !any_more || started.elapsed() > Duration::from_millis(2) {
                    break;
                }
            }
            if max_drift.is_some() {
                aligner.publish(backlog_watermark(ps, &options.watermark));
                if paused {
                    paused_counter.add(1);
                    let since = *paused_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= LONG_PAUSE
                        && last_pause_warning.is_none_or(|t: Instant| t.elapsed() >= LONG_PAUSE)
                    {
                        last_pause_warning = Some(Instant::now());
                        tracing::warn!(
                            "source '{name}' on worker {worker} has waited {} s for watermark \
                             alignment: its instances' watermarks (by worker; {} = not \
                             backlogged) are {:?}, the allowed drift {} ms",
                            since.elapsed().as_secs(),
                            align::NOT_BACKLOGGED,
                            aligner.slots(),
                            max_drift.unwrap_or_default()
                        );
                    }
                } else {
                    paused_since = None;
                }
                if cross {
                    send_alignment(&mut out_align, &c[3], worker, &aligner, &mut sent);
                }
            }
            drop(data_out);
            drop(dead_out);

            // A replayed epoch closes once every partition has read up to where it ended.
            let replayed = replaying
                && ps
                    .iter()
                    .enumerate()
                    .all(|(i, p)| p.reached(targets.get(i).copied().flatten()));
            let logged = replay.front().filter(|_| replayed);
            // A discovering source may gain partitions: it never finishes on its own.
            let all_finished = match logged {
                Some(entry) => entry.finished,
                None if replaying => false,
                None => restored_finished || (discovery.is_none() && ps.iter().all(|p| p.finished)),
            };
            let now = Instant::now();
            // Close the epoch if its end had come when this activation began: then what was
            // there to read at that moment is in it.
            let close = if replaying {
                replayed
            } else {
                cut || all_finished || started >= epoch_deadline
            };
            if close {
                let ingest = epoch_ingest.take();
                // Close the epoch: note where each partition is, report this instance's
                // watermark for it, then move on.
                for p in ps.iter_mut() {
                    p.end_epoch(epoch);
                }
                if let Some(entry) = logged {
                    // The event-time progress as it was (a reader's promises may differ).
                    for p in ps.iter_mut() {
                        if let Some(&(_, _, max_ts)) =
                            entry.parts.iter().find(|(n, ..)| *n == p.name)
                        {
                            p.max_ts = max_ts;
                        }
                    }
                }
                let value = if let Some(entry) = logged {
                    entry.value
                } else if all_finished {
                    WmValue::At(WATERMARK_MAX)
                } else {
                    let mut min: Option<i64> = None;
                    for p in ps.iter() {
                        if p.finished {
                            continue;
                        }
                        if let Some(t) = options.idle_timeout {
                            if now.duration_since(p.last_data) >= t {
                                continue;
                            }
                        }
                        let w = options.watermark.watermark(p.max_ts);
                        min = Some(min.map_or(w, |m: i64| m.min(w)));
                    }
                    match min {
                        Some(w) => WmValue::At(w),
                        None => WmValue::Idle,
                    }
                };
                if last_report != Some(value) {
                    let mut wm_out = out_wm.activate();
                    wm_out.session(&c[1]).give(WmReport {
                        source: source_id,
                        worker,
                        value,
                    });
                    last_report = Some(value);
                }
                if let Some(r) = &shared.recovery {
                    let mut r = r.borrow_mut();
                    // The input's end is a checkpoint too (the final one).
                    let id = if all_finished {
                        Some(FINAL)
                    } else {
                        r.is_checkpoint(epoch).then_some(epoch)
                    };
                    if let Some(id) = id {
                        let snap = SourceSnapshot {
                            partitions: ps
                                .iter()
                                .filter_map(|p| p.next.map(|n| (p.name.clone(), n, p.max_ts)))
                                .collect(),
                            last_report,
                            finished: all_finished,
                        };
                        // An ended source's last state stands in the later checkpoints
                        // the other workers go on taking.
                        let handed = encode(&snap).and_then(|b| {
                            if all_finished {
                                r.ended(epoch, &name, SOURCE_STATE, b)
                            } else {
                                r.contribute(id, &name, SOURCE_STATE, b)
                            }
                        });
                        if let Err(e) = handed {
                            drop(r);
                            control.fail(e);
                            give_up!();
                        }
                    }
                }
                // The epoch log: durable before the epoch closes (see `crate::epoch_log`).
                if let Some(log) = elog.as_mut() {
                    let logged_now = if replaying {
                        replay.pop_front();
                        if replay.is_empty() {
                            // Live from here: idleness counts from now.
                            for p in ps.iter_mut() {
                                p.last_data = Instant::now();
                            }
                        }
                        Ok(())
                    } else {
                        let entry = EpochEntry {
                            epoch,
                            workers: ctx.workers as u32,
                            parts: ps
                                .iter()
                                .filter_map(|p| p.next.map(|n| (p.name.clone(), n, p.max_ts)))
                                .collect(),
                            value,
                            finished: all_finished,
                            ingest,
                        };
                        log.append(&entry)
                    };
                    let trimmed = logged_now.and_then(|()| match &shared.recovery {
                        Some(r) => {
                            let committed = r.borrow_mut().committed();
                            log.trim(committed)
                        }
                        None => Ok(()),
                    });
                    if let Err(e) = trimmed {
                        control.fail(e);
                        give_up!();
                    }
                }
                if all_finished {
                    aligner.publish(align::NOT_BACKLOGGED);
                    if cross {
                        send_alignment(&mut out_align, &c[3], worker, &aligner, &mut sent);
                    }
                    caps = None;
                    draining = true;
                    activator.activate();
                    return true;
                }
                epoch += 1;
                for cap in c.iter_mut() {
                    cap.downgrade(&epoch);
                }
            }
            if worked || cut || paused {
                // Paused by alignment: yield to the other operators, then look again.
                activator.activate();
            } else {
                let wait = clock
                    .deadline(epoch - base.unwrap_or(epoch))
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(1));
                activator.activate_after(wait);
            }
            false
        }
    });
    (data, wm, dead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `extend_at` leaves a reader as pushing each record with `push_at` does: the same
        /// records with their times, and the same next offset; with and without offsets to
        /// skip (the slow path).
        #[test]
        fn extend_at_is_push_at_in_a_loop(
            records in proptest::collection::vec((-1_000i64..1_000, 0u64..50, any::<u32>()), 0..300),
            skip_below in prop_oneof![Just(0u64), 0u64..3_000],
        ) {
            // Offsets in increasing order, as readers push them.
            let mut offset = 0;
            let records: Vec<(i64, u64, u32)> = records
                .into_iter()
                .map(|(ts, gap, item)| {
                    offset += gap + 1;
                    (ts, offset, item)
                })
                .collect();
            let mut one = Reader::new(64, None);
            let mut all = Reader::new(64, None);
            one.skip_below = skip_below;
            all.skip_below = skip_below;
            for &(ts, offset, item) in &records {
                one.push_at(ts, offset, item);
            }
            all.extend_at(records.iter().copied());
            prop_assert_eq!(&all.events, &one.events);
            prop_assert_eq!(all.next, one.next);
            // And against the records themselves.
            let kept: Vec<Event<u32>> = records
                .iter()
                .filter(|r| r.1 >= skip_below)
                .map(|&(ts, _, data)| Event { ts, data })
                .collect();
            prop_assert_eq!(&all.events, &kept);
        }
    }
}
