//! The `runnel` binary: list jobs, run one locally or as one process of a cluster, and fill or
//! print a Kafka topic (`produce`, `consume`; the clients are in `runnel_jobs::kafka_tools`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

mod state_args;

use runnel_connectors::kafka::parse_duration;
use runnel_engine::{run, CheckpointOptions, JobConfig, LocalDirStore, Restore, RunOptions};
use runnel_jobs::bench::BenchReport;
use runnel_jobs::kafka_tools::{
    consume, produce, Compression, ConsumeOptions, Generator, ProduceOptions, Record, StartFrom,
};
use state_args::{backoff, list_checkpoints, show, CheckpointsArgs, StateArgs};

/// mimalloc instead of the system allocator: records move between operators in batches that are
/// allocated by one operator and freed by the next, and glibc's malloc gave the freed pages back
/// to the kernel and faulted them in again for the next batch (measured: raw timely W0 went from
/// 42-52M to 128-135M events/s on one worker with glibc's trimming turned off).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// runnel: a stream-processing dataflow engine.
#[derive(Parser, Debug)]
#[command(name = "runnel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the jobs this binary knows, one line each.
    Jobs,
    /// Run a job locally (or as one process of a cluster with --processes).
    Run(RunArgs),
    /// Fill a Kafka topic from a generator (JSON values, keyed; event time as the timestamp).
    Produce(ProduceArgs),
    /// Print a Kafka topic's records, one per line, until its end.
    Consume(ConsumeArgs),
    /// List a job's checkpoints: id, epoch, time, size, and whether each can be used.
    Checkpoints(CheckpointsArgs),
    /// Run a job as a benchmark: events/s (whole run and steady state, per core), latency
    /// percentiles, peak memory, and a last line of JSON.
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// The job to run (see `runnel jobs`).
    job: String,
    /// Worker threads (per process).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// A cluster run: every process runs this command with its own --process-id, and each
    /// prints its own figures (what its workers read, and the latency at its sinks).
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Events for the generator (the same as --set events=N).
    #[arg(long)]
    events: Option<u64>,
    /// Events per second for the generator (the same as --set rate=N); paces the run, and gives
    /// the Nexmark generator wall-clock event times, so latency can be measured.
    #[arg(long)]
    rate: Option<u64>,
    /// A job setting, key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// How often sources close an epoch, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    epoch_ms: u64,
    /// Backpressure: a source reads at most this far (in epochs' time) ahead of the oldest epoch
    /// the job's sinks have not finished, so that a worker held up (writing a checkpoint, a slow
    /// operator) does not make the others' input pile up in memory; "0s" for no bound.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_in_flight: Duration,
    /// Take checkpoints this often (default: off, "0s"), into a temporary folder (or
    /// `--state-dir`).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    checkpoint_every: Duration,
    /// Take the checkpoints into this folder's sub-folder for the job instead of a temporary
    /// folder: a cluster's processes must share one. The job's checkpoints there are removed
    /// first (each bench run starts fresh, as `runnel run --fresh`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Write every checkpoint's large states whole, instead of incrementally (only what
    /// changed since the checkpoint before, for operators that track it).
    #[arg(long)]
    full_checkpoints: bool,
    /// How often, between checkpoints, an operator whose checkpoints are incremental takes
    /// what changed and has it written in the background ("300ms", the default; rounded to
    /// whole epochs, at least one): less often writes a key that changes often once instead of
    /// once per epoch, but pauses the worker longer each time.
    #[arg(long, default_value = "300ms", value_parser = parse_duration, value_name = "DURATION")]
    changes_every: Duration,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
    /// Before the job starts, write SIZE of memory (like 4G) and free it, and keep freed memory
    /// in the allocator for the whole run (MIMALLOC_PURGE_DELAY=-1), as the JVM's
    /// -XX:+AlwaysPreTouch does: for machines (VMs) that provide memory slowly on first touch,
    /// so that a job whose state grows does not wait for it. The process holds at least SIZE
    /// until it ends. Touch-ahead is then off unless --touch-ahead SIZE asks for it too.
    #[arg(long, value_name = "SIZE", value_parser = runnel_jobs::memory::parse_size)]
    pretouch: Option<u64>,
    /// While the job runs, a thread of its own provides memory (faults its pages in) SIZE
    /// ahead of where the allocator grows, so that a worker seldom waits for a page: for
    /// machines (VMs) that provide memory slowly on first touch, without guessing the run's
    /// size up front as --pretouch does. On by default with 64M; 0 turns it off. The lead is
    /// at least SIZE, and as much as the job's memory grew in the last 4 s or as much as it
    /// has in use, up to 8 times SIZE. Memory the job frees is kept, not given back, as a JVM
    /// keeps its heap; the process holds 0.05-0.2 GB more than the job uses, as much again as
    /// the most it has held for a larger state, and about 0.5 GB more for a large one or one
    /// that grows (more on a machine that provides memory fast: up to 8 times SIZE for each place
    /// the allocator grows from). Linux 5.14 or later:
    /// elsewhere the default is off, and a SIZE given is an error. With the allocator's
    /// variables set otherwise (MIMALLOC_PURGE_DELAY, MIMALLOC_ARENA_RESERVE) the default is
    /// off with a warning, and a SIZE given is an error.
    #[arg(long, value_name = "SIZE", value_parser = runnel_jobs::memory::parse_size)]
    touch_ahead: Option<u64>,
}

/// `--max-in-flight`: "0s" turns the bound off.
fn in_flight(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Where this process sits in a cluster.
#[derive(Args, Debug)]
struct ClusterArgs {
    /// Number of processes in the cluster (each runs this command with its own --process-id).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// This process's index, 0..processes.
    #[arg(long, default_value_t = 0)]
    process_id: u16,
    /// A file with one host:port per line, one line per process, in process order.
    #[arg(long)]
    hosts: Option<PathBuf>,
    /// How long the processes of a cluster have to connect to each other: a process that has
    /// not heard from every other by then fails, naming the ones missing.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    connect_timeout: Duration,
}

impl ClusterArgs {
    /// The hosts file's addresses, checked against `--processes` and `--process-id`.
    fn hosts(&self) -> anyhow::Result<Vec<String>> {
        if self.processes > 1 && self.hosts.is_none() {
            bail!(
                "--processes {} needs --hosts FILE (one host:port per process)",
                self.processes
            );
        }
        if self.process_id >= self.processes {
            bail!(
                "--process-id {} is not below --processes {}",
                self.process_id,
                self.processes
            );
        }
        Ok(match &self.hosts {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--hosts {}", path.display()))?;
                let hosts: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect();
                if let Some(bad) = hosts.iter().find(|h| h.contains(char::is_whitespace)) {
                    bail!(
                        "--hosts {}: '{bad}' is more than one address: one host:port per line",
                        path.display()
                    );
                }
                hosts
            }
            None => Vec::new(),
        })
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The job to run (see `runnel jobs`).
    job: String,
    /// Worker threads per process.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// A job setting, key=value (repeatable); `runnel jobs` says what each job reads.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// How often sources close an epoch, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    epoch_ms: u64,
    /// Backpressure: a source reads at most this far (in epochs' time) ahead of the oldest epoch
    /// the job's sinks have not finished, so that a worker held up (writing a checkpoint, a slow
    /// operator) does not make the others' input pile up in memory; "0s" for no bound.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_in_flight: Duration,
    /// Print the summary as one JSON line (for scripts).
    #[arg(long)]
    json: bool,
    /// No progress line, even on a terminal.
    #[arg(long)]
    quiet: bool,
    /// When the job fails, restart it in this process from its last checkpoint, up to N
    /// times, waiting 1, 2, 4, ... (at most 30) seconds first.
    #[arg(long, default_value_t = 0, value_name = "N")]
    restart: u32,
    /// Before the job starts, write SIZE of memory (like 4G) and free it, and keep freed memory
    /// in the allocator for the whole run (MIMALLOC_PURGE_DELAY=-1), as the JVM's
    /// -XX:+AlwaysPreTouch does: for machines (VMs) that provide memory slowly on first touch,
    /// so that a job whose state grows does not wait for it. The process holds at least SIZE
    /// until it ends. Touch-ahead is then off unless --touch-ahead SIZE asks for it too.
    #[arg(long, value_name = "SIZE", value_parser = runnel_jobs::memory::parse_size)]
    pretouch: Option<u64>,
    /// While the job runs, a thread of its own provides memory (faults its pages in) SIZE
    /// ahead of where the allocator grows, so that a worker seldom waits for a page: for
    /// machines (VMs) that provide memory slowly on first touch, without guessing the run's
    /// size up front as --pretouch does. On by default with 64M; 0 turns it off. The lead is
    /// at least SIZE, and as much as the job's memory grew in the last 4 s or as much as it
    /// has in use, up to 8 times SIZE. Memory the job frees is kept, not given back, as a JVM
    /// keeps its heap; the process holds 0.05-0.2 GB more than the job uses, as much again as
    /// the most it has held for a larger state, and about 0.5 GB more for a large one or one
    /// that grows (more on a machine that provides memory fast: up to 8 times SIZE for each place
    /// the allocator grows from). Linux 5.14 or later:
    /// elsewhere the default is off, and a SIZE given is an error. With the allocator's
    /// variables set otherwise (MIMALLOC_PURGE_DELAY, MIMALLOC_ARENA_RESERVE) the default is
    /// off with a warning, and a SIZE given is an error.
    #[arg(long, value_name = "SIZE", value_parser = runnel_jobs::memory::parse_size)]
    touch_ahead: Option<u64>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// The brokers, host:port[,host:port...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: String,
    /// The topic to write to.
    #[arg(long)]
    topic: String,
    /// How many records.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Records per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Create the topic with this many partitions (replication factor 1) if it does not
    /// exist; an existing topic is used as it is.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// What to write: bids (key: auction), page-views (key: user) or nexmark (key: auction,
    /// or person id).
    #[arg(long, value_enum, default_value_t = Generator::Bids)]
    generator: Generator,
    /// How to compress the producer's batches.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// How long the brokers may take to answer (and to connect), like 5s or 500ms.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    /// The brokers, host:port[,host:port...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: String,
    /// The topic to read (every partition).
    #[arg(long)]
    topic: String,
    /// Where to start in each partition.
    #[arg(long, value_enum, default_value_t = StartFrom::Earliest)]
    from: StartFrom,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Keep waiting for new records at the end of the topic (until --max or Ctrl-C).
    #[arg(long)]
    follow: bool,
    /// Print only each record's value (default: partition offset key value, with - for a
    /// missing key or value).
    #[arg(long)]
    values_only: bool,
    /// How long the brokers may take to answer; without --follow, also how long to wait for
    /// a record or the end of the topic before giving up.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    timeout: Duration,
}

/// A key or value as text: UTF-8 (invalid bytes replaced), or `-` when there is none.
fn text(b: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    match b {
        Some(b) => String::from_utf8_lossy(b),
        None => "-".into(),
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// When another process of a cluster goes away, timely's network threads panic, and the
/// workers with them; the run then fails with an error that says so. Their panic messages
/// (and backtraces) would only bury that error, so they are not printed; any other panic is.
fn quiet_lost_connection_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or_default();
        let lost = [
            "timely communication error",
            "MergeQueue poisoned",
            "Send thread panic",
            "Recv thread panic",
        ];
        if !lost.iter().any(|l| msg.contains(l)) {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    quiet_lost_connection_panics();
    let cli = Cli::parse();
    if let Err(e) = set_allocator_for_memory_flags(&cli) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `--touch-ahead` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ahead {
    /// `--touch-ahead 0`.
    Off,
    /// No flag: on if the allocator can be set for it, else off with a warning.
    Default,
    /// `--touch-ahead SIZE`: on, or an error.
    Asked(u64),
}

impl Ahead {
    /// The default SIZE: what session 32 measured the latency suite with (BENCHMARKS.md).
    const DEFAULT_BYTES: u64 = 64 << 20;

    /// What the flag asks for. Without it: on where the kernel can provide memory ahead
    /// (Linux 5.14 or later), off elsewhere, with `--pretouch` (which provides the memory
    /// before the run instead), and after a run of this binary again with the allocator's
    /// variables failed (see [`set_allocator_for_memory_flags`]).
    fn of(flag: Option<u64>, pretouch: Option<u64>) -> Self {
        match flag {
            None if pretouch.is_some()
                || DEFAULT_AHEAD_FAILED.load(Ordering::Relaxed)
                || !ahead_supported() =>
            {
                Self::Off
            }
            None => Self::Default,
            Some(0) => Self::Off,
            Some(b) => Self::Asked(b),
        }
    }

    fn bytes(self) -> Option<u64> {
        match self {
            Self::Off => None,
            Self::Default => Some(Self::DEFAULT_BYTES),
            Self::Asked(b) => Some(b),
        }
    }
}

/// Whether the kernel can provide memory ahead, probed once per process, so that the choice
/// made before running this binary again and the one made when the run starts agree.
fn ahead_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(runnel_jobs::memory::TouchAhead::supported)
}

/// Set when the default touch-ahead needed this binary run again with the allocator's
/// variables and that failed: the run goes on without it.
static DEFAULT_AHEAD_FAILED: AtomicBool = AtomicBool::new(false);

/// Why the default touch-ahead cannot run in this process: a variable of the allocator set
/// otherwise than it needs, named with its value.
fn touch_ahead_blocked_by() -> Option<String> {
    use runnel_jobs::memory::{
        arena_reserve_is_small, keeps_freed_memory, ARENA_RESERVE_VAR, PURGE_DELAY_VAR,
    };
    let set_otherwise = |var: &str, ok: bool| {
        (!ok)
            .then(|| std::env::var(var).ok())
            .flatten()
            .map(|v| format!("{var} is set to `{v}`"))
    };
    set_otherwise(PURGE_DELAY_VAR, keeps_freed_memory())
        .or_else(|| set_otherwise(ARENA_RESERVE_VAR, arena_reserve_is_small()))
}

/// With `--pretouch`, the allocator must keep freed memory, and mimalloc reads that setting
/// only when the process starts: so unless the variable is set, this runs the same command
/// again in this process (exec) with it set. It does not return when it does.
///
/// With touch-ahead (on unless `--touch-ahead 0`), likewise: freed memory is kept, and
/// mimalloc's first arena (made before `main`) must be small, so that the allocator soon grows
/// into the region the touch-ahead thread provides. A variable the user set otherwise is an
/// error with `--pretouch` or `--touch-ahead SIZE`; without the flag, touch-ahead is then off
/// ([`touch_ahead`] warns).
fn set_allocator_for_memory_flags(cli: &Cli) -> anyhow::Result<()> {
    use runnel_jobs::memory::{
        arena_reserve_is_small, keeps_freed_memory, ARENA_RESERVE_VAR, PURGE_DELAY_VAR,
        SMALL_ARENA_RESERVE,
    };
    let (pretouch, ahead) = match &cli.command {
        Command::Run(a) => (a.pretouch, Ahead::of(a.touch_ahead, a.pretouch)),
        Command::Bench(a) => (a.pretouch, Ahead::of(a.touch_ahead, a.pretouch)),
        _ => (None, Ahead::Off),
    };
    let asked = matches!(ahead, Ahead::Asked(_));
    if asked && !ahead_supported() {
        bail!(
            "--touch-ahead: this kernel cannot provide memory ahead (MADV_POPULATE_WRITE, \
             Linux 5.14 or later): run without the flag, or with --touch-ahead 0"
        );
    }
    let ahead_on = asked || (ahead == Ahead::Default && touch_ahead_blocked_by().is_none());
    let mut set: Vec<(&str, &str)> = Vec::new();
    if (pretouch.is_some() || ahead_on) && !keeps_freed_memory() {
        if let Ok(v) = std::env::var(PURGE_DELAY_VAR) {
            let flag = match (pretouch, asked) {
                (Some(_), true) => "--pretouch and --touch-ahead",
                (Some(_), false) => "--pretouch",
                _ => "--touch-ahead",
            };
            bail!(
                "{flag}: freed memory must be kept in the allocator ({PURGE_DELAY_VAR}=-1), \
                 but {PURGE_DELAY_VAR} is set to `{v}`: unset it, or set it to -1"
            );
        }
        set.push((PURGE_DELAY_VAR, "-1"));
    }
    if ahead_on && !arena_reserve_is_small() {
        if let Ok(v) = std::env::var(ARENA_RESERVE_VAR) {
            bail!(
                "--touch-ahead: the allocator's own arenas must be small \
                 ({ARENA_RESERVE_VAR}={SMALL_ARENA_RESERVE}), but {ARENA_RESERVE_VAR} is set \
                 to `{v}`: unset it, or set it to {SMALL_ARENA_RESERVE}"
            );
        }
        set.push((ARENA_RESERVE_VAR, SMALL_ARENA_RESERVE));
    }
    if set.is_empty() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let names: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let names = names.join(" ");
    let e = std::env::current_exe()
        .with_context(|| format!("running this binary again with {names}: where it is"))
        .map(|exe| {
            let e = std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .envs(set)
                .exec();
            anyhow::Error::new(e).context(format!("running {} again with {names}", exe.display()))
        })
        .unwrap_or_else(|e| e);
    if pretouch.is_none() && !asked {
        // Only the default asked for it: the run goes on without touch-ahead.
        tracing::warn!(
            "touch-ahead is off: {e:#}; `--touch-ahead 0` runs without it and without this warning"
        );
        DEFAULT_AHEAD_FAILED.store(true, Ordering::Relaxed);
        return Ok(());
    }
    Err(e)
}

/// Starts the touch-ahead thread: with `--touch-ahead SIZE`, or by default, when it can. By
/// default, what keeps it from running is a warning, and the run goes on without it.
fn touch_ahead(flag: Option<u64>, pretouch: Option<u64>) -> anyhow::Result<()> {
    use runnel_jobs::memory::{arena_reserve_is_small, keeps_freed_memory, TouchAhead};
    let ahead = Ahead::of(flag, pretouch);
    let Some(bytes) = ahead.bytes() else {
        return Ok(());
    };
    if ahead == Ahead::Default && (!keeps_freed_memory() || !arena_reserve_is_small()) {
        // Not set by the run of this binary again, nor by the user.
        if let Some(why) = touch_ahead_blocked_by() {
            tracing::warn!(
                "touch-ahead is off: {why}, and it sets that variable itself (unset it to have \
                 touch-ahead); `--touch-ahead 0` runs without it and without this warning"
            );
        }
        return Ok(());
    }
    match TouchAhead::start(bytes) {
        Ok(()) => Ok(()),
        Err(e) if ahead == Ahead::Default => {
            tracing::warn!(
                "{e}; the run goes on without it (`--touch-ahead 0` runs without it and \
                 without this warning)"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Touches `bytes` before a run (`--pretouch`), on the allocator that keeps freed memory.
fn pretouch(bytes: Option<u64>) {
    if let Some(b) = bytes.filter(|&b| b > 0) {
        let start = std::time::Instant::now();
        runnel_jobs::memory::pretouch(b);
        tracing::info!(
            "touched {} MB before the run in {:.1} s",
            b >> 20,
            start.elapsed().as_secs_f64()
        );
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Jobs => {
            let registry = runnel_jobs::registry();
            let width = registry
                .jobs()
                .iter()
                .map(|j| j.name().len())
                .max()
                .unwrap_or(0);
            for job in registry.jobs() {
                println!("{:width$}  {}", job.name(), job.about());
            }
            Ok(())
        }
        Command::Run(args) => run_job(args),
        Command::Produce(args) => produce_topic(args),
        Command::Consume(args) => consume_topic(args),
        Command::Checkpoints(args) => list_checkpoints(&args),
        Command::Bench(args) => bench_job(args),
    }
}

fn bench_job(args: BenchArgs) -> anyhow::Result<()> {
    let registry = runnel_jobs::registry();
    let job = registry.get(&args.job)?;
    let mut pairs = args.set.clone();
    if let Some(n) = args.events {
        pairs.push(format!("events={n}"));
    }
    if let Some(r) = args.rate {
        pairs.push(format!("rate={r}"));
    }
    let config = JobConfig::from_pairs(&pairs).context("bad --set")?;
    runnel_jobs::check_processes(job, &config, args.cluster.processes as usize)?;
    let hosts = args.cluster.hosts()?;
    // Checkpoints only when asked for, into a folder of this run's own unless given one.
    let state = tempfile::tempdir().context("a temporary folder for checkpoints")?;
    let checkpoint = if args.checkpoint_every.is_zero() {
        None
    } else {
        if args.cluster.processes > 1 && args.state_dir.is_none() {
            bail!(
                "runnel bench takes checkpoints into a temporary folder of its own, which the \
                 processes of a cluster cannot share: give them one with --state-dir DIR"
            );
        }
        if let Some(why) = job.checkpoints_unsupported() {
            bail!("{} cannot take checkpoints ({why})", job.name());
        }
        let dir = args.state_dir.as_deref().unwrap_or(state.path());
        let store = LocalDirStore::new(dir, job.name())
            .with_context(|| format!("checkpoints in {}", dir.display()))?;
        Some(CheckpointOptions {
            store: Arc::new(store),
            every: args.checkpoint_every,
            keep: 3,
            restore: Restore::Fresh,
            stream_above: runnel_engine::recovery::STREAM_STATE_ABOVE,
            incremental: !args.full_checkpoints,
            changes_every: args.changes_every,
        })
    };
    let opts = RunOptions {
        workers: args.workers as usize,
        processes: args.cluster.processes as usize,
        process_id: args.cluster.process_id as usize,
        hosts,
        config,
        epoch_interval: Duration::from_millis(args.epoch_ms),
        max_in_flight: in_flight(args.max_in_flight),
        progress: !args.json,
        stop: stop_on_ctrl_c()?,
        checkpoint,
        measure_latency: true,
        sample_every: Some(Duration::from_millis(50)),
        connect_timeout: args.cluster.connect_timeout,
    };
    pretouch(args.pretouch);
    // Counted from before the touch-ahead thread starts, so that its faults are all in both.
    let faults_before = runnel_jobs::memory::minor_faults();
    touch_ahead(args.touch_ahead, args.pretouch)?;
    let summary = run(job, opts)?;
    let faults_after = runnel_jobs::memory::minor_faults();
    let ahead = runnel_jobs::memory::TouchAhead::stats();
    let paced = args.rate.is_some_and(|r| r > 0)
        || args
            .set
            .iter()
            .any(|kv| kv.starts_with("rate=") && kv != "rate=0");
    let mut report = BenchReport::new(&summary, paced);
    report.minor_faults = faults_before
        .zip(faults_after)
        .map(|(b, a)| a.saturating_sub(b));
    report.pretouch_mb = args.pretouch.unwrap_or(0) >> 20;
    if runnel_jobs::memory::TouchAhead::started() {
        report.touched_ahead_mb = Some(ahead.provided_bytes >> 20);
        report.touch_ahead_faults = Some(ahead.faults);
        report.touch_ahead_lead_mb = Some(ahead.largest_lead_bytes >> 20);
    }
    if !args.json {
        eprintln!("{report}");
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Sets the returned flag on Ctrl-C; a second Ctrl-C exits at once.
fn stop_on_ctrl_c() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopping now");
            std::process::exit(130);
        }
        eprintln!("\nstopping (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

fn run_job(args: RunArgs) -> anyhow::Result<()> {
    let registry = runnel_jobs::registry();
    let job = registry.get(&args.job)?;
    let config = JobConfig::from_pairs(&args.set).context("bad --set")?;
    runnel_jobs::check_processes(job, &config, args.cluster.processes as usize)?;
    let hosts = args.cluster.hosts()?;
    if let (Some(why), Some(every)) = (job.checkpoints_unsupported(), args.state.checkpoint_every) {
        if !every.is_zero() {
            bail!(
                "{} cannot take checkpoints ({why}); run it without --checkpoint-every",
                job.name()
            );
        }
    }
    let checkpoint = if runnel_jobs::can_resume(job, &config) {
        args.state.options(job.name())?
    } else {
        None
    };
    let mut opts = RunOptions {
        workers: args.workers as usize,
        processes: args.cluster.processes as usize,
        process_id: args.cluster.process_id as usize,
        hosts,
        config,
        epoch_interval: Duration::from_millis(args.epoch_ms),
        max_in_flight: in_flight(args.max_in_flight),
        progress: !args.quiet && !args.json,
        stop: stop_on_ctrl_c()?,
        checkpoint,
        connect_timeout: args.cluster.connect_timeout,
        ..RunOptions::default()
    };
    if args.restart > 0 && args.cluster.processes > 1 {
        // A failed process of a cluster leaves its workers running until it exits (that is
        // how the others learn of the failure), so it cannot start a new run in place.
        bail!(
            "--restart restarts one process in place and cannot be used with --processes {}: \
             restart every process of the cluster instead (they resume from the last checkpoint)",
            args.cluster.processes
        );
    }
    pretouch(args.pretouch);
    touch_ahead(args.touch_ahead, args.pretouch)?;
    let mut restarts = 0;
    let summary = loop {
        match run(job, opts.clone()) {
            Ok(summary) => break summary,
            Err(e) if restarts < args.restart && !opts.stop.load(Ordering::SeqCst) => {
                let wait = backoff(restarts);
                restarts += 1;
                let from = if opts.checkpoint.is_some() {
                    "its last checkpoint"
                } else {
                    "the start (checkpoints are off)"
                };
                eprintln!(
                    "error: {e}\nrestarting from {from} in {} ({restarts} of {})",
                    show(wait),
                    args.restart
                );
                std::thread::sleep(wait);
                // Every restart resumes where the failed run left its checkpoints.
                if let Some(c) = opts.checkpoint.as_mut() {
                    c.restore = runnel_engine::Restore::Latest;
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!("{summary}");
    }
    Ok(())
}

fn produce_topic(args: ProduceArgs) -> anyhow::Result<()> {
    let opts = ProduceOptions {
        bootstrap: args.bootstrap,
        topic: args.topic,
        generator: args.generator,
        events: args.events,
        rate: args.rate,
        compression: args.compression,
        create_partitions: args.partitions,
        timeout: args.timeout,
    };
    let what = match opts.generator {
        Generator::Bids => "bids",
        Generator::PageViews => "page views",
        Generator::Nexmark => "Nexmark events",
    };
    let mut last = 0;
    let started = std::time::Instant::now();
    let done = produce(&opts, |acked| {
        let secs = started.elapsed().as_secs();
        if secs >= last + 5 {
            last = secs;
            eprintln!("produced {acked} {what} so far");
        }
    })?;
    if let (Some(wanted), false) = (opts.create_partitions, done.topic.created) {
        if wanted as usize != done.topic.partitions {
            eprintln!(
                "note: topic '{}' already existed with {} partitions (not {wanted}); left as it is",
                opts.topic, done.topic.partitions
            );
        }
    }
    let secs = done.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "produced {} {what} to topic '{}' at {} ({} partitions{}): {:.1} MB in {secs:.2} s, \
         {:.0} records/s",
        done.records,
        opts.topic,
        opts.bootstrap,
        done.topic.partitions,
        if done.topic.created { ", created" } else { "" },
        done.bytes as f64 / 1e6,
        done.records as f64 / secs
    );
    Ok(())
}

fn consume_topic(args: ConsumeArgs) -> anyhow::Result<()> {
    let opts = ConsumeOptions {
        bootstrap: args.bootstrap,
        topic: args.topic,
        from: args.from,
        max: args.max,
        follow: args.follow,
        timeout: args.timeout,
        stop: stop_on_ctrl_c()?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_error = None;
    let done = consume(&opts, |r: Record<'_>| {
        let written = if args.values_only {
            writeln!(out, "{}", text(r.value))
        } else {
            writeln!(
                out,
                "{} {} {} {}",
                r.partition,
                r.offset,
                text(r.key),
                text(r.value)
            )
        };
        let written = written.and_then(|()| if opts.follow { out.flush() } else { Ok(()) });
        match written {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    let flushed = out.flush();
    match write_error.map_or(flushed, Err) {
        // The reader went away (`| head`): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e).context("cannot write to stdout"),
        Ok(()) => {}
    }
    eprintln!(
        "consumed {} records from topic '{}' at {} ({} partitions) in {:.2} s",
        done.records,
        opts.topic,
        opts.bootstrap,
        done.partitions,
        done.elapsed.as_secs_f64()
    );
    Ok(())
}
