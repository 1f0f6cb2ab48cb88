//! `runnel-bench`: runs a workload through the job API and directly on timely, alternately, in
//! one invocation, and prints events/s of each and their ratio (the cost of the job API).
//! `runnel-bench kafka ...` measures Kafka -> job -> Kafka against librdkafka alone (see
//! `runnel_benches::kafka`).

use std::time::Duration;

use anyhow::{bail, Result};
use runnel_benches::kafka;
use runnel_benches::raw::{self, Workload};
use runnel_engine::{run, JobConfig, RunOptions};

/// mimalloc instead of the system allocator: records move between operators in batches that are
/// allocated by one operator and freed by the next, and glibc's malloc gave the freed pages back
/// to the kernel and faulted them in again for the next batch (measured: raw timely W0 went from
/// 42-52M to 128-135M events/s on one worker with glibc's trimming turned off).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ! {
    eprintln!(
        "usage: runnel-bench WORKLOAD [--workers W] [--events N] [--rounds R]\n  WORKLOAD: w0 | w1 | w2\n{}",
        kafka::USAGE
    );
    std::process::exit(2)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let workload = match args.next().as_deref() {
        Some("w0") => Workload::W0,
        Some("w1") => Workload::W1,
        Some("w2") => Workload::W2,
        Some("kafka") => {
            // The connectors log through `tracing`: warnings by default, more with RUST_LOG.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_timer(tracing_subscriber::fmt::time::uptime())
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                )
                .init();
            return kafka::main(&kafka::Options::parse(args)?);
        }
        _ => usage(),
    };
    let (mut workers, mut events, mut rounds) = (1usize, 0u64, 3usize);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--workers" => workers = value.parse()?,
            "--events" => events = value.parse()?,
            "--rounds" => rounds = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if events == 0 {
        events = match workload {
            Workload::W2 => 20_000_000,
            _ => 100_000_000,
        };
    }
    let job_name = match workload {
        Workload::W0 => "w0-passthrough",
        Workload::W1 => "w1-map-filter",
        Workload::W2 => "w2-tumbling",
    };
    let registry = runnel_jobs::registry();
    let job = registry.get(job_name)?;
    let mut best = (0f64, 0f64);
    println!("{job_name}: {events} events, {workers} worker(s), {rounds} rounds, alternating");
    for round in 1..=rounds {
        let mut config = JobConfig::new().with("events", events);
        if workload == Workload::W2 {
            config = config.with("check", false);
        }
        let opts = RunOptions {
            workers,
            config,
            epoch_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let summary = run(job, opts)?;
        let api = summary.events_in as f64 / summary.wall_secs;
        let (out, wall) = raw::run(workload, workers, events);
        let rawr = events as f64 / wall.as_secs_f64();
        println!(
            "round {round}: job API {:>8.2} M events/s ({} out) | raw timely {:>8.2} M events/s ({} out) | ratio {:.2}",
            api / 1e6,
            summary.events_out,
            rawr / 1e6,
            out,
            api / rawr
        );
        best.0 = best.0.max(api);
        best.1 = best.1.max(rawr);
    }
    println!(
        "{{\"workload\":\"{job_name}\",\"workers\":{workers},\"events\":{events},\"api_events_per_sec\":{:.0},\"raw_events_per_sec\":{:.0},\"ratio\":{:.3}}}",
        best.0,
        best.1,
        best.0 / best.1
    );
    Ok(())
}
