// Shared by the tests of `runnel` against a real Kafka-API broker (`kafka_cli.rs`,
// `crash.rs`): pasted into each with `include!`, so it sees their `use` lines and they see its
// private items.


use runnel_testkit::{broker, create_topic, unique};

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

/// One bid as the test writes it: the generator's formulas, written out again here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
struct TestBid {
    seq: u64,
    auction: u64,
    bidder: u64,
    price: u64,
    event_time_ms: i64,
}

fn test_bid(seq: u64) -> TestBid {
    TestBid {
        seq,
        auction: (seq * 7919) % 1000,
        bidder: (seq * 31) % 100_000,
        price: 100 + (seq * 17) % 10_000,
        event_time_ms: seq as i64,
    }
}

fn bid_json(b: &TestBid) -> String {
    format!(
        r#"{{"seq":{},"auction":{},"bidder":{},"price":{},"event_time_ms":{}}}"#,
        b.seq, b.auction, b.bidder, b.price, b.event_time_ms
    )
}

/// Writes bids `0..n` to `topic` with a plain BaseProducer, bid `seq` to partition
/// `seq % partitions`, keyed by auction, with its event time as the Kafka timestamp (librdkafka
/// stamps bid 0, whose time is 0, with the current time: the job must take event time from the
/// bid), and waits until all are acknowledged.
fn produce_bids(bootstrap: &str, topic: &str, n: u64, partitions: u64) {
    let producer: BaseProducer<CountFailures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create_with_context(CountFailures::default())
        .expect("test producer");
    for seq in 0..n {
        let b = test_bid(seq);
        let (value, key) = (bid_json(&b), b.auction.to_string());
        let mut rec = BaseRecord::to(topic)
            .partition((seq % partitions) as i32)
            .timestamp(b.event_time_ms)
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("test producer: cannot send: {e}"),
            }
        }
        if seq % 10_000 == 0 {
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
}

/// A record read back by the test's plain consumer.
struct ReadBack {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// Reads every record of `topic` with a plain BaseConsumer, until every partition has
/// reported its end.
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
    assert!(!parts.is_empty(), "topic {topic} has partitions");
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, runnel_connectors::kafka::OLDEST)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut at_end = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while at_end.len() < parts.len() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                at_end.remove(&m.partition());
                out.push(ReadBack {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
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

/// Kafka's (Java client's) murmur2, written from its reference.
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

// ---------------------------------------------------------------------------------------------
// kafka-w2 on a real broker

/// A window result as the job writes it.
#[derive(Debug, Deserialize)]
struct Row {
    auction: u64,
    window_start: i64,
    window_end: i64,
    count: u64,
    max_price: u64,
}

/// (auction, window start, count, max price) per window, by brute force over bids `0..n`.
fn reference(n: u64) -> Vec<(u64, i64, u64, u64)> {
    let mut m: HashMap<(u64, i64), (u64, u64)> = HashMap::new();
    for seq in 0..n {
        let b = test_bid(seq);
        let e = m
            .entry((b.auction, b.event_time_ms / 10_000 * 10_000))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(b.price);
    }
    let mut v: Vec<_> = m.into_iter().map(|((a, s), (c, x))| (a, s, c, x)).collect();
    v.sort_unstable();
    v
}

/// The output topic's rows, sorted (a multiset), after checking each record's key (the
/// auction), partition (murmur2 of the key, as the Java client puts it) and window end.
fn output_rows(bootstrap: &str, topic: &str, partitions: usize) -> Vec<(u64, i64, u64, u64)> {
    let mut rows = Vec::new();
    for r in read_all(bootstrap, topic) {
        let row: Row = serde_json::from_slice(&r.value).expect("a JSON window result");
        let key = r.key.expect("every result has a key");
        assert_eq!(key, row.auction.to_string().into_bytes(), "key of {row:?}");
        assert_eq!(r.partition, java_partition(&key, partitions), "{row:?}");
        assert_eq!(row.window_end, row.window_start + 10_000, "{row:?}");
        rows.push((row.auction, row.window_start, row.count, row.max_price));
    }
    rows.sort_unstable();
    rows
}

fn bids_count() -> u64 {
    std::env::var("RUNNEL_KAFKA_W2_BIDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

