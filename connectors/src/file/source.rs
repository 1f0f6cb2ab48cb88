//! [`FileSource`]: reads files line by line, one partition per file, decoding each line as JSON
//! (or taking it as text); lines that do not decode become bad records at `path:line`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use runnel_engine::{
    Data, Error, PartitionId, PartitionReader, ReadStatus, Reader, Result, Source, SourceContext,
};

/// Turns a line (without its line ending) into a record, or says why it cannot.
type Decode<T> = fn(&[u8]) -> std::result::Result<T, String>;

/// One path or several: what [`FileSource::json`] and [`FileSource::text`] take.
pub trait IntoPaths {
    /// The paths, in order.
    fn into_paths(self) -> Vec<PathBuf>;
}

macro_rules! one_path {
    ($($t:ty),*) => {$(
        impl IntoPaths for $t {
            fn into_paths(self) -> Vec<PathBuf> {
                vec![PathBuf::from(self)]
            }
        }
    )*};
}
one_path!(&str, String, &String, &Path, PathBuf, &PathBuf);

impl<P: AsRef<Path>> IntoPaths for Vec<P> {
    fn into_paths(self) -> Vec<PathBuf> {
        self.iter().map(|p| p.as_ref().to_path_buf()).collect()
    }
}

impl<P: AsRef<Path>> IntoPaths for &Vec<P> {
    fn into_paths(self) -> Vec<PathBuf> {
        self.iter().map(|p| p.as_ref().to_path_buf()).collect()
    }
}

impl<P: AsRef<Path>> IntoPaths for &[P] {
    fn into_paths(self) -> Vec<PathBuf> {
        self.iter().map(|p| p.as_ref().to_path_buf()).collect()
    }
}

impl<P: AsRef<Path>, const N: usize> IntoPaths for [P; N] {
    fn into_paths(self) -> Vec<PathBuf> {
        self.iter().map(|p| p.as_ref().to_path_buf()).collect()
    }
}

/// A source reading files line by line: one partition per file (named by its path), each
/// record's offset its 1-based line number.
///
/// [`FileSource::json`] decodes each non-blank line as a JSON `T`; a line that does not decode
/// is a bad record at `path:line` whose reason is serde_json's message (which names a missing
/// or mistyped field). [`FileSource::text`] yields every line as a `String`. Records carry no
/// event time of their own: set one with `SourceOptions::event_time`, else they get ingestion
/// time.
///
/// A file that cannot be opened fails the job with [`Error::Io`] naming it.
pub struct FileSource<T> {
    paths: Vec<PathBuf>,
    decode: Decode<T>,
    skip_blank: bool,
    _records: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for FileSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("paths", &self.paths)
            .field("skip_blank", &self.skip_blank)
            .finish()
    }
}

impl<T> Clone for FileSource<T> {
    fn clone(&self) -> Self {
        FileSource {
            paths: self.paths.clone(),
            decode: self.decode,
            skip_blank: self.skip_blank,
            _records: PhantomData,
        }
    }
}

fn decode_json<T: Data>(line: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

fn decode_text(line: &[u8]) -> std::result::Result<String, String> {
    match std::str::from_utf8(line) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(format!("line is not valid UTF-8: {e}")),
    }
}

impl<T: Data> FileSource<T> {
    /// Reads JSON lines from `paths` (one path or several), one partition per file; blank
    /// lines are skipped.
    pub fn json(paths: impl IntoPaths) -> Self {
        FileSource {
            paths: paths.into_paths(),
            decode: decode_json::<T>,
            skip_blank: true,
            _records: PhantomData,
        }
    }

    /// The files, in partition order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl FileSource<String> {
    /// Reads the lines of `paths` (one path or several) as text, one partition per file:
    /// every line, blank ones included, without its line ending. A line that is not UTF-8 is a
    /// bad record.
    pub fn text(paths: impl IntoPaths) -> Self {
        FileSource {
            paths: paths.into_paths(),
            decode: decode_text,
            skip_blank: false,
            _records: PhantomData,
        }
    }
}

impl<T: Data> Source for FileSource<T> {
    type Item = T;

    fn partitions(&mut self, ctx: &SourceContext) -> Result<Vec<String>> {
        if self.paths.is_empty() {
            return Err(Error::Source {
                source_name: ctx.name.clone(),
                reason: "no input files were given".to_string(),
            });
        }
        Ok(self.paths.iter().map(|p| p.display().to_string()).collect())
    }

    fn open(
        &mut self,
        partition: PartitionId,
        ctx: &SourceContext,
    ) -> Result<Box<dyn PartitionReader<T>>> {
        let Some(path) = self.paths.get(partition.0 as usize) else {
            return Err(Error::Source {
                source_name: ctx.name.clone(),
                reason: format!(
                    "{} input files, cannot open partition {}",
                    self.paths.len(),
                    partition.0
                ),
            });
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Box::new(LineReader {
            path: path.clone(),
            shown: path.display().to_string(),
            input: BufReader::with_capacity(1 << 16, file),
            line: Vec::with_capacity(256),
            line_no: 0,
            decode: self.decode,
            skip_blank: self.skip_blank,
        }))
    }
}

/// Reads one file.
struct LineReader<T> {
    path: PathBuf,
    /// The path as bad-record locations show it.
    shown: String,
    input: BufReader<File>,
    line: Vec<u8>,
    /// The number of the last line read (1-based).
    line_no: u64,
    decode: Decode<T>,
    skip_blank: bool,
}

impl<T: Data> PartitionReader<T> for LineReader<T> {
    fn read(&mut self, out: &mut Reader<T>) -> Result<ReadStatus> {
        // At most `budget` lines per call, records or not, so that a call stays short.
        for _ in 0..out.budget() {
            self.line.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io(&self.path, e))?;
            if n == 0 {
                return Ok(ReadStatus::Finished);
            }
            self.line_no += 1;
            let mut text = self.line.as_slice();
            if let Some(rest) = text.strip_suffix(b"\n") {
                text = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            if self.skip_blank && text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match (self.decode)(text) {
                Ok(record) => out.push(self.line_no, record),
                Err(reason) => out.bad(
                    self.line_no,
                    format!("{}:{}", self.shown, self.line_no),
                    reason,
                    String::from_utf8_lossy(text).into_owned(),
                ),
            }
        }
        Ok(ReadStatus::More)
    }
}
