//! # runnel-benches
//!
//! The benchmark harness: the workloads W0, W1 and W2 of BENCHMARKS.md written directly on timely
//! (no job API), so that each job-API figure has a baseline measured in the same invocation.
//! Run `cargo run --release -p runnel-benches -- --help`.
//!
//! The raw versions do what a careful timely programmer would: the same generator formulas, the
//! same coarse timestamps (W0 and W1 close a timestamp every 100 ms of processing time like
//! runnel's epochs; W2 uses the 10 s event-time window index as the timestamp, the classic timely
//! way to window in-order data), batches of 1024, a local pre-aggregation before the exchange in
//! W2, and counting sinks.
//!
//! [`kafka`] measures Kafka -> job -> Kafka against librdkafka alone consuming and producing the
//! same records on the same broker (`runnel-bench kafka`).

pub mod kafka;
pub mod raw;
