//! # runnel-jobs
//!
//! runnel's reference jobs, and the registry the `runnel` binary lists and runs. Each job is a
//! plain function that builds its graph on a [`Flow`](runnel_engine::Flow); read them as
//! examples of the job API.
//!
//! | job | what it does |
//! |---|---|
//! | `kafka-w2` | W2 on Kafka: bids from a topic, count and max price per auction per 10 s window, to a topic (an embedded cluster, checked, without `kafka.bootstrap`) |
//! | `word-count` | words of a text file, counted |
//! | `w0-passthrough` | benchmark W0: generated bids into a blackhole |
//! | `w1-map-filter` | benchmark W1: a filter and a map |
//! | `w2-tumbling` | benchmark W2: count and max price per auction per 10 s window |
//! | `clickstream-sessions` | page views per user session (30 min gap) from a JSON-lines file |
//! | `nexmark-q0` .. `nexmark-q22` | the Nexmark queries q0-q22 (see [`nexmark`]) |
//!
//! [`kafka_tools`] holds the plain Kafka clients behind `runnel produce` and `runnel consume`.

pub mod bench;
pub mod clickstream;
pub mod kafka_bids;
pub mod kafka_tools;
pub mod memory;
pub mod nexmark;
pub mod wordcount;
pub mod workloads;

use runnel_engine::{Error, Job, JobConfig, Registry, Result};

/// Every reference job.
pub fn registry() -> Registry {
    let mut registry = Registry::new()
        .with(kafka_bids::kafka_w2())
        .with(workloads::w2_tumbling())
        .with(workloads::w0_passthrough())
        .with(workloads::w1_map_filter())
        .with(wordcount::word_count())
        .with(clickstream::clickstream_sessions());
    for job in nexmark::jobs() {
        registry = registry.with(job);
    }
    registry
}

/// Whether a run of `job` with `config` can resume from checkpoints: not a job that says it
/// cannot take them ([`Job::without_checkpoints`]), and not `kafka-w2` on its embedded cluster,
/// which starts empty in every run (its input is refilled, its output is not), so a resumed run
/// could never pass its check.
pub fn can_resume(job: &Job, config: &JobConfig) -> bool {
    job.checkpoints_unsupported().is_none()
        && (job.name() != kafka_bids::NAME || config.contains(kafka_bids::BOOTSTRAP))
}

/// Checks what a job's build function cannot see: whether `job` with `config` can run as
/// `processes` processes. `kafka-w2` without `kafka.bootstrap` runs on a Kafka cluster inside
/// its process, which the other processes cannot share.
pub fn check_processes(job: &Job, config: &JobConfig, processes: usize) -> Result<()> {
    if processes > 1 && job.name() == kafka_bids::NAME && !config.contains(kafka_bids::BOOTSTRAP) {
        return Err(Error::InvalidJob {
            job: job.name().to_string(),
            reason: format!(
                "--processes {processes} needs a Kafka broker that every process can reach: give \
                 --set {}=HOST:PORT (without it the job runs on a cluster inside one process)",
                kafka_bids::BOOTSTRAP
            ),
        });
    }
    Ok(())
}
