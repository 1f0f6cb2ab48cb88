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
mod metrics;
mod sink;
mod source;
#[cfg(test)]
mod tests;

pub use config::{
    format_duration, parse_duration, Acks, EventTimeFrom, KafkaConfig, KafkaSinkConfig,
    KafkaSourceConfig, StartAt,
};
pub use sink::{dead_letter_headers, KafkaSink};
pub use source::{KafkaRecord, KafkaSource};
