//! One segment: a log file of whole v2 batches starting at `base`, and its two sparse indexes.
//!
//! Files are named by base offset, zero-padded to 20 digits so that names sort like offsets
//! (`00000000000000000000.log`, `.index`, `.timeindex`), as in Kafka.
//!
//! A segment is shared between the partition's single writer and any number of readers. The
//! writer appends bytes, then index entries, then publishes the new `size`; readers never look
//! past the `size` they loaded, so they only ever see whole batches.
//!
//! When appends are fsynced, the active segment's file is made longer than its batches ahead of
//! time ([`RESERVE_BYTES`] at a time, a sparse extension that takes no disk space): an fsync
//! after an append that grew the file must also write the inode (the new length), one more
//! synchronous write per fsync; inside the reserved length it need not. The file is cut back to
//! its batches when the segment is sealed, or else when the partition is next opened (the
//! reserved part reads as zeros, where the recovery scan stops). Not when the segment is
//! dropped: a storage instance that lingers (a background task still holding it) must not cut
//! a file that a newer instance of the same directory is appending to. Unix only (see
//! [`Segment::open`]).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use switchboard_model::Offset;

use crate::fsio::remove_if_present;
use crate::index::{Index, OffsetEntry, TimeEntry};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// Most buffers one `writev` takes (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// How far ahead of its batches a reserving segment's file is extended. An fsync that covers an
/// extension is as slow as before; the ones after it, up to the next, skip the inode write
/// (`fdatasync` of 1 KiB appends on this ext4: 145 → 97 µs each, and a third less CPU).
pub(crate) const RESERVE_BYTES: u64 = 8 << 20;

/// Writes `chunks` one after another at the file's cursor, as few system calls as it takes.
fn write_all_vectored(mut file: &File, chunks: &[Bytes]) -> io::Result<()> {
    if let [one] = chunks {
        return file.write_all(one);
    }
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let upto = rest.len().min(MAX_IOVECS);
        match file.write_vectored(&rest[..upto]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The file name of a segment's `ext` file.
pub fn file_name(base: Offset, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// The base offset of a file named by [`file_name`], and its extension.
pub(crate) fn parse_file_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// Batches staged for one append: their bytes (base offsets already assigned), written with
/// one `writev` rather than copied together first, and the index entries they earned.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub batches: Vec<Bytes>,
    /// Bytes in `batches`.
    pub len: u64,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    pub max_ts: i64,
}

/// A failed append. When `rolled_back` is false the files may hold a partial write that could
/// not be cut off, and the segment must not be appended to again.
#[derive(Debug)]
pub(crate) struct AppendFailure {
    pub error: io::Error,
    pub rolled_back: bool,
}

#[derive(Debug)]
pub(crate) struct Segment {
    base: Offset,
    dir: PathBuf,
    pub(crate) log: File,
    pub(crate) offsets: Index<OffsetEntry>,
    pub(crate) times: Index<TimeEntry>,
    /// Bytes of whole batches readers may see.
    size: AtomicU64,
    /// Largest batch max timestamp in the segment; `i64::MIN` while empty.
    max_timestamp: AtomicI64,
    /// Whether the file is extended ahead of its batches (see the module notes). Such a file is
    /// written at its cursor, kept at `size`, rather than in append mode.
    reserves: bool,
    /// The file's length when it is longer than `size`: up to here it is reserved.
    reserved: AtomicU64,
}

impl Segment {
    /// Opens the files of the segment at `base`, creating missing ones; `fresh` empties them
    /// (a new segment). Size and max timestamp start unknown (zero, `i64::MIN`): whoever opens
    /// an existing segment sets them with [`Segment::set_loaded`] once it has checked the files.
    ///
    /// `reserves` extends the file ahead of its batches (an active segment whose appends are
    /// fsynced); it is honoured on Unix only, where readers never move the file's cursor.
    pub(crate) fn open(dir: &Path, base: Offset, fresh: bool, reserves: bool) -> io::Result<Self> {
        let reserves = reserves && cfg!(unix);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .append(!reserves)
            .create(true)
            .open(dir.join(file_name(base, LOG_EXT)))?;
        if fresh {
            log.set_len(0)?;
        }
        Ok(Self {
            base,
            dir: dir.to_path_buf(),
            log,
            offsets: Index::open(&dir.join(file_name(base, INDEX_EXT)), fresh)?,
            times: Index::open(&dir.join(file_name(base, TIME_INDEX_EXT)), fresh)?,
            size: AtomicU64::new(0),
            max_timestamp: AtomicI64::new(i64::MIN),
            reserves,
            reserved: AtomicU64::new(0),
        })
    }

    pub(crate) fn base(&self) -> Offset {
        self.base
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join(file_name(self.base, LOG_EXT))
    }

    /// Records what the checked files hold; the next append writes at `size`, which must be
    /// the file's length.
    pub(crate) fn set_loaded(&self, size: u64, max_timestamp: i64) -> io::Result<()> {
        self.size.store(size, Ordering::Release);
        self.max_timestamp.store(max_timestamp, Ordering::Release);
        if self.reserves {
            (&self.log).seek(SeekFrom::Start(size))?;
        }
        Ok(())
    }

    /// Extends the file past `end` unless it already reaches that far.
    fn reserve(&self, end: u64) -> io::Result<()> {
        if !self.reserves || end <= self.reserved.load(Ordering::Acquire) {
            return Ok(());
        }
        let to = (end / RESERVE_BYTES + 1) * RESERVE_BYTES;
        self.log.set_len(to)?;
        self.reserved.store(to, Ordering::Release);
        Ok(())
    }

    /// Cuts the file back to its batches, as a sealed segment must be: a sealed segment's
    /// length is trusted on reopen.
    pub(crate) fn release_reserve(&self) -> io::Result<()> {
        if self.reserved.load(Ordering::Acquire) > 0 {
            self.log.set_len(self.size())?;
            self.reserved.store(0, Ordering::Release);
        }
        Ok(())
    }

    /// Writes staged batches and their index entries, then makes them visible. On failure the
    /// files are cut back to where they were, so a failed append leaves no trace.
    pub(crate) fn append(&self, staged: &Staged) -> Result<(), AppendFailure> {
        let size = self.size();
        let (offsets, times) = (self.offsets.len(), self.times.len());
        let written = self
            .reserve(size + staged.len)
            .and_then(|()| write_all_vectored(&self.log, &staged.batches))
            .and_then(|()| self.offsets.append(&staged.offsets))
            .and_then(|()| self.times.append(&staged.times));
        if let Err(error) = written {
            self.reserved.store(0, Ordering::Release);
            let undone = self
                .log
                .set_len(size)
                .and_then(|()| self.set_loaded(size, self.max_timestamp()))
                .and_then(|()| self.offsets.truncate(offsets))
                .and_then(|()| self.times.truncate(times));
            return Err(AppendFailure {
                error,
                rolled_back: undone.is_ok(),
            });
        }
        self.max_timestamp
            .fetch_max(staged.max_ts, Ordering::AcqRel);
        self.size.store(size + staged.len, Ordering::Release);
        Ok(())
    }

    /// Flushes the log's data (not its metadata beyond what reading it back needs).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.log.sync_data()
    }

    /// Flushes the log and both indexes: a sealed segment is trusted as is when reopened (so
    /// one being sealed gives up its reserve first).
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        self.log.sync_data()?;
        self.offsets.sync()?;
        self.times.sync()
    }

    /// Deletes the segment's files. The log goes first: index files left by a crash in
    /// between have no log and are swept up when the partition is next opened.
    pub(crate) fn remove_files(&self) -> io::Result<()> {
        remove_if_present(&self.log_path())?;
        remove_if_present(&self.dir.join(file_name(self.base, INDEX_EXT)))?;
        remove_if_present(&self.dir.join(file_name(self.base, TIME_INDEX_EXT)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_like_offsets_and_parse_back() {
        assert_eq!(file_name(0, LOG_EXT), "00000000000000000000.log");
        assert_eq!(
            file_name(1234, TIME_INDEX_EXT),
            "00000000000000001234.timeindex"
        );
        assert!(file_name(99, LOG_EXT) < file_name(100, LOG_EXT));
        assert_eq!(
            parse_file_name("00000000000000001234.index"),
            Some((1234, "index"))
        );
        assert_eq!(parse_file_name("1234.log"), None);
        assert_eq!(parse_file_name("log-start"), None);
        assert_eq!(
            parse_file_name("99999999999999999999.log"),
            None,
            "beyond u64"
        );
    }
}
