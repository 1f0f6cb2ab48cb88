//! The Bid record, its closed-form definition [`Bid::at`], and [`BidGenerator`], the source that
//! produces `Bid::at(0..events)` over interleaved partitions, optionally at a fixed rate.

use std::time::Instant;

use runnel_engine::{
    Error, PartitionId, PartitionReader, ReadStatus, Reader, Result, Source, SourceContext,
};
use serde::{Deserialize, Serialize};

/// One bid of the benchmark stream; every field is a function of `seq` (see [`Bid::at`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Bid {
    /// The bid's sequence number, `0..events`.
    pub seq: u64,
    /// The auction bid on, `(seq * 7919) % 1000`.
    pub auction: u64,
    /// The bidder, `(seq * 31) % 100000`.
    pub bidder: u64,
    /// The price, `100 + (seq * 17) % 10000`.
    pub price: u64,
    /// Event time in milliseconds, `seq`.
    pub event_time_ms: i64,
}

impl Bid {
    /// The bid with sequence number `seq`:
    /// `auction = (seq * 7919) % 1000`, `bidder = (seq * 31) % 100000`,
    /// `price = 100 + (seq * 17) % 10000`, `event_time_ms = seq`.
    ///
    /// The products wrap on overflow (they cannot overflow below `seq = 2^64 / 7919`, about
    /// 2.3e15, far beyond any benchmark).
    #[inline(always)]
    pub fn at(seq: u64) -> Bid {
        Bid {
            seq,
            auction: seq.wrapping_mul(7919) % 1000,
            bidder: seq.wrapping_mul(31) % 100_000,
            price: 100 + seq.wrapping_mul(17) % 10_000,
            event_time_ms: seq as i64,
        }
    }
}

/// A source of `Bid::at(seq)` for `seq` in `0..events`.
///
/// Partition `p` of `K` produces `seq = p, p + K, p + 2K, ...`, so all partitions' event times
/// advance together. Each record is pushed with its own event time (`event_time_ms`) and with
/// `seq` as its offset. With a rate, the total of `rate` events per second is spread evenly over
/// the partitions; a partition that is ahead of its schedule reports [`ReadStatus::Pending`].
///
/// ```
/// use runnel_connectors::BidGenerator;
/// let source = BidGenerator::new(1_000_000).partitions(8).rate(100_000);
/// # let _ = source;
/// ```
#[derive(Clone, Debug)]
pub struct BidGenerator {
    events: u64,
    partitions: u32,
    rate: Option<u64>,
}

impl BidGenerator {
    /// `events` bids in total, one partition per worker, as fast as possible.
    pub fn new(events: u64) -> Self {
        BidGenerator {
            events,
            partitions: 0,
            rate: None,
        }
    }

    /// Splits the stream into `k` partitions; `0` (the default) means one per worker.
    pub fn partitions(mut self, k: u32) -> Self {
        self.partitions = k;
        self
    }

    /// Produces `events_per_sec` events per second in total, over all partitions; `0` means no
    /// limit (as does not calling this).
    pub fn rate(mut self, events_per_sec: u64) -> Self {
        self.rate = (events_per_sec > 0).then_some(events_per_sec);
        self
    }

    /// Sets or clears the total rate in events per second (`None` or `Some(0)`: no limit).
    pub fn with_rate(mut self, events_per_sec: Option<u64>) -> Self {
        self.rate = events_per_sec.filter(|&r| r > 0);
        self
    }

    /// The total number of events.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The number of partitions for a run with `workers` workers.
    pub fn partition_count(&self, workers: usize) -> u32 {
        if self.partitions == 0 {
            u32::try_from(workers.max(1)).unwrap_or(u32::MAX)
        } else {
            self.partitions
        }
    }
}

impl Source for BidGenerator {
    type Item = Bid;

    fn partitions(&mut self, ctx: &SourceContext) -> Result<Vec<String>> {
        let k = self.partition_count(ctx.workers);
        Ok((0..k).map(|p| format!("bids-{p}-of-{k}")).collect())
    }

    fn open(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<Bid>>> {
        self.reader(partition, ctx, None)
    }

    /// Resumes at sequence number `next` (no records to skip).
    fn resume(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
        next: u64,
    ) -> Result<Box<dyn PartitionReader<Bid>>> {
        self.reader(partition, ctx, Some(next))
    }
}

impl BidGenerator {
    /// Partition `partition`'s reader from `next` on (its offsets are sequence numbers).
    fn reader(
        &self,
        partition: PartitionId,
        ctx: &SourceContext,
        next: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<Bid>>> {
        let k = self.partition_count(ctx.workers);
        let p = partition.0;
        if p >= k {
            return Err(Error::Source {
                source_name: ctx.name.clone(),
                reason: format!("bid generator has {k} partitions, cannot open partition {p}"),
            });
        }
        let (p, k) = (u64::from(p), u64::from(k));
        // Records of partition p: p, p + k, ... < events; from `next` on when resuming.
        let first = match next {
            Some(n) if n > p => p + (n - p).div_ceil(k) * k,
            _ => p,
        };
        let left = if first < self.events {
            (self.events - first).div_ceil(k)
        } else {
            0
        };
        let pace = self.rate.map(|rate| Pace {
            start: None,
            rate,
            partitions: k,
            emitted: 0,
        });
        Ok(Box::new(BidReader {
            next: first,
            step: k,
            left,
            pace,
        }))
    }
}

/// Keeps one partition to its share of the total rate.
struct Pace {
    start: Option<Instant>,
    /// Total events per second over all partitions.
    rate: u64,
    partitions: u64,
    /// Records this partition has produced.
    emitted: u64,
}

impl Pace {
    /// How many records the partition may produce now to stay on schedule.
    fn allowed(&mut self) -> u64 {
        let start = *self.start.get_or_insert_with(Instant::now);
        let nanos = start.elapsed().as_nanos();
        let due = nanos * u128::from(self.rate) / (u128::from(self.partitions) * 1_000_000_000);
        u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.emitted)
    }
}

struct BidReader {
    /// The next sequence number.
    next: u64,
    /// The number of partitions (the distance between this partition's sequence numbers).
    step: u64,
    /// Records left in this partition.
    left: u64,
    pace: Option<Pace>,
}

impl PartitionReader<Bid> for BidReader {
    fn read(&mut self, out: &mut Reader<Bid>) -> Result<ReadStatus> {
        if self.left == 0 {
            return Ok(ReadStatus::Finished);
        }
        let mut n = (out.budget() as u64).min(self.left);
        // Whether this read takes every record due now: the partition has caught up.
        let mut caught_up = false;
        if let Some(pace) = self.pace.as_mut() {
            let allowed = pace.allowed();
            if allowed == 0 {
                return Ok(ReadStatus::Pending);
            }
            caught_up = allowed <= n;
            n = n.min(allowed);
            pace.emitted += n;
        }
        let (first, step) = (self.next, self.step);
        out.extend_at((0..n).map(|i| {
            let seq = first.wrapping_add(i.wrapping_mul(step));
            (seq as i64, seq, Bid::at(seq))
        }));
        self.next = first.wrapping_add(n.wrapping_mul(step));
        self.left -= n;
        Ok(if self.left == 0 {
            ReadStatus::Finished
        } else if caught_up {
            // Asked a little later rather than at once: see the Nexmark generator's reader.
            ReadStatus::Pending
        } else {
            ReadStatus::More
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A paced partition behind its schedule reads full budgets and says there is more; once
    /// what is left of the due records fits, it says it is pending, so that it is asked again
    /// a little later rather than at once for the few that fall due in between.
    #[test]
    fn a_paced_partition_says_pending_once_it_has_caught_up() {
        // 10,000 a second, started 100 ms ago: about 1,000 due.
        let mut reader = BidReader {
            next: 0,
            step: 1,
            left: 100_000,
            pace: Some(Pace {
                start: Some(Instant::now() - Duration::from_millis(100)),
                rate: 10_000,
                partitions: 1,
                emitted: 0,
            }),
        };
        let mut out = Reader::for_test(300);
        let mut reads = Vec::new();
        loop {
            let status = reader.read(&mut out).unwrap();
            reads.push((status, out.take().0.len()));
            if status != ReadStatus::More {
                break;
            }
        }
        let (last, full) = reads.split_last().unwrap();
        assert!(full.len() >= 3, "1,000 and more due, 300 a read: {reads:?}");
        assert!(
            full.iter().all(|&r| r == (ReadStatus::More, 300)),
            "{reads:?}"
        );
        assert_eq!(last.0, ReadStatus::Pending, "{reads:?}");
        assert!((1..=300).contains(&last.1), "{reads:?}");
        // Asked again at once: nothing or next to nothing has fallen due.
        let status = reader.read(&mut out).unwrap();
        assert_eq!(status, ReadStatus::Pending);
        assert!(out.take().0.len() < 300);
    }
}
