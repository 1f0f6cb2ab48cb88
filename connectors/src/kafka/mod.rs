//! Kafka on both ends, on rdkafka with its bundled librdkafka: [`KafkaSource`] reads topics
//! (every partition one source partition, spread over all workers, JSON / text / bytes /
//! whole records), [`KafkaSink`] writes a stream to a topic (idempotent producer, murmur2
//! partitioning by key). Their settings are serde structs ([`KafkaSourceConfig`],
//! [`KafkaSinkConfig`], both around a [`KafkaConfig`]) with a builder on each connector.
//!
//! A job that copies the large bids of one topic to another:
//!
//! ```no_run
//! use runnel_connectors::kafka::{KafkaConfig, KafkaSink, KafkaSource, StartAt};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//!
//! #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
//! struct Bid { auction: u64, price: u64 }
//!
//! let kafka = KafkaConfig::new("127.0.0.1:9092");
//! let job = Job::new("big-bids", "copies big bids", move |flow| {
//!     let bids = KafkaSource::json::<Bid>(kafka.clone(), ["bids"]).start(StartAt::Earliest);
//!     flow.source("bids", bids, SourceOptions::new())?
//!         .filter(|b| b.price > 100)
//!         .sink("out", KafkaSink::json(kafka.clone(), "big-bids").key(|b: &Bid| Some(b.auction.to_string())))
//! });
//! run(&job, RunOptions::workers(2)).unwrap();
//! ```
//!
//! Tests run against a real broker (tansu, see `scripts/dev-broker`) and, for faults,
//! librdkafka's mock cluster: `connectors/tests/kafka_e2e.rs`.

mod config;
mod first;
mod metrics;
mod sink;
mod source;
#[cfg(test)]
mod tests;

pub use config::{
    format_duration, parse_duration, Acks, EventTimeFrom, KafkaConfig, KafkaSinkConfig,
    KafkaSourceConfig, StartAt,
};
pub use sink::{dead_letter_headers, KafkaSink, EXACTLY_ONCE_HEADER};
pub use source::{KafkaRecord, KafkaSource};

/// Where a reader of a partition starts to read it from its oldest record: offset 0, which a
/// consumer with `auto.offset.reset=earliest` takes to the oldest record there is when the
/// records from 0 have been deleted.
///
/// Not [`rdkafka::Offset::Beginning`]: that asks the broker (ListOffsets, earliest), and tansu
/// 0.6 answers with the batch whose object it *stored* first by the clock, not with the lowest
/// offset. It takes a batch's offset and stores the batch in two steps, so when producers
/// write one partition at once a later batch can be stored first, and a reader that asked
/// for the beginning would skip the records before it. (Found by reading
/// `tansu-storage-0.6.0/src/dynostore.rs`, `list_offsets` and `produce`; the likely cause of
/// a clean crash-test run that read the output topic without the first results of one
/// partition.)
pub const OLDEST: rdkafka::Offset = rdkafka::Offset::Offset(0);
