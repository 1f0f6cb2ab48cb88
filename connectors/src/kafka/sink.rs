//! [`KafkaSink`]: writes a stream's records to a Kafka topic, one librdkafka producer per
//! worker, with the idempotent producer on by default.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use runnel_engine::{Counter, DeadLetter, Epoch, Error, Event, Result, Sink, SinkContext};
use std::collections::{BTreeMap, HashSet};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use runnel_engine::recovery::{decode, encode};
use serde::{Deserialize, Serialize};

use super::config::{format_duration, KafkaConfig, KafkaSinkConfig};
use super::metrics::ProducerEvents;

/// Encodes a record's value into the buffer, or says why it cannot.
type Encode<T> = fn(&T, &mut Vec<u8>) -> std::result::Result<(), String>;

/// Writes a record's key into the buffer and says whether it has one.
type KeyFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) -> bool + Send + Sync>;

/// A record's headers: name and value, in order.
type HeadersFn<T> = Arc<dyn Fn(&T) -> Vec<(String, Vec<u8>)> + Send + Sync>;

/// The header names a dead-letter record carries (see [`KafkaSink::dead_letters`]).
pub mod dead_letter_headers {
    /// Why the record could not be decoded.
    pub const REASON: &str = "runnel.error.reason";
    /// Where it was (`topic/partition@offset`, `file:line`).
    pub const LOCATION: &str = "runnel.error.location";
    /// The source operator that read it.
    pub const SOURCE: &str = "runnel.error.source";
}

/// A sink writing each record to a Kafka topic.
///
/// * **Values.** [`KafkaSink::json`] writes each record as JSON; [`KafkaSink::strings`] and
///   [`KafkaSink::bytes`] write `String`s and `Vec<u8>`s as they are. The Kafka timestamp of
///   each record is its event time (when it is not negative).
/// * **Headers.** [`KafkaSink::headers`] gives each record headers computed from it.
/// * **Dead letters.** [`KafkaSink::dead_letters`] writes a source's undecodable records
///   (its dead-letter stream) to a topic: the raw record as the value, and the reason, the
///   location and the source in headers (see [`dead_letter_headers`]).
/// * **Keys and partitions.** Without a key ([`KafkaSink::key`]) records are spread at random;
///   with one, the Java client's murmur2 partitioner sends equal keys to the same partition,
///   as Kafka Streams and Flink do.
/// * **Delivery.** Each worker has its own producer (idempotent by default, `acks=all`). A full
///   producer queue makes the sink wait (the job slows down; nothing is dropped). A record that
///   librdkafka could not deliver within [`KafkaSinkConfig::delivery_timeout`], after its own
///   retries, fails the job: the error comes back from the next write, epoch end or close.
///   [`Sink::close`] flushes and fails if anything is still undelivered. librdkafka takes a
///   broker's DUPLICATE_SEQUENCE_NUMBER answer to a batch as its delivery (the broker says it
///   has the batch, not where); the first such batch is logged at warn. With
///   [`KafkaSink::exactly_once`] it also fails the job, since its records cannot be counted as
///   written (a broker that advanced the producer's sequence and then failed to store the
///   batch would have lost them): the run that resumes from the last checkpoint reads the
///   topic back and writes them if they are missing.
/// * **Startup.** [`Sink::open`] checks that the topic exists; an unreachable broker or a
///   missing topic fails the job within [`KafkaConfig::request_timeout`] with an error naming
///   the bootstrap address or the topic.
///
/// ```no_run
/// use runnel_connectors::kafka::{KafkaConfig, KafkaSource, KafkaSink};
/// use runnel_engine::{Job, SourceOptions};
///
/// #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// struct Bid { auction: u64, price: u64 }
///
/// let kafka = KafkaConfig::new("127.0.0.1:9092");
/// let job = Job::new("copy", "copies big bids", move |flow| {
///     let bids = KafkaSource::json::<Bid>(kafka.clone(), ["bids"]);
///     flow.source("bids", bids, SourceOptions::new())?
///         .filter(|b| b.price > 100)
///         .sink("big-bids", KafkaSink::json(kafka.clone(), "big-bids")
///             .key(|b: &Bid| Some(b.auction.to_string())))
/// });
/// ```
pub struct KafkaSink<T> {
    config: KafkaSinkConfig,
    encode: Encode<T>,
    key: Option<KeyFn<T>>,
    headers: Option<HeadersFn<T>>,
    /// Open: the producer and the sink's name (for errors).
    producer: Option<BaseProducer<ProducerEvents>>,
    /// Bytes of values written, and waits on a full producer queue.
    counters: Option<(Arc<Counter>, Arc<Counter>)>,
    /// Transactions committed (transactional mode).
    transactions: Option<Arc<Counter>>,
    /// Exactly-once mode: what is held back until checkpoints complete.
    eo: Eo,
    name: String,
    value: Vec<u8>,
    key_buf: Vec<u8>,
}

impl<T> std::fmt::Debug for KafkaSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("config", &self.config)
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

/// A clone has the same settings and no connection (each worker connects its own).
impl<T> Clone for KafkaSink<T> {
    fn clone(&self) -> Self {
        KafkaSink {
            config: self.config.clone(),
            encode: self.encode,
            key: self.key.clone(),
            headers: self.headers.clone(),
            producer: None,
            counters: None,
            transactions: None,
            eo: Eo::default(),
            name: String::new(),
            value: Vec::new(),
            key_buf: Vec::new(),
        }
    }
}

fn encode_json<T: Serialize>(t: &T, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
    serde_json::to_writer(buf, t).map_err(|e| e.to_string())
}

fn encode_string(t: &String, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
    buf.extend_from_slice(t.as_bytes());
    Ok(())
}

// `&Vec<u8>`: it is an `Encode<Vec<u8>>`, whose argument is `&T`.
#[allow(clippy::ptr_arg)]
fn encode_bytes(t: &Vec<u8>, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
    buf.extend_from_slice(t);
    Ok(())
}

impl<T: Serialize> KafkaSink<T> {
    /// Writes each record as JSON to `topic` on `kafka`.
    pub fn json(kafka: KafkaConfig, topic: impl Into<String>) -> Self {
        Self::json_with(KafkaSinkConfig::new(kafka, topic))
    }

    /// Like [`KafkaSink::json`], with every setting from `config`.
    pub fn json_with(config: KafkaSinkConfig) -> Self {
        Self::with_encoder(config, encode_json::<T>)
    }
}

impl KafkaSink<String> {
    /// Writes each string as it is (UTF-8) to `topic` on `kafka`.
    pub fn strings(kafka: KafkaConfig, topic: impl Into<String>) -> Self {
        Self::strings_with(KafkaSinkConfig::new(kafka, topic))
    }

    /// Like [`KafkaSink::strings`], with every setting from `config`.
    pub fn strings_with(config: KafkaSinkConfig) -> Self {
        Self::with_encoder(config, encode_string)
    }
}

impl KafkaSink<Vec<u8>> {
    /// Writes each byte vector as it is to `topic` on `kafka`.
    pub fn bytes(kafka: KafkaConfig, topic: impl Into<String>) -> Self {
        Self::bytes_with(KafkaSinkConfig::new(kafka, topic))
    }

    /// Like [`KafkaSink::bytes`], with every setting from `config`.
    pub fn bytes_with(config: KafkaSinkConfig) -> Self {
        Self::with_encoder(config, encode_bytes)
    }
}

/// The header an exactly-once record carries: `<sink>/<worker>:e<epoch>:<hash>` for a record
/// written once its epoch was over (the hash, 16 hex digits, is of the record's key, value,
/// timestamp and headers), or `<sink>/<worker>:<checkpoint>:<n>` for one held until a
/// checkpoint was complete (before the run's first checkpoint, and with transactions).
pub const EXACTLY_ONCE_HEADER: &str = "runnel.eo";

/// A record held back in exactly-once mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HeldRecord {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    ts: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
}

/// A record to send, borrowed.
struct Outgoing<'a> {
    key: Option<&'a [u8]>,
    value: &'a [u8],
    ts: Option<i64>,
    headers: &'a [(String, Vec<u8>)],
}

/// An epoch's records held in exactly-once mode, encoded one after another into one buffer
/// (no allocation per record).
#[derive(Debug, Default)]
struct EpochRecords {
    bytes: Vec<u8>,
    records: Vec<Held>,
}

/// A record of [`EpochRecords`]: its key (if any), then its value, from `start` in `bytes`.
#[derive(Debug)]
struct Held {
    start: usize,
    key_len: Option<usize>,
    value_len: usize,
    ts: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
    /// [`tag_hash`] of the record.
    hash: u64,
}

impl EpochRecords {
    /// The key and value of `r`.
    fn parts(&self, r: &Held) -> (Option<&[u8]>, &[u8]) {
        let key_len = r.key_len.unwrap_or(0);
        let value = &self.bytes[r.start + key_len..r.start + key_len + r.value_len];
        (r.key_len.map(|n| &self.bytes[r.start..r.start + n]), value)
    }

    /// The records as checkpoints keep them.
    fn into_held_records(self) -> Vec<HeldRecord> {
        self.records
            .iter()
            .map(|r| {
                let (key, value) = self.parts(r);
                HeldRecord {
                    key: key.map(<[u8]>::to_vec),
                    value: value.to_vec(),
                    ts: r.ts,
                    headers: r.headers.clone(),
                }
            })
            .collect()
    }
}

/// Exactly-once mode's state (see [`KafkaSinkConfig::exactly_once`]).
#[derive(Debug, Default)]
struct Eo {
    /// This instance's name in the header: `<sink>/<worker>`.
    instance: String,
    /// Records of epochs no checkpoint covers yet.
    open: BTreeMap<u64, EpochRecords>,
    /// Records covered by a checkpoint, by its id, to write once it is complete.
    sealed: BTreeMap<u64, Vec<HeldRecord>>,
    /// Restored: where to start reading back what this instance already wrote.
    restored_from: Option<BTreeMap<i32, i64>>,
    /// Restored: the `(checkpoint, n)` already in the topic.
    present: HashSet<(u64, u64)>,
    /// Restored: where the previous runs' deliveries ended, per partition.
    delivered_before: BTreeMap<i32, i64>,
    /// Epochs are written as they end (see `Sink::replays`): once the run was restored
    /// from a checkpoint, or one was complete in it. Before that, results are held until the
    /// first checkpoint covers them, as with transactions.
    live: bool,
    /// The last epoch the engine said is over.
    done: Option<u64>,
    /// Restored: how many records of each `(epoch, hash)` tag are already in the topic.
    written: std::collections::HashMap<(u64, u64), u32>,
    /// The newest epoch in `written`.
    written_through: u64,
    /// Time spent sending epochs, and flushing before checkpoints (logged at close).
    send_time: Duration,
    flush_time: Duration,
    /// Waits on a full producer queue while sending epochs (logged at close).
    send_waits: u64,
    /// Epochs sent whose records are not all delivered yet, with how many were sent (a
    /// checkpoint of the epoch waits for them).
    unacked: BTreeMap<u64, u64>,
    /// Per epoch sent in this run: where each partition's delivered records ended when its
    /// sending began. Every record of the epoch, and of later ones, lies after; and it is a
    /// batch boundary (delivery reports come a whole batch at a time), where a read-back can
    /// start (tansu 0.6 answers a fetch from inside a batch with the next batch).
    boundaries: BTreeMap<u64, BTreeMap<i32, i64>>,
    /// Records of sealed checkpoints were sent since the last flush (they are not counted per
    /// epoch, so the next checkpoint flushes).
    sealed_unflushed: bool,
}

/// A record's tag hash (XXH3, 64 bits): the same for the same key, value, timestamp and
/// headers in every run and every build.
fn tag_hash(
    key: Option<&[u8]>,
    value: &[u8],
    ts: Option<i64>,
    headers: &[(String, Vec<u8>)],
) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    // Whether there is a key and a timestamp, the timestamp, and the number of headers.
    let mut meta = [0u8; 18];
    meta[0] = u8::from(key.is_some());
    if let Some(ts) = ts {
        meta[1] = 1;
        meta[2..10].copy_from_slice(&ts.to_le_bytes());
    }
    meta[10..].copy_from_slice(&(headers.len() as u64).to_le_bytes());
    // Each part hashed whole (XXH3 hashes the length too), seeded with what came before.
    let mut h = xxh3_64_with_seed(value, xxh3_64(&meta));
    if let Some(k) = key {
        h = xxh3_64_with_seed(k, h);
    }
    for (k, v) in headers {
        h = xxh3_64_with_seed(k.as_bytes(), h);
        h = xxh3_64_with_seed(v, h);
    }
    h
}

/// Appends `h` as 16 lowercase hex digits.
fn push_hex(out: &mut Vec<u8>, h: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 16];
    for (i, b) in h.to_be_bytes().into_iter().enumerate() {
        hex[2 * i] = DIGITS[usize::from(b >> 4)];
        hex[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out.extend_from_slice(&hex);
}

/// What a read-back found of an instance's records: checkpoint tags `(checkpoint, n)`, and how
/// many of each epoch tag `(epoch, hash)`.
type Found = (
    HashSet<(u64, u64)>,
    std::collections::HashMap<(u64, u64), u32>,
);

/// What a checkpoint keeps of [`Eo`].
#[derive(Serialize, Deserialize)]
struct EoState {
    sealed: BTreeMap<u64, Vec<HeldRecord>>,
    /// Per partition, where a read-back starts: after every record this instance delivered
    /// before the checkpoint, and before every record of a later epoch.
    delivered: BTreeMap<i32, i64>,
}

/// The raw record, as it was read (lossily as UTF-8).
fn encode_dead_letter(d: &DeadLetter, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
    buf.extend_from_slice(d.raw.as_bytes());
    Ok(())
}

impl KafkaSink<DeadLetter> {
    /// Writes dead letters (from [`runnel_engine::Flow::source_with_dead_letters`]) to
    /// `topic`: the raw record as the value, with the headers of [`dead_letter_headers`].
    pub fn dead_letters(kafka: KafkaConfig, topic: impl Into<String>) -> Self {
        Self::with_encoder(KafkaSinkConfig::new(kafka, topic), encode_dead_letter).headers(
            |d: &DeadLetter| {
                vec![
                    (
                        dead_letter_headers::REASON.to_string(),
                        d.reason.clone().into_bytes(),
                    ),
                    (
                        dead_letter_headers::LOCATION.to_string(),
                        d.location.clone().into_bytes(),
                    ),
                    (
                        dead_letter_headers::SOURCE.to_string(),
                        d.source.clone().into_bytes(),
                    ),
                ]
            },
        )
    }
}

impl<T> KafkaSink<T> {
    fn with_encoder(config: KafkaSinkConfig, encode: Encode<T>) -> Self {
        KafkaSink {
            config,
            encode,
            key: None,
            headers: None,
            producer: None,
            counters: None,
            transactions: None,
            eo: Eo::default(),
            name: String::new(),
            value: Vec::new(),
            key_buf: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &KafkaSinkConfig {
        &self.config
    }

    /// Gives each record the key `key(record)` (`None`: no key). Equal keys go to the same
    /// partition.
    pub fn key<K: AsRef<[u8]>>(
        mut self,
        key: impl Fn(&T) -> Option<K> + Send + Sync + 'static,
    ) -> Self {
        self.key = Some(Arc::new(move |t: &T, buf: &mut Vec<u8>| match key(t) {
            Some(k) => {
                buf.extend_from_slice(k.as_ref());
                true
            }
            None => false,
        }));
        self
    }

    /// Gives each record the headers `headers(record)`: name and value, in order.
    pub fn headers(
        mut self,
        headers: impl Fn(&T) -> Vec<(String, Vec<u8>)> + Send + Sync + 'static,
    ) -> Self {
        self.headers = Some(Arc::new(headers));
        self
    }

    /// Writes each result exactly once across crashes and restarts (see
    /// [`KafkaSinkConfig::exactly_once`]; the run must take checkpoints).
    pub fn exactly_once(mut self) -> Self {
        self.config.exactly_once = true;
        self
    }

    /// Writes each checkpoint's results in one Kafka transaction, with the `transactional.id`
    /// `<prefix>-<sink>-<worker>` (see [`KafkaSinkConfig::transactional_id`]); implies
    /// [`KafkaSink::exactly_once`]. For clusters that implement transactions (tansu does not).
    pub fn transactional(mut self, prefix: impl Into<String>) -> Self {
        self.config.transactional_id = Some(prefix.into());
        self
    }

    /// Turns the idempotent producer on or off (default on).
    pub fn idempotence(mut self, on: bool) -> Self {
        self.config.idempotence = on;
        self
    }

    /// How long the producer waits for more records before it sends a batch (default 5 ms).
    pub fn linger(mut self, d: Duration) -> Self {
        self.config.linger = d;
        self
    }

    /// How long librdkafka retries a record before the job fails (default 60 s).
    pub fn delivery_timeout(mut self, d: Duration) -> Self {
        self.config.delivery_timeout = d;
        self
    }

    fn error(&self, reason: String) -> Error {
        Error::Sink {
            sink: self.name.clone(),
            reason,
        }
    }

    /// Exactly-once mode: encodes `records` and holds them until their epoch is over (or,
    /// before the first checkpoint, until a checkpoint covers them).
    fn hold(&mut self, epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        let held = self.eo.open.entry(epoch.0).or_default();
        for e in records.drain(..) {
            let start = held.bytes.len();
            let has_key = self
                .key
                .as_ref()
                .is_some_and(|k| k(&e.data, &mut held.bytes));
            if !has_key {
                held.bytes.truncate(start);
            }
            let key_len = has_key.then(|| held.bytes.len() - start);
            let value_start = held.bytes.len();
            if let Err(reason) = (self.encode)(&e.data, &mut held.bytes) {
                held.bytes.truncate(start);
                return Err(Error::Sink {
                    sink: self.name.clone(),
                    reason: format!(
                        "cannot encode a record for topic '{}': {reason}",
                        self.config.topic
                    ),
                });
            }
            let ts = (e.ts >= 0).then_some(e.ts);
            let headers = self
                .headers
                .as_ref()
                .map(|h| h(&e.data))
                .unwrap_or_default();
            let key = key_len.map(|_| &held.bytes[start..value_start]);
            let hash = tag_hash(key, &held.bytes[value_start..], ts, &headers);
            held.records.push(Held {
                start,
                key_len,
                value_len: held.bytes.len() - value_start,
                ts,
                headers,
                hash,
            });
        }
        Ok(())
    }

    /// Writes the records of every sealed checkpoint up to `id`, skipping those a restored
    /// run found already in the topic.
    fn send_sealed(&mut self, id: u64) -> Result<()> {
        let later = self.eo.sealed.split_off(&(id.saturating_add(1)));
        let due = std::mem::replace(&mut self.eo.sealed, later);
        let Some(producer) = self.producer.as_ref() else {
            return Err(self.error("the Kafka sink was written before open".into()));
        };
        let topic = self.config.topic.as_str();
        let transactional = self.config.transactional_id.is_some();
        let timeout = self.config.delivery_timeout + self.config.kafka.request_timeout;
        let txn_error = |what: &str, e: KafkaError| Error::Sink {
            sink: self.name.clone(),
            reason: format!(
                "cannot {what} a Kafka transaction for topic '{topic}' at {}: {e}",
                self.config.kafka.bootstrap
            ),
        };
        // A transaction begins with the first record still to write.
        let mut begun = false;
        let mut bytes = 0u64;
        let mut waits = 0u64;
        for (ckpt, records) in due {
            for (n, r) in records.iter().enumerate() {
                if self.eo.present.contains(&(ckpt, n as u64)) {
                    continue;
                }
                let tag = format!("{}:{ckpt}:{n}", self.eo.instance);
                let r = Outgoing {
                    key: r.key.as_deref(),
                    value: &r.value,
                    ts: r.ts,
                    headers: &r.headers,
                };
                bytes += r.value.len() as u64;
                if transactional && !begun {
                    producer
                        .begin_transaction()
                        .map_err(|e| txn_error("begin", e))?;
                    begun = true;
                }
                if let Err(e) = self.produce(producer, &r, tag.as_bytes(), 0, &mut waits) {
                    if begun {
                        let _ = producer.abort_transaction(timeout);
                    }
                    return Err(e);
                }
                self.eo.sealed_unflushed = true;
            }
        }
        if begun {
            // Commit flushes first: every record of the transaction is delivered or the
            // commit fails (and the job with it; a restart writes the checkpoint again).
            if let Err(e) = producer.commit_transaction(timeout) {
                let _ = producer.abort_transaction(timeout);
                return Err(txn_error("commit", e));
            }
            if let Some(t) = &self.transactions {
                t.add(1);
            }
        }
        producer.poll(Duration::ZERO);
        if let Some((b, w)) = &self.counters {
            b.add(bytes);
            w.add(waits);
        }
        self.check_deliveries()
    }

    /// Forgets the records of the epochs whose records have all been delivered.
    fn prune_delivered(&mut self) {
        let Some(p) = &self.producer else { return };
        p.poll(Duration::ZERO);
        let unacked = &mut self.eo.unacked;
        p.context().with_deliveries(|d| {
            unacked.retain(|epoch, sent| {
                let done = d.acked.get(epoch).is_some_and(|n| n >= sent);
                if done {
                    d.acked.remove(epoch);
                }
                !done
            });
        });
    }

    /// The state of a checkpoint of the epochs up to `through` once the sink writes epochs as
    /// they end: every record of those epochs is delivered (the engine waited for it, see
    /// `ready_for_checkpoint`; otherwise, as for the job's final checkpoint, this flushes), and
    /// the read-back starts before the first delivered record of any later epoch (written
    /// already when the engine waited, or several checkpoints fell due at once).
    fn live_snapshot(&mut self, through: u64) -> Result<Vec<u8>> {
        self.prune_delivered();
        let undelivered = self.eo.unacked.range(..=through).next().is_some();
        if std::mem::take(&mut self.eo.sealed_unflushed) || undelivered {
            if let Some(p) = &self.producer {
                let timeout = self.config.delivery_timeout + self.config.kafka.request_timeout;
                p.flush(timeout)
                    .map_err(|e| self.error(format!("cannot flush before a checkpoint: {e}")))?;
            }
        }
        self.check_deliveries()?;
        self.prune_delivered();
        if self.eo.unacked.range(..=through).next().is_some() {
            return Err(self.error(format!(
                "records of epochs up to {through} were still undelivered after a flush"
            )));
        }
        // Where a read-back starts: before every record of a later epoch. While the epochs a
        // restored run found written (by earlier runs, before this run's deliveries) go past
        // `through`, that is where this run's read-back started.
        let mut delivered = self.eo.delivered_before.clone();
        if through >= self.eo.written_through {
            let ends = match self.eo.boundaries.range(through.saturating_add(1)..).next() {
                Some((_, at)) => at.clone(),
                None => self
                    .producer
                    .as_ref()
                    .map(|p| p.context().delivered())
                    .unwrap_or_default(),
            };
            delivered.extend(ends);
        }
        // Only later epochs matter to later checkpoints.
        self.eo.boundaries = self.eo.boundaries.split_off(&through.saturating_add(1));
        encode(&EoState {
            sealed: self.eo.sealed.clone(),
            delivered,
        })
    }

    /// Sends `r` with the exactly-once header `tag`, waiting while the producer queue is full
    /// (counted in `waits`).
    fn produce(
        &self,
        producer: &BaseProducer<ProducerEvents>,
        r: &Outgoing<'_>,
        tag: &[u8],
        opaque: usize,
        waits: &mut u64,
    ) -> Result<()> {
        let topic = self.config.topic.as_str();
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 1);
        for (k, v) in r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(&v[..]),
            });
        }
        headers = headers.insert(Header {
            key: EXACTLY_ONCE_HEADER,
            value: Some(tag),
        });
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, opaque)
                .payload(r.value)
                .headers(headers);
        if let Some(k) = r.key {
            record = record.key(k);
        }
        if let Some(ts) = r.ts {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    *waits += 1;
                    producer.poll(Duration::from_millis(5));
                    if producer.context().failures().is_some() {
                        // The caller's check of deliveries reports it.
                        return Ok(());
                    }
                }
                Err((err, _)) => {
                    return Err(Error::Sink {
                        sink: self.name.clone(),
                        reason: format!("cannot send a record to topic '{topic}': {err}"),
                    });
                }
            }
        }
    }

    /// Writes the held records of every epoch up to `through` with their epoch tags, skipping
    /// those a restored run found already in the topic.
    fn send_epochs(&mut self, through: u64) -> Result<()> {
        let later = self.eo.open.split_off(&(through.saturating_add(1)));
        let due = std::mem::replace(&mut self.eo.open, later);
        let Some(producer) = self.producer.as_ref() else {
            return Err(self.error("the Kafka sink was written before open".into()));
        };
        let mut bytes = 0u64;
        let mut waits = 0u64;
        let mut tag = Vec::new();
        let started = std::time::Instant::now();
        let mut written = std::mem::take(&mut self.eo.written);
        for (epoch, records) in due {
            let next = producer.context().delivered();
            self.eo.boundaries.entry(epoch).or_insert(next);
            // The tag: `<instance>:e<epoch>:<hash, 16 hex digits>`.
            tag.clear();
            tag.extend_from_slice(format!("{}:e{epoch}:", self.eo.instance).as_bytes());
            let prefix = tag.len();
            let mut sent = 0;
            for r in &records.records {
                let hash = r.hash;
                let found = (!written.is_empty())
                    .then(|| written.get_mut(&(epoch, hash)))
                    .flatten();
                if let Some(n) = found.filter(|n| **n > 0) {
                    *n -= 1;
                    continue;
                }
                tag.truncate(prefix);
                push_hex(&mut tag, hash);
                let (key, value) = records.parts(r);
                let out = Outgoing {
                    key,
                    value,
                    ts: r.ts,
                    headers: &r.headers,
                };
                bytes += value.len() as u64;
                self.produce(
                    producer,
                    &out,
                    &tag,
                    ProducerEvents::opaque(epoch),
                    &mut waits,
                )?;
                sent += 1;
            }
            if sent > 0 {
                // A checkpoint of this epoch waits until they are delivered.
                self.eo.unacked.insert(epoch, sent);
            }
        }
        if through < self.eo.written_through {
            self.eo.written = written;
        }
        self.eo.send_time += started.elapsed();
        self.eo.send_waits += waits;
        producer.poll(Duration::ZERO);
        if let Some((b, w)) = &self.counters {
            b.add(bytes);
            w.add(waits);
        }
        self.check_deliveries()
    }

    /// Reads the topic from `from` (per partition; the beginning where it has none) to its end
    /// and returns the `(checkpoint, n)` of this instance's records in it.
    fn read_back(&self, from: &BTreeMap<i32, i64>) -> Result<Found> {
        let kafka = &self.config.kafka;
        let topic = &self.config.topic;
        let fail = |what: String| self.error(format!("reading back topic '{topic}': {what}"));
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &kafka.bootstrap)
            .set("group.id", "runnel-exactly-once-readback")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.queue.backoff.ms", "0")
            .set("auto.offset.reset", "earliest");
        if self.config.transactional_id.is_some() {
            // Only committed transactions count as written; an aborted one is written again.
            cfg.set("isolation.level", "read_committed");
        }
        for (k, v) in &kafka.librdkafka_options {
            cfg.set(k, v);
        }
        let consumer: BaseConsumer<ReadBackEvents> = cfg
            .create_with_context(ReadBackEvents)
            .map_err(|e| fail(e.to_string()))?;
        let md = consumer
            .fetch_metadata(Some(topic), kafka.request_timeout)
            .map_err(|e| fail(e.to_string()))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for &p in &parts {
            let at = match from.get(&p) {
                Some(&o) => Offset::Offset(o),
                None => super::OLDEST,
            };
            tpl.add_partition_offset(topic, p, at)
                .map_err(|e| fail(e.to_string()))?;
        }
        consumer.assign(&tpl).map_err(|e| fail(e.to_string()))?;
        let prefix = format!("{}:", self.eo.instance);
        let mut present = HashSet::new();
        let mut written = std::collections::HashMap::new();
        let mut ended = HashSet::new();
        // Starts are batch boundaries (see `Eo::boundaries`): tansu 0.6 answers a fetch from
        // inside a batch with the next batch, or with nothing at all in the last one.
        let mut unchecked: HashSet<i32> = from.keys().copied().collect();
        let mut last = std::time::Instant::now();
        while ended.len() < parts.len() {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last = std::time::Instant::now();
                    let p = m.partition();
                    if unchecked.remove(&p) && from.get(&p).is_some_and(|&o| m.offset() > o) {
                        tracing::warn!(
                            "reading back topic '{topic}' partition {p} from offset {}: the \
                             first record is at {} (deleted records, or a start inside a batch)",
                            from[&p],
                            m.offset()
                        );
                    }
                    ended.remove(&p);
                    let Some(hs) = m.headers() else { continue };
                    for h in hs.iter() {
                        if h.key != EXACTLY_ONCE_HEADER {
                            continue;
                        }
                        let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                            continue;
                        };
                        let Some((c, n)) = v.strip_prefix(&prefix).and_then(|r| r.split_once(':'))
                        else {
                            continue;
                        };
                        if let Some(epoch) = c.strip_prefix('e') {
                            if let (Ok(e), Ok(h)) = (epoch.parse(), u64::from_str_radix(n, 16)) {
                                *written.entry((e, h)).or_insert(0u32) += 1;
                            }
                        } else if let (Ok(c), Ok(n)) = (c.parse(), n.parse()) {
                            present.insert((c, n));
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    unchecked.remove(&p);
                    ended.insert(p);
                }
                Some(Err(e)) => tracing::warn!("reading back topic '{topic}': {e}"),
                None => {}
            }
            if last.elapsed() > kafka.request_timeout.max(Duration::from_secs(30)) {
                let waiting: Vec<String> = parts
                    .iter()
                    .filter(|p| !ended.contains(p))
                    .map(|p| match from.get(p) {
                        Some(o) => format!("{p} (from offset {o})"),
                        None => format!("{p} (from the beginning)"),
                    })
                    .collect();
                return Err(fail(format!(
                    "no record and no end of partition for {} s on partition(s) {}",
                    last.elapsed().as_secs(),
                    waiting.join(", ")
                )));
            }
        }
        Ok((present, written))
    }

    /// The first delivery failure, as the error the job fails with. Exactly once, a batch the
    /// broker acknowledged without an offset is one too: its records are not counted as
    /// written (the job fails before a checkpoint covers them), and the run that resumes from
    /// the last checkpoint reads the topic back and writes them if they are missing.
    fn check_deliveries(&self) -> Result<()> {
        let Some(p) = &self.producer else {
            return Ok(());
        };
        if let Some((n, first)) = p.context().failures() {
            return Err(self.error(format!(
                "{n} record(s) could not be delivered to topic '{}' at {}; the first: {first}",
                self.config.topic, self.config.kafka.bootstrap
            )));
        }
        match p.context().unconfirmed() {
            Some((n, first)) if self.config.writes_exactly_once() => Err(self.error(format!(
                "{n} batch(es) to topic '{}' at {} are not known to be written; the first: \
                 {first}. Exactly once cannot count them as written, so the job fails before \
                 a checkpoint covers them: run it again (or with --restart N) and it resumes \
                 from its last checkpoint, reads the topic back and writes what is missing",
                self.config.topic, self.config.kafka.bootstrap
            ))),
            _ => Ok(()),
        }
    }
}

/// The read-back consumer's events: the end of a partition is how a read-back ends, not an
/// error (librdkafka's default context would log it as one).
struct ReadBackEvents;

impl rdkafka::ClientContext for ReadBackEvents {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!("reading back an exactly-once topic: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadBackEvents {}

impl<T: 'static> Sink<T> for KafkaSink<T> {
    fn open(&mut self, ctx: &SinkContext) -> Result<()> {
        self.name = ctx.name.clone();
        self.config.validate().map_err(|r| self.error(r))?;
        let kafka = &self.config.kafka;
        let mut defaults = vec![
            ("client.id", format!("runnel-{}-{}", ctx.name, ctx.worker)),
            (
                "socket.connection.setup.timeout.ms",
                kafka.request_timeout.as_millis().to_string(),
            ),
        ];
        defaults.extend(self.config.producer_defaults());
        if let Some(prefix) = &self.config.transactional_id {
            defaults.push((
                "transactional.id",
                format!("{prefix}-{}-{}", ctx.name, ctx.worker),
            ));
        }
        // Idempotent as the client is configured (a passthrough option wins).
        let idempotent = kafka
            .librdkafka_options
            .get("enable.idempotence")
            .map_or(self.config.idempotence, |v| v.trim() == "true");
        let events = ProducerEvents::new(format!("sink '{}' worker {}", ctx.name, ctx.worker))
            .idempotent(idempotent);
        let producer: BaseProducer<ProducerEvents> = kafka
            .client_config(&defaults)
            .create_with_context(events)
            .map_err(|e| {
                self.error(format!(
                    "cannot create a Kafka producer for {}: {e}",
                    kafka.bootstrap
                ))
            })?;
        // Fail now, clearly, if the brokers cannot be reached or the topic does not exist.
        let topic = &self.config.topic;
        let md = producer
            .client()
            .fetch_metadata(Some(topic), kafka.request_timeout)
            .map_err(|e| {
                self.error(format!(
                    "cannot reach the Kafka brokers at {} (no metadata for topic '{topic}' \
                     within {}: {e}){}",
                    kafka.bootstrap,
                    format_duration(kafka.request_timeout),
                    producer.context().client.last_error_suffix()
                ))
            })?;
        let missing = match md.topics().iter().find(|t| t.name() == topic) {
            None => true,
            Some(t) => t.error().is_some() || t.partitions().is_empty(),
        };
        if missing {
            return Err(self.error(format!(
                "topic '{topic}' does not exist on the Kafka cluster at {}",
                kafka.bootstrap
            )));
        }
        if self.config.writes_exactly_once() {
            if !ctx.checkpoints {
                return Err(self.error(
                    "exactly_once needs checkpoints: run the job with checkpoints on \
                     (runnel run --checkpoint-every ...)"
                        .to_string(),
                ));
            }
            self.eo.instance = format!("{}/{}", ctx.name, ctx.worker);
        }
        if self.config.transactional_id.is_some() {
            // Fences off an older instance with this transactional.id and aborts whatever
            // transaction it left open.
            let timeout = kafka.request_timeout.max(Duration::from_secs(10));
            producer.init_transactions(timeout).map_err(|e| {
                self.error(format!(
                    "cannot start Kafka transactions at {} (does the cluster support them? \
                     tansu does not): {e}",
                    kafka.bootstrap
                ))
            })?;
            self.transactions = Some(
                ctx.metrics
                    .counter(&format!("{}.kafka.transactions", ctx.name)),
            );
        }
        self.producer = Some(producer);
        if let Some(from) = self.eo.restored_from.take() {
            // Restored: what this instance already wrote of the checkpoints it holds is in
            // the topic; find it, then write the rest.
            let (present, written) = self.read_back(&from)?;
            self.eo.present = present;
            self.eo.written_through = written.keys().map(|k| k.0).max().unwrap_or(0);
            self.eo.written = written;
            let ids: Vec<u64> = self.eo.sealed.keys().copied().collect();
            if let Some(&last) = ids.last() {
                self.send_sealed(last)?;
            }
        }
        self.counters = Some((
            ctx.metrics
                .counter(&format!("{}.kafka.bytes_out", ctx.name)),
            ctx.metrics
                .counter(&format!("{}.kafka.queue_full_waits", ctx.name)),
        ));
        Ok(())
    }

    fn write(&mut self, epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        self.check_deliveries()?;
        if self.config.writes_exactly_once() {
            return self.hold(epoch, records);
        }
        let KafkaSink {
            config,
            encode,
            key,
            headers,
            producer,
            counters,
            name,
            value,
            key_buf,
            eo: _,
            transactions: _,
        } = self;
        let mut bytes = 0u64;
        let mut waits = 0u64;
        let Some(producer) = producer.as_ref() else {
            return Err(Error::Sink {
                sink: name.clone(),
                reason: "the Kafka sink was written before open or after close".into(),
            });
        };
        let topic = config.topic.as_str();
        for e in records.drain(..) {
            value.clear();
            if let Err(reason) = encode(&e.data, value) {
                return Err(Error::Sink {
                    sink: name.clone(),
                    reason: format!("cannot encode a record for topic '{topic}': {reason}"),
                });
            }
            key_buf.clear();
            let has_key = key.as_ref().is_some_and(|k| k(&e.data, key_buf));
            let mut record: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(topic, 0).payload(&value[..]);
            if has_key {
                record = record.key(&key_buf[..]);
            }
            if e.ts >= 0 {
                record = record.timestamp(e.ts);
            }
            if let Some(h) = headers {
                let mut owned = OwnedHeaders::new();
                for (k, v) in h(&e.data) {
                    owned = owned.insert(Header {
                        key: &k,
                        value: Some(&v[..]),
                    });
                }
                record = record.headers(owned);
            }
            bytes += value.len() as u64;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // Backpressure: serve delivery reports until there is room. Records
                        // that time out are reported as failures, which end the wait.
                        record = r;
                        waits += 1;
                        producer.poll(Duration::from_millis(5));
                        if let Some((n, first)) = producer.context().failures() {
                            return Err(Error::Sink {
                                sink: name.clone(),
                                reason: format!(
                                    "{n} record(s) could not be delivered to topic '{topic}' \
                                     at {}; the first: {first}",
                                    config.kafka.bootstrap
                                ),
                            });
                        }
                    }
                    Err((err, _)) => {
                        return Err(Error::Sink {
                            sink: name.clone(),
                            reason: format!("cannot send a record to topic '{topic}': {err}"),
                        });
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
        if let Some((b, w)) = counters {
            b.add(bytes);
            w.add(waits);
        }
        self.check_deliveries()
    }

    fn replays(&self) -> bool {
        self.config.exactly_once && self.config.transactional_id.is_none()
    }

    fn ready_for_checkpoint(&mut self, through: Epoch) -> Result<bool> {
        if !self.eo.live {
            return Ok(true);
        }
        // Every record of the epochs up to `through` delivered: no flush at the checkpoint.
        self.check_deliveries()?;
        self.prune_delivered();
        Ok(self.eo.unacked.range(..=through.0).next().is_none())
    }

    fn epoch_done(&mut self, epoch: Epoch) -> Result<()> {
        self.eo.done = Some(epoch.0);
        if self.eo.live {
            self.send_epochs(epoch.0)?;
            self.prune_delivered();
            return Ok(());
        }
        if let Some(p) = &self.producer {
            p.poll(Duration::ZERO);
        }
        self.check_deliveries()
    }

    fn snapshot(&mut self, through: Epoch) -> Result<Option<Vec<u8>>> {
        if !self.config.writes_exactly_once() {
            return Ok(None);
        }
        if self.eo.live {
            // Every epoch it covers is written (the last ones, at the input's end, now).
            self.send_epochs(through.0)?;
            return self.live_snapshot(through.0).map(Some);
        }
        // What was written before is delivered (so `delivered` is where a read-back starts).
        if let Some(p) = &self.producer {
            let started = std::time::Instant::now();
            let timeout = self.config.delivery_timeout + self.config.kafka.request_timeout;
            p.flush(timeout)
                .map_err(|e| self.error(format!("cannot flush before a checkpoint: {e}")))?;
            self.eo.flush_time += started.elapsed();
        }
        self.check_deliveries()?;
        let later = self.eo.open.split_off(&(through.0.saturating_add(1)));
        let covered = std::mem::replace(&mut self.eo.open, later);
        if !covered.is_empty() {
            let sealed = self.eo.sealed.entry(through.0).or_default();
            for (_, records) in covered {
                sealed.extend(records.into_held_records());
            }
        }
        let mut delivered = self.eo.delivered_before.clone();
        if let Some(p) = &self.producer {
            for (part, next) in p.context().delivered() {
                let d = delivered.entry(part).or_insert(next);
                *d = (*d).max(next);
            }
        }
        let state = EoState {
            sealed: self.eo.sealed.clone(),
            delivered,
        };
        Ok(Some(encode(&state)?))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let state: EoState = decode(state)?;
        self.eo.sealed = state.sealed;
        self.eo.delivered_before = state.delivered.clone();
        self.eo.restored_from = Some(state.delivered);
        // The sources replay the epochs after the checkpoint (see `Sink::replays`).
        self.eo.live = self.replays();
        Ok(())
    }

    fn checkpoint_committed(&mut self, id: u64) -> Result<()> {
        if self.config.writes_exactly_once() {
            self.send_sealed(id)?;
        }
        if self.replays() && !self.eo.live {
            // From the first complete checkpoint on, a crash replays what follows it: write
            // the epochs that are over, and from now on each as it ends.
            self.eo.live = true;
            if let Some(done) = self.eo.done {
                self.send_epochs(done)?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if self.config.writes_exactly_once()
            && !(self.eo.open.is_empty() && self.eo.sealed.is_empty())
        {
            return Err(self.error(format!(
                "{} result(s) were never covered by a complete checkpoint (exactly_once)",
                self.eo
                    .open
                    .values()
                    .map(|e| e.records.len())
                    .sum::<usize>()
                    + self.eo.sealed.values().map(Vec::len).sum::<usize>()
            )));
        }
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        if self.config.writes_exactly_once() {
            tracing::debug!(
                "sink '{}' ({}): {} ms sending epochs ({} waits on a full queue), {} ms \
                 flushing before checkpoints",
                self.name,
                self.eo.instance,
                self.eo.send_time.as_millis(),
                self.eo.send_waits,
                self.eo.flush_time.as_millis()
            );
        }
        // Long enough for librdkafka to deliver or give up on every queued record.
        let timeout = self.config.delivery_timeout + self.config.kafka.request_timeout;
        let flushed = producer.flush(timeout);
        self.check_deliveries()?;
        if let Err(e) = flushed {
            let left = producer.in_flight_count();
            return Err(self.error(format!(
                "{left} record(s) were still undelivered to topic '{}' at {} after {}: {e}{}",
                self.config.topic,
                self.config.kafka.bootstrap,
                format_duration(timeout),
                producer.context().client.last_error_suffix()
            )));
        }
        self.producer = None;
        Ok(())
    }

    fn abort(&mut self) {
        // Send nothing more: drop what is queued (dropping the producer purges and waits a
        // little for what is in flight).
        if let Some(p) = self.producer.take() {
            p.purge(PurgeConfig::default().queue());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_tags_read_as_the_hash(h in any::<u64>()) {
            let mut out = b"x:".to_vec();
            push_hex(&mut out, h);
            prop_assert_eq!(out, format!("x:{h:016x}").into_bytes());
        }

        /// Held records come back as they went in (key, value, timestamp, headers), each
        /// with the hash of what it is.
        #[test]
        fn held_records_keep_every_part(
            records in prop::collection::vec(
                (
                    prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
                    prop::collection::vec(any::<u8>(), 0..40),
                    -2i64..5,
                    prop::collection::vec(("[a-c]{0,2}", prop::collection::vec(any::<u8>(), 0..3)), 0..2),
                ),
                0..30,
            )
        ) {
            // The record is the key and value, split by what they are.
            type Rec = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);
            let kafka = KafkaConfig::new("127.0.0.1:1");
            let mut sink = KafkaSink::<Rec>::with_encoder(
                KafkaSinkConfig::new(kafka, "t"),
                |r: &Rec, buf: &mut Vec<u8>| {
                    buf.extend_from_slice(&r.1);
                    Ok(())
                },
            )
            .key(|r: &Rec| r.0.clone())
            .headers(|r: &Rec| r.2.clone());
            let mut events: Vec<Event<Rec>> = records
                .iter()
                .map(|(k, v, ts, h)| Event { ts: *ts, data: (k.clone(), v.clone(), h.clone()) })
                .collect();
            sink.hold(Epoch(3), &mut events).unwrap();
            let held = sink.eo.open.remove(&3).unwrap_or_default();
            let hashes: Vec<u64> = held.records.iter().map(|r| r.hash).collect();
            let back = held.into_held_records();
            prop_assert_eq!(back.len(), records.len());
            for ((b, hash), (k, v, ts, h)) in back.iter().zip(hashes).zip(&records) {
                prop_assert_eq!(&b.key, k);
                prop_assert_eq!(&b.value, v);
                prop_assert_eq!(b.ts, (*ts >= 0).then_some(*ts));
                prop_assert_eq!(&b.headers, h);
                prop_assert_eq!(hash, tag_hash(k.as_deref(), v, b.ts, h));
            }
        }
    }

    #[test]
    fn tag_hashes_tell_records_apart() {
        let h = |k: Option<&[u8]>, v: &[u8], ts: Option<i64>, hs: &[(String, Vec<u8>)]| {
            tag_hash(k, v, ts, hs)
        };
        let hd = |k: &str, v: &[u8]| (k.to_string(), v.to_vec());
        let all = [
            h(None, b"ab", None, &[]),
            h(Some(b""), b"ab", None, &[]),
            h(Some(b"a"), b"b", None, &[]),
            h(Some(b"ab"), b"", None, &[]),
            h(None, b"ab", Some(0), &[]),
            h(None, b"ab", Some(1), &[]),
            h(None, b"ab", None, &[hd("", b"")]),
            h(None, b"ab", None, &[hd("a", b"b")]),
            h(None, b"ab", None, &[hd("ab", b"")]),
            h(None, b"ab", None, &[hd("a", b""), hd("b", b"")]),
        ];
        let distinct: HashSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "{all:x?}");
        // The same record, the same hash.
        assert_eq!(all[7], h(None, b"ab", None, &[hd("a", b"b")]));
    }
}
