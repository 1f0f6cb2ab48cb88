//! The Nexmark generator against facts from the reference generator's definition, computed here
//! independently of the code under test: the event kind of each event number, ids, references
//! between records, timestamps, price and auction-length distributions, record sizes, hot keys,
//! the JSON form; and the source's splitting, seeking and pacing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use runnel_connectors::nexmark::{
    write_json_lines, Auction, Bid, Event, NexmarkConfig, NexmarkGenerator, Person,
};
use runnel_connectors::BlackholeSink;
use runnel_engine::testing::Collector;
use runnel_engine::{
    run, Event as Record, Job, Metrics, PartitionId, PartitionReader, ReadStatus, Reader,
    RunOptions, Source, SourceContext, SourceOptions,
};
use serde_json::Value;

const BASE_2015_07_15: i64 = 1_436_918_400_000;

fn ctx(workers: usize) -> SourceContext {
    SourceContext {
        name: "nexmark".into(),
        worker: 0,
        workers,
        metrics: Arc::new(Metrics::default()),
    }
}

/// Reads `reader` to its end (sleeping while it is pending).
fn drain(mut reader: Box<dyn PartitionReader<Event>>) -> Vec<(u64, Record<Event>)> {
    let mut out = Reader::for_test(1000);
    let mut records = Vec::new();
    loop {
        let status = reader.read(&mut out).unwrap();
        records.extend(out.take_with_offsets());
        match status {
            ReadStatus::Finished => return records,
            ReadStatus::Pending => std::thread::sleep(Duration::from_micros(200)),
            ReadStatus::More | ReadStatus::CutEpoch => {}
        }
    }
}

/// Every partition of `config` read to its end, as `(partition, [(offset, record)])`.
fn read_all(config: NexmarkConfig, workers: usize) -> Vec<(u32, Vec<(u64, Record<Event>)>)> {
    let mut source = NexmarkGenerator::new(config);
    let ctx = ctx(workers);
    let names = source.partitions(&ctx).unwrap();
    (0..names.len() as u32)
        .map(|p| (p, drain(source.open(PartitionId(p), &ctx).unwrap())))
        .collect()
}

/// The kind the reference assigns to event number `n`: 1 person, 3 auctions, 46 bids per 50.
fn kind_of(n: u64) -> &'static str {
    match n % 50 {
        0 => "person",
        1..=3 => "auction",
        _ => "bid",
    }
}

fn kind(e: &Event) -> &'static str {
    match e {
        Event::Person(_) => "person",
        Event::Auction(_) => "auction",
        Event::Bid(_) => "bid",
    }
}

/// How many events of `0..=n` are persons and auctions, counted from the proportions.
fn created_by(n: u64) -> (u64, u64) {
    let (cycles, rest) = ((n + 1) / 50, (n + 1) % 50);
    (
        cycles + rest.min(1),
        cycles * 3 + rest.saturating_sub(1).min(3),
    )
}

#[test]
fn the_kind_of_every_event_follows_n_mod_50() {
    let config = NexmarkConfig::new(50_000);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (n, e) in config.iter().enumerate() {
        assert_eq!(kind(&e), kind_of(n as u64), "event {n}");
        *counts.entry(kind(&e)).or_default() += 1;
    }
    assert_eq!(counts["person"], 1_000);
    assert_eq!(counts["auction"], 3_000);
    assert_eq!(counts["bid"], 46_000);
    for n in [1u64 << 32, (1 << 40) + 3, u64::MAX / 3] {
        assert_eq!(kind(&config.event(n)), kind_of(n), "event {n}");
    }
}

#[test]
fn the_same_config_gives_the_same_events_and_another_seed_others() {
    let a = NexmarkConfig::new(20_000).seed(1);
    let events: Vec<Event> = a.iter().collect();
    assert_eq!(events, a.iter().collect::<Vec<_>>());
    for (n, e) in events.iter().enumerate() {
        assert_eq!(e, &a.event(n as u64), "iter() and event(n) agree");
    }
    let from_source: Vec<Event> = read_all(a, 1)
        .into_iter()
        .flat_map(|(_, r)| r)
        .map(|(_, r)| r.data)
        .collect();
    assert_eq!(from_source, events, "the source produces config.event(n)");
    assert_eq!(
        NexmarkConfig::new(20_000)
            .seed(1)
            .iter()
            .collect::<Vec<_>>(),
        events
    );

    let other: Vec<Event> = NexmarkConfig::new(20_000).seed(2).iter().collect();
    let differ = events.iter().zip(&other).filter(|(x, y)| x != y).count();
    assert!(differ > 19_900, "only {differ} of 20000 events differ");
    for (n, (x, y)) in events.iter().zip(&other).enumerate() {
        assert_eq!(kind(x), kind(y), "event {n}");
        assert_eq!(x.date_time(), y.date_time(), "event {n}");
    }
}

#[test]
fn any_number_of_partitions_splits_the_same_events() {
    const N: u64 = 5_003;
    let config = NexmarkConfig::new(N).seed(9);
    let mut reference: Option<Vec<Event>> = None;
    for k in [1u32, 2, 3, 7] {
        let parts = read_all(config.partitions(k), 2);
        assert_eq!(parts.len(), k as usize);
        let mut all = Vec::new();
        for (p, records) in parts {
            let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
            let expected: Vec<u64> = (u64::from(p)..N).step_by(k as usize).collect();
            assert_eq!(offsets, expected, "partition {p} of {k}");
            for (_, r) in &records {
                assert_eq!(r.ts, r.data.date_time(), "event time is the event's own");
            }
            all.extend(records.into_iter().map(|(_, r)| r.data));
        }
        all.sort();
        match &reference {
            None => reference = Some(all),
            Some(events) => assert_eq!(&all, events, "{k} partitions"),
        }
    }
    // One partition per worker by default.
    assert_eq!(read_all(config, 3).len(), 3);
}

#[test]
fn a_job_sees_every_event_once_on_any_number_of_workers() {
    let config = NexmarkConfig::new(3_001).seed(5);
    let mut expected: Vec<Event> = config.iter().collect();
    expected.sort();
    for workers in [1, 2] {
        let out = Collector::new();
        let sink = out.clone();
        let job = Job::new("nexmark", "collects nexmark events", move |flow| {
            flow.source(
                "events",
                NexmarkGenerator::new(config),
                SourceOptions::new(),
            )?
            .sink("out", sink.sink())
        });
        let options = RunOptions {
            workers,
            epoch_interval: Duration::from_millis(5),
            ..Default::default()
        };
        run(&job, options).unwrap();
        assert_eq!(out.sorted_data(), expected, "{workers} workers");
    }
}

#[test]
fn resume_starts_at_the_first_event_at_or_after_the_offset() {
    let config = NexmarkConfig::new(1_000).partitions(3);
    let mut source = NexmarkGenerator::new(config);
    let ctx = ctx(2);
    for p in 0..3u32 {
        for next in [0u64, 1, 2, 3, 500, 998, 999, 1_000, 5_000] {
            let records = drain(source.resume(PartitionId(p), &ctx, next).unwrap());
            let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
            let expected: Vec<u64> = (0..1_000)
                .filter(|n| n % 3 == u64::from(p) && *n >= next)
                .collect();
            assert_eq!(offsets, expected, "partition {p}, next {next}");
            for (offset, r) in &records {
                assert_eq!(r.data, config.event(*offset));
            }
        }
    }
    assert!(source.open(PartitionId(3), &ctx).is_err());
}

#[test]
fn timestamps_are_base_plus_n_times_the_inter_event_delay() {
    // Default: 10,000 events per second from 2015-07-15, so 0.1 ms apart.
    let config = NexmarkConfig::new(2_000);
    for (n, e) in config.iter().enumerate() {
        assert_eq!(e.date_time(), BASE_2015_07_15 + n as i64 / 10, "event {n}");
    }
    // An event-time rate of 3 per second, from another base: 333.3 ms apart.
    let config = NexmarkConfig::new(200).event_rate(3).base_time_ms(1_000);
    let mut last = i64::MIN;
    for (n, e) in config.iter().enumerate() {
        assert_eq!(e.date_time(), 1_000 + n as i64 * 1000 / 3, "event {n}");
        assert!(e.date_time() >= last);
        last = e.date_time();
    }
    // A wall-clock rate also sets event time, unless an event-time rate is given.
    let paced = NexmarkConfig::new(10).rate(250);
    assert_eq!(paced.event(9).date_time(), BASE_2015_07_15 + 36);
    assert_eq!(
        paced.event_rate(1000).event(9).date_time(),
        BASE_2015_07_15 + 9
    );
}

/// Checks a run of consecutive events from 0 against the reference's id rules, returning the
/// shares of bids whose auction, and bidder, is past the last one created.
fn check_ids_and_references(events: &[Event]) -> (f64, f64) {
    let (mut persons, mut auctions) = (0u64, 0u64);
    let (mut bids, mut auction_ahead, mut bidder_ahead) = (0u64, 0u64, 0u64);
    for (n, e) in events.iter().enumerate() {
        match e {
            Event::Person(p) => {
                assert_eq!(p.id, 1000 + persons, "persons are numbered from 1000");
                persons += 1;
            }
            Event::Auction(a) => {
                assert_eq!(a.id, 1000 + auctions, "auctions are numbered from 1000");
                auctions += 1;
                assert!((10..=14).contains(&a.category), "category {}", a.category);
                let last_person = 999 + persons;
                assert!(a.seller >= 1000, "event {n}");
                assert!(
                    a.seller <= last_person + 10,
                    "seller past the lead, event {n}"
                );
                assert!(
                    a.seller + 999 >= last_person,
                    "seller not active, event {n}"
                );
            }
            Event::Bid(b) => {
                bids += 1;
                let (last_person, last_auction) = (999 + persons, 999 + auctions);
                assert!(b.auction >= 1000 && b.bidder >= 1000, "event {n}");
                assert!(
                    b.auction <= last_auction + 10,
                    "auction past the lead, event {n}"
                );
                assert!(
                    b.auction + 100 >= last_auction,
                    "auction not in flight, event {n}"
                );
                assert!(
                    b.bidder <= last_person + 10,
                    "bidder past the lead, event {n}"
                );
                assert!(
                    b.bidder + 999 >= last_person,
                    "bidder not active, event {n}"
                );
                auction_ahead += u64::from(b.auction > last_auction);
                bidder_ahead += u64::from(b.bidder > last_person);
            }
        }
    }
    (
        auction_ahead as f64 / bids as f64,
        bidder_ahead as f64 / bids as f64,
    )
}

#[test]
fn ids_count_from_1000_and_references_stay_near_existing_records() {
    let events: Vec<Event> = NexmarkConfig::new(200_000).seed(3).iter().collect();
    let (auction_ahead, bidder_ahead) = check_ids_and_references(&events);
    // Non-hot bids (1/2) pick one of 111 auctions, 10 of them not yet created: about 4.5%.
    assert!(
        (0.03..0.06).contains(&auction_ahead),
        "{auction_ahead} of bids are for auctions yet to open"
    );
    // Non-hot bidders (1/4) are one of 1010 people, 10 not yet created; and the hot bidder
    // (3/4), the group's second person, is yet to join in the 50 events after the group's
    // first: about 0.25% + 0.75% * 1%.
    assert!(
        bidder_ahead < 0.02,
        "{bidder_ahead} of bids are by people yet to join"
    );
}

#[test]
fn auctions_expire_after_they_open_and_reserve_at_least_the_initial_bid() {
    let config = NexmarkConfig::new(300_000).seed(4);
    // 100 auctions in flight: 100 more open in 100 * 50 / 3 = 1666 events, 166 ms at 10,000/s;
    // lengths are uniform in 1..=2h, h = 166 or 167 ms.
    let (mut lengths, mut count) = (0i64, 0i64);
    let mut prices = Vec::new();
    for e in config.iter() {
        match e {
            Event::Auction(a) => {
                let length = a.expires - a.date_time;
                assert!((1..=334).contains(&length), "auction length {length}");
                assert!(a.reserve >= a.initial_bid);
                lengths += length;
                count += 1;
                prices.push(a.initial_bid);
                prices.push(a.reserve - a.initial_bid);
            }
            Event::Bid(b) => prices.push(b.price),
            Event::Person(_) => {}
        }
    }
    let mean = lengths as f64 / count as f64;
    assert!(
        (150.0..183.0).contains(&mean),
        "mean auction length {mean} ms"
    );
    // round(10^(6u) * 100) for u uniform: 100..=10^8 cents, each decade equally likely.
    assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
    let mut decades = [0u64; 7];
    for p in &prices {
        decades[((*p as f64).log10().floor() as usize - 2).min(6)] += 1;
    }
    let per_decade = prices.len() as f64 / 6.0;
    for (d, &c) in decades[..6].iter().enumerate() {
        let share = c as f64 / per_decade;
        assert!(
            (0.95..1.05).contains(&share),
            "decade 10^{} has {share}",
            d + 2
        );
    }
}

#[test]
fn records_use_the_reference_lists_and_formats() {
    let cities = [
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
    let states = ["AZ", "CA", "ID", "OR", "WA", "WY"];
    let first = [
        "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter",
        "Walter",
    ];
    let last = [
        "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
    ];
    let lowercase = |s: &str| s.bytes().all(|c| c.is_ascii_lowercase());
    let words = |s: &str, max: usize| {
        s.len() < max && s == s.trim() && s.bytes().all(|c| c == b' ' || c.is_ascii_lowercase())
    };
    let mut urls: HashMap<String, String> = HashMap::new();
    let mut channels = BTreeSet::new();
    let mut seen_cities = BTreeSet::new();
    for e in NexmarkConfig::new(100_000).iter() {
        match e {
            Event::Person(p) => {
                let (f, l) = p.name.split_once(' ').unwrap();
                assert!(first.contains(&f) && last.contains(&l), "{}", p.name);
                assert!(cities.contains(&p.city.as_ref()) && states.contains(&p.state.as_ref()));
                seen_cities.insert(p.city.clone());
                let (user, host) = p.email_address.split_once('@').unwrap();
                let host = host.strip_suffix(".com").unwrap();
                assert!(words(user, 7) && words(host, 5), "{}", p.email_address);
                let groups: Vec<&str> = p.credit_card.split(' ').collect();
                assert_eq!(groups.len(), 4, "{}", p.credit_card);
                assert!(groups
                    .iter()
                    .all(|g| g.len() == 4 && g.bytes().all(|c| c.is_ascii_digit())));
                assert!(lowercase(&p.extra));
            }
            Event::Auction(a) => {
                assert!(words(&a.item_name, 20), "{:?}", a.item_name);
                assert!(words(&a.description, 100), "{:?}", a.description);
                assert!(lowercase(&a.extra));
            }
            Event::Bid(b) => {
                let hot = ["Google", "Facebook", "Baidu", "Apple"].contains(&b.channel.as_ref());
                if !hot {
                    let c: u64 = b.channel.strip_prefix("channel-").unwrap().parse().unwrap();
                    assert!(c < 10_000);
                }
                channels.insert(b.channel.clone());
                assert!(b.url.starts_with("https://www.nexmark.com/"), "{}", b.url);
                assert!(b.url.contains("/item.htm?query=1"), "{}", b.url);
                let previous = urls.insert(b.channel.to_string(), b.url.to_string());
                assert!(previous.is_none_or(|u| u == b.url), "one url per channel");
                assert!(lowercase(&b.extra));
            }
        }
    }
    assert_eq!(seen_cities.len(), 10);
    assert!(channels.len() > 5_000, "{} channels", channels.len());
}

/// The size of a record as the reference counts it: 8 bytes per number (not the times of a
/// person and a bid) plus the lengths of the strings, without a bid's channel and url.
fn reference_size(e: &Event) -> usize {
    match e {
        Event::Person(p) => {
            let Person {
                name,
                email_address,
                credit_card,
                city,
                state,
                extra,
                ..
            } = &**p;
            8 + name.len()
                + email_address.len()
                + credit_card.len()
                + city.len()
                + state.len()
                + extra.len()
        }
        Event::Auction(a) => {
            let Auction {
                item_name,
                description,
                extra,
                ..
            } = &**a;
            8 * 6 + item_name.len() + description.len() + extra.len()
        }
        Event::Bid(Bid { extra, .. }) => 8 * 4 + extra.len(),
    }
}

#[test]
fn records_average_the_reference_sizes() {
    let mut sums: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in NexmarkConfig::new(100_000).seed(11).iter() {
        let s = sums.entry(kind(&e)).or_default();
        s.0 += reference_size(&e);
        s.1 += 1;
    }
    for (k, target) in [("person", 200.0), ("auction", 500.0), ("bid", 100.0)] {
        let (total, n) = sums[k];
        let mean = total as f64 / n as f64;
        assert!(
            (mean / target - 1.0).abs() < 0.05,
            "{k}s average {mean} bytes, the reference {target}"
        );
    }
}

/// The share of all counted items held by the `top` keys with the most.
fn top_share(counts: &HashMap<u64, u64>, top: usize) -> f64 {
    let mut c: Vec<u64> = counts.values().copied().collect();
    c.sort_unstable_by(|a, b| b.cmp(a));
    c[..top.min(c.len())].iter().sum::<u64>() as f64 / c.iter().sum::<u64>() as f64
}

#[test]
fn a_few_hot_auctions_bidders_and_sellers_take_most_of_the_traffic() {
    let (mut by_auction, mut by_bidder, mut by_seller) =
        (HashMap::new(), HashMap::new(), HashMap::new());
    let (mut persons, mut auctions) = (0, 0);
    for e in NexmarkConfig::new(500_000).seed(8).iter() {
        match e {
            Event::Bid(b) => {
                *by_auction.entry(b.auction).or_insert(0) += 1;
                *by_bidder.entry(b.bidder).or_insert(0) += 1;
            }
            Event::Auction(a) => {
                auctions += 1;
                *by_seller.entry(a.seller).or_insert(0) += 1;
            }
            Event::Person(_) => persons += 1,
        }
    }
    // Uniform choices would give 1% of the auctions (people) about 1% of the traffic; the
    // reference's hot keys (1 in 100) take 1/2 of the bids, 3/4 of the bids and 3/4 of the
    // auctions.
    let auctions = top_share(&by_auction, auctions / 100);
    let bidders = top_share(&by_bidder, persons / 100);
    let sellers = top_share(&by_seller, persons / 100);
    assert!((0.45..0.6).contains(&auctions), "hot auctions: {auctions}");
    assert!((0.7..0.85).contains(&bidders), "hot bidders: {bidders}");
    assert!((0.7..0.85).contains(&sellers), "hot sellers: {sellers}");
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn json_is_one_object_per_event_tagged_by_kind_with_the_reference_fields() {
    let person = [
        "id",
        "name",
        "email_address",
        "credit_card",
        "city",
        "state",
        "date_time",
        "extra",
    ];
    let auction = [
        "id",
        "item_name",
        "description",
        "initial_bid",
        "reserve",
        "date_time",
        "expires",
        "seller",
        "category",
        "extra",
    ];
    let bid = [
        "auction",
        "bidder",
        "price",
        "channel",
        "url",
        "date_time",
        "extra",
    ];
    let strings = [
        "name",
        "email_address",
        "credit_card",
        "city",
        "state",
        "extra",
        "item_name",
        "description",
        "channel",
        "url",
    ];
    let config = NexmarkConfig::new(500).seed(2);
    let mut file = Vec::new();
    assert_eq!(write_json_lines(&config, &mut file).unwrap(), 500);
    let text = String::from_utf8(file).unwrap();
    assert_eq!(text.lines().count(), 500);
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(keys(&v), BTreeSet::from([kind_of(n as u64)]), "{line}");
        let inner = &v[kind_of(n as u64)];
        let fields: &[&str] = match kind_of(n as u64) {
            "person" => &person,
            "auction" => &auction,
            _ => &bid,
        };
        assert_eq!(keys(inner), fields.iter().copied().collect(), "{line}");
        for (name, value) in inner.as_object().unwrap() {
            if strings.contains(&name.as_str()) {
                assert!(value.is_string(), "{name} in {line}");
            } else {
                assert!(value.is_u64(), "{name} in {line}");
            }
        }
        assert_eq!(inner["date_time"], BASE_2015_07_15 + n as i64 / 10);
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!(event, config.event(n as u64), "round trip");
        assert_eq!(event.to_json(), line);
    }
}

#[test]
fn a_rate_limits_the_whole_stream() {
    // 300 events at 3000/s take at least 0.1 s however many partitions share them.
    let config = NexmarkConfig::new(300).rate(3_000).partitions(3);
    let mut source = NexmarkGenerator::new(config);
    let ctx = ctx(1);
    let mut readers: Vec<_> = (0..3)
        .map(|p| source.open(PartitionId(p), &ctx).unwrap())
        .collect();
    let started = Instant::now();
    let mut out = Reader::for_test(1000);
    let (mut got, mut finished) = (0, [false; 3]);
    while finished.iter().any(|f| !f) {
        for (p, reader) in readers.iter_mut().enumerate() {
            if !finished[p] {
                finished[p] = reader.read(&mut out).unwrap() == ReadStatus::Finished;
                got += out.take().0.len();
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = started.elapsed();
    assert_eq!(got, 300);
    assert!(
        took >= Duration::from_millis(90),
        "300 events at 3000/s took only {took:?}"
    );
}

#[test]
fn with_a_wall_clock_base_events_leave_once_the_clock_reaches_their_time() {
    let config = NexmarkConfig::new(400).rate(2_000).base_time_now();
    let mut source = NexmarkGenerator::new(config);
    let mut reader = source.open(PartitionId(0), &ctx(1)).unwrap();
    let mut out = Reader::for_test(1000);
    let mut got = 0;
    loop {
        let status = reader.read(&mut out).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for (offset, r) in out.take_with_offsets() {
            assert!(r.ts <= now, "event {offset} at {} left at {now}", r.ts);
            got += 1;
        }
        if status == ReadStatus::Finished {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(got, 400);
    let last = config.event(399).date_time();
    assert_eq!(
        last,
        config.base_time() + 199,
        "2000 events per second of event time"
    );

    // A base 150 ms in the past: the first 300 events are due at once, the rest on the clock.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let config = NexmarkConfig::new(400)
        .rate(2_000)
        .wall_clock_base_ms(now - 150);
    let mut reader = NexmarkGenerator::new(config)
        .open(PartitionId(0), &ctx(1))
        .unwrap();
    // Everything due fits the budget: the partition has caught up and says it is pending
    // (asked again at once, it would find only what fell due in between).
    assert_eq!(reader.read(&mut out).unwrap(), ReadStatus::Pending);
    let first = out.take().0.len();
    assert!((300..340).contains(&first), "{first} events due at once");
    let started = Instant::now();
    drain(reader);
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "the rest on the clock"
    );

    // A budget smaller than what is due: the partition is behind, and says there is more
    // after each full read, until what is left of the due events fits the budget.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let config = NexmarkConfig::new(1000)
        .rate(2_000)
        .wall_clock_base_ms(now - 175);
    let mut reader = NexmarkGenerator::new(config)
        .open(PartitionId(0), &ctx(1))
        .unwrap();
    let mut small = Reader::for_test(100);
    let mut reads = Vec::new();
    loop {
        let status = reader.read(&mut small).unwrap();
        reads.push((status, small.take().0.len()));
        if status != ReadStatus::More {
            break;
        }
    }
    let (last, full) = reads.split_last().unwrap();
    assert!(full.len() >= 3, "350 and more due, 100 a read: {reads:?}");
    assert!(
        full.iter().all(|&r| r == (ReadStatus::More, 100)),
        "{reads:?}"
    );
    assert_eq!(last.0, ReadStatus::Pending, "{reads:?}");
    assert!(last.1 <= 100, "{reads:?}");
    let started = Instant::now();
    drain(reader);
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "the rest on the clock"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_event_keeps_the_reference_invariants(n in 0u64..(1 << 45), seed: u64) {
        let config = NexmarkConfig::new(u64::MAX).seed(seed);
        let e = config.event(n);
        prop_assert_eq!(kind(&e), kind_of(n));
        prop_assert_eq!(e.date_time(), BASE_2015_07_15 + (n / 10) as i64);
        let (persons, auctions) = created_by(n);
        match e {
            Event::Person(p) => prop_assert_eq!(p.id, 999 + persons),
            Event::Auction(a) => {
                prop_assert_eq!(a.id, 999 + auctions);
                prop_assert!((10..=14).contains(&a.category));
                prop_assert!(a.reserve >= a.initial_bid && a.initial_bid >= 100);
                prop_assert!(a.expires > a.date_time);
                prop_assert!(a.seller >= 1000 && a.seller <= 999 + persons + 10);
            }
            Event::Bid(b) => {
                prop_assert!(b.auction >= 1000 && b.auction <= 999 + auctions + 10);
                prop_assert!(b.auction + 100 >= 999 + auctions);
                prop_assert!(b.bidder >= 1000 && b.bidder <= 999 + persons + 10);
                prop_assert!((100..=100_000_000).contains(&b.price));
            }
        }
    }

    #[test]
    fn resuming_any_partition_anywhere_gives_the_rest_of_it(
        events in 0u64..400, k in 1u32..9, p in 0u32..9, next in 0u64..500,
    ) {
        let p = p % k;
        let config = NexmarkConfig::new(events).partitions(k);
        let mut source = NexmarkGenerator::new(config);
        let got: Vec<(u64, Event)> = drain(source.resume(PartitionId(p), &ctx(2), next).unwrap())
            .into_iter()
            .map(|(offset, r)| (offset, r.data))
            .collect();
        let expected: Vec<(u64, Event)> = (0..events)
            .filter(|n| n % u64::from(k) == u64::from(p) && *n >= next)
            .map(|n| (n, config.event(n)))
            .collect();
        prop_assert_eq!(got, expected);
    }
}

/// `cargo test --release -p runnel-connectors --test nexmark -- --ignored --nocapture`
#[test]
#[ignore = "throughput measurement, not a check"]
fn generation_rate_on_one_thread() {
    const N: u64 = 5_000_000;
    let config = NexmarkConfig::new(N);

    let started = Instant::now();
    let mut bytes = 0usize;
    for e in config.iter() {
        bytes += reference_size(&std::hint::black_box(e));
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "config.iter(): {:.2} M events/s ({:.0} reference bytes/event)",
        N as f64 / took / 1e6,
        bytes as f64 / N as f64
    );

    let started = Instant::now();
    let mut reader = NexmarkGenerator::new(config)
        .open(PartitionId(0), &ctx(1))
        .unwrap();
    let mut out = Reader::for_test(1024);
    let mut count = 0;
    while reader.read(&mut out).unwrap() != ReadStatus::Finished {
        count += out.take().0.len();
    }
    count += out.take().0.len();
    let took = started.elapsed().as_secs_f64();
    assert_eq!(count as u64, N);
    println!(
        "partition reader, 1024 per read: {:.2} M events/s",
        N as f64 / took / 1e6
    );

    for workers in [1, 2] {
        let hole = BlackholeSink::new();
        let sink = hole.clone();
        let job = Job::new("nexmark", "nexmark into a blackhole", move |flow| {
            flow.source(
                "events",
                NexmarkGenerator::new(config),
                SourceOptions::new(),
            )?
            .sink("hole", sink.clone())
        });
        let started = Instant::now();
        run(&job, RunOptions::workers(workers)).unwrap();
        let took = started.elapsed().as_secs_f64();
        assert_eq!(hole.count(), N);
        println!(
            "job into a blackhole, {workers} workers: {:.2} M events/s",
            N as f64 / took / 1e6
        );
    }

    let json = NexmarkConfig::new(1_000_000);
    let started = Instant::now();
    let mut sink = CountingWriter::default();
    write_json_lines(&json, &mut sink).unwrap();
    let took = started.elapsed().as_secs_f64();
    println!(
        "write_json_lines: {:.2} M events/s, {:.0} MB/s, {:.1} bytes/line",
        1e6 / took / 1e6,
        sink.0 as f64 / took / 1e6,
        sink.0 as f64 / 1e6
    );
    let mut sizes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in json.iter().take(100_000) {
        let s = sizes.entry(kind(&e)).or_default();
        s.0 += e.to_json().len() + 1;
        s.1 += 1;
    }
    for (k, (total, n)) in sizes {
        println!("JSON {k}: {:.1} bytes/line", total as f64 / n as f64);
    }
}

#[derive(Default)]
struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A paced partition promises, after each read, that none of its later events is earlier than
/// some time (`Reader::advance_event_time`); the reference is the events it then pushes. The
/// promise must hold for every later event, and must move forward while the partition waits
/// for the clock (so the watermark does not stall between events).
#[test]
fn a_paced_partition_promises_only_what_its_later_events_keep() {
    let config = NexmarkConfig::new(600).rate(3_000).base_time_now();
    let ctx = ctx(2);
    let mut source = NexmarkGenerator::new(config);
    let mut reader = source.open(PartitionId(1), &ctx).unwrap();
    let mut out = Reader::for_test(7);
    // (promise, index of the first record pushed after it)
    let mut promises: Vec<(i64, usize)> = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    let mut pending_promises = 0;
    loop {
        let status = reader.read(&mut out).unwrap();
        times.extend(out.take().0.iter().map(|r| r.ts));
        if let Some(t) = out.take_event_time_floor() {
            if status == ReadStatus::Pending {
                pending_promises += 1;
            }
            promises.push((t, times.len()));
        }
        if status == ReadStatus::Finished {
            break;
        }
        if status == ReadStatus::Pending {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    assert_eq!(times.len(), 300, "every other event of 600");
    assert!(
        promises.len() > 50,
        "only {} promises in {} reads",
        promises.len(),
        times.len()
    );
    assert!(
        pending_promises > 0,
        "no promise while waiting for the clock"
    );
    for (t, from) in &promises {
        if let Some(bad) = times[*from..].iter().find(|&&ts| ts < *t) {
            panic!("promised no event before {t}, then pushed one at {bad}");
        }
        // Not a vacuous promise: it is at least as late as the events already pushed.
        if *from > 0 {
            assert!(*t >= times[*from - 1], "promise {t} behind a pushed event");
        }
    }
}
