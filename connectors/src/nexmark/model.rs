//! The Nexmark records: [`Person`], [`Auction`], [`Bid`], and [`Event`], one of the three.
//!
//! The JSON form of an [`Event`] is one object tagged by its kind, with the fields in snake
//! case and times in epoch milliseconds:
//!
//! ```
//! use runnel_connectors::nexmark::{Bid, Event};
//!
//! let bid = Event::Bid(Bid {
//!     auction: 1000,
//!     bidder: 1001,
//!     price: 4231,
//!     channel: "Google".into(),
//!     url: "https://www.nexmark.com/ab/cd/ef/item.htm?query=1".into(),
//!     date_time: 1_436_918_400_000,
//!     extra: "xyz".into(),
//! });
//! assert_eq!(
//!     bid.to_json(),
//!     r#"{"bid":{"auction":1000,"bidder":1001,"price":4231,"channel":"Google","#.to_owned()
//!         + r#""url":"https://www.nexmark.com/ab/cd/ef/item.htm?query=1","#
//!         + r#""date_time":1436918400000,"extra":"xyz"}}"#
//! );
//! assert_eq!(serde_json::from_str::<Event>(&bid.to_json()).unwrap(), bid);
//! ```

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A string field: borrowed from tables the generator builds once (channels, urls, names,
/// item names and descriptions, padding), so generating a bid or an auction allocates
/// nothing, or owned (read from JSON). It serializes as a
/// plain JSON string; compare and print it like a `&str` (`.as_ref()`, `==`).
pub type Text = Cow<'static, str>;

/// A new person: someone who can sell and bid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Person {
    /// The person's id, from 1000 on, in the order people join.
    pub id: u64,
    /// A first and a last name, for example `"Kate Noris"`.
    pub name: Text,
    /// A made-up address, for example `"hxk@abcd.com"`.
    pub email_address: String,
    /// Four groups of four digits separated by spaces.
    pub credit_card: String,
    /// One of ten cities of the US north-west.
    pub city: Text,
    /// One of six US states (`AZ`, `CA`, `ID`, `OR`, `WA`, `WY`).
    pub state: Text,
    /// When the person joined, epoch milliseconds.
    pub date_time: i64,
    /// Padding (lowercase letters) that brings the record to its average size.
    pub extra: Text,
}

/// A new auction of one item.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Auction {
    /// The auction's id, from 1000 on, in the order auctions open.
    pub id: u64,
    /// The item's name (lowercase words).
    pub item_name: Text,
    /// The item's description (lowercase words).
    pub description: Text,
    /// The opening price, in cents.
    pub initial_bid: u64,
    /// The lowest price the seller accepts, in cents; at least `initial_bid`.
    pub reserve: u64,
    /// When the auction opened, epoch milliseconds.
    pub date_time: i64,
    /// When the auction closes, epoch milliseconds; after `date_time`.
    pub expires: i64,
    /// The person selling ([`Person::id`]).
    pub seller: u64,
    /// The item's category, `10..=14`.
    pub category: u64,
    /// Padding (lowercase letters) that brings the record to its average size.
    pub extra: Text,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bid {
    /// The auction bid on ([`Auction::id`]).
    pub auction: u64,
    /// The person bidding ([`Person::id`]).
    pub bidder: u64,
    /// The price offered, in cents.
    pub price: u64,
    /// Where the bid came from: `"Google"`, `"Facebook"`, `"Baidu"`, `"Apple"`, or
    /// `"channel-<n>"` with `n` in `0..10000`.
    pub channel: Text,
    /// The page the bid was made on (one per channel).
    pub url: Text,
    /// When the bid was made, epoch milliseconds.
    pub date_time: i64,
    /// Padding (lowercase letters) that brings the record to its average size.
    pub extra: Text,
}

/// One Nexmark event; in JSON `{"person": {...}}`, `{"auction": {...}}` or `{"bid": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A person joined (boxed, as is the auction: 4 events in 50 are not bids, and unboxed
    /// they would make every event, bids included, the size of a person).
    Person(Box<Person>),
    /// An auction opened.
    Auction(Box<Auction>),
    /// A bid was made.
    Bid(Bid),
}

impl Event {
    /// When the event happened, epoch milliseconds (its record's `date_time`).
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// The event as one line of JSON (without the newline), tagged by its kind.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of integers and strings cannot fail.
        serde_json::to_string(self).expect("a Nexmark event serializes to JSON")
    }
}

/// The fields one after the other with [`runnel_engine::wire`], for operators' incremental
/// checkpoints (smaller than bincode's; for its speed see the `changes` group of
/// `benches/benches/micro.rs`).
impl Bid {
    /// Writes the bid: auction, bidder and price as LEB128 varints (2-4 bytes each for
    /// Nexmark's, instead of 8), date_time as a zigzag varint (6 bytes for today's epoch
    /// milliseconds), then channel, url and extra.
    #[inline]
    pub fn put_wire(&self, out: &mut Vec<u8>) {
        use runnel_engine::wire::Put;
        out.reserve(55 + self.channel.len() + self.url.len() + self.extra.len());
        out.put_var_u64(self.auction);
        out.put_var_u64(self.bidder);
        out.put_var_u64(self.price);
        out.put_var_i64(self.date_time);
        out.put_str(&self.channel);
        out.put_str(&self.url);
        out.put_str(&self.extra);
    }

    /// Reads what [`Bid::put_wire`] wrote.
    pub fn get_wire(w: &mut runnel_engine::wire::Wire<'_>) -> runnel_engine::Result<Self> {
        Ok(Bid {
            auction: w.var_u64("a bid's auction")?,
            bidder: w.var_u64("a bid's bidder")?,
            price: w.var_u64("a bid's price")?,
            date_time: w.var_i64("a bid's date_time")?,
            channel: w.str("a bid's channel")?.to_string().into(),
            url: w.str("a bid's url")?.to_string().into(),
            extra: w.str("a bid's extra")?.to_string().into(),
        })
    }
}

/// As [`Bid`]'s.
impl Auction {
    /// Writes the auction: id, item_name, description, initial_bid, reserve, date_time,
    /// expires, seller, category, extra.
    #[inline]
    pub fn put_wire(&self, out: &mut Vec<u8>) {
        use runnel_engine::wire::Put;
        out.put_u64(self.id);
        out.put_str(&self.item_name);
        out.put_str(&self.description);
        out.put_u64(self.initial_bid);
        out.put_u64(self.reserve);
        out.put_i64(self.date_time);
        out.put_i64(self.expires);
        out.put_u64(self.seller);
        out.put_u64(self.category);
        out.put_str(&self.extra);
    }

    /// Reads what [`Auction::put_wire`] wrote.
    pub fn get_wire(w: &mut runnel_engine::wire::Wire<'_>) -> runnel_engine::Result<Self> {
        Ok(Auction {
            id: w.u64("an auction's id")?,
            item_name: w.str("an auction's item_name")?.to_string().into(),
            description: w.str("an auction's description")?.to_string().into(),
            initial_bid: w.u64("an auction's initial_bid")?,
            reserve: w.u64("an auction's reserve")?,
            date_time: w.i64("an auction's date_time")?,
            expires: w.i64("an auction's expires")?,
            seller: w.u64("an auction's seller")?,
            category: w.u64("an auction's category")?,
            extra: w.str("an auction's extra")?.to_string().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_engine::wire::Wire;

    /// Generated bids and auctions come back equal, and the bytes end where they should.
    #[test]
    fn wire_round_trip() {
        let mut out = Vec::new();
        let events: Vec<Event> = crate::nexmark::NexmarkConfig::new(500).iter().collect();
        for e in &events {
            match e {
                Event::Bid(b) => b.put_wire(&mut out),
                Event::Auction(a) => a.put_wire(&mut out),
                Event::Person(_) => {}
            }
        }
        let mut w = Wire::new("test bids and auctions", &out);
        for e in &events {
            match e {
                Event::Bid(b) => assert_eq!(&Bid::get_wire(&mut w).unwrap(), b),
                Event::Auction(a) => assert_eq!(&Auction::get_wire(&mut w).unwrap(), &**a),
                Event::Person(_) => {}
            }
        }
        w.end().unwrap();
    }
}
