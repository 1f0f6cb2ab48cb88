//! JSON-lines files: [`FileSource`] reads one partition per file (JSON records or text lines),
//! [`FileSink`] writes one file atomically (temporary file, fsync, rename),
//! [`PartitionedFileSink`] writes one file per partition and worker the same way, and
//! [`write_json_lines`] writes a slice like [`FileSink`] outside a job.

mod atomic;
mod partitioned;
mod sink;
mod source;

pub use partitioned::PartitionedFileSink;
pub use sink::{write_json_lines, FileSink};
pub use source::{FileSource, IntoPaths};
