//! The Bid generator in real jobs: every sequence number once, fields by the published formulas,
//! over several worker and partition counts; rate limiting; the clickstream data's shape.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runnel_connectors::generator::{
    MAX_SESSION_GAP_MS, MAX_SESSION_VIEWS, MAX_VIEW_GAP_MS, MIN_SESSION_GAP_MS, MIN_VIEW_GAP_MS,
};
use runnel_connectors::{
    page_views, write_page_views, Bid, BidGenerator, BlackholeSink, FileSource, PageView,
};
use runnel_engine::testing::{read_partitions, Collector};
use runnel_engine::{run, Event, Job, RunOptions, SourceOptions};

fn opts(workers: usize) -> RunOptions {
    RunOptions {
        workers,
        epoch_interval: Duration::from_millis(5),
        ..Default::default()
    }
}

/// Runs `generator` on `workers` workers and returns every event it produced.
fn generate(generator: BidGenerator, workers: usize) -> Vec<Event<Bid>> {
    let out = Collector::new();
    let sink = out.clone();
    let job = Job::new("bids", "collects generated bids", move |flow| {
        flow.source("bids", generator.clone(), SourceOptions::new())?
            .sink("out", sink.sink())
    });
    let summary = run(&job, opts(workers)).expect("generator job runs");
    let events: Vec<Event<Bid>> = out.events().into_iter().map(|(_, e)| e).collect();
    assert_eq!(summary.events_in, events.len() as u64);
    events
}

#[test]
fn every_seq_once_with_the_published_fields() {
    const N: u64 = 10_007;
    for workers in [1, 2, 3] {
        for partitions in [0u32, 1, 2, 3, 5, 8] {
            let mut events = generate(BidGenerator::new(N).partitions(partitions), workers);
            let k = if partitions == 0 {
                workers as u64
            } else {
                u64::from(partitions)
            };
            events.sort_by_key(|e| e.data.seq);
            assert_eq!(
                events.len() as u64,
                N,
                "{workers} workers, {partitions} partitions"
            );
            for (i, e) in events.iter().enumerate() {
                let seq = i as u64;
                let b = &e.data;
                assert_eq!(b.seq, seq, "{workers} workers, {partitions} partitions");
                assert_eq!(b.auction, (seq * 7919) % 1000);
                assert_eq!(b.bidder, (seq * 31) % 100000);
                assert_eq!(b.price, 100 + (seq * 17) % 10000);
                assert_eq!(b.event_time_ms, seq as i64);
                assert_eq!(e.ts, seq as i64, "event time is the bid's own");
            }
            // Read directly: partition p holds the seqs p, p + k, ..., each at offset seq.
            let parts =
                read_partitions(&mut BidGenerator::new(N).partitions(partitions), workers).unwrap();
            assert_eq!(parts.len() as u64, k);
            let mut seen = 0;
            for (p, records) in parts {
                for (offset, e) in records {
                    assert_eq!(offset, e.data.seq, "offset is the sequence number");
                    assert_eq!(e.data.seq % k, u64::from(p), "interleaved partitions");
                    seen += 1;
                }
            }
            assert_eq!(seen, N);
        }
    }
}

#[test]
fn more_partitions_than_events_and_no_events() {
    let events = generate(BidGenerator::new(3).partitions(7), 2);
    let mut seqs: Vec<u64> = events.iter().map(|e| e.data.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![0, 1, 2]);
    assert!(generate(BidGenerator::new(0), 2).is_empty());
}

#[test]
fn partitions_advance_together() {
    // Within each partition, records arrive in increasing seq order.
    let parts = read_partitions(&mut BidGenerator::new(5_000).partitions(4), 2).unwrap();
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, records) in parts {
        for (_, e) in records {
            if let Some(prev) = last.insert(p, e.data.seq) {
                assert_eq!(e.data.seq, prev + 4);
            }
        }
    }
    assert_eq!(last.len(), 4);
}

#[test]
fn rate_limits_the_whole_stream() {
    // 300 events at 3000/s take at least 0.1 s however many partitions share them.
    for (workers, partitions) in [(1, 0), (2, 3)] {
        let hole = BlackholeSink::new();
        let sink = hole.clone();
        let job = Job::new("paced", "paced bids", move |flow| {
            let gen = BidGenerator::new(300).partitions(partitions).rate(3000);
            flow.source("bids", gen, SourceOptions::new())?
                .sink("hole", sink.clone())
        });
        let started = Instant::now();
        run(&job, opts(workers)).unwrap();
        let took = started.elapsed();
        assert_eq!(hole.handle().get(), 300);
        assert!(
            took >= Duration::from_millis(90),
            "300 events at 3000/s took only {took:?}"
        );
    }
}

#[test]
fn page_views_are_deterministic_sorted_and_sessioned() {
    let views = page_views(20, 2_000, 42);
    assert_eq!(views.len(), 2_000);
    assert_eq!(views, page_views(20, 2_000, 42), "same seed, same views");
    assert_ne!(
        views,
        page_views(20, 2_000, 43),
        "another seed, other views"
    );
    assert!(views.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    assert!(views.iter().all(|v| v.user < 20 && v.page.starts_with('/')));

    let mut by_user: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for v in &views {
        by_user.entry(v.user).or_default().push(v.ts_ms);
    }
    assert!(by_user.len() > 15, "views are spread over the users");
    for ts in by_user.values() {
        assert!(ts[0] < 60_000, "first view in the first minute");
        let mut in_session = 1;
        for w in ts.windows(2) {
            let gap = w[1] - w[0];
            if gap >= MIN_SESSION_GAP_MS {
                assert!(gap <= MAX_SESSION_GAP_MS);
                in_session = 1;
            } else {
                assert!((MIN_VIEW_GAP_MS..=MAX_VIEW_GAP_MS).contains(&gap));
                in_session += 1;
                assert!(in_session <= MAX_SESSION_VIEWS);
            }
        }
    }
    assert!(page_views(0, 10, 1).is_empty());
}

#[test]
fn page_views_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clicks.jsonl");
    let views = page_views(5, 300, 7);
    write_page_views(&path, &views).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 300);

    let out = Collector::new();
    let sink = out.clone();
    let p = path.clone();
    let job = Job::new("clicks", "reads page views", move |flow| {
        let options = SourceOptions::new().event_time(|v: &PageView| v.ts_ms);
        flow.source("clicks", FileSource::<PageView>::json(&p), options)?
            .sink("out", sink.sink())
    });
    run(&job, opts(2)).unwrap();
    let mut expected = views;
    expected.sort();
    assert_eq!(out.sorted_data(), expected);
    for (_, e) in out.events() {
        assert_eq!(e.ts, e.data.ts_ms, "event time from the extractor");
    }
}

/// `cargo test --release -p runnel-connectors --test generator -- --ignored --nocapture`
#[test]
#[ignore = "throughput measurement, not a check"]
fn throughput_into_a_blackhole() {
    for workers in [1, 2] {
        let hole = BlackholeSink::new();
        let sink = hole.clone();
        let job = Job::new("w0", "bids into a blackhole", move |flow| {
            flow.source("bids", BidGenerator::new(50_000_000), SourceOptions::new())?
                .sink("hole", sink.clone())
        });
        let summary = run(&job, RunOptions::workers(workers)).unwrap();
        assert_eq!(hole.count(), 50_000_000);
        println!("{summary}");
    }
}
