//! The epoch-driven stateful operator that every window, join and combiner is built on.
//!
//! # Contract
//! The engine promises an [`EpochLogic`]:
//! * every record of epoch `e` is passed to [`EpochLogic::on_record`] with the watermark that held
//!   when epoch `e` began (the combined watermark after every epoch before `e`);
//! * after all records of epoch `e`, [`EpochLogic::on_epoch_end`] is called once with the
//!   watermark advanced by the sources' reports for epoch `e`;
//! * epochs are finished in increasing order; records of one epoch arrive in no particular order.
//!
//! The logic promises back that what it emits for an epoch depends only on the multiset of that
//! epoch's records and on its state (its aggregates commute), so that results do not depend on
//! worker count, scheduling, or arrival order within an epoch.
//!
//! Records of the epoch that is next to finish are applied as they arrive (no buffering); records
//! of later epochs, which can arrive early from faster workers, wait until their turn.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{DistributorPact, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;

use crate::batch::{Batcher, KeyDistributor};
use crate::error::Result;
use crate::event::{Data, Event};
use crate::flow::{Shared, TStream};
use crate::metrics::{Counter, Metrics};
use crate::recovery::{decode, encode_with_body, read_changes, Chain, Segment, Stored, FINAL};
use crate::time::Watermark;
use crate::watermark::{TrackerState, WatermarkTracker, WmReport};

/// Where a stateful operator's logic puts its results and its late records.
pub struct Emitter<I, O> {
    out: Batcher<Event<O>>,
    late: Batcher<Event<I>>,
    keep_late: bool,
    late_counter: Arc<Counter>,
    metrics: Arc<Metrics>,
}

impl<I, O> Emitter<I, O> {
    pub(crate) fn new(keep_late: bool, late_counter: Arc<Counter>, metrics: Arc<Metrics>) -> Self {
        Emitter {
            out: Batcher::default(),
            late: Batcher::default(),
            keep_late,
            late_counter,
            metrics,
        }
    }

    /// Every result emitted so far (for [`crate::testing::run_epoch`]).
    pub(crate) fn take_out(&mut self) -> Vec<Event<O>> {
        self.out.take_all()
    }

    /// Emits a result.
    #[inline]
    pub fn emit(&mut self, e: Event<O>) {
        self.out.push(e);
    }

    /// Declares `records` input records late: counted, and sent to the late output if the job
    /// asked for one. `e` is one of them (or a stand-in when a combiner already merged them).
    pub fn late(&mut self, e: Event<I>, records: u64) {
        self.late_counter.add(records);
        self.metrics.late.add(records);
        if self.keep_late {
            self.late.push(e);
        }
    }

    /// Counts `records` late input records that have no record left to show (merged by a combiner).
    pub fn late_count(&mut self, records: u64) {
        self.late_counter.add(records);
        self.metrics.late.add(records);
    }

    /// Whether late records are kept for a late output (so the logic should keep them whole).
    pub fn keeps_late(&self) -> bool {
        self.keep_late
    }
}

/// The logic of a keyed stateful operator (see the module's contract).
pub trait EpochLogic<I, O>: 'static {
    /// A record of the current epoch; `wm` is the watermark that held when the epoch began.
    fn on_record(&mut self, record: Event<I>, wm: Watermark, out: &mut Emitter<I, O>);
    /// The end of an epoch; `wm` is the watermark after it (it may equal the previous one).
    fn on_epoch_end(&mut self, wm: Watermark, out: &mut Emitter<I, O>);
    /// The whole state, for a checkpoint (see [`crate::recovery`]); [`crate::recovery::encode`]
    /// serializes any serde value.
    fn snapshot(&self) -> Result<Vec<u8>>;
    /// [`EpochLogic::snapshot`] written at the end of `out`. The default copies the snapshot;
    /// a logic with a large state writes it in place ([`crate::recovery::encode_into`]), so that
    /// a checkpoint does not hold it twice.
    fn snapshot_into(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.snapshot()?);
        Ok(())
    }
    /// [`EpochLogic::snapshot`] written into `out`, for a state large enough to go into a part
    /// of its own (see [`crate::CheckpointOptions::stream_above`]). The default writes the
    /// snapshot; a logic with a large state encodes it straight into `out`
    /// (`bincode::serialize_into`), with no copy of it in memory.
    fn snapshot_to(&self, out: &mut dyn std::io::Write) -> Result<()> {
        out.write_all(&self.snapshot()?)
            .map_err(|e| crate::Error::Runtime(format!("cannot write state: {e}")))
    }
    /// Replaces the state with one [`EpochLogic::snapshot`] wrote (restoring a checkpoint).
    fn restore(&mut self, state: &[u8]) -> Result<()>;
    /// Whether the logic keeps track of what changes in its state, for incremental checkpoints
    /// (see [`crate::CheckpointOptions::incremental`]): then a large state is written whole
    /// once and then only what changed, with [`EpochLogic::snapshot_changes_into`]. The
    /// default: no, every checkpoint writes it whole.
    ///
    /// # Contract
    /// The engine calls [`EpochLogic::mark_snapshot`] right after the state went into a
    /// checkpoint whole ([`EpochLogic::snapshot_to`]) or was restored from one (whole, then
    /// changes); before the first such call the logic need not track anything (so a run
    /// without checkpoints pays nothing). [`EpochLogic::snapshot_changes_into`] writes what
    /// changed since the last mark or the last changes written, then starts tracking anew.
    /// Between two checkpoints the engine takes the changes at the end of an epoch every
    /// [`crate::CheckpointOptions::changes_every`] and writes them to disk in the
    /// background, so that a checkpoint has only those since the last take left to write:
    /// taking them must cost what changed, not the state's size. On restore,
    /// [`EpochLogic::restore`] gets the whole state, then [`EpochLogic::restore_changes`]
    /// each changes written after it, in order; the logic promises that the state it ends
    /// with equals the one it had when the last changes were written. Changes should hold no
    /// more than the part of the state they describe, or a chain costs more than whole states
    /// (the engine writes the state whole again once the changes add up to twice its size).
    fn tracks_changes(&self) -> bool {
        false
    }
    /// The state just went into a checkpoint whole, or was restored: track changes from here.
    fn mark_snapshot(&mut self) {}
    /// A cheap estimate of the state's size (any unit proportional to its encoded size, such
    /// as the bytes it takes in memory), for incremental checkpoints: with it, a state that
    /// grows keeps its chain of changes, and one whose keys change over and over (so that its
    /// changes repeat each other) is written whole again once its chain is twice its size.
    /// `None` (the default): written whole again once its changes add up to twice its last
    /// whole part (a state that grows is then written whole each time it has tripled).
    fn state_size_hint(&self) -> Option<u64> {
        None
    }
    /// What changed since the last mark or changes written, written at the end of `out` (with
    /// `bincode::serialize_into(out, ..)`, or field by field with [`crate::wire`] where the
    /// encoding's cost matters); tracks anew.
    fn snapshot_changes_into(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let _ = out;
        Err(crate::Error::Runtime(
            "this operator does not track the changes of its state".into(),
        ))
    }
    /// Applies changes [`EpochLogic::snapshot_changes_into`] wrote to the state restored so far.
    fn restore_changes(&mut self, changes: &[u8]) -> Result<()> {
        let _ = changes;
        Err(crate::Error::Runtime(
            "this operator does not track the changes of its state".into(),
        ))
    }
    /// The state's type, checked when a checkpoint is restored: a logic whose snapshot another
    /// can read must return the same name. Name the types that are serialized (keys,
    /// accumulators), never a closure's type, which changes whenever the job's code moves.
    /// The default, the logic's own type name, is safe but strict.
    fn state_kind(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }
}

/// The logic of a local per-epoch operator (a combiner): no exchange, no watermark.
pub trait LocalEpochLogic<I, O>: 'static {
    /// A record of the current epoch.
    fn on_record(&mut self, record: Event<I>, out: &mut Batcher<Event<O>>);
    /// The end of the current epoch: emit what the epoch produced.
    fn on_epoch_end(&mut self, out: &mut Batcher<Event<O>>);
}

fn least(f: &timely::progress::frontier::MutableAntichain<u64>) -> u64 {
    f.frontier().iter().next().copied().unwrap_or(u64::MAX)
}

/// Builds the keyed operator: data exchanged by `hash`, watermark reports broadcast.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_keyed<'s, I: Data, O: Data, L: EpochLogic<I, O>>(
    shared: &Rc<Shared>,
    data: TStream<'s, Event<I>>,
    wm: TStream<'s, WmReport>,
    expected_reporters: usize,
    name: &str,
    hash: impl Fn(&Event<I>) -> u64 + 'static,
    mut logic: L,
    keep_late: bool,
) -> (TStream<'s, Event<O>>, TStream<'s, Event<I>>) {
    let scope = data.scope();
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let pact = DistributorPact(move |peers| KeyDistributor::new(hash, peers));
    let mut in_data = builder.new_input(data, pact);
    let mut in_wm = builder.new_input(wm.broadcast(), Pipeline);
    let (out_main, main) = builder.new_output();
    let (out_late, late) = builder.new_output();
    let mut out_main: OutputBuilder<u64, CapacityContainerBuilder<Vec<Event<O>>>> =
        OutputBuilder::from(out_main);
    let mut out_late: OutputBuilder<u64, CapacityContainerBuilder<Vec<Event<I>>>> =
        OutputBuilder::from(out_late);
    let metrics = shared.metrics.clone();
    let late_counter = metrics.counter(&format!("{name}.late"));
    let kind = logic.state_kind();
    let mut tracker = WatermarkTracker::new(expected_reporters);
    // Checkpoints: this operator's state as of the end of each checkpoint epoch.
    let mut last_checkpoint = 0;
    let mut restore_error = None;
    // This operator's index among the worker's stateful ones, its last state's size, and
    // the chain of parts its state is in (when it is large).
    let mut index = 0;
    let mut last_size = 0;
    let mut chain = Chain::default();
    // The part of changes being written, and the buffers the last one gave back.
    let mut segment: (Option<Segment>, Vec<Vec<u8>>) = (None, Vec::new());
    let mut flushed = 0;
    if let Some(r) = &shared.recovery {
        let mut r = r.borrow_mut();
        index = r.register_stateful();
        last_checkpoint = r.resumed_epoch();
        flushed = last_checkpoint;
        let read_tracker = |rest: &mut &[u8]| -> Result<TrackerState> {
            bincode::deserialize_from(rest)
                .map_err(|e| crate::Error::Runtime(format!("cannot read state: {e}")))
        };
        let restored = r
            .restored_stateful(name, &kind)
            .and_then(|state| match state {
                None => Ok(()),
                Some(Stored::Inline(bytes)) => {
                    last_size = bytes.len();
                    let (t, l): (TrackerState, serde_bytes::ByteBuf) = decode(&bytes)?;
                    tracker.restore(t);
                    logic.restore(&l)
                }
                Some(Stored::Streamed {
                    first,
                    changes,
                    chain: restored,
                }) => {
                    let mut rest: &[u8] = &first;
                    tracker.restore(read_tracker(&mut rest)?);
                    logic.restore(rest)?;
                    drop(first);
                    // Each part of changes holds the changes of the epochs up to its
                    // checkpoint, in order, and the watermark state as of that checkpoint.
                    for part in &changes {
                        let bytes = r.read_restored_part(part)?;
                        let (records, mut t) = read_changes(part, &bytes)?;
                        for record in records {
                            logic.restore_changes(record)?;
                        }
                        tracker.restore(read_tracker(&mut t)?);
                    }
                    if r.incremental() && logic.tracks_changes() {
                        logic.mark_snapshot();
                    }
                    last_size = restored.size() as usize;
                    chain = restored;
                    chain.calibrate(logic.state_size_hint());
                    Ok(())
                }
            });
        if let Err(e) = restored {
            restore_error = Some(e);
        }
    }
    let shared = shared.clone();
    let name = name.to_string();

    builder.build(move |initial| {
        drop(initial);
        let mut processed: u64 = 0;
        // Batches of epochs not yet due, kept whole (appending them to one vector copied
        // every record and grew a large allocation per epoch).
        let mut stash: BTreeMap<u64, Vec<Vec<Event<I>>>> = BTreeMap::new();
        let mut wm_stash: BTreeMap<u64, Vec<WmReport>> = BTreeMap::new();
        let mut caps: BTreeMap<u64, (Capability<u64>, Capability<u64>)> = BTreeMap::new();
        let mut em: Emitter<I, O> = Emitter::new(keep_late, late_counter, metrics.clone());
        let control = shared.control.clone();
        if let Some(e) = restore_error.take() {
            control.fail(e);
        }
        // Hands in the state for every checkpoint epoch in `(last, through]`; the state must
        // be exactly that after epoch `through`. Between checkpoints, a state that goes in as
        // changes writes them at the end of each epoch into `segment`, the part of changes
        // the next checkpoint ends (`flushed`: the last epoch whose changes went in).
        #[allow(clippy::too_many_arguments)]
        let checkpoint = move |through: u64,
                               last: &mut u64,
                               last_size: &mut usize,
                               chain: &mut Chain,
                               segment: &mut (Option<Segment>, Vec<Vec<u8>>),
                               flushed: &mut u64,
                               logic: &mut L,
                               tracker: &WatermarkTracker|
              -> Result<()> {
            let Some(r) = &shared.recovery else {
                return Ok(());
            };
            let mut r = r.borrow_mut();
            let due = if through == FINAL {
                if *last == FINAL {
                    Vec::new()
                } else {
                    vec![FINAL]
                }
            } else {
                r.due(*last, through)
            };
            let incremental = r.incremental() && logic.tracks_changes();
            if due.is_empty() {
                // Not a checkpoint: every `changes_epochs` epochs, the changes of the epochs
                // since the last take go to disk now, in the background, if the next
                // checkpoint is to take changes.
                if incremental && through >= *flushed + r.changes_epochs() && through != FINAL {
                    *flushed = through;
                    let (segment, spare) = segment;
                    if segment.is_none() && chain.takes_changes(logic.state_size_hint()) {
                        let next = r.next_checkpoint(*last);
                        *segment = Some(r.start_segment(index, next, spare)?);
                    }
                    if let Some(s) = segment {
                        s.append(&mut |out| logic.snapshot_changes_into(out))?;
                    }
                }
                return Ok(());
            }
            if incremental || r.streams(*last_size) {
                // A large state, or one that can go in as changes (which may grow large
                // before the next checkpoint: its chain starts at once): written from the
                // state itself into a part of its own, once per checkpoint due (more than one
                // only when the interval is a few epochs): whole, or what changed since the
                // chain's last part (most of it written already, take by take, into the
                // segment this checkpoint ends). The final checkpoint (the input has ended;
                // it is read only if the run fails during its last writes) takes changes
                // whenever the chain has room, whatever their size.
                let state = tracker.state();
                let (segment, spare) = segment;
                for &id in &due {
                    if id <= r.resumed_epoch() {
                        continue;
                    }
                    let hint = logic.state_size_hint();
                    let changes = incremental
                        && (segment.is_some()
                            || chain.takes_changes(hint)
                            || (id == FINAL && chain.has_room()));
                    let written = if changes {
                        let mut s = match segment.take() {
                            Some(s) => s,
                            None => r.start_segment(index, id, spare)?,
                        };
                        s.append(&mut |out| logic.snapshot_changes_into(out))?;
                        let t = crate::recovery::encode(&state)?;
                        r.contribute_changes(id, &name, &kind, chain, s, &t, spare)?
                    } else {
                        r.contribute_streamed(id, &name, &kind, index, chain, &mut |out| {
                            bincode::serialize_into(&mut *out, &state).map_err(|e| {
                                crate::Error::Runtime(format!("cannot write state: {e}"))
                            })?;
                            logic.snapshot_to(out)
                        })?
                    };
                    if written.is_some() {
                        if incremental && !changes {
                            logic.mark_snapshot();
                            chain.calibrate(hint);
                        }
                        *last_size = chain.size() as usize;
                    }
                }
                *last = *due.last().expect("not empty");
                *flushed = (*flushed).max(*last);
                return Ok(());
            }
            // A state that goes inline starts any later chain afresh.
            *chain = Chain::default();
            // The watermark state, then the operator's bytes as a byte string written in place
            // (what `encode(&(tracker.state(), Vec<u8>))` makes, without copying the bytes).
            let bytes = encode_with_body(&tracker.state(), |out| logic.snapshot_into(out))?;
            *last_size = bytes.len();
            let (&newest, older) = due.split_last().expect("not empty");
            for &id in older {
                r.contribute(id, &name, &kind, bytes.clone())?;
            }
            r.contribute(newest, &name, &kind, bytes)?;
            *last = newest;
            Ok(())
        };

        move |frontiers| {
            let mut main = out_main.activate();
            let mut late = out_late.activate();
            let flush = |em: &mut Emitter<I, O>,
                         caps: &(Capability<u64>, Capability<u64>),
                         main: &mut timely::dataflow::operators::generic::OutputBuilderSession<
                u64,
                CapacityContainerBuilder<Vec<Event<O>>>,
            >,
                         late: &mut timely::dataflow::operators::generic::OutputBuilderSession<
                u64,
                CapacityContainerBuilder<Vec<Event<I>>>,
            >| {
                if !em.out.is_empty() {
                    let mut session = main.session(&caps.0);
                    em.out.ship(|b| session.give_container(b));
                }
                if !em.late.is_empty() {
                    let mut session = late.session(&caps.1);
                    em.late.ship(|b| session.give_container(b));
                }
            };

            in_data.for_each(|cap, batch| {
                let t = *cap.least().expect("a totally ordered stamp");
                let c = caps
                    .entry(t)
                    .or_insert_with(|| (cap.delayed(&t, 0), cap.delayed(&t, 1)));
                if t == processed {
                    let w = tracker.current();
                    for r in batch.drain(..) {
                        logic.on_record(r, w, &mut em);
                    }
                    flush(&mut em, c, &mut main, &mut late);
                } else {
                    stash.entry(t).or_default().push(std::mem::take(batch));
                }
            });
            in_wm.for_each(|cap, batch| {
                let t = *cap.least().expect("a totally ordered stamp");
                caps.entry(t)
                    .or_insert_with(|| (cap.delayed(&t, 0), cap.delayed(&t, 1)));
                wm_stash.entry(t).or_default().append(batch);
            });

            let f = least(&frontiers[0]).min(least(&frontiers[1]));
            while let Some((&e, _)) = caps.first_key_value() {
                if e >= f {
                    break;
                }
                // Every epoch before `e` is done and nothing of `e` applied yet (records of
                // `e` are applied on arrival only once the frontier reached `e`, after the
                // checkpoints below it were taken at the end of an earlier activation).
                if e > 0 {
                    if let Err(err) = checkpoint(
                        e - 1,
                        &mut last_checkpoint,
                        &mut last_size,
                        &mut chain,
                        &mut segment,
                        &mut flushed,
                        &mut logic,
                        &tracker,
                    ) {
                        control.fail(err);
                    }
                }
                let c = caps.remove(&e).expect("present");
                if let Some(batches) = stash.remove(&e) {
                    let w = tracker.current();
                    for r in batches.into_iter().flatten() {
                        logic.on_record(r, w, &mut em);
                    }
                }
                if let Some(reports) = wm_stash.remove(&e) {
                    for r in &reports {
                        tracker.report(r);
                    }
                }
                let w = tracker.advance();
                metrics.observe_watermark(w);
                logic.on_epoch_end(w, &mut em);
                flush(&mut em, &c, &mut main, &mut late);
            }
            // Every epoch before the frontier is done; an empty frontier: the input ended, and
            // the state is final.
            let through = if f == u64::MAX {
                FINAL
            } else {
                f.saturating_sub(1)
            };
            if f > 0 {
                if let Err(err) = checkpoint(
                    through,
                    &mut last_checkpoint,
                    &mut last_size,
                    &mut chain,
                    &mut segment,
                    &mut flushed,
                    &mut logic,
                    &tracker,
                ) {
                    control.fail(err);
                }
            }
            processed = f;
        }
    });
    (main, late)
}

/// Builds a local per-epoch operator (pipeline, no watermark).
pub(crate) fn build_local<'s, I: Data, O: Data, L: LocalEpochLogic<I, O>>(
    data: TStream<'s, Event<I>>,
    name: &str,
    mut logic: L,
) -> TStream<'s, Event<O>> {
    let scope = data.scope();
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let mut input = builder.new_input(data, Pipeline);
    let (out, stream) = builder.new_output();
    let mut out: OutputBuilder<u64, CapacityContainerBuilder<Vec<Event<O>>>> =
        OutputBuilder::from(out);
    builder.build(move |initial| {
        drop(initial);
        let mut processed: u64 = 0;
        // Batches of epochs not yet due, kept whole (appending them to one vector copied
        // every record and grew a large allocation per epoch).
        let mut stash: BTreeMap<u64, Vec<Vec<Event<I>>>> = BTreeMap::new();
        let mut caps: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        let mut buf: Batcher<Event<O>> = Batcher::default();
        move |frontiers| {
            let mut output = out.activate();
            input.for_each(|cap, batch| {
                let t = *cap.least().expect("a totally ordered stamp");
                let c = caps.entry(t).or_insert_with(|| cap.delayed(&t, 0));
                if t == processed {
                    for r in batch.drain(..) {
                        logic.on_record(r, &mut buf);
                    }
                    if !buf.is_empty() {
                        let mut session = output.session(c);
                        buf.ship(|b| session.give_container(b));
                    }
                } else {
                    stash.entry(t).or_default().push(std::mem::take(batch));
                }
            });
            let f = least(&frontiers[0]);
            while let Some((&e, _)) = caps.first_key_value() {
                if e >= f {
                    break;
                }
                let c = caps.remove(&e).expect("present");
                if let Some(batches) = stash.remove(&e) {
                    for r in batches.into_iter().flatten() {
                        logic.on_record(r, &mut buf);
                    }
                }
                logic.on_epoch_end(&mut buf);
                if !buf.is_empty() {
                    let mut session = output.session(&c);
                    buf.ship(|b| session.give_container(b));
                }
            }
            processed = f;
        }
    });
    stream
}
