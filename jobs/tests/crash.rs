//! Crash tests: `runnel run` killed with SIGKILL at random moments (before, during and after
//! checkpoints), restarted each time, and finally run to its end. The output must then equal,
//! record for record (as a multiset), the output of a run that never failed, and the
//! brute-force reference.
//!
//! * Kafka: `kafka-w2` reads a million bids (written by the test's own rdkafka producer) from
//!   tansu and writes its windows to a topic in exactly-once mode, on 2 workers and on 2
//!   processes x 2 workers; the test reads the output topic with a plain consumer.
//! * Files: `w2-tumbling` (rate-limited so that the kills land mid-run) writes its windows to a
//!   file; `nexmark-q9`, `nexmark-q4` and `nexmark-q20` (paced, with the generator's own event
//!   times) write their changelogs to a file, which applied in order must give the brute-force
//!   table, each row once. q20's state grows past the size at which it goes into parts of its
//!   own, so its checkpoints are incremental chains (a whole state, then changes).
//!
//! The kill delays come from a seed, printed by each test; `RUNNEL_CRASH_SEED=N` replays them.

#![allow(dead_code)] // the shared Kafka helpers (common/kafka.rs) hold more than these tests use

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runnel_connectors::nexmark::{Auction, Bid, Event, NexmarkConfig};
use runnel_jobs::nexmark::{Q19, Q20, Q4, Q9};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};
use serde::Deserialize;
use serde_json::Value;

include!("common/kafka.rs");
include!("common/runnel.rs");
include!("common/nexmark.rs");

/// The kill delays: `n` of them, from `seed`, between 150 ms and 2.5 s (the first is short, so
/// one kill lands before the first checkpoint).
fn delays(seed: u64, n: usize) -> Vec<Duration> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ms = if i == 0 { 150 } else { 300 + x % 2200 };
            Duration::from_millis(ms)
        })
        .collect()
}

/// How many times a crash test kills its job: 4, or `RUNNEL_CRASH_KILLS` (at least 2; to look
/// for rare failures, more restarts in one test).
fn kills() -> usize {
    std::env::var("RUNNEL_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(4, |n| n.max(2))
}

fn seed() -> u64 {
    let seed = std::env::var("RUNNEL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (RUNNEL_CRASH_SEED={seed} replays the kill delays)");
    seed
}

/// The crash tests run one at a time: each starts several multi-threaded processes (and the
/// Kafka ones a broker) on what may be a 2-core machine. Under that load the first results of
/// one output partition were twice missing from the topic after a run that never failed (in
/// about 50 runs of the 2-process test; the likely cause, found later, was tansu answering
/// ListOffsets(earliest) with a later batch than offset 0, and readers now start at offset 0:
/// 05bce5d): the assertions would catch it again, but the tests should not make it likelier.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`ONE_AT_A_TIME`] for a test (a test that failed while holding it does not stop the
/// others).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long one run may take before the test calls it hung (a whole crash test takes well
/// under a minute on a loaded 2-core machine).
const HUNG_AFTER: Duration = Duration::from_secs(300);

/// Process `i`'s stderr, every run's appended (kept in the state folder, shown on failure).
fn stderr_log(state: &Path, i: usize) -> std::path::PathBuf {
    state.join(format!("stderr-{i}.log"))
}

/// Starts `args` as `processes` processes of 2 workers each (one process: no cluster flags).
fn spawn(args: &[String], processes: usize, hosts: &Path, state: &Path) -> Vec<Child> {
    (0..processes)
        .map(|i| {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(stderr_log(state, i))
                .expect("stderr log");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_runnel"));
            cmd.args(args)
                .args(["--workers", "2", "--json", "--quiet"])
                .env("RUNNEL_STATE_DIR", state)
                // "resuming from checkpoint N" in the log, for the tests to count.
                .env(
                    "RUST_LOG",
                    std::env::var("RUNNEL_CRASH_LOG")
                        .unwrap_or_else(|_| "warn,runnel_engine::runtime=info".into()),
                )
                .stdout(Stdio::piped())
                .stderr(log);
            if processes > 1 {
                cmd.args([
                    "--processes",
                    &processes.to_string(),
                    "--process-id",
                    &i.to_string(),
                    "--hosts",
                    hosts.to_str().expect("utf-8 path"),
                ]);
            }
            cmd.spawn().expect("spawn runnel")
        })
        .collect()
}

/// Waits for `children` (a run's processes) to end; kills them and fails the test, showing
/// their stderr, if they are still running after [`HUNG_AFTER`].
fn wait_all(children: Vec<Child>, state: &Path) -> Vec<Output> {
    let deadline = Instant::now() + HUNG_AFTER;
    let mut children = children;
    while Instant::now() < deadline {
        if children
            .iter_mut()
            .all(|c| c.try_wait().expect("try_wait").is_some())
        {
            return children
                .into_iter()
                .map(|c| c.wait_with_output().expect("wait"))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let logs: Vec<String> = (0..children.len())
        .map(|i| {
            let text = std::fs::read_to_string(stderr_log(state, i)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            format!(
                "process {i}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    panic!(
        "the run was still going after {HUNG_AFTER:?}: hung (killed). Their stderr:\n{}",
        logs.join("\n")
    );
}

/// A run's outcome with its stderr (from its log) for [`summary`]: `o` had none captured.
fn with_stderr(mut o: Output, state: &Path, i: usize) -> Output {
    o.stderr = std::fs::read(stderr_log(state, i)).unwrap_or_default();
    o
}

/// Runs `args` (a `runnel run ...` command line) with SIGKILLs after each of `kills`, then to
/// its end; returns the last run's JSON summaries (one per process). Every process is killed
/// at once, as when a machine dies.
fn run_with_kills(
    args: &[String],
    processes: usize,
    kills: &[Duration],
    state: &Path,
) -> Vec<Value> {
    std::fs::create_dir_all(state).unwrap();
    let hosts = state.join("hosts");
    let mut killed_early = 0;
    for (i, delay) in kills.iter().enumerate() {
        // Fresh ports each time: a killed process's ports may linger.
        let lines: Vec<String> = free_ports(processes)
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        std::fs::write(&hosts, lines.join("\n")).unwrap();
        let mut children = spawn(args, processes, &hosts, state);
        std::thread::sleep(*delay);
        let mut finished = 0;
        for c in &mut children {
            if c.try_wait().expect("try_wait").is_some() {
                finished += 1;
            }
            // SIGKILL (std's kill on Unix); a process that already ended is left alone.
            let _ = c.kill();
        }
        let mut outputs = Vec::new();
        for (p, o) in wait_all(children, state).into_iter().enumerate() {
            let o = with_stderr(o, state, p);
            if o.status.success() {
                killed_early += 1;
            } else if o.status.code().is_some() {
                // It failed on its own rather than being killed: that is a bug.
                panic!(
                    "run {i} failed before the kill: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            outputs.push(o);
        }
        eprintln!("kill {i} after {delay:?} ({finished} process(es) had already ended)");
        if outputs.iter().all(|o| o.status.success()) {
            // The job ran to its end before the kill: it is done (running it again would
            // be a new run, writing its output again).
            eprintln!("run {i} had finished: no more kills");
            return outputs.iter().map(summary).collect();
        }
    }
    assert!(
        kills.is_empty() || killed_early < kills.len() * processes,
        "every run ended before its kill: the kills tested nothing"
    );
    let lines: Vec<String> = free_ports(processes)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    std::fs::write(&hosts, lines.join("\n")).unwrap();
    wait_all(spawn(args, processes, &hosts, state), state)
        .into_iter()
        .enumerate()
        .map(|(p, o)| summary(&with_stderr(o, state, p)))
        .collect()
}

/// For a failure message: each partition of `topic` as read back (the first and last offset
/// and the number of records) and as the broker's ListOffsets answers (earliest, latest), to
/// tell records missing from the topic from records a reader skipped.
fn partition_spans(bootstrap: &str, topic: &str) -> String {
    let mut spans: std::collections::BTreeMap<i32, (i64, i64, u64)> =
        std::collections::BTreeMap::new();
    for r in read_all(bootstrap, topic) {
        let s = spans.entry(r.partition).or_insert((i64::MAX, i64::MIN, 0));
        *s = (s.0.min(r.offset), s.1.max(r.offset), s.2 + 1);
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("test consumer");
    spans
        .iter()
        .map(|(p, (first, last, n))| {
            let listed = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10));
            format!("{topic}/{p}: offsets {first}..={last}, {n} records, ListOffsets {listed:?}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn kafka_crash_test(processes: usize) {
    let _serial = one_at_a_time();
    let n = bids_count();
    let broker = broker();
    let bootstrap = broker.bootstrap.clone();
    let input = unique("crash-in");
    create_topic(&bootstrap, &input, 4);
    produce_bids(&bootstrap, &input, n, 4);
    let expected = reference(n);

    // A run that never fails.
    let clean = unique("crash-clean");
    create_topic(&bootstrap, &clean, 3);
    let dir = tempfile::tempdir().unwrap();
    let args = |output: &str| -> Vec<String> {
        [
            "run",
            "kafka-w2",
            "--set",
            &format!("kafka.bootstrap={bootstrap}"),
            "--set",
            &format!("input={input}"),
            "--set",
            &format!("output={output}"),
            "--checkpoint-every",
            "300ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    run_with_kills(&args(&clean), processes, &[], &dir.path().join("clean"));
    let clean_rows = output_rows(&bootstrap, &clean, 3);
    if clean_rows != expected {
        let got: std::collections::BTreeSet<_> = clean_rows.iter().collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|r| !got.contains(r))
            .take(5)
            .collect();
        panic!(
            "the run that never failed wrote {} results, {} expected; (auction, start, count, \
             max) missing {missing:?}; {}",
            clean_rows.len(),
            expected.len(),
            partition_spans(&bootstrap, &clean)
        );
    }

    // The same, killed several times.
    let out = unique("crash-out");
    create_topic(&bootstrap, &out, 3);
    let kills = delays(seed(), kills());
    let summaries = run_with_kills(&args(&out), processes, &kills, &dir.path().join("killed"));
    let read: u64 = summaries
        .iter()
        .map(|s| s["events_in"].as_u64().unwrap())
        .sum();
    let late: u64 = summaries.iter().map(|s| s["late"].as_u64().unwrap()).sum();
    eprintln!("the last run read {read} of {n} bids ({late} late)");
    let rows = output_rows(&bootstrap, &out, 3);
    if rows != clean_rows {
        let got: std::collections::BTreeSet<_> = rows.iter().collect();
        let want: std::collections::BTreeSet<_> = clean_rows.iter().collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        // Where the differences lie: (window start, output partition) -> rows, to tell one
        // lost batch (one window, one partition) from a wider loss.
        let by_place = |rows: &mut dyn Iterator<Item = &&(u64, i64, u64, u64)>| {
            let mut at: std::collections::BTreeMap<(i64, i32), usize> = Default::default();
            for r in rows {
                *at.entry((r.1, java_partition(r.0.to_string().as_bytes(), 3)))
                    .or_default() += 1;
            }
            at
        };
        let missing_at = by_place(&mut want.difference(&got));
        let extra_at = by_place(&mut got.difference(&want));
        // Kept for a look: the runs' logs and checkpoints.
        let kept = dir.keep();
        let logs: Vec<String> = (0..processes)
            .map(|p| {
                let log = stderr_log(&kept.join("killed"), p);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(80).collect();
                format!(
                    "{} (its last 80 lines):\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!(
            "the output differs from the run that never failed: {} rows against {} ({} \
             written more than once), {} rows differ; (auction, start, count, max) extra \
             {extra:?}, missing {missing:?}; missing by (window start, partition): \
             {missing_at:?}; extra by (window start, partition): {extra_at:?}; {}\n\
             the killed runs' logs (their folder is kept):\n{}",
            rows.len(),
            clean_rows.len(),
            rows.len() - got.len(),
            got.symmetric_difference(&want).count(),
            partition_spans(&bootstrap, &out),
            logs.join("\n")
        );
    }
}

#[test]
fn kafka_output_is_exactly_once_after_sigkills_on_2_workers() {
    kafka_crash_test(1);
}

#[test]
fn kafka_output_is_exactly_once_after_sigkills_on_2_processes() {
    kafka_crash_test(2);
}

/// `w2-tumbling`'s output file rows: (auction, window start, count, max price).
fn file_rows(path: &Path) -> Vec<(u64, i64, u64, u64)> {
    let text = std::fs::read_to_string(path).expect("the output file");
    let mut rows: Vec<(u64, i64, u64, u64)> = text
        .lines()
        .map(|l| {
            let r: Row = serde_json::from_str(l).expect("a JSON row");
            (r.auction, r.window_start, r.count, r.max_price)
        })
        .collect();
    rows.sort_unstable();
    rows
}

#[test]
fn file_output_is_exactly_once_after_sigkills() {
    let _serial = one_at_a_time();
    let n: u64 = 3_000_000;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w2.jsonl");
    let args: Vec<String> = [
        "run",
        "w2-tumbling",
        "--set",
        &format!("events={n}"),
        "--set",
        "rate=1500000",
        "--set",
        &format!("out={}", out.display()),
        "--checkpoint-every",
        "300ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let kills = delays(seed(), kills());
    let summaries = run_with_kills(&args, 1, &kills, &dir.path().join("state"));
    eprintln!(
        "the last run read {} of {n} bids",
        summaries[0]["events_in"].as_u64().unwrap()
    );
    assert_eq!(file_rows(&out), reference(n));
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
}

/// `runnel checkpoints JOB` says what each checkpoint wrote rather than linked: for q19's
/// chains, killed mid-run, each complete checkpoint's `written` is the size of its part files
/// whose inodes the complete checkpoint before it does not have (hard links are the same file),
/// and less than its size; the oldest listed says `-` (what it linked from is gone).
#[test]
fn checkpoints_lists_what_each_checkpoint_wrote() {
    use std::os::unix::fs::MetadataExt;
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "run",
            "nexmark-q19",
            "--workers",
            "2",
            "--set",
            "events=3000000",
            "--set",
            "rate=1000000",
            "--set",
            "wall_clock=false",
            "--checkpoint-every",
            "200ms",
            "--keep-checkpoints",
            "100",
            "--quiet",
        ])
        .env("RUNNEL_STATE_DIR", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let listing = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["checkpoints", "nexmark-q19", "--json"])
        .env("RUNNEL_STATE_DIR", &state)
        .output()
        .expect("runnel checkpoints");
    assert!(listing.status.success(), "{}", stderr(&listing));
    let complete: Vec<Value> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .filter(|e| e["status"] == "complete")
        .collect();
    assert!(complete.len() >= 3, "complete checkpoints: {complete:?}");
    // Each part file's (device, inode) and length.
    let files = |e: &Value| -> BTreeMap<(u64, u64), u64> {
        std::fs::read_dir(e["location"].as_str().unwrap())
            .unwrap()
            .map(|f| f.unwrap())
            .filter(|f| f.file_name().to_string_lossy().starts_with("part-"))
            .map(|f| {
                let m = f.metadata().unwrap();
                ((m.dev(), m.ino()), m.len())
            })
            .collect()
    };
    assert_eq!(complete[0]["written"], "-", "{}", complete[0]);
    let mut linked_some = false;
    for pair in complete.windows(2) {
        let before = files(&pair[0]);
        let now = files(&pair[1]);
        let size: u64 = now.values().sum();
        let new: u64 = now
            .iter()
            .filter(|(inode, _)| !before.contains_key(inode))
            .map(|(_, len)| len)
            .sum();
        assert_eq!(
            pair[1]["bytes"].as_str().unwrap(),
            size.to_string(),
            "{}",
            pair[1]
        );
        assert_eq!(
            pair[1]["written"].as_str().unwrap(),
            new.to_string(),
            "{}",
            pair[1]
        );
        linked_some |= new < size;
    }
    assert!(linked_some, "no checkpoint linked a part: {complete:?}");
}

/// `runnel checkpoints JOB` lists what a killed run left (each checkpoint folder once, complete
/// ones with their epoch and size), and `--from-checkpoint ID` resumes from an older one than
/// the last: the output is still every window once.
#[test]
fn checkpoints_are_listed_and_an_older_one_can_be_chosen() {
    let _serial = one_at_a_time();
    let n: u64 = 3_000_000;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("w2.jsonl");
    let out_set = format!("out={}", out.display());
    let events_set = format!("events={n}");
    let args = [
        "run",
        "w2-tumbling",
        "--set",
        events_set.as_str(),
        "--set",
        "rate=1000000",
        "--set",
        out_set.as_str(),
        "--checkpoint-every",
        "200ms",
        "--keep-checkpoints",
        "5",
        "--quiet",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .env("RUNNEL_STATE_DIR", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let listing = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["checkpoints", "w2-tumbling", "--json"])
        .env("RUNNEL_STATE_DIR", &state)
        .output()
        .expect("runnel checkpoints");
    assert!(listing.status.success(), "{}", stderr(&listing));
    let entries: Vec<Value> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let mut on_disk: Vec<u64> = std::fs::read_dir(state.join("w2-tumbling"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("chk-")?.parse().ok()
        })
        .collect();
    on_disk.sort_unstable();
    let listed: Vec<u64> = entries.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(
        listed, on_disk,
        "every checkpoint folder listed once, oldest first"
    );
    let complete: Vec<u64> = entries
        .iter()
        .filter(|e| e["status"] == "complete")
        .map(|e| {
            assert_eq!(e["epoch"].as_str().unwrap(), e["id"].to_string(), "{e}");
            assert!(
                e["bytes"].as_str().unwrap().parse::<u64>().unwrap() > 0,
                "{e}"
            );
            e["id"].as_u64().unwrap()
        })
        .collect();
    assert!(
        complete.len() >= 2,
        "the run lived long enough: {entries:?}"
    );

    // Resume from the oldest complete checkpoint, not the newest.
    let oldest = complete[0].to_string();
    let mut resume: Vec<&str> = args.to_vec();
    resume.extend(["--from-checkpoint", oldest.as_str(), "--json"]);
    let o = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(&resume)
        .env("RUNNEL_STATE_DIR", &state)
        .output()
        .expect("runnel run");
    let s = summary(&o);
    assert!(s["events_in"].as_u64().unwrap() < n, "{s}");
    assert_eq!(file_rows(&out), reference(n));
}

/// The winning bid of every auction that had a bid while it was open, by brute force over a
/// hash map of bids by auction (q9's rule: highest price, then earliest, then largest bidder).
fn nexmark_winners(events: &[Event]) -> Vec<(Auction, Bid)> {
    let mut by_auction: HashMap<u64, Vec<&Bid>> = HashMap::new();
    for e in events {
        if let Event::Bid(b) = e {
            by_auction.entry(b.auction).or_default().push(b);
        }
    }
    let mut out = Vec::new();
    for e in events {
        let Event::Auction(a) = e else { continue };
        let best = by_auction
            .get(&a.id)
            .into_iter()
            .flatten()
            .filter(|b| a.date_time <= b.date_time && b.date_time <= a.expires)
            .max_by_key(|b| (b.price, std::cmp::Reverse(b.date_time), b.bidder));
        if let Some(b) = best {
            out.push(((**a).clone(), (*b).clone()));
        }
    }
    out
}

/// `runnel run nexmark-<query>` on `n` generated events, paced (with the generator's own event
/// times, so that a resumed run reads the same events), writing its changelog to a file, with
/// checkpoints every 300 ms and SIGKILLs, on `processes` processes of 2 workers; the changelog
/// applied in order must be `want`, each row once. Returns the last run's summaries (one per
/// process).
///
/// On a cluster the input is paced at `n / 6` per second, and the second run lasts at least
/// 3.5 s: a cluster takes longer to start (q20 on two processes committed its first checkpoint
/// about 1.9 s after the start, before 3550e89 made commits cheaper; every change crosses to
/// the file sink's worker, on process 0), and the test must see later runs resume from its
/// checkpoints.
fn nexmark_crash_test(query: &str, n: u64, want: Vec<Value>, processes: usize) -> Vec<Value> {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes.jsonl");
    let args: Vec<String> = [
        "run",
        &format!("nexmark-{query}"),
        "--set",
        &format!("events={n}"),
        "--set",
        &format!("rate={}", pace(n, processes)),
        "--set",
        "wall_clock=false",
        "--set",
        &format!("sink=file:{}", out.display()),
        "--checkpoint-every",
        "300ms",
        // Changes taken at every epoch's end (not every 300 ms, the default, which would be
        // only at the checkpoints): the kills also land while they are written between
        // checkpoints.
        "--changes-every",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut kills = delays(seed(), kills());
    if processes > 1 {
        kills[1] = kills[1].max(Duration::from_millis(3500));
    }
    let state = dir.path().join("state");
    let summaries = run_with_kills(&args, processes, &kills, &state);
    if processes > 1 {
        let log = std::fs::read_to_string(stderr_log(&state, 0)).unwrap_or_default();
        let resumed = log.matches("resuming from checkpoint").count();
        eprintln!("{resumed} run(s) resumed from a checkpoint");
        assert!(
            resumed > 0,
            "no run resumed from a checkpoint: the kills tested nothing. Process 0's stderr:\n{log}"
        );
    }
    let read: u64 = summaries
        .iter()
        .map(|s| s["events_in"].as_u64().unwrap())
        .sum();
    eprintln!("the last run read {read} of {n} events");
    let got = apply_changelog(&out);
    let mut want_rows: BTreeMap<String, i64> = BTreeMap::new();
    for row in want {
        *want_rows.entry(row.to_string()).or_default() += 1;
    }
    assert_eq!(got, want_rows);
    summaries
}

/// The events `nexmark_crash_test` runs on `processes` processes: the generator's with `n`
/// events on one partition per worker, paced at [`pace`], whose event time then advances at
/// that rate.
fn nexmark_events(n: u64, processes: usize) -> Vec<Event> {
    NexmarkConfig::new(n)
        .partitions(2 * processes as u32)
        .event_rate(pace(n, processes))
        .iter()
        .collect()
}

/// The rate `nexmark_crash_test` paces `n` events at: `n / 3` per second, `n / 6` on a
/// cluster.
fn pace(n: u64, processes: usize) -> u64 {
    if processes > 1 {
        n / 6
    } else {
        n / 3
    }
}

#[test]
fn nexmark_q9_changes_are_exactly_once_after_sigkills() {
    let n = 1_200_000;
    let want: Vec<Value> = nexmark_winners(&nexmark_events(n, 1))
        .into_iter()
        .map(|(a, b)| {
            serde_json::to_value(Q9 {
                id: a.id,
                seller: a.seller,
                category: a.category,
                reserve: a.reserve,
                expires: a.expires,
                bidder: b.bidder,
                price: b.price,
                bid_time: b.date_time,
            })
            .unwrap()
        })
        .collect();
    assert!(want.len() > 10_000, "{} auctions with a winner", want.len());
    nexmark_crash_test("q9", n, want, 1);
}

#[test]
fn nexmark_q4_changes_are_exactly_once_after_sigkills() {
    let n = 1_200_000;
    nexmark_crash_test("q4", n, q4_rows(n, 1), 1);
}

/// q4 on two processes: q9's auctions closed by the watermark on each process, then a running
/// average per category on a worker of either, into the file sink on process 0.
#[test]
fn nexmark_q4_changes_are_exactly_once_after_sigkills_on_2_processes() {
    let n = 1_200_000;
    nexmark_crash_test("q4", n, q4_rows(n, 2), 2);
}

/// q4's rows for the first `n` events of [`nexmark_events`] on `processes` processes, by brute
/// force: the average winning price per category (q9's winners).
fn q4_rows(n: u64, processes: usize) -> Vec<Value> {
    let mut per_category: BTreeMap<u64, (u128, u128)> = BTreeMap::new();
    for (a, b) in nexmark_winners(&nexmark_events(n, processes)) {
        let (sum, count) = per_category.entry(a.category).or_default();
        *sum += u128::from(b.price);
        *count += 1;
    }
    let want: Vec<Value> = per_category
        .into_iter()
        .map(|(category, (sum, count))| {
            serde_json::to_value(Q4 {
                category,
                avg_price: (sum / count) as u64,
            })
            .unwrap()
        })
        .collect();
    assert_eq!(want.len(), 5, "categories 10 to 14");
    want
}

/// q20's state (every bid, the category-10 auctions) grows to about 40 MB per worker here,
/// past the 16 MiB from which a state goes into parts of its own: its later checkpoints are
/// chains of a whole state and changes, which the kills land in and restarts restore.
#[test]
fn nexmark_q20_rows_are_exactly_once_after_sigkills() {
    let n = 1_200_000;
    nexmark_crash_test("q20", n, q20_rows(n, 1), 1);
}

/// The same on a cluster of two processes: each worker's part of the chain is written by its
/// own process, and process 0 commits the checkpoint once every worker's parts are durable. q20's
/// state is spread over four workers here, so more events bring it past 16 MiB per worker.
#[test]
fn nexmark_q20_rows_are_exactly_once_after_sigkills_on_2_processes() {
    let n = 2_000_000;
    let summaries = nexmark_crash_test("q20", n, q20_rows(n, 2), 2);
    links_parts(&summaries[0]);
}

/// q19's top tens on two processes, killed: the changelog applied in order is each auction's
/// ten highest bids by brute force (q19's order: the higher price, then the earlier, then the
/// smaller bidder, channel, url and padding), each row once.
#[test]
fn nexmark_q19_top_tens_are_exactly_once_after_sigkills_on_2_processes() {
    let n = 1_200_000;
    let bids = nexmark_events(n, 2).into_iter().filter_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    });
    let want = q19_top_tens(bids)
        .into_iter()
        .map(|row| serde_json::to_value(row).unwrap())
        .collect();
    let summaries = nexmark_crash_test("q19", n, want, 2);
    links_parts(&summaries[0]);
}

/// Process 0's summary of the last run: its checkpoints linked parts (of the checkpoint it
/// resumed from, or of its own earlier ones) rather than writing them again, so they were
/// chains of a whole state and changes (what it wrote is less than their size).
fn links_parts(summary: &Value) {
    let counter = |name: &str| summary["counters"][name].as_u64().unwrap_or(0);
    let (written, full) = (
        counter("checkpoint_bytes"),
        counter("checkpoint_full_bytes"),
    );
    eprintln!("the last run's checkpoints: {written} bytes written, {full} in all");
    assert!(
        written < full,
        "the last run wrote {written} of its checkpoints' {full} bytes: no part was linked"
    );
}

/// q20's rows for the first `n` events of [`nexmark_events`], by brute force: every bid with
/// every category-10 auction of the same id, whichever came first.
fn q20_rows(n: u64, processes: usize) -> Vec<Value> {
    let events = nexmark_events(n, processes);
    let mut auctions: HashMap<u64, Vec<&Auction>> = HashMap::new();
    for e in &events {
        if let Event::Auction(a) = e {
            if a.category == 10 {
                auctions.entry(a.id).or_default().push(a);
            }
        }
    }
    let mut want = Vec::new();
    for e in &events {
        if let Event::Bid(b) = e {
            for a in auctions.get(&b.auction).into_iter().flatten() {
                want.push(
                    serde_json::to_value(Q20 {
                        auction: b.auction,
                        bidder: b.bidder,
                        price: b.price,
                        channel: b.channel.clone(),
                        url: b.url.clone(),
                        bid_date_time: b.date_time,
                        bid_extra: b.extra.clone(),
                        item_name: a.item_name.clone(),
                        description: a.description.clone(),
                        initial_bid: a.initial_bid,
                        reserve: a.reserve,
                        auction_date_time: a.date_time,
                        expires: a.expires,
                        seller: a.seller,
                        category: a.category,
                        auction_extra: a.extra.clone(),
                    })
                    .unwrap(),
                );
            }
        }
    }
    assert!(want.len() > 100_000, "{} rows", want.len());
    want
}
