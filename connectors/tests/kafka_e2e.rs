//! The Kafka connectors against a real broker (tansu) and, for faults, librdkafka's mock
//! cluster.
//!
//! The broker: `RUNNEL_KAFKA_BOOTSTRAP=host:port` if set (for example from
//! `scripts/dev-broker start`); otherwise these tests start a tansu of their own on a free port
//! and stop it when they are done. Without either, they fail and say how to install tansu.
//! `RUNNEL_KAFKA_E2E_RECORDS` sets the size of the large round trip (default 1,000,000).
//!
//! Every check is against what the test itself produced or computed with plain rdkafka
//! clients, never against runnel's own connectors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use runnel_connectors::kafka::{dead_letter_headers, KafkaConfig, KafkaSink, KafkaSource, StartAt};
use runnel_engine::testing::{Collector, TestItem, TestSource};
use runnel_engine::{
    run, BadRecordPolicy, DeadLetter, Error, Job, RunOptions, RunSummary, SourceOptions,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The broker

use runnel_testkit::{broker, create_topic, delete_topic, free_port, unique};

/// Counts failed deliveries of the test's own producer.
#[derive(Default)]
struct CountFailures(AtomicU64);

impl ClientContext for CountFailures {}

impl ProducerContext for CountFailures {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("test producer: delivery failed: {e}");
            }
        }
    }
}

/// One record the test producer writes: value (None for a tombstone), partition, timestamp.
struct Produce {
    value: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    partition: i32,
    ts: i64,
}

/// Writes `records` with a plain BaseProducer and waits until all are acknowledged.
fn produce(bootstrap: &str, topic: &str, records: impl Iterator<Item = Produce>) -> u64 {
    let producer: BaseProducer<CountFailures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create_with_context(CountFailures::default())
        .expect("test producer");
    let mut n: u64 = 0;
    for r in records {
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).partition(r.partition).timestamp(r.ts);
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    rec = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("test producer: cannot send: {e}"),
            }
        }
        n += 1;
        if n.is_multiple_of(10_000) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("test producer flush");
    assert_eq!(
        producer.context().0.load(Ordering::Relaxed),
        0,
        "test producer failures"
    );
    n
}

/// A record read back by the test's plain consumer.
struct ReadBack {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    ts: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
}

/// Reads every record of `topic` with a plain BaseConsumer, until every partition has
/// reported its end. (Not through ListOffsets: tansu 0.6 answers "latest" with the first
/// offset of the last batch + 1, and "earliest" with the batch it stored first, see
/// [`runnel_connectors::kafka::OLDEST`].)
fn read_all(bootstrap: &str, topic: &str) -> Vec<ReadBack> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "runnel-test-readback")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", "0")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("test consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, runnel_connectors::kafka::OLDEST)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut at_end = BTreeSet::new();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while at_end.len() < parts.len() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                at_end.remove(&m.partition());
                out.push(ReadBack {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    ts: m.timestamp().to_millis(),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("test consumer: {e}"),
            None => {}
        }
        assert!(
            last.elapsed() < Duration::from_secs(30),
            "read {} records of {topic}, then nothing for 30 s",
            out.len()
        );
    }
    out
}

/// Kafka's (Java client's) murmur2, written from its reference: the partitioner the sink must
/// match.
fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn java_partition(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions) as i32
}

/// Runs `job`, failing the test if it takes longer than `limit`.
fn run_within(job: Job, opts: RunOptions, limit: Duration) -> runnel_engine::Result<RunSummary> {
    let stop = opts.stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(run(&job, opts));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => {
            handle.join().expect("job thread");
            r
        }
        Err(_) => {
            stop.store(true, Ordering::SeqCst);
            panic!("the job did not finish within {limit:?}");
        }
    }
}

fn opts(workers: usize) -> RunOptions {
    RunOptions {
        workers,
        epoch_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Rec {
    k: u32,
    v: u64,
    ts: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Out {
    k: u32,
    v: u64,
    sq: u64,
}

const BASE_TS: i64 = 1_700_000_000_000;

/// The job's logic, written twice: here for the test's reference, and in the job.
fn keep(r: &Rec) -> bool {
    r.v % 7 != 3
}

fn transform(r: Rec) -> Out {
    Out {
        k: r.k,
        v: r.v,
        sq: (r.v * r.v) % 1009,
    }
}

#[test]
fn murmur2_matches_the_java_client() {
    // Kafka's own test vectors (clients/.../UtilsTest.java).
    assert_eq!(murmur2(b"21"), -973_932_308);
    assert_eq!(murmur2(b"foobar"), -790_332_482);
    assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
    assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58_897_971
    );
    assert_eq!(murmur2(b"abc"), 479_470_107);
}

/// N records through a 2-worker job, topic A (4 partitions) to topic B (3 partitions), checked
/// against the test's own computation of what B must hold.
#[test]
fn round_trip_through_a_real_broker() {
    let n: u64 = std::env::var("RUNNEL_KAFKA_E2E_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let keys = 1000u64;
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let (a, b) = (unique("e2e-in"), unique("e2e-out"));
    create_topic(&bootstrap, &a, 4);
    create_topic(&bootstrap, &b, 3);

    let t = Instant::now();
    let produced = produce(
        &bootstrap,
        &a,
        (0..n).map(|i| {
            let rec = Rec {
                k: (i % keys) as u32,
                v: i,
                ts: BASE_TS + i as i64,
            };
            Produce {
                value: Some(serde_json::to_vec(&rec).unwrap()),
                key: Some(rec.k.to_string().into_bytes()),
                partition: (i % 4) as i32,
                ts: rec.ts,
            }
        }),
    );
    let produce_secs = t.elapsed().as_secs_f64();

    // The job. Event time must be each record's Kafka timestamp (which the test set to `ts`).
    let kafka = KafkaConfig::new(&bootstrap);
    let wrong_time = Arc::new(AtomicU64::new(0));
    let wrong = wrong_time.clone();
    let (a2, b2) = (a.clone(), b.clone());
    let job = Job::new("kafka-e2e", "topic A to topic B", move |flow| {
        let wrong = wrong.clone();
        let source = KafkaSource::json::<Rec>(kafka.clone(), [a2.clone()])
            .start(StartAt::Earliest)
            .stop_at_end();
        flow.source("in", source, SourceOptions::new())?
            .inspect(move |r, ts| {
                if ts != r.ts {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
            })
            .filter(keep)
            .map(transform)
            .sink(
                "out",
                KafkaSink::json(kafka.clone(), b2.clone()).key(|o: &Out| Some(o.k.to_string())),
            )
    });
    let t = Instant::now();
    let summary = run_within(job, opts(2), Duration::from_secs(600)).expect("the job");
    let job_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let back = read_all(&bootstrap, &b);
    let read_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{n} records: produce {produce_secs:.1} s ({:.0}/s), job {job_secs:.1} s ({:.0}/s in), \
         read back {read_secs:.1} s; {summary}",
        n as f64 / produce_secs,
        n as f64 / job_secs
    );

    // The reference: what B must hold, computed from what the test produced.
    let mut expected: Vec<Out> = (0..n)
        .map(|i| Rec {
            k: (i % keys) as u32,
            v: i,
            ts: BASE_TS + i as i64,
        })
        .filter(keep)
        .map(transform)
        .collect();
    expected.sort();

    assert_eq!(produced, n);
    assert_eq!(summary.events_in, n);
    assert_eq!(summary.events_out, expected.len() as u64);
    assert_eq!(summary.bad_records, 0);
    assert_eq!(
        wrong_time.load(Ordering::Relaxed),
        0,
        "event time != Kafka timestamp"
    );

    let mut got = Vec::with_capacity(back.len());
    let mut partition_of_key: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    for r in &back {
        let out: Out = serde_json::from_slice(&r.value).expect("B holds JSON Outs");
        let key = r.key.clone().expect("every record in B has a key");
        assert_eq!(key, out.k.to_string().into_bytes());
        // murmur2 partitioning, as the Java client does it.
        assert_eq!(r.partition, java_partition(&key, 3), "key {}", out.k);
        // The sink writes each record's event time as its Kafka timestamp.
        assert_eq!(r.ts, Some(BASE_TS + out.v as i64));
        partition_of_key.entry(key).or_default().insert(r.partition);
        got.push(out);
    }
    got.sort();
    assert_eq!(
        got.len(),
        expected.len(),
        "B holds a different number of records"
    );
    assert!(got == expected, "B holds other records than expected");
    assert_eq!(partition_of_key.len() as u64, keys);
}

/// A topic of 2 partitions: partition 0 all good, partition 1 with bad records at known
/// offsets (not JSON, a missing field, a tombstone).
fn topic_with_bad_records(bootstrap: &str) -> (String, Vec<(String, Option<Vec<u8>>)>, u64) {
    let topic = unique("bad");
    create_topic(bootstrap, &topic, 2);
    let good = |i: u64| {
        Some(
            serde_json::to_vec(&Rec {
                k: i as u32,
                v: i,
                ts: BASE_TS,
            })
            .unwrap(),
        )
    };
    let mut p1: Vec<Option<Vec<u8>>> = (0..20).map(good).collect();
    p1[5] = Some(b"this is not json".to_vec());
    p1[9] = Some(br#"{"k": 1, "ts": 2}"#.to_vec());
    p1[14] = None;
    let bad: Vec<(String, Option<Vec<u8>>)> = [5, 9, 14]
        .iter()
        .map(|&o| (format!("{topic}/1@{o}"), p1[o].clone()))
        .collect();
    let p0 = (100..130).map(good);
    let records = p0
        .map(|v| (0, v))
        .chain(p1.into_iter().map(|v| (1, v)))
        .map(|(partition, value)| Produce {
            value,
            key: None,
            partition,
            ts: BASE_TS,
        });
    produce(bootstrap, &topic, records);
    (topic, bad, 30 + 20 - 3)
}

#[test]
fn bad_records_fail_the_job_with_their_location() {
    let broker = broker();
    let (topic, bad, _) = topic_with_bad_records(&broker.bootstrap);
    let kafka = KafkaConfig::new(&broker.bootstrap);
    let out = Collector::<Rec>::new();
    let sink = out.clone();
    let job = Job::new("bad-fail", "fails on bad records", move |flow| {
        let source = KafkaSource::json::<Rec>(kafka.clone(), [topic.clone()]).stop_at_end();
        let options = SourceOptions::new().on_bad_record(BadRecordPolicy::Fail);
        flow.source("in", source, options)?.sink("out", sink.sink())
    });
    let err = run_within(job, opts(2), Duration::from_secs(60)).unwrap_err();
    match &err {
        Error::BadRecord {
            source_name,
            location,
            reason,
        } => {
            assert_eq!(source_name, "in");
            assert_eq!(location, &bad[0].0);
            assert!(reason.contains("expected"), "serde's reason: {reason}");
        }
        other => panic!("expected a bad-record error, got: {other}"),
    }
    assert!(err.to_string().contains(&bad[0].0), "{err}");
}

#[test]
fn bad_records_are_skipped_counted_and_sent_to_dead_letters() {
    let broker = broker();
    let (topic, bad, good) = topic_with_bad_records(&broker.bootstrap);
    let kafka = KafkaConfig::new(&broker.bootstrap);
    let out = Collector::<Rec>::new();
    let dead = Collector::<DeadLetter>::new();
    let (sink, dead_sink) = (out.clone(), dead.clone());
    let job = Job::new("bad-skip", "skips bad records", move |flow| {
        let source = KafkaSource::json::<Rec>(kafka.clone(), [topic.clone()]).stop_at_end();
        let options = SourceOptions::new().on_bad_record(BadRecordPolicy::Skip);
        let (data, dead) = flow.source_with_dead_letters("in", source, options)?;
        data.sink("out", sink.sink())?;
        dead.sink("dead", dead_sink.sink())
    });
    let summary = run_within(job, opts(2), Duration::from_secs(60)).expect("the job");
    assert_eq!(summary.bad_records, bad.len() as u64);
    assert_eq!(summary.events_in, good);
    assert_eq!(out.data().len() as u64, good);
    let mut letters = dead.data();
    letters.sort_by(|a, b| a.location.cmp(&b.location));
    let mut expected = bad.clone();
    expected.sort();
    assert_eq!(letters.len(), expected.len());
    for (letter, (location, raw)) in letters.iter().zip(&expected) {
        assert_eq!(letter.source, "in");
        assert_eq!(&letter.location, location);
        assert!(!letter.reason.is_empty());
        let raw = String::from_utf8_lossy(raw.as_deref().unwrap_or_default()).into_owned();
        assert_eq!(letter.raw, raw);
    }
    let tombstone = letters
        .iter()
        .find(|l| l.raw.is_empty())
        .expect("the tombstone");
    assert!(
        tombstone.reason.contains("tombstone"),
        "{}",
        tombstone.reason
    );
    let missing = letters
        .iter()
        .find(|l| l.raw.contains("\"ts\""))
        .expect("missing field");
    assert!(
        missing.reason.contains("missing field `v`"),
        "{}",
        missing.reason
    );
}

/// The skip policy with a dead-letter topic: each bad record lands there once, raw, with the
/// reason, location and source in headers (the sink's header support, checked by a plain
/// consumer).
#[test]
fn dead_letters_go_to_a_topic_with_the_reason_in_headers() {
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let (topic, bad, good) = topic_with_bad_records(&bootstrap);
    let dlq = unique("dlq");
    create_topic(&bootstrap, &dlq, 1);
    let kafka = KafkaConfig::new(&bootstrap);
    let out = Collector::<Rec>::new();
    let sink = out.clone();
    let dlq2 = dlq.clone();
    let job = Job::new("bad-dlq", "skips bad records to a topic", move |flow| {
        let source = KafkaSource::json::<Rec>(kafka.clone(), [topic.clone()]).stop_at_end();
        let options = SourceOptions::new().on_bad_record(BadRecordPolicy::Skip);
        let (data, dead) = flow.source_with_dead_letters("in", source, options)?;
        data.sink("out", sink.sink())?;
        dead.sink("dlq", KafkaSink::dead_letters(kafka.clone(), dlq2.clone()))
    });
    let summary = run_within(job, opts(2), Duration::from_secs(60)).expect("the job");
    assert_eq!(summary.bad_records, bad.len() as u64);
    assert_eq!(out.data().len() as u64, good);

    let header = |r: &ReadBack, name: &str| -> String {
        let v = r
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", r.headers));
        String::from_utf8(v.1.clone()).unwrap()
    };
    let mut got: Vec<(String, Vec<u8>, String)> = read_all(&bootstrap, &dlq)
        .iter()
        .map(|r| {
            assert_eq!(header(r, dead_letter_headers::SOURCE), "in");
            (
                header(r, dead_letter_headers::LOCATION),
                r.value.clone(),
                header(r, dead_letter_headers::REASON),
            )
        })
        .collect();
    got.sort();
    let mut expected = bad.clone();
    expected.sort();
    assert_eq!(got.len(), expected.len(), "one dead letter per bad record");
    for ((location, raw, reason), (want_location, want_raw)) in got.iter().zip(&expected) {
        assert_eq!(location, want_location);
        assert_eq!(raw, &want_raw.clone().unwrap_or_default());
        assert!(!reason.is_empty());
    }
    assert!(
        got.iter().any(|(_, _, r)| r.contains("tombstone")),
        "{got:?}"
    );
}

/// The group's committed offsets for `parts`, read by a plain consumer.
fn committed(bootstrap: &str, group: &str, parts: &[(String, i32)]) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    parts
        .iter()
        .map(
            |(t, p)| match got.find_partition(t, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// A job reading a topic pattern on 2 workers picks up a topic created while it runs (every
/// record of both topics exactly once, the new one from its beginning), and commits to its
/// group the offsets it has finished: at the end, the end of every partition.
#[test]
fn a_topic_pattern_picks_up_new_topics_and_offsets_are_committed() {
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let prefix = unique("pat");
    let (t1, t2) = (format!("{prefix}-a"), format!("{prefix}-b"));
    let rec = |i: u64| Rec {
        k: (i % 10) as u32,
        v: i,
        ts: BASE_TS + i as i64,
    };
    let records = |range: std::ops::Range<u64>, partitions: u64| {
        range.map(move |i| Produce {
            value: Some(serde_json::to_vec(&rec(i)).unwrap()),
            key: None,
            partition: (i % partitions) as i32,
            ts: BASE_TS + i as i64,
        })
    };
    create_topic(&bootstrap, &t1, 2);
    produce(&bootstrap, &t1, records(0..1000, 2));
    // A topic that does not match, to be left alone.
    let other = unique("other");
    create_topic(&bootstrap, &other, 1);
    produce(&bootstrap, &other, records(5000..5010, 1));

    let group = unique("group");
    let kafka = KafkaConfig::new(&bootstrap);
    let out = Collector::<Rec>::new();
    let (sink, pattern, group2) = (out.clone(), format!("{prefix}-.*"), group.clone());
    let job = Job::new("pattern", "reads a topic pattern", move |flow| {
        let source = KafkaSource::json::<Rec>(kafka.clone(), Vec::<String>::new())
            .topic_pattern(pattern.clone())
            .discovery_interval(Duration::from_millis(200))
            .commit_offsets(true, Duration::from_millis(100))
            .group_id(group2.clone());
        flow.source("in", source, SourceOptions::new())?
            .sink("out", sink.sink())
    });
    let options = opts(2);
    let stop = options.stop.clone();
    let handle = std::thread::spawn(move || run(&job, options));
    let wait_for = |n: usize| {
        let t = Instant::now();
        while out.data().len() < n {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} of {n} records after 60 s",
                out.data().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(1000);
    // Offsets committed while the job runs (every 100 ms), before it stops.
    let t = Instant::now();
    let parts1 = [(t1.clone(), 0), (t1.clone(), 1)];
    while committed(&bootstrap, &group, &parts1) != [Some(500), Some(500)] {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "committed offsets of {t1}: {:?}",
            committed(&bootstrap, &group, &parts1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    create_topic(&bootstrap, &t2, 3);
    produce(&bootstrap, &t2, records(1000..1600, 3));
    wait_for(1600);
    // Anything extra (a duplicate, the other topic) would arrive now.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let summary = handle.join().unwrap().expect("the job");

    let mut vs: Vec<u64> = out.data().into_iter().map(|r| r.v).collect();
    vs.sort();
    assert_eq!(vs, (0..1600).collect::<Vec<_>>(), "each record once");
    assert_eq!(summary.events_in, 1600);
    let all: Vec<(String, i32)> = [(t1.clone(), 0), (t1.clone(), 1)]
        .into_iter()
        .chain((0..3).map(|p| (t2.clone(), p)))
        .collect();
    assert_eq!(
        committed(&bootstrap, &group, &all),
        vec![Some(500), Some(500), Some(200), Some(200), Some(200)],
        "committed offsets at the end"
    );
}

/// Reads `topic` from `start` with `stop_at_end` on one worker and returns the `v`s read.
fn read_vs(bootstrap: &str, topic: &str, start: StartAt, group: &str) -> Vec<u64> {
    let kafka = KafkaConfig::new(bootstrap);
    let out = Collector::<Rec>::new();
    let sink = out.clone();
    let (topic, group) = (topic.to_string(), group.to_string());
    let job = Job::new("start", "reads from a start position", move |flow| {
        let source = KafkaSource::json::<Rec>(kafka.clone(), [topic.clone()])
            .start(start)
            .group_id(group.clone())
            .stop_at_end();
        flow.source("in", source, SourceOptions::new())?
            .sink("out", sink.sink())
    });
    run_within(job, opts(1), Duration::from_secs(60)).expect("the job");
    let mut vs: Vec<u64> = out.data().into_iter().map(|r| r.v).collect();
    vs.sort();
    vs
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `values` as records on partition 0, each with the wall-clock time as its timestamp.
fn produce_now(bootstrap: &str, topic: &str, values: std::ops::Range<u64>) {
    produce(
        bootstrap,
        topic,
        values.map(|i| {
            let ts = now_ms();
            Produce {
                value: Some(serde_json::to_vec(&Rec { k: 0, v: i, ts }).unwrap()),
                key: None,
                partition: 0,
                ts,
            }
        }),
    );
}

/// Earliest, a timestamp and the group's committed offsets, on the real broker. (tansu 0.6
/// answers ListOffsets for "latest" with the last batch's first offset + 1, so `latest` is
/// tested on the mock cluster below; it looks timestamps up by when batches were written,
/// which agrees with Kafka here because every record's timestamp is when it was written; and
/// for a timestamp after every record it answers offset 0 where Kafka answers "none", so
/// that case is not tested.)
#[test]
fn start_positions() {
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let topic = unique("start");
    create_topic(&bootstrap, &topic, 1);
    produce_now(&bootstrap, &topic, 0..50);
    std::thread::sleep(Duration::from_millis(800));
    let between = now_ms();
    std::thread::sleep(Duration::from_millis(800));
    produce_now(&bootstrap, &topic, 50..100);

    let all: Vec<u64> = (0..100).collect();
    assert_eq!(read_vs(&bootstrap, &topic, StartAt::Earliest, "g"), all);
    assert_eq!(
        read_vs(&bootstrap, &topic, StartAt::Timestamp(between), "g"),
        (50..100).collect::<Vec<_>>()
    );
    // A group with no committed offset starts at the earliest record.
    assert_eq!(
        read_vs(&bootstrap, &topic, StartAt::Committed, &unique("fresh")),
        all
    );
    // Commit an offset for a group with a plain consumer, then start from it: 50 starts the
    // second (and last) batch; 25 is inside the first, where tansu 0.6 answers with the next
    // batch; 75 is inside the last, where it answers with nothing at all. The reader must
    // notice both and read again from further back.
    for at in [50u64, 25, 75] {
        let group = unique("committed");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(at as i64))
            .unwrap();
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit");
        assert_eq!(
            read_vs(&bootstrap, &topic, StartAt::Committed, &group),
            (at..100).collect::<Vec<_>>(),
            "from the committed offset {at}"
        );
    }
}

/// `latest` and `earliest` on librdkafka's mock cluster, and an empty partition.
#[test]
fn start_at_latest_on_the_mock_cluster() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let bootstrap = mock.bootstrap_servers();
    mock.create_topic("latest", 1, 1).expect("topic");
    mock.create_topic("empty", 1, 1).expect("topic");
    produce_now(&bootstrap, "latest", 0..100);
    assert_eq!(
        read_vs(&bootstrap, "latest", StartAt::Earliest, "g"),
        (0..100).collect::<Vec<_>>()
    );
    assert_eq!(
        read_vs(&bootstrap, "latest", StartAt::Latest, "g"),
        Vec::<u64>::new()
    );
    assert_eq!(
        read_vs(&bootstrap, "empty", StartAt::Earliest, "g"),
        Vec::<u64>::new()
    );
}

#[test]
fn a_missing_topic_is_named() {
    let broker = broker();
    let kafka = KafkaConfig::new(&broker.bootstrap);
    let topic = unique("no-such-topic");
    let t2 = topic.clone();
    let job = Job::new(
        "missing",
        "reads a topic that does not exist",
        move |flow| {
            let source = KafkaSource::json::<Rec>(kafka.clone(), [t2.clone()]).stop_at_end();
            flow.source("in", source, SourceOptions::new())?
                .sink("out", Collector::<Rec>::new().sink())
        },
    );
    let err = run_within(job, opts(1), Duration::from_secs(30)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&topic) && text.contains("does not exist"),
        "{text}"
    );
}

/// A closed port: both connectors fail within seconds, naming the address.
#[test]
fn an_unreachable_broker_fails_within_seconds_naming_the_address() {
    let port = free_port(); // bound and released: nothing listens there
    let bootstrap = format!("127.0.0.1:{port}");

    let kafka = KafkaConfig::new(&bootstrap);
    let job = Job::new("unreachable-source", "reads from nowhere", move |flow| {
        let source = KafkaSource::json::<Rec>(kafka.clone(), ["t"]);
        flow.source("in", source, SourceOptions::new())?
            .sink("out", Collector::<Rec>::new().sink())
    });
    let t = Instant::now();
    let err = run_within(job, opts(2), Duration::from_secs(60)).unwrap_err();
    let took = t.elapsed();
    let text = err.to_string();
    eprintln!("source error after {took:?}: {text}");
    assert!(matches!(err, Error::Source { .. }), "{text}");
    assert!(text.contains(&bootstrap), "{text}");
    assert!(took < Duration::from_secs(8), "took {took:?}");

    let kafka = KafkaConfig::new(&bootstrap);
    let job = Job::new("unreachable-sink", "writes to nowhere", move |flow| {
        let input = vec![vec![TestItem::At(1, 1u64)]];
        flow.source("in", TestSource::new(input), SourceOptions::new())?
            .sink("out", KafkaSink::json(kafka.clone(), "t"))
    });
    let t = Instant::now();
    let err = run_within(job, opts(1), Duration::from_secs(60)).unwrap_err();
    let took = t.elapsed();
    let text = err.to_string();
    eprintln!("sink error after {took:?}: {text}");
    assert!(matches!(err, Error::Sink { .. }), "{text}");
    assert!(text.contains(&bootstrap), "{text}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

/// librdkafka's mock cluster goes down in the middle of a run and comes back: every record
/// still arrives (at least once), through the source and through the sink.
#[test]
fn the_job_survives_a_broker_outage() {
    let n: u64 = 100_000;
    let mock = MockCluster::new(1).expect("mock cluster");
    let bootstrap = mock.bootstrap_servers();
    let (a, b) = ("outage-in", "outage-out");
    mock.create_topic(a, 2, 1).expect("topic");
    mock.create_topic(b, 2, 1).expect("topic");
    produce(
        &bootstrap,
        a,
        (0..n).map(|i| Produce {
            value: Some(
                serde_json::to_vec(&Rec {
                    k: (i % 10) as u32,
                    v: i,
                    ts: BASE_TS + i as i64,
                })
                .unwrap(),
            ),
            key: None,
            partition: (i % 2) as i32,
            ts: BASE_TS + i as i64,
        }),
    );

    // Small fetches and a slow job, so that most records are still on the broker when it
    // goes down.
    let kafka = KafkaConfig::new(&bootstrap)
        .option("queued.min.messages", "500")
        .option("queued.max.messages.kbytes", "64")
        .option("max.partition.fetch.bytes", "10000");
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    let job = Job::new(
        "outage",
        "reads and writes through an outage",
        move |flow| {
            let seen = seen2.clone();
            let source = KafkaSource::json::<Rec>(kafka.clone(), [a]).stop_at_end();
            flow.source("in", source, SourceOptions::new())?
                .inspect(move |_, _| {
                    if seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(100) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .sink(
                    "out",
                    KafkaSink::json(KafkaConfig::new(kafka.bootstrap.clone()), b),
                )
        },
    );
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    let handle = std::thread::spawn(move || {
        let r = run(&job, opts(2));
        done.store(true, Ordering::SeqCst);
        r
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < n / 4
        && Instant::now() < deadline
        && !finished.load(Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let at_down = seen.load(Ordering::Relaxed);
    mock.broker_down(-1).expect("broker down");
    std::thread::sleep(Duration::from_secs(3));
    let during = seen.load(Ordering::Relaxed);
    mock.broker_up(-1).expect("broker up");
    let summary = handle
        .join()
        .expect("job thread")
        .expect("the job survives the outage");
    assert!(finished.load(Ordering::SeqCst));
    eprintln!("outage: down at {at_down} records, {during} when back up; {summary}");
    assert!(
        during < n,
        "the job finished before the outage; slow it down"
    );

    let back = read_all(&bootstrap, b);
    let vs: BTreeSet<u64> = back
        .iter()
        .map(|r| serde_json::from_slice::<Rec>(&r.value).expect("JSON").v)
        .collect();
    assert_eq!(vs.len() as u64, n, "every record at least once");
    assert!(summary.events_in >= n);
}

/// The mock cluster goes down for good: the job fails after `max_unavailable`, saying so.
#[test]
fn a_broker_that_stays_down_fails_the_job_after_max_unavailable() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let bootstrap = mock.bootstrap_servers();
    mock.create_topic("down", 1, 1).expect("topic");
    let kafka = KafkaConfig::new(&bootstrap);
    let started = Arc::new(AtomicBool::new(false));
    let started2 = started.clone();
    let job = Job::new("down", "reads from a broker that goes away", move |flow| {
        let started = started2.clone();
        let source = KafkaSource::json::<Rec>(kafka.clone(), ["down"])
            .max_unavailable(Duration::from_secs(3));
        flow.source("in", source, SourceOptions::new())?
            .inspect(move |_, _| started.store(true, Ordering::Relaxed))
            .sink("out", Collector::<Rec>::new().sink())
    });
    let handle = std::thread::spawn(move || run(&job, opts(1)));
    // Let the source connect and start fetching (an empty topic), then take the broker away.
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    mock.broker_down(-1).expect("broker down");
    let err = handle.join().expect("job thread").unwrap_err();
    let took = t.elapsed();
    let text = err.to_string();
    eprintln!("failed {took:?} after the broker went down: {text}");
    assert!(
        text.contains("unreachable") && text.contains(&bootstrap),
        "{text}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert!(!started.load(Ordering::Relaxed));
}

// ---------------------------------------------------------------------------------------------
// Exactly once across restarts, driven through the `Sink` trait as the engine drives it

/// The records epoch `e` gives the sink in every run (replay cuts epochs the same way).
fn epoch_records(e: u64) -> Vec<runnel_engine::Event<String>> {
    (0..40)
        .map(|i| runnel_engine::Event {
            ts: (e * 1000 + i) as i64,
            data: format!("e{e}-r{i}"),
        })
        .collect()
}

/// Writes epoch `e` (all of its records, or without the last `drop`) and ends it.
fn write_epoch(sink: &mut KafkaSink<String>, e: u64, drop: usize) {
    use runnel_engine::{Epoch, Sink};
    let mut records = epoch_records(e);
    records.truncate(records.len() - drop);
    sink.write(Epoch(e), &mut records).expect("write");
    sink.epoch_done(Epoch(e)).expect("epoch done");
}

/// Waits until the records of epochs up to `e` are delivered (as the engine asks).
fn wait_ready(sink: &mut KafkaSink<String>, e: u64) {
    use runnel_engine::{Epoch, Sink};
    let started = Instant::now();
    while !sink.ready_for_checkpoint(Epoch(e)).expect("ready") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "epoch {e} undelivered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Three runs of one exactly-once sink instance, the first two ended as by a crash:
/// 1. checkpoint 1, then epochs 2 to 5 written, but one record of epoch 3 lost (as one in flight
///    to another partition can be when the process dies);
/// 2. restored from checkpoint 1: replays epoch 3 (writing the lost record, delivered before
///    epoch 4 begins), epoch 4, and takes checkpoint 3;
/// 3. restored from checkpoint 3: replays epochs 4 and 5 and ends.
///
/// The topic must hold every record of epochs 1 to 5 once. Run 3 has to find run 1's records
/// of epochs 4 and 5, which lie before everything run 2 delivered.
#[test]
fn exactly_once_sink_finds_an_earlier_runs_records_after_two_restarts() {
    use runnel_engine::{Epoch, Sink, SinkContext};
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let topic = unique("eo-restarts");
    create_topic(&bootstrap, &topic, 3);
    let ctx = SinkContext {
        checkpoints: true,
        ..SinkContext::detached("out")
    };
    let new_sink =
        || KafkaSink::strings(KafkaConfig::new(bootstrap.clone()), topic.clone()).exactly_once();

    // Run 1.
    let mut sink = new_sink();
    sink.open(&ctx).expect("open");
    write_epoch(&mut sink, 1, 0);
    wait_ready(&mut sink, 1);
    let c1 = sink.snapshot(Epoch(1)).expect("snapshot").expect("state");
    sink.checkpoint_committed(1).expect("committed");
    write_epoch(&mut sink, 2, 0);
    write_epoch(&mut sink, 3, 1);
    write_epoch(&mut sink, 4, 0);
    write_epoch(&mut sink, 5, 0);
    wait_ready(&mut sink, 5);
    drop(sink);

    // Run 2.
    let mut sink = new_sink();
    sink.restore(&c1).expect("restore");
    sink.open(&ctx).expect("open");
    write_epoch(&mut sink, 2, 0);
    write_epoch(&mut sink, 3, 0);
    wait_ready(&mut sink, 3);
    write_epoch(&mut sink, 4, 0);
    let c3 = sink.snapshot(Epoch(3)).expect("snapshot").expect("state");
    wait_ready(&mut sink, 4);
    drop(sink);

    // Run 3.
    let mut sink = new_sink();
    sink.restore(&c3).expect("restore");
    sink.open(&ctx).expect("open");
    write_epoch(&mut sink, 4, 0);
    write_epoch(&mut sink, 5, 0);
    wait_ready(&mut sink, 5);
    sink.snapshot(Epoch(5)).expect("snapshot");
    sink.checkpoint_committed(5).expect("committed");
    sink.close().expect("close");

    let mut counts: BTreeMap<String, i64> = (1..=5)
        .flat_map(epoch_records)
        .map(|e| (e.data, -1))
        .collect();
    for r in read_all(&bootstrap, &topic) {
        *counts
            .entry(String::from_utf8(r.value).expect("utf-8"))
            .or_insert(0) += 1;
    }
    // Each expected record counts -1, each one read +1: all must end at 0.
    let wrong: Vec<(String, i64)> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
    assert!(
        wrong.is_empty(),
        "records read n times more than expected (-1: missing): {wrong:?}"
    );
}

/// The records of `epochs` each read back from `topic` more (or, negative, fewer) times than
/// once, by value.
fn not_once(
    bootstrap: &str,
    topic: &str,
    epochs: impl IntoIterator<Item = u64>,
) -> Vec<(String, i64)> {
    let mut counts: BTreeMap<String, i64> = epochs
        .into_iter()
        .flat_map(epoch_records)
        .map(|e| (e.data, -1))
        .collect();
    for r in read_all(bootstrap, topic) {
        *counts
            .entry(String::from_utf8(r.value).expect("utf-8"))
            .or_insert(0) += 1;
    }
    counts.into_iter().filter(|(_, n)| *n != 0).collect()
}

/// A mock cluster whose next Produce request is answered with DUPLICATE_SEQUENCE_NUMBER and not
/// written (as by a broker that advanced the producer's sequence and then failed to store the
/// batch): librdkafka reports the batch delivered, the first record without an offset.
fn drops_the_next_batch(mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_DUPLICATE_SEQUENCE_NUMBER],
    );
}

/// The error of a sink whose batch the broker did not confirm names the sink, the topic and
/// the broker's answer; and the records are not in the topic (counted as written, they would
/// have been lost): some of `epoch`'s are missing, none is there twice.
fn assert_unconfirmed(err: &str, bootstrap: &str, topic: &str, epoch: u64) {
    assert!(err.contains("'out'"), "{err}");
    assert!(err.contains("not known to be written"), "{err}");
    assert!(err.contains("DUPLICATE_SEQUENCE_NUMBER"), "{err}");
    assert!(err.contains(&format!("topic '{topic}'")), "{err}");
    let prefix = format!("e{epoch}-");
    let missing: Vec<(String, i64)> = not_once(bootstrap, topic, epoch..=epoch)
        .into_iter()
        .filter(|(v, _)| v.starts_with(&prefix))
        .collect();
    assert!(!missing.is_empty(), "epoch {epoch}'s batch was dropped");
    assert!(missing.iter().all(|(_, n)| *n == -1), "{missing:?}");
}

/// A one-broker mock cluster with a one-partition `topic`, and the context of a sink instance
/// in a job that takes checkpoints.
fn eo_mock(
    topic: &str,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    runnel_engine::SinkContext,
) {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(topic, 1, 1).expect("topic");
    let ctx = runnel_engine::SinkContext {
        checkpoints: true,
        ..runnel_engine::SinkContext::detached("out")
    };
    (mock, ctx)
}

/// An exactly-once sink on `topic` with a long linger: what is sent at once goes out in one
/// batch.
fn eo_sink(bootstrap: &str, topic: &str) -> KafkaSink<String> {
    KafkaSink::strings(KafkaConfig::new(bootstrap), topic)
        .exactly_once()
        .linger(Duration::from_millis(500))
}

/// A run of `sink` restored from `state` that writes epoch `e` and ends with its checkpoint;
/// then every record of `epochs` must be in `topic` once.
fn restored_run_writes_once(
    mut sink: KafkaSink<String>,
    ctx: &runnel_engine::SinkContext,
    state: &[u8],
    e: u64,
    bootstrap: &str,
    topic: &str,
    epochs: impl IntoIterator<Item = u64>,
) {
    use runnel_engine::{Epoch, Sink};
    sink.restore(state).expect("restore");
    sink.open(ctx).expect("open");
    write_epoch(&mut sink, e, 0);
    wait_ready(&mut sink, e);
    sink.snapshot(Epoch(e)).expect("snapshot");
    sink.checkpoint_committed(e).expect("committed");
    sink.close().expect("close");
    let wrong = not_once(bootstrap, topic, epochs);
    assert!(
        wrong.is_empty(),
        "records read n times more than expected (-1: missing): {wrong:?}"
    );
}

/// The exactly-once sink, before its first complete checkpoint (results held, then written
/// when the checkpoint is complete), on a broker that drops that batch with the
/// duplicate-sequence answer: the sink does not count the records as written, the job fails
/// before the next checkpoint covers them, and the run restored from the checkpoint finds
/// them missing and writes them, once.
#[test]
fn exactly_once_sink_fails_on_a_held_batch_the_broker_did_not_confirm_and_the_restart_writes_it() {
    use runnel_engine::{Epoch, Sink};
    let topic = "eo-unconfirmed-held";
    let (mock, ctx) = eo_mock(topic);
    let bootstrap = mock.bootstrap_servers();
    let new_sink = || eo_sink(&bootstrap, topic);

    // Run 1.
    let mut sink = new_sink();
    sink.open(&ctx).expect("open");
    write_epoch(&mut sink, 1, 0);
    let c1 = sink.snapshot(Epoch(1)).expect("snapshot").expect("state");
    drops_the_next_batch(&mock);
    // Checkpoint 1 complete: its results go out. Epoch 2 has none; checkpoint 2 waits for
    // what was sent, and fails.
    let failed = (|| {
        sink.checkpoint_committed(1)?;
        sink.epoch_done(Epoch(2))?;
        sink.snapshot(Epoch(2)).map(|_| ())
    })();
    let err = failed
        .expect_err("a checkpoint over records the broker did not confirm")
        .to_string();
    assert_unconfirmed(&err, &bootstrap, topic, 1);
    drop(sink);

    // Run 2, restored from checkpoint 1.
    restored_run_writes_once(new_sink(), &ctx, &c1, 2, &bootstrap, topic, 1..=2);
}

/// The same once the sink writes each epoch as it ends: the epoch whose batch the broker
/// dropped never becomes ready for its checkpoint, the sink fails, and the run restored from
/// the checkpoint before replays the epoch and writes it, once.
#[test]
fn exactly_once_sink_fails_on_an_epoch_the_broker_did_not_confirm_and_the_restart_writes_it() {
    use runnel_engine::{Epoch, Sink};
    let topic = "eo-unconfirmed-live";
    let (mock, ctx) = eo_mock(topic);
    let bootstrap = mock.bootstrap_servers();
    let new_sink = || eo_sink(&bootstrap, topic);

    // Run 1: checkpoint 1, then epoch 2 (no results) and checkpoint 2, which waits until
    // checkpoint 1's results are delivered; then epoch 3, whose batch the broker drops.
    let mut sink = new_sink();
    sink.open(&ctx).expect("open");
    write_epoch(&mut sink, 1, 0);
    sink.snapshot(Epoch(1)).expect("snapshot");
    sink.checkpoint_committed(1).expect("committed");
    sink.epoch_done(Epoch(2)).expect("epoch done");
    wait_ready(&mut sink, 2);
    let c2 = sink.snapshot(Epoch(2)).expect("snapshot").expect("state");
    sink.checkpoint_committed(2).expect("committed");
    drops_the_next_batch(&mock);
    let started = Instant::now();
    let failed = (|| {
        write_epoch(&mut sink, 3, 0);
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "neither ready nor failed"
            );
            if sink.ready_for_checkpoint(Epoch(3))? {
                return sink.snapshot(Epoch(3)).map(|_| ());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })();
    let err = failed
        .expect_err("a checkpoint over an epoch the broker did not confirm")
        .to_string();
    assert_unconfirmed(&err, &bootstrap, topic, 3);
    drop(sink);

    // Run 2, restored from checkpoint 2: replays epoch 3. Epoch 2 had no results.
    restored_run_writes_once(new_sink(), &ctx, &c2, 3, &bootstrap, topic, [1, 3]);
}

/// Runs on `workers` with 10 ms epochs, checkpointed into `store` every 50 ms (two kept),
/// resuming from the latest checkpoint.
fn checkpointed(store: &Arc<runnel_engine::LocalDirStore>, workers: usize) -> RunOptions {
    use runnel_engine::{CheckpointOptions, Restore};
    RunOptions {
        workers,
        epoch_interval: Duration::from_millis(10),
        checkpoint: Some(CheckpointOptions {
            store: store.clone(),
            every: Duration::from_millis(50),
            keep: 2,
            restore: Restore::Latest,
            stream_above: runnel_engine::recovery::STREAM_STATE_ABOVE,
            incremental: true,
            changes_every: runnel_engine::recovery::CHANGES_EVERY,
        }),
        ..Default::default()
    }
}

/// `latest` is where the partition ended when the job first opened it, also after a restart:
/// a partition that had no record yet when the job was stopped resumes from there, so the
/// records written to it while the job was down are read (once), and none from before the
/// start. Records are produced one at a time before the start (tansu 0.6 answers "latest"
/// with the last batch's first offset + 1, which is the end only for batches of one).
#[test]
fn latest_resumes_where_the_first_run_started_on_a_partition_it_never_read() {
    use runnel_connectors::FileSink;
    use runnel_engine::{CheckpointStore, LocalDirStore};
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let topic = unique("latest-resume");
    create_topic(&bootstrap, &topic, 2);
    let one = |partition: i32, v: u64| {
        let ts = now_ms();
        produce(
            &bootstrap,
            &topic,
            std::iter::once(Produce {
                value: Some(serde_json::to_vec(&Rec { k: 0, v, ts }).unwrap()),
                key: None,
                partition,
                ts,
            }),
        );
    };
    // Before the job: never to be read.
    for v in 0..3 {
        one(0, v);
        one(1, 10 + v);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "latest").unwrap());
    let out = dir.path().join("out.jsonl");
    let group = unique("latest-resume");
    let job = |stop_at_end: bool| {
        let kafka = KafkaConfig::new(&bootstrap);
        let (topic, group, out) = (topic.clone(), group.clone(), out.clone());
        Job::new("latest", "reads from the end", move |flow| {
            let mut source = KafkaSource::json::<Rec>(kafka.clone(), [topic.clone()])
                .start(StartAt::Latest)
                .group_id(group.clone());
            if stop_at_end {
                source = source.stop_at_end();
            }
            flow.source("in", source, SourceOptions::new())?
                .map(|r: Rec| r.v)
                .sink("out", FileSink::json(&out).sorted())
        })
    };
    let opts = || checkpointed(&store, 2);

    // The first run: partition 0 gets two records, partition 1 none; stopped after a
    // checkpoint that follows them.
    let first = opts();
    let stop = first.stop.clone();
    let first_job = job(false);
    let handle = std::thread::spawn(move || run(&first_job, first));
    let wait_checkpoints = |n: usize| {
        let t = Instant::now();
        let at = store
            .list()
            .unwrap()
            .iter()
            .map(|c| c.epoch)
            .max()
            .unwrap_or(0);
        let mut seen = 0;
        while seen < n {
            assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
            seen = store
                .list()
                .unwrap()
                .iter()
                .filter(|c| c.epoch > at)
                .count();
        }
    };
    wait_checkpoints(2);
    one(0, 100);
    one(0, 101);
    // Long enough for the records to be read, then checkpoints after them.
    std::thread::sleep(Duration::from_millis(500));
    wait_checkpoints(2);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().expect("the first run");
    assert!(!out.exists(), "a suspended run writes no output file");

    // While it is down.
    one(0, 102);
    for v in 200..205 {
        one(1, v);
    }

    run_within(job(true), opts(), Duration::from_secs(60)).expect("the resumed run");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut got: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    got.sort();
    let want: Vec<u64> = [100, 101, 102, 200, 201, 202, 203, 204].into();
    assert_eq!(got, want, "each record written after the first start, once");
}

/// Runs a checkpointed job on `topic` (50 records, on `bootstrap`) until it has read them and
/// checkpointed after them, stops it, has `make_anew` make the topic anew with 10 records
/// (1000..1010) on the broker whose address it returns, and resumes the job there (reading to
/// the end of the topic and stopping if `stop_at_end`, else running on). The resumed run's
/// error.
fn resume_on_a_topic_made_anew(
    bootstrap: &str,
    topic: &str,
    stop_at_end: bool,
    make_anew: impl FnOnce() -> String,
) -> String {
    use runnel_engine::{CheckpointStore, LocalDirStore};
    produce_now(bootstrap, topic, 0..50);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "anew").unwrap());
    let job = |bootstrap: &str, stop_at_end: bool, out: Collector<Rec>| {
        let kafka = KafkaConfig::new(bootstrap);
        let topic = topic.to_string();
        Job::new("anew", "reads a topic", move |flow| {
            let mut source =
                KafkaSource::json::<Rec>(kafka.clone(), [topic.clone()]).group_id("anew-job");
            if stop_at_end {
                source = source.stop_at_end();
            }
            flow.source("in", source, SourceOptions::new())?
                .sink("out", out.sink())
        })
    };
    let opts = || checkpointed(&store, 1);

    let first = opts();
    let stop = first.stop.clone();
    let read = Collector::<Rec>::new();
    let first_job = job(bootstrap, false, read.clone());
    let handle = std::thread::spawn(move || run(&first_job, first));
    let t = Instant::now();
    while read.data().len() < 50 {
        let n = read.data().len();
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the first run read {n} records"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let checkpointed = || store.list().unwrap().iter().map(|c| c.epoch).max();
    let at = checkpointed().unwrap_or(0);
    while store
        .list()
        .unwrap()
        .iter()
        .filter(|c| c.epoch > at)
        .count()
        < 2
    {
        assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().expect("the first run");

    let bootstrap = make_anew();
    produce_now(&bootstrap, topic, 1000..1010);
    let resumed = run_within(
        job(&bootstrap, stop_at_end, Collector::new()),
        opts(),
        Duration::from_secs(60),
    );
    match resumed {
        Ok(s) => panic!("the resumed job ended without an error: {s:?}"),
        Err(e) => e.to_string(),
    }
}

/// The resumed job's error names the partition, the offset it resumes at, what happened and
/// what to do.
fn assert_names_the_topic_made_anew(err: &str, topic: &str) {
    for part in [
        format!("{topic}/0"),
        "resumes at offset 50".to_string(),
        "made anew".to_string(),
        "--fresh".to_string(),
    ] {
        assert!(err.contains(&part), "the error names {part:?}: {err}");
    }
}

/// A group whose committed offset (50) is past the end of `topic`, made anew with the records
/// 1000..1010, reads them all, as Kafka's `auto.offset.reset=earliest` does.
fn assert_a_committed_offset_past_the_end_reads_from_the_start(bootstrap: &str, topic: &str) {
    let group = unique("made-anew-group");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(50))
        .unwrap();
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit offset 50");
    assert_eq!(
        committed(bootstrap, &group, &[(topic.to_string(), 0)]),
        [Some(50)]
    );
    assert_eq!(
        read_vs(bootstrap, topic, StartAt::Committed, &group),
        (1000..1010).collect::<Vec<u64>>(),
        "every record of the new topic, from its start"
    );
}

/// A topic deleted and made anew while a job is down has offsets that went back: 50 records
/// read and checkpointed, then a new topic of the same name with 10. The resumed job fails,
/// naming the partition, the offset it resumes at and what to do, rather than dropping the
/// new records below its old position (as it did) or reading them into state that counts the
/// old ones. A group whose committed offset is past the new end reads the partition from its
/// start instead. (tansu answers a fetch past a partition's end with nothing: the reader finds
/// the end by reading again from the start.) The resumed job runs on, as a streaming job
/// does.
#[test]
fn a_topic_made_anew_while_the_job_is_down_fails_the_resumed_job_naming_it() {
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let topic = unique("made-anew");
    create_topic(&bootstrap, &topic, 1);
    let err = resume_on_a_topic_made_anew(&bootstrap, &topic, false, || {
        delete_topic(&bootstrap, &topic);
        std::thread::sleep(Duration::from_millis(500));
        create_topic(&bootstrap, &topic, 1);
        bootstrap.clone()
    });
    assert_names_the_topic_made_anew(&err, &topic);
    assert_a_committed_offset_past_the_end_reads_from_the_start(&bootstrap, &topic);
}

/// The same on librdkafka's mock cluster, with a second cluster as the broker made anew (a
/// development broker whose storage was wiped while the job was down), and a resumed job
/// that stops at the end of the topic. The mock answers a fetch past the end with "offset out
/// of range", and librdkafka goes back to the partition's start by itself.
#[test]
fn a_topic_made_anew_on_the_mock_cluster_fails_the_resumed_job_at_its_end() {
    let first = MockCluster::new(1).expect("mock cluster");
    first.create_topic("anew", 1, 1).expect("topic");
    let second = MockCluster::new(1).expect("mock cluster");
    second.create_topic("anew", 1, 1).expect("topic");
    let err = resume_on_a_topic_made_anew(&first.bootstrap_servers(), "anew", true, || {
        second.bootstrap_servers()
    });
    assert_names_the_topic_made_anew(&err, "anew");
    assert_a_committed_offset_past_the_end_reads_from_the_start(
        &second.bootstrap_servers(),
        "anew",
    );
}
