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

/// SplitMix64 (Steele, Lea and Flood, 2014), started from the seed and a hash of `n` so that
/// each event has its own stream and nearby events' streams do not overlap.
struct Rng(u64);

impl Rng {
    #[inline(always)]
    fn new(seed: u64, n: u64) -> Rng {
        Rng(seed ^ mix(n.wrapping_add(0x9e37_79b9_7f4a_7c15)))
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

    /// One of `items`, uniformly.
    #[inline(always)]
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// Two draws for small ranges from one: the halves of the next number.
    #[inline(always)]
    fn halves(&mut self) -> (u32, u32) {
        let x = self.next();
        (x as u32, (x >> 32) as u32)
    }
}

/// Uniform in `0..n` from 32 random bits, by multiply-shift (bias below `n / 2^32`: at most
/// 0.002% for the ranges it is used for, the largest being the 65,536 padding positions).
#[inline(always)]
fn below32(bits: u32, n: u64) -> u64 {
    (u64::from(bits) * n) >> 32
}

/// The bits of `u` (of 53) that index [`powers`].
const PRICE_TABLE_BITS: u32 = 10;

/// `100 * 10^(6i / 1024)` at `i`, for `i` in `0..1024`: the price at the start of each of
/// 1024 equal steps of `u`.
fn powers() -> &'static [f64; 1 << PRICE_TABLE_BITS] {
    static POWERS: OnceLock<[f64; 1 << PRICE_TABLE_BITS]> = OnceLock::new();
    POWERS.get_or_init(|| {
        let steps = f64::from(1u32 << PRICE_TABLE_BITS);
        std::array::from_fn(|i| 100.0 * (i as f64 * 6.0 * std::f64::consts::LN_10 / steps).exp())
    })
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

/// The size of the pools of start positions in [`Generator::letters`] and [`Generator::words`].
const LETTER_POOL: usize = 1 << 16;

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

/// The longest item description, before trimming (`nextString(100)`).
const MAX_DESCRIPTION: u64 = 100;

/// Random text that item names and descriptions are slices of: 64 KiB (plus the longest
/// description) of lowercase letters and, one character in 13, spaces, the characters of the
/// reference's `nextString(maxLength, ' ')`; generated once from a fixed seed.
fn words() -> &'static str {
    static WORDS: OnceLock<String> = OnceLock::new();
    WORDS.get_or_init(|| {
        let mut rng = Rng::new(0x776f_7264_7300, 0); // "words"
        let mut s = Vec::with_capacity(LETTER_POOL + MAX_DESCRIPTION as usize);
        push_chars(
            &mut rng,
            &mut s,
            LETTER_POOL + MAX_DESCRIPTION as usize,
            b' ',
        );
        ascii(s)
    })
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

/// A bid's channel and url, by channel index: `channel-<c>` and its url at `c`, hot channel
/// `i` and its url at `NUM_CHANNELS + i`.
type Channels = &'static [(&'static str, &'static str)];

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
/// [`NUM_ACTIVE_PEOPLE`], or up to [`PERSON_ID_LEAD`] ids ahead of the last; drawn from 32
/// random bits.
#[inline]
fn random_base0_person(bits: u32, n: u64) -> u64 {
    let people = last_base0_person(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + below32(bits, active + PERSON_ID_LEAD)
}

/// A random open auction (base 0), the reference's `nextBase0AuctionId`: one of the last
/// [`NUM_IN_FLIGHT_AUCTIONS`] + 1, or up to [`AUCTION_ID_LEAD`] ids ahead of the last; drawn
/// from 32 random bits.
#[inline]
fn random_base0_auction(bits: u32, n: u64) -> u64 {
    let max = last_base0_auction(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + below32(bits, max - min + 1 + AUCTION_ID_LEAD)
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

/// The url of channel `index` of `seed` (`channel-<index>` below [`NUM_CHANNELS`], else hot
/// channel `index - NUM_CHANNELS`): a base url (the reference's `getBaseUrl`) and, for 9
/// numbered channels in 10, `&channel_id=<|bit-reversed index|>` (the reference's
/// `getNextChannelAndurl`).
fn url(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ URL_STREAM, index);
    let mut url = Vec::with_capacity(80);
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
    url
}

/// Every bid channel and url of `seed`, built once per seed and process (10,004 of each,
/// about 1 MB) and kept for the life of the process, so bids borrow them. One table of both,
/// so that a bid reads one cache line of it (a table each, of `String`s, missed the cache
/// twice).
fn channels(seed: u64) -> Channels {
    thread_local! {
        /// The last seed's channels on this thread (most threads only ever see one seed).
        static LAST: std::cell::Cell<Option<(u64, Channels)>> = const { std::cell::Cell::new(None) };
    }
    if let Some((s, channels)) = LAST.with(|l| l.get()) {
        if s == seed {
            return channels;
        }
    }
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..NUM_CHANNELS)
            .map(|c| &*format!("channel-{c}").leak())
            .chain(HOT_CHANNELS)
            .collect()
    });
    static ALL: Mutex<Option<HashMap<u64, Channels>>> = Mutex::new(None);
    let mut all = ALL.lock().unwrap_or_else(|p| p.into_inner());
    let channels = *all
        .get_or_insert_with(HashMap::new)
        .entry(seed)
        .or_insert_with(|| {
            let urls: Vec<Vec<u8>> = (0..names.len() as u64).map(|c| url(seed, c)).collect();
            let text: &'static str = ascii(urls.concat()).leak();
            let mut at = 0;
            let table: Vec<(&'static str, &'static str)> = names
                .iter()
                .zip(&urls)
                .map(|(name, url)| {
                    at += url.len();
                    (*name, &text[at - url.len()..at])
                })
                .collect();
            table.leak()
        });
    LAST.with(|l| l.set(Some((seed, channels))));
    channels
}

/// A [`NexmarkConfig`] with the tables its events borrow from, looked up once: what a source
/// partition generates with.
#[derive(Clone, Copy)]
pub(crate) struct Generator {
    config: NexmarkConfig,
    channels: Channels,
    letters: &'static str,
    words: &'static str,
    powers: &'static [f64; 1 << PRICE_TABLE_BITS],
}

impl Generator {
    /// `config`'s generator (building the tables on first use).
    pub(crate) fn new(config: NexmarkConfig) -> Generator {
        Generator {
            config,
            channels: channels(config.seed_value()),
            letters: letters(),
            words: words(),
            powers: powers(),
        }
    }

    /// Event number `n`, whose time is `ts` ([`NexmarkConfig::timestamp`]`(n)`).
    #[inline]
    pub(crate) fn event(&self, n: u64, ts: i64) -> Event {
        let mut rng = Rng::new(self.config.seed_value(), n);
        let offset = n % TOTAL_PROPORTION;
        if offset < PERSON_PROPORTION {
            Event::Person(Box::new(self.person(&mut rng, n, ts)))
        } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
            Event::Auction(Box::new(self.auction(&mut rng, n, ts)))
        } else {
            Event::Bid(self.bid(&mut rng, n, ts))
        }
    }

    /// The reference's `PriceGenerator.nextPrice`: `round(10^(6u) * 100)` cents for `u`
    /// uniform in `[0, 1)`, so log-uniform from $1 to $1,000,000.
    ///
    /// `u`'s top 10 bits pick `100 * 10^(6i/1024)` from a table, and the rest, `r` below
    /// `1/1024`, multiply it by `10^(6r) = e^a` with `a = 6 r ln 10 < 0.0135`, from its Taylor
    /// series to `a^4 / 24` (relative error below `a^5 / 120 < 4e-12`, a thousandth of a cent
    /// at $1,000,000): several times faster than calling `exp` and `round`.
    #[inline]
    fn price(&self, rng: &mut Rng) -> u64 {
        self.price_of(rng.next() >> 11)
    }

    /// The price for `u = bits / 2^53` (`bits` below `2^53`).
    #[inline(always)]
    fn price_of(&self, bits: u64) -> u64 {
        let i = (bits >> (53 - PRICE_TABLE_BITS)) as usize;
        let rest = bits & ((1 << (53 - PRICE_TABLE_BITS)) - 1);
        let a = rest as f64 * (6.0 * std::f64::consts::LN_10 / (1u64 << 53) as f64);
        let e = 1.0 + a * (1.0 + a * (0.5 + a * (1.0 / 6.0 + a * (1.0 / 24.0))));
        // Rounds half up (prices are positive); `as` truncates.
        (self.powers[i] * e + 0.5) as u64
    }

    /// The reference's `StringsGenerator.nextString(max_len, ' ')`: `3..max_len` characters,
    /// each a space with probability 1/13, else a lowercase letter, trimmed of spaces at both
    /// ends. A slice of [`words`] at a random position, so it costs no allocation.
    #[inline]
    fn words(&self, rng: &mut Rng, max_len: u64) -> Text {
        let (len, at) = rng.halves();
        let len = (MIN_STRING_LENGTH + below32(len, max_len - MIN_STRING_LENGTH)) as usize;
        let at = below32(at, LETTER_POOL as u64) as usize;
        Cow::Borrowed(self.words[at..at + len].trim_matches(' '))
    }

    /// The reference's `StringsGenerator.nextExtra`: padding such that `current + len` is on
    /// average `average`, its length uniform within 20% of `average - current`. The letters
    /// are a slice of a pool of random letters at a random position (the reference draws each
    /// letter; padding is only there to give records their size), so padding costs no
    /// allocation.
    #[inline]
    fn extra(&self, rng: &mut Rng, current: usize, average: usize) -> Text {
        if current > average {
            return Cow::Borrowed("");
        }
        let wanted = average - current;
        // Java's Math.round(wanted * 0.2): wanted / 5 never ends in .5, so this is exact.
        let delta = (2 * wanted + 5) / 10;
        let (len, at) = rng.halves();
        let len = wanted - delta + below32(len, 2 * delta as u64) as usize;
        let at = below32(at, LETTER_POOL as u64) as usize;
        Cow::Borrowed(&self.letters[at..at + len])
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
            extra: self.extra(rng, size, AVG_PERSON_BYTE_SIZE),
        }
    }

    /// The reference's `AuctionGenerator.nextAuction` (without its `extendedBidMode`).
    fn auction(&self, rng: &mut Rng, n: u64, ts: i64) -> Auction {
        let id = last_base0_auction(n) + FIRST_AUCTION_ID;
        let (hot, person) = rng.halves();
        let seller = if below32(hot, HOT_SELLERS_RATIO) > 0 {
            last_base0_person(n) / HOT_SELLER_GROUP * HOT_SELLER_GROUP
        } else {
            random_base0_person(person, n)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let initial_bid = self.price(rng);
        let expires = ts.saturating_add(self.auction_length_ms(rng, n, ts));
        let item_name = self.words(rng, 20);
        let description = self.words(rng, MAX_DESCRIPTION);
        let reserve = initial_bid + self.price(rng);
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
            extra: self.extra(rng, size, AVG_AUCTION_BYTE_SIZE),
        }
    }

    /// The reference's `nextAuctionLengthMs`: uniform in `1..=2h`, where `h` is the event time
    /// until [`NUM_IN_FLIGHT_AUCTIONS`] more auctions have opened, so that about that many are
    /// open at any time.
    fn auction_length_ms(&self, rng: &mut Rng, n: u64, ts: i64) -> i64 {
        let events_ahead = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = self.config.timestamp(n.saturating_add(events_ahead)) - ts;
        let span = u64::try_from(horizon.saturating_mul(2)).unwrap_or(0).max(1);
        1 + i64::try_from(rng.below(span)).unwrap_or(i64::MAX - 1)
    }

    /// The reference's `BidGenerator.nextBid` (without its `extendedBidMode`). Its random
    /// choices take 32 bits each, two from each draw.
    #[inline]
    fn bid(&self, rng: &mut Rng, n: u64, ts: i64) -> Bid {
        let (hot_auction, auction) = rng.halves();
        let auction = if below32(hot_auction, HOT_AUCTION_RATIO) > 0 {
            last_base0_auction(n) / HOT_AUCTION_GROUP * HOT_AUCTION_GROUP
        } else {
            random_base0_auction(auction, n)
        } + FIRST_AUCTION_ID;
        let (hot_bidder, bidder) = rng.halves();
        let bidder = if below32(hot_bidder, HOT_BIDDERS_RATIO) > 0 {
            // The second person of the group, so hot bidders are not hot sellers.
            last_base0_person(n) / HOT_BIDDER_GROUP * HOT_BIDDER_GROUP + 1
        } else {
            random_base0_person(bidder, n)
        } + FIRST_PERSON_ID;
        let price = self.price(rng);
        let (hot_channel, channel) = rng.halves();
        let channel = if below32(hot_channel, HOT_CHANNELS_RATIO) > 0 {
            NUM_CHANNELS + below32(channel, HOT_CHANNELS.len() as u64)
        } else {
            below32(channel, NUM_CHANNELS)
        } as usize;
        let (channel, url) = self.channels[channel];
        Bid {
            auction,
            bidder,
            price,
            channel: Cow::Borrowed(channel),
            url: Cow::Borrowed(url),
            date_time: ts,
            extra: self.extra(rng, 8 * 4, AVG_BID_BYTE_SIZE),
        }
    }
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
        Generator::new(*self).event(n, self.timestamp(n))
    }

    /// Events `0..events` in order.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        let generator = Generator::new(*self);
        (0..self.events()).map(move |n| generator.event(n, self.timestamp(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table-and-series price against the formula computed with `powf`, for `u` at each
    /// table step, half way, just below the next, and at random within each step.
    #[test]
    fn prices_follow_the_formula() {
        let generator = Generator::new(NexmarkConfig::new(1));
        let mut draws = Rng::new(7, 7);
        let mut exact = 0;
        for i in 0..(1u64 << PRICE_TABLE_BITS) {
            let step = i << (53 - PRICE_TABLE_BITS);
            let width = 1u64 << (53 - PRICE_TABLE_BITS);
            let mut us = vec![step, step + width / 2, step + width - 1];
            us.extend((0..4).map(|_| step + draws.below(width)));
            for bits in us {
                let got = generator.price_of(bits);
                let want = 10f64.powf(6.0 * bits as f64 / (1u64 << 53) as f64) * 100.0;
                assert!((100..=100_000_000).contains(&got), "bits {bits}: {got}");
                if (want.fract() - 0.5).abs() > 1e-3 {
                    assert_eq!(got, want.round() as u64, "bits {bits}: {want}");
                    exact += 1;
                } else {
                    assert!(
                        (got as f64 - want).abs() <= 0.501,
                        "bits {bits}: {got} vs {want}"
                    );
                }
            }
        }
        assert!(exact > 7000, "{exact}");
    }
}
