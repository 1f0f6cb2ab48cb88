//! Sliding (hopping) windows: windows of `size` starting every `slide`, so a record belongs to
//! `size / slide` windows.
//!
//! ```
//! use std::time::Duration;
//! use runnel_engine::testing::{Collector, TestItem, TestSource};
//! use runnel_engine::{run, Job, RunOptions, SourceOptions};
//! use runnel_operators::prelude::*;
//!
//! let out = Collector::new();
//! let sink = out.clone();
//! let job = Job::new("hot", "sliding counts", move |flow| {
//!     let input = vec![vec![TestItem::At(5, 1u32), TestItem::At(15, 1)]];
//!     flow.source("bids", TestSource::new(input), SourceOptions::new())?
//!         .key_by(|a: &u32| *a)
//!         .window(Sliding::of(Duration::from_millis(20), Duration::from_millis(10)))
//!         .aggregate(Count)?
//!         .map(|r| (r.start, r.end, r.value))
//!         .sink("out", sink.sink())
//! });
//! run(&job, RunOptions::workers(1)).unwrap();
//! assert_eq!(out.sorted_data(), vec![(-10, 10, 1), (0, 20, 2), (10, 30, 1)]);
//! ```

use std::time::Duration;

use runnel_engine::time::millis;

use super::WindowSpec;

/// Sliding windows.
#[derive(Clone, Copy, Debug)]
pub struct Sliding;

impl Sliding {
    /// Windows of `size` starting every `slide` (aligned to event time 0).
    pub fn of(size: Duration, slide: Duration) -> WindowSpec {
        WindowSpec::Sliding {
            size: millis(size),
            slide: millis(slide),
            offset: 0,
        }
    }

    /// Windows of `size` starting every `slide`, `offset` after the multiples of `slide` (as
    /// Flink's `SlidingEventTimeWindows.of(size, slide, offset)`; modulo `slide`).
    pub fn with_offset(size: Duration, slide: Duration, offset: Duration) -> WindowSpec {
        let slide = millis(slide);
        WindowSpec::Sliding {
            size: millis(size),
            slide,
            offset: millis(offset).rem_euclid(slide.max(1)),
        }
    }
}
