//! [`FileSink`]: writes a stream's records as JSON lines into one file, atomically at close;
//! and [`write_json_lines`], the same for a slice outside a job.

use std::path::{Path, PathBuf};

use runnel_engine::{Data, Epoch, Error, Event, Result, Routing, Sink, SinkContext};
use serde::Serialize;

use super::atomic::AtomicFile;

/// A sink that writes each record's data as one JSON line into the file at its path.
///
/// Every record goes to worker 0 ([`Routing::Single`]), which writes into a temporary file next
/// to the target (`.<name>.tmp-<pid>` in the same directory). [`Sink::close`] flushes, fsyncs and
/// renames it onto the target, so the target appears whole or not at all; [`Sink::abort`] (and
/// dropping an unclosed sink) removes the temporary file. Lines are in arrival order, which
/// depends on the number of workers; [`FileSink::sorted`] makes the file the same for every run
/// of the same records.
///
/// Errors are [`Error::Io`] naming the file: the target when it cannot be replaced or a record
/// cannot be encoded, the temporary file when it cannot be written.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    sorted: bool,
    file: Option<AtomicFile>,
    /// Encoded lines: the current batch, or (sorted) everything so far.
    buf: Vec<u8>,
    /// Sorted mode: each line's range in `buf`.
    lines: Vec<(usize, usize)>,
    closed: bool,
}

impl FileSink {
    /// A sink writing JSON lines to `path` (replaced at close).
    pub fn json(path: impl Into<PathBuf>) -> Self {
        FileSink {
            path: path.into(),
            sorted: false,
            file: None,
            buf: Vec::new(),
            lines: Vec::new(),
            closed: false,
        }
    }

    /// Buffers every line and writes them sorted by their JSON text at close, so that the file
    /// does not depend on the number of workers or on scheduling.
    pub fn sorted(mut self) -> Self {
        self.sorted = true;
        self
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn encode<T: Serialize>(&mut self, data: &T) -> Result<()> {
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, data) {
            self.buf.truncate(start);
            return Err(encode_error(&self.path, e));
        }
        self.buf.push(b'\n');
        if self.sorted {
            self.lines.push((start, self.buf.len()));
        }
        Ok(())
    }
}

fn encode_error(path: &Path, e: serde_json::Error) -> Error {
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
        if self.file.is_none() && !self.closed {
            self.file = Some(AtomicFile::create(&self.path)?);
        }
        Ok(())
    }

    fn write(&mut self, _epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::io(
                &self.path,
                std::io::Error::other("file sink written before open or after close"),
            ));
        };
        let mut result = Ok(());
        for e in records.drain(..) {
            if let Err(err) = self.encode(&e.data) {
                result = Err(err);
                break;
            }
        }
        records.clear();
        if result.is_ok() && !self.sorted {
            result = file.write_all(&self.buf);
            self.buf.clear();
        }
        self.file = Some(file);
        result
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut file = match self.file.take() {
            Some(f) => f,
            None => AtomicFile::create(&self.path)?,
        };
        self.closed = true;
        if self.sorted {
            let buf = std::mem::take(&mut self.buf);
            let mut lines = std::mem::take(&mut self.lines);
            // Compare without the newline each line ends with.
            lines.sort_unstable_by(|a, b| buf[a.0..a.1 - 1].cmp(&buf[b.0..b.1 - 1]));
            for (start, end) in lines {
                file.write_all(&buf[start..end])?;
            }
        } else {
            file.write_all(&self.buf)?;
            self.buf.clear();
        }
        file.commit()
    }

    fn abort(&mut self) {
        self.closed = true;
        self.buf = Vec::new();
        self.lines = Vec::new();
        if let Some(file) = self.file.take() {
            file.discard();
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
