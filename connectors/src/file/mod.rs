//! JSON-lines files: [`FileSource`] reads one partition per file (JSON records or text lines),
//! [`FileSink`] writes one file atomically (temporary file, fsync, rename), and
//! [`write_json_lines`] writes a slice the same way outside a job.

mod atomic;
mod sink;
mod source;

pub use sink::{write_json_lines, FileSink};
pub use source::{FileSource, IntoPaths};
