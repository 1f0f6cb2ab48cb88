//! [`AtomicFile`]: a buffered temporary file next to its target that becomes the target only
//! when committed (flush, fsync, rename) and is removed otherwise.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use runnel_engine::{Error, Result};

/// A file being written: `.<name>.tmp-<pid>` in the target's directory until [`Self::commit`].
pub(crate) struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// A temporary file with a name of its own
    /// (`.<name>.tmp-<pid>-<n>`), so that several threads may write the same target at once
    /// (each rename replaces the target whole).
    pub(crate) fn create_unique(target: &Path) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::create_at(target, temp_path(target, &format!("-{n}"))?)
    }

    /// A temporary file with the same name in every process
    /// (`.<name>.writing`): a run that resumes after a crash replaces what the crashed one
    /// left instead of leaving it behind.
    pub(crate) fn create_resumable(target: &Path) -> Result<Self> {
        let temp = temp_path(target, "")?;
        let name = target.file_name().expect("checked by temp_path");
        let mut fixed = std::ffi::OsString::from(".");
        fixed.push(name);
        fixed.push(".writing");
        Self::create_at(target, temp.with_file_name(fixed))
    }

    fn create_at(target: &Path, temp: PathBuf) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| Error::io(&temp, e))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            out: Some(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    /// Appends `bytes` to the temporary file.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(out) => out.write_all(bytes).map_err(|e| Error::io(&self.temp, e)),
            None => Err(Error::io(
                &self.target,
                std::io::Error::other("write after the file was committed or discarded"),
            )),
        }
    }

    /// Flushes and fsyncs the temporary file, renames it onto the target and syncs the
    /// directory, so that the target holds either all of the output or what it held before.
    pub(crate) fn commit(mut self) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.temp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
        drop(file);
        if let Err(e) = std::fs::rename(&self.temp, &self.target) {
            let _ = std::fs::remove_file(&self.temp);
            return Err(Error::io(&self.target, e));
        }
        sync_dir(&self.target);
        Ok(())
    }

    fn remove(&mut self) {
        if let Some(out) = self.out.take() {
            // Dropping a BufWriter flushes it; do not write what is about to be deleted.
            let (file, _) = out.into_parts();
            drop(file);
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl std::fmt::Debug for AtomicFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicFile")
            .field("target", &self.target)
            .field("temp", &self.temp)
            .finish()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `dir/.<name>.tmp-<pid><suffix>` for `dir/name`.
fn temp_path(target: &Path, suffix: &str) -> Result<PathBuf> {
    let Some(name) = target.file_name() else {
        return Err(Error::io(
            target,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file path (it has no file name)",
            ),
        ));
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}{suffix}", std::process::id()));
    Ok(target.with_file_name(temp_name))
}

/// Makes a rename durable by syncing its directory (best effort: some file systems refuse to
/// sync directories, and the data itself is already synced).
pub(crate) fn sync_dir(target: &Path) {
    #[cfg(unix)]
    {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = target;
}
