//! The Kafka sink's transactional mode ([`KafkaSink::transactional`]) on librdkafka's mock
//! cluster, which implements the transaction protocol (tansu, the broker of the other tests,
//! does not). This checks the call sequence the sink makes (init, begin, send, commit per
//! checkpoint), that results appear only when their checkpoint is complete, that a restart
//! writes each result once, that retriable coordinator errors are retried and fatal ones
//! (a fenced producer, a refused transactional id) fail loudly, naming the sink.
//!
//! It is not a test against a real transactional broker. librdkafka's mock cluster speaks the
//! protocol but neither hides open or aborted transactions from `read_committed` consumers
//! nor fences an older producer when a new one initialises the same transactional id (it hands
//! out a new producer id instead); those two properties are injected as errors or left
//! unverified here.
//!
//! The sink is driven by hand through the [`Sink`] trait, the way the engine drives it
//! (write, snapshot at a checkpoint, checkpoint committed), so each step can be observed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use runnel_connectors::kafka::{KafkaConfig, KafkaSink};
use runnel_engine::{Epoch, Event, Metrics, Sink, SinkContext};

const TOPIC: &str = "txn-out";
const PARTITIONS: i32 = 2;

/// The values in `TOPIC`, read from the beginning to the end of every partition with the
/// given isolation level, sorted.
fn read_values(bootstrap: &str, isolation: &str) -> Vec<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "txn-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut values = Vec::new();
    let mut ended = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ended.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "reading {TOPIC} timed out");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                ended.remove(&m.partition());
                let v = std::str::from_utf8(m.payload().expect("value")).unwrap();
                values.push(v.parse::<u64>().expect("a number"));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("reading {TOPIC}: {e}"),
            None => {}
        }
    }
    values.sort_unstable();
    values
}

fn context(metrics: &Arc<Metrics>) -> SinkContext {
    SinkContext {
        name: "out".to_string(),
        worker: 0,
        workers: 1,
        metrics: metrics.clone(),
        checkpoints: true,
    }
}

fn sink(bootstrap: &str) -> KafkaSink<String> {
    KafkaSink::strings(KafkaConfig::new(bootstrap), TOPIC)
        .transactional("runnel-test")
        .key(|v: &String| Some(v.clone()))
}

fn records(range: std::ops::Range<u64>) -> Vec<Event<String>> {
    range.map(|i| Event::new(i as i64, i.to_string())).collect()
}

#[test]
fn each_checkpoint_is_one_transaction_and_a_restart_writes_each_result_once() {
    let mock = MockCluster::new(3).expect("mock cluster");
    let bootstrap = mock.bootstrap_servers();
    mock.create_topic(TOPIC, PARTITIONS, 3).expect("topic");

    // Instance A: two checkpoints' worth of results.
    let metrics_a = Arc::new(Metrics::default());
    let mut a = sink(&bootstrap);
    a.open(&context(&metrics_a)).expect("open A");
    a.write(Epoch(1), &mut records(0..100)).unwrap();
    a.epoch_done(Epoch(1)).unwrap();
    let _state1 = a.snapshot(Epoch(1)).unwrap().expect("exactly-once state");
    // Held until the checkpoint is complete: nothing in the topic, committed or not.
    assert!(read_values(&bootstrap, "read_uncommitted").is_empty());
    a.checkpoint_committed(1).unwrap();
    assert_eq!(
        read_values(&bootstrap, "read_committed"),
        (0..100).collect::<Vec<_>>()
    );
    let committed = |m: &Metrics| {
        m.counters()
            .get("out.kafka.transactions")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(committed(&metrics_a), 1);

    // A coordinator that is busy twice: librdkafka retries the commit, which lands once.
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        ],
    );
    a.write(Epoch(2), &mut records(100..150)).unwrap();
    let _ = a.snapshot(Epoch(2)).unwrap();
    a.checkpoint_committed(2).expect("commit after retries");
    assert_eq!(committed(&metrics_a), 2);
    assert_eq!(
        read_values(&bootstrap, "read_committed"),
        (0..150).collect::<Vec<_>>()
    );

    // A "crashes" after checkpoint 3 is complete and before it wrote checkpoint 3's results.
    a.write(Epoch(3), &mut records(150..200)).unwrap();
    let state3 = a.snapshot(Epoch(3)).unwrap().expect("state");
    drop(a);

    // Instance B restores checkpoint 3: it finds checkpoints 1 and 2 already written, and
    // writes checkpoint 3's results in one transaction.
    let metrics_b = Arc::new(Metrics::default());
    let mut b = sink(&bootstrap);
    b.restore(&state3).unwrap();
    b.open(&context(&metrics_b)).expect("open B");
    assert_eq!(
        read_values(&bootstrap, "read_committed"),
        (0..200).collect::<Vec<_>>(),
        "every result once"
    );
    assert_eq!(committed(&metrics_b), 1);
    drop(b);

    // Restored again from the same checkpoint: everything is written, so no transaction;
    // then it goes on with the next checkpoint.
    let metrics_c = Arc::new(Metrics::default());
    let mut c = sink(&bootstrap);
    c.restore(&state3).unwrap();
    c.open(&context(&metrics_c)).expect("open C");
    assert_eq!(committed(&metrics_c), 0);
    c.write(Epoch(4), &mut records(200..250)).unwrap();
    let _ = c.snapshot(Epoch(4)).unwrap();
    c.checkpoint_committed(4).unwrap();
    assert_eq!(committed(&metrics_c), 1);
    assert_eq!(
        read_values(&bootstrap, "read_committed"),
        (0..250).collect::<Vec<_>>()
    );

    // A coordinator that says this producer was fenced off (another instance with its
    // transactional.id started): the commit fails, and with it the job, naming the sink.
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    c.write(Epoch(5), &mut records(250..260)).unwrap();
    let _ = c.snapshot(Epoch(5)).unwrap();
    let err = c
        .checkpoint_committed(5)
        .expect_err("a fenced producer cannot commit")
        .to_string();
    eprintln!("fenced: {err}");
    assert!(err.contains("'out'"), "{err}");
    assert!(err.contains("commit a Kafka transaction"), "{err}");
    assert_eq!(committed(&metrics_c), 1);
}

/// A cluster that refuses transactions: opening the sink fails with an error that says so.
#[test]
fn a_cluster_that_refuses_transactions_fails_at_open() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("topic");
    mock.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED],
    );
    let mut s = sink(&mock.bootstrap_servers());
    let err = s
        .open(&context(&Arc::new(Metrics::default())))
        .unwrap_err()
        .to_string();
    eprintln!("refused: {err}");
    assert!(err.contains("cannot start Kafka transactions"), "{err}");
    assert!(err.contains("'out'"), "{err}");
}

#[test]
fn a_cluster_without_transactions_is_a_clear_error_and_bad_settings_are_refused() {
    // Transactions need the idempotent producer.
    let mut s = KafkaSink::<String>::strings(KafkaConfig::new("127.0.0.1:1"), TOPIC)
        .transactional("x")
        .idempotence(false);
    let err = s
        .open(&context(&Arc::new(Metrics::default())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("idempotent"), "{err}");
    // And checkpoints.
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("topic");
    let mut s = sink(&mock.bootstrap_servers());
    let mut ctx = context(&Arc::new(Metrics::default()));
    ctx.checkpoints = false;
    let err = s.open(&ctx).unwrap_err().to_string();
    assert!(err.contains("checkpoints"), "{err}");
}
