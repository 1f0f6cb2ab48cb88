//! Plain Kafka clients (rdkafka) for the `runnel` command and the `kafka-w2` job: [`produce`]
//! fills a topic from a generator (`runnel produce`), [`consume`] reads a topic to its end
//! (`runnel consume`), [`ensure_topic`] checks that a topic exists or creates it, and
//! [`EmbeddedKafka`] is an in-process cluster (librdkafka's mock cluster) for runs without a
//! broker.
//!
//! Every client bounds how long connecting may take (`socket.connection.setup.timeout.ms`) and
//! asks the brokers for the topic's metadata, with a timeout, before anything else, so an
//! unreachable broker or a missing topic is an error that names it within seconds. No client
//! asks the brokers to create a topic by asking about it (`allow.auto.create.topics=false`).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use runnel_connectors::kafka::format_duration;
use runnel_connectors::{page_views, Bid};

/// What went wrong talking to Kafka; every variant names the brokers and the topic.
#[derive(Debug, thiserror::Error)]
pub enum KafkaToolError {
    /// The brokers did not answer in time.
    #[error(
        "cannot reach the Kafka brokers at {bootstrap} (no metadata for topic '{topic}' within \
         {timeout}: {detail})"
    )]
    Unreachable {
        /// The bootstrap address.
        bootstrap: String,
        /// The topic asked about.
        topic: String,
        /// How long the client waited.
        timeout: String,
        /// librdkafka's error, and what the client last reported.
        detail: String,
    },
    /// The topic does not exist.
    #[error("topic '{topic}' does not exist on the Kafka cluster at {bootstrap}{hint}")]
    NoTopic {
        /// The bootstrap address.
        bootstrap: String,
        /// The topic.
        topic: String,
        /// What to do about it (starts with "; "), or nothing.
        hint: String,
    },
    /// Anything else: what was being done, and why it failed.
    #[error("{what} (topic '{topic}' at {bootstrap}): {detail}")]
    Failed {
        /// What was being done ("cannot create the topic", ...).
        what: String,
        /// The bootstrap address.
        bootstrap: String,
        /// The topic.
        topic: String,
        /// Why it failed.
        detail: String,
    },
}

/// Shorthand for this module's results.
pub type ToolResult<T> = std::result::Result<T, KafkaToolError>;

// ---------------------------------------------------------------------------------------------
// Clients

/// The context of every client here: keeps librdkafka's last warning or error for the error
/// messages (logged at debug level only, so a failing command prints one clear error, not
/// librdkafka's retries), and counts failed deliveries.
#[derive(Default)]
struct Events {
    last_error: Mutex<Option<String>>,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Events {
    fn remember(&self, what: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(what);
        }
    }

    /// `"; the client last reported: ..."`, or nothing.
    fn last_error_suffix(&self) -> String {
        match self.last_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => format!("; the client last reported: {e}"),
            None => String::new(),
        }
    }

    /// Failed deliveries and the first one's reason.
    fn failures(&self) -> Option<(u64, String)> {
        let n = self.failed.load(Ordering::Relaxed);
        (n > 0).then(|| {
            let first = self.first_failure.lock().ok().and_then(|f| f.clone());
            (n, first.unwrap_or_default())
        })
    }
}

impl ClientContext for Events {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(facility = fac, ?level, "librdkafka: {log_message}");
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.remember(log_message.to_string());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(error = %error, "librdkafka: {reason}");
        // rdkafka also reports each end of partition here: not an error.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            self.remember(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for Events {}

impl ProducerContext for Events {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((e, m)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                if let Ok(mut f) = self.first_failure.lock() {
                    *f = Some(format!("partition {}: {e}", m.partition()));
                }
            }
        }
    }
}

/// The settings every client here shares.
fn client_config(bootstrap: &str, timeout: Duration) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "runnel-cli")
        // librdkafka's floor for this setting is 1 s.
        .set(
            "socket.connection.setup.timeout.ms",
            timeout.as_millis().max(1000).to_string(),
        )
        .set("allow.auto.create.topics", "false");
    c
}

/// The partition ids of `topic`, asking with `client` and waiting at most `timeout`.
fn partitions_of<C: ClientContext>(
    client: &Client<C>,
    events: &Events,
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> ToolResult<Vec<i32>> {
    let md =
        client
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| KafkaToolError::Unreachable {
                bootstrap: bootstrap.to_string(),
                topic: topic.to_string(),
                timeout: format_duration(timeout),
                detail: format!("{e}{}", events.last_error_suffix()),
            })?;
    let missing = || KafkaToolError::NoTopic {
        bootstrap: bootstrap.to_string(),
        topic: topic.to_string(),
        hint: String::new(),
    };
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(missing)?;
    if let Some(e) = t.error() {
        return Err(match RDKafkaErrorCode::from(e) {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => missing(),
            other => KafkaToolError::Failed {
                what: "cannot read the topic's metadata".into(),
                bootstrap: bootstrap.to_string(),
                topic: topic.to_string(),
                detail: other.to_string(),
            },
        });
    }
    if t.partitions().is_empty() {
        return Err(missing());
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Runs a future to completion on this thread (the admin client's futures need no runtime:
/// rdkafka polls the admin client on a thread of its own).
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

/// A topic as [`ensure_topic`] found or made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its partition count.
    pub partitions: usize,
    /// Whether [`ensure_topic`] created it.
    pub created: bool,
}

/// Checks that `topic` exists at `bootstrap`; if it does not and `create` is given, creates it
/// with that many partitions (replication factor 1) and waits until the brokers know it. An
/// existing topic is left as it is, whatever its partition count.
pub fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    create: Option<i32>,
    timeout: Duration,
) -> ToolResult<TopicInfo> {
    let probe: BaseConsumer<Events> = client_config(bootstrap, timeout)
        .set("group.id", "runnel-cli")
        .create_with_context(Events::default())
        .map_err(|e| failed("cannot create a Kafka client", bootstrap, topic, e))?;
    let events = probe.context();
    match partitions_of(probe.client(), events, bootstrap, topic, timeout) {
        Ok(parts) => {
            return Ok(TopicInfo {
                partitions: parts.len(),
                created: false,
            })
        }
        Err(KafkaToolError::NoTopic { .. }) if create.is_some() => {}
        Err(KafkaToolError::NoTopic {
            bootstrap, topic, ..
        }) => {
            return Err(KafkaToolError::NoTopic {
                bootstrap,
                topic,
                hint: "; create it, or give --partitions P to create it with P partitions".into(),
            })
        }
        Err(e) => return Err(e),
    }
    let partitions = create.unwrap_or(1);
    let admin: AdminClient<Events> = client_config(bootstrap, timeout)
        .create_with_context(Events::default())
        .map_err(|e| failed("cannot create a Kafka admin client", bootstrap, topic, e))?;
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let created = block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &opts,
    ))
    .map_err(|e| failed("cannot create the topic", bootstrap, topic, e))?;
    for r in created {
        if let Err((_, code)) = r {
            // Someone else created it meanwhile: fine.
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(failed("cannot create the topic", bootstrap, topic, code));
            }
        }
    }
    // Creation is asynchronous on some brokers: wait until the metadata shows every partition.
    let deadline = Instant::now() + timeout;
    loop {
        match partitions_of(probe.client(), events, bootstrap, topic, timeout) {
            Ok(parts) if parts.len() >= partitions as usize => {
                return Ok(TopicInfo {
                    partitions: parts.len(),
                    created: true,
                })
            }
            Ok(_) | Err(KafkaToolError::NoTopic { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(parts) => {
                return Err(failed(
                    "the topic was created but its metadata does not show it",
                    bootstrap,
                    topic,
                    format!(
                        "{} of {partitions} partitions after {}",
                        parts.len(),
                        format_duration(timeout)
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

fn failed(what: &str, bootstrap: &str, topic: &str, e: impl ToString) -> KafkaToolError {
    KafkaToolError::Failed {
        what: what.to_string(),
        bootstrap: bootstrap.to_string(),
        topic: topic.to_string(),
        detail: e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// produce

/// The users of the `page-views` generator (as `clickstream-sessions` generates them).
pub const PAGE_VIEW_USERS: u64 = 1_000;
/// The seed of the `page-views` generator (as `clickstream-sessions` uses by default).
pub const PAGE_VIEW_SEED: u64 = 7;

/// The records `runnel produce` writes: JSON values, keyed, with the record's event time as
/// the Kafka timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// The benchmark bids `Bid::at(0..events)`, keyed by auction.
    Bids,
    /// Clickstream page views (`page_views(1000 users, events, seed 7)`, in time order,
    /// generated in memory first), keyed by user.
    PageViews,
    /// Nexmark events (`runnel_connectors::nexmark`, default seed, 10,000 events per second
    /// of event time), keyed by the auction of a bid or an auction, the id of a person; event
    /// time as the timestamp.
    Nexmark,
}

/// How [`produce`] compresses its batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (the best ratio here: JSON bids shrink about 4x).
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
}

impl Compression {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// What [`produce`] writes, where, and how fast.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    /// The brokers, `host:port[,host:port...]`.
    pub bootstrap: String,
    /// The topic to write to.
    pub topic: String,
    /// The generator.
    pub generator: Generator,
    /// How many records.
    pub events: u64,
    /// Records per second in total; 0 is as fast as possible.
    pub rate: u64,
    /// How batches are compressed.
    pub compression: Compression,
    /// Create the topic with this many partitions if it does not exist (otherwise a missing
    /// topic is an error).
    pub create_partitions: Option<i32>,
    /// How long the brokers may take to answer a request (and to connect).
    pub timeout: Duration,
}

/// What [`produce`] did.
#[derive(Clone, Debug)]
pub struct Produced {
    /// Records written (and acknowledged).
    pub records: u64,
    /// Bytes of keys and values written.
    pub bytes: u64,
    /// The topic as it was found or created.
    pub topic: TopicInfo,
    /// From the first record sent to the last acknowledged.
    pub elapsed: Duration,
}

/// One generated record: key, JSON value, event time (ms).
struct GenRecord {
    key: String,
    value: Vec<u8>,
    ts: i64,
}

/// The records of a generator, by index.
enum Records {
    Bids,
    PageViews(Vec<runnel_connectors::PageView>),
    Nexmark(runnel_connectors::nexmark::NexmarkConfig),
}

impl Records {
    fn new(generator: Generator, events: u64) -> Self {
        match generator {
            Generator::Bids => Records::Bids,
            Generator::PageViews => {
                Records::PageViews(page_views(PAGE_VIEW_USERS, events, PAGE_VIEW_SEED))
            }
            Generator::Nexmark => {
                Records::Nexmark(runnel_connectors::nexmark::NexmarkConfig::new(events))
            }
        }
    }

    fn record(&self, i: u64) -> GenRecord {
        match self {
            Records::Bids => {
                let b = Bid::at(i);
                GenRecord {
                    key: b.auction.to_string(),
                    value: serde_json::to_vec(&b).expect("a Bid serialises"),
                    ts: b.event_time_ms,
                }
            }
            Records::PageViews(views) => {
                let v = &views[i as usize];
                GenRecord {
                    key: v.user.to_string(),
                    value: serde_json::to_vec(v).expect("a PageView serialises"),
                    ts: v.ts_ms,
                }
            }
            Records::Nexmark(config) => {
                use runnel_connectors::nexmark::Event;
                let e = config.event(i);
                let key = match &e {
                    Event::Person(p) => p.id,
                    Event::Auction(a) => a.id,
                    Event::Bid(b) => b.auction,
                };
                GenRecord {
                    key: key.to_string(),
                    value: e.to_json().into_bytes(),
                    ts: e.date_time(),
                }
            }
        }
    }
}

/// Writes `opts.events` generated records to `opts.topic` with an idempotent producer, keyed
/// (the Java client's murmur2 partitioner, so a key lands where Kafka Streams, Flink and
/// runnel's sink put it), each with its event time as its Kafka timestamp (librdkafka stamps
/// a record whose time is 0, like bid 0, with the current time instead). `progress` is called
/// about once a second with the records acknowledged so far. Returns once every record is
/// acknowledged; fails at the first record that cannot be delivered.
pub fn produce(opts: &ProduceOptions, mut progress: impl FnMut(u64)) -> ToolResult<Produced> {
    let (bootstrap, topic) = (opts.bootstrap.as_str(), opts.topic.as_str());
    let info = ensure_topic(bootstrap, topic, opts.create_partitions, opts.timeout)?;
    let delivery_timeout = Duration::from_secs(60).max(opts.timeout * 4);
    let producer: BaseProducer<Events> = client_config(bootstrap, opts.timeout)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("compression.type", opts.compression.as_librdkafka())
        .set("linger.ms", "10")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        )
        .create_with_context(Events::default())
        .map_err(|e| failed("cannot create a Kafka producer", bootstrap, topic, e))?;
    let events = producer.context();
    let undelivered = |events: &Events| -> ToolResult<()> {
        match events.failures() {
            None => Ok(()),
            Some((n, first)) => Err(failed(
                &format!("{n} record(s) could not be delivered"),
                bootstrap,
                topic,
                format!("the first: {first}"),
            )),
        }
    };
    let records = Records::new(opts.generator, opts.events);
    let count = match &records {
        Records::Bids | Records::Nexmark(_) => opts.events,
        Records::PageViews(v) => v.len() as u64,
    };
    let start = Instant::now();
    let mut last_report = start;
    let mut bytes = 0u64;
    for i in 0..count {
        if opts.rate > 0 {
            // Hold record i back until i / rate seconds have passed.
            let due = Duration::from_secs_f64(i as f64 / opts.rate as f64);
            let now = start.elapsed();
            if due > now {
                producer.poll(due - now);
                std::thread::sleep(due.saturating_sub(start.elapsed()));
            }
        }
        let r = records.record(i);
        bytes += (r.key.len() + r.value.len()) as u64;
        let mut rec = BaseRecord::to(topic).key(&r.key).payload(&r.value);
        if r.ts > 0 {
            rec = rec.timestamp(r.ts);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(5));
                    undelivered(events)?;
                }
                Err((e, _)) => return Err(failed("cannot send a record", bootstrap, topic, e)),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
            undelivered(events)?;
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                progress(i + 1 - producer.in_flight_count().max(0) as u64);
            }
        }
    }
    let flushed = producer.flush(delivery_timeout + opts.timeout);
    undelivered(events)?;
    if let Err(e) = flushed {
        return Err(failed(
            &format!(
                "{} record(s) were still undelivered after {}",
                producer.in_flight_count(),
                format_duration(delivery_timeout + opts.timeout)
            ),
            bootstrap,
            topic,
            format!("{e}{}", events.last_error_suffix()),
        ));
    }
    Ok(Produced {
        records: count,
        bytes,
        topic: info,
        elapsed: start.elapsed(),
    })
}

/// Each partition of `topic`, with its low and high watermarks (the first offset still held,
/// and the offset the next record will get).
pub fn watermarks(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> ToolResult<Vec<(i32, i64, i64)>> {
    let consumer: BaseConsumer<Events> = client_config(bootstrap, timeout)
        .set("group.id", "runnel-cli")
        .create_with_context(Events::default())
        .map_err(|e| failed("cannot create a Kafka client", bootstrap, topic, e))?;
    let parts = partitions_of(
        consumer.client(),
        consumer.context(),
        bootstrap,
        topic,
        timeout,
    )?;
    parts
        .into_iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(|e| failed("cannot read the watermarks", bootstrap, topic, e))?;
            Ok((p, low, high))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// consume

/// Where [`consume`] starts in each partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StartFrom {
    /// The oldest record in the partition.
    #[default]
    Earliest,
    /// The end of the partition: only records written from now on.
    Latest,
}

/// What [`consume`] reads and when it stops.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// The brokers, `host:port[,host:port...]`.
    pub bootstrap: String,
    /// The topic to read (every partition).
    pub topic: String,
    /// Where to start in each partition.
    pub from: StartFrom,
    /// Stop after this many records.
    pub max: Option<u64>,
    /// Keep waiting for new records at the end of the topic (until `max` or `stop`).
    pub follow: bool,
    /// How long the brokers may take to answer a request; without `follow`, also how long the
    /// reader may go without a record or an end-of-partition report before it gives up.
    pub timeout: Duration,
    /// Set to true to stop reading (Ctrl-C).
    pub stop: Arc<AtomicBool>,
}

/// One record as [`consume`] hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, if it has one.
    pub key: Option<&'a [u8]>,
    /// Its value (`None` for a tombstone).
    pub value: Option<&'a [u8]>,
    /// Its timestamp (ms since the Unix epoch), if it has one.
    pub timestamp: Option<i64>,
}

/// What [`consume`] read.
#[derive(Clone, Debug)]
pub struct Consumed {
    /// Records handed over.
    pub records: u64,
    /// The topic's partition count.
    pub partitions: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// Reads every partition of `opts.topic` with a plain consumer (assigned, never joining a
/// group, committing nothing) and hands each record to `each`, until every partition has
/// reported its end (librdkafka's end-of-partition report), `opts.max` records, or
/// `opts.stop`. `each` returns false to stop early.
///
/// Without `opts.follow`, a reader that gets neither a record nor an end-of-partition report
/// for `opts.timeout` fails, naming the partitions that did not report their end.
pub fn consume(
    opts: &ConsumeOptions,
    mut each: impl FnMut(Record<'_>) -> bool,
) -> ToolResult<Consumed> {
    let (bootstrap, topic) = (opts.bootstrap.as_str(), opts.topic.as_str());
    let start = Instant::now();
    let consumer: BaseConsumer<Events> = client_config(bootstrap, opts.timeout)
        .set("group.id", "runnel-cli")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", "0")
        .set("auto.offset.reset", "earliest")
        .create_with_context(Events::default())
        .map_err(|e| failed("cannot create a Kafka consumer", bootstrap, topic, e))?;
    let events = consumer.context();
    let parts = partitions_of(consumer.client(), events, bootstrap, topic, opts.timeout)?;
    let offset = match opts.from {
        StartFrom::Earliest => runnel_connectors::kafka::OLDEST,
        StartFrom::Latest => Offset::End,
    };
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, offset)
            .map_err(|e| failed("cannot assign the partitions", bootstrap, topic, e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| failed("cannot assign the partitions", bootstrap, topic, e))?;
    let max = opts.max.unwrap_or(u64::MAX);
    let mut at_end = BTreeSet::new();
    let mut n = 0u64;
    let mut last_news = Instant::now();
    while n < max && !opts.stop.load(Ordering::Relaxed) {
        if !opts.follow && at_end.len() == parts.len() {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_news = Instant::now();
                at_end.remove(&m.partition());
                n += 1;
                let go_on = each(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    value: m.payload(),
                    timestamp: m.timestamp().to_millis(),
                });
                if !go_on {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_news = Instant::now();
                at_end.insert(p);
            }
            Some(Err(e)) => events.remember(e.to_string()),
            None => {}
        }
        if !opts.follow && last_news.elapsed() >= opts.timeout {
            let waiting: Vec<String> = parts
                .iter()
                .filter(|p| !at_end.contains(*p))
                .map(|p| p.to_string())
                .collect();
            return Err(failed(
                "stopped waiting",
                bootstrap,
                topic,
                format!(
                    "read {n} record(s), then neither a record nor the end of partition(s) {} \
                     within {}{}",
                    waiting.join(", "),
                    format_duration(opts.timeout),
                    events.last_error_suffix()
                ),
            ));
        }
    }
    Ok(Consumed {
        records: n,
        partitions: parts.len(),
        elapsed: start.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------------
// The embedded cluster

/// An in-process Kafka cluster: librdkafka's mock cluster (one broker, listening on
/// 127.0.0.1), for runs without a broker. The cluster lives on a thread of its own (its handle
/// cannot move between threads) and stops when this value is dropped.
///
/// The mock cluster speaks the Kafka protocol to real clients, keeps records in memory, and
/// supports what the connectors use (metadata, produce with the idempotent producer, fetch,
/// offsets); it is not a production broker.
pub struct EmbeddedKafka {
    bootstrap: String,
    /// Dropping it ends the cluster's thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl EmbeddedKafka {
    /// Starts a cluster with `topics` (name, partitions) created.
    pub fn start(topics: &[(&str, i32)]) -> ToolResult<Self> {
        let topics: Vec<(String, i32)> = topics.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<ToolResult<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(failed(
                            "cannot start librdkafka's mock cluster",
                            "(embedded)",
                            "-",
                            e,
                        )));
                        return;
                    }
                };
                let bootstrap = cluster.bootstrap_servers();
                for (t, p) in &topics {
                    if let Err(e) = cluster.create_topic(t, *p, 1) {
                        let _ = ready_tx.send(Err(failed(
                            "cannot create a topic on the mock cluster",
                            &bootstrap,
                            t,
                            e,
                        )));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(bootstrap));
                // Until the handle is dropped (the sender with it).
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| failed("cannot start a thread", "(embedded)", "-", e))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| failed("the mock cluster's thread died", "(embedded)", "-", ""))??;
        Ok(EmbeddedKafka {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The cluster's bootstrap address (`127.0.0.1:PORT`).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
