//! The `runnel` binary's checkpoint flags (`runnel run --state-dir ... --fresh ...`) and the
//! `runnel checkpoints JOB` listing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use runnel_connectors::kafka::{format_duration, parse_duration};
use runnel_engine::checkpoint::{
    CheckpointEntry, CheckpointStatus, CheckpointStore, LocalDirStore, DEFAULT_STATE_DIR,
};
use runnel_engine::{CheckpointOptions, Restore};

/// How often a run takes a checkpoint unless told otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// Where a job's checkpoints go and which one a run starts from.
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// The folder for checkpoints (one sub-folder per job).
    #[arg(long, env = "RUNNEL_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// How often to take a checkpoint ("10s", "500ms"; default 10s); "0s" turns checkpoints off
    /// (and with them resuming and exactly-once sinks).
    #[arg(long, value_parser = parse_duration)]
    pub checkpoint_every: Option<Duration>,
    /// How many complete checkpoints to keep.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_checkpoints: u32,
    /// Start over: remove the job's checkpoints instead of resuming from the last one.
    #[arg(long, conflicts_with = "from_checkpoint")]
    pub fresh: bool,
    /// Resume from this checkpoint instead of the last one (see `runnel checkpoints JOB`).
    #[arg(long, value_name = "ID")]
    pub from_checkpoint: Option<u64>,
    /// Write every checkpoint's large states whole, instead of incrementally (only what
    /// changed since the checkpoint before, for operators that track it).
    #[arg(long)]
    pub full_checkpoints: bool,
    /// How often, between checkpoints, an operator whose checkpoints are incremental takes
    /// what changed and has it written in the background ("300ms", the default; rounded to
    /// whole epochs, at least one): less often writes a key that changes often once instead of
    /// once per epoch, but pauses the worker longer each time.
    #[arg(long, default_value = "300ms", value_parser = parse_duration, value_name = "DURATION")]
    pub changes_every: Duration,
}

impl StateArgs {
    /// The run's checkpoint options for `job` (`None`: off).
    pub fn options(&self, job: &str) -> anyhow::Result<Option<CheckpointOptions>> {
        let every = self.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY);
        if every.is_zero() {
            if self.fresh || self.from_checkpoint.is_some() {
                bail!("--fresh and --from-checkpoint need checkpoints (--checkpoint-every is 0)");
            }
            return Ok(None);
        }
        let store = LocalDirStore::new(&self.state_dir, job)
            .with_context(|| format!("--state-dir {}", self.state_dir.display()))?;
        Ok(Some(CheckpointOptions {
            store: Arc::new(store),
            every,
            keep: self.keep_checkpoints as usize,
            restore: match (self.fresh, self.from_checkpoint) {
                (true, _) => Restore::Fresh,
                (false, Some(id)) => Restore::Id(id),
                (false, None) => Restore::Latest,
            },
            stream_above: runnel_engine::recovery::STREAM_STATE_ABOVE,
            incremental: !self.full_checkpoints,
            changes_every: self.changes_every,
        }))
    }
}

/// `runnel checkpoints JOB`.
#[derive(Args, Debug)]
pub struct CheckpointsArgs {
    /// The job whose checkpoints to list.
    pub job: String,
    /// The folder for checkpoints (one sub-folder per job).
    #[arg(long, env = "RUNNEL_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// One JSON object per line (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// Lists a job's checkpoints, oldest first: id, epoch, time, size, and what is wrong with the
/// ones that cannot be used.
pub fn list_checkpoints(args: &CheckpointsArgs) -> anyhow::Result<()> {
    let store = LocalDirStore::new(&args.state_dir, &args.job)
        .with_context(|| format!("--state-dir {}", args.state_dir.display()))?;
    let entries: Vec<CheckpointEntry> = store.scan()?;
    if entries.is_empty() && !args.json {
        eprintln!(
            "no checkpoints of job '{}' in {}",
            args.job,
            store.dir().display()
        );
        return Ok(());
    }
    if !args.json {
        println!(
            "{:>20}  {:>20}  {:<24}  {:>12}  {:>12}  status",
            "id", "epoch", "time (UTC)", "bytes", "written"
        );
    }
    // What the complete checkpoint before each one left to link (as `checkpoint_bytes` counts
    // at the commit); unknown for the oldest listed.
    let mut before: Option<BTreeMap<String, (u64, u32)>> = None;
    for e in entries {
        let (epoch, time, size, written, status) = match &e.status {
            CheckpointStatus::Complete(info) => {
                let written = before
                    .as_ref()
                    .map_or("-".to_string(), |b| info.written_over(b).to_string());
                before = Some(info.linkable_parts(info.workers().unwrap_or(0)));
                (
                    info.epoch.to_string(),
                    utc(info.created_ms),
                    info.size().to_string(),
                    written,
                    "complete".to_string(),
                )
            }
            CheckpointStatus::Incomplete => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "incomplete".into(),
            ),
            CheckpointStatus::Invalid { file, reason } => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("invalid: {file}: {reason}"),
            ),
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "id": e.id, "epoch": epoch, "time": time, "bytes": size,
                    "written": written, "status": status, "location": e.location,
                })
            );
        } else {
            println!(
                "{:>20}  {epoch:>20}  {time:<24}  {size:>12}  {written:>12}  {status}",
                e.id
            );
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss.mmm` (UTC).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// How long to wait before restart `n` (1, 2, 4, ... seconds, at most 30).
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.min(5)).min(Duration::from_secs(30))
}

/// `d` as the CLI writes durations.
pub fn show(d: Duration) -> String {
    format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        // 2000-02-29 12:34:56.789 UTC, a leap day.
        assert_eq!(utc(951_827_696_789), "2000-02-29 12:34:56.789");
        // 2026-11-22 00:00:00 UTC.
        assert_eq!(utc(1_795_305_600_000), "2026-11-22 00:00:00.000");
    }

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let secs: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
