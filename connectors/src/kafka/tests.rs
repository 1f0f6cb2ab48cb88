//! Unit tests of the Kafka connectors' configuration. The connectors themselves are tested
//! against a real broker and librdkafka's mock cluster in `connectors/tests/kafka_e2e.rs`.

use std::time::Duration;

use super::*;

#[test]
fn durations_parse_with_units_and_round_trip() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
    for bad in [
        "10",
        "s",
        "",
        "1.5s",
        "-1s",
        "10 sec",
        "10S",
        "99999999999999999999h",
    ] {
        let e = parse_duration(bad).unwrap_err();
        assert!(e.contains("cannot parse"), "{bad}: {e}");
    }
    for ms in [
        0u64, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 7_260_000,
    ] {
        let d = Duration::from_millis(ms);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
    }
    assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
}

#[test]
fn source_config_defaults_and_variants() {
    let cfg: KafkaSourceConfig =
        serde_json::from_str(r#"{"kafka": {"bootstrap": "b:9092"}, "topics": ["a", "b"]}"#)
            .unwrap();
    assert_eq!(
        cfg,
        KafkaSourceConfig::new(KafkaConfig::new("b:9092"), ["a", "b"])
    );
    assert_eq!(cfg.start, StartAt::Earliest);
    assert_eq!(cfg.group_id, "runnel");
    assert_eq!(cfg.event_time, EventTimeFrom::KafkaTimestamp);
    assert!(!cfg.stop_at_end);
    assert_eq!(cfg.max_unavailable, Duration::from_secs(60));
    assert_eq!(cfg.kafka.request_timeout, Duration::from_secs(5));
    assert!(cfg.kafka.librdkafka_options.is_empty());

    for (json, start) in [
        (r#""earliest""#, StartAt::Earliest),
        (r#""latest""#, StartAt::Latest),
        (r#""committed""#, StartAt::Committed),
        (r#"{"timestamp": 42}"#, StartAt::Timestamp(42)),
    ] {
        let text = format!(
            r#"{{"kafka": {{"bootstrap": "b:9092"}}, "topics": ["a"], "start": {json},
                "event_time": "job", "stop_at_end": true, "max_unavailable": "5s"}}"#
        );
        let cfg: KafkaSourceConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(cfg.start, start);
        assert_eq!(cfg.event_time, EventTimeFrom::Job);
        assert!(cfg.stop_at_end);
        assert_eq!(cfg.max_unavailable, Duration::from_secs(5));
        // Serialising gives back what was read.
        let again: KafkaSourceConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
    }
}

#[test]
fn unknown_fields_and_bad_values_are_rejected_with_their_names() {
    let cases = [
        (
            r#"{"kafka": {"bootstrap": "b"}, "topics": ["a"], "strat": "latest"}"#,
            "strat",
        ),
        (
            r#"{"kafka": {"bootstrap": "b", "timeout": "1s"}, "topics": ["a"]}"#,
            "timeout",
        ),
        (
            r#"{"kafka": {"bootstrap": "b"}, "topics": ["a"], "start": "oldest"}"#,
            "oldest",
        ),
        (
            r#"{"kafka": {"bootstrap": "b", "request_timeout": "10"}, "topics": ["a"]}"#,
            "unit",
        ),
        (r#"{"topics": ["a"]}"#, "kafka"),
    ];
    for (json, needle) in cases {
        let e = serde_json::from_str::<KafkaSourceConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{json}: {e}");
    }
    let e = serde_json::from_str::<KafkaSinkConfig>(
        r#"{"kafka": {"bootstrap": "b"}, "topic": "t", "acks": "some"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("some"), "{e}");
}

#[test]
fn validation_names_what_is_wrong() {
    let ok = KafkaSourceConfig::new(KafkaConfig::new("b:9092"), ["a"]);
    assert_eq!(ok.validate(), Ok(()));
    let no_topics = KafkaSourceConfig::new(KafkaConfig::new("b:9092"), Vec::<String>::new());
    assert!(no_topics.validate().unwrap_err().contains("no topics"));
    let empty_topic = KafkaSourceConfig::new(KafkaConfig::new("b:9092"), [" "]);
    assert!(empty_topic.validate().unwrap_err().contains("empty"));
    let no_bootstrap = KafkaSourceConfig::new(KafkaConfig::new(""), ["a"]);
    assert!(no_bootstrap.validate().unwrap_err().contains("bootstrap"));

    let mut sink = KafkaSinkConfig::new(KafkaConfig::new("b:9092"), "t");
    assert_eq!(sink.validate(), Ok(()));
    sink.acks = Acks::Leader;
    assert!(sink.validate().unwrap_err().contains("idempotent"));
    sink.idempotence = false;
    assert_eq!(sink.validate(), Ok(()));
}

#[test]
fn sink_settings_become_librdkafka_options_and_passthrough_wins() {
    let kafka = KafkaConfig::new("b:9092")
        .option("security.protocol", "sasl_ssl")
        .option("linger.ms", "50");
    let sink: KafkaSinkConfig = serde_json::from_str(
        r#"{"kafka": {"bootstrap": "b:9092", "librdkafka_options":
              {"security.protocol": "sasl_ssl", "linger.ms": "50"}},
            "topic": "out", "linger": "20ms", "batch_records": 500}"#,
    )
    .unwrap();
    assert_eq!(sink.kafka, kafka);
    let defaults = sink.producer_defaults();
    let get = |k: &str| {
        defaults
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("enable.idempotence").as_deref(), Some("true"));
    assert_eq!(get("acks").as_deref(), Some("all"));
    assert_eq!(get("linger.ms").as_deref(), Some("20"));
    assert_eq!(get("batch.num.messages").as_deref(), Some("500"));
    assert_eq!(get("message.timeout.ms").as_deref(), Some("60000"));
    assert_eq!(get("partitioner").as_deref(), Some("murmur2_random"));
    let client = sink.kafka.client_config(&defaults);
    assert_eq!(client.get("bootstrap.servers"), Some("b:9092"));
    assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
    // The passthrough map is applied last.
    assert_eq!(client.get("linger.ms"), Some("50"));
}

#[test]
fn builders_set_the_config() {
    let src = KafkaSource::json::<serde_json::Value>(KafkaConfig::new("b:9092"), ["x"])
        .start(StartAt::Timestamp(7))
        .group_id("g")
        .event_time(EventTimeFrom::Job)
        .stop_at_end()
        .max_unavailable(Duration::from_secs(3));
    let c = src.config();
    assert_eq!(
        (c.start, c.group_id.as_str(), c.event_time, c.stop_at_end),
        (StartAt::Timestamp(7), "g", EventTimeFrom::Job, true)
    );
    assert_eq!(c.max_unavailable, Duration::from_secs(3));
    let sink = KafkaSink::<u64>::json(KafkaConfig::new("b:9092"), "y")
        .idempotence(false)
        .linger(Duration::from_millis(1))
        .key(|x: &u64| Some(x.to_string()));
    assert!(!sink.config().idempotence);
    assert_eq!(sink.config().linger, Duration::from_millis(1));
}

#[test]
fn connectors_can_be_built_once_and_cloned_into_a_jobs_build_function() {
    // A job's build function must be Send + Sync; connectors made outside it are cloned in.
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<KafkaSource<u64>>();
    shareable::<KafkaSink<u64>>();
    shareable::<KafkaSourceConfig>();
}

/// Java's `String.hashCode`, from values worked out by hand (`"abc"`: 97·31² + 98·31 + 99) and
/// its wrap-around on long names; and Flink's assignment built on it spreads a topic's
/// partitions round-robin.
#[test]
fn partition_owners_follow_flinks_assignment() {
    use super::source::{java_hash, topic_start};
    assert_eq!(java_hash(""), 0);
    assert_eq!(java_hash("abc"), 96_354);
    // 31^6 overflows i32: compute the wrapped value with i64 arithmetic and truncate.
    let long = "orders-2026";
    let by_hand = long
        .encode_utf16()
        .fold(0i64, |h, u| (h * 31 + u as i64) & 0xFFFF_FFFF);
    assert_eq!(java_hash(long), by_hand as u32 as i32);
    // "abc": (96354 * 31) & 0x7FFFFFFF = 2_986_974; on 4 workers it starts at 2.
    assert_eq!(topic_start("abc", 4), 2_986_974 % 4);
    let source = KafkaSource::json::<u64>(KafkaConfig::new("127.0.0.1:9"), ["abc"]);
    let owners: Vec<usize> = (0..6)
        .map(|p| runnel_engine::Source::owner(&source, &format!("abc/{p}"), 0, 4))
        .collect();
    assert_eq!(owners, vec![2, 3, 0, 1, 2, 3]);
}
