//! [`NexmarkConfig`]: how many events, how fast, from which seed and base time, over how many
//! partitions; and the reference generator's fixed parameters, as constants.

use std::time::{SystemTime, UNIX_EPOCH};

/// The first person id (the reference's `GeneratorConfig.FIRST_PERSON_ID`).
pub const FIRST_PERSON_ID: u64 = 1000;
/// The first auction id (`GeneratorConfig.FIRST_AUCTION_ID`).
pub const FIRST_AUCTION_ID: u64 = 1000;
/// The first category id (`GeneratorConfig.FIRST_CATEGORY_ID`).
pub const FIRST_CATEGORY_ID: u64 = 10;
/// The number of categories (`AuctionGenerator.NUM_CATEGORIES`): ids 10 to 14.
pub const NUM_CATEGORIES: u64 = 5;

/// Persons per [`TOTAL_PROPORTION`] events (`NexmarkConfiguration.personProportion`).
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions per [`TOTAL_PROPORTION`] events (`auctionProportion`).
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids per [`TOTAL_PROPORTION`] events (`bidProportion`).
pub const BID_PROPORTION: u64 = 46;
/// Events per cycle: event `n` is a person if `n % 50 < 1`, an auction if `< 4`, else a bid.
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Auctions likely still open at any time (`numInFlightAuctions`): non-hot bids pick one of
/// the last 100 auctions, and auction lengths are drawn so that about this many are open.
pub const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
/// People who may still sell or bid (`numActivePeople`): non-hot sellers and bidders are one of
/// the last 1000 people.
pub const NUM_ACTIVE_PEOPLE: u64 = 1000;
/// How many ids past the last person a random person id may be (`PersonGenerator.PERSON_ID_LEAD`),
/// so that a person may appear shortly after their first auction or bid.
pub const PERSON_ID_LEAD: u64 = 10;
/// How many ids past the last auction a random auction id may be (`AUCTION_ID_LEAD`).
pub const AUCTION_ID_LEAD: u64 = 10;

/// A bid is for the hot auction with probability `1 - 1/2` (`NexmarkConfiguration.hotAuctionRatio`).
pub const HOT_AUCTION_RATIO: u64 = 2;
/// An auction is by the hot seller with probability `1 - 1/4` (`hotSellersRatio`).
pub const HOT_SELLERS_RATIO: u64 = 4;
/// A bid is by the hot bidder with probability `1 - 1/4` (`hotBiddersRatio`).
pub const HOT_BIDDERS_RATIO: u64 = 4;
/// The hot auction is the first of the current group of 100 auctions (`BidGenerator`'s own
/// constant `HOT_AUCTION_RATIO = 100`).
pub const HOT_AUCTION_GROUP: u64 = 100;
/// The hot seller is the first of the current group of 100 people (`AuctionGenerator`'s
/// `HOT_SELLER_RATIO = 100`).
pub const HOT_SELLER_GROUP: u64 = 100;
/// The hot bidder is the second of the current group of 100 people (`BidGenerator`'s
/// `HOT_BIDDER_RATIO = 100`).
pub const HOT_BIDDER_GROUP: u64 = 100;

/// A bid comes from one of the four hot channels with probability `1 - 1/2`
/// (`BidGenerator.HOT_CHANNELS_RATIO`).
pub const HOT_CHANNELS_RATIO: u64 = 2;
/// The hot channels (`BidGenerator.HOT_CHANNELS`).
pub const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// The other channels are `channel-0` to `channel-9999` (`BidGenerator.CHANNELS_NUMBER`).
pub const NUM_CHANNELS: u64 = 10_000;

/// The average size of a person (`avgPersonByteSize`), in the reference's accounting: 8 bytes
/// for the id plus the lengths of the strings.
pub const AVG_PERSON_BYTE_SIZE: usize = 200;
/// The average size of an auction (`avgAuctionByteSize`): 8 bytes for each of six numbers plus
/// the lengths of the name, description and extra.
pub const AVG_AUCTION_BYTE_SIZE: usize = 500;
/// The average size of a bid (`avgBidByteSize`): 8 bytes for each of four numbers plus the
/// length of the extra (the reference does not count the channel and url).
pub const AVG_BID_BYTE_SIZE: usize = 100;

/// The event-time rate when neither [`NexmarkConfig::event_rate`] nor [`NexmarkConfig::rate`] is
/// set: 10,000 events per second (`firstEventRate`), one event every 100 microseconds.
pub const DEFAULT_EVENT_RATE: u64 = 10_000;
/// The default base time, 2015-07-15T00:00:00Z (Beam's `NexmarkUtils.BASE_TIME`), so that
/// every run sees the same timestamps.
pub const DEFAULT_BASE_TIME_MS: i64 = 1_436_918_400_000;
/// The default seed.
pub const DEFAULT_SEED: u64 = 0x6e65_786d_6172_6b00; // "nexmark\0"

/// What to generate: the number of events, the pace, the seed, the base time and the number of
/// partitions. Every event is a function of the configuration and its event number alone (see
/// [`NexmarkConfig::event`]), whatever the partitioning.
///
/// ```
/// use runnel_connectors::nexmark::{NexmarkConfig, NexmarkGenerator};
///
/// // 10 million events as fast as possible, event time advancing 10,000 events per second.
/// let batch = NexmarkConfig::new(10_000_000).seed(7);
/// assert_eq!(batch.timestamp(20_000) - batch.timestamp(0), 2_000);
///
/// // A latency run: 50,000 events per second, each leaving the source when the wall clock
/// // reaches its `date_time`.
/// let live = NexmarkConfig::new(3_000_000).rate(50_000).base_time_now();
/// # let _ = (NexmarkGenerator::new(batch), live);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NexmarkConfig {
    /// Events in total, numbered `0..events`.
    events: u64,
    /// Total events per wall-clock second over all partitions; `None`: as fast as possible.
    rate: Option<u64>,
    /// Events per second of event time; `None`: `rate`, else [`DEFAULT_EVENT_RATE`].
    event_rate: Option<u64>,
    /// Seeds every random choice.
    seed: u64,
    /// The `date_time` of event 0, epoch milliseconds.
    base_time_ms: i64,
    /// `base_time_ms` was read from the wall clock: pace against it, not the first read.
    wall_clock: bool,
    /// Partitions; 0: one per worker.
    partitions: u32,
}

impl NexmarkConfig {
    /// `events` events, as fast as possible, from [`DEFAULT_SEED`] and
    /// [`DEFAULT_BASE_TIME_MS`], at [`DEFAULT_EVENT_RATE`] in event time, one partition per
    /// worker.
    pub fn new(events: u64) -> Self {
        NexmarkConfig {
            events,
            rate: None,
            event_rate: None,
            seed: DEFAULT_SEED,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            wall_clock: false,
            partitions: 0,
        }
    }

    /// Produces `events_per_sec` events per wall-clock second in total, over all partitions
    /// (a partition ahead of schedule waits); `0` means no limit. Unless
    /// [`NexmarkConfig::event_rate`] says otherwise, event time advances at the same rate.
    pub fn rate(self, events_per_sec: u64) -> Self {
        self.with_rate(Some(events_per_sec))
    }

    /// Sets or clears the wall-clock rate (`None` or `Some(0)`: no limit); see
    /// [`NexmarkConfig::rate`].
    pub fn with_rate(mut self, events_per_sec: Option<u64>) -> Self {
        self.rate = events_per_sec.filter(|&r| r > 0);
        self
    }

    /// Spaces events `1 / events_per_sec` seconds apart in event time, whatever the wall-clock
    /// rate (the reference's `firstEventRate`); `0` goes back to the default (the wall-clock
    /// rate if there is one, else [`DEFAULT_EVENT_RATE`]).
    pub fn event_rate(mut self, events_per_sec: u64) -> Self {
        self.event_rate = (events_per_sec > 0).then_some(events_per_sec);
        self
    }

    /// Seeds the random choices; other seeds give other events.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Event 0 happens at `ms` (epoch milliseconds); a paced run counts from its first read.
    pub fn base_time_ms(mut self, ms: i64) -> Self {
        self.base_time_ms = ms;
        self.wall_clock = false;
        self
    }

    /// Event 0 happens now (the wall clock when this is called), for latency runs: see
    /// [`NexmarkConfig::wall_clock_base_ms`].
    ///
    /// The time is read once, here, so every partition of one configuration agrees; processes
    /// that each build their own configuration must agree on a time and pass it to
    /// [`NexmarkConfig::wall_clock_base_ms`] instead.
    pub fn base_time_now(self) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.wall_clock_base_ms(now)
    }

    /// Event 0 happens at `ms` (epoch milliseconds) on the wall clock, for latency runs. With a
    /// [`NexmarkConfig::rate`] (and no other [`NexmarkConfig::event_rate`]), each event leaves
    /// the source when the wall clock reaches its `date_time` (rather than counting from the
    /// first read, as with [`NexmarkConfig::base_time_ms`]): events due before the job started
    /// come out at once, then the source keeps to the clock.
    pub fn wall_clock_base_ms(mut self, ms: i64) -> Self {
        self.base_time_ms = ms;
        self.wall_clock = true;
        self
    }

    /// Splits the stream into `k` partitions; `0` (the default) means one per worker.
    pub fn partitions(mut self, k: u32) -> Self {
        self.partitions = k;
        self
    }

    /// The total number of events.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The wall-clock rate in events per second, if paced.
    pub fn wall_rate(&self) -> Option<u64> {
        self.rate
    }

    /// Events per second of event time.
    pub fn event_time_rate(&self) -> u64 {
        self.event_rate.or(self.rate).unwrap_or(DEFAULT_EVENT_RATE)
    }

    /// The seed.
    pub fn seed_value(&self) -> u64 {
        self.seed
    }

    /// The `date_time` of event 0, epoch milliseconds.
    pub fn base_time(&self) -> i64 {
        self.base_time_ms
    }

    /// Whether the base time is on the wall clock ([`NexmarkConfig::wall_clock_base_ms`],
    /// [`NexmarkConfig::base_time_now`]).
    pub fn is_wall_clock(&self) -> bool {
        self.wall_clock
    }

    /// The number of partitions for a run with `workers` workers.
    pub fn partition_count(&self, workers: usize) -> u32 {
        if self.partitions == 0 {
            u32::try_from(workers.max(1)).unwrap_or(u32::MAX)
        } else {
            self.partitions
        }
    }

    /// The `date_time` of event `n`: `base_time + n * 1000 / event_time_rate` milliseconds
    /// (rounded down; saturating far past the year 292 million).
    #[inline]
    pub fn timestamp(&self, n: u64) -> i64 {
        let rate = self.event_time_rate();
        let ms = match n.checked_mul(1000) {
            Some(x) => u128::from(x / rate),
            None => u128::from(n) * 1000 / u128::from(rate),
        };
        self.base_time_ms
            .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}
