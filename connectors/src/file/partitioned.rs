//! [`PartitionedFileSink`]: writes a stream's records as JSON lines into one directory per
//! partition, `<dir>/<partition>/part-<worker>.jsonl`, each file appearing whole at close,
//! exactly once across restarts from checkpoints.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};

use runnel_engine::recovery::{decode, encode};
use runnel_engine::{Data, Epoch, Error, Event, Result, Sink, SinkContext};

use super::atomic::sync_dir;
use super::sink::encode_error;

/// A sink that writes each record's data as one JSON line into the file of its partition:
/// `<dir>/<partition>/part-<worker>.jsonl`, where `partition(record)` names the partition as a
/// relative path (Hive style, e.g. `dt=2015-07-15/hm=08%3A00`) and `worker` is the global index
/// of the worker that wrote it.
///
/// Every worker writes the records it has ([`runnel_engine::Routing::PerWorker`]): no
/// exchange, and one file per partition and worker that had records of it. A worker keeps each
/// epoch's lines until the epoch is complete, then appends them to a partial file in the
/// partition's directory (`.part-<worker>.jsonl.partial`, opened and closed per epoch, so a
/// run with many partitions holds no file open). [`Sink::close`] fsyncs every partial file and
/// renames it onto its target, so a target appears whole or not at all. Lines are in epoch
/// order, and within an epoch in arrival order. [`Sink::open`] creates `dir`; partition
/// directories are created as their first records come. A run replaces the files it writes
/// and leaves any others in `dir` (of earlier runs, or of workers this run does not have).
///
/// **Checkpoints.** A checkpoint records, per partition, its partial file's length after the
/// checkpoint's epoch (fsynced first). A run restored from it truncates each partial file to
/// that length and goes on, so after crashes and restarts every target holds each of its lines
/// exactly once. Partial files that a failed run created after its last checkpoint are left
/// behind if the restarted run does not write those partitions again. Once a checkpoint has
/// been taken, a failing or killed run leaves its partial files for the restart; otherwise
/// [`Sink::abort`] (and dropping an unclosed sink) removes them.
///
/// Errors are [`Error::Io`] naming the path: `dir` when it cannot be created, a partition's
/// directory when the partition is not a relative path of plain names (no `..`, `.` or root)
/// or cannot be created, a partial file when it cannot be written or is shorter than the
/// checkpoint says, a target when it cannot be replaced or a record cannot be encoded.
///
/// ```
/// use runnel_connectors::PartitionedFileSink;
///
/// // (day, value) records, one directory per day: out/day=3/part-0.jsonl, ...
/// let sink = PartitionedFileSink::json("out", |r: &(u32, String)| format!("day={}", r.0));
/// assert_eq!(sink.dir(), std::path::Path::new("out"));
/// ```
pub struct PartitionedFileSink<T> {
    dir: PathBuf,
    partition: Box<dyn Fn(&T) -> String>,
    worker: Option<usize>,
    /// Partitions already checked to be relative paths of plain names.
    checked: HashSet<String>,
    /// Encoded lines of epochs not yet complete, per partition.
    pending: BTreeMap<u64, HashMap<String, Vec<u8>>>,
    /// Per partition this worker has written (in this run or before the checkpoint it was
    /// restored from): its partial file's length now.
    len: BTreeMap<String, u64>,
    /// The partitions whose partial file this run has opened: a partition not in here is
    /// created (or truncated) at its first write.
    opened: HashSet<String>,
    /// Written since the last fsync.
    unsynced: BTreeSet<String>,
    /// The lengths after each complete epoch not yet checkpointed, of the partitions it wrote.
    len_at: BTreeMap<u64, Vec<(String, u64)>>,
    /// The lengths as of the last checkpoint.
    checkpointed: BTreeMap<String, u64>,
    /// Restored from a checkpoint: the lengths to truncate the partial files to.
    resume: Option<BTreeMap<String, u64>>,
    /// A checkpoint refers to the partial files: keep them when the run fails.
    keep_partial: bool,
    closed: bool,
}

impl<T> std::fmt::Debug for PartitionedFileSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedFileSink")
            .field("dir", &self.dir)
            .field("worker", &self.worker)
            .field("partitions", &self.len.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl<T> PartitionedFileSink<T> {
    /// A sink writing JSON lines under `dir`, each record into the partition
    /// `partition(record)` names (a relative path such as `dt=2015-07-15/hour=08`).
    pub fn json(dir: impl Into<PathBuf>, partition: impl Fn(&T) -> String + 'static) -> Self {
        PartitionedFileSink {
            dir: dir.into(),
            partition: Box::new(partition),
            worker: None,
            checked: HashSet::new(),
            pending: BTreeMap::new(),
            len: BTreeMap::new(),
            opened: HashSet::new(),
            unsynced: BTreeSet::new(),
            len_at: BTreeMap::new(),
            checkpointed: BTreeMap::new(),
            resume: None,
            keep_partial: false,
            closed: false,
        }
    }

    /// The directory the partitions go under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn worker(&self) -> usize {
        self.worker.unwrap_or(0)
    }

    /// `<dir>/<partition>/part-<worker>.jsonl`.
    fn target_path(&self, partition: &str) -> PathBuf {
        self.dir
            .join(partition)
            .join(format!("part-{}.jsonl", self.worker()))
    }

    /// `<dir>/<partition>/.part-<worker>.jsonl.partial`.
    fn partial_path(&self, partition: &str) -> PathBuf {
        self.dir
            .join(partition)
            .join(format!(".part-{}.jsonl.partial", self.worker()))
    }

    /// Appends `bytes` to the partition's partial file (creating it, and its directory, at the
    /// run's first write unless a restored checkpoint refers to it) and returns its length.
    fn append(&mut self, partition: &str, bytes: &[u8]) -> Result<u64> {
        let path = self.partial_path(partition);
        let io = |e| Error::io(&path, e);
        let mut file = if self.opened.contains(partition) {
            OpenOptions::new().append(true).open(&path).map_err(io)?
        } else {
            let dir = self.dir.join(partition);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io)?;
            self.opened.insert(partition.to_string());
            self.len.insert(partition.to_string(), 0);
            file
        };
        file.write_all(bytes).map_err(io)?;
        let len = self
            .len
            .get_mut(partition)
            .expect("opened above or restored");
        *len += bytes.len() as u64;
        self.unsynced.insert(partition.to_string());
        Ok(*len)
    }

    /// Appends the lines of every pending epoch up to `through` to the partial files.
    fn write_through(&mut self, through: u64) -> Result<()> {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > through {
                break;
            }
            let (epoch, parts) = entry.remove_entry();
            let mut lens = Vec::with_capacity(parts.len());
            for (partition, lines) in parts {
                let len = self.append(&partition, &lines)?;
                lens.push((partition, len));
            }
            self.len_at.insert(epoch, lens);
        }
        Ok(())
    }

    /// Fsyncs the partial files written since the last fsync.
    fn sync(&mut self) -> Result<()> {
        for partition in std::mem::take(&mut self.unsynced) {
            let path = self.partial_path(&partition);
            OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|f| f.sync_data())
                .map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// Truncates the partial files of a restored checkpoint to the lengths it recorded.
    fn resume_from(&mut self, lens: BTreeMap<String, u64>) -> Result<()> {
        for (partition, len) in lens {
            let path = self.partial_path(&partition);
            if !path.exists() && self.target_path(&partition).exists() {
                // Restored from the job's final checkpoint after close renamed this one: the
                // target is whole already.
                continue;
            }
            let io = |e| Error::io(&path, e);
            let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
            let have = file.metadata().map_err(io)?.len();
            if have < len {
                return Err(Error::io(
                    &path,
                    std::io::Error::other(format!(
                        "the partial output holds {have} bytes, the checkpoint says {len}: it \
                         was changed or removed since"
                    )),
                ));
            }
            file.set_len(len).map_err(io)?;
            self.opened.insert(partition.clone());
            self.len.insert(partition.clone(), len);
            self.checkpointed.insert(partition, len);
        }
        self.keep_partial = true;
        Ok(())
    }

    fn remove_partials(&mut self) {
        if self.keep_partial || self.worker.is_none() {
            return;
        }
        for partition in &self.opened {
            let _ = std::fs::remove_file(self.partial_path(partition));
        }
        self.opened.clear();
    }
}

/// Whether `partition` names a directory under the sink's: a relative path of plain names.
fn check_partition(dir: &Path, partition: &str) -> Result<()> {
    let plain = !partition.is_empty()
        && Path::new(partition)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        // Not `dir.join`, which an absolute partition would replace.
        let mut path = dir.as_os_str().to_owned();
        path.push("/");
        path.push(partition);
        Err(Error::io(
            path,
            std::io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "partition '{partition}' is not a relative path of plain names (no '..', \
                     '.' or leading '/')"
                ),
            ),
        ))
    }
}

impl<T: Data> Sink<T> for PartitionedFileSink<T> {
    fn open(&mut self, ctx: &SinkContext) -> Result<()> {
        if self.worker.is_some() || self.closed {
            return Ok(());
        }
        self.worker = Some(ctx.worker);
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        if let Some(lens) = self.resume.take() {
            self.resume_from(lens)?;
        }
        Ok(())
    }

    fn write(&mut self, epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        if self.closed {
            records.clear();
            return Ok(());
        }
        let parts = self.pending.entry(epoch.0).or_default();
        let mut failed = None;
        for e in records.iter() {
            let partition = (self.partition)(&e.data);
            if !self.checked.contains(&partition) {
                if let Err(err) = check_partition(&self.dir, &partition) {
                    failed = Some(err);
                    break;
                }
                self.checked.insert(partition.clone());
            }
            let buf = parts.entry(partition).or_default();
            let start = buf.len();
            if let Err(err) = serde_json::to_writer(&mut *buf, &e.data) {
                buf.truncate(start);
                let partition = (self.partition)(&e.data);
                failed = Some(encode_error(&self.target_path(&partition), err));
                break;
            }
            buf.push(b'\n');
        }
        records.clear();
        match failed {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn epoch_done(&mut self, epoch: Epoch) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.write_through(epoch.0)
    }

    fn snapshot(&mut self, through: Epoch) -> Result<Option<Vec<u8>>> {
        if !self.closed {
            // Every epoch up to `through` is complete (and written); make it durable.
            self.write_through(through.0)?;
            self.sync()?;
            let later = self.len_at.split_off(&(through.0 + 1));
            for (partition, len) in std::mem::replace(&mut self.len_at, later)
                .into_values()
                .flatten()
            {
                self.checkpointed.insert(partition, len);
            }
            self.keep_partial = true;
        }
        Ok(Some(encode(&self.checkpointed)?))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.resume = Some(decode(state)?);
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        if self.worker.is_none() {
            Sink::<T>::open(self, &SinkContext::detached("partitioned-file"))?;
        }
        self.write_through(u64::MAX)?;
        self.sync()?;
        self.closed = true;
        for partition in &self.opened {
            let (partial, target) = (self.partial_path(partition), self.target_path(partition));
            std::fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))?;
            sync_dir(&target);
        }
        Ok(())
    }

    fn abort(&mut self) {
        self.closed = true;
        self.pending.clear();
        self.remove_partials();
    }
}

impl<T> Drop for PartitionedFileSink<T> {
    fn drop(&mut self) {
        if !self.closed {
            self.remove_partials();
        }
    }
}
