//! [`FileSink`]: writes a stream's records as JSON lines into one file, atomically at close,
//! exactly once across restarts from checkpoints; and [`write_json_lines`], the same for a
//! slice outside a job.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use runnel_engine::recovery::{decode, encode};
use runnel_engine::{Data, Epoch, Error, Event, Result, Routing, Sink, SinkContext};
use serde::Serialize;

use super::atomic::{sync_dir, AtomicFile};

/// A sink that writes each record's data as one JSON line into the file at its path.
///
/// Every record goes to worker 0 ([`Routing::Single`]). It keeps each epoch's lines until the
/// epoch is complete, then appends them, epoch by epoch, to a partial file next to the target
/// (`.<name>.partial`). [`Sink::close`] fsyncs the partial file and renames it onto the
/// target, so the target appears whole or not at all. Lines are in epoch order, and within an
/// epoch in arrival order, which depends on the number of workers; [`FileSink::sorted`] sorts
/// them at close so the file is the same for every run of the same records.
///
/// **Checkpoints.** A checkpoint records the partial file's length after the checkpoint's
/// epoch (fsynced first). A run restored from it truncates the partial file to that length
/// and goes on, so after any number of crashes and restarts the target holds every line
/// exactly once. Once a checkpoint has been taken, a failing or killed run leaves the partial
/// file for the restart; otherwise [`Sink::abort`] (and dropping an unclosed sink) removes it.
///
/// Errors are [`Error::Io`] naming the file: the target when it cannot be replaced or a record
/// cannot be encoded, the partial file when it cannot be written or is shorter than the
/// checkpoint says.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    sorted: bool,
    partial: Option<BufWriter<File>>,
    /// Encoded lines of epochs not yet complete.
    pending: BTreeMap<u64, Vec<u8>>,
    /// The partial file's length after each complete epoch not yet checkpointed.
    len_at: BTreeMap<u64, u64>,
    /// The partial file's length now, and after the last checkpoint.
    len: u64,
    checkpointed_len: u64,
    /// Restored from a checkpoint: the length to truncate the partial file to.
    resume_len: Option<u64>,
    /// A checkpoint refers to the partial file: keep it when the run fails.
    keep_partial: bool,
    closed: bool,
}

impl FileSink {
    /// A sink writing JSON lines to `path` (replaced at close).
    pub fn json(path: impl Into<PathBuf>) -> Self {
        FileSink {
            path: path.into(),
            sorted: false,
            partial: None,
            pending: BTreeMap::new(),
            len_at: BTreeMap::new(),
            len: 0,
            checkpointed_len: 0,
            resume_len: None,
            keep_partial: false,
            closed: false,
        }
    }

    /// Writes the lines sorted by their JSON text at close, so that the file does not depend
    /// on the number of workers or on scheduling.
    pub fn sorted(mut self) -> Self {
        self.sorted = true;
        self
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `.<name>.partial` next to the target.
    fn partial_path(&self) -> Result<PathBuf> {
        let Some(name) = self.path.file_name() else {
            return Err(Error::io(
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a file path (it has no file name)",
                ),
            ));
        };
        let mut partial = std::ffi::OsString::from(".");
        partial.push(name);
        partial.push(".partial");
        Ok(self.path.with_file_name(partial))
    }

    /// Appends the lines of every pending epoch up to `through` to the partial file.
    fn write_through(&mut self, through: u64) -> Result<()> {
        let partial = self.partial_path()?;
        let Some(out) = self.partial.as_mut() else {
            return Err(Error::io(
                &partial,
                std::io::Error::other("file sink written before open or after close"),
            ));
        };
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > through {
                break;
            }
            let (epoch, lines) = entry.remove_entry();
            out.write_all(&lines).map_err(|e| Error::io(&partial, e))?;
            self.len += lines.len() as u64;
            self.len_at.insert(epoch, self.len);
        }
        Ok(())
    }

    fn remove_partial(&mut self) {
        self.partial = None;
        if !self.keep_partial {
            if let Ok(p) = self.partial_path() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// An [`Error::Io`] for `path`: a record that cannot be encoded as JSON.
pub(super) fn encode_error(path: &Path, e: serde_json::Error) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot encode a record as JSON: {e}"),
        ),
    )
}

impl<T: Data> Sink<T> for FileSink {
    fn routing(&self) -> Routing {
        Routing::Single
    }

    fn open(&mut self, _ctx: &SinkContext) -> Result<()> {
        if self.partial.is_some() || self.closed {
            return Ok(());
        }
        let path = self.partial_path()?;
        let io = |e| Error::io(&path, e);
        let file = match self.resume_len {
            Some(_) if !path.exists() && self.path.exists() => {
                // Restored from the job's final checkpoint after the rename at close: the
                // target is whole already.
                self.closed = true;
                return Ok(());
            }
            Some(len) => {
                // Restored: keep what the checkpoint covers, drop what came after it.
                let mut file = OpenOptions::new().write(true).open(&path).map_err(io)?;
                let have = file.metadata().map_err(io)?.len();
                if have < len {
                    return Err(Error::io(
                        &path,
                        std::io::Error::other(format!(
                            "the partial output holds {have} bytes, the checkpoint says {len}:                              it was changed or removed since"
                        )),
                    ));
                }
                file.set_len(len).map_err(io)?;
                file.seek(SeekFrom::End(0)).map_err(io)?;
                self.len = len;
                self.checkpointed_len = len;
                self.keep_partial = true;
                file
            }
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io)?,
        };
        self.partial = Some(BufWriter::with_capacity(1 << 16, file));
        Ok(())
    }

    fn write(&mut self, epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        if self.closed {
            records.clear();
            return Ok(());
        }
        let buf = self.pending.entry(epoch.0).or_default();
        let mut failed = None;
        for e in records.iter() {
            let start = buf.len();
            if let Err(err) = serde_json::to_writer(&mut *buf, &e.data) {
                buf.truncate(start);
                failed = Some(err);
                break;
            }
            buf.push(b'\n');
        }
        records.clear();
        match failed {
            Some(err) => Err(encode_error(&self.path, err)),
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
        if self.closed {
            return Ok(Some(encode(&self.checkpointed_len)?));
        }
        // Every epoch up to `through` is complete (and written); make it durable.
        self.write_through(through.0)?;
        let partial = self.partial_path()?;
        if let Some(out) = self.partial.as_mut() {
            out.flush().map_err(|e| Error::io(&partial, e))?;
            out.get_ref()
                .sync_data()
                .map_err(|e| Error::io(&partial, e))?;
        }
        if let Some((_, &len)) = self.len_at.range(..=through.0).next_back() {
            self.checkpointed_len = len;
        }
        self.len_at.retain(|&e, _| e > through.0);
        self.keep_partial = true;
        Ok(Some(encode(&self.checkpointed_len)?))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.resume_len = Some(decode(state)?);
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        if self.partial.is_none() {
            Sink::<T>::open(self, &SinkContext::detached("file"))?;
        }
        self.write_through(u64::MAX)?;
        self.closed = true;
        let partial = self.partial_path()?;
        let out = self.partial.take().expect("opened");
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&partial, e.into_error()))?;
        if self.sorted {
            drop(file);
            let mut buf = Vec::new();
            File::open(&partial)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(|e| Error::io(&partial, e))?;
            let mut lines: Vec<&[u8]> = buf.split_inclusive(|&b| b == b'\n').collect();
            // Compare without the newline each line ends with.
            lines.sort_unstable_by(|a, b| a[..a.len() - 1].cmp(&b[..b.len() - 1]));
            let mut target = AtomicFile::create_resumable(&self.path)?;
            for line in lines {
                target.write_all(line)?;
            }
            target.commit()?;
            let _ = std::fs::remove_file(&partial);
        } else {
            file.sync_all().map_err(|e| Error::io(&partial, e))?;
            drop(file);
            std::fs::rename(&partial, &self.path).map_err(|e| Error::io(&self.path, e))?;
            sync_dir(&self.path);
        }
        Ok(())
    }

    fn abort(&mut self) {
        self.closed = true;
        self.pending.clear();
        self.remove_partial();
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.closed && self.partial.is_some() {
            self.remove_partial();
        }
    }
}

/// Writes `items` to `path` as JSON lines, one item per line, atomically (a temporary file of
/// its own next to `path`, fsync, rename): test fixtures and sample data. Several threads may
/// write the same path at once; the path then holds one of their outputs whole.
///
/// Errors: [`Error::Io`] naming the file that could not be written or the target whose item
/// could not be encoded.
pub fn write_json_lines<T: Serialize>(path: impl AsRef<Path>, items: &[T]) -> Result<()> {
    let path = path.as_ref();
    let mut file = AtomicFile::create_unique(path)?;
    let mut line = Vec::with_capacity(256);
    for item in items {
        line.clear();
        serde_json::to_writer(&mut line, item).map_err(|e| encode_error(path, e))?;
        line.push(b'\n');
        file.write_all(&line)?;
    }
    file.commit()
}
