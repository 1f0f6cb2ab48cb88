//! The Nexmark benchmark's event generator: people, auctions and bids
//! ([`Person`], [`Auction`], [`Bid`], one [`Event`] each), configured by [`NexmarkConfig`],
//! read by a job through [`NexmarkGenerator`] (a splittable [`runnel_engine::Source`]) and
//! written to JSON lines by [`write_json_lines`].
//!
//! ```
//! use runnel_connectors::nexmark::{Event, NexmarkConfig};
//!
//! let config = NexmarkConfig::new(1_000).seed(42);
//! let bids = config.iter().filter(|e| matches!(e, Event::Bid(_))).count();
//! assert_eq!(bids, 920); // 46 in every 50
//! ```
//!
//! # Following the reference
//! The reference is the Java generator of the Nexmark suite for Flink
//! (`github.com/nexmark/nexmark`, `nexmark-flink/.../generator/`: `NexmarkGenerator`,
//! `GeneratorConfig`, `model/{Person,Auction,Bid,Price,Strings,Long}Generator`, defaults from
//! `NexmarkConfiguration`), itself derived from Apache Beam's
//! (`sdks/java/testing/nexmark/.../sources/generator/`). With its default configuration:
//!
//! * event `n` is a person if `n % 50 < 1`, an auction if `n % 50 < 4`, else a bid
//!   (proportions 1 : 3 : 46);
//! * its time is `base + n * 1000 / rate` ms: in order, at 10,000 events per second of event
//!   time unless a rate is given; the default base is Beam's 2015-07-15T00:00:00Z;
//! * a person's or an auction's id is the reference's `lastBase0PersonId(n)` /
//!   `lastBase0AuctionId(n)` plus 1000, so ids count up from 1000 in event order;
//! * an auction's seller is, with probability 3/4 (`hotSellersRatio` 4), the hot seller, the
//!   first of the current group of 100 people, else one of the last 1000 people (`numActivePeople`)
//!   or up to 10 ids past the last (`PERSON_ID_LEAD`); its category is 10 to 14, uniformly;
//! * a bid's auction is, with probability 1/2 (`hotAuctionRatio` 2), the hot auction, the first
//!   of the current group of 100 auctions, else one of the last 101 auctions
//!   (`numInFlightAuctions` 100) or up to 10 past the last (`AUCTION_ID_LEAD`); its bidder is,
//!   with probability 3/4 (`hotBiddersRatio` 4), the second of the current group of 100 people,
//!   else chosen like a non-hot seller;
//! * prices (initial bids, bids, and the reserve's margin over the initial bid) are
//!   `round(10^(6u) * 100)` cents, `u` uniform in `[0, 1)`: log-uniform from 100 to 10^8;
//! * an auction lasts `1..=2h` ms, uniformly, where `h` is the event time until 100 more
//!   auctions have opened (`nextAuctionLengthMs`);
//! * names, emails, credit cards, cities and states come from the reference's lists and
//!   `nextString`; item names and descriptions are `nextString(20)` and `nextString(100)`;
//! * a bid's channel is one of four hot channels with probability 1/2, else `channel-<c>` for
//!   `c` in `0..10000`, with the url the reference builds for it;
//! * `extra` pads each record to the reference's average sizes, 200 bytes per person, 500 per
//!   auction and 100 per bid, as the reference counts them (8 bytes per number plus the
//!   lengths of the strings, without a bid's channel and url), its length uniform within 20%.
//!
//! # Where it differs
//! * Randomness: each event draws from SplitMix64 seeded by a hash of `(seed, n)`, so an event
//!   is a pure function of the configuration and `n` (as in Beam, which seeds
//!   `java.util.Random` with the event id; the Flink generator's is unseeded). Distributions
//!   are the reference's; the values are not bit-identical to either.
//! * Splitting: the reference splits a run into generators with their own timelines; here the
//!   numbering is global and partition `p` of `K` takes `p, p + K, ...`, so the events are the
//!   same whatever the number of partitions or workers.
//! * Not implemented: rate shapes (`nextEventRate`, square and sine waves), out-of-order groups
//!   (`outOfOrderGroupSize`, 1 by default), `extendedBidMode`, and configurable proportions,
//!   hot ratios and sizes (the defaults are constants in this module).
//! * The Flink `BidGenerator` adds 1000 to the bidder twice (bidders from 2000); here, as in
//!   Beam, once.
//! * Channel urls are fixed by the seed and the channel number; the reference draws them from
//!   an unseeded generator once per run. Padding is lowercase letters only (the reference's
//!   `nextExactString` can emit a few other characters from negative integers).
//! * Times are computed in integers (`n * 1000 / rate`), not doubles of microseconds.
//! * Speed: no string of a bid or an auction is allocated. Channels, urls and names come from
//!   tables built once per process (urls once per seed); the padding (`extra`) of every event
//!   is a slice, at a random position, of one pool of 64 KiB of random letters, and an
//!   auction's item name and description are slices of another, of letters and spaces: their
//!   lengths follow the reference, their characters are not drawn anew for each event. The
//!   string fields are [`Text`] (`Cow<'static, str>`), borrowed from those tables, owned when
//!   read from JSON. A bid's small random choices (hot or not, which channel, padding length
//!   and position) take 32 random bits each, two per draw; prices come from a table and a
//!   short series rather than `exp` (the same cents, to within rounding at exact halves).
//!
//! Like the reference, a non-hot seller or bidder may be up to [`PERSON_ID_LEAD`] ids past the
//! last person created, and a non-hot auction up to [`AUCTION_ID_LEAD`] ids past the last
//! auction (so that new people and auctions appear to arrive slightly late); and the hot bidder
//! of a group whose first person was just created is the group's second person, created 50
//! events later.

mod config;
mod generate;
mod json;
mod model;
mod source;

pub use config::{
    NexmarkConfig, AUCTION_ID_LEAD, AUCTION_PROPORTION, AVG_AUCTION_BYTE_SIZE, AVG_BID_BYTE_SIZE,
    AVG_PERSON_BYTE_SIZE, BID_PROPORTION, DEFAULT_BASE_TIME_MS, DEFAULT_EVENT_RATE, DEFAULT_SEED,
    FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID, HOT_AUCTION_GROUP, HOT_AUCTION_RATIO,
    HOT_BIDDERS_RATIO, HOT_BIDDER_GROUP, HOT_CHANNELS, HOT_CHANNELS_RATIO, HOT_SELLERS_RATIO,
    HOT_SELLER_GROUP, NUM_ACTIVE_PEOPLE, NUM_CATEGORIES, NUM_CHANNELS, NUM_IN_FLIGHT_AUCTIONS,
    PERSON_ID_LEAD, PERSON_PROPORTION, TOTAL_PROPORTION,
};
pub use json::write_json_lines;
pub use model::{Auction, Bid, Event, Person, Text};
pub use source::NexmarkGenerator;
