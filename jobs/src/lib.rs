//! # runnel-jobs
//!
//! runnel's reference jobs, and the registry the `runnel` binary lists and runs. Each job is a
//! plain function that builds its graph on a [`Flow`](runnel_engine::Flow); read them as
//! examples of the job API.
//!
//! | job | what it does |
//! |---|---|
//! | `word-count` | words of a text file, counted |
//! | `w0-passthrough` | benchmark W0: generated bids into a blackhole |
//! | `w1-map-filter` | benchmark W1: a filter and a map |
//! | `w2-tumbling` | benchmark W2: count and max price per auction per 10 s window |
//! | `clickstream-sessions` | page views per user session (30 min gap) from a JSON-lines file |

pub mod clickstream;
pub mod wordcount;
pub mod workloads;

use runnel_engine::Registry;

/// Every reference job.
pub fn registry() -> Registry {
    Registry::new()
        .with(workloads::w2_tumbling())
        .with(workloads::w0_passthrough())
        .with(workloads::w1_map_filter())
        .with(wordcount::word_count())
        .with(clickstream::clickstream_sessions())
}
