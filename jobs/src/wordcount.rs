//! Word count over a text file: the classic first job.
//!
//! Settings: `input` (a text file; default: a small embedded text written to a temporary file),
//! `out` (a JSON-lines file of `[word, count]`; default: stdout).

use runnel_connectors::{FileSink, FileSource, StdoutSink};
use runnel_engine::{Error, Job, SourceOptions};
use runnel_operators::prelude::*;

const SAMPLE: &str = "the quick brown fox jumps over the lazy dog\n\
the dog sleeps and the fox runs\n\
streams of words flow through the dataflow\n";

/// Counts the words of a text file.
pub fn word_count() -> Job {
    Job::new(
        "word-count",
        "counts the words of a text file (--set input=FILE)",
        |flow| {
            let input = match flow.config().get_opt("input") {
                Some(p) => p,
                None => {
                    let dir = std::env::temp_dir();
                    let path = dir.join("runnel-word-count-sample.txt");
                    let mine = dir.join(format!(
                        ".runnel-word-count-{}-{}.tmp",
                        std::process::id(),
                        flow.worker_index()
                    ));
                    std::fs::write(&mine, SAMPLE).map_err(|e| Error::io(&mine, e))?;
                    std::fs::rename(&mine, &path).map_err(|e| Error::io(&path, e))?;
                    path.to_string_lossy().into_owned()
                }
            };
            let out = flow.config().get_opt("out");
            let counts = flow
                .source(
                    "lines",
                    FileSource::<String>::text(input),
                    SourceOptions::new(),
                )?
                .flat_map(|line: String| {
                    line.split(|c: char| !c.is_alphanumeric())
                        .filter(|w| !w.is_empty())
                        .map(str::to_lowercase)
                        .collect::<Vec<_>>()
                })
                .key_by(|w: &String| w.clone())
                .window(Global::window())
                .named("counts")
                .aggregate(Count)?
                .map(|r| (r.key, r.value));
            match out {
                Some(path) => counts.sink("out", FileSink::json(path).sorted()),
                None => counts.sink("stdout", StdoutSink::new()),
            }
        },
    )
}
