//! Tumbling windows: fixed-size, non-overlapping, aligned to event time 0 (or to an offset,
//! [`Tumbling::with_offset`]).
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
        WindowSpec::Tumbling {
            size: millis(size),
            offset: 0,
        }
    }

    /// Windows of `size` that start `offset` after the multiples of `size` (as Flink's
    /// `TumblingEventTimeWindows.of(size, offset)`): `[offset, offset + size)`, ... For days
    /// in a time zone, the offset is where its midnight falls in UTC: 16 h for UTC+8, 5 h for
    /// UTC-5. An offset of `size` or more counts modulo `size`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use runnel_operators::prelude::*;
    /// use runnel_operators::WindowSpec;
    ///
    /// let hour = Duration::from_secs(3600);
    /// // Days from midnight in UTC+8, which is 16:00 UTC.
    /// let spec = Tumbling::with_offset(24 * hour, 16 * hour);
    /// assert_eq!(spec, WindowSpec::Tumbling { size: 86_400_000, offset: 57_600_000 });
    /// ```
    pub fn with_offset(size: Duration, offset: Duration) -> WindowSpec {
        let size = millis(size);
        WindowSpec::Tumbling {
            size,
            offset: millis(offset).rem_euclid(size.max(1)),
        }
    }
}
