//! [`NexmarkGenerator`], the [`Source`] of Nexmark events over interleaved partitions,
//! optionally kept to a wall-clock rate.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use runnel_engine::{
    Error, PartitionId, PartitionReader, ReadStatus, Reader, Result, Source, SourceContext,
};

use super::config::NexmarkConfig;
use super::generate::Generator;
use super::model::Event;

/// A source of the events `0..events` of a [`NexmarkConfig`].
///
/// Partition `p` of `K` produces event numbers `p, p + K, p + 2K, ...`, so the union over the
/// partitions is the same events whatever `K` is, and all partitions' event times advance
/// together. Each event is pushed with its own `date_time` as its event time and its event
/// number as its offset; [`Source::resume`] seeks straight to an offset.
///
/// With a [`NexmarkConfig::rate`], event `n` is due `n / rate` seconds after the first read
/// (after a resume, counted from the first event read), or, with a wall-clock base
/// ([`NexmarkConfig::wall_clock_base_ms`], [`NexmarkConfig::base_time_now`]), after the base
/// time; a partition that has read everything due reports [`ReadStatus::Pending`], so that it
/// is asked again a little later and its events come in batches of about a millisecond.
///
/// ```
/// use runnel_connectors::nexmark::{NexmarkConfig, NexmarkGenerator};
/// use runnel_engine::{Job, SourceOptions};
///
/// let source = NexmarkGenerator::new(NexmarkConfig::new(1_000_000).partitions(8));
/// let job = Job::new("nexmark", "counts events", move |flow| {
///     flow.source("events", source.clone(), SourceOptions::new())?
///         .sink("hole", runnel_connectors::BlackholeSink::new())
/// });
/// # let _ = job;
/// ```
#[derive(Clone)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
}

impl NexmarkGenerator {
    /// A source of `config`'s events.
    pub fn new(config: NexmarkConfig) -> Self {
        NexmarkGenerator { config }
    }

    /// The configuration.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// Partition `partition`'s reader, from the first of its event numbers at or after `next`.
    fn reader(
        &self,
        partition: PartitionId,
        ctx: &SourceContext,
        next: u64,
    ) -> Result<Box<dyn PartitionReader<Event>>> {
        let k = self.config.partition_count(ctx.workers);
        let p = partition.0;
        if p >= k {
            return Err(Error::Source {
                source_name: ctx.name.clone(),
                reason: format!("nexmark generator has {k} partitions, cannot open partition {p}"),
            });
        }
        let (p, k) = (u64::from(p), u64::from(k));
        let first = if next > p {
            p.saturating_add((next - p).div_ceil(k).saturating_mul(k))
        } else {
            p
        };
        let events = self.config.events();
        let left = if first < events {
            (events - first).div_ceil(k)
        } else {
            0
        };
        let pace = self.config.wall_rate().map(|rate| Pace {
            rate,
            clock: if self.config.is_wall_clock() {
                Clock::Wall {
                    base_ms: self.config.base_time(),
                }
            } else {
                Clock::FirstRead {
                    start: None,
                    origin: first,
                }
            },
        });
        Ok(Box::new(NexmarkReader {
            // Builds the tables (the bids' urls) now rather than in the first read.
            generator: Generator::new(self.config),
            next: first,
            clock: EventClock::new(&self.config, first, k),
            step: k,
            left,
            pace,
        }))
    }
}

impl std::fmt::Debug for NexmarkGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NexmarkGenerator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl From<NexmarkConfig> for NexmarkGenerator {
    fn from(config: NexmarkConfig) -> Self {
        NexmarkGenerator::new(config)
    }
}

impl Source for NexmarkGenerator {
    type Item = Event;

    fn partitions(&mut self, ctx: &SourceContext) -> Result<Vec<String>> {
        let k = self.config.partition_count(ctx.workers);
        Ok((0..k).map(|p| format!("nexmark-{p}-of-{k}")).collect())
    }

    fn open(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<Event>>> {
        self.reader(partition, ctx, 0)
    }

    /// Seeks to event number `next`: nothing is generated to be skipped.
    fn resume(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
        next: u64,
    ) -> Result<Box<dyn PartitionReader<Event>>> {
        self.reader(partition, ctx, next)
    }
}

/// What a paced partition's schedule counts from.
enum Clock {
    /// Event `origin` is due at the first read.
    FirstRead { start: Option<Instant>, origin: u64 },
    /// Event 0 is due at `base_ms` on the wall clock.
    Wall { base_ms: i64 },
}

/// Keeps a partition to the total rate: event `n` is due `n / rate` seconds after its clock's
/// origin, whichever partition it is in.
struct Pace {
    /// Total events per second over all partitions.
    rate: u64,
    clock: Clock,
}

impl Pace {
    /// The highest event number due now, if any.
    fn due(&mut self) -> Option<u64> {
        let (origin, elapsed_ns) = match &mut self.clock {
            Clock::FirstRead { start, origin } => {
                let start = *start.get_or_insert_with(Instant::now);
                (*origin, start.elapsed().as_nanos())
            }
            Clock::Wall { base_ms } => {
                let now_ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                let elapsed = now_ns - i128::from(*base_ms) * 1_000_000;
                (0, u128::try_from(elapsed).ok()?)
            }
        };
        let ahead = elapsed_ns * u128::from(self.rate) / 1_000_000_000;
        Some(origin.saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX)))
    }
}

/// [`NexmarkConfig::timestamp`] of every `step`-th event number, by addition: `base + q`
/// milliseconds, where `q` and `r` are the quotient and remainder of `n * 1000 / rate`.
/// (A division per event cost more than the rest of a bid's timestamp.)
struct EventClock {
    base: i64,
    rate: u64,
    q: u128,
    r: u64,
    /// `step * 1000` divided by `rate`: quotient and remainder.
    dq: u128,
    dr: u64,
}

impl EventClock {
    /// The clock at event `n`.
    fn new(config: &NexmarkConfig, n: u64, step: u64) -> EventClock {
        let rate = config.event_time_rate();
        let (num, d) = (u128::from(n) * 1000, u128::from(step) * 1000);
        let rate128 = u128::from(rate);
        EventClock {
            base: config.base_time(),
            rate,
            q: num / rate128,
            r: (num % rate128) as u64,
            dq: d / rate128,
            dr: (d % rate128) as u64,
        }
    }

    /// The time of the current event.
    #[inline(always)]
    fn now(&self) -> i64 {
        self.base
            .saturating_add(i64::try_from(self.q).unwrap_or(i64::MAX))
    }

    /// On to the event `step` numbers later.
    #[inline(always)]
    fn step(&mut self) {
        self.q += self.dq;
        // Both below `rate`, so no overflow and at most one carry.
        let (r, carry) = match self.r.checked_add(self.dr) {
            Some(r) if r < self.rate => (r, 0),
            Some(r) => (r - self.rate, 1),
            None => (self.r - (self.rate - self.dr), 1),
        };
        self.r = r;
        self.q += carry;
    }
}

struct NexmarkReader {
    generator: Generator,
    /// The next event number.
    next: u64,
    /// The next event's time.
    clock: EventClock,
    /// The number of partitions (the distance between this partition's event numbers).
    step: u64,
    /// Events left in this partition.
    left: u64,
    pace: Option<Pace>,
}

impl PartitionReader<Event> for NexmarkReader {
    fn read(&mut self, out: &mut Reader<Event>) -> Result<ReadStatus> {
        if self.left == 0 {
            return Ok(ReadStatus::Finished);
        }
        let mut count = (out.budget() as u64).min(self.left);
        // Whether this read takes every event due now: the partition has caught up.
        let mut caught_up = false;
        if let Some(pace) = self.pace.as_mut() {
            match pace.due() {
                Some(due) if due >= self.next => {
                    let due_count = (due - self.next) / self.step + 1;
                    caught_up = due_count <= count;
                    count = count.min(due_count);
                }
                _ => {
                    // Nothing due: the next event's time is as far as this partition's
                    // watermark can go (event times grow with the event number).
                    out.advance_event_time(self.clock.now());
                    return Ok(ReadStatus::Pending);
                }
            }
        }
        let mut n = self.next;
        for _ in 0..count {
            let ts = self.clock.now();
            out.push_at(ts, n, self.generator.event(n, ts));
            n = n.wrapping_add(self.step);
            self.clock.step();
        }
        self.next = n;
        self.left -= count;
        if self.left > 0 {
            out.advance_event_time(self.clock.now());
        }
        Ok(if self.left == 0 {
            ReadStatus::Finished
        } else if caught_up {
            // Asked again at once, it would find the few events that fell due meanwhile, and
            // each would pass through the whole dataflow as a batch of its own: a run paced
            // below its peak then kept its workers busy with per-batch work (q5 paced at 6M
            // events/s, about half what it can take at that event-time rate, took 38 of the 40
            // core-seconds of a 20 s run; at 4M, 19).
            ReadStatus::Pending
        } else {
            ReadStatus::More
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Stepping the clock gives what the formula gives for every event it passes,
        /// whatever the rate, start and step, near the top of `u64` too.
        #[test]
        fn the_event_clock_keeps_to_the_formula(
            rate in prop_oneof![1u64..20_000, 1u64..u64::MAX, Just(u64::MAX), Just(1_000u64)],
            start in prop_oneof![0u64..1_000_000, 0u64..u64::MAX],
            step in prop_oneof![1u64..10, 1u64..u64::MAX / 4],
            base in prop_oneof![Just(0i64), Just(1_436_918_400_000i64), Just(i64::MAX - 5)],
        ) {
            let config = NexmarkConfig::new(u64::MAX).event_rate(rate).base_time_ms(base);
            let mut clock = EventClock::new(&config, start, step);
            let mut n = start;
            for _ in 0..200 {
                prop_assert_eq!(clock.now(), config.timestamp(n), "n {}", n);
                let Some(next) = n.checked_add(step) else { break };
                n = next;
                clock.step();
            }
        }
    }
}
