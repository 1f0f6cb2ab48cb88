//! The events themselves: [`NexmarkConfig::event`], a pure function of the configuration and the
//! event number, following the reference's `PersonGenerator`, `AuctionGenerator`,
//! `BidGenerator`, `PriceGenerator` and `StringsGenerator` (see the module docs of
//! [`nexmark`](super) for where it differs).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::config::*;
use super::model::{Auction, Bid, Event, Person, Text};

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// The shortest random string before trimming (`StringsGenerator.MIN_STRING_LENGTH`).
const MIN_STRING_LENGTH: u64 = 3;

/// Separates the channel urls' random streams from the events'.
const URL_STREAM: u64 = 0x75_726c_7300; // "urls"

/// The SplitMix64 finalizer: a bijection on `u64` that scatters nearby inputs.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea and Flood, 2014), started from a hash of `(seed, n)` so that each
/// event has its own stream and nearby events' streams do not overlap.
struct Rng(u64);

impl Rng {
    #[inline(always)]
    fn new(seed: u64, n: u64) -> Rng {
        Rng(mix(seed ^ mix(n.wrapping_add(0x9e37_79b9_7f4a_7c15))))
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (bias below `n / 2^64`).
    #[inline(always)]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`, 53 bits.
    #[inline(always)]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One of `items`, uniformly.
    #[inline(always)]
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The reference's `PriceGenerator.nextPrice`: `round(10^(6u) * 100)` cents for `u` uniform in
/// `[0, 1)`, so log-uniform from $1 to $1,000,000.
#[inline]
fn price(rng: &mut Rng) -> u64 {
    // 10^(6u) as e^(6u ln 10): the same value to within rounding, and faster than powf.
    ((rng.unit() * 6.0 * std::f64::consts::LN_10).exp() * 100.0).round() as u64
}

/// Four characters of `3..max_len` from each random draw, 16 bits apiece: `special` with
/// probability 5042/65536 (1/13 to within 0.01%), else a lowercase letter (uniform to within
/// 0.05%).
#[inline(always)]
fn push_chars(rng: &mut Rng, s: &mut Vec<u8>, len: usize, special: u8) {
    let mut left = len;
    while left > 0 {
        let take = left.min(4);
        let mut x = rng.next();
        for _ in 0..take {
            let m = (x & 0xffff) as u32 * 13;
            s.push(if m >> 16 == 0 {
                special
            } else {
                b'a' + (((m & 0xffff) * 26) >> 16) as u8
            });
            x >>= 16;
        }
        left -= take;
    }
}

/// Appends the reference's `StringsGenerator.nextString(maxLength, special)`: `3..max_len`
/// characters, each `special` with probability 1/13, else a lowercase letter; trimmed of
/// spaces at both ends when `special` is a space.
fn push_string(rng: &mut Rng, s: &mut Vec<u8>, max_len: u64, special: u8) {
    let len = (MIN_STRING_LENGTH + rng.below(max_len - MIN_STRING_LENGTH)) as usize;
    let start = s.len();
    push_chars(rng, s, len, special);
    if special == b' ' {
        while s.len() > start && s[s.len() - 1] == b' ' {
            s.pop();
        }
        let lead = s[start..].iter().take_while(|&&c| c == b' ').count();
        s.drain(start..start + lead);
    }
}

/// Fills `out` with lowercase letters (the reference's `nextExactString`), four per random
/// draw (uniform to within 0.05%).
#[inline]
fn fill_letters(rng: &mut Rng, out: &mut [u8]) {
    for chunk in out.chunks_mut(4) {
        let x = rng.next();
        for (i, c) in chunk.iter_mut().enumerate() {
            let v = ((x >> (16 * i)) & 0xffff) as u32;
            *c = b'a' + ((v * 26) >> 16) as u8;
        }
    }
}

/// The bytes, all ASCII, as a `String`.
#[inline]
fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("generated strings are ASCII")
}

/// Random lowercase letters that every event's padding is a slice of (64 KiB plus the longest
/// padding), generated once from a fixed seed.
fn letters() -> &'static str {
    static LETTERS: OnceLock<String> = OnceLock::new();
    LETTERS.get_or_init(|| {
        let mut rng = Rng::new(0x6c65_7474_6572_7300, 0); // "letters"
        let mut s = vec![0; LETTER_POOL + AVG_AUCTION_BYTE_SIZE * 2];
        fill_letters(&mut rng, &mut s);
        ascii(s)
    })
}

/// The size of the pool of padding start positions.
const LETTER_POOL: usize = 1 << 16;

/// The reference's `StringsGenerator.nextExtra`: padding such that `current + len` is on average
/// `average`, its length uniform within 20% of `average - current`. The letters are a slice of
/// a pool of random letters at a random position (the reference draws each letter; padding is
/// only there to give records their size), so padding costs no allocation.
fn extra(rng: &mut Rng, current: usize, average: usize) -> Text {
    if current > average {
        return Cow::Borrowed("");
    }
    let wanted = average - current;
    // Java's Math.round(wanted * 0.2): wanted / 5 never ends in .5, so this is exact.
    let delta = (2 * wanted + 5) / 10;
    let len = wanted - delta
        + if delta == 0 {
            0
        } else {
            rng.below(2 * delta as u64) as usize
        };
    let at = rng.below(LETTER_POOL as u64) as usize;
    Cow::Borrowed(&letters()[at..at + len])
}

/// Every "first last" name, at `first * LAST_NAMES.len() + last`.
fn names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        FIRST_NAMES
            .iter()
            .flat_map(|f| LAST_NAMES.iter().map(move |l| format!("{f} {l}")))
            .collect()
    })
}

/// Every channel name: `channel-<c>` at `c`, hot channel `i` at `NUM_CHANNELS + i`.
fn channels() -> &'static [String] {
    static CHANNELS: OnceLock<Vec<String>> = OnceLock::new();
    CHANNELS.get_or_init(|| {
        (0..NUM_CHANNELS)
            .map(|c| format!("channel-{c}"))
            .chain(HOT_CHANNELS.iter().map(|h| h.to_string()))
            .collect()
    })
}

/// Appends `v` in decimal.
fn push_u64(s: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    s.extend_from_slice(&digits[i..]);
}

/// The last person id (base 0) at event `n`, the reference's `lastBase0PersonId`: the person
/// event `n` creates, if it is a person, else the last one created before it.
#[inline]
fn last_base0_person(n: u64) -> u64 {
    let (epoch, offset) = (n / TOTAL_PROPORTION, n % TOTAL_PROPORTION);
    // With the default proportions (one person per cycle) the offset is always 0.
    epoch * PERSON_PROPORTION
        + if offset < PERSON_PROPORTION {
            offset
        } else {
            PERSON_PROPORTION - 1
        }
}

/// The last auction id (base 0) at event `n`, the reference's `lastBase0AuctionId`; 0 before
/// the first auction (where the reference says -1; it is never used there).
#[inline]
fn last_base0_auction(n: u64) -> u64 {
    let (epoch, offset) = (n / TOTAL_PROPORTION, n % TOTAL_PROPORTION);
    if offset < PERSON_PROPORTION {
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    } else {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    }
}

/// A random active person (base 0), the reference's `nextBase0PersonId`: one of the last
/// [`NUM_ACTIVE_PEOPLE`], or up to [`PERSON_ID_LEAD`] ids ahead of the last.
#[inline]
fn random_base0_person(rng: &mut Rng, n: u64) -> u64 {
    let people = last_base0_person(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

/// A random open auction (base 0), the reference's `nextBase0AuctionId`: one of the last
/// [`NUM_IN_FLIGHT_AUCTIONS`] + 1, or up to [`AUCTION_ID_LEAD`] ids ahead of the last.
#[inline]
fn random_base0_auction(rng: &mut Rng, n: u64) -> u64 {
    let max = last_base0_auction(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// Appends the reference's `BidGenerator.getBaseUrl`, drawn from `rng`.
fn push_base_url(rng: &mut Rng, s: &mut Vec<u8>) {
    s.extend_from_slice(b"https://www.nexmark.com/");
    push_string(rng, s, 5, b'_');
    s.push(b'/');
    push_string(rng, s, 5, b'_');
    s.push(b'/');
    push_string(rng, s, 5, b'_');
    s.extend_from_slice(b"/item.htm?query=1");
}

impl NexmarkConfig {
    /// Event number `n`: a [`Person`] if `n % 50 < 1`, an [`Auction`] if `n % 50 < 4`, else a
    /// [`Bid`], at [`NexmarkConfig::timestamp`]`(n)`. A pure function of the configuration's
    /// seed, base time and event-time rate, and of `n`.
    ///
    /// ```
    /// use runnel_connectors::nexmark::{Event, NexmarkConfig};
    ///
    /// let config = NexmarkConfig::new(100);
    /// assert!(matches!(config.event(0), Event::Person(ref p) if p.id == 1000));
    /// assert!(matches!(config.event(1), Event::Auction(ref a) if a.id == 1000));
    /// assert!(matches!(config.event(4), Event::Bid(_)));
    /// assert_eq!(config.event(53), config.event(53));
    /// ```
    #[inline]
    pub fn event(&self, n: u64) -> Event {
        let mut rng = Rng::new(self.seed_value(), n);
        let ts = self.timestamp(n);
        let offset = n % TOTAL_PROPORTION;
        if offset < PERSON_PROPORTION {
            Event::Person(Box::new(self.person(&mut rng, n, ts)))
        } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
            Event::Auction(Box::new(self.auction(&mut rng, n, ts)))
        } else {
            Event::Bid(self.bid(&mut rng, n, ts))
        }
    }

    /// Events `0..events` in order.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.events()).map(move |n| self.event(n))
    }

    /// Every bid url of this configuration's seed: `channel-<c>`'s at `c`, hot channel `i`'s
    /// at `NUM_CHANNELS + i`. Built once per seed and process (10,004 urls, about 1 MB), and
    /// kept for the life of the process, so bids borrow them.
    #[inline]
    pub(crate) fn urls(&self) -> &'static [String] {
        thread_local! {
            /// The last seed's urls on this thread (most threads only ever see one seed).
            static LAST: std::cell::Cell<Option<(u64, &'static [String])>> =
                const { std::cell::Cell::new(None) };
        }
        let seed = self.seed_value();
        if let Some((s, urls)) = LAST.with(|l| l.get()) {
            if s == seed {
                return urls;
            }
        }
        let urls = self.urls_locked();
        LAST.with(|l| l.set(Some((seed, urls))));
        urls
    }

    fn urls_locked(&self) -> &'static [String] {
        static URLS: Mutex<Option<HashMap<u64, &'static [String]>>> = Mutex::new(None);
        let mut all = URLS.lock().unwrap_or_else(|p| p.into_inner());
        let all = all.get_or_insert_with(HashMap::new);
        all.entry(self.seed_value()).or_insert_with(|| {
            let urls: Vec<String> = (0..NUM_CHANNELS + HOT_CHANNELS.len() as u64)
                .map(|c| self.url(c))
                .collect();
            Box::leak(urls.into_boxed_slice())
        })
    }

    /// The reference's `PersonGenerator.nextPerson`.
    fn person(&self, rng: &mut Rng, n: u64, ts: i64) -> Person {
        let id = last_base0_person(n) + FIRST_PERSON_ID;
        let first = rng.below(FIRST_NAMES.len() as u64) as usize;
        let last = rng.below(LAST_NAMES.len() as u64) as usize;
        let name = names()[first * LAST_NAMES.len() + last].as_str();
        let mut email = Vec::with_capacity(6 + 1 + 4 + 4);
        push_string(rng, &mut email, 7, b' ');
        email.push(b'@');
        push_string(rng, &mut email, 5, b' ');
        email.extend_from_slice(b".com");
        let email_address = ascii(email);
        let mut card = Vec::with_capacity(19);
        for i in 0..4 {
            if i > 0 {
                card.push(b' ');
            }
            let group = rng.below(10_000);
            card.extend([1000, 100, 10, 1].map(|div| b'0' + (group / div % 10) as u8));
        }
        let credit_card = ascii(card);
        let city = rng.pick(&US_CITIES);
        let state = rng.pick(&US_STATES);
        let size =
            8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        Person {
            id,
            name: Cow::Borrowed(name),
            email_address,
            credit_card,
            city: Cow::Borrowed(city),
            state: Cow::Borrowed(state),
            date_time: ts,
            extra: extra(rng, size, AVG_PERSON_BYTE_SIZE),
        }
    }

    /// The reference's `AuctionGenerator.nextAuction` (without its `extendedBidMode`).
    fn auction(&self, rng: &mut Rng, n: u64, ts: i64) -> Auction {
        let id = last_base0_auction(n) + FIRST_AUCTION_ID;
        let seller = if rng.below(HOT_SELLERS_RATIO) > 0 {
            last_base0_person(n) / HOT_SELLER_GROUP * HOT_SELLER_GROUP
        } else {
            random_base0_person(rng, n)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let initial_bid = price(rng);
        let expires = ts.saturating_add(self.auction_length_ms(rng, n, ts));
        let mut item_name = Vec::with_capacity(19);
        push_string(rng, &mut item_name, 20, b' ');
        let item_name = ascii(item_name);
        let mut description = Vec::with_capacity(99);
        push_string(rng, &mut description, 100, b' ');
        let description = ascii(description);
        let reserve = initial_bid + price(rng);
        let size = 8 + item_name.len() + description.len() + 8 * 5;
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller,
            category,
            extra: extra(rng, size, AVG_AUCTION_BYTE_SIZE),
        }
    }

    /// The reference's `nextAuctionLengthMs`: uniform in `1..=2h`, where `h` is the event time
    /// until [`NUM_IN_FLIGHT_AUCTIONS`] more auctions have opened, so that about that many are
    /// open at any time.
    fn auction_length_ms(&self, rng: &mut Rng, n: u64, ts: i64) -> i64 {
        let events_ahead = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = self.timestamp(n.saturating_add(events_ahead)) - ts;
        let span = u64::try_from(horizon.saturating_mul(2)).unwrap_or(0).max(1);
        1 + i64::try_from(rng.below(span)).unwrap_or(i64::MAX - 1)
    }

    /// The reference's `BidGenerator.nextBid` (without its `extendedBidMode`).
    fn bid(&self, rng: &mut Rng, n: u64, ts: i64) -> Bid {
        let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
            last_base0_auction(n) / HOT_AUCTION_GROUP * HOT_AUCTION_GROUP
        } else {
            random_base0_auction(rng, n)
        } + FIRST_AUCTION_ID;
        let bidder = if rng.below(HOT_BIDDERS_RATIO) > 0 {
            // The second person of the group, so hot bidders are not hot sellers.
            last_base0_person(n) / HOT_BIDDER_GROUP * HOT_BIDDER_GROUP + 1
        } else {
            random_base0_person(rng, n)
        } + FIRST_PERSON_ID;
        let price = price(rng);
        let index = if rng.below(HOT_CHANNELS_RATIO) > 0 {
            NUM_CHANNELS + rng.below(HOT_CHANNELS.len() as u64)
        } else {
            rng.below(NUM_CHANNELS)
        } as usize;
        Bid {
            auction,
            bidder,
            price,
            channel: Cow::Borrowed(channels()[index].as_str()),
            url: Cow::Borrowed(self.urls()[index].as_str()),
            date_time: ts,
            extra: extra(rng, 8 * 4, AVG_BID_BYTE_SIZE),
        }
    }

    /// The url of channel `index` (`channel-<index>` below [`NUM_CHANNELS`], else hot channel
    /// `index - NUM_CHANNELS`), fixed by the seed: a base url (the reference's `getBaseUrl`)
    /// and, for 9 numbered channels in 10, `&channel_id=<|bit-reversed index|>` (the
    /// reference's `getNextChannelAndurl`).
    fn url(&self, index: u64) -> String {
        let mut rng = Rng::new(self.seed_value() ^ URL_STREAM, index);
        let mut url = Vec::with_capacity(88);
        push_base_url(&mut rng, &mut url);
        if index < NUM_CHANNELS && rng.below(10) > 0 {
            url.extend_from_slice(b"&channel_id=");
            // Java's Math.abs(Integer.reverse(c)), including abs(MIN_VALUE) = MIN_VALUE.
            let id = ((index as u32).reverse_bits() as i32).wrapping_abs();
            if id < 0 {
                url.push(b'-');
            }
            push_u64(&mut url, u64::from(id.unsigned_abs()));
        }
        ascii(url)
    }
}
