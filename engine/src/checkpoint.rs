//! Checkpoint storage: where complete checkpoints are kept, and the durable append-only log that
//! records what each epoch contained.
//!
//! This module owns the bytes on disk, not their meaning: a checkpoint is a set of named *parts*
//! (opaque byte strings, one per stateful operator instance or source instance, written by whoever
//! owns that state) plus a *manifest* that makes the set complete. The engine decides what goes in a
//! part and when to commit; the store makes sure that what it hands back is exactly what was
//! committed, or says why not.
//!
//! # Contract of a [`CheckpointStore`]
//!
//! What the engine promises the store:
//! * checkpoint ids grow: a checkpoint is committed only after every checkpoint with a smaller id
//!   was committed or abandoned (an incomplete checkpoint older than a complete one is dead and
//!   [`CheckpointStore::retain`] deletes it);
//! * an id is not reused as is: new checkpoints take ids from [`CheckpointStore::next_id`], or,
//!   when ids are epochs that a restarted run goes through again, the run first deletes what lies
//!   after the checkpoint it starts from ([`CheckpointStore::discard_after`]); otherwise parts
//!   left by a crashed run could be committed as if they were new, and a manifest left by it
//!   would refuse the new parts;
//! * one writer per part at a time, and one run of a job at a time (the workers of that run, in
//!   one process or several sharing the folder, write different parts).
//!
//! What the store promises back:
//! * a checkpoint counts only once [`commit`](CheckpointStore::commit) has returned: until then
//!   no reader sees it, and a crash at any moment (of the process; with `fsync`, of the machine)
//!   leaves either the checkpoint complete or not there at all;
//! * every checkpoint it returns has been checked against its manifest (each part present, with
//!   the recorded size and CRC-32); one that fails is skipped with a `tracing` warning that names
//!   the file and what is wrong, and [`latest`](CheckpointStore::latest) falls back to the
//!   previous complete one;
//! * [`retain`](CheckpointStore::retain) never deletes the newest complete checkpoint.
//!
//! # The local directory format ([`LocalDirStore`])
//!
//! ```text
//! <state_dir>/<job>/                        one folder per job (state_dir defaults to ./runnel-state)
//!   chk-00000000000000000007/               one folder per checkpoint, the id in 20 digits
//!     part-<name>.bin                       a part's bytes, as given to write_part
//!     MANIFEST.json                         present only once the checkpoint is complete
//!     .<file>.tmp.<pid>.<n>                 a write in progress (or the leftover of a crash)
//!   log/<name>.log                          a DurableLog
//! ```
//!
//! `MANIFEST.json` is `{"format": "runnel-checkpoint/1", "crc32": C, "checkpoint": I}` where `I`
//! is the [`CheckpointInfo`] (id, epoch, creation time, each part's name, size and CRC-32, and the
//! engine's string metadata) and `C` is the CRC-32 of `I` serialized as compact JSON, so that a
//! damaged manifest that still parses is caught too.
//!
//! Every file is written to a temporary name in its final folder, `fsync`ed, renamed into place,
//! and the folder is `fsync`ed; a folder that is created is made durable in its parent the same way.
//! The manifest is written last, so the rename of `MANIFEST.json` is the moment the checkpoint
//! becomes complete.
//!
//! # The log format ([`DurableLog`])
//!
//! An 8-byte header `RNLLOG\0\x01`, then records, each `len: u32 LE`, `crc: u32 LE` (CRC-32 of
//! the four length bytes followed by the payload), and `len` payload bytes. A crash can leave only
//! a torn tail (a record cut short, or one that fails its checksum, at the end): readers stop there,
//! and the next [`DurableLog::open`] truncates it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where checkpoints are kept when no `--state-dir` is given: relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = "runnel-state";

/// How many complete checkpoints to keep when the job does not say.
pub const DEFAULT_KEEP: usize = 3;

/// The name of a checkpoint's manifest file.
pub const MANIFEST_FILE: &str = "MANIFEST.json";

/// The `format` written in every manifest; a manifest with another one is not read.
pub const MANIFEST_FORMAT: &str = "runnel-checkpoint/1";

/// The folder, inside a job's store directory, that holds its [`DurableLog`]s.
pub const LOG_DIR: &str = "log";

const CHECKPOINT_PREFIX: &str = "chk-";
const ID_DIGITS: usize = 20;
const MAX_NAME_LEN: usize = 200;

/// One part of a checkpoint as its manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The part's name (a safe file name; see [`check_name`]).
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// The CRC-32 (IEEE) of its bytes.
    pub crc32: u32,
}

/// A complete checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The checkpoint's id (ids grow; see [`CheckpointStore::next_id`]).
    pub id: u64,
    /// The epoch whose end the checkpoint captures, as given to [`CheckpointStore::commit`].
    pub epoch: u64,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Its parts, in the order given to [`CheckpointStore::commit`].
    pub parts: Vec<PartInfo>,
    /// The engine's metadata (for example the job's config or the runnel version).
    pub meta: BTreeMap<String, String>,
}

impl CheckpointInfo {
    /// The total size of the parts, in bytes.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// The part named `name`, if the checkpoint has one.
    pub fn part(&self, name: &str) -> Option<&PartInfo> {
        self.parts.iter().find(|p| p.name == name)
    }

    /// The parts a later checkpoint may link from this one, by name with their size and CRC:
    /// all but the workers' own parts (`w0`, `w1`... for `workers` workers), which every
    /// checkpoint writes anew.
    pub fn linkable_parts(&self, workers: usize) -> BTreeMap<String, (u64, u32)> {
        let own: BTreeSet<String> = (0..workers).map(|w| format!("w{w}")).collect();
        self.parts
            .iter()
            .filter(|p| !own.contains(&p.name))
            .map(|p| (p.name.clone(), (p.size, p.crc32)))
            .collect()
    }

    /// The bytes this checkpoint wrote rather than linked: its size less its parts that are
    /// the same (name, size and CRC) as one of `linkable`, the
    /// [`CheckpointInfo::linkable_parts`] of the checkpoint before it.
    pub fn written_over(&self, linkable: &BTreeMap<String, (u64, u32)>) -> u64 {
        self.parts
            .iter()
            .filter(|p| linkable.get(&p.name) != Some(&(p.size, p.crc32)))
            .map(|p| p.size)
            .sum()
    }

    /// The worker count recorded when it was committed (`meta["workers"]`), if any.
    pub fn workers(&self) -> Option<usize> {
        self.meta.get("workers").and_then(|w| w.parse().ok())
    }
}

/// What [`CheckpointStore::scan`] found for one checkpoint id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Committed, and every part checks out.
    Complete(CheckpointInfo),
    /// Not committed (no manifest): in progress, or the leftover of a crash.
    Incomplete,
    /// Committed, but unusable.
    Invalid {
        /// The file at fault (the manifest, or a part).
        file: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One checkpoint id found in a store, with its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// The checkpoint's id.
    pub id: u64,
    /// Where it is (for [`LocalDirStore`], its folder).
    pub location: String,
    /// Whether it is complete and valid.
    pub status: CheckpointStatus,
}

/// Where checkpoints are written and read back. See the [module docs](self) for the contract.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Writes part `part` of checkpoint `id` crash-safely (temp file, fsync, rename, fsync dir);
    /// idempotent (rewriting the same part replaces it). Fails if `part` is not a safe file name
    /// or if checkpoint `id` is already complete.
    fn write_part(&self, id: u64, part: &str, bytes: &[u8]) -> Result<PartInfo>;

    /// [`write_part`](Self::write_part) from what `write` writes into a writer, so that a large
    /// part need not be held in memory whole before it goes to storage. The default collects
    /// the bytes and calls `write_part`.
    fn write_part_with(
        &self,
        id: u64,
        part: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<PartInfo> {
        let mut bytes = Vec::new();
        write(&mut bytes)?;
        self.write_part(id, part, &bytes)
    }

    /// Whether this store can [`link_part`](Self::link_part). The default: no.
    fn links_parts(&self) -> bool {
        false
    }

    /// Makes `part`, a part written into checkpoint `from` (complete or not) and still there,
    /// a part of checkpoint `to` as well, under the same name, without writing its bytes again
    /// (an incremental checkpoint keeps the parts it builds on this way); the returned info is
    /// the one to commit. Each checkpoint then holds its parts whatever happens to the other's:
    /// deleting one leaves the other whole. Fails if the part is not in `from` with `part`'s
    /// size, or if `to` is complete. The default fails: see [`links_parts`](Self::links_parts).
    fn link_part(&self, from: u64, to: u64, part: &PartInfo) -> Result<PartInfo> {
        let _ = (from, to);
        Err(Error::Runtime(format!(
            "this checkpoint store cannot link part '{}' into another checkpoint",
            part.name
        )))
    }

    /// Whether part `part` of checkpoint `id` has been written (used by a coordinator that polls).
    fn has_part(&self, id: u64, part: &str) -> bool;

    /// The bytes of part `part` of checkpoint `id` as written, before the checkpoint is complete
    /// (not verified: there is no manifest yet). For a coordinator that learns from the
    /// workers' own parts what else they wrote ([`CheckpointStore::commit_known`]). The default
    /// says that this store cannot.
    fn read_written_part(&self, id: u64, part: &str) -> Result<Vec<u8>> {
        Err(Error::Runtime(format!(
            "this checkpoint store cannot read part '{part}' of checkpoint {id} before it is \
             complete"
        )))
    }

    /// [`CheckpointStore::commit`], given the size and CRC-32 of parts that another handle
    /// wrote (another process of a cluster), as it recorded them: a part in `known` whose file
    /// has that size is not read back to checksum it. The default reads every part back.
    fn commit_known(
        &self,
        id: u64,
        epoch: u64,
        parts: &[String],
        meta: BTreeMap<String, String>,
        known: &BTreeMap<String, (u64, u32)>,
    ) -> Result<CheckpointInfo> {
        let _ = known;
        self.commit(id, epoch, parts, meta)
    }

    /// The names of the parts of checkpoint `id` written so far (complete or not), in no
    /// particular order; none if there is no such checkpoint.
    fn part_names(&self, id: u64) -> Result<Vec<String>>;

    /// Makes checkpoint `id` complete: verifies each named part exists (and records its size and
    /// CRC-32: from what this handle wrote, or as read back from storage), and writes the manifest atomically (temp, fsync, rename,
    /// fsync dir). Only now does it count. Fails if a part is missing, a name repeats, or the
    /// checkpoint is already complete.
    fn commit(
        &self,
        id: u64,
        epoch: u64,
        parts: &[String],
        meta: BTreeMap<String, String>,
    ) -> Result<CheckpointInfo>;

    /// Every complete, valid checkpoint, oldest first. Invalid ones (bad manifest, missing or
    /// corrupt part) are skipped with a `tracing::warn!` naming the file and what is wrong.
    /// Reads every part of every checkpoint to check it.
    fn list(&self) -> Result<Vec<CheckpointInfo>>;

    /// The newest complete valid checkpoint, if any (falling back past corrupt ones with a
    /// warning). Reads the parts of the checkpoints it checks.
    fn latest(&self) -> Result<Option<CheckpointInfo>>;

    /// The id of the newest committed checkpoint: the newest whose manifest is in place and
    /// reads back whole, without reading the parts. Cheap enough to poll (a folder listing and
    /// one small file), for a run that waits for its own commits; to *restore*, use
    /// [`latest`](Self::latest), which checks the parts and falls back past damaged ones.
    fn newest_complete_id(&self) -> Result<Option<u64>>;

    /// Checkpoint `id`, or an error that says it does not exist or why it is unusable (naming the
    /// file).
    fn get(&self, id: u64) -> Result<CheckpointInfo>;

    /// The bytes of a part of a complete checkpoint, verified against the manifest's size and
    /// CRC-32 (an error names the file).
    fn read_part(&self, id: u64, part: &str) -> Result<Vec<u8>>;

    /// Keeps the newest `keep` complete checkpoints (at least one, whatever `keep` says); deletes
    /// older ones and any incomplete or invalid checkpoint older than the newest complete one
    /// (leftovers of a crash). Never deletes the newest complete one, nor anything newer than it
    /// (a checkpoint in progress). A checkpoint counts as complete here once its manifest and
    /// parts check out; to stay cheap when called after every commit, an implementation may skip
    /// the checksums of checkpoints it has checksummed before (at commit, or an earlier check).
    fn retain(&self, keep: usize) -> Result<()>;

    /// Removes everything: every checkpoint, complete or not, and the job's [`DurableLog`]s (for
    /// `--fresh`). Manifests go first, so a crash halfway leaves no complete checkpoint behind.
    fn clear(&self) -> Result<()>;

    /// Every checkpoint id present, oldest first, with what is wrong with it if anything (for
    /// `runnel checkpoints JOB`, which may want to show incomplete and invalid ones too). Does not
    /// log warnings; reads every part of every complete checkpoint.
    fn scan(&self) -> Result<Vec<CheckpointEntry>>;

    /// The id for a new checkpoint: one more than the largest id present, complete or not (1 in an
    /// empty store), so that parts left by a crashed run are never mistaken for new ones.
    fn next_id(&self) -> Result<u64>;

    /// Deletes checkpoint `id` if it is incomplete (does nothing if it does not exist). Fails,
    /// deleting nothing, if it is complete.
    fn discard(&self, id: u64) -> Result<()>;

    /// Deletes every checkpoint, complete or not, whose id is greater than `id` (every one if
    /// `id` is `None`). For a run that starts from checkpoint `id` and reuses ids (for example
    /// ids that are epochs): what lies after `id` belongs to a history that is about to be
    /// replayed, and a leftover part or manifest with a reused id would otherwise be mixed into,
    /// or block, the new checkpoints. Manifests go first, newest first.
    fn discard_after(&self, id: Option<u64>) -> Result<()>;

    /// The folder that holds the job's [`DurableLog`]s (the sources' epoch logs), if this store
    /// keeps them: a folder that outlives the process (local, or a shared filesystem for a
    /// cluster). `None` (the default): no epoch log, so a job whose sink needs replay
    /// ([`crate::Sink::replays`]) fails to start with this store.
    fn log_dir(&self) -> Option<&Path> {
        None
    }
}

/// Checks that `name` can be used as a part, job or log name: a safe file name, non-empty, at most
/// 200 bytes, with no `/`, `\`, `..`, control character, and no leading `.` (the store's temporary
/// files start with one). Returns what is wrong.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} bytes long (at most {MAX_NAME_LEN})",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("'{name}' starts with '.'"));
    }
    if name.contains("..") {
        return Err(format!("'{name}' contains '..'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_control())
    {
        return Err(format!("'{}' contains {c:?}", name.escape_debug()));
    }
    Ok(())
}

fn ck_err(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        reason: reason.into(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh temporary name for `name` in the same folder: hidden, unique per process and write.
fn tmp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `fsync` on a folder, so that the entries created, renamed or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(dir, e))?;
    match f.sync_all() {
        Ok(()) => Ok(()),
        // Some file systems cannot fsync a folder; there is nothing more to do on them.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn parent_or_dot(p: &Path) -> &Path {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its missing ancestors, durably (each parent of a created folder is fsynced).
fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p);
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q,
            _ => break,
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for m in missing.iter().rev() {
        sync_dir(parent_or_dot(m))?;
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` atomically: temporary file, fsync, rename, fsync of `dir`.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_atomic_with(dir, name, false, &mut |w| {
        w.write_all(bytes)
            .map_err(|e| Error::io(dir.join(tmp_name(name)), e))
    })
    .map(|_| ())
}

/// [`write_atomic`] from what `write` writes, through a buffer; returns the size and CRC-32 of
/// what was written. `direct`: past the page cache where the system allows it (see
/// [`PartFile`]), for large parts.
fn write_atomic_with(
    dir: &Path,
    name: &str,
    direct: bool,
    write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<(u64, u32)> {
    let tmp = dir.join(tmp_name(name));
    let fin = dir.join(name);
    let written = (|| {
        let f = PartFile::create(&tmp, direct).map_err(|e| Error::io(&tmp, e))?;
        // Buffered before the checksum: small writes are gathered, and checksummed in bulk.
        let mut out = io::BufWriter::with_capacity(
            1 << 20,
            Checksummed {
                inner: f,
                size: 0,
                crc: crc32fast::Hasher::new(),
            },
        );
        write(&mut out)?;
        let Checksummed {
            inner: f,
            size,
            crc,
        } = out
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        let f = f.finish().map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
        Ok((size, crc.finalize()))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let info = written?;
    sync_dir(dir)?;
    Ok(info)
}

/// The alignment of O_DIRECT writes: their memory, offsets and lengths.
const DIRECT_BLOCK: usize = 4096;
/// How much a direct [`PartFile`] gathers per write.
const DIRECT_CHUNK: usize = 8 << 20;

/// A new file for a checkpoint part. With `direct` on Linux it is written past the page cache
/// (O_DIRECT), in aligned chunks: a large part then costs its writer thread the disk's time,
/// not a copy of every byte into the kernel's cache. On this project's 2-core VM, 2 GB took 0.25
/// CPU seconds that way against 4-6 s through the cache with `fsync`
/// (`dd bs=8M oflag=direct` against `conv=fsync`), CPU the workers need. Where the file system
/// refuses O_DIRECT (tmpfs, some network file systems) or a direct write fails, it writes
/// through the cache instead.
struct PartFile {
    file: File,
    path: PathBuf,
    /// Direct mode: a buffer with an aligned chunk at `buf[start..start + DIRECT_CHUNK]`, and
    /// how much of the chunk is filled.
    direct: Option<(Vec<u8>, usize, usize)>,
    /// Bytes in the file.
    written: u64,
}

impl PartFile {
    fn create(path: &Path, direct: bool) -> io::Result<Self> {
        let plain = |path: &Path| {
            // `create`, not `create_new`: a refused O_DIRECT open may have created the file.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
        };
        #[cfg(target_os = "linux")]
        if direct {
            use std::os::unix::fs::OpenOptionsExt;
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(file) => {
                    let buf = vec![0u8; DIRECT_CHUNK + DIRECT_BLOCK];
                    let start =
                        (DIRECT_BLOCK - buf.as_ptr() as usize % DIRECT_BLOCK) % DIRECT_BLOCK;
                    return Ok(PartFile {
                        file,
                        path: path.to_path_buf(),
                        direct: Some((buf, start, 0)),
                        written: 0,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = direct;
        Ok(PartFile {
            file: plain(path)?,
            path: path.to_path_buf(),
            direct: None,
            written: 0,
        })
    }

    /// Writes the first `len` bytes of the direct chunk, padded with zeros to whole blocks.
    fn write_chunk(&mut self, len: usize) -> io::Result<()> {
        let (mut buf, start, _) = self.direct.take().expect("direct");
        let padded = len.div_ceil(DIRECT_BLOCK) * DIRECT_BLOCK;
        buf[start + len..start + padded].fill(0);
        if self.file.write_all(&buf[start..start + padded]).is_err() {
            // The file system took the open but not the write: the rest goes through the cache
            // (from the chunk's start, over whatever part of it was written).
            let mut file = OpenOptions::new().write(true).open(&self.path)?;
            file.seek(SeekFrom::Start(self.written))?;
            file.write_all(&buf[start..start + len])?;
            self.written += len as u64;
            // A failed direct write may have left padding past the end.
            file.set_len(self.written)?;
            self.file = file;
            return Ok(());
        }
        self.written += len as u64;
        self.direct = Some((buf, start, 0));
        Ok(())
    }

    /// Writes what is left, and returns the file to sync (cut to its size: a direct write
    /// ends on a whole block).
    fn finish(mut self) -> io::Result<File> {
        if let Some((_, _, len)) = self.direct {
            if len > 0 {
                self.write_chunk(len)?;
                if self.direct.is_some() {
                    self.file.set_len(self.written)?;
                }
            }
        }
        Ok(self.file)
    }
}

impl Write for PartFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some((buf, start, len)) = &mut self.direct else {
            let n = self.file.write(data)?;
            self.written += n as u64;
            return Ok(n);
        };
        let n = data.len().min(DIRECT_CHUNK - *len);
        buf[*start + *len..*start + *len + n].copy_from_slice(&data[..n]);
        *len += n;
        if *len == DIRECT_CHUNK {
            self.write_chunk(DIRECT_CHUNK)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A direct chunk is written when full or at the end (writes must be whole blocks).
        if self.direct.is_none() {
            self.file.flush()?;
        }
        Ok(())
    }
}

/// A writer that counts and checksums what goes through it.
struct Checksummed<W> {
    inner: W,
    size: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The size and CRC-32 of a file, read in chunks.
fn file_size_crc(path: &Path) -> io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((size, hasher.finalize()))
}

/// The manifest file as written on disk.
#[derive(Serialize, Deserialize)]
struct ManifestFile {
    format: String,
    crc32: u32,
    checkpoint: CheckpointInfo,
}

fn info_crc(info: &CheckpointInfo) -> u32 {
    // Serializing a struct of integers, strings and a BTreeMap is deterministic, so a reader
    // recomputes the same bytes from what it parsed.
    crc32fast::hash(&serde_json::to_vec(info).expect("a CheckpointInfo always serializes"))
}

/// How much of a checkpoint to check.
#[derive(Clone, Copy)]
enum Verify {
    /// The manifest, and each part's size and checksum.
    Full,
    /// The same, except the checksums of checkpoints this handle has checksummed before.
    Trusted,
}

/// Why a checkpoint cannot be used.
enum Unusable {
    /// No folder for that id.
    Missing,
    /// A folder but no manifest.
    Incomplete,
    /// The file at fault, and what is wrong with it.
    Invalid(PathBuf, String),
}

/// The default [`CheckpointStore`]: one folder per job under a state directory,
/// `<state_dir>/<job>/chk-<id, 20 digits>/{part-<name>.bin, MANIFEST.json}` (see the
/// [module docs](self) for the format).
///
/// A handle is `Send + Sync`: the workers of a process share one (for example in an `Arc<dyn
/// CheckpointStore>`) and may write the parts of one checkpoint at the same time.
///
/// # What is checked when
/// [`list`](CheckpointStore::list), [`latest`](CheckpointStore::latest),
/// [`get`](CheckpointStore::get) and [`scan`](CheckpointStore::scan) check every part's checksum
/// every time (they are what a restart and `runnel checkpoints` use), and
/// [`read_part`](CheckpointStore::read_part) checks the part it reads.
/// [`retain`](CheckpointStore::retain) skips the checksums of the checkpoints this handle
/// committed or already checked in full, so that calling it after every commit costs a few
/// `stat`s: a part damaged after that is found by the next start, which falls back past it.
/// [`commit`](CheckpointStore::commit) takes the checksums of the parts this handle wrote from
/// what it wrote (when the file has that size) and reads back only the others (parts written
/// by other processes).
#[derive(Debug)]
pub struct LocalDirStore {
    dir: PathBuf,
    /// The checkpoints (id, manifest checksum) whose parts this handle has checksummed, when it
    /// committed them or verified them in full; only [`CheckpointStore::retain`] trusts it.
    verified: Mutex<BTreeSet<(u64, u32)>>,
    /// The size and CRC-32 of the parts this handle wrote and that are not committed yet, so
    /// [`CheckpointStore::commit`] reads back only parts other processes wrote.
    written: Mutex<BTreeMap<(u64, String), (u64, u32)>>,
}

impl LocalDirStore {
    /// The folder for part `part` of checkpoint `id`, created durably, if the part may be
    /// written (a safe name, the checkpoint not complete).
    fn part_dir(&self, id: u64, part: &str) -> Result<PathBuf> {
        self.checked_part_path(id, part)?;
        let manifest = self.manifest_path(id);
        if manifest.exists() {
            return Err(ck_err(
                manifest,
                format!(
                    "checkpoint {id} is already complete; its part '{part}' cannot be rewritten"
                ),
            ));
        }
        let dir = self.checkpoint_dir(id);
        create_dir_durable(&dir)?;
        Ok(dir)
    }

    /// Notes a part this handle wrote, for the commit (which then need not read it back).
    fn remember_part(&self, id: u64, part: &str, size: u64, crc32: u32) -> PartInfo {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        // Only the parts of checkpoints still in progress are remembered.
        written.retain(|(other, _), _| *other + 16 > id);
        written.insert((id, part.to_string()), (size, crc32));
        PartInfo {
            name: part.to_string(),
            size,
            crc32,
        }
    }

    /// The store of job `job` under `state_dir` ([`DEFAULT_STATE_DIR`] when the user gives none);
    /// creates `<state_dir>/<job>` if needed. Fails if `job` is not a safe folder name (see
    /// [`check_name`]) or the folder cannot be created.
    pub fn new(state_dir: impl Into<PathBuf>, job: &str) -> Result<Self> {
        let dir = state_dir.into().join(job);
        check_name(job).map_err(|r| ck_err(&dir, format!("bad job name for a folder: {r}")))?;
        create_dir_durable(&dir)?;
        Ok(LocalDirStore {
            dir,
            verified: Mutex::default(),
            written: Mutex::default(),
        })
    }

    /// The job's folder, `<state_dir>/<job>` (where [`DurableLog`]s go too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of checkpoint `id` (which may not exist).
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!(
            "{CHECKPOINT_PREFIX}{id:0width$}",
            width = ID_DIGITS
        ))
    }

    fn part_path(&self, id: u64, part: &str) -> PathBuf {
        self.checkpoint_dir(id).join(format!("part-{part}.bin"))
    }

    fn manifest_path(&self, id: u64) -> PathBuf {
        self.checkpoint_dir(id).join(MANIFEST_FILE)
    }

    fn checked_part_path(&self, id: u64, part: &str) -> Result<PathBuf> {
        check_name(part).map_err(|r| {
            ck_err(
                self.checkpoint_dir(id),
                format!("bad part name (it must be a safe file name): {r}"),
            )
        })?;
        Ok(self.part_path(id, part))
    }

    /// The ids of every checkpoint folder, oldest first.
    fn ids(&self) -> Result<Vec<u64>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(digits) = name
                .to_str()
                .and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX))
            else {
                continue;
            };
            if digits.len() != ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(id) = digits.parse::<u64>() else {
                continue;
            };
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Reads and checks the manifest of `id` (format, checksum, id, part names).
    fn manifest(&self, id: u64) -> std::result::Result<CheckpointInfo, Unusable> {
        let path = self.manifest_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if self.checkpoint_dir(id).is_dir() {
                    Unusable::Incomplete
                } else {
                    Unusable::Missing
                });
            }
            Err(e) => return Err(Unusable::Invalid(path, format!("unreadable: {e}"))),
        };
        let file: ManifestFile = serde_json::from_slice(&bytes).map_err(|e| {
            Unusable::Invalid(
                path.clone(),
                format!(
                    "not a valid manifest ({} bytes; truncated or damaged?): {e}",
                    bytes.len()
                ),
            )
        })?;
        if file.format != MANIFEST_FORMAT {
            return Err(Unusable::Invalid(
                path,
                format!(
                    "a manifest of format '{}'; this runnel reads '{MANIFEST_FORMAT}'",
                    file.format
                ),
            ));
        }
        let crc = info_crc(&file.checkpoint);
        if crc != file.crc32 {
            return Err(Unusable::Invalid(
                path,
                format!(
                    "a damaged manifest: its content has CRC-32 {crc:08x} but it records {:08x}",
                    file.crc32
                ),
            ));
        }
        let info = file.checkpoint;
        if info.id != id {
            return Err(Unusable::Invalid(
                path,
                format!(
                    "a manifest of checkpoint {} in the folder of checkpoint {id}",
                    info.id
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &info.parts {
            if let Err(r) = check_name(&p.name) {
                return Err(Unusable::Invalid(
                    path,
                    format!("a manifest with a bad part name: {r}"),
                ));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(Unusable::Invalid(
                    path,
                    format!("a manifest that lists part '{}' twice", p.name),
                ));
            }
        }
        Ok(info)
    }

    /// Checks that each part of `info` is there with the recorded size (and CRC-32 if `crc`).
    fn verify_parts(&self, info: &CheckpointInfo, crc: bool) -> std::result::Result<(), Unusable> {
        for p in &info.parts {
            let path = self.part_path(info.id, &p.name);
            let found = if crc {
                file_size_crc(&path).map(|(size, crc)| (size, Some(crc)))
            } else {
                fs::metadata(&path).map(|m| (m.len(), None))
            };
            let (size, crc32) = match found {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Unusable::Invalid(
                        path,
                        format!(
                            "missing (the manifest lists part '{}', {} bytes)",
                            p.name, p.size
                        ),
                    ))
                }
                Err(e) => return Err(Unusable::Invalid(path, format!("unreadable: {e}"))),
            };
            if size != p.size {
                return Err(Unusable::Invalid(
                    path,
                    format!(
                        "{size} bytes but the manifest says {} (truncated or damaged)",
                        p.size
                    ),
                ));
            }
            if let Some(c) = crc32 {
                if c != p.crc32 {
                    return Err(Unusable::Invalid(
                        path,
                        format!(
                            "corrupt: its CRC-32 is {c:08x} but the manifest says {:08x}",
                            p.crc32
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks checkpoint `id`: its manifest, and its parts' sizes and checksums (in `Trusted`
    /// mode, not the checksums of a checkpoint this handle has already checksummed).
    fn check(&self, id: u64, mode: Verify) -> std::result::Result<CheckpointInfo, Unusable> {
        let info = self.manifest(id)?;
        let key = (id, info_crc(&info));
        let crc = match mode {
            Verify::Full => true,
            Verify::Trusted => !self.verified().contains(&key),
        };
        self.verify_parts(&info, crc)?;
        if crc {
            self.verified().insert(key);
        }
        Ok(info)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, u32)>> {
        // The set is only ever inserted into or filtered: a panic elsewhere cannot leave it torn.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unusable_error(&self, id: u64, u: Unusable) -> Error {
        match u {
            Unusable::Missing => ck_err(self.checkpoint_dir(id), "no such checkpoint"),
            Unusable::Incomplete => ck_err(
                self.checkpoint_dir(id),
                format!(
                    "checkpoint {id} is incomplete: it has no {MANIFEST_FILE} (it was never \
                     committed, or its writer crashed)"
                ),
            ),
            Unusable::Invalid(path, reason) => {
                ck_err(path, format!("checkpoint {id} is unusable: {reason}"))
            }
        }
    }

    /// Deletes checkpoints `ids` (in that order): every manifest first, so that a crash halfway
    /// leaves incomplete folders (which nothing reads and [`CheckpointStore::retain`] removes),
    /// never a complete checkpoint with parts missing; then the folders.
    fn delete(&self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        for &id in ids {
            let manifest = self.manifest_path(id);
            match fs::remove_file(&manifest) {
                Ok(()) => sync_dir(&self.checkpoint_dir(id))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&manifest, e)),
            }
        }
        self.verified().retain(|(id, _)| !ids.contains(id));
        for &id in ids {
            tracing::debug!(checkpoint = id, "deleting checkpoint {id}");
            let dir = self.checkpoint_dir(id);
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        sync_dir(&self.dir)
    }
}

fn warn_skipped(id: u64, path: &Path, reason: &str) {
    tracing::warn!(
        checkpoint = id,
        file = %path.display(),
        "skipping checkpoint {id}: {}: {reason}",
        path.display()
    );
}

impl CheckpointStore for LocalDirStore {
    fn log_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn write_part(&self, id: u64, part: &str, bytes: &[u8]) -> Result<PartInfo> {
        let dir = self.part_dir(id, part)?;
        write_atomic(&dir, &format!("part-{part}.bin"), bytes)?;
        Ok(self.remember_part(id, part, bytes.len() as u64, crc32fast::hash(bytes)))
    }

    fn write_part_with(
        &self,
        id: u64,
        part: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<PartInfo> {
        let dir = self.part_dir(id, part)?;
        let (size, crc32) = write_atomic_with(&dir, &format!("part-{part}.bin"), true, write)?;
        Ok(self.remember_part(id, part, size, crc32))
    }

    fn links_parts(&self) -> bool {
        true
    }

    fn link_part(&self, from: u64, to: u64, part: &PartInfo) -> Result<PartInfo> {
        let name = &part.name;
        let src = self.checked_part_path(from, name)?;
        let size = fs::metadata(&src).map_err(|e| Error::io(&src, e))?.len();
        if size != part.size {
            return Err(ck_err(
                &src,
                format!(
                    "part '{name}' of checkpoint {from} is {size} bytes, not the {} to link",
                    part.size
                ),
            ));
        }
        let dir = self.part_dir(to, name)?;
        let file = format!("part-{name}.bin");
        let tmp = dir.join(tmp_name(&file));
        // A hard link, renamed into place (replacing a part of the same name, as a rewrite
        // does); a copy where the file system has no hard links.
        if fs::hard_link(&src, &tmp).is_err() {
            let copied = (|| {
                fs::copy(&src, &tmp)?;
                File::open(&tmp)?.sync_all()
            })();
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(&tmp, e));
            }
        }
        let fin = dir.join(&file);
        if let Err(e) = fs::rename(&tmp, &fin) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&fin, e));
        }
        sync_dir(&dir)?;
        Ok(self.remember_part(to, name, part.size, part.crc32))
    }

    fn has_part(&self, id: u64, part: &str) -> bool {
        check_name(part).is_ok() && self.part_path(id, part).is_file()
    }

    fn part_names(&self, id: u64) -> Result<Vec<String>> {
        let dir = self.checkpoint_dir(id);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            // Temporary files start with '.', so they do not match.
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|f| f.strip_prefix("part-"))
                .and_then(|f| f.strip_suffix(".bin"))
            {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn read_written_part(&self, id: u64, part: &str) -> Result<Vec<u8>> {
        let path = self.checked_part_path(id, part)?;
        fs::read(&path).map_err(|e| Error::io(&path, e))
    }

    fn commit(
        &self,
        id: u64,
        epoch: u64,
        parts: &[String],
        meta: BTreeMap<String, String>,
    ) -> Result<CheckpointInfo> {
        self.commit_known(id, epoch, parts, meta, &BTreeMap::new())
    }

    fn commit_known(
        &self,
        id: u64,
        epoch: u64,
        parts: &[String],
        meta: BTreeMap<String, String>,
        known: &BTreeMap<String, (u64, u32)>,
    ) -> Result<CheckpointInfo> {
        let dir = self.checkpoint_dir(id);
        let manifest = self.manifest_path(id);
        if manifest.exists() {
            return Err(ck_err(
                manifest,
                format!("checkpoint {id} is already complete"),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut infos = Vec::with_capacity(parts.len());
        for name in parts {
            let path = self.checked_part_path(id, name)?;
            if !seen.insert(name.as_str()) {
                return Err(ck_err(dir, format!("commit names part '{name}' twice")));
            }
            let remembered = self
                .written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(id, name.clone()))
                .or_else(|| known.get(name).copied());
            // A part this handle wrote is checksummed from what it wrote (its file was fsynced
            // and renamed into place), one another handle wrote from what that one recorded
            // (`known`), if the file has that size; others are read back.
            let known = remembered.filter(|&(size, _)| {
                fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size)
            });
            let read = || {
                if let Some(k) = known {
                    return Ok(k);
                }
                file_size_crc(&path)
            };
            let (size, crc32) = read().map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ck_err(
                        &path,
                        format!("cannot commit checkpoint {id}: part '{name}' was not written"),
                    )
                } else {
                    Error::io(&path, e)
                }
            })?;
            infos.push(PartInfo {
                name: name.clone(),
                size,
                crc32,
            });
        }
        create_dir_durable(&dir)?;
        let info = CheckpointInfo {
            id,
            epoch,
            created_ms: now_ms(),
            parts: infos,
            meta,
        };
        let file = ManifestFile {
            format: MANIFEST_FORMAT.to_string(),
            crc32: info_crc(&info),
            checkpoint: info,
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("a manifest always serializes");
        write_atomic(&dir, MANIFEST_FILE, &bytes)?;
        self.verified().insert((id, file.crc32));
        Ok(file.checkpoint)
    }

    fn list(&self) -> Result<Vec<CheckpointInfo>> {
        let mut out = Vec::new();
        for id in self.ids()? {
            match self.check(id, Verify::Full) {
                Ok(info) => out.push(info),
                Err(Unusable::Invalid(path, reason)) => warn_skipped(id, &path, &reason),
                Err(Unusable::Incomplete | Unusable::Missing) => {}
            }
        }
        Ok(out)
    }

    fn latest(&self) -> Result<Option<CheckpointInfo>> {
        for id in self.ids()?.into_iter().rev() {
            match self.check(id, Verify::Full) {
                Ok(info) => return Ok(Some(info)),
                Err(Unusable::Invalid(path, reason)) => warn_skipped(id, &path, &reason),
                Err(Unusable::Incomplete) => {
                    tracing::debug!(checkpoint = id, "checkpoint {id} is incomplete; skipped")
                }
                Err(Unusable::Missing) => {}
            }
        }
        Ok(None)
    }

    fn newest_complete_id(&self) -> Result<Option<u64>> {
        for id in self.ids()?.into_iter().rev() {
            if self.manifest(id).is_ok() {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn get(&self, id: u64) -> Result<CheckpointInfo> {
        self.check(id, Verify::Full)
            .map_err(|u| self.unusable_error(id, u))
    }

    fn read_part(&self, id: u64, part: &str) -> Result<Vec<u8>> {
        let path = self.checked_part_path(id, part)?;
        let info = self.manifest(id).map_err(|u| self.unusable_error(id, u))?;
        let Some(p) = info.part(part) else {
            return Err(ck_err(
                self.manifest_path(id),
                format!("checkpoint {id} has no part '{part}'"),
            ));
        };
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ck_err(
                    &path,
                    format!("part '{part}' of checkpoint {id} is missing"),
                )
            } else {
                Error::io(&path, e)
            }
        })?;
        if bytes.len() as u64 != p.size {
            return Err(ck_err(
                &path,
                format!(
                    "part '{part}' of checkpoint {id} is {} bytes but the manifest says {}",
                    bytes.len(),
                    p.size
                ),
            ));
        }
        let crc = crc32fast::hash(&bytes);
        if crc != p.crc32 {
            return Err(ck_err(
                &path,
                format!(
                    "part '{part}' of checkpoint {id} is corrupt: its CRC-32 is {crc:08x} but \
                     the manifest says {:08x}",
                    p.crc32
                ),
            ));
        }
        Ok(bytes)
    }

    fn retain(&self, keep: usize) -> Result<()> {
        let keep = keep.max(1);
        let ids = self.ids()?;
        let mut kept = Vec::new();
        for &id in ids.iter().rev() {
            if kept.len() == keep {
                break;
            }
            if self.check(id, Verify::Trusted).is_ok() {
                kept.push(id);
            }
        }
        let Some(&newest) = kept.first() else {
            return Ok(());
        };
        let doomed: Vec<u64> = ids
            .into_iter()
            .filter(|id| *id < newest && !kept.contains(id))
            .collect();
        self.delete(&doomed)
    }

    fn clear(&self) -> Result<()> {
        self.discard_after(None)?;
        let log_dir = self.dir.join(LOG_DIR);
        match fs::remove_dir_all(&log_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&log_dir, e)),
        }
        create_dir_durable(&self.dir)?;
        sync_dir(&self.dir)
    }

    fn scan(&self) -> Result<Vec<CheckpointEntry>> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let status = match self.check(id, Verify::Full) {
                Ok(info) => CheckpointStatus::Complete(info),
                Err(Unusable::Missing) => continue,
                Err(Unusable::Incomplete) => CheckpointStatus::Incomplete,
                Err(Unusable::Invalid(path, reason)) => CheckpointStatus::Invalid {
                    file: path.display().to_string(),
                    reason,
                },
            };
            out.push(CheckpointEntry {
                id,
                location: self.checkpoint_dir(id).display().to_string(),
                status,
            });
        }
        Ok(out)
    }

    fn next_id(&self) -> Result<u64> {
        Ok(self.ids()?.last().map_or(1, |id| id + 1))
    }

    fn discard_after(&self, id: Option<u64>) -> Result<()> {
        let doomed: Vec<u64> = self
            .ids()?
            .into_iter()
            .rev()
            .filter(|&i| id.is_none_or(|after| i > after))
            .collect();
        self.delete(&doomed)
    }

    fn discard(&self, id: u64) -> Result<()> {
        let manifest = self.manifest_path(id);
        if manifest.exists() {
            return Err(ck_err(
                manifest,
                format!("checkpoint {id} is complete; discard removes only incomplete ones"),
            ));
        }
        let dir = self.checkpoint_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&dir, e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The durable log

const LOG_MAGIC: &[u8; 8] = b"RNLLOG\0\x01";
const RECORD_HEADER: usize = 8;
/// The largest record a [`DurableLog`] takes (larger lengths in a file are taken for garbage).
pub const MAX_LOG_RECORD: usize = 256 << 20;

/// What a log file holds.
struct ParsedLog {
    /// The byte range of each valid record's framing (header and payload).
    records: Vec<std::ops::Range<usize>>,
    /// Where the valid part ends (0 if even the file header is torn).
    valid_end: usize,
    /// Why the bytes after `valid_end` were ignored, if there are any.
    tail: Option<String>,
}

fn record_crc(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

fn parse_log(path: &Path, bytes: &[u8]) -> Result<ParsedLog> {
    if bytes.len() < LOG_MAGIC.len() {
        if LOG_MAGIC.starts_with(bytes) {
            return Ok(ParsedLog {
                records: Vec::new(),
                valid_end: 0,
                tail: (!bytes.is_empty()).then(|| "the file header is cut short".to_string()),
            });
        }
        return Err(ck_err(path, "not a runnel log (bad header)"));
    }
    if &bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
        return Err(ck_err(path, "not a runnel log (bad header)"));
    }
    let mut pos = LOG_MAGIC.len();
    let mut records = Vec::new();
    let tail = loop {
        let rest = &bytes[pos..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < RECORD_HEADER {
            break Some(format!(
                "the record at byte {pos} is cut short in its header"
            ));
        }
        let len_bytes = &rest[..4];
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_LOG_RECORD {
            break Some(format!(
                "the record at byte {pos} claims {len} bytes (garbage)"
            ));
        }
        if rest.len() - RECORD_HEADER < len {
            break Some(format!(
                "the record at byte {pos} is cut short ({} of {len} bytes)",
                rest.len() - RECORD_HEADER
            ));
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        if record_crc(len_bytes, payload) != crc {
            break Some(format!("the record at byte {pos} fails its checksum"));
        }
        records.push(pos..pos + RECORD_HEADER + len);
        pos += RECORD_HEADER + len;
    };
    Ok(ParsedLog {
        records,
        valid_end: pos,
        tail,
    })
}

fn read_log_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// An append-only log file `<store dir>/log/<name>.log` of length-prefixed, CRC-checked records
/// (the engine's epoch log: per source instance, what each epoch contained). See the
/// [module docs](self) for the format.
///
/// [`append`](Self::append) writes one record and `fdatasync`s it: once it returns, the record
/// survives a crash. [`read_all`](Self::read_all) returns every complete valid record in order and
/// ignores a torn tail left by a crash; [`open`](Self::open) truncates that tail before appending.
///
/// # Contract
/// One `DurableLog` per file at a time (in all processes); readers may read while it appends (they
/// see a prefix). After an error from `append`, the log tries to roll back the partial record; if
/// it cannot, or if `fdatasync` failed, it refuses further appends: reopen it.
#[derive(Debug)]
pub struct DurableLog {
    path: PathBuf,
    file: File,
    /// The length of the valid part of the file: where the next record goes.
    end: u64,
    records: usize,
    broken: Option<String>,
}

impl DurableLog {
    /// The file of log `name` in `store_dir` (a job's folder, [`LocalDirStore::dir`]).
    pub fn path_in(store_dir: &Path, name: &str) -> Result<PathBuf> {
        let dir = store_dir.join(LOG_DIR);
        check_name(name).map_err(|r| ck_err(&dir, format!("bad log name: {r}")))?;
        Ok(dir.join(format!("{name}.log")))
    }

    /// Opens log `name` in `store_dir` for appending, creating it (durably) if needed. A torn tail
    /// left by a crash is truncated, with a warning.
    pub fn open(store_dir: &Path, name: &str) -> Result<Self> {
        let path = Self::path_in(store_dir, name)?;
        let dir = parent_or_dot(&path).to_path_buf();
        create_dir_durable(&dir)?;
        if !path.exists() {
            let file_name = format!("{name}.log");
            write_atomic(&dir, &file_name, LOG_MAGIC)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let parsed = parse_log(&path, &bytes)?;
        let mut end = parsed.valid_end as u64;
        if let Some(tail) = &parsed.tail {
            tracing::warn!(
                file = %path.display(),
                "{}: truncating a torn tail of {} bytes left by a crash: {tail}",
                path.display(),
                bytes.len() - parsed.valid_end
            );
            file.set_len(end).map_err(|e| Error::io(&path, e))?;
        }
        if end == 0 {
            // An empty file (or a torn header): give it its header.
            file.set_len(0)
                .and_then(|_| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(LOG_MAGIC))
                .map_err(|e| Error::io(&path, e))?;
            end = LOG_MAGIC.len() as u64;
        }
        if end != bytes.len() as u64 {
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        file.seek(SeekFrom::Start(end))
            .map_err(|e| Error::io(&path, e))?;
        Ok(DurableLog {
            path,
            file,
            end,
            records: parsed.records.len(),
            broken: None,
        })
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many records the log holds.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn usable(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(ck_err(
                &self.path,
                format!("the log refuses appends after an earlier failure ({why}); reopen it"),
            )),
            None => Ok(()),
        }
    }

    /// Appends one record and `fdatasync`s it. Records of more than [`MAX_LOG_RECORD`] bytes are
    /// refused.
    pub fn append(&mut self, record: &[u8]) -> Result<()> {
        self.usable()?;
        if record.len() > MAX_LOG_RECORD {
            return Err(ck_err(
                &self.path,
                format!(
                    "a record of {} bytes is larger than the limit of {MAX_LOG_RECORD}",
                    record.len()
                ),
            ));
        }
        let len = (record.len() as u32).to_le_bytes();
        let mut buf = Vec::with_capacity(RECORD_HEADER + record.len());
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&record_crc(&len, record).to_le_bytes());
        buf.extend_from_slice(record);
        if let Err(e) = self.file.write_all(&buf) {
            // Take the partial record back, so that later records are not stranded behind it.
            let rolled_back = self
                .file
                .set_len(self.end)
                .and_then(|_| self.file.seek(SeekFrom::Start(self.end)));
            if let Err(e2) = rolled_back {
                self.broken = Some(format!("a partial record could not be removed: {e2}"));
            }
            return Err(Error::io(&self.path, e));
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the state of the file is unknown (the kernel may have dropped
            // the dirty pages): only a reopen, which re-reads the file, can say what is there.
            self.broken = Some(format!("fdatasync failed: {e}"));
            return Err(Error::io(&self.path, e));
        }
        self.end += buf.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Every complete valid record of log `name` in `store_dir`, in order (none if the log does
    /// not exist). A torn tail is ignored (and left in place: [`open`](Self::open) truncates it).
    pub fn read_all(store_dir: &Path, name: &str) -> Result<Vec<Vec<u8>>> {
        let path = Self::path_in(store_dir, name)?;
        let Some(bytes) = read_log_file(&path)? else {
            return Ok(Vec::new());
        };
        let parsed = parse_log(&path, &bytes)?;
        if let Some(tail) = &parsed.tail {
            tracing::debug!(file = %path.display(), "ignoring a torn tail: {tail}");
        }
        Ok(parsed
            .records
            .into_iter()
            .map(|r| bytes[r.start + RECORD_HEADER..r.end].to_vec())
            .collect())
    }

    /// Keeps the records for which `keep` is true and drops the others (to cut the log after a
    /// checkpoint), by rewriting the file atomically (temp, fsync, rename, fsync dir): a crash
    /// leaves the old log or the new one. Returns how many records are kept.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) -> Result<usize> {
        self.usable()?;
        let bytes = fs::read(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let parsed = parse_log(&self.path, &bytes)?;
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(LOG_MAGIC);
        let mut kept = 0;
        for r in parsed.records {
            if keep(&bytes[r.start + RECORD_HEADER..r.end]) {
                out.extend_from_slice(&bytes[r]);
                kept += 1;
            }
        }
        let dir = parent_or_dot(&self.path).to_path_buf();
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a log's file name is the checked name plus .log")
            .to_string();
        write_atomic(&dir, &name, &out)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        let end = out.len() as u64;
        file.seek(SeekFrom::Start(end))
            .map_err(|e| Error::io(&self.path, e))?;
        self.file = file;
        self.end = end;
        self.records = kept;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle commits parts another handle wrote (another process of a cluster): with their
    /// size and CRC given (`commit_known`), it records those and does not read the part back
    /// (a CRC given wrong shows it, and the store then refuses the checkpoint on restore); a
    /// given size that is not the file's is not trusted, and the part is read back.
    #[test]
    fn a_commit_trusts_the_known_crcs_of_parts_another_handle_wrote() {
        let root = tempfile::tempdir().unwrap();
        let writer = LocalDirStore::new(root.path(), "job").unwrap();
        let committer = LocalDirStore::new(root.path(), "job").unwrap();
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 13) as u8).collect();
        let real = crc32fast::hash(&bytes);
        let w1 = writer.write_part(1, "w1", &bytes).unwrap();
        assert_eq!((w1.size, w1.crc32), (bytes.len() as u64, real));
        committer.write_part(1, "w0", b"zero").unwrap();
        let parts = ["w0".to_string(), "w1".to_string()];
        assert_eq!(committer.read_written_part(1, "w1").unwrap(), bytes);

        // Known with its real CRC: recorded, and the checkpoint restores.
        let known = BTreeMap::from([("w1".to_string(), (bytes.len() as u64, real))]);
        let info = committer
            .commit_known(1, 1, &parts, BTreeMap::new(), &known)
            .unwrap();
        assert_eq!(info.part("w1").map(|p| p.crc32), Some(real));
        assert_eq!(committer.latest().unwrap().map(|i| i.id), Some(1));

        // Known with a wrong CRC: recorded as given (so the part was not read back), and the
        // checkpoint is then refused as damaged.
        writer.write_part(2, "w1", &bytes).unwrap();
        committer.write_part(2, "w0", b"zero").unwrap();
        let wrong = BTreeMap::from([("w1".to_string(), (bytes.len() as u64, real ^ 1))]);
        let info = committer
            .commit_known(2, 2, &parts, BTreeMap::new(), &wrong)
            .unwrap();
        assert_eq!(info.part("w1").map(|p| p.crc32), Some(real ^ 1));
        assert!(
            committer.get(2).is_err(),
            "a part whose CRC is not the manifest's"
        );

        // Known with a size that is not the file's: read back, the real CRC recorded.
        writer.write_part(3, "w1", &bytes).unwrap();
        committer.write_part(3, "w0", b"zero").unwrap();
        let other = BTreeMap::from([("w1".to_string(), (bytes.len() as u64 + 1, real ^ 1))]);
        let info = committer
            .commit_known(3, 3, &parts, BTreeMap::new(), &other)
            .unwrap();
        assert_eq!(
            info.part("w1").map(|p| (p.size, p.crc32)),
            Some((bytes.len() as u64, real))
        );
    }

    /// A part linked into a later checkpoint reads back from it after the checkpoint it was
    /// written into is deleted (retained away), and a later one links it on from there; a
    /// part linked with the wrong size, or into a complete checkpoint, is refused.
    #[test]
    fn a_linked_part_outlives_the_checkpoint_it_was_written_into() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(root.path(), "job").unwrap();
        assert!(store.links_parts());
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let base = store.write_part(1, "base", &bytes).unwrap();
        store.write_part(1, "w0", b"one").unwrap();
        store
            .commit(1, 1, &["base".into(), "w0".into()], BTreeMap::new())
            .unwrap();
        let linked = store.link_part(1, 2, &base).unwrap();
        assert_eq!(linked, base);
        store.write_part(2, "w0", b"two").unwrap();
        store
            .commit(2, 2, &["base".into(), "w0".into()], BTreeMap::new())
            .unwrap();
        // Checkpoint 2 complete, keep 1: checkpoint 1 goes.
        store.retain(1).unwrap();
        assert!(!store.checkpoint_dir(1).exists());
        assert_eq!(store.read_part(2, "base").unwrap(), bytes);
        // Linked on into 3, which is committed with it; 2 deleted in turn.
        store.link_part(2, 3, &base).unwrap();
        store.write_part(3, "w0", b"three").unwrap();
        let info = store
            .commit(3, 3, &["base".into(), "w0".into()], BTreeMap::new())
            .unwrap();
        assert_eq!(info.part("base"), Some(&base));
        store.retain(1).unwrap();
        assert!(!store.checkpoint_dir(2).exists());
        assert_eq!(store.get(3).unwrap().part("base"), Some(&base));
        assert_eq!(store.read_part(3, "base").unwrap(), bytes);
        // Refused: a size that is not the file's; a complete target.
        let wrong = PartInfo {
            size: base.size + 1,
            ..base.clone()
        };
        assert!(store.link_part(3, 4, &wrong).is_err());
        assert!(store.link_part(3, 3, &base).is_err());
    }

    /// Parts written in pieces through `write_part_with` (on Linux past the page cache, in
    /// aligned chunks with the last one padded and cut) read back as the bytes given, with
    /// the size and CRC-32 computed here, whatever their size against the block and chunk
    /// sizes; in a folder on the disk and, where there is one, on tmpfs (which may refuse
    /// O_DIRECT: then the page cache is used). Also lists the parts written.
    #[test]
    fn parts_of_any_size_read_back_whole_on_disk_and_on_tmpfs() {
        let mut roots = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir() {
            roots.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        let sizes = [
            0,
            1,
            DIRECT_BLOCK - 1,
            DIRECT_BLOCK,
            DIRECT_BLOCK + 1,
            DIRECT_CHUNK - 1,
            DIRECT_CHUNK,
            DIRECT_CHUNK + 5_000,
            3 * DIRECT_CHUNK + 17,
        ];
        for root in &roots {
            let store = LocalDirStore::new(root.path(), "job").unwrap();
            let mut names = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                let bytes: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
                let name = format!("p{i}");
                // Pieces of uneven sizes, some larger than the writer's buffers.
                let info = store
                    .write_part_with(1, &name, &mut |w| {
                        let mut rest = &bytes[..];
                        let mut piece = 1;
                        while !rest.is_empty() {
                            let n = piece.min(rest.len());
                            w.write_all(&rest[..n]).map_err(|e| Error::io("test", e))?;
                            rest = &rest[n..];
                            piece = piece * 7 + 3;
                        }
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(
                    (info.size, info.crc32),
                    (size as u64, crc32fast::hash(&bytes))
                );
                names.push(name);
            }
            let mut listed = store.part_names(1).unwrap();
            listed.sort();
            let mut want = names.clone();
            want.sort();
            assert_eq!(listed, want);
            assert!(store.part_names(2).unwrap().is_empty());
            store.commit(1, 1, &names, BTreeMap::new()).unwrap();
            for (i, &size) in sizes.iter().enumerate() {
                let bytes: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
                let read = store.read_part(1, &format!("p{i}")).unwrap();
                assert!(
                    read == bytes,
                    "part p{i} of {size} bytes in {:?}",
                    root.path()
                );
            }
        }
    }

    #[test]
    fn names_that_are_not_safe_file_names_are_refused() {
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a..b", "a\nb", "a\0b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_name(&"x".repeat(201)).is_err());
        for good in ["source-0", "window count:3", "op_1.state", "x"] {
            assert!(check_name(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn checkpoint_folders_have_20_digit_ids() {
        let store = LocalDirStore {
            dir: PathBuf::from("/s/job"),
            verified: Mutex::default(),
            written: Mutex::default(),
        };
        assert_eq!(
            store.checkpoint_dir(7),
            PathBuf::from("/s/job/chk-00000000000000000007")
        );
        assert_eq!(
            store.checkpoint_dir(u64::MAX),
            PathBuf::from("/s/job/chk-18446744073709551615")
        );
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_le_bytes();
        let mut v = len.to_vec();
        v.extend_from_slice(&record_crc(&len, payload).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn log_parser_stops_at_the_first_bad_record() {
        let p = Path::new("x.log");
        let mut file = LOG_MAGIC.to_vec();
        file.extend(framed(b"one"));
        file.extend(framed(b""));
        let good = file.len();
        file.extend(framed(b"three"));
        let parsed = parse_log(p, &file).unwrap();
        assert_eq!(parsed.records.len(), 3);
        assert!(parsed.tail.is_none());
        // Every cut inside the last record is a torn tail that leaves the first two.
        for cut in good + 1..file.len() {
            let parsed = parse_log(p, &file[..cut]).unwrap();
            assert_eq!(parsed.records.len(), 2, "cut at {cut}");
            assert_eq!(parsed.valid_end, good);
            assert!(parsed.tail.is_some());
        }
        // A zero-filled tail (what a file system may leave after a crash) is not a record.
        let mut zeros = file[..good].to_vec();
        zeros.extend([0u8; 64]);
        let parsed = parse_log(p, &zeros).unwrap();
        assert_eq!(parsed.records.len(), 2);
        assert!(parsed.tail.is_some());
        // A flipped payload byte fails the checksum.
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(parse_log(p, &flipped).unwrap().records.len(), 2);
        // A torn file header is an empty log; a foreign file is an error.
        assert_eq!(parse_log(p, &LOG_MAGIC[..3]).unwrap().valid_end, 0);
        assert!(parse_log(p, b"hello world").is_err());
    }
}
