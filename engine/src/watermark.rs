//! Watermarks: the strategies a source uses per partition, the reports sources send at the end of
//! each epoch, and the tracker a stateful operator combines them with.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::{millis, Watermark, WATERMARK_MIN};

/// How a source derives a partition's watermark from the event times it has read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatermarkStrategy {
    /// Event times never decrease within a partition: `W = max_ts`.
    #[default]
    Monotonic,
    /// Records arrive at most `bound` behind the largest event time read so far in their
    /// partition: `W = max_ts - bound`.
    BoundedOutOfOrder(Duration),
}

impl WatermarkStrategy {
    /// Bounded out-of-orderness of `d`.
    pub fn bounded(d: Duration) -> Self {
        WatermarkStrategy::BoundedOutOfOrder(d)
    }

    /// The watermark of a partition whose largest event time so far is `max_ts`.
    #[inline]
    pub fn watermark(&self, max_ts: i64) -> Watermark {
        match self {
            WatermarkStrategy::Monotonic => max_ts,
            WatermarkStrategy::BoundedOutOfOrder(d) => max_ts.saturating_sub(millis(*d)),
        }
    }
}

/// What one source instance says about its watermark at the end of an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WmValue {
    /// Every record of this instance from now on has `ts >= W`.
    At(Watermark),
    /// Every partition of this instance is idle: leave it out of the minimum.
    Idle,
}

/// A watermark report: source `source`'s instance on worker `worker` says `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WmReport {
    /// The source operator's id within the job.
    pub source: u32,
    /// The global worker index of the instance.
    pub worker: u32,
    /// The instance's watermark.
    pub value: WmValue,
}

/// Combines the reports of every instance of a set of sources into one watermark.
///
/// # Contract
/// The tracker expects `contributors` distinct `(source, worker)` pairs; until each has reported
/// it holds the watermark at [`WATERMARK_MIN`]. Idle instances are left out of the minimum; when
/// every reporter is idle the watermark holds. The combined watermark never goes back.
#[derive(Debug)]
pub struct WatermarkTracker {
    expected: usize,
    latest: HashMap<(u32, u32), WmValue>,
    current: Watermark,
}

impl WatermarkTracker {
    /// A tracker waiting for `contributors` instances.
    pub fn new(contributors: usize) -> Self {
        WatermarkTracker {
            expected: contributors,
            latest: HashMap::new(),
            current: WATERMARK_MIN,
        }
    }

    /// Takes a report into account (call [`Self::advance`] to recompute).
    pub fn report(&mut self, r: &WmReport) {
        self.latest.insert((r.source, r.worker), r.value);
    }

    /// Recomputes the combined watermark and returns it.
    pub fn advance(&mut self) -> Watermark {
        if self.latest.len() < self.expected {
            return self.current;
        }
        let min = self
            .latest
            .values()
            .filter_map(|v| match v {
                WmValue::At(w) => Some(*w),
                WmValue::Idle => None,
            })
            .min();
        if let Some(m) = min {
            self.current = self.current.max(m);
        }
        self.current
    }

    /// The combined watermark as of the last [`Self::advance`].
    pub fn current(&self) -> Watermark {
        self.current
    }

    /// What a checkpoint keeps of the tracker.
    pub fn state(&self) -> TrackerState {
        let mut latest: Vec<_> = self.latest.iter().map(|(k, v)| (*k, *v)).collect();
        latest.sort_by_key(|(k, _)| *k);
        TrackerState {
            latest,
            current: self.current,
        }
    }

    /// Takes back what [`Self::state`] kept.
    pub fn restore(&mut self, state: TrackerState) {
        self.latest = state.latest.into_iter().collect();
        self.current = state.current;
    }
}

/// A [`WatermarkTracker`]'s state in a checkpoint: the latest report of each instance and the
/// combined watermark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    latest: Vec<((u32, u32), WmValue)>,
    current: Watermark,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(source: u32, worker: u32, value: WmValue) -> WmReport {
        WmReport {
            source,
            worker,
            value,
        }
    }

    #[test]
    fn minimum_over_reporters_waits_for_all_and_skips_idle() {
        let mut t = WatermarkTracker::new(2);
        t.report(&r(0, 0, WmValue::At(10)));
        assert_eq!(t.advance(), WATERMARK_MIN, "waits for the second instance");
        t.report(&r(0, 1, WmValue::At(5)));
        assert_eq!(t.advance(), 5);
        t.report(&r(0, 1, WmValue::Idle));
        assert_eq!(t.advance(), 10, "idle instance left out");
        t.report(&r(0, 0, WmValue::Idle));
        assert_eq!(t.advance(), 10, "all idle: holds");
        t.report(&r(0, 0, WmValue::At(3)));
        assert_eq!(t.advance(), 10, "never goes back");
    }

    #[test]
    fn bounded_strategy_subtracts_the_bound() {
        let s = WatermarkStrategy::bounded(Duration::from_millis(40));
        assert_eq!(s.watermark(100), 60);
        assert_eq!(WatermarkStrategy::Monotonic.watermark(100), 100);
        assert_eq!(s.watermark(i64::MIN), i64::MIN);
    }
}
