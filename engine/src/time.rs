//! Newtypes for the two clocks: epochs (progress time) and event time.

use serde::{Deserialize, Serialize};

/// Event time in milliseconds since the Unix epoch (or any origin the job chooses).
pub type EventTime = i64;

/// A watermark in event-time milliseconds: every record with `ts < W` has been seen.
pub type Watermark = i64;

/// The watermark before any source has reported.
pub const WATERMARK_MIN: Watermark = i64::MIN;

/// The watermark of a source that has finished: every window closes.
pub const WATERMARK_MAX: Watermark = i64::MAX;

/// A processing-time interval cut by the sources: timely's timestamp in runnel's dataflows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// Milliseconds of a [`std::time::Duration`] as event time, saturating.
pub fn millis(d: std::time::Duration) -> EventTime {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
