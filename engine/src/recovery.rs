//! Taking checkpoints while a job runs, and restoring a job from one.
//!
//! # The protocol
//! Checkpoint epochs are [`FIRST_CHECKPOINT`] and the multiples of `every` epochs (the run's
//! checkpoint interval divided by its epoch interval), so every worker knows them without
//! talking. For checkpoint epoch `c`,
//! every *participant* of a worker (each source instance, stateful operator instance and sink
//! instance) hands in its state as of the end of epoch `c`:
//! * a source when it cuts epoch `c`: for each partition it reads, the offset after the last
//!   record of epoch `c` and its event-time progress;
//! * a stateful operator once its input frontier has passed `c`, before it applies any record of
//!   a later epoch;
//! * a sink once its input frontier has passed `c` (only records of epochs `<= c`).
//!
//! A source whose partitions have all ended hands in its last state once
//! (`Recovery::ended`); it stands as its entry in every later checkpoint of its worker, so
//! that the worker's parts go on being written while the other workers still read.
//!
//! Once every participant of a worker has handed in, the worker writes its part (`w<index>`) to
//! the [`CheckpointStore`]. Global worker 0 commits checkpoint `c` (its manifest) once every
//! worker's part is in the store, then keeps the newest `keep` checkpoints. So a checkpoint is
//! complete only when all state of one epoch is durable, and a crash at any moment leaves the
//! previous complete one usable.
//!
//! # Restore
//! A restored worker reads its own part of the checkpoint. Each participant looks up its entry
//! by operator name: a source resumes its partitions after their offsets, a stateful operator
//! and a sink restore their state. An entry whose state type differs from the operator's (the
//! job changed) is refused with an error naming the operator; an operator with no entry (new
//! in the job) starts empty; entries of operators no longer in the job are ignored with a
//! warning. Every source starts at epoch `c + 1`. The worker count must be the one the
//! checkpoint was taken with (state is spread over workers by key).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointInfo, CheckpointStore, PartInfo};
use crate::error::{Error, Result};
use crate::metrics::{Counter, Metrics};

/// Which checkpoint a run starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restore {
    /// The newest complete checkpoint, if there is one (the default).
    #[default]
    Latest,
    /// None: start over (existing checkpoints are removed).
    Fresh,
    /// This checkpoint id (an error if it is missing or unusable).
    Id(u64),
}

/// A run's checkpoint settings.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    /// Where checkpoints go.
    pub store: Arc<dyn CheckpointStore>,
    /// How often to take one (rounded to whole epochs; at least one epoch).
    pub every: Duration,
    /// How many complete checkpoints to keep.
    pub keep: usize,
    /// Which one to start from.
    pub restore: Restore,
    /// A stateful operator whose last state took more than this many bytes writes its next
    /// states into parts of their own, straight from its state to the store (see
    /// [`STREAM_STATE_ABOVE`]); smaller states travel in the worker's part. With
    /// [`CheckpointOptions::incremental`], an operator that tracks its changes writes into
    /// parts of its own from its first checkpoint on, whatever its size.
    pub stream_above: usize,
    /// Incremental checkpoints (on by default): a state written into parts of its own whose
    /// logic tracks its changes ([`crate::EpochLogic::tracks_changes`]) is written whole once,
    /// then as what changed since the checkpoint before, in a chain of parts that each later
    /// checkpoint links to ([`CheckpointStore::link_part`]), until the chain's parts add up
    /// to twice the state's size (estimated from [`crate::EpochLogic::state_size_hint`]) or
    /// [`MAX_CHAIN`] parts; then whole again. Off: every checkpoint
    /// writes every state whole. Needs a store that links parts.
    pub incremental: bool,
    /// How often, between checkpoints, an operator whose checkpoints are incremental takes
    /// what changed since it last did and hands it to the thread that writes it into the next
    /// checkpoint's part (rounded to whole epochs, at least one; a checkpoint takes the rest).
    /// Less often, a key that changes in several epochs is written once instead of once per
    /// epoch (q19: a fifth fewer bytes and a quarter less of the worker's time at 300 ms
    /// than at every 100 ms epoch), but each take pauses the worker longer and holds more
    /// memory until it is written. See [`CHANGES_EVERY`].
    pub changes_every: Duration,
}

/// The default [`CheckpointOptions::changes_every`]: 300 ms, three epochs of the default
/// 100 ms. Taking q20's changes (appends, nothing to net) every second instead cost its
/// workers 2.5 times as long (larger buffers, new memory each time), so not much longer.
pub const CHANGES_EVERY: Duration = Duration::from_millis(300);

/// The most parts a chain of an incremental state holds (the whole state and its changes)
/// before the state is written whole again.
pub const MAX_CHAIN: usize = 32;

/// The default [`CheckpointOptions::stream_above`]: 16 MiB. A state written into a part of its
/// own costs a file and an fsync of its own, so small states are not; a large one would
/// otherwise be encoded into memory first, a second copy of the state, which on a VM that
/// provides memory on first touch cost more than writing it (4 s per GB).
pub const STREAM_STATE_ABOVE: usize = 16 << 20;

impl CheckpointOptions {
    /// Checkpoints in `store` every `every`, keeping 3, resuming from the latest.
    pub fn new(store: Arc<dyn CheckpointStore>, every: Duration) -> Self {
        CheckpointOptions {
            store,
            every,
            keep: 3,
            restore: Restore::Latest,
            stream_above: STREAM_STATE_ABOVE,
            incremental: true,
            changes_every: CHANGES_EVERY,
        }
    }
}

/// The first checkpoint of a fresh run is taken at the end of this epoch (its second), whatever
/// the interval: a crash soon after the start then resumes from it, and a sink that writes only
/// once a checkpoint is complete ([`crate::Sink::replays`]) starts writing at once.
pub const FIRST_CHECKPOINT: u64 = 1;

/// The id of the checkpoint a job takes when its input has ended (every source finished):
/// after it, only the sinks' last writes remain, so a crash while they happen resumes there.
pub const FINAL: u64 = u64::MAX / 2;

/// The key, in a worker's part, of the entry that names the parts of their own that operators
/// wrote their state into ([`Recovery::contribute_streamed`]): a map from operator name to
/// its [`Chain`]'s parts. It starts with a NUL character, which no operator name is expected to
/// hold.
const STREAMED: &str = "\u{0}streamed";

/// A stateful operator's state in parts of its own: the whole state as of one checkpoint,
/// then, for each later checkpoint, what changed since the one before. Every part is linked
/// into each checkpoint after the one it was written in, so a checkpoint's folder holds the
/// whole chain it needs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chain {
    /// The checkpoint whose folder holds the parts (the last one they went into).
    at: u64,
    /// The whole state's part, then the changes' parts, oldest first.
    parts: Vec<PartInfo>,
    /// Encoded bytes per byte of the logic's size hint ([`crate::EpochLogic::state_size_hint`]),
    /// as measured when the state was last written whole (or restored).
    scale: Option<f64>,
}

impl Chain {
    /// The bytes of the chain's parts: about the state's size (more, when changes overlap).
    pub(crate) fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Whether the chain has a whole state and fewer than [`MAX_CHAIN`] parts.
    pub(crate) fn has_room(&self) -> bool {
        !self.parts.is_empty() && self.parts.len() < MAX_CHAIN
    }

    /// Notes the logic's size hint when the chain was started or restored: from here on the
    /// state's encoded size is estimated from the hint.
    pub(crate) fn calibrate(&mut self, hint: Option<u64>) {
        self.scale = hint
            .filter(|&h| h > 0)
            .map(|h| self.size() as f64 / h as f64);
    }

    /// Whether the next state may go in as changes: the chain has room, and its parts add up
    /// to less than twice the state's encoded size, estimated from the logic's size hint
    /// `hint` (so that a restore reads at most twice the state: a state that grows keeps its
    /// chain, one whose keys change over and over is soon written whole again). Without a
    /// hint, the changes must add up to less than twice the whole state's part.
    pub(crate) fn takes_changes(&self, hint: Option<u64>) -> bool {
        let Some((whole, changes)) = self.parts.split_first().filter(|_| self.has_room()) else {
            return false;
        };
        match (self.scale, hint) {
            (Some(scale), Some(hint)) => (self.size() as f64) < 2.0 * scale * hint as f64,
            _ => changes.iter().map(|p| p.size).sum::<u64>() < 2 * whole.size,
        }
    }
}

/// A stateful operator's state restored from a checkpoint.
pub(crate) enum Stored {
    /// In the worker's part: `encode(&(TrackerState, bytes))`.
    Inline(Vec<u8>),
    /// In parts of their own: the first's bytes (the watermark state's bincode, then the
    /// operator's whole state to the end); the names of the others, each a part of changes
    /// ([`Segment`], [`read_changes`]), to read in order ([`Recovery::read_restored_part`]);
    /// and the chain to go on from.
    Streamed {
        first: Vec<u8>,
        changes: Vec<String>,
        chain: Chain,
    },
}

/// One operator's state in a worker's part.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The state's type (a Rust type name), checked on restore.
    pub(crate) kind: String,
    /// The state: one byte string, written with a copy (the same bincode as a `Vec<u8>`
    /// written element by element, which took a quarter of a large checkpoint's time).
    #[serde(with = "serde_bytes")]
    pub(crate) bytes: Vec<u8>,
}

/// A worker's part of a checkpoint: operator name -> state.
type Part = BTreeMap<String, Entry>;

/// What one worker knows about checkpoints (shared by its operators through the flow).
pub(crate) struct Recovery {
    store: Arc<dyn CheckpointStore>,
    every_epochs: u64,
    /// See [`CheckpointOptions::changes_every`], in epochs.
    changes_epochs: u64,
    keep: usize,
    job: String,
    worker: usize,
    workers: usize,
    participants: usize,
    /// Checkpoints being assembled on this worker.
    pending: BTreeMap<u64, Part>,
    /// For each of them, the operators whose state went into parts of their own, and those.
    streamed: BTreeMap<u64, BTreeMap<String, Vec<PartInfo>>>,
    /// Stateful operators registered (each numbers the parts of its own by its index).
    stateful: usize,
    /// See [`CheckpointOptions::stream_above`].
    stream_above: usize,
    /// See [`CheckpointOptions::incremental`] (and whether the store links parts).
    incremental: bool,
    /// The last state of participants that have ended (a source whose partitions are all
    /// read), with the epoch it ended in: their entry in every checkpoint from that epoch on,
    /// so that the worker's parts go on being written while other workers run.
    ended: BTreeMap<String, (u64, Entry)>,
    /// Worker 0: checkpoints whose own part is written, waiting for the other workers'.
    awaiting: BTreeSet<u64>,
    /// The checkpoint this worker was restored from, and its part.
    restored: Option<(u64, Part)>,
    /// Operator names that looked up their state (the rest are reported as unused).
    claimed: BTreeSet<String>,
    /// The newest checkpoint known to be complete, and when the store was last asked.
    committed: u64,
    last_asked: Option<std::time::Instant>,
    /// When this worker handed in the first state of each pending checkpoint.
    started: BTreeMap<u64, std::time::Instant>,
    /// Worker 0's counters of its commits ([`Recovery::count_in`]).
    counters: Option<CommitCounters>,
    /// Worker 0: the parts of the newest checkpoint committed or restored from, other than
    /// the workers' own, by name with their size and CRC: a part of the next commit found here
    /// was linked, not written again (it does not count in `checkpoint_bytes`).
    carried: BTreeMap<String, (u64, u32)>,
    /// Worker 0: how many workers its process has (`0..local` of them; the store handle it
    /// commits with knows what they wrote). The others' parts it learns from their own parts.
    local: usize,
    /// Encodes and writes this worker's parts off the worker's thread.
    writer: PartWriter,
}

/// The run's counters of committed checkpoints (worker 0 commits; see [`Recovery::count_in`]).
struct CommitCounters {
    /// Checkpoints committed.
    count: Arc<Counter>,
    /// The bytes each commit added: its parts less those linked from the checkpoint before.
    written: Arc<Counter>,
    /// The whole size of each committed checkpoint, linked parts included.
    full: Arc<Counter>,
    /// Milliseconds from the first state handed in to the commit.
    ms: Arc<Counter>,
}

/// Encodes and writes a worker's checkpoint parts on a thread of its own, so that the worker
/// goes on with its epochs while a large part is encoded, checksummed and written to disk (the
/// asynchronous phase of a Flink snapshot). The worker still takes its operators' state itself,
/// at the checkpoint's epoch. A part is handed over only once the one before it is written: a
/// worker whose parts come faster than the disk takes them waits for it, and the writer holds
/// one part (it encodes it into the file as it goes, without a copy of it whole).
/// A failed write fails the run at the worker's next [`Recovery::poll`] or hand-in.
struct PartWriter {
    store: Arc<dyn CheckpointStore>,
    name: String,
    queue: Option<std::sync::mpsc::SyncSender<(u64, Part)>>,
    failed: Arc<std::sync::Mutex<Option<Error>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PartWriter {
    fn new(store: Arc<dyn CheckpointStore>, worker: usize) -> Self {
        PartWriter {
            store,
            name: format!("w{worker}"),
            queue: None,
            failed: Arc::default(),
            thread: None,
        }
    }

    /// Queues part `part` of checkpoint `id` (starting the thread on the first).
    fn write(&mut self, id: u64, part: Part) -> Result<()> {
        self.check()?;
        if self.queue.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Part)>(0);
            let (store, name, failed) =
                (self.store.clone(), self.name.clone(), self.failed.clone());
            let thread = std::thread::Builder::new()
                .name(format!("runnel-checkpoint-{name}"))
                .spawn(move || {
                    for (id, part) in rx {
                        // Encoded straight into the file: the part is not copied whole.
                        let written = store.write_part_with(id, &name, &mut |w| {
                            bincode::serialize_into(w, &part)
                                .map_err(|e| Error::Runtime(format!("cannot write state: {e}")))
                        });
                        if let Err(e) = written {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                })
                .map_err(|e| Error::Runtime(format!("cannot start the checkpoint writer: {e}")))?;
            self.queue = Some(tx);
            self.thread = Some(thread);
        }
        let queue = self.queue.as_ref().expect("started");
        if queue.send((id, part)).is_err() {
            // The thread ended: it failed a write.
            self.finish();
            self.check()?;
            return Err(Error::Runtime(format!(
                "the checkpoint writer of {} stopped",
                self.name
            )));
        }
        Ok(())
    }

    /// The error of a failed write, once.
    fn check(&self) -> Result<()> {
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for the parts queued so far to be written.
    fn finish(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // A part being written is finished before the run ends (the process may exit next).
        self.finish();
    }
}

/// The first bytes of a part of changes ([`Segment`]): what it is, and its format's version.
pub(crate) const CHANGES_MAGIC: &[u8; 8] = b"RNLCHG\x01\n";

/// A record of a part of changes holding a logic's changes
/// ([`crate::EpochLogic::snapshot_changes_into`]).
const RECORD_CHANGES: u8 = 0;
/// The last record of a part of changes: the watermark state as of its checkpoint.
const RECORD_TRACKER: u8 = 1;

/// Buffers a [`Segment`] has: one being filled by the worker, the others on their way to disk.
const SEGMENT_BUFFERS: usize = 3;

/// A part of changes being written while the job runs (as Flink's changelog state backend
/// writes a state's changes continuously, so that a checkpoint has little left to write): the
/// operator's changes are taken at an epoch's end every [`CheckpointOptions::changes_every`]
/// between two checkpoints ([`Segment::append`]), encoded into a buffer on the worker's
/// thread, and written to the store by a thread of the segment's own; the checkpoint only adds
/// the changes since the last take and the watermark state ([`Segment::finish`]) and waits for
/// those to be durable. A few buffers go back and forth (their memory is reused, not provided
/// fresh at every take); the
/// worker waits for one when the disk is slower than its changes.
///
/// The part: [`CHANGES_MAGIC`], then records, each a tag byte, its length (`u64`, little
/// endian) and its bytes: changes ([`RECORD_CHANGES`]), in the order taken, then the
/// watermark state ([`RECORD_TRACKER`]), last ([`read_changes`] reads it back). It is written
/// into the folder of the checkpoint it is meant for (the next one when it starts); if another
/// comes first (the final checkpoint), it is linked into that one.
pub(crate) struct Segment {
    /// The checkpoint whose folder the part is written in, and the part's name.
    id: u64,
    name: String,
    queue: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<Result<PartInfo>>>,
    /// The worker's time spent taking and encoding changes, and waiting for buffers.
    spent: Duration,
    waited: Duration,
    records: u64,
}

impl Segment {
    fn start(
        store: Arc<dyn CheckpointStore>,
        id: u64,
        name: String,
        mut spare: Vec<Vec<u8>>,
    ) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SEGMENT_BUFFERS);
        let (free_tx, free) = std::sync::mpsc::channel::<Vec<u8>>();
        let part = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("runnel-changes-{name}"))
            .spawn(move || {
                store.write_part_with(id, &part, &mut |w| {
                    let io = |e: std::io::Error| {
                        Error::Runtime(format!("cannot write the changes of part {part}: {e}"))
                    };
                    w.write_all(CHANGES_MAGIC).map_err(io)?;
                    for buf in rx.iter() {
                        w.write_all(&buf).map_err(io)?;
                        // The worker may have finished: then the buffer is not needed.
                        let _ = free_tx.send(buf);
                    }
                    Ok(())
                })
            })
            .map_err(|e| Error::Runtime(format!("cannot start the changes writer: {e}")))?;
        Ok(Segment {
            id,
            name,
            queue: Some(tx),
            free,
            spare: {
                spare.resize_with(SEGMENT_BUFFERS, Vec::new);
                spare
            },
            thread: Some(thread),
            spent: Duration::ZERO,
            waited: Duration::ZERO,
            records: 0,
        })
    }

    /// Appends a record of `tag` whose bytes `write` writes, and hands it to the writer.
    fn record(&mut self, tag: u8, write: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        let t = std::time::Instant::now();
        let mut buf = match self.spare.pop() {
            Some(buf) => buf,
            // Every buffer is on its way to disk: wait for one (the writer ended if none comes).
            None => match self.free.recv() {
                Ok(buf) => buf,
                Err(_) => return Err(self.failure()),
            },
        };
        self.waited += t.elapsed();
        buf.clear();
        buf.push(tag);
        buf.extend_from_slice(&[0; 8]);
        write(&mut buf)?;
        let len = (buf.len() - 9) as u64;
        buf[1..9].copy_from_slice(&len.to_le_bytes());
        let queue = self.queue.as_ref().expect("not finished");
        if queue.send(buf).is_err() {
            return Err(self.failure());
        }
        self.spent += t.elapsed();
        self.records += 1;
        Ok(())
    }

    /// Appends the changes `write` writes ([`crate::EpochLogic::snapshot_changes_into`]).
    pub(crate) fn append(
        &mut self,
        write: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.record(RECORD_CHANGES, write)
    }

    /// Ends the part with the watermark state `tracker` (its bincode) and waits for it to be
    /// durable: the checkpoint folder it is in and its info. `spare` gets the buffers back,
    /// for the next segment (their memory is then not provided afresh).
    pub(crate) fn finish(
        mut self,
        tracker: &[u8],
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<(u64, PartInfo)> {
        self.record(RECORD_TRACKER, &mut |w| {
            w.extend_from_slice(tracker);
            Ok(())
        })?;
        self.queue = None;
        let info = self.join()?;
        spare.extend(self.spare.drain(..).chain(self.free.try_iter()));
        tracing::debug!(
            "part {}: {} records of changes, {} bytes; the worker spent {} ms on them, {} ms \
             of it waiting for the disk",
            self.name,
            self.records - 1,
            info.size,
            self.spent.as_millis(),
            self.waited.as_millis()
        );
        Ok((self.id, info))
    }

    /// The writer's result, once it has ended.
    fn join(&mut self) -> Result<PartInfo> {
        self.queue = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(Error::Runtime(format!(
                    "the changes writer of part {} panicked",
                    self.name
                )))
            }),
            None => Err(Error::Runtime(format!(
                "the changes writer of part {} has already ended",
                self.name
            ))),
        }
    }

    /// Why the writer ended early.
    fn failure(&mut self) -> Error {
        match self.join() {
            Err(e) => e,
            Ok(_) => Error::Runtime(format!(
                "the changes writer of part {} ended early",
                self.name
            )),
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // An abandoned segment (the run failed): its part is finished but never committed.
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The records of a part of changes ([`Segment`]), `part` naming it in errors: each changes
/// record, in order, and the watermark state's bytes (the last record).
pub(crate) fn read_changes<'a>(
    part: &str,
    mut bytes: &'a [u8],
) -> Result<(Vec<&'a [u8]>, &'a [u8])> {
    let bad = |what: &str| Error::Runtime(format!("part {part} of changes is unreadable: {what}"));
    let Some(rest) = bytes.strip_prefix(CHANGES_MAGIC.as_slice()) else {
        return Err(bad(
            "it does not start as a part of changes of this version does",
        ));
    };
    bytes = rest;
    let mut changes = Vec::new();
    loop {
        if bytes.len() < 9 {
            return Err(bad("it ends before its watermark state"));
        }
        let tag = bytes[0];
        let len = u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let Some(body) = usize::try_from(len).ok().and_then(|l| bytes[9..].get(..l)) else {
            return Err(bad(&format!(
                "a record of {len} bytes at byte {} goes past its end",
                CHANGES_MAGIC.len() + (bytes.as_ptr() as usize - rest.as_ptr() as usize)
            )));
        };
        bytes = &bytes[9 + body.len()..];
        match tag {
            RECORD_CHANGES => changes.push(body),
            RECORD_TRACKER if bytes.is_empty() => return Ok((changes, body)),
            RECORD_TRACKER => return Err(bad("bytes follow its watermark state")),
            t => return Err(bad(&format!("a record has the unknown tag {t}"))),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Serializes a state (bincode).
pub fn encode<T: Serialize>(t: &T) -> Result<Vec<u8>> {
    bincode::serialize(t).map_err(|e| Error::Runtime(format!("cannot serialize state: {e}")))
}

/// Serializes a state (bincode, as [`encode`]) at the end of `out`, which first grows by
/// exactly its size: a large state is written once, into one allocation.
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, t: &T) -> Result<()> {
    let err = |e: bincode::Error| Error::Runtime(format!("cannot serialize state: {e}"));
    let size = bincode::serialized_size(t).map_err(err)?;
    out.reserve(size as usize);
    bincode::serialize_into(out, t).map_err(err)
}

/// Serializes a state (bincode, as [`encode`]) at the end of `out`, which grows as it goes
/// (no pass to size it first, as [`encode_into`] makes): for a buffer that is reused, as
/// [`crate::EpochLogic::snapshot_changes_into`] gets.
pub fn encode_onto<T: Serialize>(out: &mut Vec<u8>, t: &T) -> Result<()> {
    bincode::serialize_into(out, t)
        .map_err(|e| Error::Runtime(format!("cannot serialize state: {e}")))
}

/// Serializes a state (bincode, as [`encode`]) into a writer, as it goes: for
/// [`crate::EpochLogic::snapshot_to`].
pub fn encode_to<T: Serialize>(out: &mut dyn std::io::Write, t: &T) -> Result<()> {
    bincode::serialize_into(out, t)
        .map_err(|e| Error::Runtime(format!("cannot serialize state: {e}")))
}

/// What [`encode`] makes of `(head, bytes)` with `bytes` a byte string, where `body` writes the
/// bytes at the end of the vector it is given: the body is written in place, not copied.
pub(crate) fn encode_with_body<H: Serialize>(
    head: &H,
    body: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut out = encode(head)?;
    // A byte string: its length as a little-endian u64 (bincode's default), then the bytes.
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    body(&mut out)?;
    let len = (out.len() - at - 8) as u64;
    out[at..at + 8].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Deserializes a state [`encode`] wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| Error::Runtime(format!("cannot read state: {e}")))
}

impl Recovery {
    /// The recovery of worker `worker` of `workers`, restored from `restored` (its id and this
    /// worker's part), checkpointing every `every_epochs` and taking changes every
    /// `changes_epochs`.
    pub(crate) fn new(
        options: &CheckpointOptions,
        every_epochs: u64,
        changes_epochs: u64,
        job: &str,
        worker: usize,
        workers: usize,
        restored: Option<(u64, Vec<u8>)>,
    ) -> Result<Self> {
        let restored = match restored {
            Some((id, bytes)) => {
                let part: Part = decode(&bytes).map_err(|e| {
                    Error::Runtime(format!(
                        "checkpoint {id}: the part of worker {worker} cannot be read: {e}"
                    ))
                })?;
                Some((id, part))
            }
            None => None,
        };
        Ok(Recovery {
            store: options.store.clone(),
            every_epochs: every_epochs.max(1),
            changes_epochs: changes_epochs.max(1),
            keep: options.keep.max(1),
            job: job.to_string(),
            worker,
            workers,
            participants: 0,
            pending: BTreeMap::new(),
            streamed: BTreeMap::new(),
            stateful: 0,
            stream_above: options.stream_above,
            incremental: options.incremental && options.store.links_parts(),
            ended: BTreeMap::new(),
            awaiting: BTreeSet::new(),
            committed: restored.as_ref().map_or(0, |(id, _)| *id),
            restored,
            claimed: BTreeSet::new(),
            last_asked: None,
            started: BTreeMap::new(),
            counters: None,
            carried: BTreeMap::new(),
            local: workers,
            writer: PartWriter::new(options.store.clone(), worker),
        })
    }

    /// The newest checkpoint known to be complete (asking the store at most every 20 ms).
    pub(crate) fn committed(&mut self) -> u64 {
        if self
            .last_asked
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(20))
        {
            self.last_asked = Some(std::time::Instant::now());
            if let Ok(Some(id)) = self.store.newest_complete_id() {
                self.committed = self.committed.max(id);
            }
        }
        self.committed
    }

    /// Counts this worker's commits in `metrics`: `checkpoints` (how many),
    /// `checkpoint_bytes` (what each added: with incremental checkpoints, the parts that are
    /// not linked from the checkpoint before, as Flink's "checkpointed data size"),
    /// `checkpoint_full_bytes` (each one's whole size, linked parts included, as Flink's
    /// "full checkpoint data size") and `checkpoint_ms` (from the first state handed in to
    /// the commit).
    pub(crate) fn count_in(&mut self, metrics: &Metrics) {
        self.counters = Some(CommitCounters {
            count: metrics.counter("checkpoints"),
            written: metrics.counter("checkpoint_bytes"),
            full: metrics.counter("checkpoint_full_bytes"),
            ms: metrics.counter("checkpoint_ms"),
        });
    }

    /// Worker 0: the run resumes from checkpoint `from`, whose parts its first commit may
    /// link instead of writing (they do not count as written by it).
    pub(crate) fn resumed_from(&mut self, from: &CheckpointInfo) {
        self.carried = from.linkable_parts(self.workers);
    }

    /// Worker 0: only workers `0..local` run in this process (a cluster); the others write
    /// their parts through other handles of the store, whose sizes and CRCs the commit learns
    /// from the workers' own parts instead of reading every part back.
    pub(crate) fn local_workers(&mut self, local: usize) {
        self.local = local.min(self.workers);
    }

    /// Worker 0: the size and CRC-32 of the parts of checkpoint `id` written by the workers of
    /// other processes, as those recorded them: each one's own part (read here, small) and the
    /// parts of its own that it names (operators' chains of whole states and changes). A part
    /// whose worker's own part cannot be read or decoded is left out (the commit reads it back).
    fn parts_written_elsewhere(&self, id: u64) -> BTreeMap<String, (u64, u32)> {
        let mut known = BTreeMap::new();
        for w in self.local..self.workers {
            let own = format!("w{w}");
            let part = self
                .store
                .read_written_part(id, &own)
                .and_then(|bytes| Ok((decode::<Part>(&bytes)?, bytes)));
            let (part, bytes) = match part {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!("checkpoint {id}: {own} will be read back at commit: {e}");
                    continue;
                }
            };
            known.insert(own.clone(), (bytes.len() as u64, crc32fast::hash(&bytes)));
            if let Some(entry) = part.get(STREAMED) {
                match decode::<BTreeMap<String, Vec<PartInfo>>>(&entry.bytes) {
                    Ok(streamed) => {
                        for p in streamed.into_values().flatten() {
                            known.insert(p.name, (p.size, p.crc32));
                        }
                    }
                    Err(e) => tracing::debug!(
                        "checkpoint {id}: the parts {own} names will be read back at commit: {e}"
                    ),
                }
            }
        }
        known
    }

    /// Registers a participant (at build time).
    pub(crate) fn register(&mut self) {
        self.participants += 1;
    }

    /// Registers a stateful operator (at build time): its index among them on this worker,
    /// which names the parts it writes its state into.
    pub(crate) fn register_stateful(&mut self) -> usize {
        self.participants += 1;
        self.stateful += 1;
        self.stateful - 1
    }

    /// Whether a state whose last snapshot took `last` bytes is written into a part of its own.
    pub(crate) fn streams(&self, last: usize) -> bool {
        last > self.stream_above
    }

    /// Whether states in parts of their own may go in as changes ([`Chain`]).
    /// How many epochs an operator whose checkpoints are incremental lets pass between two
    /// takes of its changes (see [`CheckpointOptions::changes_every`]).
    pub(crate) fn changes_epochs(&self) -> u64 {
        self.changes_epochs
    }

    pub(crate) fn incremental(&self) -> bool {
        self.incremental
    }

    /// The epoch the run resumes after (0 for a fresh run).
    pub(crate) fn resumed_epoch(&self) -> u64 {
        self.restored.as_ref().map_or(0, |(id, _)| *id)
    }

    /// The folder of the job's durable logs (the epoch log), if the store keeps them.
    pub(crate) fn log_dir(&self) -> Option<std::path::PathBuf> {
        self.store.log_dir().map(|d| d.to_path_buf())
    }

    /// Whether `epoch` is a checkpoint epoch: [`FIRST_CHECKPOINT`] or a multiple of the
    /// interval.
    pub(crate) fn is_checkpoint(&self, epoch: u64) -> bool {
        epoch == FIRST_CHECKPOINT || (epoch > 0 && epoch.is_multiple_of(self.every_epochs))
    }

    /// The first checkpoint epoch after `after`.
    pub(crate) fn next_checkpoint(&self, after: u64) -> u64 {
        if after < FIRST_CHECKPOINT {
            FIRST_CHECKPOINT
        } else {
            (after / self.every_epochs + 1) * self.every_epochs
        }
    }

    /// Starts the part of changes that stateful operator `index` writes for the checkpoint
    /// `id` ([`Segment`]; a later one if another comes first). It writes into the store from
    /// a thread of its own.
    pub(crate) fn start_segment(
        &self,
        index: usize,
        id: u64,
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Segment> {
        Segment::start(
            self.store.clone(),
            id,
            format!("w{}-s{index}-{id}", self.worker),
            std::mem::take(spare),
        )
    }

    /// The checkpoint epochs in `(after, through]`.
    pub(crate) fn due(&self, after: u64, through: u64) -> Vec<u64> {
        if through <= after || through >= u64::MAX - 1 {
            return Vec::new();
        }
        let first = (after / self.every_epochs + 1) * self.every_epochs;
        let early =
            (after < FIRST_CHECKPOINT && FIRST_CHECKPOINT <= through && FIRST_CHECKPOINT < first)
                .then_some(FIRST_CHECKPOINT);
        early
            .into_iter()
            .chain((first..=through).step_by(self.every_epochs as usize))
            .collect()
    }

    /// The state operator `name` had in the restored checkpoint, if any, checked against `kind`.
    pub(crate) fn restored_state(&mut self, name: &str, kind: &str) -> Result<Option<Vec<u8>>> {
        let Some((id, part)) = &self.restored else {
            return Ok(None);
        };
        self.claimed.insert(name.to_string());
        match part.get(name) {
            None => Ok(None),
            Some(e) if e.kind == kind => Ok(Some(e.bytes.clone())),
            Some(e) => Err(Error::InvalidJob {
                job: self.job.clone(),
                reason: format!(
                    "operator '{name}' cannot start from checkpoint {id}: its state there is a \
                     {}, the job's operator now keeps a {kind} (start with --fresh, or rename \
                     the operator to start it empty)",
                    e.kind
                ),
            }),
        }
    }

    /// The state stateful operator `name` had in the restored checkpoint, if any, checked
    /// against `kind`: in the worker's part, or read from the part of its own it was written to.
    pub(crate) fn restored_stateful(&mut self, name: &str, kind: &str) -> Result<Option<Stored>> {
        let Some(bytes) = self.restored_state(name, kind)? else {
            return Ok(None);
        };
        let Some((id, part)) = &self.restored else {
            return Ok(None);
        };
        let own = match part.get(STREAMED) {
            Some(e) => decode::<BTreeMap<String, Vec<PartInfo>>>(&e.bytes)?.remove(name),
            None => None,
        };
        match own {
            None => Ok(Some(Stored::Inline(bytes))),
            Some(parts) => {
                let Some(whole) = parts.first() else {
                    return Err(Error::Runtime(format!(
                        "checkpoint {id}: operator '{name}' has an empty chain of parts"
                    )));
                };
                Ok(Some(Stored::Streamed {
                    first: self.store.read_part(*id, &whole.name)?,
                    changes: parts[1..].iter().map(|p| p.name.clone()).collect(),
                    chain: Chain {
                        at: *id,
                        parts,
                        scale: None,
                    },
                }))
            }
        }
    }

    /// A part of the checkpoint this worker was restored from.
    pub(crate) fn read_restored_part(&self, part: &str) -> Result<Vec<u8>> {
        let id = self.resumed_epoch();
        self.store.read_part(id, part)
    }

    /// Warns about restored state no operator claimed (called once the flow is built).
    pub(crate) fn report_unclaimed(&self) {
        if let Some((id, part)) = &self.restored {
            for name in part.keys() {
                if name != STREAMED && !self.claimed.contains(name) {
                    tracing::warn!(
                        "checkpoint {id} has state for operator '{name}', which the job no \
                         longer has; it is ignored"
                    );
                }
            }
        }
    }

    /// Operator `name` hands in its state for checkpoint `id`. Writes the worker's part when
    /// it is the last participant to do so.
    pub(crate) fn contribute(
        &mut self,
        id: u64,
        name: &str,
        kind: &str,
        bytes: Vec<u8>,
    ) -> Result<()> {
        if id <= self.resumed_epoch() {
            // Already complete: this run started from it (or from a later one).
            return Ok(());
        }
        let first = *self
            .started
            .entry(id)
            .or_insert_with(std::time::Instant::now);
        tracing::debug!(
            "checkpoint {id}: {name} handed in on worker {}, {} ms after the first",
            self.worker,
            first.elapsed().as_millis()
        );
        self.pending.entry(id).or_default().insert(
            name.to_string(),
            Entry {
                kind: kind.to_string(),
                bytes,
            },
        );
        self.try_complete(id)
    }

    /// Stateful operator `name`, the `index`th registered ([`Recovery::register_stateful`]),
    /// hands in its whole state for checkpoint `id` by writing it, with `write`, into a part
    /// of its own, straight to the store: the watermark state's bincode, then the operator's
    /// whole state, to the end (what [`Stored::Streamed`] holds first on restore). The part
    /// starts a new chain. It is durable when this returns (the worker waits for the disk: no
    /// copy of the state is made); the worker's own part names the chain. Returns the bytes
    /// written, or `None` for a checkpoint this run resumed after (nothing written).
    pub(crate) fn contribute_streamed(
        &mut self,
        id: u64,
        name: &str,
        kind: &str,
        index: usize,
        chain: &mut Chain,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<Option<u64>> {
        if id <= self.resumed_epoch() {
            return Ok(None);
        }
        let t = std::time::Instant::now();
        // Named by the checkpoint it is written in, so that a chain's parts differ.
        let own = format!("w{}-s{index}-{id}", self.worker);
        self.started
            .entry(id)
            .or_insert_with(std::time::Instant::now);
        let info = self.store.write_part_with(id, &own, write)?;
        tracing::debug!(
            "checkpoint {id}: {name} wrote {} bytes into part {own} (whole) in {} ms",
            info.size,
            t.elapsed().as_millis()
        );
        chain.parts.clear();
        self.add_to_chain(id, name, kind, chain, info)
    }

    /// Stateful operator `name` hands in its state for checkpoint `id` as the changes since
    /// the last part of `chain`: `segment`, which ends here and becomes the chain's last
    /// part. The chain's parts, and the segment's if it went into another checkpoint's
    /// folder, are linked into checkpoint `id`. Returns the bytes of the segment, or `None`
    /// for a checkpoint this run resumed after (nothing kept).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn contribute_changes(
        &mut self,
        id: u64,
        name: &str,
        kind: &str,
        chain: &mut Chain,
        segment: Segment,
        tracker: &[u8],
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Option<u64>> {
        if id <= self.resumed_epoch() {
            return Ok(None);
        }
        self.started
            .entry(id)
            .or_insert_with(std::time::Instant::now);
        let t = std::time::Instant::now();
        let (at, info) = segment.finish(tracker, spare)?;
        for p in &chain.parts {
            self.store.link_part(chain.at, id, p)?;
        }
        let info = if at == id {
            info
        } else {
            self.store.link_part(at, id, &info)?
        };
        tracing::debug!(
            "checkpoint {id}: {name} wrote {} bytes into part {} (changes; waited {} ms)",
            info.size,
            info.name,
            t.elapsed().as_millis()
        );
        self.add_to_chain(id, name, kind, chain, info)
    }

    fn add_to_chain(
        &mut self,
        id: u64,
        name: &str,
        kind: &str,
        chain: &mut Chain,
        info: PartInfo,
    ) -> Result<Option<u64>> {
        let size = info.size;
        chain.parts.push(info);
        chain.at = id;
        self.streamed
            .entry(id)
            .or_default()
            .insert(name.to_string(), chain.parts.clone());
        self.contribute(id, name, kind, Vec::new())?;
        Ok(Some(size))
    }

    /// Participant `name` has ended at `epoch` with this last state: it stands as its entry
    /// in every checkpoint from `epoch` on (and is its part of the final one).
    pub(crate) fn ended(
        &mut self,
        epoch: u64,
        name: &str,
        kind: &str,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let entry = Entry {
            kind: kind.to_string(),
            bytes,
        };
        self.ended.insert(name.to_string(), (epoch, entry.clone()));
        self.contribute(FINAL, name, kind, entry.bytes)?;
        // Checkpoints this worker had begun may now have all their entries.
        let begun: Vec<u64> = self.pending.range(epoch..).map(|(&id, _)| id).collect();
        for id in begun {
            self.try_complete(id)?;
        }
        Ok(())
    }

    /// Hands the worker's part of checkpoint `id` to its writer if every participant's entry is in.
    fn try_complete(&mut self, id: u64) -> Result<()> {
        let Some(part) = self.pending.get(&id) else {
            return Ok(());
        };
        let standing = self
            .ended
            .iter()
            .filter(|(name, (from, _))| *from <= id && !part.contains_key(*name))
            .count();
        if part.len() + standing < self.participants {
            return Ok(());
        }
        let mut part = self.pending.remove(&id).expect("present");
        for (name, (from, entry)) in &self.ended {
            if *from <= id && !part.contains_key(name) {
                part.insert(name.clone(), entry.clone());
            }
        }
        if let Some(streamed) = self.streamed.remove(&id) {
            part.insert(
                STREAMED.to_string(),
                Entry {
                    kind: "runnel.streamed-parts".to_string(),
                    bytes: encode(&streamed)?,
                },
            );
        }
        // Older checkpoints this worker could not finish will never be: drop them.
        self.pending.retain(|&k, _| k > id);
        self.streamed.retain(|&k, _| k > id);
        self.writer.write(id, part)?;
        if self.worker == 0 {
            self.awaiting.insert(id);
        }
        self.poll()
    }

    /// Worker 0: commits the checkpoints whose every part is written.
    pub(crate) fn poll(&mut self) -> Result<()> {
        self.writer.check()?;
        if self.worker != 0 || self.awaiting.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = (0..self.workers).map(|w| format!("w{w}")).collect();
        let ready: Vec<u64> = self
            .awaiting
            .iter()
            .copied()
            .filter(|&id| parts.iter().all(|p| self.store.has_part(id, p)))
            .collect();
        let Some(&newest) = ready.last() else {
            return Ok(());
        };
        // The parts operators wrote their state into, which every worker wrote before its own.
        let mut parts = parts;
        for p in self.store.part_names(newest)? {
            if !parts.contains(&p) {
                parts.push(p);
            }
        }
        let mut meta = BTreeMap::new();
        meta.insert("job".to_string(), self.job.clone());
        meta.insert("workers".to_string(), self.workers.to_string());
        meta.insert("created_ms".to_string(), now_ms().to_string());
        let known = self.parts_written_elsewhere(newest);
        let info = self
            .store
            .commit_known(newest, newest, &parts, meta, &known)?;
        self.committed = self.committed.max(newest);
        // Parts of the checkpoint before, the same bytes under the same name, were linked.
        let written = info.written_over(&self.carried);
        self.carried = info.linkable_parts(self.workers);
        if let Some(c) = &self.counters {
            c.count.add(1);
            c.written.add(written);
            c.full.add(info.size());
            if let Some(t) = self.started.get(&newest) {
                c.ms.add(t.elapsed().as_millis() as u64);
            }
        }
        let took = self
            .started
            .get(&newest)
            .map_or(0, |t| t.elapsed().as_millis());
        self.started.retain(|&id, _| id > newest);
        tracing::info!(
            "checkpoint {newest} complete: {} bytes ({written} written, the rest linked), {took} ms",
            info.size()
        );
        self.awaiting.retain(|&id| id > newest);
        self.store.retain(self.keep)?;
        Ok(())
    }
}

/// Picks the checkpoint a run starts from, or none; `workers` is the run's total.
pub(crate) fn choose(
    options: &CheckpointOptions,
    workers: usize,
) -> Result<Option<CheckpointInfo>> {
    let info = match options.restore {
        Restore::Fresh => {
            options.store.clear()?;
            return Ok(None);
        }
        Restore::Latest => match options.store.latest()? {
            Some(i) => i,
            None => {
                options.store.discard_after(None)?;
                return Ok(None);
            }
        },
        Restore::Id(id) => options.store.get(id)?,
    };
    let taken_with = info
        .meta
        .get("workers")
        .and_then(|w| w.parse::<usize>().ok());
    if let Some(w) = taken_with {
        if w != workers {
            return Err(Error::Runtime(format!(
                "checkpoint {} was taken with {w} workers; this run has {workers}. Run with \
                 {w} workers to resume from it, or start over with --fresh",
                info.id
            )));
        }
    }
    // Checkpoint ids are epochs: what lies after this one belongs to the history about to be
    // replayed.
    options.store.discard_after(Some(info.id))?;
    Ok(Some(info))
}

/// The flow's handle on recovery (none when checkpoints are off).
pub(crate) type SharedRecovery = Option<RefCell<Recovery>>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(size: u64) -> PartInfo {
        PartInfo {
            name: format!("p{size}"),
            size,
            crc32: 0,
        }
    }

    /// A chain's growth by checkpoints of `changes` bytes each, with the size hint growing by
    /// `hint_step` per checkpoint from `hint0` (the whole part is 100 bytes): how many
    /// checkpoints go in as changes before it must be written whole again, at most 100.
    fn changes_taken(hint0: u64, hint_step: u64, changes: u64, with_hint: bool) -> usize {
        let mut chain = Chain {
            at: 1,
            parts: vec![part(100)],
            scale: None,
        };
        chain.calibrate(with_hint.then_some(hint0));
        let mut hint = hint0;
        for n in 0..100 {
            hint += hint_step;
            if !chain.takes_changes(with_hint.then_some(hint)) {
                return n;
            }
            chain.parts.push(part(changes));
        }
        100
    }

    /// The chain policy, worked by hand: a state that grows as its changes are written (each
    /// a tenth of the first state) keeps its chain until it has [`MAX_CHAIN`] parts; one whose
    /// changes rewrite the same keys (the hint stays) is written whole once its parts add up
    /// to twice it (100 bytes whole, 40 of changes each: 100 + 3 x 40 = 220 >= 200 after 3);
    /// without a hint, once the changes add up to twice the whole part (5 x 40 = 200).
    #[test]
    fn a_growing_state_keeps_its_chain_and_a_churning_one_is_rewritten() {
        assert_eq!(changes_taken(1000, 100, 10, true), MAX_CHAIN - 1);
        assert_eq!(changes_taken(1000, 0, 40, true), 3);
        assert_eq!(changes_taken(1000, 0, 40, false), 5);
        assert_eq!(changes_taken(1000, 100, 40, false), 5);
        let empty = Chain::default();
        assert!(!empty.has_room() && !empty.takes_changes(Some(1)));
    }

    /// Records of changes of assorted sizes (empty, small, larger than the others), more of
    /// them than a segment has buffers, so that buffers come back from the writer and are
    /// filled again; each record's bytes say which record it is.
    fn records() -> Vec<Vec<u8>> {
        (0..20u32)
            .map(|i| {
                let len = [0, 1, 9, 4096, 100_000][i as usize % 5] + i as usize;
                (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
            })
            .collect()
    }

    /// A part of changes, read back as a reader would split it by hand: the magic, then
    /// (tag, little-endian length, bytes) records.
    fn split_by_hand(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        assert_eq!(&bytes[..8], b"RNLCHG\x01\n");
        let mut at = 8;
        let mut out = Vec::new();
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at + 1..at + 9].try_into().unwrap()) as usize;
            out.push((bytes[at], bytes[at + 9..at + 9 + len].to_vec()));
            at += 9 + len;
        }
        out
    }

    /// A segment's part holds the changes appended, in order, then the watermark state; it is
    /// durable in the folder of the checkpoint it was started for once `finish` returns, and
    /// linked into another checkpoint (the final one, which came first) it reads the same.
    /// The buffers come back for the next segment.
    #[test]
    fn a_part_of_changes_holds_its_records_in_order_then_the_watermark_state() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(crate::LocalDirStore::new(dir.path(), "j").unwrap());
        let store: Arc<dyn CheckpointStore> = local.clone();
        // Read as files: the checkpoints are not committed.
        let read = |id: u64, name: &str| {
            std::fs::read(local.checkpoint_dir(id).join(format!("part-{name}.bin"))).unwrap()
        };
        let mut spare = Vec::new();
        let mut segment = Segment::start(store.clone(), 7, "w0-s0-7".into(), Vec::new()).unwrap();
        for r in records() {
            segment
                .append(&mut |out| {
                    out.extend_from_slice(&r);
                    Ok(())
                })
                .unwrap();
        }
        let (at, info) = segment.finish(b"tracker", &mut spare).unwrap();
        assert_eq!((at, info.name.as_str()), (7, "w0-s0-7"));
        assert_eq!(spare.len(), SEGMENT_BUFFERS);
        let bytes = read(7, "w0-s0-7");
        assert_eq!(bytes.len() as u64, info.size);
        let mut expected: Vec<(u8, Vec<u8>)> = records().into_iter().map(|r| (0, r)).collect();
        expected.push((1, b"tracker".to_vec()));
        assert_eq!(split_by_hand(&bytes), expected);
        let (changes, tracker) = read_changes("w0-s0-7", &bytes).unwrap();
        assert_eq!(changes, records());
        assert_eq!(tracker, b"tracker");

        let linked = store.link_part(7, FINAL, &info).unwrap();
        assert_eq!(read(FINAL, &linked.name), bytes);

        // The next segment, on the buffers given back: an empty part of changes.
        let next = Segment::start(store.clone(), 8, "w0-s0-8".into(), spare).unwrap();
        let mut spare = Vec::new();
        next.finish(b"t", &mut spare).unwrap();
        let bytes = read(8, "w0-s0-8");
        assert_eq!(split_by_hand(&bytes), vec![(1, b"t".to_vec())]);
    }

    /// A part of changes cut short, with bytes after its watermark state, or of another kind
    /// is refused with an error that names it.
    #[test]
    fn a_damaged_part_of_changes_is_refused_by_name() {
        let mut good = CHANGES_MAGIC.to_vec();
        for (tag, body) in [(0u8, &b"abc"[..]), (1, b"wm")] {
            good.push(tag);
            good.extend_from_slice(&(body.len() as u64).to_le_bytes());
            good.extend_from_slice(body);
        }
        assert!(read_changes("p", &good).is_ok());
        let err = |bytes: &[u8]| read_changes("w1-s2-30", bytes).unwrap_err().to_string();
        for cut in [0, 5, 8, 12, 19, good.len() - 1] {
            let e = err(&good[..cut]);
            assert!(e.contains("part w1-s2-30"), "{e}");
        }
        assert!(err(&good[..8]).contains("ends before its watermark state"));
        assert!(err(&good[..good.len() - 1]).contains("goes past its end"));
        let mut longer = good.clone();
        longer.push(0);
        assert!(err(&longer).contains("bytes follow"));
        let mut tagged = good.clone();
        tagged[8] = 7;
        assert!(err(&tagged).contains("unknown tag 7"));
        // A part of changes as session 24 wrote it: the watermark state first.
        assert!(err(&good[8..]).contains("does not start as"));
    }

    /// A segment whose part cannot be written fails at the next append or at its end, with
    /// the store's error (a file stands where the checkpoint's folder goes).
    #[test]
    fn a_part_of_changes_that_cannot_be_written_fails_with_the_stores_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::LocalDirStore::new(dir.path(), "j").unwrap());
        std::fs::write(store.checkpoint_dir(5), b"not a folder").unwrap();
        let mut segment = Segment::start(store.clone(), 5, "w0-s0-5".into(), Vec::new()).unwrap();
        let mut failed = None;
        for r in records() {
            if let Err(e) = segment.append(&mut |out| {
                out.extend_from_slice(&r);
                Ok(())
            }) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => segment.finish(b"t", &mut Vec::new()).unwrap_err(),
        };
        let path = store.checkpoint_dir(5).display().to_string();
        assert!(e.to_string().contains(&path), "{e}");
    }

    /// An entry as it was written before its bytes were a byte string.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ByteByByte {
        kind: String,
        bytes: Vec<u8>,
    }

    /// Entries and stateful operators' states are written as byte strings, at the speed of a
    /// copy; the files must stay what they were, so checkpoints taken before still restore.
    #[test]
    fn byte_strings_are_written_as_vectors_of_bytes_were() {
        let bytes: Vec<u8> = (0..5_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let entry = Entry {
            kind: "k".into(),
            bytes: bytes.clone(),
        };
        let before = ByteByByte {
            kind: "k".into(),
            bytes: bytes.clone(),
        };
        assert_eq!(encode(&entry).unwrap(), encode(&before).unwrap());
        let read: Entry = decode(&encode(&before).unwrap()).unwrap();
        assert_eq!(read.bytes, bytes);
        // A stateful operator's entry: its watermark state, then its own bytes.
        let state = encode(&(7u64, serde_bytes::Bytes::new(&bytes))).unwrap();
        assert_eq!(state, encode(&(7u64, bytes.clone())).unwrap());
        let (w, back): (u64, serde_bytes::ByteBuf) = decode(&state).unwrap();
        assert_eq!((w, back.into_vec()), (7, bytes.clone()));
        // The same, with the operator's bytes written in place after the head.
        let head = ("head", 7u64);
        let in_place = encode_with_body(&head, |out| {
            out.extend_from_slice(&bytes);
            Ok(())
        })
        .unwrap();
        assert_eq!(in_place, encode(&(head, bytes.clone())).unwrap());
        let mut into = b"before".to_vec();
        encode_into(&mut into, &head).unwrap();
        assert_eq!(into, [b"before".to_vec(), encode(&head).unwrap()].concat());
    }

    proptest! {
        /// `due` lists the epochs in `(after, through]` that `is_checkpoint` accepts: the first
        /// checkpoint and the multiples of the interval (checked one epoch at a time).
        #[test]
        fn due_is_every_checkpoint_epoch_in_the_range(
            every in 1u64..7,
            after in 0u64..40,
            len in 0u64..40,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(crate::LocalDirStore::new(dir.path(), "j").unwrap());
            let options = CheckpointOptions::new(store, Duration::from_secs(1));
            let r = Recovery::new(&options, every, 1, "j", 0, 1, None).unwrap();
            let through = after + len;
            let brute: Vec<u64> = (after + 1..=through)
                .filter(|&e| e == 1 || e % every == 0)
                .collect();
            prop_assert_eq!(r.due(after, through), brute.clone());
            let accepted: Vec<u64> =
                (after + 1..=through).filter(|&e| r.is_checkpoint(e)).collect();
            prop_assert_eq!(accepted, brute);
        }
    }
}
