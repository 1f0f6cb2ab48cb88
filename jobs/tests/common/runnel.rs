// The `runnel` binary as the tests run it: one run, or a cluster of processes on 127.0.0.1
// (included with `include!` by the test files that start it, as common/kafka.rs is).

/// Runs `runnel args...` to its end, with a checkpoint folder of its own.
#[allow(dead_code)] // nexmark_queries.rs runs only clusters
fn runnel(args: &[&str]) -> std::process::Output {
    let state = fresh_state_dir();
    std::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
        .env("RUNNEL_STATE_DIR", state.path())
        .args(args)
        .output()
        .expect("runnel runs")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON summary (`--json`), the last line of a run's stdout; fails if the run failed.
fn summary(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "runnel failed: {}", stderr(o));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().last().expect("a summary line");
    serde_json::from_str(line).expect("summary is JSON")
}

/// `n` ports free on 127.0.0.1 a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Runs `args` as a cluster of `processes` processes on 127.0.0.1 with `workers` each, sharing
/// a checkpoint folder of their own; fails the test if they are still running after 5 minutes.
fn run_cluster(
    dir: &std::path::Path,
    processes: usize,
    workers: usize,
    args: &[&str],
) -> Vec<std::process::Output> {
    let hosts = dir.join(format!("hosts-{processes}"));
    let lines: Vec<String> = free_ports(processes)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    std::fs::write(&hosts, lines.join("\n")).expect("hosts file");
    let state = fresh_state_dir();
    let children: Vec<_> = (0..processes)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
                .env("RUNNEL_STATE_DIR", state.path())
                .args(args)
                .args([
                    "--workers",
                    &workers.to_string(),
                    "--processes",
                    &processes.to_string(),
                    "--process-id",
                    &i.to_string(),
                    "--hosts",
                    hosts.to_str().expect("utf-8 path"),
                    "--json",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    wait_or_kill(children, std::time::Duration::from_secs(300))
}

/// Waits for every child to end; kills them all and fails the test if one is still running
/// after `limit` (a hang: these runs take seconds).
fn wait_or_kill(
    mut children: Vec<std::process::Child>,
    limit: std::time::Duration,
) -> Vec<std::process::Output> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if children
            .iter_mut()
            .all(|c| c.try_wait().expect("try_wait").is_some())
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let hung = children
        .iter_mut()
        .any(|c| c.try_wait().expect("try_wait").is_none());
    for c in &mut children {
        let _ = c.kill();
    }
    let outputs: Vec<std::process::Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    assert!(
        !hung,
        "the cluster was still running after {limit:?} (killed); stderr: {:?}",
        outputs.iter().map(stderr).collect::<Vec<_>>()
    );
    outputs
}

/// A checkpoint folder of its own for each run (checkpoints are on by default, and runs of
/// one job in parallel tests must not resume from each other's), removed when dropped.
fn fresh_state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("runnel-test-state-")
        .tempdir()
        .expect("a temporary folder")
}

/// A changelog file (`{"op":"insert"|"retract","row":..}` per line) applied in order: each row
/// (as its JSON text) with its count, the rows back at zero left out. A retraction of a row
/// that is not there fails, naming the line.
#[allow(dead_code)] // cli.rs reads no changelog
fn apply_changelog(path: &std::path::Path) -> std::collections::BTreeMap<String, i64> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut rows: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let change: serde_json::Value = serde_json::from_str(line).expect("a JSON change");
        let row = change["row"].to_string();
        let n = rows.entry(row.clone()).or_default();
        match change["op"].as_str() {
            Some("insert") => *n += 1,
            Some("retract") => *n -= 1,
            op => panic!("line {}: op {op:?}", i + 1),
        }
        assert!(
            *n >= 0,
            "line {}: {row} retracted before it was inserted",
            i + 1
        );
    }
    rows.retain(|_, n| *n != 0);
    rows
}

/// The rows of [`apply_changelog`], each as many times as it counts, sorted.
#[allow(dead_code)] // cli.rs and crash.rs take the counts
fn changelog_rows(path: &std::path::Path) -> Vec<String> {
    apply_changelog(path)
        .into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n as usize))
        .collect()
}
