//! # runnel-connectors
//!
//! runnel's connectors, on the engine's [`runnel_engine::Source`] and [`runnel_engine::Sink`]
//! contracts:
//!
//! * [`generator`]: the deterministic Bid stream of the benchmarks ([`BidGenerator`]) and
//!   clickstream sample data ([`page_views`]);
//! * [`file`](mod@file): JSON-lines (and text) files, read one partition per file
//!   ([`FileSource`]) and written atomically, into one file ([`FileSink`]) or one per
//!   partition ([`PartitionedFileSink`]);
//! * [`kafka`]: Kafka topics, read by [`KafkaSource`] and written by [`KafkaSink`];
//! * [`nexmark`]: the Nexmark benchmark's people, auctions and bids
//!   ([`nexmark::NexmarkGenerator`]; its types stay in the module, since its `Bid` is not
//!   [`Bid`]);
//! * [`stdout`]: [`StdoutSink`], one record per line;
//! * [`blackhole`]: [`BlackholeSink`], which only counts.

pub mod blackhole;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod nexmark;
pub mod stdout;

pub use blackhole::{BlackholeHandle, BlackholeSink};
pub use file::{write_json_lines, FileSink, FileSource, IntoPaths, PartitionedFileSink};
pub use generator::{page_views, write_page_views, Bid, BidGenerator, PageView};
pub use kafka::{KafkaConfig, KafkaSink, KafkaSource, StartAt};
pub use stdout::StdoutSink;
