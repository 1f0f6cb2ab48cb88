//! The epoch log: per source instance, where each epoch ended, durable before the epoch closes.
//!
//! A sink that writes an epoch's results as soon as the epoch is over ([`crate::Sink::replays`])
//! relies on this log. Each source instance appends one [`EpochEntry`] per epoch it closes (the
//! offset after the epoch's last record in each partition it reads, the watermark it reported,
//! whether its input had ended) and syncs it *before* it lets the epoch close (downgrades its
//! capabilities). So once a sink's input frontier has passed epoch `e`, every source instance of
//! every worker has logged `e`: a crash after that point can cut `e` again exactly as it was.
//!
//! After a restore from checkpoint `c`, each instance replays the epochs after `c` from its log:
//! it reads each partition up to the logged offset, reports the logged watermark, and closes
//! the epoch there (not on the timer). Operators apply an epoch's records once its frontier has
//! passed and their results depend only on the records and where the epochs were cut (see the
//! crate's time model), so every replayed epoch gives the results it gave before the crash, and
//! a sink can recognise what it already wrote. Once the log is replayed, epochs are cut live.
//!
//! One log per source instance: `log/epochs-<source>-w<worker>.log` in the job's store folder
//! (see [`crate::checkpoint`]). Entries up to a complete checkpoint are dropped once the next one
//! is complete. Replay needs the worker count of the run that wrote the log (partitions and keys
//! are spread by it); a different count is refused with an error.
//!
//! Ingestion times (of records without event times of their own, in a job without an
//! extractor) are one per epoch while the log is kept: the wall-clock time of the epoch's first
//! read, logged with the epoch and given again on replay.
//!
//! A partition whose start a reader resolves when it opens (Kafka's latest offset) is logged at
//! that start from its first epoch ([`crate::PartitionReader::start_offset`]), so replay and
//! checkpoints go on from there rather than resolving the start again.

use std::collections::VecDeque;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::DurableLog;
use crate::error::{Error, Result};
use crate::recovery::{decode, encode};
use crate::watermark::WmValue;

/// What a source instance logs about one epoch it closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpochEntry {
    /// The epoch.
    pub(crate) epoch: u64,
    /// The number of workers of the run (replay needs the same).
    pub(crate) workers: u32,
    /// Per partition read so far: its name, the offset after its last record at the end of the
    /// epoch, and the largest event time read.
    pub(crate) parts: Vec<(String, u64, i64)>,
    /// The watermark the instance reported for the epoch.
    pub(crate) value: WmValue,
    /// Every partition had ended: the source's last epoch.
    pub(crate) finished: bool,
    /// The ingestion time of the epoch's records that have no event time of their own (one
    /// per epoch while the log is kept, so that a replay gives them the same), if it read any.
    pub(crate) ingest: Option<i64>,
}

/// A source instance's epoch log, open for appending.
pub(crate) struct EpochLog {
    log: DurableLog,
    /// The newest checkpoint whose epochs have been dropped from the log.
    trimmed: u64,
}

/// The log's name for the instance of source `source` on worker `worker`: the source's name
/// with every character other than letters, digits, `-` and `_` as `_`.
fn log_name(source: &str, worker: usize) -> String {
    let clean: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    format!("epochs-{clean}-w{worker}")
}

impl EpochLog {
    /// Opens the log of source `source` on worker `worker` of `workers` in `dir` (the job's
    /// store folder) for a run that resumes after checkpoint `resumed` (0: a fresh run), and
    /// returns it with the entries to replay: those after `resumed`, in epoch order. A fresh
    /// run replays nothing and starts an empty log.
    pub(crate) fn open(
        dir: &Path,
        source: &str,
        worker: usize,
        workers: usize,
        resumed: u64,
    ) -> Result<(EpochLog, VecDeque<EpochEntry>)> {
        let name = log_name(source, worker);
        let mut log = DurableLog::open(dir, &name)?;
        let mut replay = VecDeque::new();
        if resumed == 0 {
            log.retain(|_| false)?;
        } else {
            for bytes in DurableLog::read_all(dir, &name)? {
                let entry: EpochEntry = decode(&bytes).map_err(|e| Error::Checkpoint {
                    path: log.path().to_path_buf(),
                    reason: format!("an entry of the epoch log cannot be read: {e}"),
                })?;
                if entry.epoch <= resumed {
                    continue;
                }
                if entry.workers as usize != workers {
                    return Err(Error::Checkpoint {
                        path: log.path().to_path_buf(),
                        reason: format!(
                            "the epochs after checkpoint {resumed} were cut on {} workers; \
                             they can only be replayed on as many (this run has {workers})",
                            entry.workers
                        ),
                    });
                }
                if let Some(last) = replay.back().map(|e: &EpochEntry| e.epoch) {
                    if entry.epoch != last + 1 {
                        return Err(Error::Checkpoint {
                            path: log.path().to_path_buf(),
                            reason: format!(
                                "the epoch log jumps from epoch {last} to {}",
                                entry.epoch
                            ),
                        });
                    }
                } else if entry.epoch != resumed + 1 {
                    return Err(Error::Checkpoint {
                        path: log.path().to_path_buf(),
                        reason: format!(
                            "the epoch log starts at epoch {} after checkpoint {resumed}",
                            entry.epoch
                        ),
                    });
                }
                replay.push_back(entry);
            }
            let keep = replay.len();
            log.retain(|b| decode::<EpochEntry>(b).is_ok_and(|e| e.epoch > resumed))?;
            debug_assert_eq!(log.len(), keep);
        }
        Ok((
            EpochLog {
                log,
                trimmed: resumed,
            },
            replay,
        ))
    }

    /// Appends `entry` and syncs it to disk.
    pub(crate) fn append(&mut self, entry: &EpochEntry) -> Result<()> {
        self.log.append(&encode(entry)?)
    }

    /// Drops the entries of epochs up to `committed` (a complete checkpoint), at most once per
    /// checkpoint.
    pub(crate) fn trim(&mut self, committed: u64) -> Result<()> {
        if committed <= self.trimmed {
            return Ok(());
        }
        self.trimmed = committed;
        self.log
            .retain(|b| decode::<EpochEntry>(b).is_ok_and(|e| e.epoch > committed))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: u64, workers: u32) -> EpochEntry {
        EpochEntry {
            epoch,
            workers,
            parts: vec![("t/0".into(), epoch * 10, epoch as i64)],
            value: WmValue::At(epoch as i64),
            finished: false,
            ingest: Some(epoch as i64 * 100),
        }
    }

    #[test]
    fn replays_the_epochs_after_the_checkpoint_and_trims_at_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, replay) = EpochLog::open(dir.path(), "bids in", 1, 2, 0).unwrap();
        assert!(replay.is_empty());
        for e in 1..=7 {
            log.append(&entry(e, 2)).unwrap();
        }
        drop(log);
        let (mut log, replay) = EpochLog::open(dir.path(), "bids in", 1, 2, 4).unwrap();
        let want: Vec<EpochEntry> = (5..=7).map(|e| entry(e, 2)).collect();
        assert_eq!(Vec::from(replay), want);
        // The replayed run logs its later epochs after the kept ones.
        log.append(&entry(8, 2)).unwrap();
        log.trim(6).unwrap();
        drop(log);
        let (_, replay) = EpochLog::open(dir.path(), "bids in", 1, 2, 6).unwrap();
        let want: Vec<EpochEntry> = (7..=8).map(|e| entry(e, 2)).collect();
        assert_eq!(Vec::from(replay), want);
        // Another worker's log is its own.
        let (_, other) = EpochLog::open(dir.path(), "bids in", 0, 2, 6).unwrap();
        assert!(other.is_empty());
    }

    #[test]
    fn refuses_another_worker_count_and_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EpochLog::open(dir.path(), "s", 0, 2, 0).unwrap();
        log.append(&entry(3, 2)).unwrap();
        log.append(&entry(4, 2)).unwrap();
        drop(log);
        let e = EpochLog::open(dir.path(), "s", 0, 3, 2).err().unwrap();
        assert!(e.to_string().contains("on 2 workers"), "{e}");
        let e = EpochLog::open(dir.path(), "s", 0, 2, 1).err().unwrap();
        assert!(e.to_string().contains("starts at epoch 3"), "{e}");
    }
}
