//! [`KafkaSource`]: reads Kafka topics, one engine partition per Kafka partition, decoding each
//! record as JSON, UTF-8 text, raw bytes or a whole [`KafkaRecord`].
//!
//! Each worker has one librdkafka consumer for all the partitions it reads. The job assigns
//! partitions (the engine's deterministic spread over workers), so the consumer never joins a
//! consumer group. Every partition is split into its own queue before it is assigned, so each
//! [`PartitionReader`] polls only its partition and never blocks.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use regex::Regex;
use runnel_engine::{
    Counter, Data, Error, PartitionId, PartitionReader, ReadStatus, Reader, Result, Source,
    SourceContext,
};
use serde::{Deserialize, Serialize};

use super::config::{format_duration, EventTimeFrom, KafkaConfig, KafkaSourceConfig, StartAt};
use super::first::{FirstRecord, OnEnd, OnRecord};
use super::metrics::ClientEvents;

/// Turns a Kafka record into a job's record, or says why it cannot.
type Decode<T> = fn(&BorrowedMessage<'_>) -> std::result::Result<T, String>;

/// A Kafka record with everything Kafka knows about it, as [`KafkaSource::records`] yields it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition in the topic.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (milliseconds since the Unix epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its key, if it has one.
    pub key: Option<Vec<u8>>,
    /// Its value (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers, in order: name and value (`None` for a null value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A source reading Kafka topics: every partition of every topic is one partition of the
/// source, spread over all workers of all processes without a consumer group: each topic's
/// partitions go round-robin from a worker chosen by the topic's name (Flink's assignment), so
/// every worker places every partition the same way, including partitions found later.
///
/// * **Topics.** A list, and/or a regular expression ([`KafkaSource::topic_pattern`]) that
///   whole topic names must match. Every [`KafkaSourceConfig::discovery_interval`] (30 s)
///   each worker asks the cluster for new partitions of its topics and new matching topics,
///   and reads those it owns from their beginning.
///
/// * **Codecs.** [`KafkaSource::json`] decodes each record's value as a JSON `T`;
///   [`KafkaSource::strings`] takes it as UTF-8 text, [`KafkaSource::bytes`] as it is, and
///   [`KafkaSource::records`] yields the whole [`KafkaRecord`] (key, value, headers, topic,
///   partition, offset, timestamp). A value that does not decode is a bad record at
///   `topic/partition@offset` whose reason is the decoder's message; the job's
///   [`runnel_engine::BadRecordPolicy`] fails the job on it or skips it to the dead-letter
///   stream.
/// * **Offsets and time.** Each record's offset (as the engine sees it) is its Kafka offset.
///   Its event time is its Kafka timestamp, unless [`EventTimeFrom::Job`] is set or the job
///   gives an extractor (`SourceOptions::event_time`), which always wins.
/// * **Start.** [`StartAt`]: earliest (default), latest, a timestamp, or the group's committed
///   offsets.
/// * **Committed offsets.** Once every sink of the job has written the records of an epoch,
///   their offsets are committed to the consumer group ([`KafkaSourceConfig::group_id`]) every
///   [`KafkaSourceConfig::commit_interval`] and when the source ends, so lag shows in ordinary
///   Kafka tools and [`StartAt::Committed`] resumes after them. "Written" is what the sink
///   has accepted: a Kafka sink may still hold them in its producer queue, so after a crash
///   a restart from committed offsets can miss what was in flight. Exactly-once restarts come
///   from checkpoints, not from these commits.
/// * **Explicit start offsets.** A reader that starts at a checkpoint's offset (or the
///   group's, or a timestamp's) starts at the record there or, where that offset holds none
///   (a transaction marker, a compacted record), at the next one. Where the partition no
///   longer holds it:
///   - records deleted by retention: the reader goes on from the partition's first record,
///     as `auto.offset.reset=earliest` would, warns, and counts the offsets passed in the
///     `<source>.kafka.offsets_skipped` counter;
///   - a partition that now ends before the offset (its offsets went back: the topic was
///     deleted and made anew, or a development broker's storage wiped): resuming from a
///     checkpoint, the job fails with an error that names the partition, the offset and the
///     partition's end, since the checkpoint's state belongs to the records that were there
///     (run it afresh to read the topic as it is); from the group's committed offset or a
///     timestamp's, the reader reads the partition from its start, as Kafka's
///     `auto.offset.reset=earliest` does.
///
///   A topic made anew that has already grown past the checkpoint's offset cannot be told
///   from the old one (the broker's topic ids are not read), and is read on from there.
/// * **End.** By default the source reads forever. With [`KafkaSource::stop_at_end`] each
///   partition finishes once its reader has caught up with its end (librdkafka's
///   end-of-partition report: every record below the high watermark of a fetch has been
///   read), which for a topic that nobody writes to during the run is every record in it.
/// * **Failures.** A broker that cannot be reached when the job starts, or a topic that does
///   not exist, fails the job within [`KafkaConfig::request_timeout`] with an error that names
///   the bootstrap address or the topic. While the job runs, librdkafka reconnects and
///   retries; the job fails only when the brokers stay unreachable, with nothing read, for
///   [`KafkaSourceConfig::max_unavailable`]. While the client reports errors and nothing is
///   read, each worker asks the brokers for metadata every few seconds (waiting at most
///   500 ms) to learn whether they are back, since an idle partition reads nothing either.
///
/// ```no_run
/// use runnel_connectors::kafka::{KafkaConfig, KafkaSource, StartAt};
/// use runnel_engine::{Job, SourceOptions};
///
/// #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// struct Bid { auction: u64, price: u64 }
///
/// let job = Job::new("bids", "reads bids", |flow| {
///     let bids = KafkaSource::json::<Bid>(KafkaConfig::new("127.0.0.1:9092"), ["bids"])
///         .start(StartAt::Earliest);
///     flow.source("bids", bids, SourceOptions::new())?
///         .filter(|b| b.price > 100)
///         .sink("out", runnel_connectors::StdoutSink::new())
/// });
/// ```
pub struct KafkaSource<T> {
    config: KafkaSourceConfig,
    decode: Decode<T>,
    /// This worker's consumer, created by [`Source::partitions`].
    client: Option<Arc<WorkerClient>>,
    /// The partition list, as [`Source::partitions`] last returned it.
    partitions: Vec<(String, i32)>,
    /// The partitions of the first list; partitions found later are read from their beginning.
    initial: Option<HashSet<(String, i32)>>,
    /// The compiled topic pattern.
    pattern: Option<Regex>,
    _records: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for KafkaSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .finish()
    }
}

/// A clone has the same settings and no connection (each worker connects its own).
impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        KafkaSource {
            config: self.config.clone(),
            decode: self.decode,
            client: None,
            partitions: Vec::new(),
            initial: None,
            pattern: None,
            _records: PhantomData,
        }
    }
}

fn decode_json<T: Data>(m: &BorrowedMessage<'_>) -> std::result::Result<T, String> {
    match m.payload() {
        Some(p) => serde_json::from_slice(p).map_err(|e| e.to_string()),
        None => Err("the record has no value (a tombstone)".to_string()),
    }
}

fn decode_string(m: &BorrowedMessage<'_>) -> std::result::Result<String, String> {
    match m.payload() {
        Some(p) => match std::str::from_utf8(p) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(format!("the value is not valid UTF-8: {e}")),
        },
        None => Err("the record has no value (a tombstone)".to_string()),
    }
}

fn decode_bytes(m: &BorrowedMessage<'_>) -> std::result::Result<Vec<u8>, String> {
    Ok(m.payload().map(<[u8]>::to_vec).unwrap_or_default())
}

fn decode_record(m: &BorrowedMessage<'_>) -> std::result::Result<KafkaRecord, String> {
    let headers = match m.headers() {
        Some(hs) => hs
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect(),
        None => Vec::new(),
    };
    Ok(KafkaRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    })
}

/// The constructors. They sit on `KafkaSource<Vec<u8>>` only so that the record type can be
/// named on the method, as in `KafkaSource::json::<Bid>(...)`; each returns the source of its
/// own record type.
impl KafkaSource<Vec<u8>> {
    /// Reads `topics` from `kafka`, decoding each value as a JSON `T`.
    pub fn json<T: Data>(
        kafka: KafkaConfig,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> KafkaSource<T> {
        Self::json_with(KafkaSourceConfig::new(kafka, topics))
    }

    /// Like [`KafkaSource::json`], with every setting from `config`.
    pub fn json_with<T: Data>(config: KafkaSourceConfig) -> KafkaSource<T> {
        KafkaSource::with_decoder(config, decode_json::<T>)
    }

    /// Reads `topics` from `kafka`, each value as UTF-8 text (a value that is not UTF-8 is a
    /// bad record).
    pub fn strings(
        kafka: KafkaConfig,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> KafkaSource<String> {
        Self::strings_with(KafkaSourceConfig::new(kafka, topics))
    }

    /// Like [`KafkaSource::strings`], with every setting from `config`.
    pub fn strings_with(config: KafkaSourceConfig) -> KafkaSource<String> {
        KafkaSource::with_decoder(config, decode_string)
    }

    /// Reads `topics` from `kafka`, each value as raw bytes (empty for a tombstone).
    pub fn bytes(
        kafka: KafkaConfig,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> KafkaSource<Vec<u8>> {
        Self::bytes_with(KafkaSourceConfig::new(kafka, topics))
    }

    /// Like [`KafkaSource::bytes`], with every setting from `config`.
    pub fn bytes_with(config: KafkaSourceConfig) -> KafkaSource<Vec<u8>> {
        KafkaSource::with_decoder(config, decode_bytes)
    }

    /// Reads `topics` from `kafka`, each record whole: key, value, headers, topic, partition,
    /// offset and timestamp.
    pub fn records(
        kafka: KafkaConfig,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> KafkaSource<KafkaRecord> {
        Self::records_with(KafkaSourceConfig::new(kafka, topics))
    }

    /// Like [`KafkaSource::records`], with every setting from `config`.
    pub fn records_with(config: KafkaSourceConfig) -> KafkaSource<KafkaRecord> {
        KafkaSource::with_decoder(config, decode_record)
    }
}

impl<T> KafkaSource<T> {
    fn with_decoder(config: KafkaSourceConfig, decode: Decode<T>) -> Self {
        KafkaSource {
            config,
            decode,
            client: None,
            partitions: Vec::new(),
            initial: None,
            pattern: None,
            _records: PhantomData,
        }
    }

    /// Also reads every topic whose whole name matches the regular expression `pattern`,
    /// including topics created while the job runs (see
    /// [`KafkaSourceConfig::topic_pattern`]).
    pub fn topic_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.config.topic_pattern = Some(pattern.into());
        self
    }

    /// How often to look for new partitions and topics (default 30 s; zero turns it off).
    pub fn discovery_interval(mut self, every: Duration) -> Self {
        self.config.discovery_interval = every;
        self
    }

    /// Whether to commit completed offsets to the consumer group (default on), and how often.
    pub fn commit_offsets(mut self, on: bool, every: Duration) -> Self {
        self.config.commit_offsets = on;
        self.config.commit_interval = every;
        self
    }

    /// The settings.
    pub fn config(&self) -> &KafkaSourceConfig {
        &self.config
    }

    /// Where to start reading each partition (default [`StartAt::Earliest`]).
    pub fn start(mut self, start: StartAt) -> Self {
        self.config.start = start;
        self
    }

    /// The consumer group whose committed offsets [`StartAt::Committed`] reads (default
    /// `"runnel"`).
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.config.group_id = group.into();
        self
    }

    /// Where records get their event time (default [`EventTimeFrom::KafkaTimestamp`]).
    pub fn event_time(mut self, from: EventTimeFrom) -> Self {
        self.config.event_time = from;
        self
    }

    /// Reads each partition until it has caught up with its end, then finishes (see
    /// [`KafkaSourceConfig::stop_at_end`]).
    pub fn stop_at_end(mut self) -> Self {
        self.config.stop_at_end = true;
        self
    }

    /// How long the brokers may stay unreachable before the job fails (default 60 s).
    pub fn max_unavailable(mut self, d: Duration) -> Self {
        self.config.max_unavailable = d;
        self
    }
}

impl<T: Data> Source for KafkaSource<T> {
    type Item = T;

    fn partitions(&mut self, ctx: &SourceContext) -> Result<Vec<String>> {
        let first = self.initial.is_none();
        match self.list_partitions(ctx) {
            Ok(parts) => {
                if first {
                    self.initial = Some(parts.iter().cloned().collect());
                }
                let names = parts.iter().map(|(t, p)| format!("{t}/{p}")).collect();
                self.partitions = parts;
                Ok(names)
            }
            Err(e) if first => Err(e),
            Err(e) => {
                // A later discovery that fails (brokers away, a topic deleted) changes nothing;
                // the readers report unreachable brokers themselves.
                tracing::warn!("source '{}': partition discovery failed: {e}", ctx.name);
                Ok(self
                    .partitions
                    .iter()
                    .map(|(t, p)| format!("{t}/{p}"))
                    .collect())
            }
        }
    }

    fn discovery_interval(&self) -> Option<Duration> {
        let every = self.config.discovery_interval;
        (!self.config.stop_at_end && !every.is_zero()).then_some(every)
    }

    /// Flink's Kafka assignment: a topic's partitions go round-robin from a worker chosen by
    /// the topic's name, so that every worker can place a partition from its name alone.
    fn owner(&self, name: &str, _index: usize, workers: usize) -> usize {
        match name.rsplit_once('/') {
            Some((topic, p)) => {
                let p: usize = p.parse().unwrap_or(0);
                (topic_start(topic, workers) + p) % workers
            }
            None => 0,
        }
    }

    fn open(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<T>>> {
        if self.client.is_none() {
            self.partitions(ctx)?;
        }
        let client = self.client.clone().expect("connected by partitions()");
        let Some((topic, p)) = self.partitions.get(partition.0 as usize).cloned() else {
            return Err(client.error(format!(
                "there are {} partitions, cannot open partition {}",
                self.partitions.len(),
                partition.0
            )));
        };
        let discovered = self
            .initial
            .as_ref()
            .is_some_and(|first| !first.contains(&(topic.clone(), p)));
        let start = if discovered {
            Some(super::OLDEST)
        } else {
            None
        };
        let reader = client.open(&self.config, &topic, p, start, self.decode)?;
        Ok(Box::new(reader))
    }

    /// Seeks straight to `next` (restoring a checkpoint).
    fn resume(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
        next: u64,
    ) -> Result<Box<dyn PartitionReader<T>>> {
        if self.client.is_none() {
            self.partitions(ctx)?;
        }
        let client = self.client.clone().expect("connected by partitions()");
        let Some((topic, p)) = self.partitions.get(partition.0 as usize).cloned() else {
            return Err(client.error(format!(
                "there are {} partitions, cannot resume partition {}",
                self.partitions.len(),
                partition.0
            )));
        };
        let start = Some(Offset::Offset(next as i64));
        let reader = client.open(&self.config, &topic, p, start, self.decode)?;
        Ok(Box::new(reader))
    }
}

impl<T> KafkaSource<T> {
    /// The sorted `(topic, partition)` list: the listed topics and those matching the pattern.
    fn list_partitions(&mut self, ctx: &SourceContext) -> Result<Vec<(String, i32)>> {
        let fail = |reason: String| Error::Source {
            source_name: ctx.name.clone(),
            reason,
        };
        self.config.validate().map_err(fail)?;
        if self.pattern.is_none() {
            if let Some(p) = &self.config.topic_pattern {
                // Anchored: the whole name must match, as Kafka's Java clients do.
                let re = Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| fail(format!("topic_pattern '{p}': {e}")))?;
                self.pattern = Some(re);
            }
        }
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(WorkerClient::connect(&self.config, ctx)?);
                self.client = Some(c.clone());
                c
            }
        };
        let mut topics: BTreeSet<String> = self
            .config
            .topics
            .iter()
            .map(|t| t.trim().to_string())
            .collect();
        if let Some(re) = &self.pattern {
            for t in client.all_topics()? {
                if !t.starts_with("__") && re.is_match(&t) {
                    topics.insert(t);
                }
            }
        }
        let mut parts = Vec::new();
        for topic in topics {
            for p in client.topic_partitions(&topic)? {
                parts.push((topic.clone(), p));
            }
        }
        parts.sort();
        Ok(parts)
    }
}

/// The first worker of `topic`'s partitions, as Flink's `KafkaTopicPartitionAssigner` has it:
/// `((topic.hashCode() * 31) & 0x7FFFFFFF) % workers`.
pub(super) fn topic_start(topic: &str, workers: usize) -> usize {
    ((java_hash(topic).wrapping_mul(31) & 0x7FFF_FFFF) as usize) % workers
}

/// Java's `String.hashCode`: over UTF-16 code units, `h = 31 * h + unit`, wrapping.
pub(super) fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32))
}

/// One worker's consumer, shared by the readers of the partitions this worker reads, and what
/// it knows about the brokers' health.
struct WorkerClient {
    consumer: Arc<BaseConsumer<ClientEvents>>,
    source: String,
    bootstrap: String,
    request_timeout: Duration,
    max_unavailable: Duration,
    /// A topic to ask for metadata when checking whether the brokers are back (`None`: ask
    /// for all topics).
    probe_topic: Option<String>,
    health: Mutex<Health>,
    /// Offsets to commit to the group (`None`: commits are off).
    commits: Option<Mutex<Commits>>,
    /// Bytes of record values read.
    bytes_in: Arc<Counter>,
    /// Offset commits sent to the group.
    commits_sent: Arc<Counter>,
    /// Offsets a reader went past because the partition no longer held them (deleted by
    /// retention while the job was down or behind).
    offsets_skipped: Arc<Counter>,
}

/// Completed offsets waiting to be committed.
struct Commits {
    every: Duration,
    last: Instant,
    /// The next offset to commit, per partition (only those that moved since the last commit).
    pending: BTreeMap<(String, i32), i64>,
}

/// Whether the brokers answer, as far as the readers can tell.
#[derive(Default)]
struct Health {
    /// When the first error since the last record read was reported.
    failing_since: Option<Instant>,
    /// The last error reported.
    last_error: Option<String>,
    /// When the brokers were last asked whether they are back.
    last_probe: Option<Instant>,
}

impl WorkerClient {
    fn connect(config: &KafkaSourceConfig, ctx: &SourceContext) -> Result<Self> {
        let kafka = &config.kafka;
        let client_id = format!("runnel-{}-{}", ctx.name, ctx.worker);
        let defaults = [
            ("client.id", client_id.clone()),
            // Needed by assign() and committed offsets; the consumer never joins the group.
            ("group.id", config.group_id.clone()),
            ("enable.auto.commit", "false".to_string()),
            ("enable.auto.offset.store", "false".to_string()),
            ("auto.offset.reset", "earliest".to_string()),
            // The partition's queue says when the reader caught up: a reader with
            // stop_at_end finishes there, and one that still expects its first offset learns
            // whether the partition ends before it.
            ("enable.partition.eof", "true".to_string()),
            // Throughput: fetch again as soon as the queue drains, and keep plenty queued.
            ("fetch.queue.backoff.ms", "0".to_string()),
            ("queued.min.messages", "1000000".to_string()),
            (
                "socket.connection.setup.timeout.ms",
                kafka.request_timeout.as_millis().to_string(),
            ),
        ];
        let events = ClientEvents::new(format!("source '{}' worker {}", ctx.name, ctx.worker));
        let consumer: BaseConsumer<ClientEvents> = kafka
            .client_config(&defaults)
            .create_with_context(events)
            .map_err(|e| Error::Source {
                source_name: ctx.name.clone(),
                reason: format!(
                    "cannot create a Kafka consumer for {}: {e}",
                    kafka.bootstrap
                ),
            })?;
        Ok(WorkerClient {
            consumer: Arc::new(consumer),
            source: ctx.name.clone(),
            bootstrap: kafka.bootstrap.clone(),
            request_timeout: kafka.request_timeout,
            max_unavailable: config.max_unavailable,
            probe_topic: config.topics.first().map(|t| t.trim().to_string()),
            health: Mutex::new(Health::default()),
            commits: config.commit_offsets.then(|| {
                Mutex::new(Commits {
                    every: config.commit_interval,
                    last: Instant::now(),
                    pending: BTreeMap::new(),
                })
            }),
            bytes_in: ctx.metrics.counter(&format!("{}.kafka.bytes_in", ctx.name)),
            commits_sent: ctx.metrics.counter(&format!("{}.kafka.commits", ctx.name)),
            offsets_skipped: ctx
                .metrics
                .counter(&format!("{}.kafka.offsets_skipped", ctx.name)),
        })
    }

    /// Every topic in the cluster.
    fn all_topics(&self) -> Result<Vec<String>> {
        let md = self
            .consumer
            .fetch_metadata(None, self.request_timeout)
            .map_err(|e| {
                self.error(format!(
                    "cannot reach the Kafka brokers at {} (no topic list within {}: {e}){}",
                    self.bootstrap,
                    format_duration(self.request_timeout),
                    self.consumer.context().last_error_suffix()
                ))
            })?;
        Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
    }

    /// Every record of `topic/partition` before `next` has been written by every sink.
    fn completed(&self, topic: &str, partition: i32, next: u64) {
        if let Some(c) = &self.commits {
            if let Ok(mut c) = c.lock() {
                c.pending
                    .insert((topic.to_string(), partition), next as i64);
            }
        }
    }

    /// Commits the pending offsets if it is time (or `now`), without waiting for the answer
    /// unless `wait`.
    fn commit(&self, force: bool, mode: CommitMode) {
        let Some(c) = &self.commits else { return };
        let Ok(mut c) = c.lock() else { return };
        if c.pending.is_empty() || (!force && c.last.elapsed() < c.every) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), next) in &c.pending {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*next));
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => {
                self.commits_sent.add(1);
                c.pending.clear();
            }
            Err(e) => tracing::warn!(
                "source '{}': cannot commit offsets to the consumer group: {e}",
                self.source
            ),
        }
        c.last = Instant::now();
    }

    fn error(&self, reason: String) -> Error {
        Error::Source {
            source_name: self.source.clone(),
            reason,
        }
    }

    /// The partitions of `topic`, or an error naming it (or the brokers, if they do not
    /// answer).
    fn topic_partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), self.request_timeout)
            .map_err(|e| {
                self.error(format!(
                    "cannot reach the Kafka brokers at {} (no metadata for topic '{topic}' \
                     within {}: {e}){}",
                    self.bootstrap,
                    format_duration(self.request_timeout),
                    self.consumer.context().last_error_suffix()
                ))
            })?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(self.error(format!(
                "topic '{topic}' does not exist on the Kafka cluster at {}",
                self.bootstrap
            )));
        };
        if let Some(e) = t.error() {
            let code = RDKafkaErrorCode::from(e);
            return Err(self.error(match code {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    format!(
                        "topic '{topic}' does not exist on the Kafka cluster at {}",
                        self.bootstrap
                    )
                }
                other => format!(
                    "cannot read the metadata of topic '{topic}' at {}: {other}",
                    self.bootstrap
                ),
            }));
        }
        if t.partitions().is_empty() {
            return Err(self.error(format!(
                "topic '{topic}' has no partitions on the Kafka cluster at {}",
                self.bootstrap
            )));
        }
        Ok(t.partitions().iter().map(|p| p.id()).collect())
    }

    /// Splits `topic/partition` into its own queue, assigns it at its start offset and
    /// returns its reader.
    fn open<T>(
        self: &Arc<Self>,
        config: &KafkaSourceConfig,
        topic: &str,
        partition: i32,
        start: Option<Offset>,
        decode: Decode<T>,
    ) -> Result<KafkaPartitionReader<T>> {
        let at = |what: &str, e: KafkaError| {
            self.error(format!(
                "{topic}/{partition}: cannot {what} at {} within {}: {e}{}",
                self.bootstrap,
                format_duration(self.request_timeout),
                self.consumer.context().last_error_suffix()
            ))
        };
        // The offset to assign. Only explicit lookups are made here; librdkafka resolves
        // the logical offsets (beginning, end, stored) itself.
        let offset = match config.start {
            // A checkpoint's offset, or the beginning of a partition that appeared while the
            // job ran (it holds only new records).
            _ if start.is_some() => start.expect("checked"),
            StartAt::Earliest => super::OLDEST,
            // Resolved here, not by librdkafka: the reader says where it starts
            // (`start_offset`), so that a checkpoint taken before the partition's first record
            // resumes there instead of at a later end.
            StartAt::Latest => {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, partition, self.request_timeout)
                    .map_err(|e| at("look up the end of the partition", e))?;
                Offset::Offset(high)
            }
            StartAt::Timestamp(ts) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(ts))
                    .map_err(|e| at("look up the offset for a timestamp", e))?;
                let found = self
                    .consumer
                    .offsets_for_times(tpl, self.request_timeout)
                    .map_err(|e| at("look up the offset for a timestamp", e))?;
                match found.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
                    // No record at or after the timestamp: start at the end.
                    _ => Offset::End,
                }
            }
            StartAt::Committed => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                let found = self
                    .consumer
                    .committed_offsets(tpl, self.request_timeout)
                    .map_err(|e| at("read the group's committed offset", e))?;
                match found.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
                    // No committed offset: librdkafka applies `auto.offset.reset`.
                    _ => Offset::Stored,
                }
            }
        };
        // Split the partition's queue before it is assigned, so that no record of it ever
        // goes to the consumer's own queue.
        let queue = self
            .consumer
            .split_partition_queue(topic, partition)
            .ok_or_else(|| {
                self.error(format!(
                    "{topic}/{partition}: librdkafka has no queue for this partition"
                ))
            })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, offset)
            .map_err(|e| at("assign the partition", e))?;
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| at("assign the partition", e))?;
        Ok(KafkaPartitionReader {
            client: self.clone(),
            queue,
            topic: topic.to_string(),
            partition,
            decode,
            kafka_time: config.event_time == EventTimeFrom::KafkaTimestamp,
            stop_at_end: config.stop_at_end,
            finished: false,
            // An explicit offset must be the first one read (the checks for tansu's skips);
            // from the oldest record, any first offset is right, and so it is from the end
            // (`latest`: the broker's end, as librdkafka would have resolved it; waiting for
            // the offset before it would seek back on every idle partition, and never see it
            // where it is a transaction marker).
            first: match offset {
                _ if start.is_none() && config.start == StartAt::Latest => None,
                Offset::Offset(o) if offset != super::OLDEST => Some(FirstRecord::new(o, 10_000)),
                _ => None,
            },
            // Where the reader starts, when that is the end it looked up (`latest`). Not for
            // the other starts: `earliest` is the same place after a restart, and from a
            // committed offset or a timestamp a reset by `auto.offset.reset` may take the
            // reader below the offset asked for.
            start: match (offset, &config.start) {
                _ if start.is_some() => None,
                (Offset::Offset(o), StartAt::Latest) => u64::try_from(o).ok(),
                _ => None,
            },
            resumed: start.is_some(),
            next_check: Instant::now() + FIRST_SKIP_CHECK,
            check_every: FIRST_SKIP_CHECK,
            last_polled: Instant::now(),
            last_error_log: None,
            last: None,
        })
    }

    /// The client has reported errors since the last record was read.
    fn failing(&self) -> bool {
        self.health
            .lock()
            .map(|h| h.failing_since.is_some())
            .unwrap_or(false)
    }

    /// A record was read: the brokers are fine.
    fn progress(&self) {
        if let Ok(mut h) = self.health.lock() {
            h.failing_since = None;
        }
    }

    /// The client reported `e` (about `what`).
    fn failed(&self, what: &str, e: &KafkaError) {
        let detail = self.consumer.context().last_error();
        if let Ok(mut h) = self.health.lock() {
            h.failing_since.get_or_insert_with(Instant::now);
            h.last_error = Some(match detail {
                Some(d) => format!("{what}: {e} ({d})"),
                None => format!("{what}: {e}"),
            });
        }
    }

    /// Serves the consumer's own queue (client errors, and nothing else since every partition
    /// has its own queue), and fails once the brokers have been unreachable for too long.
    fn serve(&self) -> Result<()> {
        self.commit(false, CommitMode::Async);
        for _ in 0..16 {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(self.error(format!(
                        "fatal error from the Kafka client for {}: {e}{}",
                        self.bootstrap,
                        self.consumer.context().last_error_suffix()
                    )));
                }
                Some(Err(e)) => self.failed("the consumer", &e),
                Some(Ok(m)) => {
                    // Broken invariant: every assigned partition has its own queue.
                    return Err(self.error(format!(
                        "a record of {}/{} arrived on the consumer's queue instead of its \
                         partition's queue",
                        m.topic(),
                        m.partition()
                    )));
                }
            }
        }
        let mut h = self.health.lock().expect("health lock");
        let Some(since) = h.failing_since else {
            return Ok(());
        };
        // Errors and nothing read: ask the brokers whether they are back, now and then (an
        // idle partition reads nothing even when they are).
        let probe_every = (self.max_unavailable / 4).min(Duration::from_secs(5));
        if h.last_probe.is_none_or(|t| t.elapsed() >= probe_every) {
            h.last_probe = Some(Instant::now());
            let probe = self.consumer.fetch_metadata(
                self.probe_topic.as_deref(),
                self.request_timeout.min(Duration::from_millis(500)),
            );
            if probe.is_ok() {
                h.failing_since = None;
                return Ok(());
            }
        }
        if since.elapsed() >= self.max_unavailable {
            return Err(self.error(format!(
                "the Kafka brokers at {} have been unreachable for {} (max_unavailable): {}",
                self.bootstrap,
                format_duration(self.max_unavailable),
                h.last_error.as_deref().unwrap_or("no error detail")
            )));
        }
        Ok(())
    }

    fn unassign(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        // Best effort: the partition is done; a failure only costs fetching it.
        let _ = self.consumer.incremental_unassign(&tpl);
    }
}

/// Reads one partition from its own queue.
struct KafkaPartitionReader<T> {
    client: Arc<WorkerClient>,
    queue: rdkafka::consumer::base_consumer::PartitionQueue<ClientEvents>,
    topic: String,
    partition: i32,
    decode: Decode<T>,
    /// Event time from the Kafka timestamp (else the job's extractor or ingestion time).
    kafka_time: bool,
    /// Finish at the end of the partition (the consumer reports it, `enable.partition.eof`).
    stop_at_end: bool,
    finished: bool,
    /// Started at an explicit offset (a checkpoint's, the group's or a timestamp's): finding
    /// the first record to push ([`FirstRecord`]: the one at that offset or the next one
    /// there, through tansu's skips, or that the partition now ends before it).
    first: Option<FirstRecord>,
    /// `first` is the engine's position (resuming from a checkpoint), not the group's
    /// committed offset or a timestamp's.
    resumed: bool,
    /// While `first` is set: when to look again whether the broker's answers skipped it,
    /// how long to wait after that, and when the queue last gave anything (records below
    /// the offset wanted included: a seek back reads those first).
    next_check: Instant,
    check_every: Duration,
    last_polled: Instant,
    /// When an error of this partition was last logged.
    last_error_log: Option<Instant>,
    /// The offset of the last record pushed (or the one before the offset wanted, once
    /// [`FirstRecord`] found the partition ends there): a partition's offsets only grow, so a
    /// record at or below it is dropped.
    last: Option<i64>,
    /// The offset the reader was assigned at, when it is an explicit one (every record it
    /// reads is at or after it).
    start: Option<u64>,
}

impl<T> KafkaPartitionReader<T> {
    /// Seeks the partition to `offset` (`why`: for the log) and reads on from there:
    /// librdkafka drops what it fetched before (by its version barrier), so the records that
    /// come next start there.
    fn seek(&mut self, offset: i64, why: &str) -> Result<()> {
        tracing::info!(
            "{}/{}: {why}; reading again from {offset}",
            self.topic,
            self.partition
        );
        self.client
            .consumer
            .seek(
                &self.topic,
                self.partition,
                Offset::Offset(offset),
                self.client.request_timeout,
            )
            .map_err(|e| {
                self.client.error(format!(
                    "{}/{}: cannot seek to offset {offset}: {e}",
                    self.topic, self.partition
                ))
            })?;
        if let Some(first) = self.first.as_mut() {
            first.sought(offset);
        }
        Ok(())
    }

    /// Acts on what [`FirstRecord`] decided at the partition's end or with nothing coming.
    /// `false` if the reader sought (the partition's end is then reported again) or waits.
    fn settle(&mut self, decided: OnEnd, why: &str) -> Result<bool> {
        let want = self.first.as_ref().map_or(0, FirstRecord::want);
        match decided {
            OnEnd::Here { passed } => {
                if passed > 0 {
                    self.skipped(
                        want,
                        passed,
                        &format!("the partition now ends at {}", want + passed as i64),
                    );
                }
                self.first = None;
                // Nothing below `want` is to be pushed from here on.
                self.last = Some(want - 1);
                Ok(true)
            }
            OnEnd::Wait => Ok(false),
            OnEnd::Seek(to) => {
                self.seek(to, &format!("asked for offset {want}, {why}"))?;
                Ok(false)
            }
            OnEnd::WentBack(end) => {
                let found = if end == 0 {
                    "the partition is now empty".to_string()
                } else {
                    format!("the partition now ends at offset {end}")
                };
                if self.resumed {
                    // The checkpoint's state and positions belong to records the partition no
                    // longer has.
                    return Err(self.client.error(format!(
                        "{}/{}: the job resumes at offset {want} of this partition, but \
                         {found}: its offsets went back, so the topic was deleted and made \
                         anew (or the partition truncated) since the checkpoint. The \
                         checkpoint's state and positions belong to the records that were \
                         there; start the job afresh (`runnel run --fresh`, or without its \
                         checkpoints) to read the partition as it is now",
                        self.topic, self.partition
                    )));
                }
                tracing::warn!(
                    "{}/{}: asked for offset {want}, but {found}: the topic was made anew or \
                     the partition truncated; reading the partition from its start, as \
                     auto.offset.reset=earliest does",
                    self.topic,
                    self.partition
                );
                self.first = None;
                self.seek(0, "the partition's offsets went back")?;
                Ok(false)
            }
        }
    }

    /// Counts and logs `passed` offsets from `want` on that the partition no longer holds
    /// (`found`: what the reader found instead).
    fn skipped(&self, want: i64, passed: u64, found: &str) {
        self.client.offsets_skipped.add(passed);
        tracing::warn!(
            "{}/{}: asked for offset {want}, but {found}: offsets {want} to {} hold no record \
             now (deleted by retention, or markers); going on ({passed} offsets counted in \
             kafka.offsets_skipped)",
            self.topic,
            self.partition,
            want + passed as i64 - 1
        );
    }

    /// The partition's first offset and end (the offset after its last record), or `None` if
    /// the broker does not answer (logged).
    fn partition_bounds(&self) -> Option<(i64, i64)> {
        match self.client.consumer.fetch_watermarks(
            &self.topic,
            self.partition,
            self.client.request_timeout,
        ) {
            Ok(bounds) => Some(bounds),
            Err(e) => {
                tracing::warn!(
                    "{}/{}: cannot look up the end of the partition: {e}",
                    self.topic,
                    self.partition
                );
                None
            }
        }
    }

    /// Nothing came yet from the offset wanted, and the queue has been empty for a while:
    /// [`FirstRecord::idle`] (the partition ends there, or read again from further back).
    /// Checks more seldom each time.
    fn check_skipped(&mut self) -> Result<()> {
        let now = Instant::now();
        if now < self.next_check
            || now.duration_since(self.last_polled) < FIRST_SKIP_CHECK
            || self.client.failing()
        {
            return Ok(());
        }
        self.check_every = (self.check_every * 2).min(Duration::from_secs(5));
        self.next_check = now + self.check_every;
        let Some(first) = self.first.as_mut() else {
            return Ok(());
        };
        let decided = first.idle();
        self.settle(decided, "nothing came back").map(|_| ())
    }
}

/// How long the queue of a reader that started at an explicit offset stays empty before the
/// reader looks whether the broker skipped its first record.
const FIRST_SKIP_CHECK: Duration = Duration::from_millis(500);

impl<T: Data> PartitionReader<T> for KafkaPartitionReader<T> {
    fn start_offset(&self) -> Option<u64> {
        self.start
    }

    fn read(&mut self, out: &mut Reader<T>) -> Result<ReadStatus> {
        if self.finished {
            return Ok(ReadStatus::Finished);
        }
        let budget = out.budget();
        let mut bytes = 0u64;
        let mut n = 0;
        let mut error = None;
        while n < budget {
            let polled = self.queue.poll(Duration::ZERO);
            if polled.is_some() && self.first.is_some() {
                self.last_polled = Instant::now();
            }
            match polled {
                None => break,
                Some(Ok(m)) => {
                    let offset = m.offset();
                    if self.last.is_some_and(|last| offset <= last) {
                        continue;
                    }
                    if let Some(first) = self.first.as_mut() {
                        match first.record(offset) {
                            OnRecord::Drop => continue,
                            OnRecord::Start { passed } => {
                                if passed > 0 {
                                    let want = first.want();
                                    self.skipped(
                                        want,
                                        passed,
                                        &format!("the partition's first record is at {offset}"),
                                    );
                                }
                                self.first = None;
                            }
                            OnRecord::SeekBack(to) => {
                                let want = first.want();
                                self.seek(
                                    to,
                                    &format!("asked for offset {want}, the broker answered from {offset}"),
                                )?;
                                break;
                            }
                        }
                    }
                    self.last = Some(offset);
                    bytes += m.payload_len() as u64;
                    match (self.decode)(&m) {
                        Ok(item) => {
                            let ts = if self.kafka_time {
                                m.timestamp().to_millis()
                            } else {
                                None
                            };
                            match ts {
                                Some(ts) => out.push_at(ts, offset as u64, item),
                                None => out.push(offset as u64, item),
                            }
                        }
                        Err(reason) => out.bad(
                            offset as u64,
                            format!("{}/{}@{offset}", self.topic, self.partition),
                            reason,
                            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                        ),
                    }
                    n += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // Every record up to the end the broker reported has been read (reported
                    // once per end, and again after a seek).
                    let ended = if self.first.is_some() {
                        let bounds = self.partition_bounds();
                        let first = self.first.as_mut().expect("checked");
                        let decided = first.end(bounds);
                        self.settle(decided, "the partition's end was reported before it")?
                    } else {
                        true
                    };
                    if self.stop_at_end && ended {
                        self.finished = true;
                    }
                    break;
                }
                Some(Err(e)) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if n > 0 {
            self.client.progress();
            self.client.bytes_in.add(bytes);
        } else if self.first.is_some() {
            self.check_skipped()?;
        }
        if let Some(e) = error {
            let at = format!("{}/{}", self.topic, self.partition);
            if self
                .last_error_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                // The job waits and retries (and fails once the brokers stay unreachable for
                // max_unavailable); say why, now and then.
                self.last_error_log = Some(Instant::now());
                tracing::warn!("{at}: {e}; retrying");
            }
            self.client.failed(&at, &e);
        }
        self.client.serve()?;
        if self.finished {
            self.client.unassign(&self.topic, self.partition);
            return Ok(ReadStatus::Finished);
        }
        Ok(if n == budget {
            ReadStatus::More
        } else {
            ReadStatus::Pending
        })
    }

    fn complete(&mut self, next: u64) -> Result<()> {
        if self.last.is_none() && Some(next) == self.start {
            // Nothing read yet: the group's offset stays as it is (as Flink's does).
            return Ok(());
        }
        self.client.completed(&self.topic, self.partition, next);
        Ok(())
    }
}

impl Drop for WorkerClient {
    /// The last completed offsets go to the group before the consumer closes (unless the
    /// brokers are away, when waiting would only delay the end).
    fn drop(&mut self) {
        let healthy = self
            .health
            .lock()
            .map(|h| h.failing_since.is_none())
            .unwrap_or(false);
        if healthy {
            self.commit(true, CommitMode::Sync);
        }
    }
}
