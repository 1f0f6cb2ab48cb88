//! The Kafka connectors' configuration: [`KafkaConfig`] (how to reach the cluster, shared by
//! both ends), [`KafkaSourceConfig`] and [`KafkaSinkConfig`]. Every struct is serde
//! (`deny_unknown_fields`, so a typo is an error), every field has a default where one makes
//! sense, and durations are strings with a unit suffix (`"250ms"`, `"10s"`, `"2m"`, `"1h"`).
//!
//! A config in JSON:
//!
//! ```
//! use runnel_connectors::kafka::{KafkaSourceConfig, StartAt};
//!
//! let cfg: KafkaSourceConfig = serde_json::from_str(r#"{
//!     "kafka": {
//!         "bootstrap": "broker-1:9092,broker-2:9092",
//!         "request_timeout": "5s",
//!         "librdkafka_options": { "security.protocol": "sasl_ssl", "sasl.mechanism": "PLAIN" }
//!     },
//!     "topics": ["bids"],
//!     "start": { "timestamp": 1700000000000 }
//! }"#).unwrap();
//! assert_eq!(cfg.start, StartAt::Timestamp(1_700_000_000_000));
//! assert_eq!(cfg.group_id, "runnel");
//! assert!(serde_json::from_str::<KafkaSourceConfig>(r#"{"kafka": {"bootstrap": "b:9092"},
//!     "topics": ["bids"], "strat": "latest"}"#).is_err());
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// How to reach a Kafka cluster; shared by the source and the sink.
///
/// Security settings are librdkafka options, passed through unchanged in
/// [`KafkaConfig::librdkafka_options`]:
///
/// * `security.protocol`: `plaintext` (the default), `ssl`, `sasl_plaintext` or `sasl_ssl`;
/// * TLS (`ssl`, `sasl_ssl`): `ssl.ca.location` (the CA bundle that signs the brokers'
///   certificates; the system's by default), `ssl.certificate.location` and
///   `ssl.key.location` (+ `ssl.key.password`) for client certificates,
///   `ssl.endpoint.identification.algorithm` (`https`, the default, checks the host name);
/// * SASL (`sasl_*`): `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`),
///   `sasl.username`, `sasl.password`. (GSSAPI/Kerberos is not built in.)
///
/// Any other librdkafka option (see librdkafka's `CONFIGURATION.md`) can be set the same way;
/// it overrides what the connector sets by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The brokers to connect to first, as `host:port[,host:port...]` (librdkafka's
    /// `bootstrap.servers`). The rest of the cluster is discovered from them.
    pub bootstrap: String,
    /// How long a request that the job waits for may take (metadata, offsets, watermarks):
    /// a missing or unreachable broker is reported after this long. Default `"5s"`.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// librdkafka options passed through as they are, applied after the connector's own
    /// defaults (so they win): security (`security.protocol`, `sasl.*`, `ssl.*`), tuning
    /// (`fetch.max.bytes`, `compression.type`, ...), `client.id`, `debug`.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

impl KafkaConfig {
    /// The cluster at `bootstrap` (`host:port[,host:port...]`) with default settings.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            request_timeout: default_request_timeout(),
            librdkafka_options: BTreeMap::new(),
        }
    }

    /// Sets the request timeout (see [`KafkaConfig::request_timeout`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets a librdkafka option (see [`KafkaConfig::librdkafka_options`]).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.librdkafka_options.insert(key.into(), value.into());
        self
    }

    /// What is wrong with the settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap.trim().is_empty() {
            return Err("kafka.bootstrap is empty; give host:port of at least one broker".into());
        }
        if self.request_timeout.is_zero() {
            return Err("kafka.request_timeout must be more than 0".into());
        }
        Ok(())
    }

    /// A librdkafka config: `bootstrap.servers`, then `defaults`, then the passthrough options.
    pub(crate) fn client_config(&self, defaults: &[(&str, String)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            c.set(*k, v);
        }
        for (k, v) in &self.librdkafka_options {
            c.set(k, v);
        }
        c
    }
}

/// Where a source starts reading each partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The oldest record still in the partition (`"earliest"`, the default). Read from
    /// offset 0 ([`OLDEST`](super::OLDEST)); where retention has deleted it, the librdkafka
    /// option `auto.offset.reset` (`earliest` unless the passthrough options change it)
    /// takes the reader to the oldest record there is.
    #[default]
    Earliest,
    /// Only records written after the source opened the partition (`"latest"`). The end is
    /// looked up when the job first opens the partition, and that offset is where the
    /// partition stands in its epochs and checkpoints until a record comes: a restored job
    /// goes on from there (reading what was written while it was down), not from the end
    /// as it is at the restart.
    Latest,
    /// The offset the consumer group ([`KafkaSourceConfig::group_id`]) committed, or the
    /// earliest record where the group has none (`"committed"`; change the fallback with the
    /// librdkafka option `auto.offset.reset`).
    Committed,
    /// The first record whose timestamp is at or after this time, in milliseconds since the
    /// Unix epoch (`{"timestamp": 1700000000000}`); the end of a partition that has none.
    Timestamp(i64),
}

/// Where a source's records get their event time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTimeFrom {
    /// The Kafka record's timestamp (create time or log-append time, as the topic says);
    /// records without one get the time they were read (`"kafka_timestamp"`, the default).
    #[default]
    KafkaTimestamp,
    /// The job's extractor (`SourceOptions::event_time`), or the time the record was read when
    /// the job sets none (`"job"`). The job's extractor wins in either mode.
    Job,
}

/// A Kafka source's settings (see [`crate::kafka::KafkaSource`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// The cluster.
    pub kafka: KafkaConfig,
    /// The topics to read; every partition of each is read, spread over all workers. May be
    /// empty when [`KafkaSourceConfig::topic_pattern`] is set.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression (Rust `regex` syntax) for more topics to read: every topic whose
    /// whole name matches, except internal ones (names starting with `__`). Topics that come
    /// to match while the job runs are picked up at the next partition discovery. A pattern
    /// that matches nothing yet is not an error (the source waits for topics); a listed topic
    /// that does not exist is. Default: none.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// How often each worker asks the cluster for new partitions of the topics it reads (and
    /// new topics matching the pattern); a new partition is read from its beginning. `"0s"`
    /// turns discovery off. Discovery is off with `stop_at_end`. Default `"30s"`.
    #[serde(default = "default_discovery", with = "duration")]
    pub discovery_interval: Duration,
    /// Commit, to the consumer group, the offsets up to which every sink of the job has
    /// written the records (so that lag shows in ordinary Kafka tools, and
    /// [`StartAt::Committed`] resumes from there). The source never joins the group.
    /// Default `true`.
    #[serde(default = "default_true")]
    pub commit_offsets: bool,
    /// How often committed offsets are sent to the group (the last ones are also sent when the
    /// source ends). Default `"5s"`.
    #[serde(default = "default_commit_interval", with = "duration")]
    pub commit_interval: Duration,
    /// Where to start in each partition. Default `"earliest"`.
    #[serde(default)]
    pub start: StartAt,
    /// The consumer group whose committed offsets [`StartAt::Committed`] starts from and that
    /// [`KafkaSourceConfig::commit_offsets`] commits to. The source never joins the group
    /// (partitions are assigned by the job, not by the group). Default `"runnel"`.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Where records get their event time. Default `"kafka_timestamp"`.
    #[serde(default)]
    pub event_time: EventTimeFrom,
    /// Read each partition until the reader has caught up with its end, then finish (for
    /// tests, benchmarks and backfills). "Caught up" is librdkafka's end-of-partition report:
    /// a fetch returned the high watermark and every record below it has been read. For a
    /// topic nobody writes to during the run that is every record in it; while producers
    /// write faster than the job reads, it may not come. Default `false`: read forever.
    #[serde(default)]
    pub stop_at_end: bool,
    /// How long the brokers may stay unreachable (errors from the client and no record read)
    /// before the job fails; until then librdkafka reconnects and retries. Default `"60s"`.
    #[serde(default = "default_max_unavailable", with = "duration")]
    pub max_unavailable: Duration,
}

fn default_group_id() -> String {
    "runnel".to_string()
}

fn default_max_unavailable() -> Duration {
    Duration::from_secs(60)
}

fn default_discovery() -> Duration {
    Duration::from_secs(30)
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(5)
}

impl KafkaSourceConfig {
    /// Reads `topics` from the cluster `kafka`, with default settings.
    pub fn new<I, S>(kafka: KafkaConfig, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KafkaSourceConfig {
            kafka,
            topics: topics.into_iter().map(Into::into).collect(),
            start: StartAt::default(),
            group_id: default_group_id(),
            event_time: EventTimeFrom::default(),
            stop_at_end: false,
            max_unavailable: default_max_unavailable(),
            topic_pattern: None,
            discovery_interval: default_discovery(),
            commit_offsets: true,
            commit_interval: default_commit_interval(),
        }
    }

    /// What is wrong with the settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        if self.topics.is_empty() && self.topic_pattern.is_none() {
            return Err("no topics to read (set topics or topic_pattern)".into());
        }
        if let Some(p) = &self.topic_pattern {
            if let Err(e) = regex::Regex::new(p) {
                return Err(format!(
                    "topic_pattern '{p}' is not a regular expression: {e}"
                ));
            }
        }
        if self.commit_offsets && self.commit_interval.is_zero() {
            return Err("commit_interval must be more than 0".into());
        }
        if let Some(t) = self.topics.iter().find(|t| t.trim().is_empty()) {
            return Err(format!("topic name '{t}' is empty"));
        }
        if self.group_id.is_empty() {
            return Err("group_id is empty".into());
        }
        if self.max_unavailable.is_zero() {
            return Err("max_unavailable must be more than 0".into());
        }
        Ok(())
    }
}

/// How many replicas must have a record before the broker acknowledges it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// Every in-sync replica (`"all"`, the default; required by the idempotent producer).
    #[default]
    All,
    /// The partition leader only (`"leader"`).
    Leader,
    /// No acknowledgement (`"none"`): records can be lost without an error.
    None,
}

impl Acks {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}

/// A Kafka sink's settings (see [`crate::kafka::KafkaSink`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// The cluster.
    pub kafka: KafkaConfig,
    /// The topic to write to (it must exist).
    pub topic: String,
    /// The idempotent producer: no duplicates from the producer's own retries, and order kept
    /// per partition. Needs `acks: "all"`. Default `true`.
    #[serde(default = "default_true")]
    pub idempotence: bool,
    /// Acknowledgements to wait for. Default `"all"`.
    #[serde(default)]
    pub acks: Acks,
    /// How long the producer waits for more records before it sends a batch
    /// (`linger.ms`). Default `"5ms"`.
    #[serde(default = "default_linger", with = "duration")]
    pub linger: Duration,
    /// The most records in one batch (`batch.num.messages`). Default 10000.
    #[serde(default = "default_batch_records")]
    pub batch_records: u32,
    /// The most bytes in one batch (`batch.size`). Default 1000000.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u32,
    /// How long librdkafka keeps retrying a record before it reports it undelivered, which
    /// fails the job (`message.timeout.ms`). Default `"60s"`.
    #[serde(default = "default_delivery_timeout", with = "duration")]
    pub delivery_timeout: Duration,
    /// Write each result exactly once across crashes and restarts (needs checkpoints), by
    /// deterministic replay: the sources log where each epoch ended, the sink writes an
    /// epoch's results once it is over, each with a header naming its epoch and a hash of the
    /// record, and a restarted run replays the epochs after its checkpoint as they were cut,
    /// reads back what its instance wrote since the checkpoint and skips it (see the engine's
    /// `Sink::replays`). Results appear an epoch after their input; before the run's first
    /// checkpoint they are held until it is complete. No Kafka transactions are used unless
    /// [`KafkaSinkConfig::transactional_id`] is set (then results are held until each
    /// checkpoint is complete and written in one transaction). Default `false` (at least
    /// once).
    #[serde(default)]
    pub exactly_once: bool,
    /// Kafka transactions, for clusters that support them (tansu does not): with a prefix,
    /// each sink instance has the `transactional.id` `<prefix>-<sink>-<worker>`, and each
    /// checkpoint's results are written in one transaction, committed after the checkpoint
    /// is complete. Consumers with `isolation.level=read_committed` then see a checkpoint's
    /// results all at once or not at all, and a restarted instance fences off an older one
    /// still running with the same id. Implies `exactly_once` (the same header-based
    /// read-back, with `read_committed`, decides what a restarted run still has to write).
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_linger() -> Duration {
    Duration::from_millis(5)
}

fn default_batch_records() -> u32 {
    10_000
}

fn default_batch_bytes() -> u32 {
    1_000_000
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(60)
}

impl KafkaSinkConfig {
    /// Writes to `topic` on the cluster `kafka`, with default settings.
    pub fn new(kafka: KafkaConfig, topic: impl Into<String>) -> Self {
        KafkaSinkConfig {
            kafka,
            topic: topic.into(),
            idempotence: true,
            acks: Acks::All,
            linger: default_linger(),
            batch_records: default_batch_records(),
            batch_bytes: default_batch_bytes(),
            delivery_timeout: default_delivery_timeout(),
            exactly_once: false,
            transactional_id: None,
        }
    }

    /// Whether results are written exactly once (the exactly-once mode, with or without
    /// transactions).
    pub fn writes_exactly_once(&self) -> bool {
        self.exactly_once || self.transactional_id.is_some()
    }

    /// What is wrong with the settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        if self.topic.trim().is_empty() {
            return Err("the topic name is empty".into());
        }
        if self.idempotence && self.acks != Acks::All {
            return Err(format!(
                "the idempotent producer needs acks \"all\", not {:?}; set idempotence to false \
                 to use other acks",
                self.acks
            ));
        }
        if self.batch_records == 0 || self.batch_bytes == 0 {
            return Err("batch_records and batch_bytes must be more than 0".into());
        }
        if self.delivery_timeout.is_zero() {
            return Err("delivery_timeout must be more than 0".into());
        }
        if let Some(id) = &self.transactional_id {
            if id.trim().is_empty() {
                return Err("transactional_id is empty".into());
            }
            if !self.idempotence {
                return Err(
                    "transactions need the idempotent producer; do not set idempotence to false \
                     with transactional_id"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The producer's librdkafka settings, before the passthrough options.
    pub(crate) fn producer_defaults(&self) -> Vec<(&'static str, String)> {
        vec![
            ("enable.idempotence", self.idempotence.to_string()),
            ("acks", self.acks.as_librdkafka().to_string()),
            ("linger.ms", self.linger.as_millis().to_string()),
            ("batch.num.messages", self.batch_records.to_string()),
            ("batch.size", self.batch_bytes.to_string()),
            (
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            ),
            // The Java client's partitioner: a key goes where Kafka Streams and Flink put it;
            // records without a key are spread at random.
            ("partitioner", "murmur2_random".to_string()),
            // A missing topic is an error, never created by the metadata check.
            ("allow.auto.create.topics", "false".to_string()),
        ]
    }
}

/// Parses a duration with a unit suffix: `"250ms"`, `"10s"`, `"2m"`, `"1h"` (whole numbers).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!("cannot parse '{s}' as a duration: expected a whole number and a unit (ms, s, m, h), like \"10s\"")
    };
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    ms.map(Duration::from_millis).ok_or_else(bad)
}

/// Formats a duration the way [`parse_duration`] reads it (the largest unit that is exact).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0ms".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde for durations as strings with a unit suffix.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}
