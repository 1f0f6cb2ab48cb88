//! # runnel-engine
//!
//! The runtime of runnel: the job model ([`Job`], [`Flow`], [`Stream`]), the time model (epochs
//! and event-time watermarks), the source and sink contracts, the epoch-driven stateful operator
//! that every window and join is built on, keyed state, metrics, and the runtime that runs a job on
//! worker threads and processes.
//!
//! This is the only crate of the workspace that names timely-dataflow types; everything above it
//! (operators, connectors, jobs) sees runnel's own types.
//!
//! ## The time model
//!
//! Two clocks are kept apart.
//!
//! * **Progress time** is timely's timestamp, an [`Epoch`]: a processing-time interval that every
//!   source instance closes on a timer (`epoch_interval`, 100 ms by default, on a schedule shared
//!   by every worker: at the wall clock's multiples of the interval) or when its reader asks for a
//!   cut. Coarse timestamps keep timely's progress tracking cheap.
//! * **Event time** ([`EventTime`], milliseconds) is in every record ([`Event::ts`]). Sources derive
//!   per-partition watermarks from it (monotonic or bounded out-of-orderness), take the minimum over
//!   the partitions they read (idle partitions excluded after a timeout), and report it at the end
//!   of each epoch. A stateful operator's watermark is the minimum over every instance of every
//!   source upstream of it.
//!
//! A stateful operator applies the records of epoch `e` against the watermark that held when epoch
//! `e` began (the watermark after all epochs before `e`), then advances its watermark with the
//! reports of epoch `e` and fires what the new watermark closes. Results therefore depend only on
//! the records and on where the epochs were cut, never on thread scheduling: after epoch `e`, every
//! operator's state reflects exactly the input of epochs `<= e`. That is what makes snapshots
//! consistent and replay deterministic.
//!
//! A watermark `W` means: every record with `ts < W` has been seen. A record is *late* for a window
//! `[start, end)` when `end + allowed_lateness <= W` at the start of the record's epoch.

mod align;
pub mod batch;
pub mod checkpoint;
mod cluster;
pub mod config;
mod epoch_log;
pub mod error;
pub mod event;
pub mod flow;
pub mod job;
pub mod metrics;
pub mod reclaim;
pub mod recovery;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod state;
pub mod stateful;
pub mod table;
pub mod testing;
pub mod time;
pub mod watermark;
pub mod wire;

pub use batch::Batcher;
pub use checkpoint::{CheckpointInfo, CheckpointStore, DurableLog, LocalDirStore, PartInfo};
pub use config::JobConfig;
pub use error::{Error, Result};
pub use event::{Data, DeadLetter, Either, Event, ExchangeKey};
pub use flow::{Flow, KeyedStream, Stream, WithLate};
pub use job::{Job, Registry};
pub use metrics::{Counter, Latency, Metrics, RunSummary};
pub use recovery::{CheckpointOptions, Restore};
pub use runtime::{run, RunOptions, DEFAULT_MAX_IN_FLIGHT};
pub use sink::{Routing, Sink, SinkContext};
pub use source::{
    BadRecordPolicy, PartitionId, PartitionReader, ReadStatus, Reader, Source, SourceContext,
    SourceOptions,
};
pub use state::{KeyedState, StaggeredMap};
pub use stateful::{Emitter, EpochLogic, LocalEpochLogic};
pub use table::{Change, KeyedTable, Row, Table};
pub use time::{Epoch, EventTime, Watermark};
pub use watermark::WatermarkStrategy;
