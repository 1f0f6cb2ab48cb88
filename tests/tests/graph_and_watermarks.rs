//! Job validation errors, per-partition watermarks (minimum over partitions), idle partitions,
//! a failing sink stopping the job with its name, and a worker's panic failing the run.

use std::time::{Duration, Instant};

use runnel_engine::testing::{Collector, TestItem, TestSource};
use runnel_engine::{
    run, Error, Event, Job, JobConfig, PartitionId, PartitionReader, ReadStatus, Reader,
    RunOptions, Sink, Source, SourceContext, SourceOptions,
};
use runnel_operators::prelude::*;

fn opts(workers: usize) -> RunOptions {
    RunOptions {
        workers,
        epoch_interval: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn numbers() -> TestSource<u64> {
    TestSource::new(vec![vec![TestItem::At(1, 1u64), TestItem::At(2, 2)]])
}

#[test]
fn a_stream_that_reaches_no_sink_is_named_with_where_it_was_made() {
    let job = Job::new("dangling", "", |flow| {
        let s = flow.source("numbers", numbers(), SourceOptions::new())?;
        let _forgotten = s.map(|x| x + 1);
        s.sink("out", Collector::<u64>::new().sink())
    });
    let err = run(&job, opts(1)).unwrap_err();
    assert!(matches!(err, Error::InvalidJob { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("map#") && text.contains("reaches no sink"),
        "{text}"
    );
    assert!(
        text.contains("graph_and_watermarks.rs"),
        "names the line: {text}"
    );
}

#[test]
fn two_operators_with_one_name_are_refused() {
    let job = Job::new("dup", "", |flow| {
        let a = flow.source("numbers", numbers(), SourceOptions::new())?;
        a.sink("out", Collector::<u64>::new().sink())?;
        a.sink("out", Collector::<u64>::new().sink())
    });
    let text = run(&job, opts(2)).unwrap_err().to_string();
    assert!(text.contains("two operators are named 'out'"), "{text}");
}

#[test]
fn a_config_key_the_job_never_reads_is_refused() {
    let job = Job::new("cfg", "", |flow| {
        let _n: u64 = flow.config().get("events", 5)?;
        flow.source("numbers", numbers(), SourceOptions::new())?
            .sink("out", Collector::<u64>::new().sink())
    });
    let text = run(&job, opts(1).config(JobConfig::new().with("evnts", 3)))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("'evnts'") && text.contains("events"),
        "{text}"
    );
    // The right key runs.
    run(&job, opts(1).config(JobConfig::new().with("events", 3))).unwrap();
}

#[test]
fn the_watermark_is_the_minimum_over_partitions() {
    // Partition 0 races to ts 1000 in epoch 0; partition 1 is read only in epoch 1, at ts 5.
    // With the minimum over partitions the record at 5 is on time (partition 1 had not reported
    // anything yet); a maximum would have made it late.
    for workers in [1, 2] {
        let out = Collector::new();
        let sink = out.clone();
        let job = Job::new("min", "", move |flow| {
            let parts = vec![
                vec![TestItem::At(1000, 0u8), TestItem::Cut],
                vec![TestItem::At(5, 1u8)],
            ];
            flow.source("p", TestSource::new(parts), SourceOptions::new())?
                .key_by(|k: &u8| *k)
                .window(Tumbling::of(Duration::from_millis(10)))
                .aggregate(Count)?
                .map(|r| (r.key, r.start, r.value))
                .sink("out", sink.sink())
        });
        let summary = run(&job, opts(workers)).unwrap();
        assert_eq!(summary.late, 0, "{workers} workers");
        assert_eq!(out.sorted_data(), vec![(0, 1000, 1), (1, 0, 1)]);
    }
}

/// A source with one steady partition (a record every 5 ms, event time = its index * 10) and one
/// that stays silent for `silent` and then ends.
struct SteadyAndSilent {
    records: u64,
    silent: Duration,
}

struct Steady {
    next: u64,
    end: u64,
    started: Option<Instant>,
}

impl PartitionReader<u64> for Steady {
    fn read(&mut self, out: &mut Reader<u64>) -> runnel_engine::Result<ReadStatus> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = (started.elapsed().as_millis() / 5) as u64;
        while self.next < self.end && self.next <= due {
            out.push_at(self.next as i64 * 10, self.next, self.next);
            self.next += 1;
        }
        Ok(if self.next >= self.end {
            ReadStatus::Finished
        } else {
            ReadStatus::Pending
        })
    }
}

struct Silent {
    until: Option<Instant>,
    silent: Duration,
}

impl PartitionReader<u64> for Silent {
    fn read(&mut self, _out: &mut Reader<u64>) -> runnel_engine::Result<ReadStatus> {
        let until = *self
            .until
            .get_or_insert_with(|| Instant::now() + self.silent);
        Ok(if Instant::now() >= until {
            ReadStatus::Finished
        } else {
            ReadStatus::Pending
        })
    }
}

impl Source for SteadyAndSilent {
    type Item = u64;
    fn partitions(&mut self, _ctx: &SourceContext) -> runnel_engine::Result<Vec<String>> {
        Ok(vec!["steady".into(), "silent".into()])
    }
    fn open(
        &mut self,
        p: PartitionId,
        _ctx: &SourceContext,
    ) -> runnel_engine::Result<Box<dyn PartitionReader<u64>>> {
        Ok(match p.0 {
            0 => Box::new(Steady {
                next: 0,
                end: self.records,
                started: None,
            }),
            _ => Box::new(Silent {
                until: None,
                silent: self.silent,
            }),
        })
    }
}

/// Runs the steady/silent source into 100 ms tumbling counts; returns (results, epochs that
/// emitted results, epochs in the run).
fn steady_and_silent(idle: Option<Duration>) -> (Vec<(i64, u64)>, Vec<u64>) {
    let out = Collector::new();
    let sink = out.clone();
    let job = Job::new("idle", "", move |flow| {
        let mut o = SourceOptions::new();
        if let Some(t) = idle {
            o = o.idle_timeout(t);
        }
        flow.source(
            "s",
            SteadyAndSilent {
                records: 80,
                silent: Duration::from_millis(1500),
            },
            o,
        )?
        .key_by(|_| 0u8)
        .window(Tumbling::of(Duration::from_millis(100)))
        .aggregate(Count)?
        .map(|r| (r.start, r.value))
        .sink("out", sink.sink())
    });
    let opts = RunOptions {
        workers: 1,
        epoch_interval: Duration::from_millis(20),
        ..Default::default()
    };
    run(&job, opts).unwrap();
    let mut epochs: Vec<u64> = out.events().iter().map(|(e, _)| e.0).collect();
    epochs.sort();
    epochs.dedup();
    let mut data = out.data();
    data.sort();
    (data, epochs)
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_back() {
    // 80 records, ts 0..790, arrive over ~400 ms; the silent partition ends after 1.5 s.
    let want: Vec<(i64, u64)> = (0..8).map(|w| (w * 100, 10)).collect();
    let (held, held_epochs) = steady_and_silent(None);
    assert_eq!(held, want);
    // Without an idle timeout nothing can fire before the silent partition ends: one epoch.
    assert_eq!(held_epochs.len(), 1, "{held_epochs:?}");

    let (idle, idle_epochs) = steady_and_silent(Some(Duration::from_millis(50)));
    assert_eq!(idle, want);
    // With it, windows fire as the steady partition's watermark passes them.
    assert!(
        idle_epochs.len() >= 4,
        "windows fired progressively: {idle_epochs:?}"
    );
}

struct FailingSink;

impl Sink<u64> for FailingSink {
    fn write(
        &mut self,
        _: runnel_engine::Epoch,
        records: &mut Vec<Event<u64>>,
    ) -> runnel_engine::Result<()> {
        records.clear();
        Err(Error::Runtime("disk full".into()))
    }
    fn close(&mut self) -> runnel_engine::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_sink_stops_the_job_with_its_name() {
    let job = Job::new("fails", "", |flow| {
        flow.source("numbers", numbers(), SourceOptions::new())?
            .sink("archive", FailingSink)
    });
    let text = run(&job, opts(2)).unwrap_err().to_string();
    assert!(
        text.contains("archive") && text.contains("disk full"),
        "{text}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// `filter_map` keeps exactly what `Iterator::filter_map` keeps, each with its record's
    /// event time, whether its results fit in place of the records (`u16` from `(u64, u64)`)
    /// or not (`(u64, u64)` from `u64`), on one worker or two.
    #[test]
    fn filter_map_keeps_what_iterator_filter_map_keeps(
        parts in proptest::collection::vec(
            proptest::collection::vec((0i64..1_000, 0u64..100_000), 0..3_000),
            1..4,
        ),
        workers in 1usize..3,
    ) {
        let grow = |x: u64| (!x.is_multiple_of(3)).then_some((x, x * 7));
        let shrink = |(x, y): (u64, u64)| y.is_multiple_of(2).then_some((x % 60_000) as u16);
        let mut want: Vec<(i64, u16)> = parts
            .iter()
            .flatten()
            .filter_map(|&(ts, x)| grow(x).and_then(shrink).map(|v| (ts, v)))
            .collect();
        want.sort_unstable();

        let input: Vec<Vec<TestItem<u64>>> = parts
            .iter()
            .map(|p| p.iter().map(|&(ts, x)| TestItem::At(ts, x)).collect())
            .collect();
        let out = Collector::<u16>::new();
        let sink = out.clone();
        let job = Job::new("filter-map", "", move |flow| {
            flow.source("numbers", TestSource::new(input.clone()), SourceOptions::new())?
                .filter_map(grow)
                .filter_map(shrink)
                .sink("out", sink.sink())
        });
        run(&job, opts(workers)).unwrap();
        let mut got: Vec<(i64, u16)> = out.events().into_iter().map(|(_, e)| (e.ts, e.data)).collect();
        got.sort_unstable();
        proptest::prop_assert_eq!(got, want);
    }
}

/// A worker whose operator panics fails the run with the panic's message, in a process of
/// several workers whose others still wait for its progress (before, the run waited for them
/// for ever).
#[test]
fn a_panic_on_one_worker_fails_the_run() {
    let parts = vec![
        vec![TestItem::At(1, 1u64), TestItem::At(2, 2)],
        vec![TestItem::At(3, 3u64), TestItem::At(4, 4)],
    ];
    let job = Job::new("panics", "", move |flow| {
        flow.source(
            "numbers",
            TestSource::new(parts.clone()),
            SourceOptions::new(),
        )?
        .map(|x: u64| {
            assert!(x != 3, "record {x} is poison");
            x
        })
        .key_by(|x: &u64| *x)
        .window(Tumbling::of(Duration::from_millis(10)))
        .aggregate(Count)?
        .map(|r| r.value)
        .sink("out", Collector::<u64>::new().sink())
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(&job, opts(2)).map(|_| ()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run ends within a minute");
    let err = got.expect_err("the run fails");
    assert!(err.to_string().contains("record 3 is poison"), "{err}");
}
