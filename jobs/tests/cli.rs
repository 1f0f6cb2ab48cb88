//! End-to-end tests of the `runnel` binary: real processes, real files, real TCP between
//! processes. Every result is checked against a reference computed here, from the generator's
//! formulas or by brute force over the input, not by the engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runnel_connectors::{page_views, write_page_views, PageView};
use serde_json::Value;

include!("common/runnel.rs");

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// W2 by brute force: (auction, window start) -> (count, max price), from the workload's formulas.
fn w2_reference(events: u64) -> BTreeMap<(u64, i64), (u64, u64)> {
    let mut m = BTreeMap::new();
    for seq in 0..events {
        let auction = (seq * 7919) % 1000;
        let price = 100 + (seq * 17) % 10000;
        let e = m
            .entry((auction, (seq as i64 / 10_000) * 10_000))
            .or_insert((0u64, 0u64));
        e.0 += 1;
        e.1 = e.1.max(price);
    }
    m
}

fn w2_rows(path: &Path) -> BTreeMap<(u64, i64), (u64, u64)> {
    let mut m = BTreeMap::new();
    for v in read_lines(path) {
        let key = (
            v["auction"].as_u64().unwrap(),
            v["window_start"].as_i64().unwrap(),
        );
        let val = (
            v["count"].as_u64().unwrap(),
            v["max_price"].as_u64().unwrap(),
        );
        assert!(m.insert(key, val).is_none(), "duplicate row {v}");
    }
    m
}

#[test]
fn w2_ten_million_events_on_two_workers_gives_a_million_exact_windows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w2.jsonl");
    let o = runnel(&[
        "run",
        "w2-tumbling",
        "--workers",
        "2",
        "--set",
        "events=10000000",
        "--set",
        &format!("out={}", out.display()),
        "--json",
    ]);
    let s = summary(&o);
    assert_eq!(s["events_in"], 10_000_000);
    assert_eq!(s["counters"]["check.records_out"], 1_000_000);
    let rows = w2_rows(&out);
    assert_eq!(rows.len(), 1_000_000);
    // Every auction has exactly 10 bids in every full 10 s window (7919 is invertible mod 1000).
    assert!(rows.values().all(|(count, _)| *count == 10));
    // Spot-check max prices against brute force on a prefix of windows.
    let reference = w2_reference(100_000);
    for (k, v) in &reference {
        assert_eq!(rows.get(k), Some(v), "window {k:?}");
    }
}

#[test]
fn w2_is_the_same_on_1_2_4_workers_and_on_2_processes() {
    let dir = tempfile::tempdir().unwrap();
    let events = 123_457u64;
    let reference = w2_reference(events);
    for workers in [1usize, 2, 4] {
        let out = dir.path().join(format!("w2-{workers}.jsonl"));
        let s = summary(&runnel(&[
            "run",
            "w2-tumbling",
            "--workers",
            &workers.to_string(),
            "--set",
            &format!("events={events}"),
            "--set",
            &format!("out={}", out.display()),
            "--json",
        ]));
        assert_eq!(s["late"], 0);
        assert_eq!(w2_rows(&out), reference, "{workers} workers");
    }
    let out = dir.path().join("w2-cluster.jsonl");
    let outs = run_cluster(
        dir.path(),
        2,
        2,
        &[
            "run",
            "w2-tumbling",
            "--set",
            &format!("events={events}"),
            "--set",
            &format!("out={}", out.display()),
        ],
    );
    let mut events_in = 0;
    for o in &outs {
        events_in += summary(o)["events_in"].as_u64().unwrap();
    }
    assert_eq!(events_in, events, "the two processes read every event once");
    assert_eq!(w2_rows(&out), reference, "2 processes x 2 workers");
}

/// Sessions by brute force: per user, sort the view times and split where a view comes a gap or
/// more after the previous one.
fn sessions_reference(views: &[PageView]) -> Vec<(u64, i64, i64, u64)> {
    let gap = 30 * 60 * 1000;
    let mut by_user: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for v in views {
        by_user.entry(v.user).or_default().push(v.ts_ms);
    }
    let mut out = Vec::new();
    for (user, mut ts) in by_user {
        ts.sort();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0u64);
        for t in ts {
            if t >= last + gap {
                out.push((user, start, last + gap, n));
                start = t;
                n = 0;
            }
            last = t;
            n += 1;
        }
        out.push((user, start, last + gap, n));
    }
    out.sort();
    out
}

fn session_rows(path: &Path) -> Vec<(u64, i64, i64, u64)> {
    let mut rows: Vec<_> = read_lines(path)
        .into_iter()
        .map(|v| {
            (
                v["user"].as_u64().unwrap(),
                v["start"].as_i64().unwrap(),
                v["end"].as_i64().unwrap(),
                v["views"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `clickstream-sessions` from `input` to `out` on 2 processes of 1 worker.
fn clickstream_on_2_processes(dir: &Path, input: &Path, out: &Path) -> Vec<Output> {
    run_cluster(
        dir,
        2,
        1,
        &[
            "run",
            "clickstream-sessions",
            "--set",
            &format!("input={}", input.display()),
            "--set",
            &format!("out={}", out.display()),
        ],
    )
}

#[test]
fn clickstream_sessions_match_brute_force_on_1_2_4_workers_and_2_processes() {
    let dir = tempfile::tempdir().unwrap();
    let input: PathBuf = dir.path().join("views.jsonl");
    let views = page_views(200, 5_000, 42);
    write_page_views(&input, &views).unwrap();
    let reference = sessions_reference(&views);
    assert!(
        reference.len() > 200,
        "sample has several sessions per user"
    );
    for workers in [1usize, 2, 4] {
        let out = dir.path().join(format!("s-{workers}.jsonl"));
        let s = summary(&runnel(&[
            "run",
            "clickstream-sessions",
            "--workers",
            &workers.to_string(),
            "--set",
            &format!("input={}", input.display()),
            "--set",
            &format!("out={}", out.display()),
            "--json",
        ]));
        assert_eq!(s["late"], 0);
        assert_eq!(session_rows(&out), reference, "{workers} workers");
    }
    let out = dir.path().join("s-cluster.jsonl");
    for o in clickstream_on_2_processes(dir.path(), &input, &out) {
        summary(&o);
    }
    assert_eq!(session_rows(&out), reference, "2 processes");
}

/// A process of a cluster that fails (here on a bad record, under the fail policy) takes
/// the cluster down: every process exits with an error, the failing one naming the file,
/// line and field, the others the lost connection; none waits for the others forever, and
/// none commits its output (the input did not end, so there is no complete result).
#[test]
fn a_failure_in_one_process_fails_the_whole_cluster_and_nothing_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let input: PathBuf = dir.path().join("views.jsonl");
    write_page_views(&input, &page_views(50, 2_000, 7)).unwrap();
    let mut text = std::fs::read_to_string(&input).unwrap();
    let bad_line = text.lines().count() + 1;
    text.push_str("{\"user\":3,\"page\":\"/x\"}\n");
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let outputs = clickstream_on_2_processes(dir.path(), &input, &out);
    let errors: Vec<String> = outputs.iter().map(stderr).collect();
    for o in &outputs {
        assert!(!o.status.success(), "every process fails: {errors:?}");
    }
    let located = format!("{}:{bad_line}", input.display());
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains(&located) && e.contains("ts_ms"))
            .count(),
        1,
        "one process names the bad record's file, line and field: {errors:?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("connection to another process of the cluster was lost"))
            .count(),
        1,
        "the other says it lost the failed one: {errors:?}"
    );
    assert!(!out.exists(), "no output was committed");
}

/// A cluster that cannot form fails within its connect timeout and says why, on stderr (stdout
/// stays for results): a process whose peer never starts names the peer and its address; two
/// processes started with different worker counts both refuse, each naming both counts.
#[test]
fn a_cluster_that_cannot_form_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let hosts = hosts.to_str().unwrap();
    let process = |id: &str, workers: &str, timeout: &str| {
        let state = fresh_state_dir();
        let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .env("RUNNEL_STATE_DIR", state.path())
            .args(["run", "w0-passthrough", "--set", "events=1000"])
            .args(["--processes", "2", "--process-id", id, "--hosts", hosts])
            .args(["--workers", workers, "--connect-timeout", timeout])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        (child, state)
    };

    let (alone, _state) = process("1", "1", "2s");
    let o = &wait_or_kill(vec![alone], std::time::Duration::from_secs(60))[0];
    assert!(!o.status.success());
    let err = stderr(o);
    assert!(
        err.contains("did not connect within 2s (--connect-timeout)")
            && err.contains(&format!("process 0 at 127.0.0.1:{}", ports[0])),
        "{err}"
    );
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Two addresses on one line of the hosts file (timely's listener took them, its peers
    // could not): refused, naming the line.
    let two = dir.path().join("two-on-a-line");
    std::fs::write(&two, "127.0.0.1:1 127.0.0.1:2\n127.0.0.1:3\n").unwrap();
    let o = runnel(&[
        "run",
        "w0-passthrough",
        "--processes",
        "2",
        "--hosts",
        two.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("'127.0.0.1:1 127.0.0.1:2' is more than one address"),
        "{err}"
    );

    // They fail as soon as they meet; the timeout only bounds a test that goes wrong.
    let (p0, _s0) = process("0", "2", "30s");
    let (p1, _s1) = process("1", "1", "30s");
    let outputs = wait_or_kill(vec![p0, p1], std::time::Duration::from_secs(60));
    let want = ["--workers 1, this process 2", "--workers 2, this process 1"];
    for (o, want) in outputs.iter().zip(want) {
        assert!(!o.status.success());
        let err = stderr(o);
        assert!(
            err.contains("not of this process's cluster") && err.contains(want),
            "{err}"
        );
    }
}

#[test]
fn word_count_matches_a_plain_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("text.txt");
    let text = "a b a\n\nc a b\nthe end, the END.\n";
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("counts.jsonl");
    summary(&runnel(&[
        "run",
        "word-count",
        "--workers",
        "2",
        "--set",
        &format!("input={}", input.display()),
        "--set",
        &format!("out={}", out.display()),
        "--json",
    ]));
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *want.entry(w.to_lowercase()).or_default() += 1;
    }
    let got: BTreeMap<String, u64> = read_lines(&out)
        .into_iter()
        .map(|v| (v[0].as_str().unwrap().to_string(), v[1].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn bad_json_lines_fail_with_file_line_and_field_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("views.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"user\":1,\"page\":\"/\",\"ts_ms\":0}\n",
            "{\"user\":1,\"page\":\"/a\"}\n",
            "{\"user\":2,\"page\":\"/\",\"ts_ms\":5}\n",
            "not json at all\n",
            "{\"user\":2,\"page\":\"/b\",\"ts_ms\":7}\n",
        ),
    )
    .unwrap();
    let base = [
        "run".to_string(),
        "clickstream-sessions".to_string(),
        "--set".to_string(),
        format!("input={}", input.display()),
        "--json".to_string(),
    ];
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    let o = runnel(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:2", input.display())) && err.contains("ts_ms"),
        "error names file, line and field: {err}"
    );

    let out = dir.path().join("out.jsonl");
    let out_arg = format!("out={}", out.display());
    args.extend(["--set", "bad_records=skip", "--set", &out_arg]);
    let s = summary(&runnel(&args));
    assert_eq!(s["bad_records"], 2);
    assert_eq!(s["events_in"], 3);
    assert_eq!(
        session_rows(&out),
        vec![(1, 0, 1_800_000, 1), (2, 5, 1_800_007, 2)]
    );
}

#[test]
fn unknown_jobs_bad_flags_and_bad_settings_are_named() {
    let o = runnel(&["run", "no-such-job"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no-such-job") && err.contains("w2-tumbling"),
        "{err}"
    );

    let o = runnel(&["run", "w0-passthrough", "--workers", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--workers"), "{}", stderr(&o));

    let o = runnel(&["run", "w0-passthrough", "--wrokers", "2"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--wrokers"), "{}", stderr(&o));

    // A process of a cluster cannot restart in place (it would leave its peers waiting).
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let o = runnel(&[
        "run",
        "w0-passthrough",
        "--restart",
        "1",
        "--processes",
        "2",
        "--process-id",
        "0",
        "--hosts",
        hosts.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("--restart") && err.contains("--processes 2"),
        "{err}"
    );

    let o = runnel(&["run", "w0-passthrough", "--set", "events=lots"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("events") && err.contains("'lots'"), "{err}");

    let o = runnel(&["run", "w0-passthrough", "--set", "evnets=10"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("'evnets'") && err.contains("events"), "{err}");

    let o = runnel(&["run", "w0-passthrough", "--set", "novalue"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("novalue"), "{}", stderr(&o));

    // A Nexmark query's bad setting names the query's job, the setting and the value.
    let o = runnel(&["run", "nexmark-q5", "--set", "sink=nowhere"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("job 'nexmark-q5' is invalid") && err.contains("nowhere"),
        "{err}"
    );

    let o = runnel(&["jobs"]);
    assert!(o.status.success());
    let list = String::from_utf8_lossy(&o.stdout);
    for job in [
        "w0-passthrough",
        "w1-map-filter",
        "w2-tumbling",
        "word-count",
        "clickstream-sessions",
    ] {
        assert!(list.contains(job), "{list}");
    }
}

#[test]
fn ctrl_c_stops_a_run_cleanly_with_a_summary() {
    let state = fresh_state_dir();
    let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .env("RUNNEL_STATE_DIR", state.path())
        .args([
            "run",
            "w0-passthrough",
            "--set",
            "events=1000000000000",
            "--set",
            "rate=200000",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let o = child.wait_with_output().expect("wait");
    let s = summary(&o);
    let n = s["events_in"].as_u64().unwrap();
    assert!(n > 0 && n < 1_000_000_000_000, "stopped part-way: {n}");
    assert_eq!(
        s["events_in"], s["events_out"],
        "everything read reached the sink"
    );
}

/// `--restart N`: a job that fails every time (a bad line under the fail policy) is restarted
/// N times, with the error and the wait each time, and then fails with its error.
#[test]
fn restart_retries_a_failing_job_n_times_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("views.jsonl");
    std::fs::write(
        &input,
        "{\"user\":1,\"page\":\"/\",\"ts_ms\":0}\nnot json\n",
    )
    .unwrap();
    let set = format!("input={}", input.display());
    let o = runnel(&[
        "run",
        "clickstream-sessions",
        "--set",
        &set,
        "--restart",
        "2",
        "--quiet",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("(1 of 2)") && err.contains("(2 of 2)"),
        "{err}"
    );
    assert!(!err.contains("(3 of 2)"), "{err}");
    assert!(
        err.contains("restarting from its last checkpoint in 1s")
            && err.contains("restarting from its last checkpoint in 2s"),
        "{err}"
    );
    assert_eq!(
        err.matches(&format!("{}:2", input.display())).count(),
        3,
        "the error of each of the 3 runs: {err}"
    );
}

/// q20 paced on one worker (1.5M events at 500,000 a second), with `extra` flags: transparent
/// huge pages off in mimalloc's memory (`MIMALLOC_ALLOW_THP=0`), so that a fault there is a
/// 4 KiB page, and the allocator settings that `--pretouch` and touch-ahead (on by default)
/// make left for them to make. The touch-ahead thread waits for no free core
/// (`RUNNEL_TOUCH_AHEAD_IDLE=0`): with its gate at idle priority, the other tests, which run at
/// the same time on the same cores, could keep it from providing anything.
fn q20_paced(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
        .env("MIMALLOC_ALLOW_THP", "0")
        .env("RUNNEL_TOUCH_AHEAD_IDLE", "0")
        .env_remove("MIMALLOC_PURGE_DELAY")
        .env_remove("MIMALLOC_ARENA_RESERVE")
        .args(["bench", "nexmark-q20", "--workers", "1", "--json"])
        .args(["--rate", "500000", "--events", "1500000"])
        .args(extra)
        .output()
        .expect("runnel runs")
}

/// `runnel bench nexmark-q0` on 1,000 events with `args`, the allocator's variables as the
/// user set them (`var`=`value`, the other unset) and warnings shown.
fn q0_with_allocator_setting(var: &str, value: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
        .env_remove("MIMALLOC_PURGE_DELAY")
        .env_remove("MIMALLOC_ARENA_RESERVE")
        .env("RUST_LOG", "warn")
        .env(var, value)
        .args(["bench", "nexmark-q0", "--events", "1000", "--json"])
        .args(args)
        .output()
        .expect("runnel runs")
}

/// `runnel bench` with `flag` and the allocator told otherwise (`var`=`value`) is an error
/// that names the flag and the setting.
fn refused_with_allocator_setting(flag: &str, var: &str, value: &str) {
    let o = q0_with_allocator_setting(var, value, &[flag, "1M"]);
    assert!(!o.status.success(), "{flag} with {var}={value} ran");
    let want = format!("{flag}: ");
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    let want = format!("but {var} is set to `{value}`");
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
}

/// Without `--touch-ahead`, the allocator told otherwise (`var`=`value`) leaves touch-ahead
/// off: the run goes on, and says why, unless `--touch-ahead 0` asked for it off.
fn default_touch_ahead_off_with_allocator_setting(var: &str, value: &str) {
    let warning = format!("touch-ahead is off: {var} is set to `{value}`");
    let o = q0_with_allocator_setting(var, value, &[]);
    let report = summary(&o);
    assert_eq!(report["events"], 1000, "{report}");
    assert!(report.get("touched_ahead_mb").is_none(), "{report}");
    assert!(stderr(&o).contains(&warning), "{}", stderr(&o));

    let o = q0_with_allocator_setting(var, value, &["--touch-ahead", "0"]);
    let report = summary(&o);
    assert!(report.get("touched_ahead_mb").is_none(), "{report}");
    assert!(!stderr(&o).contains("touch-ahead"), "{}", stderr(&o));
}

/// `--pretouch`: the memory written before the run stays in the process and the run's state
/// grows into it instead of into new pages. The reference is the same paced run without it
/// (3 s, longer than mimalloc's default 1 s wait before it gives freed memory back, so a run
/// whose allocator did not keep the memory faults its pages in again). Transparent huge pages
/// are off in both (mimalloc's `MIMALLOC_ALLOW_THP=0`), so that a fault is a 4 KiB page, and
/// so is touch-ahead, whose memory would blur the counts.
#[test]
fn pretouched_memory_is_kept_and_the_run_grows_into_it() {
    let plain = summary(&q20_paced(&["--touch-ahead", "0"]));
    let touched = summary(&q20_paced(&["--pretouch", "512M", "--touch-ahead", "0"]));
    let mb = |v: &Value| v["peak_rss_mb"].as_f64().expect("peak RSS");
    let faults = |v: &Value| v["minor_faults"].as_u64().expect("minor faults");
    let (need, faults_plain) = (mb(&plain), faults(&plain));
    // The run needs less than it is given, and more than a few pages.
    assert!(need < 400.0 && faults_plain > 5_000, "{plain}");
    assert_eq!(touched["pretouch_mb"], 512);
    assert_eq!(touched["results"], plain["results"]);
    // Touched: the process held the 512 MiB ...
    assert!(mb(&touched) >= 512.0, "{touched}");
    // ... and reused them: it did not take what the run needs on top of them ...
    assert!(
        mb(&touched) < 512.0 + need / 2.0,
        "{touched} against {plain}"
    );
    // ... because they were still there: the run faulted in few new pages.
    assert!(
        faults(&touched) * 4 < faults_plain,
        "{touched} against {plain}"
    );

    // An allocator told otherwise is an error that names the setting; so is a bad size.
    refused_with_allocator_setting("--pretouch", "MIMALLOC_PURGE_DELAY", "10");
    let o = runnel(&["run", "nexmark-q0", "--pretouch", "4X"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("`4X` is not a size"), "{}", stderr(&o));
}

/// Touch-ahead, on by default: a thread of its own provides the memory the run grows into, so
/// the other threads take few page faults. The reference is the same paced run with
/// `--touch-ahead 0`, with transparent huge pages off (`MIMALLOC_ALLOW_THP=0`, which the
/// touch-ahead region follows), as in the test above.
#[test]
fn touch_ahead_takes_the_page_faults_off_the_workers() {
    let plain = summary(&q20_paced(&["--touch-ahead", "0"]));
    let by_default = q20_paced(&[]);
    let said = stderr(&by_default);
    assert!(
        !said.contains("touch-ahead is off") && !said.contains("touch-ahead stopped"),
        "{said}"
    );
    let ahead = summary(&by_default);
    let faults = |v: &Value| v["minor_faults"].as_u64().expect("minor faults");
    let faults_plain = faults(&plain);
    assert!(faults_plain > 5_000, "{plain}");
    assert!(plain.get("touched_ahead_mb").is_none(), "{plain}");
    assert_eq!(ahead["results"], plain["results"]);
    let provided = ahead["touched_ahead_mb"]
        .as_u64()
        .expect("touched_ahead_mb");
    let by_thread = ahead["touch_ahead_faults"]
        .as_u64()
        .expect("touch_ahead_faults");
    // The thread provided the allocator's first arena (64 MiB) and the default 64 MiB ahead of
    // its use of the region at least, and took faults doing it ...
    assert!(provided >= 128 && by_thread > 0, "{ahead}");
    // ... and the others took few: a quarter of the run's faults without it at most.
    let others = faults(&ahead).saturating_sub(by_thread);
    assert!(others * 4 < faults_plain, "{ahead} against {plain}");

    // An allocator told otherwise is an error that names the setting with the flag, and
    // leaves the default off with a warning.
    refused_with_allocator_setting("--touch-ahead", "MIMALLOC_ARENA_RESERVE", "1GiB");
    refused_with_allocator_setting("--touch-ahead", "MIMALLOC_PURGE_DELAY", "10");
    default_touch_ahead_off_with_allocator_setting("MIMALLOC_ARENA_RESERVE", "1GiB");
    default_touch_ahead_off_with_allocator_setting("MIMALLOC_PURGE_DELAY", "10");
    // --pretouch turns the default off, and needs only freed memory kept: it runs.
    let o = q0_with_allocator_setting("MIMALLOC_ARENA_RESERVE", "1GiB", &["--pretouch", "1M"]);
    let report = summary(&o);
    assert_eq!(report["pretouch_mb"], 1, "{report}");
    assert!(report.get("touched_ahead_mb").is_none(), "{report}");
    assert!(!stderr(&o).contains("touch-ahead"), "{}", stderr(&o));
}

/// `runnel bench` on a cluster takes checkpoints only into a folder its processes share: without
/// `--state-dir` each process refuses, naming the flag; with one, process 0 commits checkpoints
/// into it and every event is read once across the two processes.
#[test]
fn bench_on_a_cluster_checkpoints_into_a_shared_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let events = 3_000_000u64;
    let args = [
        "bench",
        "w2-tumbling",
        "--events",
        "3000000",
        "--set",
        "check=false",
        "--checkpoint-every",
        "100ms",
    ];
    for o in run_cluster(dir.path(), 2, 1, &args) {
        assert!(!o.status.success(), "ran without a shared folder");
        assert!(stderr(&o).contains("--state-dir"), "{}", stderr(&o));
    }
    let state = dir.path().join("shared-state");
    let mut with_dir = args.to_vec();
    with_dir.extend(["--state-dir", state.to_str().unwrap()]);
    let outs = run_cluster(dir.path(), 2, 1, &with_dir);
    let summaries: Vec<Value> = outs.iter().map(summary).collect();
    let read: u64 = summaries
        .iter()
        .map(|s| s["events"].as_u64().unwrap())
        .sum();
    assert_eq!(read, events, "the two processes read every event once");
    let committed = summaries[0]["checkpoints"]["count"].as_u64().unwrap_or(0);
    assert!(
        committed >= 1,
        "process 0 committed no checkpoint: {}",
        summaries[0]
    );
    assert!(
        state.join("w2-tumbling").is_dir(),
        "nothing in {}",
        state.display()
    );
}
