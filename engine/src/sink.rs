//! Sinks: the contract a connector implements, and the sink operator.
//!
//! # Contract
//! The engine promises a [`Sink`]: [`Sink::open`] once before anything else on the instances
//! that receive records (every worker for [`Routing::PerWorker`], global worker 0 for
//! [`Routing::Single`]); [`Sink::write`] with the records of an epoch, possibly in several calls;
//! [`Sink::epoch_done`] once every record of an epoch (and of all before it) has been written;
//! [`Sink::close`] once when the stream ends normally, or [`Sink::abort`] when the job fails.
//! The sink promises to have made every record durable (or visible) when `close` returns, to
//! return an error rather than lose a record, and to leave no half-written output behind after
//! `abort` where its medium allows it.

use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::flow::{Shared, TStream};
use crate::metrics::Metrics;
use crate::recovery::FINAL;
use crate::time::Epoch;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

/// Records the latency `now - t` of each event time `t` in `h` (clamped to its largest value)
/// and returns how many were ahead of `now`. `i64::MIN` is no event time (a table's change
/// emitted on a worker whose inputs had seen nothing yet) and is not recorded. Consecutive
/// records mostly fall in one bucket of the histogram (a run of event times in one
/// millisecond, or far-off made-up event times in one wide bucket): each run is recorded once with its count, which gives the histogram that
/// recording each value would (an update per record was 5% of q1's samples, and 57% of
/// W0-passthrough's, whose event times are each one millisecond apart).
pub(crate) fn record_latencies(
    h: &mut hdrhistogram::Histogram<u64>,
    now: i64,
    times: impl Iterator<Item = i64>,
) -> u64 {
    let mut early = 0;
    // The run: the bucket's range, and how many values fell in it.
    let mut run: Option<(u64, u64, u64)> = None;
    for t in times {
        if t == i64::MIN {
            continue;
        }
        let Ok(d) = u64::try_from(now.saturating_sub(t)) else {
            early += 1;
            continue;
        };
        let d = d.min(h.high());
        match &mut run {
            Some((low, high, n)) if (*low..=*high).contains(&d) => *n += 1,
            _ => {
                let bucket = (h.lowest_equivalent(d), h.highest_equivalent(d), 1);
                if let Some((low, _, n)) = run.replace(bucket) {
                    h.saturating_record_n(low, n);
                }
            }
        }
    }
    if let Some((low, _, n)) = run {
        h.saturating_record_n(low, n);
    }
    early
}

/// Feeds every `(epoch, batch)` of an activation to the closure it is given.
type Batches<'a, T> = dyn FnMut(&mut dyn FnMut(u64, &mut Vec<Event<T>>)) + 'a;

/// Where a sink's records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Each worker writes the records it has (no exchange).
    PerWorker,
    /// Every record goes to global worker 0, which alone writes (one file, ordered output).
    Single,
}

/// What a sink instance knows about where it runs.
#[derive(Clone, Debug)]
pub struct SinkContext {
    /// The sink operator's name.
    pub name: String,
    /// This worker's global index.
    pub worker: usize,
    /// The number of workers over all processes.
    pub workers: usize,
    /// The run's counters, for the connector's own (name them `"<sink name>.<what>"`).
    pub metrics: Arc<Metrics>,
    /// Whether the run takes checkpoints (a sink that needs them can refuse to run without).
    pub checkpoints: bool,
}

impl SinkContext {
    /// A context for a sink used outside a job (tests, tools): worker 0 of 1, its own counters.
    pub fn detached(name: &str) -> Self {
        SinkContext {
            name: name.to_string(),
            worker: 0,
            workers: 1,
            metrics: Arc::default(),
            checkpoints: false,
        }
    }
}

/// A connector that consumes records of type `T` (see the module's contract).
pub trait Sink<T>: 'static {
    /// Where records go; per worker by default.
    fn routing(&self) -> Routing {
        Routing::PerWorker
    }
    /// Called once before the first write on instances that receive records.
    fn open(&mut self, _ctx: &SinkContext) -> Result<()> {
        Ok(())
    }
    /// Writes records of `epoch` (takes them out of `records`).
    fn write(&mut self, epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()>;
    /// Every record of epochs up to and including `epoch` has been written.
    fn epoch_done(&mut self, _epoch: Epoch) -> Result<()> {
        Ok(())
    }
    /// The stream has ended: make everything durable.
    fn close(&mut self) -> Result<()>;
    /// The job failed: drop what is not yet durable, leave no partial output.
    fn abort(&mut self) {}
    /// The sink's state for a checkpoint: everything of epochs up to and including `through`
    /// and nothing later (see [`crate::recovery`]). `None` (the default): the sink keeps no
    /// state worth restoring.
    fn snapshot(&mut self, through: Epoch) -> Result<Option<Vec<u8>>> {
        let _ = through;
        Ok(None)
    }
    /// Takes back a state [`Sink::snapshot`] returned, before [`Sink::open`].
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let _ = state;
        Ok(())
    }
    /// Whether the sink can hand in its state for the checkpoint of the epochs up to
    /// `through` now. A sink that waits for the writes of those epochs to be acknowledged
    /// says not yet; the engine asks again a little later, while the sink goes on receiving
    /// later epochs, and the checkpoint completes once it has. Default: `true`.
    fn ready_for_checkpoint(&mut self, through: Epoch) -> Result<bool> {
        let _ = through;
        Ok(true)
    }
    /// Whether the sink writes the results of an epoch as soon as the epoch is over (at
    /// [`Sink::epoch_done`]) and counts on replay to recognise them after a crash. Then every
    /// source of the job keeps the epoch log and, after a restore from checkpoint `c`, cuts
    /// the epochs after `c` exactly as before (see [`crate::epoch_log`]), so the sink receives
    /// the same records for each of them (in any order) and can skip those it finds already
    /// written. The engine promises that when [`Sink::epoch_done`]`(e)` is called, every
    /// source instance has logged `e` durably. Needs checkpoints, with a store that keeps
    /// logs ([`crate::CheckpointStore::log_dir`]). Default: `false`.
    fn replays(&self) -> bool {
        false
    }
    /// Checkpoint `id` is complete: every state up to it is durable (a sink that writes only
    /// what a complete checkpoint covers writes it now). Ids increase; the job's final
    /// checkpoint ([`crate::recovery::FINAL`]) comes just before [`Sink::close`].
    fn checkpoint_committed(&mut self, id: u64) -> Result<()> {
        let _ = id;
        Ok(())
    }
}

/// The state type a sink without state records in a checkpoint.
const STATELESS: &str = "runnel.sink.stateless";

pub(crate) fn build<'s, T: crate::Data, S: Sink<T>>(
    shared: &Rc<Shared>,
    name: &str,
    data: TStream<'s, Event<T>>,
    mut sink: S,
) {
    let scope = data.scope();
    let routing = sink.routing();
    let ctx = SinkContext {
        name: name.to_string(),
        worker: scope.index(),
        workers: scope.peers(),
        metrics: shared.metrics.clone(),
        checkpoints: shared.recovery.is_some(),
    };
    let done = shared.register_sink();
    if sink.replays() {
        shared.replay.set(true);
        let logs = shared.recovery.as_ref().map(|r| r.borrow().log_dir());
        if let Some(None) = logs {
            shared.control.fail(wrap(
                name,
                Error::Runtime(
                    "this sink needs the sources' epoch log, and the checkpoint store keeps no \
                     logs (use a local or shared folder)"
                        .into(),
                ),
            ));
        }
    }
    let kind = std::any::type_name::<S>();
    let mut last_checkpoint = 0;
    let recovery = shared.clone();
    if let Some(r) = &shared.recovery {
        let mut r = r.borrow_mut();
        r.register();
        last_checkpoint = r.resumed_epoch();
        // A sink that kept no state restores nothing, whatever it is now.
        let restored = r
            .restored_state(name, kind)
            .or_else(|e| match r.restored_state(name, STATELESS) {
                Ok(_) => Ok(None),
                Err(_) => Err(e),
            })
            .and_then(|state| match state {
                Some(bytes) => sink.restore(&bytes),
                None => Ok(()),
            });
        if let Err(e) = restored {
            shared.control.fail(wrap(name, e));
        }
    }
    let active = routing == Routing::PerWorker || ctx.worker == 0;
    let control = shared.control.clone();
    let metrics = shared.metrics.clone();
    let out_counter = metrics.counter(&format!("{name}.records_out"));
    let name = name.to_string();
    let opname = name.clone();
    let mut state = SinkState::Unopened;
    let mut last_done: Option<u64> = None;
    let mut last_notified = last_checkpoint;
    // The final checkpoint: handed in, and since when the sink waits for it.
    let mut final_handed = false;
    let mut final_since: Option<Instant> = None;
    // Benchmarks: latency from each record's event time to its write, merged into the run's
    // metrics at every epoch end.
    let mut latency = metrics
        .measures_latency()
        .then(crate::metrics::latency_histogram);
    let ahead = metrics.counter("runnel.latency.ahead");
    let logic = move |input: &mut Batches<'_, T>, frontier: Option<u64>| -> bool {
        if state == SinkState::Closed {
            // Drain (and drop) anything that still arrives after a failure.
            input(&mut |_, _| {});
            return false;
        }
        if state == SinkState::Unopened && active {
            if let Err(e) = sink.open(&ctx) {
                control.fail(wrap(&name, e));
                state = SinkState::Closed;
                return false;
            }
            state = SinkState::Open;
        }
        let mut failed = None;
        input(&mut |t, batch| {
            if failed.is_some() {
                batch.clear();
                return;
            }
            let n = batch.len() as u64;
            if let Some(h) = latency.as_mut() {
                let early =
                    record_latencies(h, crate::metrics::now_ms(), batch.iter().map(|e| e.ts));
                ahead.add(early);
            }
            if let Err(e) = sink.write(Epoch(t), batch) {
                failed = Some(e);
            } else {
                metrics.records_out.add(n);
                out_counter.add(n);
            }
        });
        if let Some(e) = failed {
            control.fail(wrap(&name, e));
            sink.abort();
            state = SinkState::Closed;
            return false;
        }
        // Tell the sink about checkpoints that completed.
        if let Some(r) = &recovery.recovery {
            let committed = r.borrow_mut().committed();
            if committed > last_notified && active && state == SinkState::Open {
                if let Err(e) = sink.checkpoint_committed(committed) {
                    control.fail(wrap(&name, e));
                    sink.abort();
                    state = SinkState::Closed;
                    return false;
                }
            }
            last_notified = last_notified.max(committed);
        }
        match frontier {
            Some(f) => {
                if f > 0 && last_done != Some(f - 1) {
                    if active {
                        if let Err(e) = sink.epoch_done(Epoch(f - 1)) {
                            control.fail(wrap(&name, e));
                            sink.abort();
                            state = SinkState::Closed;
                            return false;
                        }
                    }
                    last_done = Some(f - 1);
                    done.set(f);
                    if let Some(h) = latency.as_mut() {
                        metrics.add_latency(h);
                        h.reset();
                    }
                }
                // Checkpoints: the state with every record of the epochs before `f` (asked
                // again on later activations while the sink is not ready).
                if let Some(r) = f.checked_sub(1).and(recovery.recovery.as_ref()) {
                    let mut r = r.borrow_mut();
                    let due = r.due(last_checkpoint, f - 1);
                    for id in due {
                        if active {
                            match sink.ready_for_checkpoint(Epoch(id)) {
                                Ok(true) => {}
                                Ok(false) => return true,
                                Err(e) => {
                                    control.fail(wrap(&name, e));
                                    sink.abort();
                                    state = SinkState::Closed;
                                    return false;
                                }
                            }
                        }
                        let snap = if active {
                            sink.snapshot(Epoch(id))
                        } else {
                            Ok(None)
                        };
                        let handed = snap.and_then(|s| match s {
                            Some(bytes) => r.contribute(id, &name, kind, bytes),
                            None => r.contribute(id, &name, STATELESS, Vec::new()),
                        });
                        if let Err(e) = handed {
                            control.fail(wrap(&name, e));
                            sink.abort();
                            state = SinkState::Closed;
                            return false;
                        }
                        last_checkpoint = id;
                    }
                }
            }
            None => {
                if let Some(h) = latency.as_mut() {
                    metrics.add_latency(h);
                    h.reset();
                }
                // A run stopped (Ctrl-C) with checkpoints on is suspended, not finished: it
                // resumes from its last checkpoint, so the sink drops what came after it.
                let suspended = control.stopping() && recovery.recovery.is_some();
                // The input ended: the job's final checkpoint, then the last writes. Waiting
                // for it must not block the worker (its other sinks hand in their state too).
                if let Some(r) = &recovery.recovery {
                    if !control.aborted() && !suspended {
                        let finished = (|| -> Result<bool> {
                            let mut r = r.borrow_mut();
                            let started = *final_since.get_or_insert_with(Instant::now);
                            if !final_handed {
                                let snap = if active {
                                    sink.snapshot(Epoch(FINAL))?
                                } else {
                                    None
                                };
                                match snap {
                                    Some(bytes) => r.contribute(FINAL, &name, kind, bytes)?,
                                    None => r.contribute(FINAL, &name, STATELESS, Vec::new())?,
                                }
                                final_handed = true;
                            }
                            r.poll()?;
                            if r.committed() < FINAL {
                                if started.elapsed() > Duration::from_secs(120) {
                                    return Err(Error::Runtime(
                                        "the final checkpoint was not complete after 120 s (a \
                                         worker did not hand in its state)"
                                            .into(),
                                    ));
                                }
                                return Ok(false);
                            }
                            if active && last_notified < FINAL {
                                sink.checkpoint_committed(FINAL)?;
                            }
                            last_notified = FINAL;
                            Ok(true)
                        })();
                        match finished {
                            Ok(true) => {}
                            Ok(false) => return true,
                            Err(e) => {
                                control.fail(wrap(&name, e));
                                sink.abort();
                                state = SinkState::Closed;
                                return false;
                            }
                        }
                    }
                }
                if active {
                    if control.aborted() || suspended {
                        sink.abort();
                    } else if let Err(e) = sink.close() {
                        control.fail(wrap(&name, e));
                    }
                }
                if !control.aborted() {
                    done.set(u64::MAX);
                }
                state = SinkState::Closed;
            }
        }
        false
    };
    match routing {
        Routing::Single => attach(data, Exchange::new(|_e: &Event<T>| 0), &opname, logic),
        Routing::PerWorker => attach(data, Pipeline, &opname, logic),
    }
}

/// Attaches the sink logic to `data` through `pact`. The logic returns whether it must run
/// again without new input (waiting for the final checkpoint): the operator then stays
/// scheduled, and the dataflow alive, until it is done.
fn attach<'s, T: crate::Data, P>(
    data: TStream<'s, Event<T>>,
    pact: P,
    name: &str,
    mut logic: impl FnMut(&mut Batches<'_, T>, Option<u64>) -> bool + 'static,
) where
    P: ParallelizationContract<u64, Vec<Event<T>>>,
{
    let scope = data.scope();
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let mut input = builder.new_input(data, pact);
    let activator = scope.activator_for(builder.operator_info().address.clone());
    builder.build_reschedule(move |_caps| {
        move |frontiers| {
            let f = frontiers[0].frontier().iter().next().copied();
            let again = logic(
                &mut |each: &mut dyn FnMut(u64, &mut Vec<Event<T>>)| {
                    input.for_each(|cap, batch| {
                        let t = *cap.least().expect("totally ordered");
                        each(t, batch)
                    })
                },
                f,
            );
            if again {
                activator.activate_after(Duration::from_millis(2));
            }
            again
        }
    });
}

#[derive(PartialEq, Eq)]
enum SinkState {
    Unopened,
    Open,
    Closed,
}

fn wrap(name: &str, e: Error) -> Error {
    match e {
        Error::Sink { .. } | Error::Io { .. } => e,
        other => Error::Sink {
            sink: name.to_string(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The histogram as a plain list of (bucket value, count), with its extremes.
    fn contents(h: &hdrhistogram::Histogram<u64>) -> (Vec<(u64, u64)>, u64, u64, u64) {
        let buckets = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        (buckets, h.len(), h.min(), h.max())
    }

    proptest! {
        /// Recording runs gives the histogram (and the count ahead of now) that recording every
        /// latency one by one gives.
        #[test]
        fn runs_record_what_each_value_would(
            now in 0i64..4_000_000_000_000,
            parts in prop::collection::vec(
                (prop_oneof![
                    Just(0i64),
                    0i64..100,
                    0i64..100_000,
                    -50i64..0,
                    0i64..4_000_000_000_000,
                    Just(i64::MIN / 2),
                    // No event time: runs from i64::MIN.
                    Just(i64::MAX),
                ], 0u16..300, 0i64..3),
                0..12,
            ),
        ) {
            // Runs of event times walking forwards from a lag behind `now`.
            let mut times = Vec::new();
            for (lag, len, step) in parts {
                let mut t = if lag == i64::MAX { i64::MIN } else { now.saturating_sub(lag) };
                for _ in 0..len {
                    times.push(t);
                    t = t.saturating_add(step);
                }
            }
            let mut by_runs = crate::metrics::latency_histogram();
            let early = record_latencies(&mut by_runs, now, times.iter().copied());
            let mut one_by_one = crate::metrics::latency_histogram();
            let mut ahead = 0;
            for &t in &times {
                if t == i64::MIN {
                    continue;
                }
                if t > now {
                    ahead += 1;
                } else {
                    let d = (now - t) as u64;
                    one_by_one.saturating_record(d.min(one_by_one.high()));
                }
            }
            prop_assert_eq!(early, ahead);
            prop_assert_eq!(contents(&by_runs), contents(&one_by_one));
        }
    }
}
