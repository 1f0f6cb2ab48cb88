//! Checkpoints in one process: a windowed job stopped midway resumes from its last complete
//! checkpoint and ends with the output an uninterrupted run gives (each window once), which the
//! test checks against the generator's formulas; a changed job keeps the state it can read and
//! refuses, naming the operator, the state it cannot.
//!
//! (The crash tests, with real processes killed by SIGKILL, are in `jobs/tests/`.)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_connectors::{Bid, BidGenerator, FileSink};
use runnel_engine::checkpoint::{CheckpointStore, LocalDirStore};
use runnel_engine::{run, CheckpointOptions, Error, Job, Restore, RunOptions, SourceOptions};
use runnel_operators::prelude::*;

const EVENTS: u64 = 120_000;
const WINDOW_MS: u64 = 1_000;

/// Per auction, bids and max price per 1 s window, to a sorted JSON-lines file. `variant`
/// changes the window's aggregate (a different state type) for the incompatible-job test.
fn job(out: &Path, rate: u64, variant: bool) -> Job {
    job_on(out, rate, variant, 4)
}

/// [`job`] with its bids in `partitions` partitions.
fn job_on(out: &Path, rate: u64, variant: bool, partitions: u32) -> Job {
    let out = out.to_path_buf();
    Job::new("ckpt", "windows with checkpoints", move |flow| {
        let bids = flow.source(
            "bids",
            BidGenerator::new(EVENTS).partitions(partitions).rate(rate),
            SourceOptions::new(),
        )?;
        let keyed = bids.key_by(|b: &Bid| b.auction);
        let window = keyed
            .window(Tumbling::of(Duration::from_millis(WINDOW_MS)))
            .named("per-auction");
        if variant {
            window
                .aggregate(Count)?
                .map(|r| (r.key, r.start, r.value, 0u64))
                .sink("out", FileSink::json(&out).sorted())
        } else {
            window
                .aggregate((Count, Max::of(|b: &Bid| b.price)))?
                .map(|r| (r.key, r.start, r.value.0, r.value.1))
                .sink("out", FileSink::json(&out).sorted())
        }
    })
}

/// The expected lines, from the generator's formulas: `[auction, start, count, max]`.
fn expected() -> Vec<(u64, i64, u64, u64)> {
    let mut m: BTreeMap<(u64, i64), (u64, u64)> = BTreeMap::new();
    for seq in 0..EVENTS {
        let b = Bid::at(seq);
        let start = b.event_time_ms - b.event_time_ms.rem_euclid(WINDOW_MS as i64);
        let e = m.entry((b.auction, start)).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(b.price);
    }
    m.into_iter().map(|((a, s), (c, x))| (a, s, c, x)).collect()
}

fn read_lines(path: &Path) -> Vec<(u64, i64, u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut v: Vec<(u64, i64, u64, u64)> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    v.sort();
    v
}

fn options(store: &Arc<LocalDirStore>, restore: Restore) -> RunOptions {
    options_on(store.clone(), restore)
}

/// [`options`] with any store.
fn options_on(store: Arc<dyn CheckpointStore>, restore: Restore) -> RunOptions {
    RunOptions {
        workers: 2,
        epoch_interval: Duration::from_millis(10),
        checkpoint: Some(CheckpointOptions {
            store,
            every: Duration::from_millis(50),
            keep: 2,
            restore,
            stream_above: runnel_engine::recovery::STREAM_STATE_ABOVE,
            incremental: true,
            changes_every: runnel_engine::recovery::CHANGES_EVERY,
        }),
        ..Default::default()
    }
}

/// Runs `job` until checkpoint `n` or later is complete, then stops it (Ctrl-C).
fn run_until_checkpoint(job: &Job, opts: RunOptions, store: &Arc<LocalDirStore>, n: usize) {
    let stop = opts.stop.clone();
    let store2 = store.clone();
    let watcher = std::thread::spawn(move || {
        let t = Instant::now();
        while store2.list().map(|l| l.len()).unwrap_or(0) < n {
            assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
    });
    run(job, opts).expect("the first run");
    watcher.join().unwrap();
}

#[test]
fn a_stopped_job_resumes_from_its_checkpoint_with_each_result_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt").unwrap());
    let out = dir.path().join("out.jsonl");
    // 120k events at 100k/s: the first run is stopped well before the end.
    let j = job(&out, 100_000, false);
    run_until_checkpoint(&j, options(&store, Restore::Latest), &store, 2);
    assert!(!out.exists(), "a suspended run writes no output file");
    let resumed_from = store.latest().unwrap().expect("a checkpoint").epoch;
    assert!(resumed_from > 0);

    let summary = run(&j, options(&store, Restore::Latest)).expect("the resumed run");
    assert!(
        summary.events_in < EVENTS,
        "the resumed run reads only what comes after the checkpoint ({} of {EVENTS})",
        summary.events_in
    );
    assert_eq!(read_lines(&out), expected());
}

/// One partition on two workers: worker 1's source has nothing to read and ends at once.
/// Its last state stands in the checkpoints worker 0 goes on taking, so they complete while
/// the job runs (not only at its end), and a stopped run resumes from one with each result
/// once.
#[test]
fn checkpoints_complete_while_a_worker_whose_source_ended_waits_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt").unwrap());
    let out = dir.path().join("out.jsonl");
    let j = job_on(&out, 100_000, false, 1);
    run_until_checkpoint(&j, options(&store, Restore::Latest), &store, 2);
    assert!(!out.exists(), "a suspended run writes no output file");
    let resumed_from = store.latest().unwrap().expect("a checkpoint").epoch;
    assert!(resumed_from > 0 && resumed_from < runnel_engine::recovery::FINAL);

    let summary = run(&j, options(&store, Restore::Latest)).expect("the resumed run");
    assert!(
        summary.events_in > 0 && summary.events_in < EVENTS,
        "the resumed run reads what comes after the checkpoint ({} of {EVENTS})",
        summary.events_in
    );
    assert_eq!(read_lines(&out), expected());
}

#[test]
fn fresh_ignores_checkpoints_and_a_changed_state_type_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt").unwrap());
    let out = dir.path().join("out.jsonl");
    run_until_checkpoint(
        &job(&out, 100_000, false),
        options(&store, Restore::Latest),
        &store,
        1,
    );

    // The window's aggregate changed: its state cannot be read.
    let err = run(&job(&out, 0, true), options(&store, Restore::Latest)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidJob { .. }), "{text}");
    assert!(text.contains("'per-auction'"), "names the operator: {text}");

    // --fresh: starts over and reads everything.
    let summary = run(&job(&out, 0, true), options(&store, Restore::Fresh)).unwrap();
    assert_eq!(summary.events_in, EVENTS);
    let counts: Vec<(u64, i64, u64)> = expected()
        .into_iter()
        .map(|(a, s, c, _)| (a, s, c))
        .collect();
    let got: Vec<(u64, i64, u64)> = read_lines(&out)
        .into_iter()
        .map(|(a, s, c, _)| (a, s, c))
        .collect();
    assert_eq!(got, counts);
}

#[test]
fn a_missing_checkpoint_id_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt").unwrap());
    let out = dir.path().join("out.jsonl");
    let err = run(&job(&out, 0, false), options(&store, Restore::Id(12345))).unwrap_err();
    assert!(err.to_string().contains("12345"), "{err}");
}

/// A job that gained an operator (a second sink on a new branch) resumes: the window keeps its
/// state (its name and state type match), the new operator starts empty.
#[test]
fn a_job_with_a_new_operator_keeps_the_state_it_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt").unwrap());
    let out = dir.path().join("out.jsonl");
    run_until_checkpoint(
        &job(&out, 100_000, false),
        options(&store, Restore::Latest),
        &store,
        2,
    );
    let extra = dir.path().join("extra.jsonl");
    let (o, x) = (out.clone(), extra.clone());
    let grown = Job::new(
        "ckpt",
        "windows with checkpoints, and a new branch",
        move |flow| {
            let bids = flow.source(
                "bids",
                BidGenerator::new(EVENTS).partitions(4).rate(0),
                SourceOptions::new(),
            )?;
            bids.filter(|b: &Bid| b.seq.is_multiple_of(1000))
                .map(|b: Bid| b.seq)
                .sink("new-sink", FileSink::json(&x).sorted())?;
            bids.key_by(|b: &Bid| b.auction)
                .window(Tumbling::of(Duration::from_millis(WINDOW_MS)))
                .named("per-auction")
                .aggregate((Count, Max::of(|b: &Bid| b.price)))?
                .map(|r| (r.key, r.start, r.value.0, r.value.1))
                .sink("out", FileSink::json(&o).sorted())
        },
    );
    let summary = run(&grown, options(&store, Restore::Latest)).expect("the grown job resumes");
    assert!(
        summary.events_in < EVENTS,
        "it resumed ({})",
        summary.events_in
    );
    // The window's results are whole: its state came back.
    assert_eq!(read_lines(&out), expected());
    // The new branch saw only what came after the checkpoint.
    let new_lines = std::fs::read_to_string(&extra).unwrap().lines().count() as u64;
    assert!(new_lines < EVENTS / 1000, "{new_lines}");
}

/// Bids with `seq % 8 == 0` joined with bids with `seq % 8 == 1` on `auction % 25` in 1 s
/// windows, every pair to a sorted file as `[key, start, left seq, right seq]`.
fn join_job(out: &Path, rate: u64) -> Job {
    let out = out.to_path_buf();
    Job::new("ckpt-join", "a window join with checkpoints", move |flow| {
        let bids = flow.source(
            "bids",
            BidGenerator::new(EVENTS).partitions(4).rate(rate),
            SourceOptions::new(),
        )?;
        let left = bids.filter(|b| b.seq % 8 == 0).key_by(|b| b.auction % 25);
        let right = bids.filter(|b| b.seq % 8 == 1).key_by(|b| b.auction % 25);
        left.window_join_named("pairs", &right, Duration::from_millis(WINDOW_MS))?
            .map(|j| (j.key, j.start, j.left.seq, j.right.seq))
            .sink("out", FileSink::json(&out).sorted())
    })
}

/// The pairs `join_job` must write, by brute force over the generator's formulas.
fn expected_pairs() -> Vec<(u64, i64, u64, u64)> {
    let window = |b: &Bid| b.event_time_ms - b.event_time_ms.rem_euclid(WINDOW_MS as i64);
    let mut by_window: BTreeMap<i64, Vec<Bid>> = BTreeMap::new();
    for b in (0..EVENTS).map(Bid::at) {
        by_window.entry(window(&b)).or_default().push(b);
    }
    let mut pairs = Vec::new();
    for (start, bids) in &by_window {
        for l in bids.iter().filter(|b| b.seq % 8 == 0) {
            for r in bids.iter().filter(|b| b.seq % 8 == 1) {
                if l.auction % 25 == r.auction % 25 {
                    pairs.push((l.auction % 25, *start, l.seq, r.seq));
                }
            }
        }
    }
    pairs.sort();
    pairs
}

#[test]
fn a_stopped_window_join_resumes_with_each_pair_once() {
    let want = expected_pairs();
    assert!(want.len() > 10_000, "{} pairs", want.len());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt-join").unwrap());
    let out = dir.path().join("out.jsonl");
    let j = join_job(&out, 100_000);
    run_until_checkpoint(&j, options(&store, Restore::Latest), &store, 2);
    assert!(!out.exists(), "a suspended run writes no output file");
    let resumed_from = store.latest().unwrap().expect("a checkpoint").epoch;
    assert!(resumed_from > 0);

    // The checkpoint holds open windows with records of one side whose partners come later:
    // only restored join state pairs them.
    let summary = run(&j, options(&store, Restore::Latest)).expect("the resumed run");
    assert!(summary.events_in < EVENTS, "{} events", summary.events_in);
    let got = read_lines(&out);
    let missing: Vec<_> = want
        .iter()
        .filter(|p| got.binary_search(p).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} pairs missing, first {:?}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(got.len(), want.len(), "pairs written more than once");
}

const SESSION_GAP_MS: i64 = 2_000;
const BURST: u64 = 100;

/// Sessions with a 2 s gap of keys that each come in one burst of 100 consecutive bids and
/// never again (`seq / 100`): at any moment about 20 keys have an open session that no later
/// record touches, so a resumed run must close them from its restored state alone.
/// `[key, start, end, count]`.
fn session_job(out: &Path, rate: u64) -> Job {
    let out = out.to_path_buf();
    Job::new("ckpt-sessions", "sessions with checkpoints", move |flow| {
        flow.source(
            "bids",
            BidGenerator::new(EVENTS).partitions(4).rate(rate),
            SourceOptions::new(),
        )?
        .key_by(|b: &Bid| b.seq / BURST)
        .window(Session::with_gap(Duration::from_millis(
            SESSION_GAP_MS as u64,
        )))
        .named("sessions")
        .aggregate(Count)?
        .map(|r| (r.key, r.start, r.end, r.value))
        .sink("out", FileSink::json(&out).sorted())
    })
}

/// The sessions from the generator's formulas: a key's next bid at or after its last one plus
/// the gap starts a new session.
fn expected_sessions() -> Vec<(u64, i64, i64, u64)> {
    let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for seq in 0..EVENTS {
        let b = Bid::at(seq);
        times
            .entry(b.seq / BURST)
            .or_default()
            .push(b.event_time_ms);
    }
    let mut out = Vec::new();
    for (k, mut ts) in times {
        ts.sort();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0u64);
        for t in ts {
            if t >= last + SESSION_GAP_MS {
                out.push((k, start, last + SESSION_GAP_MS, n));
                (start, n) = (t, 0);
            }
            last = t;
            n += 1;
        }
        out.push((k, start, last + SESSION_GAP_MS, n));
    }
    out.sort();
    out
}

/// Session windows keep their timers outside the checkpoint and rebuild them on restore: a
/// resumed run still closes every session, once, those no later record touches included.
#[test]
fn a_stopped_session_job_resumes_with_each_session_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt-sessions").unwrap());
    let out = dir.path().join("out.jsonl");
    let j = session_job(&out, 100_000);
    run_until_checkpoint(&j, options(&store, Restore::Latest), &store, 2);
    let resumed_from = store.latest().unwrap().expect("a checkpoint").epoch;
    assert!(resumed_from > 0);
    let summary = run(&j, options(&store, Restore::Latest)).expect("the resumed run");
    assert!(summary.events_in < EVENTS);
    let mut got: Vec<(u64, i64, i64, u64)> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    got.sort();
    let want = expected_sessions();
    let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && got.len() == want.len(),
        "{} sessions, {} expected; missing (first 5): {missing:?}; unexpected: {extra:?}",
        got.len(),
        want.len()
    );
}

/// Updating windows (`aggregate_updating`) of 60 s per auction, so that the checkpoint holds
/// windows part-way: `[auction, start, count, max]` upserts, to a sorted file.
fn updating_job(out: &Path, rate: u64) -> Job {
    let out = out.to_path_buf();
    Job::new(
        "ckpt-updating",
        "updating windows with checkpoints",
        move |flow| {
            flow.source(
                "bids",
                BidGenerator::new(EVENTS).partitions(4).rate(rate),
                SourceOptions::new(),
            )?
            .key_by(|b: &Bid| b.auction)
            .window(Tumbling::of(Duration::from_secs(60)))
            .named("running")
            .aggregate_updating((Count, Max::of(|b: &Bid| b.price)))?
            .map(|r| (r.key, r.start, r.value.0, r.value.1))
            .sink("out", FileSink::json(&out).sorted())
        },
    )
}

/// An updating window's state survives a stop and a resume: every key's last row (the one
/// with the highest count, as counts only grow) is its window over all the bids, from the
/// generator's formulas, and no row comes twice (a replayed epoch is not written again).
#[test]
fn a_stopped_updating_job_resumes_with_its_running_results() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("state"), "ckpt-updating").unwrap());
    let out = dir.path().join("out.jsonl");
    let j = updating_job(&out, 100_000);
    run_until_checkpoint(&j, options(&store, Restore::Latest), &store, 2);
    assert!(store.latest().unwrap().expect("a checkpoint").epoch > 0);
    let summary = run(&j, options(&store, Restore::Latest)).expect("the resumed run");
    assert!(summary.events_in < EVENTS);
    let rows = read_lines(&out);
    let mut last: BTreeMap<(u64, i64), (u64, u64)> = BTreeMap::new();
    for w in rows.windows(2) {
        assert_ne!(w[0], w[1], "a row written twice");
    }
    for &(a, s, count, max) in &rows {
        let e = last.entry((a, s)).or_insert((count, max));
        if count > e.0 {
            *e = (count, max);
        }
    }
    assert!(
        rows.len() > last.len(),
        "rows are updated, not written once"
    );
    let mut want: BTreeMap<(u64, i64), (u64, u64)> = BTreeMap::new();
    for seq in 0..EVENTS {
        let b = Bid::at(seq);
        let e = want
            .entry((
                b.auction,
                b.event_time_ms - b.event_time_ms.rem_euclid(60_000),
            ))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(b.price);
    }
    assert_eq!(last, want);
}

/// A store whose writes of a part fail from checkpoint `fail_from` on, as a full disk's would;
/// everything else is the local folder's.
#[derive(Debug)]
struct FailingStore {
    inner: LocalDirStore,
    fail_from: u64,
}

impl CheckpointStore for FailingStore {
    fn write_part(
        &self,
        id: u64,
        part: &str,
        bytes: &[u8],
    ) -> runnel_engine::Result<runnel_engine::PartInfo> {
        if id >= self.fail_from {
            return Err(Error::Io {
                path: format!("chk-{id}/part-{part}.bin").into(),
                source: std::io::Error::other("no space left on the test's device"),
            });
        }
        self.inner.write_part(id, part, bytes)
    }
    fn has_part(&self, id: u64, part: &str) -> bool {
        self.inner.has_part(id, part)
    }
    fn part_names(&self, id: u64) -> runnel_engine::Result<Vec<String>> {
        self.inner.part_names(id)
    }
    fn commit(
        &self,
        id: u64,
        epoch: u64,
        parts: &[String],
        meta: BTreeMap<String, String>,
    ) -> runnel_engine::Result<runnel_engine::CheckpointInfo> {
        self.inner.commit(id, epoch, parts, meta)
    }
    fn list(&self) -> runnel_engine::Result<Vec<runnel_engine::CheckpointInfo>> {
        self.inner.list()
    }
    fn latest(&self) -> runnel_engine::Result<Option<runnel_engine::CheckpointInfo>> {
        self.inner.latest()
    }
    fn newest_complete_id(&self) -> runnel_engine::Result<Option<u64>> {
        self.inner.newest_complete_id()
    }
    fn get(&self, id: u64) -> runnel_engine::Result<runnel_engine::CheckpointInfo> {
        self.inner.get(id)
    }
    fn read_part(&self, id: u64, part: &str) -> runnel_engine::Result<Vec<u8>> {
        self.inner.read_part(id, part)
    }
    fn retain(&self, keep: usize) -> runnel_engine::Result<()> {
        self.inner.retain(keep)
    }
    fn clear(&self) -> runnel_engine::Result<()> {
        self.inner.clear()
    }
    fn scan(&self) -> runnel_engine::Result<Vec<runnel_engine::checkpoint::CheckpointEntry>> {
        self.inner.scan()
    }
    fn next_id(&self) -> runnel_engine::Result<u64> {
        self.inner.next_id()
    }
    fn discard(&self, id: u64) -> runnel_engine::Result<()> {
        self.inner.discard(id)
    }
    fn discard_after(&self, id: Option<u64>) -> runnel_engine::Result<()> {
        self.inner.discard_after(id)
    }
}

#[test]
fn a_checkpoint_part_that_cannot_be_written_fails_the_run_with_the_stores_error() {
    // Parts are written off the workers' threads: the error must still end the run, naming
    // the file, rather than leave checkpoints that never complete.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let store = Arc::new(FailingStore {
        inner: LocalDirStore::new(dir.path().join("state"), "ckpt").unwrap(),
        fail_from: 2,
    });
    let opts = options_on(store.clone(), Restore::Fresh);
    let err = run(&job(&out, 100_000, false), opts).expect_err("the run fails");
    let msg = err.to_string();
    assert!(
        msg.contains("no space left on the test's device") && msg.contains("part-w"),
        "the run failed with: {msg}"
    );
    // The first checkpoint was written and committed; none after it.
    let ids: Vec<u64> = store.list().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![1]);
}
