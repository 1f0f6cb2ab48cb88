//! `kafka-w2`: benchmark W2 with Kafka on both ends. Reads JSON bids ([`Bid`]) from a topic,
//! counts the bids and the highest price per auction in 10 s tumbling event-time windows
//! ([`w2_windows`]), and writes each result ([`AuctionWindow`]) as JSON to another topic, keyed
//! by auction.
//!
//! Settings (`--set`):
//!
//! * `kafka.bootstrap`: the brokers, `host:port[,host:port...]`. Without it the job runs on an
//!   embedded cluster (below).
//! * `input` (default `bids`), `output` (default `bid-counts`): the topics; both must exist.
//! * `stop_at_end` (default true): read each input partition to its end, then finish; `false`
//!   reads until Ctrl-C.
//! * `out_of_order_ms` (default 0): how far out of event-time order bids may arrive within a
//!   partition (the watermark's bound); later ones are late and dropped (counted).
//!
//! Event time is each bid's `event_time_ms` field. (`runnel produce` also stamps it as the
//! Kafka timestamp, except for bid 0: librdkafka stamps a record whose time is 0 with the
//! current time.)
//!
//! **The embedded cluster.** Without `kafka.bootstrap`, the job starts librdkafka's mock cluster
//! inside the process ([`EmbeddedKafka`]), creates both topics with `partitions` partitions,
//! fills the input with `events` bids (default 1,000,000; the bids of `runnel produce`,
//! gzip-compressed), runs against it, and when the last worker has flushed its output, reads
//! the output topic back and checks every result against the closed form ([`W2Check`]): the
//! run fails on a wrong, missing or duplicate result. The cluster is made once per run by the
//! first worker to build the job and shared by the others; it needs a single process
//! (`runnel run` refuses `--processes` > 1 without `kafka.bootstrap`; see
//! [`check_processes`](crate::check_processes)).
//!
//! The mock cluster keeps only the newest 5 MB of each partition (a limit built into
//! librdkafka), about 235,000 gzip-compressed bids, so `partitions` defaults to 4 or one per
//! [`EMBEDDED_BIDS_PER_PARTITION`] bids, whichever is more (7 for a million), and the job
//! fails, saying so, if the cluster dropped any bid or result.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use runnel_connectors::kafka::{KafkaConfig, KafkaSink, KafkaSource, StartAt};
use runnel_connectors::Bid;
use runnel_engine::{
    Epoch, Error, Event, Flow, Job, JobConfig, Metrics, Result, Sink, SinkContext, SourceOptions,
};

use crate::kafka_tools::{
    consume, produce, watermarks, Compression, ConsumeOptions, EmbeddedKafka, Generator,
    KafkaToolError, ProduceOptions, StartFrom,
};
use crate::workloads::{w2_windows, AuctionWindow, W2Check};

/// The job's name.
pub const NAME: &str = "kafka-w2";

/// The setting that names the brokers; without it the job runs on the embedded cluster.
pub const BOOTSTRAP: &str = "kafka.bootstrap";

/// How long the embedded cluster's clients wait for an answer.
const EMBEDDED_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bids per partition the embedded cluster is given by default: librdkafka's mock
/// cluster keeps the newest 5 MB of a partition, about 235,000 gzip-compressed bids.
pub const EMBEDDED_BIDS_PER_PARTITION: u64 = 150_000;

/// `kafka-w2` (see the module docs).
pub fn kafka_w2() -> Job {
    // The embedded cluster of the current run, shared by its workers (the build function runs
    // on each of them). A run is told apart by its metrics, which all its workers share and
    // which live as long as the run; the previous run's cluster is dropped when the next one
    // starts, or with the job.
    let slot: Arc<Mutex<Option<(Weak<Metrics>, Arc<EmbeddedRun>)>>> = Arc::default();
    Job::new(
        NAME,
        "W2 on Kafka: bids from a topic, count and max price per auction per 10 s window, to a \
         topic (embedded cluster and check without --set kafka.bootstrap=HOST:PORT)",
        move |flow| {
            let cfg = flow.config();
            let input: String = cfg.get("input", "bids".to_string())?;
            let output: String = cfg.get("output", "bid-counts".to_string())?;
            let stop_at_end: bool = cfg.get("stop_at_end", true)?;
            let out_of_order_ms: u64 = cfg.get("out_of_order_ms", 0)?;
            // Exactly once whenever the run takes checkpoints (they are what it rests on).
            let exactly_once: bool = cfg.get("exactly_once", flow.checkpointing())?;
            // Kafka transactions, for clusters that have them (not tansu): the prefix of
            // each sink instance's transactional.id.
            let transactional_id = cfg.get_opt("kafka.transactional_id");
            let (kafka, sink_kafka, embedded) = match cfg.get_opt(BOOTSTRAP) {
                Some(bootstrap) => {
                    if cfg.contains("events") || cfg.contains("partitions") {
                        return Err(invalid(format!(
                            "events and partitions size the embedded cluster's input; with \
                             {BOOTSTRAP} the job reads topic '{input}' as it is (fill it with \
                             `runnel produce`)"
                        )));
                    }
                    let kafka = KafkaConfig::new(bootstrap);
                    (kafka.clone(), kafka, None)
                }
                None => {
                    let spec = EmbeddedSpec::from_config(cfg, &input, &output, stop_at_end)?;
                    let run = embedded_run(&slot, flow, spec)?;
                    let kafka = KafkaConfig::new(run.kafka.bootstrap());
                    // Compressed, as the input: the mock cluster keeps 5 MB per partition.
                    let sink_kafka = kafka.clone().option("compression.type", "gzip");
                    (kafka, sink_kafka, Some(run))
                }
            };

            let source = KafkaSource::json::<Bid>(kafka, [input]).start(StartAt::Earliest);
            let source = if stop_at_end {
                source.stop_at_end()
            } else {
                source
            };
            let mut options = SourceOptions::new().event_time(|b: &Bid| b.event_time_ms);
            if out_of_order_ms > 0 {
                options = options.bounded_out_of_order(Duration::from_millis(out_of_order_ms));
            }
            let results = w2_windows(&flow.source("bids", source, options)?)?;
            let mut sink = KafkaSink::json(sink_kafka, output)
                .key(|w: &AuctionWindow| Some(w.auction.to_string()));
            if exactly_once {
                sink = sink.exactly_once();
            }
            if let Some(prefix) = transactional_id {
                sink = sink.transactional(prefix);
            }
            match embedded {
                None => results.sink("out", sink),
                Some(run) => results.sink("out", CheckAfterFlush { inner: sink, run }),
            }
        },
    )
}

fn invalid(reason: String) -> Error {
    Error::InvalidJob {
        job: NAME.into(),
        reason,
    }
}

/// What the embedded cluster holds: the settings that size it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EmbeddedSpec {
    events: u64,
    partitions: i32,
    input: String,
    output: String,
}

impl EmbeddedSpec {
    fn from_config(cfg: &JobConfig, input: &str, output: &str, stop_at_end: bool) -> Result<Self> {
        let events: u64 = cfg.get("events", 1_000_000)?;
        let enough = events.div_ceil(EMBEDDED_BIDS_PER_PARTITION).max(4);
        let partitions: u64 = cfg.get("partitions", enough)?;
        if !stop_at_end {
            return Err(invalid(format!(
                "stop_at_end=false needs {BOOTSTRAP}: the embedded cluster's input is fixed, \
                 so the job checks it at its end"
            )));
        }
        let partitions = match i32::try_from(partitions) {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(Error::BadConfigValue {
                    key: "partitions".into(),
                    value: partitions.to_string(),
                    expected: "a partition count from 1 to 2147483647".into(),
                })
            }
        };
        if events.div_ceil(partitions as u64) > 2 * EMBEDDED_BIDS_PER_PARTITION {
            return Err(invalid(too_small(format!(
                "cannot hold {events} bids in {partitions} partitions of topic {input}"
            ))));
        }
        if input == output {
            return Err(invalid(format!(
                "input and output are both topic '{input}'"
            )));
        }
        Ok(EmbeddedSpec {
            events,
            partitions,
            input: input.to_string(),
            output: output.to_string(),
        })
    }
}

/// One run's embedded cluster, filled, and what the check needs.
struct EmbeddedRun {
    kafka: EmbeddedKafka,
    spec: EmbeddedSpec,
    /// Workers that built the job in this run.
    joined: AtomicUsize,
    /// Workers whose output sink has flushed.
    flushed: AtomicUsize,
}

/// The current run's cluster: started and filled by the first worker to get here (the others
/// wait for it), shared by the rest.
fn embedded_run(
    slot: &Mutex<Option<(Weak<Metrics>, Arc<EmbeddedRun>)>>,
    flow: &Flow<'_>,
    spec: EmbeddedSpec,
) -> Result<Arc<EmbeddedRun>> {
    let this_run = Arc::downgrade(flow.metrics());
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    let run = match slot.as_ref() {
        Some((run_id, run)) if run_id.ptr_eq(&this_run) => run.clone(),
        _ => {
            // A new run: the previous run's cluster (if any) goes first.
            *slot = None;
            let run = Arc::new(EmbeddedRun::start(spec.clone())?);
            *slot = Some((this_run, run.clone()));
            run
        }
    };
    if run.spec != spec {
        // Broken invariant: every worker of a run reads the same config.
        return Err(invalid(
            "the workers of one run disagree about the embedded cluster".into(),
        ));
    }
    run.joined.fetch_add(1, Ordering::SeqCst);
    Ok(run)
}

impl EmbeddedRun {
    /// Starts the cluster with both topics and fills the input.
    fn start(spec: EmbeddedSpec) -> Result<Self> {
        let source_error = |e: KafkaToolError| Error::Source {
            source_name: "bids".into(),
            reason: format!("the embedded Kafka cluster: {e}"),
        };
        let kafka = EmbeddedKafka::start(&[
            (spec.input.as_str(), spec.partitions),
            (spec.output.as_str(), spec.partitions),
        ])
        .map_err(source_error)?;
        let t = Instant::now();
        let produced = produce(
            &ProduceOptions {
                bootstrap: kafka.bootstrap().to_string(),
                topic: spec.input.clone(),
                generator: Generator::Bids,
                events: spec.events,
                rate: 0,
                compression: Compression::Gzip,
                create_partitions: None,
                timeout: EMBEDDED_TIMEOUT,
            },
            |_| {},
        )
        .map_err(source_error)?;
        let marks =
            watermarks(kafka.bootstrap(), &spec.input, EMBEDDED_TIMEOUT).map_err(source_error)?;
        if marks.iter().any(|&(_, low, _)| low > 0) {
            return Err(Error::Source {
                source_name: "bids".into(),
                reason: too_small(format!("dropped the oldest bids of topic {}", spec.input)),
            });
        }
        eprintln!(
            "{NAME}: no {BOOTSTRAP} set, so on an embedded Kafka cluster (librdkafka's mock \
             cluster at {}): topic {} filled with {} bids over {} partitions in {:.1} s",
            kafka.bootstrap(),
            spec.input,
            produced.records,
            spec.partitions,
            t.elapsed().as_secs_f64()
        );
        Ok(EmbeddedRun {
            kafka,
            spec,
            joined: AtomicUsize::new(0),
            flushed: AtomicUsize::new(0),
        })
    }

    /// Reads the output topic back and checks every result against the closed form.
    fn check(&self) -> std::result::Result<usize, String> {
        let marks = watermarks(self.kafka.bootstrap(), &self.spec.output, EMBEDDED_TIMEOUT)
            .map_err(|e| e.to_string())?;
        if marks.iter().any(|&(_, low, _)| low > 0) {
            return Err(too_small(format!(
                "dropped the oldest results of topic {}",
                self.spec.output
            )));
        }
        let mut check = W2Check::new(self.spec.events);
        let opts = ConsumeOptions {
            bootstrap: self.kafka.bootstrap().to_string(),
            topic: self.spec.output.clone(),
            from: StartFrom::Earliest,
            max: None,
            follow: false,
            timeout: EMBEDDED_TIMEOUT,
            stop: Arc::default(),
        };
        consume(&opts, |r| {
            let value = r.value.unwrap_or_default();
            match serde_json::from_slice::<AuctionWindow>(value) {
                Ok(w) => {
                    let key = w.auction.to_string();
                    if r.key != Some(key.as_bytes()) {
                        check.problem(format!(
                            "{}/{}@{}: key {:?}, expected the auction {key}",
                            opts.topic,
                            r.partition,
                            r.offset,
                            r.key.map(String::from_utf8_lossy)
                        ));
                    }
                    check.add(&w);
                }
                Err(e) => check.problem(format!(
                    "{}/{}@{}: not a window result ({e}): {}",
                    opts.topic,
                    r.partition,
                    r.offset,
                    String::from_utf8_lossy(value)
                )),
            }
            true
        })
        .map_err(|e| e.to_string())?;
        check.finish()
    }
}

/// Why a run does not fit in the embedded cluster: `what` ("dropped the oldest bids of topic
/// bids"), why, and what to do.
fn too_small(what: String) -> String {
    format!(
        "the embedded cluster {what}: librdkafka's mock cluster keeps only the newest 5 MB of \
         each partition. Use more partitions (--set \
         partitions=N; {EMBEDDED_BIDS_PER_PARTITION} bids each is safe), fewer events, or a \
         real broker (--set {BOOTSTRAP}=HOST:PORT)"
    )
}

/// The output sink on the embedded cluster: the Kafka sink, and once the last worker's sink has
/// flushed (so every result is in the topic), the read-back check.
struct CheckAfterFlush {
    inner: KafkaSink<AuctionWindow>,
    run: Arc<EmbeddedRun>,
}

impl Sink<AuctionWindow> for CheckAfterFlush {
    fn open(&mut self, ctx: &SinkContext) -> Result<()> {
        self.inner.open(ctx)
    }

    fn write(&mut self, epoch: Epoch, records: &mut Vec<Event<AuctionWindow>>) -> Result<()> {
        self.inner.write(epoch, records)
    }

    fn snapshot(&mut self, through: Epoch) -> Result<Option<Vec<u8>>> {
        self.inner.snapshot(through)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.inner.restore(state)
    }

    fn checkpoint_committed(&mut self, id: u64) -> Result<()> {
        self.inner.checkpoint_committed(id)
    }

    fn epoch_done(&mut self, epoch: Epoch) -> Result<()> {
        self.inner.epoch_done(epoch)
    }

    fn close(&mut self) -> Result<()> {
        self.inner.close()?;
        // Every worker built the job before any sink could close (no worker's stream ends
        // before every worker has built its part), so `joined` is final here.
        let flushed = self.run.flushed.fetch_add(1, Ordering::SeqCst) + 1;
        if flushed < self.run.joined.load(Ordering::SeqCst) {
            return Ok(());
        }
        let output = &self.run.spec.output;
        if std::env::var_os("DEBUG_NOCHECK").is_some() {
            eprintln!("check: {:?}", self.run.check().err().map(|e| e.len()));
            return Ok(());
        }
        let n = self.run.check().map_err(|reason| Error::Sink {
            sink: "out".into(),
            reason: format!("{NAME} check of topic {output}: {reason}"),
        })?;
        eprintln!(
            "{NAME} check: {n} window results read back from topic {output}, each matches the \
             closed form"
        );
        Ok(())
    }

    fn abort(&mut self) {
        self.inner.abort();
    }
}

#[cfg(test)]
mod tests {
    use runnel_engine::{run, JobConfig, RunOptions};

    use super::*;
    use crate::workloads::w2_expected_rows;

    fn embedded(workers: usize, events: u64) -> RunOptions {
        RunOptions::workers(workers).config(JobConfig::new().with("events", events))
    }

    #[test]
    fn one_job_runs_twice_each_time_on_a_fresh_embedded_cluster() {
        let job = kafka_w2();
        for (workers, events) in [(1, 25_000), (3, 31_234)] {
            let s = run(&job, embedded(workers, events)).expect("the run");
            assert_eq!(s.events_in, events);
            assert_eq!(s.events_out, w2_expected_rows(events));
            assert_eq!(s.late, 0);
        }
    }

    #[test]
    fn too_few_partitions_for_the_embedded_cluster_fail_before_filling() {
        let opts = RunOptions::workers(1).config(
            JobConfig::new()
                .with("events", 10_000_000)
                .with("partitions", 4),
        );
        let err = run(&kafka_w2(), opts).unwrap_err().to_string();
        assert!(
            err.contains("cannot hold 10000000 bids in 4 partitions") && err.contains("5 MB"),
            "{err}"
        );
    }
}
