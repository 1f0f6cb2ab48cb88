//! The `runnel` binary: list jobs, run one locally or as one process of a cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use runnel_engine::{run, JobConfig, RunOptions};

/// runnel: a stream-processing dataflow engine.
#[derive(Parser, Debug)]
#[command(name = "runnel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the jobs this binary knows, one line each.
    Jobs,
    /// Run a job locally (or as one process of a cluster with --processes).
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The job to run (see `runnel jobs`).
    job: String,
    /// Worker threads per process.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Number of processes in the cluster (each runs this command with its own --process-id).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// This process's index, 0..processes.
    #[arg(long, default_value_t = 0)]
    process_id: u16,
    /// A file with one host:port per line, one line per process, in process order.
    #[arg(long)]
    hosts: Option<PathBuf>,
    /// A job setting, key=value (repeatable); `runnel jobs` says what each job reads.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// How often sources close an epoch, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    epoch_ms: u64,
    /// Print the summary as one JSON line (for scripts).
    #[arg(long)]
    json: bool,
    /// No progress line, even on a terminal.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let registry = runnel_jobs::registry();
    match cli.command {
        Command::Jobs => {
            let width = registry
                .jobs()
                .iter()
                .map(|j| j.name().len())
                .max()
                .unwrap_or(0);
            for job in registry.jobs() {
                println!("{:width$}  {}", job.name(), job.about());
            }
            Ok(())
        }
        Command::Run(args) => {
            let job = registry.get(&args.job)?;
            let config = JobConfig::from_pairs(&args.set).context("bad --set")?;
            let hosts = match &args.hosts {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--hosts {}", path.display()))?;
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(String::from)
                        .collect()
                }
                None => Vec::new(),
            };
            if args.processes > 1 && args.hosts.is_none() {
                bail!(
                    "--processes {} needs --hosts FILE (one host:port per process)",
                    args.processes
                );
            }
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = stop.clone();
                ctrlc::set_handler(move || {
                    if stop.swap(true, Ordering::SeqCst) {
                        eprintln!("\nstopping now");
                        std::process::exit(130);
                    }
                    eprintln!("\nstopping (Ctrl-C again to quit at once)");
                })
                .context("cannot install the Ctrl-C handler")?;
            }
            let opts = RunOptions {
                workers: args.workers as usize,
                processes: args.processes as usize,
                process_id: args.process_id as usize,
                hosts,
                config,
                epoch_interval: Duration::from_millis(args.epoch_ms),
                progress: !args.quiet && !args.json,
                stop,
            };
            let summary = run(job, opts)?;
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                eprintln!("{summary}");
            }
            Ok(())
        }
    }
}
