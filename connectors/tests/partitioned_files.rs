//! [`PartitionedFileSink`] in a job and on its own: every record once in its partition's files,
//! output only at close, nothing left after an abort, bad partitions named, and a restore from
//! a checkpoint that drops what came after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runnel_connectors::{Bid, BidGenerator, PartitionedFileSink};
use runnel_engine::{run, Epoch, Event, Job, RunOptions, Sink, SinkContext, SourceOptions};

/// Every file under `dir`, as its path relative to `dir`, with its contents.
fn files(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn bids_sink(dir: &Path) -> PartitionedFileSink<Bid> {
    PartitionedFileSink::json(dir, |b: &Bid| {
        format!("a={}/b={}", b.auction % 3, b.bidder % 2)
    })
}

#[test]
fn a_job_writes_every_record_once_into_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.clone();
    let job = Job::new("write", "writes partitioned bids", move |flow| {
        flow.source(
            "bids",
            BidGenerator::new(3000).partitions(3),
            SourceOptions::new(),
        )?
        .sink("files", bids_sink(&o))
    });
    let opts = RunOptions {
        workers: 2,
        epoch_interval: Duration::from_millis(5),
        ..Default::default()
    };
    run(&job, opts).unwrap();

    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut workers = std::collections::BTreeSet::new();
    let files = files(&out);
    for (path, text) in &files {
        let (partition, file) = path.rsplit_once('/').unwrap();
        let worker = file
            .strip_prefix("part-")
            .and_then(|f| f.strip_suffix(".jsonl"))
            .unwrap_or_else(|| panic!("{path} is not a part file"));
        workers.insert(worker.to_string());
        for line in text.lines() {
            let b: Bid = serde_json::from_str(line).unwrap();
            let want = format!("a={}/b={}", b.auction % 3, b.bidder % 2);
            assert_eq!(partition, want, "{b:?} in {path}");
            *seen.entry(b.seq).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 3000);
    assert!(seen.values().all(|&n| n == 1), "a bid written twice");
    assert_eq!(workers.len(), 2, "both workers wrote: {files:?}");
    assert!(files.len() >= 6 && files.len() <= 12, "{:?}", files.keys());
}

fn ctx() -> SinkContext {
    SinkContext::detached("files")
}

fn batch(values: &[u64]) -> Vec<Event<u64>> {
    values.iter().map(|&v| Event::new(0, v)).collect()
}

/// Numbers, one directory per remainder mod 2.
fn parity_sink(dir: &Path) -> PartitionedFileSink<u64> {
    PartitionedFileSink::json(dir, |v: &u64| format!("odd={}", v % 2))
}

fn paths(dir: &Path) -> Vec<String> {
    files(dir).into_keys().collect()
}

#[test]
fn output_appears_only_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = parity_sink(dir.path());
    sink.open(&ctx()).unwrap();
    let mut records = batch(&[3, 1, 2]);
    sink.write(Epoch(0), &mut records).unwrap();
    assert!(records.is_empty(), "the sink takes the records");
    sink.write(Epoch(1), &mut batch(&[10])).unwrap();
    sink.epoch_done(Epoch(1)).unwrap();
    assert_eq!(
        paths(dir.path()),
        vec!["odd=0/.part-0.jsonl.partial", "odd=1/.part-0.jsonl.partial"]
    );
    sink.close().unwrap();
    let files = files(dir.path());
    let want: BTreeMap<String, String> = [
        ("odd=0/part-0.jsonl".to_string(), "2\n10\n".to_string()),
        ("odd=1/part-0.jsonl".to_string(), "3\n1\n".to_string()),
    ]
    .into();
    assert_eq!(files, want);
}

#[test]
fn abort_and_drop_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = parity_sink(dir.path());
    sink.open(&ctx()).unwrap();
    sink.write(Epoch(0), &mut batch(&[1, 2, 3])).unwrap();
    sink.epoch_done(Epoch(0)).unwrap();
    assert_eq!(paths(dir.path()).len(), 2);
    sink.abort();
    assert!(paths(dir.path()).is_empty());

    let mut sink = parity_sink(dir.path());
    sink.open(&ctx()).unwrap();
    sink.write(Epoch(0), &mut batch(&[1])).unwrap();
    sink.epoch_done(Epoch(0)).unwrap();
    drop(sink);
    assert!(paths(dir.path()).is_empty());
}

#[test]
fn a_partition_outside_the_directory_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../escape", "/abs", "", "a/../b"] {
        let b = bad.to_string();
        let mut sink = PartitionedFileSink::json(dir.path(), move |_: &u64| b.clone());
        sink.open(&ctx()).unwrap();
        let err = sink
            .write(Epoch(0), &mut batch(&[1]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("partition '{bad}'")), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}

#[test]
fn a_directory_that_cannot_be_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let mut sink = parity_sink(&file.join("out"));
    let err = sink.open(&ctx()).unwrap_err().to_string();
    assert!(err.contains("a-file/out"), "{err}");
}

#[test]
fn a_restored_run_drops_what_came_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = parity_sink(dir.path());
    sink.open(&ctx()).unwrap();
    sink.write(Epoch(0), &mut batch(&[1, 2])).unwrap();
    sink.epoch_done(Epoch(0)).unwrap();
    sink.write(Epoch(1), &mut batch(&[3])).unwrap();
    sink.epoch_done(Epoch(1)).unwrap();
    let state = sink
        .snapshot(Epoch(0))
        .unwrap()
        .expect("the sink keeps state");
    sink.write(Epoch(2), &mut batch(&[5, 6])).unwrap();
    sink.epoch_done(Epoch(2)).unwrap();
    // The run dies: its partial files stay, since a checkpoint refers to them.
    drop(sink);
    assert_eq!(paths(dir.path()).len(), 2);

    // The restarted run replays epochs 1 and 2.
    let mut sink = PartitionedFileSink::json(dir.path(), |v: &u64| format!("odd={}", v % 2));
    sink.restore(&state).unwrap();
    sink.open(&ctx()).unwrap();
    sink.write(Epoch(1), &mut batch(&[3])).unwrap();
    sink.write(Epoch(2), &mut batch(&[5, 6])).unwrap();
    sink.epoch_done(Epoch(2)).unwrap();
    sink.close().unwrap();
    let want: BTreeMap<String, String> = [
        ("odd=0/part-0.jsonl".to_string(), "2\n6\n".to_string()),
        ("odd=1/part-0.jsonl".to_string(), "1\n3\n5\n".to_string()),
    ]
    .into();
    assert_eq!(files(dir.path()), want);
}
