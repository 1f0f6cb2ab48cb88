//! `runnel-bench kafka`: Kafka -> job -> Kafka against librdkafka alone, on the same broker, in
//! the same invocation.
//!
//! The bench fills an input topic once with JSON [`Bid`]s, then runs, alternately, for a number
//! of rounds:
//!
//! * **librdkafka alone**: one thread per worker, each with a plain rdkafka `BaseConsumer`
//!   assigned its share of the partitions (partition `i` to thread `i % workers`, as the engine
//!   spreads them) and a `BaseProducer`. Each thread reads its partitions from the start to their
//!   end, parses each value as a `Bid` and writes it back as JSON (what the job does; `--no-parse`
//!   forwards the bytes instead) to a fresh output topic, then flushes.
//! * **runnel**: `KafkaSource::json::<Bid>(..).stop_at_end()` to `KafkaSink::json(..)` on a
//!   fresh output topic, run by [`runnel_engine::run`] on the same number of workers, with the
//!   connectors' defaults (so the source also commits completed offsets to its group). With
//!   `--exactly-once` its sink is the exactly-once one, with checkpoints on (every
//!   `--checkpoint-ms`, default 1 s): each epoch's results are written once the epoch is over,
//!   tagged, and replayed from the epoch log after a crash (before the first checkpoint is
//!   complete they wait for it).
//!
//! Both use the connectors' client settings (the consumer's fetch settings, the idempotent
//! producer with `acks=all`, 5 ms linger, 10,000-record batches, the record's timestamp kept),
//! plus `fetch.wait.max.ms=10` on every consumer (see [`FETCH_WAIT`]) and whatever
//! `--consumer-option` / `--producer-option` add, on both sides alike. Each is timed from before
//! its clients are created until the last producer has flushed (so connecting, the first fetch
//! and the final flush are in the figure; the baseline also reports when its first record
//! arrived and when it had read the last). After each run the output topic is read back with a
//! plain consumer (outside the timed part): every expected bid must be there exactly once, or
//! the run is an error, not a figure.
//!
//! tansu 0.6 (the dev broker) keeps topics in memory, answers ListOffsets "latest" with the
//! first offset of the last batch + 1, and can hang on a fetch from inside a batch, so the bench
//! always reads from the beginning, counts by consuming to the end of each partition, and uses
//! fresh topics for every run (deleted afterwards, best effort).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};
use runnel_connectors::kafka::{KafkaConfig, KafkaSink, KafkaSource};
use runnel_connectors::Bid;
use runnel_engine::checkpoint::LocalDirStore;
use runnel_engine::{run, CheckpointOptions, Job, Restore, RunOptions, SourceOptions};

/// How long a client waits for the broker before the bench gives up (connects, metadata,
/// admin requests), and how long a reader may see nothing before it reports a stall.
const TIMEOUT: Duration = Duration::from_secs(30);

/// librdkafka's longest wait for a fetch response (default 500 ms). tansu 0.6 sleeps for about
/// half of it after every fetch, even one with data, which caps a consumer at one response of
/// at most 5 MiB per 250 ms; the bench sets 10 ms for both contenders (on a Kafka broker it only
/// matters when there is nothing to fetch).
pub const FETCH_WAIT: &str = "fetch.wait.max.ms";

/// Usage of `runnel-bench kafka`.
pub const USAGE: &str = "\
usage: runnel-bench kafka [--bootstrap HOST:PORT] [--records N] [--partitions P] [--workers W]
                          [--rounds R] [--variant copy|filter] [--no-parse] [--json]
                          [--consumer-option KEY=VALUE]... [--producer-option KEY=VALUE]...
                          [--only librdkafka|runnel] [--no-commit] [--probe] [--epoch-ms MS]
                          [--exactly-once] [--checkpoint-ms MS] [--baseline-header]
  --bootstrap   a running Kafka-API broker; default: start a tansu of our own (in memory)
  --records     bids in the input topic (default 1000000)
  --partitions  partitions of the input and output topics (default 4)
  --workers     worker threads of the job, and threads of the librdkafka baseline (default 2)
  --rounds      rounds of (librdkafka alone, runnel), alternating the order (default 3)
  --variant     copy: every bid; filter: only bids with auction % 10 == 0 (default copy)
  --no-parse    the baseline forwards each value as it is instead of parsing it as a Bid
  --only        run only one of the two (to profile it)
  --probe       runnel's job gets an inspect step that notes when each worker saw its first
                record and (every 4096 records) its latest, to split its time as the baseline's
  --epoch-ms    runnel's epoch interval (default 100, the engine's default)
  --no-commit   runnel's source does not commit offsets to its group (the baseline never does)
  --exactly-once  runnel's sink writes exactly once: checkpoints on (into a fresh temporary
                folder per run), each epoch's results written once it is over, tagged (the
                baseline stays as it is: it has no way to survive a crash without duplicates)
  --checkpoint-ms runnel's checkpoint interval with --exactly-once (default 1000)
  --baseline-header  the baseline gives each record a header the size of the exactly-once
                sink's tag (`runnel.eo`: `out/<thread>:e<n>:<16 hex digits>`), to price the
                tag apart from the rest of exactly once
  --json        print only a one-line JSON summary on stdout (the rest goes to stderr)
  --consumer-option, --producer-option
                a librdkafka option for the consumers (producers) of both contenders, after
                the connectors' defaults; the consumers get fetch.wait.max.ms=10 unless it is
                given (tansu 0.6 sleeps half of it in every fetch, even with data to return)";

/// What the job (and the baseline) does with each bid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Every bid goes to the output topic.
    Copy,
    /// Only bids with `auction % 10 == 0` go to the output topic (as W1 filters).
    Filter,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Copy => "copy",
            Variant::Filter => "filter",
        }
    }

    /// Whether `bid` goes to the output topic.
    fn keep(self) -> fn(&Bid) -> bool {
        match self {
            Variant::Copy => |_| true,
            Variant::Filter => |b| b.auction.is_multiple_of(10),
        }
    }
}

/// The settings of `runnel-bench kafka`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The broker; `None`: start a tansu of our own.
    pub bootstrap: Option<String>,
    /// Bids in the input topic.
    pub records: u64,
    /// Partitions of the input and output topics.
    pub partitions: i32,
    /// Worker threads (job) and threads (baseline).
    pub workers: usize,
    /// Rounds of (baseline, runnel).
    pub rounds: usize,
    /// What the job does with each bid.
    pub variant: Variant,
    /// Whether the baseline parses and re-encodes each value (as the job does).
    pub parse: bool,
    /// Print only a JSON summary on stdout.
    pub json: bool,
    /// Run only the baseline (0) or only runnel (1).
    pub only: Option<usize>,
    /// Whether runnel's source commits completed offsets to its group (its default).
    pub commit: bool,
    /// Whether runnel's job notes when its workers read their first and last records.
    pub probe: bool,
    /// runnel's epoch interval.
    pub epoch: Duration,
    /// Whether runnel's sink writes exactly once (with checkpoints on).
    pub exactly_once: bool,
    /// runnel's checkpoint interval with `exactly_once`.
    pub checkpoint_every: Duration,
    /// Whether the baseline gives each record a header like the exactly-once tag.
    pub baseline_header: bool,
    /// librdkafka options for every consumer, after the source's defaults.
    pub consumer_options: Vec<(String, String)>,
    /// librdkafka options for every producer, after the sink's defaults.
    pub producer_options: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bootstrap: None,
            records: 1_000_000,
            partitions: 4,
            workers: 2,
            rounds: 3,
            variant: Variant::Copy,
            parse: true,
            json: false,
            only: None,
            commit: true,
            probe: false,
            epoch: RunOptions::default().epoch_interval,
            exactly_once: false,
            checkpoint_every: Duration::from_secs(1),
            baseline_header: false,
            consumer_options: vec![(FETCH_WAIT.to_string(), "10".to_string())],
            producer_options: Vec::new(),
        }
    }
}

impl Options {
    /// Parses the flags after `kafka` (see [`USAGE`]).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
        let mut o = Options::default();
        let mut checkpoint_set = false;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--bootstrap" => o.bootstrap = Some(value()?),
                "--records" => o.records = value()?.parse().context("--records")?,
                "--partitions" => o.partitions = value()?.parse().context("--partitions")?,
                "--workers" => o.workers = value()?.parse().context("--workers")?,
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--variant" => {
                    o.variant = match value()?.as_str() {
                        "copy" => Variant::Copy,
                        "filter" => Variant::Filter,
                        other => bail!("unknown variant {other}: copy or filter"),
                    }
                }
                "--consumer-option" => o.consumer_options.push(key_value(&value()?)?),
                "--producer-option" => o.producer_options.push(key_value(&value()?)?),
                "--no-parse" => o.parse = false,
                "--no-commit" => o.commit = false,
                "--probe" => o.probe = true,
                "--epoch-ms" => {
                    o.epoch = Duration::from_millis(value()?.parse().context("--epoch-ms")?)
                }
                "--exactly-once" => o.exactly_once = true,
                "--baseline-header" => o.baseline_header = true,
                "--checkpoint-ms" => {
                    checkpoint_set = true;
                    o.checkpoint_every =
                        Duration::from_millis(value()?.parse().context("--checkpoint-ms")?)
                }
                "--only" => {
                    o.only = match value()?.as_str() {
                        "librdkafka" => Some(0),
                        "runnel" => Some(1),
                        other => bail!("--only {other}: librdkafka or runnel"),
                    }
                }
                "--json" => o.json = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown flag {other}\n{USAGE}"),
            }
        }
        if o.records == 0 || o.partitions < 1 || o.workers == 0 || o.rounds == 0 {
            bail!("--records, --partitions, --workers and --rounds must be at least 1");
        }
        if o.epoch.is_zero() || o.checkpoint_every.is_zero() {
            bail!("--epoch-ms and --checkpoint-ms must be at least 1");
        }
        if checkpoint_set && !o.exactly_once {
            bail!("--checkpoint-ms sets the checkpoints of --exactly-once; give both");
        }
        if !o.parse && o.variant == Variant::Filter {
            bail!("--no-parse cannot filter: the baseline must parse a bid to filter it");
        }
        Ok(o)
    }
}

fn key_value(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("expected KEY=VALUE, got {s}"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Prints a line where the human-readable output goes (stderr with `--json`).
macro_rules! say {
    ($opts:expr, $($arg:tt)*) => {
        if $opts.json { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

/// Runs the bench: fills the input topic, runs the rounds, prints each run, a table of medians
/// and (with `--json`) the summary line.
pub fn main(opts: &Options) -> Result<()> {
    since_start();
    let tansu;
    let bootstrap = match &opts.bootstrap {
        Some(b) => b.clone(),
        None => {
            tansu = Tansu::start()?;
            say!(
                opts,
                "started tansu on {} (in-memory storage)",
                tansu.bootstrap
            );
            tansu.bootstrap.clone()
        }
    };
    let keep = opts.variant.keep();
    let expected: Vec<bool> = (0..opts.records).map(|s| keep(&Bid::at(s))).collect();
    let expected_out = expected.iter().filter(|&&e| e).count() as u64;

    let input = unique("bench-in");
    create_topic(&bootstrap, &input, opts.partitions)?;
    let fill = fill(&bootstrap, &input, opts.records, opts.partitions)?;
    say!(
        opts,
        "kafka bench ({}): {} bids in {input} ({} partitions, filled in {:.1} s, {:.2} M records/s \
         by one producer), {} out per run, {} worker(s), {} rounds; librdkafka alone {}",
        opts.variant.name(),
        opts.records,
        opts.partitions,
        fill.as_secs_f64(),
        opts.records as f64 / fill.as_secs_f64() / 1e6,
        expected_out,
        opts.workers,
        opts.rounds,
        if opts.parse {
            "parses and re-encodes each bid"
        } else {
            "forwards each value as it is"
        }
    );
    say!(
        opts,
        "client options on both sides: consumers {}; producers {}",
        show_options(&opts.consumer_options),
        show_options(&opts.producer_options)
    );

    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=opts.rounds {
        // Alternate which goes first, so a drifting machine favours neither.
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            if opts.only.is_some_and(|only| only != which) {
                continue;
            }
            let output = unique(if which == 0 {
                "bench-rdk"
            } else {
                "bench-runnel"
            });
            create_topic(&bootstrap, &output, opts.partitions)?;
            let measured = if which == 0 {
                baseline(&bootstrap, &input, &output, opts)?
            } else {
                runnel(&bootstrap, &input, &output, opts)?
            };
            let label = ["librdkafka", "runnel"][which];
            if measured.read != opts.records || measured.written != expected_out {
                bail!(
                    "round {round}, {label}: read {} of {} bids and wrote {} of {expected_out} \
                     (output topic {output})",
                    measured.read,
                    opts.records,
                    measured.written
                );
            }
            let t = Instant::now();
            verify(&bootstrap, &output, &expected, expected_out, opts)
                .with_context(|| format!("round {round}, {label}: output topic {output}"))?;
            let verify_secs = t.elapsed().as_secs_f64();
            delete_topic(&bootstrap, &output);
            let rate = opts.records as f64 / measured.secs;
            rates[which].push(rate);
            let phases = match measured.phases {
                Some(Phases {
                    first,
                    read,
                    flushed: Some(flushed),
                }) => format!(
                    "; first record at {first:.2} s, input read by {read:.2} s, flushed by \
                     {flushed:.2} s"
                ),
                Some(Phases { first, read, .. }) => {
                    format!("; first record at {first:.2} s, input read by ~{read:.2} s")
                }
                None => String::new(),
            };
            say!(
                opts,
                "round {round} {label:>10}: {:>6.3} M records/s ({} in, {} out in {:.2} s{phases}; \
                 output verified in {verify_secs:.1} s)",
                rate / 1e6,
                measured.read,
                measured.written,
                measured.secs
            );
        }
    }
    delete_topic(&bootstrap, &input);

    let rdk = median(&mut rates[0]);
    let rnl = median(&mut rates[1]);
    say!(opts, "");
    say!(
        opts,
        "| variant | records | partitions | workers | rounds | librdkafka alone (M records/s) | runnel (M records/s) | runnel / librdkafka |"
    );
    say!(opts, "|---|---|---|---|---|---|---|---|");
    say!(
        opts,
        "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.2} |",
        opts.variant.name(),
        opts.records,
        opts.partitions,
        opts.workers,
        opts.rounds,
        rdk / 1e6,
        rnl / 1e6,
        rnl / rdk
    );
    say!(
        opts,
        "(medians of the rounds; input records per second, end to end)"
    );
    if opts.json {
        let summary = serde_json::json!({
            "bench": "kafka",
            "variant": opts.variant.name(),
            "records": opts.records,
            "records_out": expected_out,
            "partitions": opts.partitions,
            "workers": opts.workers,
            "rounds": opts.rounds,
            "baseline_parses": opts.parse,
            "exactly_once": opts.exactly_once,
            "checkpoint_ms": opts.exactly_once.then_some(opts.checkpoint_every.as_millis() as u64),
            "broker": opts.bootstrap.as_deref().unwrap_or("tansu (started by the bench)"),
            "consumer_options": show_options(&opts.consumer_options),
            "producer_options": show_options(&opts.producer_options),
            "librdkafka_records_per_sec": rdk.round(),
            "runnel_records_per_sec": rnl.round(),
            "ratio": (rnl / rdk * 1000.0).round() / 1000.0,
        });
        println!("{summary}");
    }
    Ok(())
}

/// `k=v, k=v`, or `(the connectors' defaults)`.
fn show_options(options: &[(String, String)]) -> String {
    if options.is_empty() {
        return "the connectors' defaults".to_string();
    }
    let set: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("the connectors' defaults + {}", set.join(", "))
}

/// The median (NaN for none).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One timed run: wall seconds, bids read, records written.
struct Measured {
    secs: f64,
    read: u64,
    written: u64,
    /// Where the time went, when the contender can tell.
    phases: Option<Phases>,
}

/// When the threads or workers (the last of them) got their first record, read their last,
/// and had flushed (the baseline only), in seconds from the start of the run.
#[derive(Clone, Copy, Debug, Default)]
struct Phases {
    first: f64,
    read: f64,
    flushed: Option<f64>,
}

impl Phases {
    fn max(self, o: Phases) -> Phases {
        Phases {
            first: self.first.max(o.first),
            read: self.read.max(o.read),
            flushed: match (self.flushed, o.flushed) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// What `--probe` notes in runnel's job: each worker's first record, and the latest of the
/// records it notes (every 4096th).
#[derive(Default)]
struct Probe {
    firsts: Mutex<Vec<Instant>>,
    latest: Mutex<Option<Instant>>,
}

impl Probe {
    /// The worker saw its record number `n` (from 0).
    fn saw(&self, n: u64) {
        let now = Instant::now();
        if n == 0 {
            if let Ok(mut f) = self.firsts.lock() {
                f.push(now);
            }
        }
        if let Ok(mut l) = self.latest.lock() {
            *l = Some(l.map_or(now, |t| t.max(now)));
        }
    }

    fn phases(&self, started: Instant) -> Option<Phases> {
        let first = self.firsts.lock().ok()?.iter().max().copied()?;
        let latest = (*self.latest.lock().ok()?)?;
        Some(Phases {
            first: (first - started).as_secs_f64(),
            read: (latest - started).as_secs_f64(),
            flushed: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The two contenders

/// The consumer settings of runnel's `KafkaSource` (connectors/src/kafka/source.rs), with
/// `stop_at_end` on.
fn consumer_config(bootstrap: &str, client_id: &str, opts: &Options) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("group.id", "runnel-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", "0")
        .set("queued.min.messages", "1000000")
        .set(
            "socket.connection.setup.timeout.ms",
            TIMEOUT.as_millis().to_string(),
        );
    for (k, v) in &opts.consumer_options {
        c.set(k, v);
    }
    c
}

/// The producer settings of runnel's `KafkaSink` with its defaults
/// (connectors/src/kafka/config.rs, `producer_defaults`).
fn producer_config(bootstrap: &str, client_id: &str, opts: &Options) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set(
            "socket.connection.setup.timeout.ms",
            TIMEOUT.as_millis().to_string(),
        )
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", "60000")
        .set("partitioner", "murmur2_random");
    for (k, v) in &opts.producer_options {
        c.set(k, v);
    }
    c
}

/// librdkafka alone: `workers` threads, each consuming its partitions and producing to `output`.
fn baseline(bootstrap: &str, input: &str, output: &str, opts: &Options) -> Result<Measured> {
    let started = Instant::now();
    let results: Vec<Result<(u64, u64, Phases)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.workers)
            .map(|w| {
                let parts: Vec<i32> = (0..opts.partitions)
                    .filter(|p| *p as usize % opts.workers == w)
                    .collect();
                s.spawn(move || baseline_worker(bootstrap, input, output, w, &parts, opts, started))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a thread panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let (mut read, mut written, mut phases) = (0, 0, Phases::default());
    for r in results {
        let (r, w, p) = r.context("librdkafka alone")?;
        read += r;
        written += w;
        phases = phases.max(p);
    }
    Ok(Measured {
        secs,
        read,
        written,
        phases: Some(phases),
    })
}

/// One baseline thread: reads `parts` of `input` to their end, writes to `output`, flushes;
/// returns (read, delivered, when it got its first record, read its last and had flushed).
fn baseline_worker(
    bootstrap: &str,
    input: &str,
    output: &str,
    index: usize,
    parts: &[i32],
    opts: &Options,
    started: Instant,
) -> Result<(u64, u64, Phases)> {
    let client_id = format!("bench-rdk-{index}");
    let consumer: BaseConsumer<Logs> = consumer_config(bootstrap, &client_id, opts)
        .create_with_context(Logs(client_id.clone()))?;
    let producer: BaseProducer<Deliveries> = producer_config(bootstrap, &client_id, opts)
        .create_with_context(Deliveries::new(&client_id))?;
    if parts.is_empty() {
        return Ok((0, 0, Phases::default()));
    }
    // As the connectors do on open: learn both topics' metadata (and connect) before reading.
    consumer.fetch_metadata(Some(input), TIMEOUT)?;
    producer.client().fetch_metadata(Some(output), TIMEOUT)?;
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        tpl.add_partition_offset(input, p, runnel_connectors::kafka::OLDEST)?;
    }
    consumer.assign(&tpl)?;
    let keep = opts.variant.keep();
    let mut at_end = BTreeSet::new();
    let (mut read, mut sent) = (0u64, 0u64);
    let mut value = Vec::with_capacity(256);
    let mut tag = String::new();
    let mut stall = Stall::default();
    let mut phases = Phases::default();
    while at_end.len() < parts.len() {
        let idle = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                stall.progress();
                at_end.remove(&m.partition());
                if read == 0 {
                    phases.first = started.elapsed().as_secs_f64();
                }
                read += 1;
                let payload = m.payload().unwrap_or_default();
                let payload = if opts.parse {
                    let bid: Bid = serde_json::from_slice(payload).with_context(|| {
                        format!("{input}/{}@{}: not a bid", m.partition(), m.offset())
                    })?;
                    if !keep(&bid) {
                        continue;
                    }
                    value.clear();
                    serde_json::to_writer(&mut value, &bid)?;
                    &value[..]
                } else {
                    payload
                };
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(output).payload(payload);
                if let Some(ts) = m.timestamp().to_millis() {
                    record = record.timestamp(ts);
                }
                if opts.baseline_header {
                    tag.clear();
                    write!(tag, "out/{index}:e{}:{sent:016x}", sent / 100_000)?;
                    record = record.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                        key: runnel_connectors::kafka::EXACTLY_ONCE_HEADER,
                        value: Some(tag.as_bytes()),
                    }));
                }
                send(&producer, record)?;
                sent += 1;
                if sent.is_multiple_of(1024) {
                    producer.poll(Duration::ZERO);
                }
                false
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                true
            }
            Some(Err(e)) => {
                eprintln!("librdkafka alone, thread {index}: {e}");
                true
            }
            None => true,
        };
        if idle && stall.idle() {
            bail!(
                "thread {index} read {read} records of {input}, then nothing for {TIMEOUT:?} \
                 ({} of {} partitions at their end)",
                at_end.len(),
                parts.len()
            );
        }
    }
    phases.read = started.elapsed().as_secs_f64();
    producer
        .flush(Duration::from_secs(65))
        .context("flushing the producer")?;
    producer.context().check()?;
    phases.flushed = Some(started.elapsed().as_secs_f64());
    Ok((read, producer.context().ok.load(Ordering::Relaxed), phases))
}

/// Whether a reader has gone [`TIMEOUT`] without a record (without reading the clock for
/// every record).
#[derive(Default)]
struct Stall {
    /// When the reader last saw something other than a record, since its last record.
    since: Option<Instant>,
}

impl Stall {
    /// A record was read.
    fn progress(&mut self) {
        self.since = None;
    }

    /// A poll returned no record: true once that has lasted [`TIMEOUT`].
    fn idle(&mut self) -> bool {
        self.since.get_or_insert_with(Instant::now).elapsed() > TIMEOUT
    }
}

/// Sends `record`, serving delivery reports while the producer's queue is full (as the sink
/// does).
fn send(producer: &BaseProducer<Deliveries>, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
                producer.context().check()?;
            }
            Err((e, _)) => bail!("cannot send a record: {e}"),
        }
    }
}

/// runnel: `KafkaSource::json::<Bid>` (to the end) to `KafkaSink::json`, on `workers` workers.
fn runnel(bootstrap: &str, input: &str, output: &str, opts: &Options) -> Result<Measured> {
    let mut source_kafka = KafkaConfig::new(bootstrap);
    for (k, v) in &opts.consumer_options {
        source_kafka = source_kafka.option(k, v);
    }
    let mut sink_kafka = KafkaConfig::new(bootstrap);
    for (k, v) in &opts.producer_options {
        sink_kafka = sink_kafka.option(k, v);
    }
    let (input, output) = (input.to_string(), output.to_string());
    let variant = opts.variant;
    let commit = opts.commit;
    let exactly_once = opts.exactly_once;
    let probe = opts.probe.then(|| Arc::new(Probe::default()));
    let probe2 = probe.clone();
    let job = Job::new("kafka-bench", "Kafka -> job -> Kafka", move |flow| {
        let source = KafkaSource::json::<Bid>(source_kafka.clone(), [input.clone()])
            .stop_at_end()
            .commit_offsets(commit, Duration::from_secs(5));
        let mut bids = flow.source("bids", source, SourceOptions::new())?;
        if let Some(probe) = probe2.clone() {
            let seen = std::cell::Cell::new(0u64);
            bids = bids.inspect(move |_, _| {
                let n = seen.get();
                seen.set(n + 1);
                if n.is_multiple_of(4096) {
                    probe.saw(n);
                }
            });
        }
        let mut sink = KafkaSink::json(sink_kafka.clone(), output.clone());
        if exactly_once {
            sink = sink.exactly_once();
        }
        match variant {
            Variant::Copy => bids.sink("out", sink),
            Variant::Filter => bids.filter(variant.keep()).sink("out", sink),
        }
    });
    // With exactly once: checkpoints into a folder of this run's own, removed after it.
    let state = opts.exactly_once.then(|| {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        std::env::temp_dir().join(format!(
            "runnel-kafka-bench-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ))
    });
    let checkpoint = match &state {
        Some(dir) => Some(CheckpointOptions {
            restore: Restore::Fresh,
            ..CheckpointOptions::new(
                Arc::new(LocalDirStore::new(dir, "kafka-bench")?),
                opts.checkpoint_every,
            )
        }),
        None => None,
    };
    let started = Instant::now();
    let run_options = RunOptions {
        workers: opts.workers,
        epoch_interval: opts.epoch,
        checkpoint,
        ..Default::default()
    };
    let summary = run(&job, run_options);
    let secs = started.elapsed().as_secs_f64();
    if let Some(dir) = &state {
        let _ = std::fs::remove_dir_all(dir);
    }
    let summary = summary?;
    if summary.bad_records > 0 {
        bail!("runnel skipped {} bad records", summary.bad_records);
    }
    Ok(Measured {
        secs,
        read: summary.events_in,
        written: summary.events_out,
        phases: probe.and_then(|p| p.phases(started)),
    })
}

// ---------------------------------------------------------------------------------------------
// Filling and checking topics

/// Writes `Bid::at(0..records)` as JSON to `topic`, bid `s` to partition `s % partitions` with
/// timestamp `now - records + s` ms; returns how long it took.
fn fill(bootstrap: &str, topic: &str, records: u64, partitions: i32) -> Result<Duration> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create_with_context(Deliveries::new("bench-fill"))?;
    let base_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - records as i64;
    let started = Instant::now();
    let mut value = Vec::with_capacity(256);
    for seq in 0..records {
        value.clear();
        serde_json::to_writer(&mut value, &Bid::at(seq))?;
        let record = BaseRecord::to(topic)
            .partition((seq % partitions as u64) as i32)
            .timestamp(base_ts + seq as i64)
            .payload(&value[..]);
        send(&producer, record)?;
        if seq.is_multiple_of(10_000) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the input topic")?;
    producer.context().check()?;
    let delivered = producer.context().ok.load(Ordering::Relaxed);
    if delivered != records {
        bail!("filling {topic}: {delivered} of {records} records delivered");
    }
    Ok(started.elapsed())
}

/// Reads `topic` from the start to the end of every partition with a plain consumer and checks
/// that it holds every bid whose `expected[seq]` is set, each once, and nothing else.
fn verify(
    bootstrap: &str,
    topic: &str,
    expected: &[bool],
    expected_out: u64,
    opts: &Options,
) -> Result<()> {
    let consumer: BaseConsumer<Logs> = consumer_config(bootstrap, "bench-verify", opts)
        .create_with_context(Logs("bench-verify".into()))?;
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let parts: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        bail!("topic {topic} has no partitions");
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, runnel_connectors::kafka::OLDEST)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = vec![0u8; expected.len()];
    let (mut total, mut unexpected) = (0u64, 0u64);
    let mut at_end = BTreeSet::new();
    let mut stall = Stall::default();
    while at_end.len() < parts.len() {
        let idle = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                stall.progress();
                at_end.remove(&m.partition());
                total += 1;
                let bid: Bid = serde_json::from_slice(m.payload().unwrap_or_default())
                    .with_context(|| {
                        format!("{topic}/{}@{}: not a bid", m.partition(), m.offset())
                    })?;
                match usize::try_from(bid.seq)
                    .ok()
                    .filter(|&s| s < expected.len())
                {
                    Some(s) if expected[s] && bid == Bid::at(bid.seq) => {
                        seen[s] = seen[s].saturating_add(1)
                    }
                    _ => unexpected += 1,
                }
                false
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                true
            }
            Some(Err(e)) => {
                eprintln!("verify {topic}: {e}");
                true
            }
            None => true,
        };
        if idle && stall.idle() {
            bail!("read {total} records back, then nothing for {TIMEOUT:?}");
        }
    }
    let missing = (0..expected.len())
        .filter(|&s| expected[s] && seen[s] == 0)
        .count();
    let duplicated = seen.iter().filter(|&&n| n > 1).count();
    if missing > 0 || duplicated > 0 || unexpected > 0 || total != expected_out {
        bail!(
            "the output holds {total} records, {expected_out} expected: {missing} bids missing, \
             {duplicated} duplicated, {unexpected} unexpected"
        );
    }
    Ok(())
}

/// Seconds since the bench started (for log lines).
fn since_start() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// A client's context that prints librdkafka's warnings and errors (and, with the librdkafka
/// option `debug`, its debug lines) to stderr.
struct Logs(String);

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, line: &str) {
        eprintln!(
            "{:.3} {} librdkafka {level:?} {fac}: {line}",
            since_start(),
            self.0
        );
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition comes as an error event too; the readers handle it.
        if !matches!(error, KafkaError::PartitionEOF(_))
            && !reason.contains("reached end of partition")
        {
            eprintln!(
                "{:.3} {} librdkafka error {error}: {reason}",
                since_start(),
                self.0
            );
        }
    }
}

impl ConsumerContext for Logs {}

/// Counts a producer's delivered and failed records (and prints its log lines).
struct Deliveries {
    logs: Logs,
    ok: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Deliveries {
    fn new(client: &str) -> Self {
        Deliveries {
            logs: Logs(client.to_string()),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
        }
    }

    /// An error if any record could not be delivered.
    fn check(&self) -> Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .first_failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        bail!("{failed} record(s) not delivered; the first: {first}")
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, line: &str) {
        self.logs.log(level, fac, line);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Ok(mut f) = self.first_failure.lock() {
                        *f = Some(e.to_string());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The broker and topics

/// A tansu broker started by the bench (in-memory storage); killed when dropped.
struct Tansu {
    child: Child,
    dir: PathBuf,
    bootstrap: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_tansu() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(cargo) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(cargo).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}

impl Tansu {
    /// Starts tansu on a free port, as `connectors/tests/kafka_e2e.rs` does, and waits until
    /// it accepts connections.
    fn start() -> Result<Tansu> {
        let Some(tansu) = find_tansu() else {
            bail!(
                "tansu is not installed (not on PATH nor in ~/.cargo/bin): run \
                 `scripts/dev-broker install`, or give --bootstrap HOST:PORT of a running broker"
            );
        };
        let dir = std::env::temp_dir().join(format!("runnel-bench-tansu-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join("tansu.log");
        let log = std::fs::File::create(&log_path)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", tansu.display()))?;
        let mut guard = Tansu {
            child,
            dir,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(guard);
            }
            if let Ok(Some(status)) = guard.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("tansu exited ({status}) before accepting connections; its log:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("tansu did not accept connections on 127.0.0.1:{port} within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a future to completion on this thread (the admin client's futures need no runtime).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// A topic name no earlier run against the same broker used.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?)
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = block_on(admin(bootstrap)?.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &opts,
    ))
    .with_context(|| format!("creating topic {topic} at {bootstrap}"))?;
    for r in results {
        if let Err((t, e)) = r {
            bail!("cannot create topic {t} at {bootstrap}: {e}");
        }
    }
    Ok(())
}

/// Deletes `topic`, best effort (frees the memory of an in-memory broker).
fn delete_topic(bootstrap: &str, topic: &str) {
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    if let Ok(a) = admin(bootstrap) {
        let _ = block_on(a.delete_topics(&[topic], &opts));
    }
}
