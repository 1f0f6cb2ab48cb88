//! The runtime: runs a [`Job`] on `W` worker threads in each of `P` processes (timely's
//! communication layer: threads in a process, TCP between processes), with a progress line
//! and a summary.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::job::Job;
use crate::metrics::{Metrics, RunSummary};
use crate::recovery::{self, CheckpointOptions, Recovery};
use crate::source::EpochClock;

/// Shared run control: the first error, an abort flag, and the stop flag (Ctrl-C).
#[derive(Debug, Default)]
pub struct Control {
    aborted: AtomicBool,
    stop: Arc<AtomicBool>,
    error: Mutex<Option<Error>>,
}

impl Control {
    /// A control that stops when `stop` becomes true.
    pub fn with_stop(stop: Arc<AtomicBool>) -> Self {
        Control {
            stop,
            ..Default::default()
        }
    }
    /// Records `e` (the first error wins) and aborts the run.
    pub fn fail(&self, e: Error) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.aborted.store(true, Ordering::SeqCst);
    }
    /// Whether the run is failing.
    pub fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }
    /// Whether the run was asked to stop (sources stop reading; sinks flush).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// How to run a job.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes (1 = local).
    pub processes: usize,
    /// This process's index in `hosts` (0 when local).
    pub process_id: usize,
    /// `host:port` of every process, in process order (needed when `processes > 1`).
    pub hosts: Vec<String>,
    /// The job's settings.
    pub config: JobConfig,
    /// How often sources close an epoch.
    pub epoch_interval: Duration,
    /// Backpressure: how far, in time, a source may read ahead of the epochs its job's sinks
    /// have finished. A source whose current epoch is that many epoch intervals (at least
    /// one) past the oldest epoch still unfinished at the sinks reads nothing until they catch
    /// up, so that a worker held up (writing a checkpoint, a slow operator, a long pause) does
    /// not make the others' input pile up in memory without bound. Flink bounds the same thing
    /// with its network buffers. `None`: no bound.
    pub max_in_flight: Option<Duration>,
    /// Print a progress line to stderr once a second (only when stderr is a terminal).
    pub progress: bool,
    /// Set to true to stop the run cleanly (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Checkpoints: where, how often, and which to start from (`None`: off).
    pub checkpoint: Option<CheckpointOptions>,
    /// Measure latency at the sinks (see [`Metrics::latency`]); for benchmarks.
    pub measure_latency: bool,
    /// Sample the records read so far this often, into [`RunSummary::samples`]; for
    /// benchmarks (steady-state throughput).
    pub sample_every: Option<Duration>,
    /// How long the processes of a cluster have to connect to each other before the run fails
    /// (each process waits this long for the others, from when it begins to connect).
    pub connect_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            processes: 1,
            process_id: 0,
            hosts: Vec::new(),
            config: JobConfig::new(),
            epoch_interval: Duration::from_millis(100),
            max_in_flight: Some(DEFAULT_MAX_IN_FLIGHT),
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            checkpoint: None,
            measure_latency: false,
            sample_every: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// [`RunOptions::max_in_flight`] by default: ten epochs of 100 ms.
pub const DEFAULT_MAX_IN_FLIGHT: Duration = Duration::from_secs(1);

/// [`RunOptions::connect_timeout`] by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

impl RunOptions {
    /// `workers` threads in one process.
    pub fn workers(workers: usize) -> Self {
        RunOptions {
            workers,
            ..Default::default()
        }
    }
    /// Sets the job's config.
    pub fn config(mut self, config: JobConfig) -> Self {
        self.config = config;
        self
    }
}

/// How many epochs a source may be ahead of the oldest epoch its sinks have not finished (see
/// [`RunOptions::max_in_flight`]): at least one, `u64::MAX` for no bound.
fn epochs_in_flight(max_in_flight: Option<Duration>, interval: Duration) -> u64 {
    match max_in_flight {
        None => u64::MAX,
        Some(d) => {
            let interval = interval.as_micros().max(1);
            (d.as_micros().div_ceil(interval)).clamp(1, u64::MAX as u128) as u64
        }
    }
}

/// The environment variable that sets how much merge work an idle worker spends on the
/// arrangements of tables (see `idle_merge_effort`).
const IDLE_MERGE_EFFORT_ENV: &str = "RUNNEL_IDLE_MERGE_EFFORT";

/// The idle merge effort when [`IDLE_MERGE_EFFORT_ENV`] is not set. Measured in session 14
/// (BENCHMARKS.md, "Latency at half load"): 1,000 and 10,000 cut the p99 of the queries on
/// arrangements 3-7 fold; 100,000 is too coarse (each quantum holds the worker longer).
const DEFAULT_IDLE_MERGE_EFFORT: usize = 1_000;

/// Differential's idle merge effort. With `Some(n)`, an arrangement with merge work left (a
/// merge in progress; see [`IdleMergeGoal`]) keeps its operator scheduled and merges as if `n`
/// records had arrived each time it runs, so merges advance while the worker has nothing else
/// to do. Without it (`0` in
/// [`IDLE_MERGE_EFFORT_ENV`]) merges advance only as new batches arrive, and a batch that
/// needs a level whose merge is not done finishes that merge at once: seconds of work for a
/// large table, which hold back every result behind them.
fn idle_merge_effort() -> Result<Option<usize>> {
    parse_idle_merge_effort(std::env::var(IDLE_MERGE_EFFORT_ENV).ok().as_deref())
}

/// [`idle_merge_effort`] from the variable's value, if it is set.
fn parse_idle_merge_effort(value: Option<&str>) -> Result<Option<usize>> {
    match value {
        None => Ok(Some(DEFAULT_IDLE_MERGE_EFFORT)),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(Error::Runtime(format!(
                "{IDLE_MERGE_EFFORT_ENV}={v}: expected a number of records, 0 or more"
            ))),
        },
    }
}

/// The environment variable that says how far an idle worker merges a table's arrangement:
/// `merges` (the default) or `one` (see [`IdleMergeGoal`]).
const IDLE_MERGE_GOAL_ENV: &str = "RUNNEL_IDLE_MERGE_GOAL";

/// How far an idle worker merges an arrangement's batches with [`idle_merge_effort`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdleMergeGoal {
    /// Until no merge is in progress (the default): a merge started when a batch arrived is
    /// finished while the worker is idle, and none is started for want of work. Batches
    /// then merge as differential's spine merges them without idle effort (a batch with one
    /// of its own size, so each record is merged about log n times), only sooner.
    Merges,
    /// Until the arrangement is one batch (differential's own `idle_merge_effort`): each
    /// epoch's batch is then merged into the whole table as soon as the worker is idle, work
    /// in proportion to the table for each epoch. A paced q3 at about half of its peak
    /// (7.2M events/s, 2 workers, 30 s) kept both workers 85% busy so, and took 46-49 s of
    /// user CPU where [`IdleMergeGoal::Merges`] takes 28-29 (BENCHMARKS.md, "Results,
    /// session 38"): the workers never idled, and neither could touch-ahead's thread, which
    /// provides memory when a core is free.
    One,
}

/// [`IdleMergeGoal`] from [`IDLE_MERGE_GOAL_ENV`].
fn idle_merge_goal() -> Result<IdleMergeGoal> {
    parse_idle_merge_goal(std::env::var(IDLE_MERGE_GOAL_ENV).ok().as_deref())
}

/// [`idle_merge_goal`] from the variable's value, if it is set.
fn parse_idle_merge_goal(value: Option<&str>) -> Result<IdleMergeGoal> {
    match value.map(str::trim) {
        None | Some("merges") => Ok(IdleMergeGoal::Merges),
        Some("one") => Ok(IdleMergeGoal::One),
        Some(v) => Err(Error::Runtime(format!(
            "{IDLE_MERGE_GOAL_ENV}={v}: expected `merges` (finish the merges in progress) or \
             `one` (merge each arrangement into one batch)"
        ))),
    }
}

/// Whether an idle arrangement with these layers (differential's summary of its spine: for
/// each level, how many batches, 0 to 2, where 2 is a merge in progress, and their records)
/// has work left under `goal`.
fn idle_merge_wanted(goal: IdleMergeGoal, layers: &[(usize, usize, usize)]) -> bool {
    match goal {
        IdleMergeGoal::Merges => layers.iter().any(|&(_, batches, _)| batches > 1),
        IdleMergeGoal::One => {
            layers.iter().any(|&(_, batches, _)| batches > 1)
                || layers
                    .iter()
                    .filter(|&&(_, _, records)| records > 0)
                    .count()
                    > 1
        }
    }
}

/// Gives the workers' arrangements idle merge work of `effort` records a time, toward `goal`:
/// differential's `configure` with the exertion logic chosen here (its own is
/// [`IdleMergeGoal::One`]).
fn configure_idle_merges(config: &mut timely::WorkerConfig, effort: usize, goal: IdleMergeGoal) {
    // Differential takes the effort as an `isize` of fuel: a larger one would be negative,
    // and a merge given negative fuel never advances.
    let effort = effort.min(isize::MAX as usize);
    config.set(
        "differential/idle_merge_effort".to_string(),
        effort as isize,
    );
    config.set::<differential_dataflow::trace::ExertionLogic>(
        "differential/default_exert_logic".to_string(),
        std::sync::Arc::new(move |layers| idle_merge_wanted(goal, layers).then_some(effort)),
    );
}

/// Runs `job` to completion (or until stopped) and returns what it did.
///
/// Errors: an invalid graph or config (before anything runs), a source or sink failure, a bad
/// record under the fail policy, a worker panic, or a cluster that cannot connect.
pub fn run(job: &Job, opts: RunOptions) -> Result<RunSummary> {
    if opts.workers == 0 {
        return Err(Error::Runtime("--workers must be at least 1".into()));
    }
    let comm = if opts.processes > 1 {
        if opts.hosts.len() != opts.processes {
            return Err(Error::Runtime(format!(
                "{} processes need {} host addresses, got {}",
                opts.processes,
                opts.processes,
                opts.hosts.len()
            )));
        }
        if opts.process_id >= opts.processes {
            return Err(Error::Runtime(format!(
                "--process-id {} is not below --processes {}",
                opts.process_id, opts.processes
            )));
        }
        None
    } else if opts.workers > 1 {
        Some(timely::CommunicationConfig::Process(opts.workers))
    } else {
        Some(timely::CommunicationConfig::Thread)
    };
    let mut worker_config = timely::WorkerConfig::default();
    let goal = idle_merge_goal()?;
    if let Some(effort) = idle_merge_effort()? {
        configure_idle_merges(&mut worker_config, effort, goal);
    }

    // A cluster's processes connect here (see `cluster`), not in timely's loop, which retries
    // once a second for ever; timely then runs on the connections as they are. Before the
    // run's clock starts and its helper threads: the wait for the others is not the run's.
    let (builders, comms) = match comm {
        Some(comm) => comm
            .try_build()
            .map_err(|e| Error::Runtime(format!("cannot start workers: {e}")))?,
        None => {
            use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
            use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
            let me = crate::cluster::Greeting {
                processes: opts.processes as u64,
                index: opts.process_id as u64,
                workers: opts.workers as u64,
                job: job.name().to_string(),
            };
            let sockets =
                crate::cluster::connect(&opts.hosts, &me, opts.connect_timeout, &opts.stop)?;
            let hooks = timely::communication::Hooks::default();
            let local = ProcessBuilder::new_typed_vector(
                opts.workers,
                hooks.refill.clone(),
                hooks.spill.clone(),
            );
            let (builders, guard) = initialize_networking_from_sockets(
                local,
                sockets,
                opts.process_id,
                opts.workers,
                hooks,
            )
            .map_err(|e| {
                Error::Runtime(format!("cannot start the cluster's network threads: {e}"))
            })?;
            let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
            (builders, Box::new(guard) as Box<dyn std::any::Any + Send>)
        }
    };
    let metrics = Arc::new(if opts.measure_latency {
        Metrics::with_latency()
    } else {
        Metrics::default()
    });
    let control = Arc::new(Control::with_stop(opts.stop.clone()));
    let job_config = Arc::new(opts.config.clone());
    let started = Instant::now();

    let done = Arc::new(AtomicBool::new(false));
    let reporter = (opts.progress && std::io::stderr().is_terminal()).then(|| {
        let metrics = metrics.clone();
        let done = done.clone();
        std::thread::spawn(move || progress_loop(&metrics, &done))
    });
    let sampler = opts.sample_every.map(|every| {
        let metrics = metrics.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut samples = vec![(0.0, 0)];
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(every);
                samples.push((started.elapsed().as_secs_f64(), metrics.records_in.get()));
            }
            samples
        })
    });

    // Checkpoints: which one to start from, decided once before the workers start.
    let total_workers = opts.workers * opts.processes;
    let start_from = match &opts.checkpoint {
        Some(c) => recovery::choose(c, total_workers)?,
        None => None,
    };
    if let Some(info) = &start_from {
        tracing::info!(
            "resuming from checkpoint {} (epoch {})",
            info.id,
            info.epoch
        );
    }
    let restored_from = start_from.as_ref().map(|i| i.id);
    // Worker 0 commits: what its first commit links from this checkpoint is not new bytes.
    let resumed_info = start_from;
    let in_epochs =
        |d: Duration| (d.as_millis() / opts.epoch_interval.as_millis().max(1)).max(1) as u64;
    let every_epochs = opts.checkpoint.as_ref().map_or(1, |c| in_epochs(c.every));
    let changes_epochs = opts
        .checkpoint
        .as_ref()
        .map_or(1, |c| in_epochs(c.changes_every));

    let job2 = job.clone();
    let (metrics2, control2) = (metrics.clone(), control.clone());
    // Set by a worker that panicked: the other workers of the process may wait for it for
    // ever (its dataflow no longer reports progress), so the run leaves them, as a cluster's
    // failed process does.
    let panicked = Arc::new(AtomicBool::new(false));
    let panicked2 = panicked.clone();
    let epoch_interval = opts.epoch_interval;
    let epochs_in_flight = epochs_in_flight(opts.max_in_flight, epoch_interval);
    let checkpoint = opts.checkpoint.clone();
    let alignment = Arc::new(crate::align::Registry::new(opts.workers, opts.processes));
    // The epoch schedule, fixed by the first worker to build its dataflow: after the processes
    // of a cluster have connected, so that they all start their epochs together.
    let clock = Arc::new(std::sync::OnceLock::new());
    let processes = opts.processes;
    let local_workers = opts.workers;
    let guards = timely::execute::execute_from(builders, comms, worker_config, move |worker| {
        let name = job2.name().to_string();
        let index = worker.index();
        let peers = worker.peers();
        let recovery = checkpoint.as_ref().and_then(|c| {
            let part = match restored_from {
                Some(id) => match c.store.read_part(id, &format!("w{index}")) {
                    Ok(bytes) => Some((id, bytes)),
                    Err(e) => {
                        control2.fail(e);
                        return None;
                    }
                },
                None => None,
            };
            match Recovery::new(c, every_epochs, changes_epochs, &name, index, peers, part) {
                Ok(mut r) => {
                    r.count_in(&metrics2);
                    if let (0, Some(info)) = (index, &resumed_info) {
                        r.resumed_from(info);
                    }
                    if index == 0 {
                        r.local_workers(local_workers);
                    }
                    Some(r)
                }
                Err(e) => {
                    control2.fail(e);
                    None
                }
            }
        });
        let epoch_clock = if processes > 1 {
            // Every worker of every process proposes the next slot after it connected; all
            // start from the latest, so that epochs have the same numbers everywhere.
            let origin = agree_on_origin(worker, EpochClock::next_origin(epoch_interval));
            *clock.get_or_init(|| EpochClock::from_wall_origin(epoch_interval, origin))
        } else {
            *clock.get_or_init(|| EpochClock::aligned(epoch_interval))
        };
        worker.dataflow::<u64, _, _>(|scope| {
            let mut flow = Flow::new(
                scope,
                &name,
                job_config.clone(),
                metrics2.clone(),
                control2.clone(),
                epoch_clock,
                epochs_in_flight,
                alignment.clone(),
                recovery,
            );
            if let Err(e) = job2.build_into(&mut flow) {
                control2.fail(e);
            }
        });
        // Run the dataflow here rather than in timely's loop after this closure, so that a
        // panic fails the run: in a cluster, that is what makes this process leave (below).
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while worker.has_dataflows() {
                worker.step_or_park(None);
            }
        }));
        if let Err(payload) = stepped {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            control2.fail(if is_lost_peer(&msg) {
                Error::Runtime(format!("{LOST_PEER}: {msg}"))
            } else {
                Error::Runtime(format!("worker {index} panicked: {msg}"))
            });
            panicked2.store(true, Ordering::SeqCst);
            std::panic::resume_unwind(payload);
        }
    })
    .map_err(|e| Error::Runtime(format!("cannot start workers: {e}")))?;

    // The workers end once the dataflow has ended everywhere. A process whose run failed
    // cannot tell the others (they go on, and would wait for it forever): after a grace
    // period it leaves them; when it exits, they lose their connections to it and fail too.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("runnel-join".into())
        .spawn(move || {
            let _ = tx.send(guards.join());
        })
        .map_err(|e| Error::Runtime(format!("cannot start a thread: {e}")))?;
    let mut aborted_at: Option<Instant> = None;
    let results = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(results) => break results,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // Joining panicked: timely's network threads did (a peer went away).
                done.store(true, Ordering::SeqCst);
                return Err(control.take_error().unwrap_or_else(|| {
                    Error::Runtime(format!("{LOST_PEER}: its network threads stopped"))
                }));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let worker_panicked = panicked.load(Ordering::SeqCst);
                if (processes > 1 && control.aborted()) || worker_panicked {
                    let at = aborted_at.get_or_insert_with(Instant::now);
                    if at.elapsed() >= CLUSTER_ABORT_GRACE {
                        done.store(true, Ordering::SeqCst);
                        if processes > 1 {
                            tracing::warn!(
                                "this process failed; the other processes of the cluster \
                                 fail when it exits"
                            );
                        } else {
                            tracing::warn!(
                                "a worker panicked; the run leaves the workers that still \
                                 wait for it"
                            );
                        }
                        return Err(control.take_error().unwrap_or_else(|| {
                            Error::Runtime("the run failed without an error".into())
                        }));
                    }
                }
            }
        }
    };
    let mut panic = None;
    for r in results {
        if let Err(e) = r {
            panic.get_or_insert(e);
        }
    }
    // The run's wall time ends with its workers (not with the helper threads' next wake-up).
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    if let Some(h) = reporter {
        let _ = h.join();
    }
    let samples = sampler.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some(e) = control.take_error() {
        return Err(e);
    }
    // A job that ran to its end needs none of its checkpoints: the next run starts over (a
    // stopped one keeps them, to resume).
    if let Some(c) = &opts.checkpoint {
        if !opts.stop.load(Ordering::SeqCst) && panic.is_none() && opts.process_id == 0 {
            c.store.clear()?;
        }
    }
    if let Some(p) = panic {
        if is_lost_peer(&p) {
            return Err(Error::Runtime(format!("{LOST_PEER}: {p}")));
        }
        return Err(Error::Runtime(format!("a worker panicked: {p}")));
    }
    let mut summary =
        RunSummary::from_metrics(job.name(), opts.workers, opts.processes, &metrics, elapsed);
    summary.samples = samples;
    Ok(summary)
}

/// The error of a process that lost another process of its cluster.
const LOST_PEER: &str = "the connection to another process of the cluster was lost (it \
    failed, was killed, or its machine went away; its own error says why)";

/// Whether a worker's panic message is timely's for a lost connection to another process.
fn is_lost_peer(msg: &str) -> bool {
    msg.contains("MergeQueue poisoned") || msg.contains("timely communication error")
}

/// How long a process of a cluster whose run failed, or a process one of whose workers
/// panicked, waits for its workers to stop before it leaves them (they may wait for the other
/// processes, which do not know of the failure, or for the worker that panicked).
const CLUSTER_ABORT_GRACE: Duration = Duration::from_secs(3);

/// The largest of the `proposal`s of all workers of the computation, every process's included:
/// a dataflow of its own, run to its end before the job's is built (each worker broadcasts its
/// proposal and keeps the largest it receives).
fn agree_on_origin(worker: &mut timely::worker::Worker, proposal: u64) -> u64 {
    use timely::dataflow::operators::vec::Broadcast;
    use timely::dataflow::operators::{Input, Inspect, Probe};

    let agreed = std::rc::Rc::new(std::cell::Cell::new(proposal));
    let seen = agreed.clone();
    let (mut input, probe) = worker.dataflow_named::<u64, _, _>("epoch-origin", |scope| {
        let (input, stream) = scope.new_input::<Vec<u64>>();
        let (probe, _) = stream
            .broadcast()
            .inspect(move |p| seen.set(seen.get().max(*p)))
            .probe();
        (input, probe)
    });
    input.send(proposal);
    input.advance_to(1);
    worker.step_while(|| probe.less_than(&1));
    agreed.get()
}

fn progress_loop(metrics: &Metrics, done: &AtomicBool) {
    let mut last = (Instant::now(), 0u64);
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last.0.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let now = Instant::now();
        let n = metrics.records_in.get();
        let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, n);
        let wm = metrics
            .watermark()
            .map(|w| {
                if w == i64::MAX {
                    "end".to_string()
                } else {
                    w.to_string()
                }
            })
            .unwrap_or_else(|| "-".into());
        eprint!(
            "\r\x1b[2K{:>12.0} events/s  {:>12} in  watermark {:>14}  late {}",
            rate,
            n,
            wm,
            metrics.late.get()
        );
    }
    eprint!("\r\x1b[2K");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_merge_effort_defaults_turns_off_and_names_a_bad_value() {
        assert_eq!(parse_idle_merge_effort(None).unwrap(), Some(1_000));
        assert_eq!(parse_idle_merge_effort(Some("0")).unwrap(), None);
        assert_eq!(
            parse_idle_merge_effort(Some(" 5000 ")).unwrap(),
            Some(5_000)
        );
        let err = parse_idle_merge_effort(Some("-3")).unwrap_err().to_string();
        assert!(err.contains("RUNNEL_IDLE_MERGE_EFFORT=-3"), "{err}");
    }

    #[test]
    fn idle_merge_goal_defaults_to_merges_and_names_a_bad_value() {
        assert_eq!(parse_idle_merge_goal(None).unwrap(), IdleMergeGoal::Merges);
        assert_eq!(
            parse_idle_merge_goal(Some(" one ")).unwrap(),
            IdleMergeGoal::One
        );
        assert_eq!(
            parse_idle_merge_goal(Some("merges")).unwrap(),
            IdleMergeGoal::Merges
        );
        let err = parse_idle_merge_goal(Some("all")).unwrap_err().to_string();
        assert!(err.contains("RUNNEL_IDLE_MERGE_GOAL=all"), "{err}");
    }

    /// The layers of a spine as differential summarises them, largest level first: (level,
    /// batches 0-2, records).
    fn layers() -> impl proptest::strategy::Strategy<Value = Vec<(usize, usize, usize)>> {
        proptest::collection::vec((0usize..3, 0usize..3), 0..12).prop_map(|v| {
            let n = v.len();
            v.into_iter()
                .enumerate()
                .map(|(i, (batches, size))| {
                    // An empty level has no records; a level's batches may be empty ones.
                    let records = if batches == 0 { 0 } else { size * (1 << i) };
                    (n - 1 - i, batches, records)
                })
                .collect()
        })
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// `One` asks for work exactly when differential's own idle merge logic does
        /// (the closure `differential_dataflow::configure` installs).
        #[test]
        fn the_one_goal_is_differentials_own(layers in layers()) {
            let mut config = timely::WorkerConfig::default();
            differential_dataflow::configure(
                &mut config,
                &differential_dataflow::Config::default().idle_merge_effort(Some(7)),
            );
            let theirs = config
                .get::<differential_dataflow::trace::ExertionLogic>(
                    "differential/default_exert_logic",
                )
                .expect("configure sets it")
                .clone();
            proptest::prop_assert_eq!(
                idle_merge_wanted(IdleMergeGoal::One, &layers),
                theirs(&layers).is_some()
            );
            let mut ours = timely::WorkerConfig::default();
            configure_idle_merges(&mut ours, 7, IdleMergeGoal::One);
            let ours = ours
                .get::<differential_dataflow::trace::ExertionLogic>(
                    "differential/default_exert_logic",
                )
                .expect("set")
                .clone();
            proptest::prop_assert_eq!(ours(&layers), theirs(&layers));
        }
    }

    /// `Merges` leaves a spine of single batches as it is (where differential's own logic
    /// would merge them into one) and works while a level holds two (a merge in progress).
    #[test]
    fn the_merges_goal_works_only_on_merges_in_progress() {
        let singles = [(4, 1, 900), (3, 0, 0), (2, 1, 300), (0, 1, 1)];
        assert!(!idle_merge_wanted(IdleMergeGoal::Merges, &singles));
        assert!(idle_merge_wanted(IdleMergeGoal::One, &singles));
        let merging = [(4, 1, 900), (3, 2, 500), (0, 1, 1)];
        assert!(idle_merge_wanted(IdleMergeGoal::Merges, &merging));
        let one = [(4, 1, 900), (3, 0, 0), (0, 1, 0)];
        assert!(!idle_merge_wanted(IdleMergeGoal::Merges, &one));
        assert!(!idle_merge_wanted(IdleMergeGoal::One, &one));
    }

    /// An effort beyond what differential's fuel (an `isize`) holds is given as the most it
    /// holds, not as negative fuel, which would never advance a merge.
    #[test]
    fn a_huge_idle_merge_effort_is_the_most_fuel_there_is() {
        let mut config = timely::WorkerConfig::default();
        configure_idle_merges(&mut config, usize::MAX, IdleMergeGoal::Merges);
        let logic = config
            .get::<differential_dataflow::trace::ExertionLogic>("differential/default_exert_logic")
            .expect("set")
            .clone();
        let effort = logic(&[(1, 2, 10)]).expect("a merge in progress");
        assert!(effort as isize > 0, "{effort}");
        assert_eq!(
            config.get::<isize>("differential/idle_merge_effort"),
            Some(&isize::MAX)
        );
    }

    /// Two processes of two workers each, connected over TCP as a cluster is, propose four
    /// different origins: every worker comes out with the largest.
    #[test]
    fn every_worker_of_every_process_agrees_on_the_latest_proposal() {
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let proposals = [1_000u64, 9_000, 4_000, 7_000];
        let handles: Vec<_> = (0..2)
            .map(|process| {
                let addresses = addresses.clone();
                std::thread::spawn(move || {
                    let config = timely::Config {
                        communication: timely::CommunicationConfig::Cluster {
                            threads: 2,
                            process,
                            addresses,
                            report: false,
                            zerocopy: false,
                        },
                        worker: timely::WorkerConfig::default(),
                    };
                    timely::execute(config, move |worker| {
                        let mine = proposals[worker.index()];
                        (mine, agree_on_origin(worker, mine))
                    })
                    .unwrap()
                    .join()
                    .into_iter()
                    .map(|r| r.unwrap())
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut got: Vec<(u64, u64)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        got.sort_unstable();
        let max = *proposals.iter().max().unwrap();
        let mut want: Vec<(u64, u64)> = proposals.iter().map(|&p| (p, max)).collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    /// An epoch clock started from an agreed wall-clock origin closes its epochs at that origin
    /// plus multiples of the interval, on the wall clock, whether the origin is ahead or has
    /// passed.
    #[test]
    fn a_clock_from_a_wall_origin_closes_epochs_on_that_origin() {
        let interval = Duration::from_millis(100);
        let wall_now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i128
        };
        for offset_ms in [250i128, -250, 0] {
            let origin = (wall_now() + offset_ms * 1_000_000) as u64;
            let clock = EpochClock::from_wall_origin(interval, origin);
            for n in [0u64, 1, 7] {
                // The deadline as a wall-clock time: now on the wall plus how far ahead it is.
                let (instant, wall) = (Instant::now(), wall_now());
                let deadline = clock.deadline(n);
                let ahead = if deadline >= instant {
                    deadline.duration_since(instant).as_nanos() as i128
                } else {
                    -(instant.duration_since(deadline).as_nanos() as i128)
                };
                let want = origin as i128 + n as i128 * interval.as_nanos() as i128;
                let error = (wall + ahead - want).abs();
                // Both clocks are read twice, microseconds apart.
                assert!(
                    error < 2_000_000,
                    "offset {offset_ms} ms, epoch {n}: off by {error} ns"
                );
            }
        }
    }
}
