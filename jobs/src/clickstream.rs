//! Clickstream sessions: page views from a JSON-lines file, sessionised per user with a 30 min
//! inactivity gap; per session the number of views, the first and last page time.
//!
//! Settings: `input` (a JSON-lines file of `{"user":..,"page":..,"ts_ms":..}`; default: sample
//! data generated into a temporary file), `users` and `views` (size of the generated sample,
//! default 1,000 and 20,000), `seed` (default 7), `out` (a JSON-lines file; default stdout),
//! `bad_records` (`fail` or `skip`, default fail).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use runnel_connectors::{page_views, write_page_views, FileSink, FileSource, PageView, StdoutSink};
use runnel_engine::{BadRecordPolicy, Error, Job, SourceOptions};
use runnel_operators::prelude::*;

/// The session gap.
pub const SESSION_GAP: Duration = Duration::from_secs(30 * 60);

/// One user session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserSession {
    /// The user.
    pub user: u64,
    /// The session window's start (first view).
    pub start: i64,
    /// The session window's end (last view + gap).
    pub end: i64,
    /// Views in the session.
    pub views: u64,
}

/// Sessions per user over page views.
pub fn clickstream_sessions() -> Job {
    Job::new(
        "clickstream-sessions",
        "page views per user session (30 min gap) from a JSON-lines file (--set input=FILE)",
        |flow| {
            let cfg = flow.config();
            let input = cfg.get_opt("input");
            let users: u64 = cfg.get("users", 1_000)?;
            let views: u64 = cfg.get("views", 20_000)?;
            let seed: u64 = cfg.get("seed", 7)?;
            let out = cfg.get_opt("out");
            let policy = match cfg.get("bad_records", "fail".to_string())?.as_str() {
                "fail" => BadRecordPolicy::Fail,
                "skip" => BadRecordPolicy::Skip,
                other => {
                    return Err(Error::BadConfigValue {
                        key: "bad_records".into(),
                        value: other.into(),
                        expected: "fail or skip".into(),
                    })
                }
            };
            let input = match input {
                Some(p) => p,
                None => {
                    // Every worker writes the same bytes to a private file and renames it onto
                    // one shared name, so all workers list the same single partition.
                    let dir = std::env::temp_dir();
                    let path = dir.join(format!("runnel-page-views-{users}-{views}-{seed}.jsonl"));
                    let mine = dir.join(format!(
                        ".runnel-page-views-{}-{}.tmp",
                        std::process::id(),
                        flow.worker_index()
                    ));
                    write_page_views(&mine, &page_views(users, views, seed))?;
                    std::fs::rename(&mine, &path).map_err(|e| Error::io(&path, e))?;
                    path.to_string_lossy().into_owned()
                }
            };
            let sessions = flow
                .source(
                    "page-views",
                    FileSource::<PageView>::json(input),
                    SourceOptions::new()
                        .event_time(|v: &PageView| v.ts_ms)
                        .bounded_out_of_order(Duration::from_secs(60))
                        .on_bad_record(policy),
                )?
                .key_by(|v| v.user)
                .window(Session::with_gap(SESSION_GAP))
                .named("sessions")
                .aggregate(Count)?
                .map(|r| UserSession {
                    user: r.key,
                    start: r.start,
                    end: r.end,
                    views: r.value,
                });
            match out {
                Some(path) => sessions.sink("out", FileSink::json(path).sorted()),
                None => sessions.sink("stdout", StdoutSink::new()),
            }
        },
    )
}
