//! Small file-system helpers: positional reads (so readers never share a file cursor with the
//! writer), directory fsync, atomic small-file replacement, and running blocking I/O off the
//! async workers.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use switchboard_storage::{StorageError, StorageResult};

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    // Moves the file cursor, which nothing here relies on: writes use append mode.
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

/// Fills `buf` from `pos`; reaching the end of the file first is `UnexpectedEof`.
pub(crate) fn read_exact_at(file: &File, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match read_at(file, buf, pos) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A `Read` over a shared file from a given position, for buffered sequential scans.
pub(crate) struct PosReader<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> PosReader<'a> {
    pub(crate) fn new(file: &'a File, pos: u64) -> Self {
        Self { file, pos }
    }
}

impl Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Makes the creation, deletion or renaming of entries in `dir` durable: on Linux a new file's
/// name is only on disk once its directory has been fsynced.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; NTFS journals the metadata itself.
        let _ = dir;
        Ok(())
    }
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file, never a
/// torn one: write a sibling temporary file, fsync it, rename it over, fsync the directory.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], fsync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    if fsync {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if fsync => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Removes a file, treating "already gone" as success (a crash may have removed it before).
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs blocking file I/O on tokio's blocking pool, so async workers never wait on the disk.
pub(crate) async fn blocking<T, F>(f: F) -> StorageResult<T>
where
    F: FnOnce() -> StorageResult<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // Cancelled only when the runtime shuts down.
        Err(e) if e.is_cancelled() => Err(StorageError::Closed),
        Err(e) => Err(StorageError::Io(io::Error::other(format!(
            "storage I/O task panicked: {e}"
        )))),
    }
}
