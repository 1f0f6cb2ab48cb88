//! JSON-lines files in real jobs: round trips through [`FileSink`], atomic output, bad records
//! under both policies (with dead letters), missing files, and text lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runnel_connectors::{write_json_lines, Bid, BidGenerator, FileSink, FileSource};
use runnel_engine::testing::{read_partitions, Collector, TestItem, TestSource};
use runnel_engine::{
    run, BadRecordPolicy, DeadLetter, Epoch, Event, Job, RunOptions, Sink, SinkContext,
    SourceOptions,
};

fn opts(workers: usize) -> RunOptions {
    RunOptions {
        workers,
        epoch_interval: Duration::from_millis(5),
        ..Default::default()
    }
}

/// The names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Reads JSON-lines `paths` into `Bid`s with a job on `workers` workers.
fn read_bids(paths: Vec<PathBuf>, workers: usize) -> Vec<Bid> {
    let out = Collector::new();
    let sink = out.clone();
    let job = Job::new("read", "reads bids", move |flow| {
        let options = SourceOptions::new().event_time(|b: &Bid| b.event_time_ms);
        flow.source("bids", FileSource::<Bid>::json(&paths), options)?
            .sink("out", sink.sink())
    });
    run(&job, opts(workers)).unwrap();
    out.sorted_data()
}

/// Writes `n` generated bids to `path` with a job on `workers` workers.
fn write_bids(path: &Path, n: u64, workers: usize, sorted: bool) {
    let p = path.to_path_buf();
    let job = Job::new("write", "writes bids", move |flow| {
        let sink = if sorted {
            FileSink::json(&p).sorted()
        } else {
            FileSink::json(&p)
        };
        flow.source(
            "bids",
            BidGenerator::new(n).partitions(3),
            SourceOptions::new(),
        )?
        .sink("file", sink)
    });
    let summary = run(&job, opts(workers)).unwrap();
    assert_eq!(summary.events_out, n);
}

#[test]
fn generator_to_file_to_collector_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.jsonl");
    write_bids(&path, 2_500, 2, false);
    assert_eq!(
        entries(dir.path()),
        vec!["bids.jsonl"],
        "no temporary file left"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2_500);

    let expected: Vec<Bid> = (0..2_500).map(Bid::at).collect();
    for workers in [1, 2, 3] {
        assert_eq!(read_bids(vec![path.clone()], workers), expected);
    }
}

#[test]
fn several_files_are_several_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<Bid> = (0..1_000).map(Bid::at).collect();
    let mut paths = Vec::new();
    for (i, chunk) in all.chunks(300).enumerate() {
        let p = dir.path().join(format!("part-{i}.jsonl"));
        write_json_lines(&p, chunk).unwrap();
        paths.push(p);
    }
    assert_eq!(paths.len(), 4);

    let out = Collector::new();
    let sink = out.clone();
    let ps = paths.clone();
    let job = Job::new("read", "reads parts", move |flow| {
        flow.source(
            "bids",
            FileSource::<Bid>::json(ps.clone()),
            SourceOptions::new(),
        )?
        .sink("out", sink.sink())
    });
    run(&job, opts(2)).unwrap();
    assert_eq!(out.sorted_data(), all);
    // Partition i holds chunk i; offsets are 1-based line numbers.
    let parts = read_partitions(&mut FileSource::<Bid>::json(paths.clone()), 2).unwrap();
    assert_eq!(parts.len(), 4);
    let mut seen = 0;
    for (p, records) in parts {
        for (offset, e) in records {
            let seq = e.data.seq;
            assert_eq!(u64::from(p), seq / 300);
            assert_eq!(offset, seq % 300 + 1);
            seen += 1;
        }
    }
    assert_eq!(seen, all.len());
}

#[test]
fn round_trip_of_arbitrary_records_keeps_the_multiset() {
    // Duplicates, strings that need escaping, nested values.
    type Rec = (String, Vec<u32>, Option<i64>);
    let records: Vec<Rec> = vec![
        ("a".into(), vec![1, 2], Some(-3)),
        ("a".into(), vec![1, 2], Some(-3)),
        ("quote \" and \\ and \n newline".into(), vec![], None),
        ("ünïcødé ✓".into(), vec![7], Some(i64::MAX)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.jsonl");
    let second = dir.path().join("second.jsonl");
    write_json_lines(&first, &records).unwrap();

    let (f, s) = (first.clone(), second.clone());
    let job = Job::new("copy", "copies records", move |flow| {
        flow.source("in", FileSource::<Rec>::json(&f), SourceOptions::new())?
            .sink("out", FileSink::json(&s))
    });
    run(&job, opts(2)).unwrap();

    let out = Collector::new();
    let sink = out.clone();
    let s = second.clone();
    let job = Job::new("read", "reads the copy", move |flow| {
        flow.source("in", FileSource::<Rec>::json(&s), SourceOptions::new())?
            .sink("out", sink.sink())
    });
    run(&job, opts(3)).unwrap();
    let mut expected = records;
    expected.sort();
    assert_eq!(out.sorted_data(), expected);
    assert_eq!(entries(dir.path()), vec!["first.jsonl", "second.jsonl"]);
}

#[test]
fn sorted_output_is_the_same_for_every_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for workers in [1, 2, 3] {
        let path = dir.path().join(format!("sorted-{workers}.jsonl"));
        write_bids(&path, 777, workers, true);
        outputs.push(std::fs::read_to_string(&path).unwrap());
    }
    assert!(outputs.iter().all(|o| o == &outputs[0]));
    let lines: Vec<&str> = outputs[0].lines().collect();
    assert_eq!(lines.len(), 777);
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "lines sorted by text"
    );
    assert_eq!(entries(dir.path()).len(), 3, "no temporary files left");
}

fn ctx() -> SinkContext {
    SinkContext::detached("file")
}

fn batch(values: &[u64]) -> Vec<Event<u64>> {
    values.iter().map(|&v| Event::new(0, v)).collect()
}

#[test]
fn output_appears_only_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, "old contents\n").unwrap();
    for sorted in [false, true] {
        let mut sink = FileSink::json(&path);
        if sorted {
            sink = sink.sorted();
        }
        Sink::<u64>::open(&mut sink, &ctx()).unwrap();
        let mut records = batch(&[3, 1, 2]);
        sink.write(Epoch(0), &mut records).unwrap();
        assert!(records.is_empty(), "the sink takes the records");
        sink.write(Epoch(1), &mut batch(&[10])).unwrap();
        Sink::<u64>::epoch_done(&mut sink, Epoch(1)).unwrap();

        let temp = ".out.jsonl.partial".to_string();
        assert_eq!(
            entries(dir.path()),
            vec![temp.clone(), "out.jsonl".to_string()]
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old contents\n",
            "the target is untouched before close"
        );
        Sink::<u64>::close(&mut sink).unwrap();
        assert_eq!(entries(dir.path()), vec!["out.jsonl"]);
        let expected = if sorted {
            "1\n10\n2\n3\n"
        } else {
            "3\n1\n2\n10\n"
        };
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        std::fs::write(&path, "old contents\n").unwrap();
    }
}

#[test]
fn abort_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut sink = FileSink::json(&path);
    Sink::<u64>::open(&mut sink, &ctx()).unwrap();
    sink.write(Epoch(0), &mut batch(&[1, 2, 3])).unwrap();
    Sink::<u64>::abort(&mut sink);
    assert!(entries(dir.path()).is_empty());

    // Dropping an unclosed sink also removes its temporary file.
    let mut sink = FileSink::json(&path);
    Sink::<u64>::open(&mut sink, &ctx()).unwrap();
    sink.write(Epoch(0), &mut batch(&[1])).unwrap();
    drop(sink);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn empty_stream_writes_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jsonl");
    let p = path.clone();
    let job = Job::new("empty", "writes nothing", move |flow| {
        flow.source(
            "none",
            TestSource::<u64>::new(vec![vec![]]),
            SourceOptions::new(),
        )?
        .sink("file", FileSink::json(&p))
    });
    run(&job, opts(2)).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    assert_eq!(entries(dir.path()), vec!["empty.jsonl"]);
}

#[test]
fn sink_into_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("out.jsonl");
    let p = path.clone();
    let job = Job::new("nowhere", "writes nowhere", move |flow| {
        let parts = vec![vec![TestItem::At(0, 1u64)]];
        flow.source("one", TestSource::new(parts), SourceOptions::new())?
            .sink("file", FileSink::json(&p))
    });
    let err = run(&job, opts(2)).unwrap_err().to_string();
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(err.contains("out.jsonl"), "{err}");
}

/// Two good lines, a blank line, a malformed line (4) and a line missing `price` (5), a good one.
fn bad_file(dir: &Path) -> PathBuf {
    let path = dir.join("bids.jsonl");
    let good = |seq| serde_json::to_string(&Bid::at(seq)).unwrap();
    let text = [
        good(0),
        good(1),
        String::new(),
        r#"{"seq": 2, "auction": oops"#.to_string(),
        r#"{"seq":3,"auction":1,"bidder":2,"event_time_ms":3}"#.to_string(),
        good(4),
    ]
    .join("\n")
        + "\n";
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_records_fail_the_job_with_path_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_file(dir.path());
    // Without the malformed line, the first bad record is the one missing `price`.
    let text = std::fs::read_to_string(&path).unwrap();
    let only_missing: Vec<&str> = text.lines().filter(|l| !l.contains("oops")).collect();
    let missing_path = dir.path().join("missing-field.jsonl");
    std::fs::write(&missing_path, only_missing.join("\n")).unwrap();

    for (p, line, needle) in [(&path, 4, "expected value"), (&missing_path, 4, "`price`")] {
        let out = Collector::<Bid>::new();
        let sink = out.clone();
        let p2 = p.clone();
        let job = Job::new("strict", "fails on bad records", move |flow| {
            flow.source("bids", FileSource::<Bid>::json(&p2), SourceOptions::new())?
                .sink("out", sink.sink())
        });
        let err = run(&job, opts(2)).unwrap_err().to_string();
        let location = format!("{}:{line}", p.display());
        assert!(err.contains(&location), "{err} should name {location}");
        assert!(err.contains(needle), "{err} should say {needle}");
    }
}

#[test]
fn bad_records_fail_before_the_file_sink_writes_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_file(dir.path());
    let target = dir.path().join("copy.jsonl");
    let (p, t) = (path.clone(), target.clone());
    let job = Job::new("strict-copy", "copies until a bad record", move |flow| {
        flow.source("bids", FileSource::<Bid>::json(&p), SourceOptions::new())?
            .sink("file", FileSink::json(&t))
    });
    assert!(run(&job, opts(2)).is_err());
    assert_eq!(
        entries(dir.path()),
        vec!["bids.jsonl"],
        "an aborted sink leaves neither output nor temporary file"
    );
}

#[test]
fn bad_records_are_skipped_counted_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_file(dir.path());
    let good = Collector::<Bid>::new();
    let dead = Collector::<DeadLetter>::new();
    let (g, d, p) = (good.clone(), dead.clone(), path.clone());
    let job = Job::new("lenient", "skips bad records", move |flow| {
        let options = SourceOptions::new()
            .event_time(|b: &Bid| b.event_time_ms)
            .on_bad_record(BadRecordPolicy::Skip);
        let (bids, letters) =
            flow.source_with_dead_letters("bids", FileSource::<Bid>::json(&p), options)?;
        bids.sink("out", g.sink())?;
        letters.sink("dead", d.sink())
    });
    let summary = run(&job, opts(2)).unwrap();
    assert_eq!(good.sorted_data(), vec![Bid::at(0), Bid::at(1), Bid::at(4)]);
    assert_eq!(summary.bad_records, 2);

    let mut letters = dead.data();
    letters.sort_by(|a, b| a.location.cmp(&b.location));
    assert_eq!(letters.len(), 2);
    let shown = path.display().to_string();
    assert_eq!(letters[0].location, format!("{shown}:4"));
    assert_eq!(letters[0].raw, r#"{"seq": 2, "auction": oops"#);
    assert!(
        letters[0].reason.contains("expected value"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[1].location, format!("{shown}:5"));
    assert!(
        letters[1].reason.contains("missing field `price`"),
        "{}",
        letters[1].reason
    );
    assert!(letters.iter().all(|l| l.source == "bids"));
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let there = dir.path().join("there.jsonl");
    write_json_lines(&there, &[Bid::at(0)]).unwrap();
    let missing = dir.path().join("not-there.jsonl");
    let paths = vec![there, missing.clone()];
    let job = Job::new("missing", "reads a missing file", move |flow| {
        flow.source(
            "bids",
            FileSource::<Bid>::json(&paths),
            SourceOptions::new(),
        )?
        .sink("out", Collector::<Bid>::new().sink())
    });
    for workers in [1, 2] {
        let err = run(&job, opts(workers)).unwrap_err();
        assert!(
            matches!(&err, runnel_engine::Error::Io { path, .. } if path == &missing),
            "{err:?}"
        );
        assert!(err.to_string().contains(&missing.display().to_string()));
    }
}

#[test]
fn no_files_is_an_error() {
    let job = Job::new("none", "reads no files", move |flow| {
        flow.source(
            "bids",
            FileSource::<Bid>::json(Vec::<PathBuf>::new()),
            SourceOptions::new(),
        )?
        .sink("out", Collector::<Bid>::new().sink())
    });
    let err = run(&job, opts(1)).unwrap_err().to_string();
    assert!(
        err.contains("bids") && err.contains("no input files"),
        "{err}"
    );
}

#[test]
fn text_lines_for_word_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("words.txt");
    std::fs::write(&path, "the quick brown fox\r\n\njumps over\nthe lazy dog").unwrap();
    let out = Collector::<String>::new();
    let sink = out.clone();
    let p = path.clone();
    let job = Job::new("words", "splits lines into words", move |flow| {
        flow.source("lines", FileSource::text(&p), SourceOptions::new())?
            .flat_map(|line: String| {
                line.split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .sink("out", sink.sink())
    });
    run(&job, opts(2)).unwrap();
    let mut expected: Vec<String> = "the quick brown fox jumps over the lazy dog"
        .split(' ')
        .map(str::to_string)
        .collect();
    expected.sort();
    assert_eq!(out.sorted_data(), expected);

    // Every line, blank ones included, numbered from 1, without line endings.
    let parts = read_partitions(&mut FileSource::text(&path), 1).unwrap();
    assert_eq!(parts.len(), 1);
    let got: Vec<(u64, String)> = parts
        .into_iter()
        .flat_map(|(_, records)| records)
        .map(|(offset, e)| (offset, e.data))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "the quick brown fox".to_string()),
            (2, String::new()),
            (3, "jumps over".to_string()),
            (4, "the lazy dog".to_string()),
        ]
    );
}

#[test]
fn concurrent_writers_of_one_path_leave_one_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.jsonl");
    let bids: Vec<Bid> = (0..5_000).map(Bid::at).collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| write_json_lines(&path, &bids).unwrap());
        }
    });
    assert_eq!(entries(dir.path()), vec!["shared.jsonl"]);
    assert_eq!(read_bids(vec![path], 2), bids);
}
