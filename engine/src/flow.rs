//! The job API: a [`Flow`] is the graph a job builds on each worker; a [`Stream`] is a typed
//! stream of records in it; a [`KeyedStream`] is a stream partitioned by key, which windows and
//! joins (in `runnel-operators`) take.
//!
//! A job's build function runs once on every worker, so user closures need not be `Send` or
//! `Clone`: each worker builds its own copy. The flow checks the graph as it is built and when the
//! build function returns ([`Flow::finish`]): a stream that reaches no sink and two operators with
//! one name are errors that name the operator and where in the job's code it was created.
//! A window on an unkeyed stream does not compile: windows are methods of [`KeyedStream`] only.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::panic::Location;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::{DistributorPact, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Concat, Inspect};
use timely::dataflow::{Scope, StreamVec};

use crate::align::Registry;
use crate::batch::KeyDistributor;
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::event::DeadLetter;
use crate::event::{key_hash, Data, Event, ExchangeKey};
use crate::metrics::Metrics;
use crate::recovery::{Recovery, SharedRecovery};
use crate::runtime::Control;
use crate::sink::{self, Sink};
use crate::source::{self, Source, SourceOptions};
use crate::watermark::WmReport;

pub(crate) type TStream<'s, D> = StreamVec<'s, u64, D>;

/// A stateful operator's output and, if asked for, its late records.
pub type WithLate<'s, O, I> = (Stream<'s, O>, Option<Stream<'s, I>>);

/// What every operator of a flow shares: the run's context and the graph checks.
pub(crate) struct Shared {
    pub(crate) job: String,
    pub(crate) config: Arc<JobConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) control: Arc<Control>,
    /// When the sources close their epochs.
    pub(crate) epoch_clock: crate::source::EpochClock,
    /// Backpressure: how many epochs a source may be ahead of the oldest epoch this worker's
    /// sinks have not finished (see [`crate::RunOptions::max_in_flight`]).
    pub(crate) epochs_in_flight: u64,
    /// Watermark alignment between the source instances of this process.
    pub(crate) alignment: Arc<Registry>,
    graph: RefCell<Graph>,
    /// Per sink instance on this worker: the epochs below it are finished (`u64::MAX` once
    /// the sink has closed).
    sinks_done: RefCell<Vec<Rc<Cell<u64>>>>,
    /// The operators that turn streams into tables (whose state checkpoints do not cover).
    tables: RefCell<Vec<String>>,
    /// Checkpoints (none when they are off).
    pub(crate) recovery: SharedRecovery,
    /// A sink of the flow writes epochs as soon as they close ([`crate::Sink::replays`]): the
    /// sources keep the epoch log and replay it after a restore (see [`crate::epoch_log`]).
    pub(crate) replay: Cell<bool>,
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    names: HashMap<String, usize>,
    next_source: u32,
}

struct Node {
    name: String,
    at: &'static Location<'static>,
    consumed: bool,
}

impl Shared {
    /// Registers an operator named `name` (unique) created at `at`; returns its node id.
    pub(crate) fn add_node(
        &self,
        name: String,
        at: &'static Location<'static>,
        produces: bool,
    ) -> Result<usize> {
        let mut g = self.graph.borrow_mut();
        if let Some(&other) = g.names.get(&name) {
            let first = g.nodes[other].at;
            return Err(Error::InvalidJob {
                job: self.job.clone(),
                reason: format!(
                    "two operators are named '{name}' (at {first} and at {at}); operator names must be unique"
                ),
            });
        }
        let id = g.nodes.len();
        g.names.insert(name.clone(), id);
        g.nodes.push(Node {
            name,
            at,
            consumed: !produces,
        });
        Ok(id)
    }

    pub(crate) fn auto_name(&self, kind: &str) -> String {
        let g = self.graph.borrow();
        let mut n = g.nodes.len();
        loop {
            let name = format!("{kind}#{n}");
            if !g.names.contains_key(&name) {
                return name;
            }
            n += 1;
        }
    }

    pub(crate) fn consume(&self, node: usize) {
        self.graph.borrow_mut().nodes[node].consumed = true;
    }

    /// Notes that the flow has a table (see [`crate::table`]), made by operator `name`.
    pub(crate) fn note_table(&self, name: &str) {
        self.tables.borrow_mut().push(name.to_string());
    }

    /// A new sink's progress cell (see [`Shared::sinks_complete`]).
    pub(crate) fn register_sink(&self) -> Rc<Cell<u64>> {
        let cell = Rc::new(Cell::new(0));
        self.sinks_done.borrow_mut().push(cell.clone());
        cell
    }

    /// The epochs below the returned one are finished at every sink on this worker (and so,
    /// since frontiers are global, have been handed to every sink of the job).
    pub(crate) fn sinks_complete(&self) -> u64 {
        self.sinks_done
            .borrow()
            .iter()
            .map(|c| c.get())
            .min()
            .unwrap_or(u64::MAX)
    }

    fn next_source_id(&self) -> u32 {
        let mut g = self.graph.borrow_mut();
        g.next_source += 1;
        g.next_source - 1
    }
}

/// The graph of a job as one worker builds it. A job's build function receives `&mut Flow` and
/// adds sources, operators and sinks to it.
pub struct Flow<'s> {
    pub(crate) scope: Scope<'s, u64>,
    pub(crate) shared: Rc<Shared>,
}

impl<'s> Flow<'s> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        scope: Scope<'s, u64>,
        job: &str,
        config: Arc<JobConfig>,
        metrics: Arc<Metrics>,
        control: Arc<Control>,
        epoch_clock: crate::source::EpochClock,
        epochs_in_flight: u64,
        alignment: Arc<Registry>,
        recovery: Option<Recovery>,
    ) -> Self {
        Flow {
            scope,
            shared: Rc::new(Shared {
                job: job.to_string(),
                config,
                metrics,
                control,
                epoch_clock,
                epochs_in_flight,
                alignment,
                graph: RefCell::new(Graph::default()),
                sinks_done: RefCell::new(Vec::new()),
                tables: RefCell::new(Vec::new()),
                recovery: recovery.map(RefCell::new),
                replay: Cell::new(false),
            }),
        }
    }

    /// The run's configuration (`--set key=value`); read settings with [`JobConfig::get`].
    pub fn config(&self) -> &JobConfig {
        &self.shared.config
    }

    /// Whether the run takes checkpoints (so exactly-once sinks can work).
    pub fn checkpointing(&self) -> bool {
        self.shared.recovery.is_some()
    }

    /// The run's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// When the run's first epoch closes, on the wall clock (epoch milliseconds). Every process
    /// of a cluster has the same (they agree on it when they connect), so a source that keeps
    /// its event times to the wall clock can start from it in all of them, as the paced Nexmark
    /// generator does.
    pub fn start_ms(&self) -> i64 {
        self.shared.epoch_clock.origin_ms()
    }

    /// This worker's index among all workers of all processes.
    pub fn worker_index(&self) -> usize {
        self.scope.index()
    }

    /// The number of workers over all processes.
    pub fn workers(&self) -> usize {
        self.scope.peers()
    }

    /// Adds a source named `name`: its partitions are spread over every worker, each instance
    /// reads its partitions, stamps records with event time and reports watermarks per epoch.
    /// Bad records follow `options`' policy; with [`crate::BadRecordPolicy::Skip`] they are counted
    /// and dropped (use [`Flow::source_with_dead_letters`] to keep them).
    #[track_caller]
    pub fn source<S: Source>(
        &mut self,
        name: &str,
        source: S,
        options: SourceOptions<S::Item>,
    ) -> Result<Stream<'s, S::Item>> {
        let at = Location::caller();
        let (data, dead) = self.source_at(name, source, options, at)?;
        self.shared.consume(dead.node);
        Ok(data)
    }

    /// Like [`Flow::source`], and also returns the stream of records that could not be decoded
    /// (when the policy is [`crate::BadRecordPolicy::Skip`]), each with where it was and why.
    #[track_caller]
    pub fn source_with_dead_letters<S: Source>(
        &mut self,
        name: &str,
        source: S,
        options: SourceOptions<S::Item>,
    ) -> Result<(Stream<'s, S::Item>, Stream<'s, DeadLetter>)> {
        let at = Location::caller();
        self.source_at(name, source, options, at)
    }

    fn source_at<S: Source>(
        &mut self,
        name: &str,
        source: S,
        options: SourceOptions<S::Item>,
        at: &'static Location<'static>,
    ) -> Result<(Stream<'s, S::Item>, Stream<'s, DeadLetter>)> {
        let node = self.shared.add_node(name.to_string(), at, true)?;
        let dead_node = self
            .shared
            .add_node(format!("{name}.dead-letters"), at, true)?;
        let source_id = self.shared.next_source_id();
        let (data, wm, dead) =
            source::build(self.scope, &self.shared, name, source_id, source, options);
        let sources: Rc<BTreeSet<u32>> = Rc::new([source_id].into_iter().collect());
        let data = Stream {
            data,
            wm: wm.clone(),
            sources: sources.clone(),
            node,
            shared: self.shared.clone(),
        };
        let dead = Stream {
            data: dead,
            wm,
            sources,
            node: dead_node,
            shared: self.shared.clone(),
        };
        Ok((data, dead))
    }

    /// Checks the finished graph: every stream must reach a sink (directly or through operators)
    /// and the run must not set config keys the job never read. Called by the runtime after the
    /// job's build function returns.
    pub fn finish(&self) -> Result<()> {
        let g = self.shared.graph.borrow();
        for n in &g.nodes {
            if !n.consumed {
                return Err(Error::InvalidJob {
                    job: self.shared.job.clone(),
                    reason: format!(
                        "the stream of operator '{}' (created at {}) reaches no sink",
                        n.name, n.at
                    ),
                });
            }
        }
        if g.nodes.is_empty() {
            return Err(Error::InvalidJob {
                job: self.shared.job.clone(),
                reason: "the job has no operators".to_string(),
            });
        }
        if self.shared.recovery.is_some() {
            if let Some(table) = self.shared.tables.borrow().first() {
                return Err(Error::InvalidJob {
                    job: self.shared.job.clone(),
                    reason: format!(
                        "operator '{table}' makes an updating table, whose state checkpoints do \
                         not cover yet; run the job with checkpoints off (--checkpoint-every 0s)"
                    ),
                });
            }
        }
        if let Some(r) = &self.shared.recovery {
            r.borrow().report_unclaimed();
        }
        self.shared.config.check_unknown(&self.shared.job)
    }
}

/// Maps whole batches: one exactly-sized allocation per batch and a tight loop, instead of
/// pushing records one by one through a container builder.
fn batch_map<'s, T: Data, U: Data>(
    data: &TStream<'s, Event<T>>,
    name: &str,
    f: impl Fn(Event<T>) -> Event<U> + 'static,
) -> TStream<'s, Event<U>> {
    data.clone().unary(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each(|cap, batch| {
                // In place where `U` fits in `T`'s slots (std's in-place collect): the records
                // are written where they were just read, while that memory is in cache.
                let mut out: Vec<Event<U>> = std::mem::take(batch).into_iter().map(&f).collect();
                output.session(&cap).give_container(&mut out);
            });
        }
    })
}

/// Filters whole batches in place and passes the same buffer on.
fn batch_filter<'s, T: Data>(
    data: &TStream<'s, Event<T>>,
    name: &str,
    f: impl Fn(&Event<T>) -> bool + 'static,
) -> TStream<'s, Event<T>> {
    data.clone().unary(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each(|cap, batch| {
                batch.retain(&f);
                if !batch.is_empty() {
                    output.session(&cap).give_container(batch);
                }
            });
        }
    })
}

/// A stream of records of type `T`, each with its event time.
///
/// Streams are handles: cloning one, or using it twice, branches it (every consumer sees every
/// record). Every stream must end in a sink.
pub struct Stream<'s, T> {
    pub(crate) data: TStream<'s, Event<T>>,
    pub(crate) wm: TStream<'s, WmReport>,
    pub(crate) sources: Rc<BTreeSet<u32>>,
    pub(crate) node: usize,
    pub(crate) shared: Rc<Shared>,
}

impl<T: Clone + 'static> Clone for Stream<'_, T> {
    fn clone(&self) -> Self {
        Stream {
            data: self.data.clone(),
            wm: self.wm.clone(),
            sources: self.sources.clone(),
            node: self.node,
            shared: self.shared.clone(),
        }
    }
}

impl<'s, T: Data> Stream<'s, T> {
    /// A new stream downstream of `self` (which is marked consumed).
    pub(crate) fn derive<U>(
        &self,
        name: String,
        at: &'static Location<'static>,
        data: TStream<'s, Event<U>>,
    ) -> Result<Stream<'s, U>> {
        self.shared.consume(self.node);
        let node = self.shared.add_node(name, at, true)?;
        Ok(Stream {
            data,
            wm: self.wm.clone(),
            sources: self.sources.clone(),
            node,
            shared: self.shared.clone(),
        })
    }

    /// Internal: a stream with the same watermarks as `self` and other data.
    pub(crate) fn derive_unchecked<U>(
        &self,
        data: TStream<'s, Event<U>>,
        node: usize,
    ) -> Stream<'s, U> {
        Stream {
            data,
            wm: self.wm.clone(),
            sources: self.sources.clone(),
            node,
            shared: self.shared.clone(),
        }
    }

    /// Applies `f` to every record.
    #[track_caller]
    pub fn map<U: Data>(&self, f: impl Fn(T) -> U + 'static) -> Stream<'s, U> {
        let at = Location::caller();
        let data = batch_map(&self.data, "map", move |e: Event<T>| Event {
            ts: e.ts,
            data: f(e.data),
        });
        self.derive(self.shared.auto_name("map"), at, data)
            .expect("auto names are unique")
    }

    /// Keeps the records for which `f` is true.
    #[track_caller]
    pub fn filter(&self, f: impl Fn(&T) -> bool + 'static) -> Stream<'s, T> {
        let at = Location::caller();
        let data = batch_filter(&self.data, "filter", move |e: &Event<T>| f(&e.data));
        self.derive(self.shared.auto_name("filter"), at, data)
            .expect("auto names are unique")
    }

    /// Applies `f` to every record and emits every item it returns, with the record's event time.
    #[track_caller]
    pub fn flat_map<U: Data, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(T) -> I + 'static,
    ) -> Stream<'s, U> {
        let at = Location::caller();
        let data = self.data.clone().unary(Pipeline, "flat_map", move |_, _| {
            move |input, output| {
                // Whole batches out, sized for one item per record (the common filter-and-
                // unwrap case); pushing item by item through timely's builder shipped 8 KiB
                // batches and copied every record once more.
                input.for_each(|cap, batch| {
                    let mut out: Vec<Event<U>> = Vec::with_capacity(batch.len());
                    for e in batch.drain(..) {
                        let ts = e.ts;
                        out.extend(f(e.data).into_iter().map(|d| Event { ts, data: d }));
                    }
                    if !out.is_empty() {
                        output.session(&cap).give_container(&mut out);
                    }
                });
            }
        });
        self.derive(self.shared.auto_name("flat_map"), at, data)
            .expect("auto names are unique")
    }

    /// Applies `f` to every record and emits the records it returns `Some` of, with the
    /// record's event time: a [`Stream::filter`] and a [`Stream::map`] in one step, as
    /// `Iterator::filter_map`. Cheaper than [`Stream::flat_map`] returning an `Option` where
    /// `U` is no larger than `T`: the results are written in place of the records.
    #[track_caller]
    pub fn filter_map<U: Data>(&self, f: impl Fn(T) -> Option<U> + 'static) -> Stream<'s, U> {
        let at = Location::caller();
        let data = self
            .data
            .clone()
            .unary(Pipeline, "filter_map", move |_, _| {
                move |input, output| {
                    input.for_each(|cap, batch| {
                        let mut out: Vec<Event<U>> = std::mem::take(batch)
                            .into_iter()
                            .filter_map(|e| {
                                let ts = e.ts;
                                f(e.data).map(|data| Event { ts, data })
                            })
                            .collect();
                        if !out.is_empty() {
                            output.session(&cap).give_container(&mut out);
                        }
                    });
                }
            });
        self.derive(self.shared.auto_name("filter_map"), at, data)
            .expect("auto names are unique")
    }

    /// Calls `f` on every record (with its event time) and passes it on unchanged.
    #[track_caller]
    pub fn inspect(&self, f: impl Fn(&T, i64) + 'static) -> Stream<'s, T> {
        let at = Location::caller();
        let data = self
            .data
            .clone()
            .inspect(move |e: &Event<T>| f(&e.data, e.ts));
        self.derive(self.shared.auto_name("inspect"), at, data)
            .expect("auto names are unique")
    }

    /// Replaces every record's event time with `f(record)`. The watermarks stay those of the
    /// sources, so a new time must not run ahead of the source's event time by more than the
    /// source's bound, or its records will be late downstream.
    #[track_caller]
    pub fn with_event_time(&self, f: impl Fn(&T) -> i64 + 'static) -> Stream<'s, T> {
        let at = Location::caller();
        let data = batch_map(&self.data, "event_time", move |mut e: Event<T>| {
            e.ts = f(&e.data);
            e
        });
        self.derive(self.shared.auto_name("event_time"), at, data)
            .expect("auto names are unique")
    }

    /// Partitions the stream by `key`: records with equal keys meet on one worker in the keyed
    /// operators downstream (windows, joins).
    #[track_caller]
    pub fn key_by<K: ExchangeKey>(&self, key: impl Fn(&T) -> K + 'static) -> KeyedStream<'s, K, T> {
        let at = Location::caller();
        let data = batch_map(&self.data, "key_by", move |e: Event<T>| Event {
            ts: e.ts,
            data: (key(&e.data), e.data),
        });
        KeyedStream {
            inner: self
                .derive(self.shared.auto_name("key_by"), at, data)
                .expect("auto names are unique"),
        }
    }

    /// Merges `self` and `other` into one stream; its watermark is the minimum of both.
    #[track_caller]
    pub fn union(&self, other: &Stream<'s, T>) -> Stream<'s, T> {
        let at = Location::caller();
        self.shared.consume(other.node);
        let data = self.data.clone().concat(other.data.clone());
        let mut out = self
            .derive(self.shared.auto_name("union"), at, data)
            .expect("auto names are unique");
        out.wm = self.wm.clone().concat(other.wm.clone());
        out.sources = Rc::new(self.sources.union(&other.sources).copied().collect());
        out
    }

    /// Writes the stream to `sink`, an operator named `name`.
    #[track_caller]
    pub fn sink(&self, name: &str, sink: impl Sink<T>) -> Result<()> {
        let at = Location::caller();
        self.shared.consume(self.node);
        self.shared.add_node(name.to_string(), at, false)?;
        sink::build(&self.shared, name, self.data.clone(), sink);
        Ok(())
    }

    /// Exchanges records so that equal `route(record)` values land on the same worker. Rarely
    /// needed in jobs (keyed operators exchange by key themselves).
    #[track_caller]
    pub fn exchange(&self, route: impl Fn(&T) -> u64 + 'static) -> Stream<'s, T> {
        let at = Location::caller();
        let pact = DistributorPact(move |peers| {
            KeyDistributor::new(move |e: &Event<T>| route(&e.data), peers)
        });
        let data = self.data.clone().unary(pact, "exchange", |_, _| {
            move |input, output| {
                input.for_each(|cap, batch| {
                    output.session(&cap).give_container(batch);
                })
            }
        });
        self.derive(self.shared.auto_name("exchange"), at, data)
            .expect("auto names are unique")
    }

    /// The name this stream's operator was registered under.
    pub fn operator_name(&self) -> String {
        self.shared.graph.borrow().nodes[self.node].name.clone()
    }

    /// The flow's configuration.
    pub fn config(&self) -> &JobConfig {
        &self.shared.config
    }
}

/// A stream of `(key, value)` records partitioned by key. Keyed operators (windows, joins,
/// [`KeyedStream::stateful`]) exchange its records so that each key lives on one worker.
pub struct KeyedStream<'s, K, V> {
    pub(crate) inner: Stream<'s, (K, V)>,
}

impl<K: Clone + 'static, V: Clone + 'static> Clone for KeyedStream<'_, K, V> {
    fn clone(&self) -> Self {
        KeyedStream {
            inner: self.inner.clone(),
        }
    }
}

impl<'s, K: ExchangeKey, V: Data> KeyedStream<'s, K, V> {
    /// An [`Error::InvalidJob`] naming this stream's job: for operators that refuse how they
    /// were set up, when the job is built.
    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidJob {
            job: self.inner.shared.job.clone(),
            reason: reason.into(),
        }
    }

    /// Wraps a stream of `(key, value)` pairs as a keyed stream.
    pub fn from_pairs(stream: Stream<'s, (K, V)>) -> Self {
        KeyedStream { inner: stream }
    }

    /// The `(key, value)` stream underneath.
    pub fn into_stream(self) -> Stream<'s, (K, V)> {
        self.inner
    }

    /// The `(key, value)` stream underneath, by reference.
    pub fn as_stream(&self) -> &Stream<'s, (K, V)> {
        &self.inner
    }

    /// Applies `f` to every value, keeping keys.
    #[track_caller]
    pub fn map_values<U: Data>(&self, f: impl Fn(V) -> U + 'static) -> KeyedStream<'s, K, U> {
        KeyedStream {
            inner: self.inner.map(move |(k, v)| (k, f(v))),
        }
    }

    /// Keeps the records for which `f` is true.
    #[track_caller]
    pub fn filter(&self, f: impl Fn(&K, &V) -> bool + 'static) -> KeyedStream<'s, K, V> {
        KeyedStream {
            inner: self.inner.filter(move |(k, v)| f(k, v)),
        }
    }

    /// Merges two keyed streams of the same types.
    #[track_caller]
    pub fn union(&self, other: &KeyedStream<'s, K, V>) -> KeyedStream<'s, K, V> {
        KeyedStream {
            inner: self.inner.union(&other.inner),
        }
    }

    /// Combines this stream with another keyed stream of the same key into one stream of
    /// [`crate::Either`] values, the input of two-input keyed operators (joins).
    #[track_caller]
    pub fn connect<W: Data>(
        &self,
        other: &KeyedStream<'s, K, W>,
    ) -> KeyedStream<'s, K, crate::Either<V, W>> {
        let left = self.inner.map(|(k, v)| (k, crate::Either::Left(v)));
        let right = other.inner.map(|(k, w)| (k, crate::Either::Right(w)));
        KeyedStream {
            inner: left.union(&right),
        }
    }

    /// Runs a local, per-epoch operator on each worker (no exchange): `logic` sees this
    /// worker's records of one epoch, then the end of that epoch. Combiners (pre-aggregation
    /// before the exchange) are built with it.
    #[track_caller]
    pub fn local<K2: ExchangeKey, O: Data, L>(
        &self,
        name: &str,
        logic: L,
    ) -> Result<KeyedStream<'s, K2, O>>
    where
        L: crate::stateful::LocalEpochLogic<(K, V), (K2, O)>,
    {
        let at = Location::caller();
        let name = if name.is_empty() {
            self.inner.shared.auto_name("local")
        } else {
            name.to_string()
        };
        let data = crate::stateful::build_local(self.inner.data.clone(), &name, logic);
        Ok(KeyedStream {
            inner: self.inner.derive(name, at, data)?,
        })
    }

    /// Runs a keyed, epoch-driven stateful operator: records are exchanged by key, and `logic`
    /// sees each record with the watermark that held when its epoch began, then the end of each
    /// epoch with the advanced watermark (see [`crate::EpochLogic`]). Returns the output stream
    /// and, if `late_output`, the stream of records the logic declared late (otherwise late
    /// records are only counted).
    ///
    /// `name` is the operator's stable name (it names its state in checkpoints); empty picks
    /// an automatic one.
    #[track_caller]
    pub fn stateful<O: Data, L>(
        &self,
        name: &str,
        late_output: bool,
        logic: L,
    ) -> Result<WithLate<'s, O, (K, V)>>
    where
        L: crate::stateful::EpochLogic<(K, V), O>,
    {
        let at = Location::caller();
        let name = if name.is_empty() {
            self.inner.shared.auto_name("stateful")
        } else {
            name.to_string()
        };
        let expected = self.inner.sources.len() * self.inner.data.scope().peers();
        let (main, late) = crate::stateful::build_keyed(
            &self.inner.shared,
            self.inner.data.clone(),
            self.inner.wm.clone(),
            expected,
            &name,
            |e: &Event<(K, V)>| key_hash(&e.data.0),
            logic,
            late_output,
        );
        let main = self.inner.derive(name.clone(), at, main)?;
        let late = if late_output {
            let node = self
                .inner
                .shared
                .add_node(format!("{name}.late"), at, true)?;
            Some(self.inner.derive_unchecked(late, node))
        } else {
            None
        };
        Ok((main, late))
    }
}
