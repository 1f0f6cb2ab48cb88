//! The engine's error type: what went wrong and where.

use std::path::PathBuf;

/// The result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a job from being built or from running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job graph is not valid (a stream that reaches no sink, two operators with one name, ...).
    #[error("job '{job}' is invalid: {reason}")]
    InvalidJob {
        /// The job's name.
        job: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--set key=value` names a key the job does not read.
    #[error("job '{job}' has no config key '{key}' (it knows: {known})")]
    UnknownConfigKey {
        /// The job's name.
        job: String,
        /// The key given.
        key: String,
        /// The keys the job reads, comma-separated.
        known: String,
    },
    /// A config value does not parse as the type the job expects.
    #[error("config key '{key}': cannot parse '{value}' as {expected}")]
    BadConfigValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What the job expected (for example "an unsigned integer").
        expected: String,
    },
    /// A record could not be decoded and the source's policy is to fail.
    #[error("source '{source_name}': bad record at {location}: {reason}")]
    BadRecord {
        /// The source operator's name.
        source_name: String,
        /// Where the record is (file:line, topic/partition@offset).
        location: String,
        /// Why it could not be decoded (names the field where the decoder says so).
        reason: String,
    },
    /// A source failed (I/O, broker, ...).
    #[error("source '{source_name}': {reason}")]
    Source {
        /// The source operator's name.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// A sink failed.
    #[error("sink '{sink}': {reason}")]
    Sink {
        /// The sink operator's name.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A checkpoint or the durable epoch log is missing, incomplete or corrupt, or cannot be
    /// written as asked (`path` is the file or folder at fault).
    #[error("checkpoint store: {path}: {reason}")]
    Checkpoint {
        /// The file or folder at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The runtime failed (worker panic, cluster connection, ...).
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
