//! Tumbling windows: fixed-size, non-overlapping, aligned to event time 0.
//!
//! ```
//! use std::time::Duration;
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("clicks-per-10ms", "counts per key", move |flow| {
//!     let clicks = vec![vec![
//!         TestItem::At(1, 'a'), TestItem::At(3, 'b'), TestItem::At(9, 'a'), TestItem::At(12, 'a'),
//!     ]];
//!     flow.source("clicks", TestSource::new(clicks), SourceOptions::new())?
//!         .key_by(|k: &char| *k)
//!         .window(Tumbling::of(Duration::from_millis(10)))
//!         .aggregate(Count)?
//!         .map(|r| (r.key, r.start, r.value))
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(2)).unwrap();
//! assert_eq!(out.sorted_data(), vec![('a', 0, 2), ('a', 10, 1), ('b', 0, 1)]);
//! ```

use std::time::Duration;

use runnel_engine::time::millis;

use super::WindowSpec;

/// Tumbling windows.
#[derive(Clone, Copy, Debug)]
pub struct Tumbling;

impl Tumbling {
    /// Windows of `size`: `[0, size)`, `[size, 2 size)`, ...
    pub fn of(size: Duration) -> WindowSpec {
        WindowSpec::Tumbling { size: millis(size) }
    }
}
