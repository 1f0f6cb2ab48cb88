//! End-to-end tests of `runnel run kafka-w2`, `runnel produce` and `runnel consume` against a
//! real Kafka-API broker (tansu), and of `kafka-w2`'s embedded cluster.
//!
//! The broker: `RUNNEL_KAFKA_BOOTSTRAP=host:port` if set (for example from
//! `scripts/dev-broker start`); otherwise these tests start a tansu of their own on a free port
//! and stop it when they are done. Without either, they fail and say how to install tansu.
//! `RUNNEL_KAFKA_W2_BIDS` sets the number of bids of the large runs (default 1,000,000).
//!
//! Every check is against what the test itself wrote or computed, with plain rdkafka clients
//! and a few lines of brute force, never with runnel's own connectors or `kafka_tools`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};
use runnel_testkit::free_port;
use serde::Deserialize;
use serde_json::Value;

include!("common/kafka.rs");
include!("common/runnel.rs");

/// A million bids written by the test's own producer over 4 partitions; `kafka-w2` on 2
/// workers, then on 2 processes x 2 workers, each into an output topic of its own; each output
/// is exactly (as a multiset) the brute-force count and maximum per auction and window.
#[test]
fn kafka_w2_on_a_real_broker_matches_brute_force_on_2_workers_and_2_processes() {
    let n = bids_count();
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let input = unique("w2-bids");
    let (out_local, out_cluster) = (unique("w2-counts"), unique("w2-counts-cluster"));
    create_topic(&bootstrap, &input, 4);
    create_topic(&bootstrap, &out_local, 3);
    create_topic(&bootstrap, &out_cluster, 3);
    let t = Instant::now();
    produce_bids(&bootstrap, &input, n, 4);
    let produce_secs = t.elapsed().as_secs_f64();
    let want = reference(n);

    let settings = |output: &str| {
        vec![
            format!("kafka.bootstrap={bootstrap}"),
            format!("input={input}"),
            format!("output={output}"),
        ]
    };
    let mut args = vec!["run".to_string(), "kafka-w2".to_string()];
    for s in settings(&out_local) {
        args.extend(["--set".to_string(), s]);
    }
    args.extend(["--workers", "2", "--json"].map(String::from));
    let t = Instant::now();
    let o = runnel(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let s = summary(&o);
    let run_secs = t.elapsed().as_secs_f64();
    assert_eq!(s["events_in"], n);
    assert_eq!(s["late"], 0);
    assert_eq!(s["bad_records"], 0);
    assert_eq!(s["events_out"], want.len() as u64);
    let got = output_rows(&bootstrap, &out_local, 3);
    assert_eq!(got.len(), want.len(), "2 workers: number of results");
    assert!(got == want, "2 workers: results differ from brute force");

    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["run".to_string(), "kafka-w2".to_string()];
    for s in settings(&out_cluster) {
        args.extend(["--set".to_string(), s]);
    }
    let t = Instant::now();
    let outs = run_cluster(
        dir.path(),
        2,
        2,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let cluster_secs = t.elapsed().as_secs_f64();
    let mut events_in = 0;
    for o in &outs {
        events_in += summary(o)["events_in"].as_u64().unwrap();
    }
    assert_eq!(events_in, n, "the two processes read every bid once");
    let got = output_rows(&bootstrap, &out_cluster, 3);
    assert_eq!(got.len(), want.len(), "2 processes: number of results");
    assert!(got == want, "2 processes: results differ from brute force");
    eprintln!(
        "{n} bids: produce {produce_secs:.1} s, 2 workers {run_secs:.1} s, 2 processes x 2 \
         workers {cluster_secs:.1} s; {} results each",
        want.len()
    );
}

/// A missing input topic and an unreachable broker are named, within seconds.
#[test]
fn kafka_w2_names_a_missing_topic_and_an_unreachable_broker() {
    let broker = broker();
    let missing = unique("no-such-bids");
    let o = runnel(&[
        "run",
        "kafka-w2",
        "--set",
        &format!("kafka.bootstrap={}", broker.bootstrap),
        "--set",
        &format!("input={missing}"),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&missing) && err.contains("does not exist"),
        "{err}"
    );

    let nowhere = format!("127.0.0.1:{}", free_port());
    let t = Instant::now();
    let o = runnel(&[
        "run",
        "kafka-w2",
        "--set",
        &format!("kafka.bootstrap={nowhere}"),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&nowhere), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    // Settings of the embedded cluster make no sense with a broker.
    let o = runnel(&[
        "run",
        "kafka-w2",
        "--set",
        &format!("kafka.bootstrap={}", broker.bootstrap),
        "--set",
        "events=10",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("events"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------
// kafka-w2 on its embedded cluster

#[test]
fn kafka_w2_without_a_broker_runs_on_the_embedded_cluster_and_checks_its_output() {
    let o = runnel(&[
        "run",
        "kafka-w2",
        "--workers",
        "2",
        "--set",
        "events=123457",
        "--json",
    ]);
    let s = summary(&o);
    let err = stderr(&o);
    // 12 full windows of 1000 auctions, and 3457 bids in the last, one per auction at most.
    let rows = 12 * 1000 + 1000;
    assert!(
        err.contains(&format!(
            "kafka-w2 check: {rows} window results read back from topic bid-counts, each \
             matches the closed form"
        )),
        "{err}"
    );
    assert_eq!(s["events_in"], 123_457);
    assert_eq!(s["events_out"], rows);
    assert_eq!(s["late"], 0);

    // Its cluster lives in one process.
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let o = runnel(&[
        "run",
        "kafka-w2",
        "--processes",
        "2",
        "--hosts",
        hosts.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("kafka.bootstrap") && err.contains("--processes 2"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// runnel produce / runnel consume

/// A line of `runnel consume`: partition, offset, key, value.
fn parse_line(line: &str) -> (i32, i64, String, String) {
    let mut parts = line.splitn(4, ' ');
    let mut next = || parts.next().unwrap_or_else(|| panic!("short line: {line}"));
    let partition = next().parse().expect("partition");
    let offset = next().parse().expect("offset");
    let key = next().to_string();
    let value = next().to_string();
    (partition, offset, key, value)
}

/// `runnel produce` creates a topic and fills it with bids; the test reads it with a plain
/// consumer; `runnel consume` prints exactly what is there (every line, `--values-only`,
/// `--max`).
#[test]
fn produce_then_consume_round_trip() {
    let broker = broker();
    let bootstrap = broker.bootstrap.as_str();
    let topic = unique("cli-bids");
    let n = 5_000u64;
    let o = runnel(&[
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        &topic,
        "--events",
        &n.to_string(),
        "--partitions",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("produced {n} bids to topic '{topic}'")) && err.contains("created"),
        "{err}"
    );

    // What the topic holds, read by the test: every bid once, keyed by auction and
    // partitioned like the Java client, in order within each partition.
    let back = read_all(bootstrap, &topic);
    let mut bids: Vec<TestBid> = Vec::new();
    let mut by_partition: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
    for r in &back {
        let b: TestBid = serde_json::from_slice(&r.value).expect("a JSON bid");
        let key = r.key.clone().expect("a key");
        assert_eq!(key, b.auction.to_string().into_bytes());
        assert_eq!(r.partition, java_partition(&key, 3));
        by_partition
            .entry(r.partition)
            .or_default()
            .push((r.offset, b.seq));
        bids.push(b);
    }
    bids.sort();
    assert_eq!(bids, (0..n).map(test_bid).collect::<Vec<_>>());
    assert_eq!(by_partition.len(), 3);
    for recs in by_partition.values() {
        assert!(recs.windows(2).all(|w| w[0].1 < w[1].1), "in seq order");
    }

    // runnel consume prints the same records.
    let o = runnel(&["consume", "--bootstrap", bootstrap, "--topic", &topic]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines: Vec<(i32, i64, String, String)> = stdout.lines().map(parse_line).collect();
    lines.sort();
    let mut want: Vec<(i32, i64, String, String)> = back
        .iter()
        .map(|r| {
            (
                r.partition,
                r.offset,
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                String::from_utf8(r.value.clone()).unwrap(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(lines.len() as u64, n);
    assert!(lines == want, "runnel consume printed other records");
    assert!(
        stderr(&o).contains(&format!("consumed {n} records from topic '{topic}'")),
        "{}",
        stderr(&o)
    );

    let o = runnel(&[
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        &topic,
        "--values-only",
        "--max",
        "10",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(stdout.lines().count(), 10);
    for line in stdout.lines() {
        let b: TestBid = serde_json::from_str(line).expect("a bare JSON bid");
        assert_eq!(b, test_bid(b.seq));
    }
}

/// Page views into an existing topic, at a rate: the topic keeps its partitions and every
/// view arrives, keyed by user; the rate holds the producer back.
#[test]
fn produce_page_views_at_a_rate_into_an_existing_topic() {
    let broker = broker();
    let bootstrap = broker.bootstrap.as_str();
    let topic = unique("cli-views");
    create_topic(bootstrap, &topic, 2);
    let t = Instant::now();
    let o = runnel(&[
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        &topic,
        "--generator",
        "page-views",
        "--events",
        "2000",
        "--rate",
        "2000",
    ]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(took >= Duration::from_millis(900), "rate ignored: {took:?}");
    let back = read_all(bootstrap, &topic);
    assert_eq!(back.len(), 2000);
    let mut last_ts: HashMap<u64, i64> = HashMap::new();
    for r in &back {
        let v: Value = serde_json::from_slice(&r.value).expect("JSON");
        let user = v["user"].as_u64().expect("user");
        assert_eq!(r.key.as_deref(), Some(user.to_string().as_bytes()));
        assert!(r.partition < 2);
        // A user's views keep their time order (one key, one partition).
        let ts = v["ts_ms"].as_i64().expect("ts_ms");
        assert!(last_ts.insert(user, ts).is_none_or(|prev| prev <= ts));
    }
}

/// Unreachable brokers and missing topics fail within seconds, named.
#[test]
fn produce_and_consume_name_an_unreachable_broker_and_a_missing_topic() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    for cmd in ["produce", "consume"] {
        let t = Instant::now();
        let o = runnel(&[
            cmd,
            "--bootstrap",
            &nowhere,
            "--topic",
            "t",
            "--timeout",
            "2s",
        ]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains(&nowhere) && err.contains("cannot reach"),
            "{cmd}: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{cmd}: {:?}",
            t.elapsed()
        );
    }
    let broker = broker();
    let missing = unique("no-such-topic");
    for cmd in ["produce", "consume"] {
        let o = runnel(&[cmd, "--bootstrap", &broker.bootstrap, "--topic", &missing]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains(&missing) && err.contains("does not exist"),
            "{cmd}: {err}"
        );
    }
}

/// The lines of a JSON-lines output file, sorted (a multiset).
fn sorted_lines(path: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.sort_unstable();
    lines
}

/// Nexmark q5 (windows), q3 and q4 (updating tables) give the same answers whether they read
/// the generator, a JSON-lines file of the same events, or a topic those events were produced
/// to (`runnel produce --generator nexmark`, 3 partitions). The generator's answers are checked
/// against brute force in `nexmark_queries.rs`.
#[test]
fn nexmark_queries_answer_the_same_from_the_generator_a_file_and_a_topic() {
    let n: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let events_file = dir.path().join("events.jsonl");
    let f = std::io::BufWriter::new(std::fs::File::create(&events_file).unwrap());
    let written = runnel_connectors::nexmark::write_json_lines(
        &runnel_connectors::nexmark::NexmarkConfig::new(n),
        f,
    )
    .unwrap();
    assert_eq!(written, n);
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let topic = unique("nexmark");
    let o = runnel(&[
        "produce",
        "--bootstrap",
        &bootstrap,
        "--topic",
        &topic,
        "--partitions",
        "3",
        "--generator",
        "nexmark",
        "--events",
        &n.to_string(),
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));

    for q in ["nexmark-q5", "nexmark-q3", "nexmark-q4"] {
        let mut outs = Vec::new();
        let inputs = [
            ("generator", format!("events={n}")),
            ("file", format!("file={}", events_file.display())),
            ("kafka", format!("kafka.bootstrap={bootstrap}")),
        ];
        for (what, input) in &inputs {
            let out = dir.path().join(format!("{q}-{what}.jsonl"));
            let mut args = vec![
                "run".to_string(),
                q.to_string(),
                "--workers".into(),
                "2".into(),
                "--json".into(),
                "--set".into(),
                input.clone(),
                "--set".into(),
                format!("sink=file:{}", out.display()),
            ];
            if *what == "kafka" {
                args.extend(["--set".to_string(), format!("topic={topic}")]);
            }
            let o = runnel(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let s = summary(&o);
            assert_eq!(s["events_in"], n, "{q} on {what}");
            assert_eq!(s["late"], 0, "{q} on {what}");
            // A table's changelog depends on where epochs fell; its final rows do not.
            let rows = if q == "nexmark-q5" {
                sorted_lines(&out)
            } else {
                changelog_rows(&out)
            };
            outs.push((what, rows));
        }
        let (_, want) = &outs[0];
        assert!(want.len() >= 5, "{q}: {} results", want.len());
        for (what, got) in &outs[1..] {
            assert_eq!(got.len(), want.len(), "{q} on {what}: number of results");
            assert!(
                got == want,
                "{q} on {what}: results differ from the generator's"
            );
        }
        eprintln!("{q}: {} results, the same on all three inputs", want.len());
    }
}

/// `runnel bench` prints its figures and a JSON line with them; a paced Nexmark run has
/// latency figures, an unpaced one says there are none.
#[test]
fn runnel_bench_prints_throughput_latency_and_a_json_line() {
    let o = runnel(&[
        "bench",
        "nexmark-q7",
        "--workers",
        "2",
        "--events",
        "300000",
    ]);
    let report = summary(&o);
    assert_eq!(report["job"], "nexmark-q7");
    assert_eq!(report["events"], 300_000);
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["latency_ms"].is_null(), "{report}");
    assert!(stderr(&o).contains("latency: n/a"), "{}", stderr(&o));
    // 20,000 events per second: 60,000 take 3 s of wall time, and event time is wall time.
    let t = Instant::now();
    let o = runnel(&[
        "bench",
        "nexmark-q0",
        "--workers",
        "2",
        "--events",
        "60000",
        "--rate",
        "20000",
    ]);
    let took = t.elapsed();
    let report = summary(&o);
    assert!(took >= Duration::from_millis(2500), "paced: {took:?}");
    let lat = &report["latency_ms"];
    // Every bid is a result (46 in 50 events); each leaves the source when its time comes and
    // reaches the sink within an epoch or so, never seconds later.
    assert_eq!(lat["count"].as_u64().unwrap(), 60_000 / 50 * 46, "{report}");
    assert!(lat["p50"].as_u64().unwrap() < 1_000, "{report}");
    assert!(report["peak_rss_mb"].as_f64().unwrap() > 1.0);
}
