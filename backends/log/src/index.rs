//! The sparse indexes of a segment, as in Kafka.
//!
//! * `.index` maps a batch's base offset (relative to the segment) to its file position, one
//!   8-byte entry (`u32` relative offset, `u32` position, big-endian) every
//!   `index_interval_bytes` of log. A read looks up the last entry at or before its offset and
//!   scans batch headers from there, so it never scans more than about one interval.
//! * `.timeindex` holds 12-byte entries (`i64` max timestamp, `u32` relative offset), written
//!   with the offset entries whenever the segment's largest timestamp grew, plus one when the
//!   segment is sealed. An entry `(T, R)` promises that every batch whose base offset is at most
//!   `R` has a max timestamp of at most `T`. (Kafka stores the offset of the record holding `T`
//!   instead; ours names the batch just written, which lets a search skip more.) The last entry
//!   of a sealed segment therefore carries the segment's largest timestamp.
//!
//! Entries are appended to the files as they are made and looked up with positional reads (a
//! binary search costs about twenty 8-byte reads from the page cache), so indexes take no memory
//! however large the log grows.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsio::read_exact_at;

/// One fixed-size index entry.
pub(crate) trait Entry: Copy {
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    /// `b` is exactly `LEN` bytes.
    fn decode(b: &[u8]) -> Self;
}

/// Relative base offset of a batch → its position in the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel: u32,
    pub pos: u32,
}

/// Every batch up to relative base offset `rel` has a max timestamp of at most `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub ts: i64,
    pub rel: u32,
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

impl Entry for OffsetEntry {
    const LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel.to_be_bytes());
        out.extend_from_slice(&self.pos.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Self {
            rel: be_u32(b),
            pos: be_u32(&b[4..]),
        }
    }
}

impl Entry for TimeEntry {
    const LEN: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&self.rel.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        Self {
            ts: i64::from_be_bytes(ts),
            rel: be_u32(&b[8..]),
        }
    }
}

/// An index file. Only the partition's writer appends or truncates; readers use positional reads
/// of entries below `len`, which is published after the bytes are written.
#[derive(Debug)]
pub(crate) struct Index<E> {
    file: File,
    len: AtomicU64,
    /// False when the file was missing, or its size not a whole number of entries, when opened.
    whole: bool,
    _entry: PhantomData<E>,
}

impl<E: Entry> Index<E> {
    /// Opens (creating if missing, emptying if `truncate`) an index file.
    pub(crate) fn open(path: &Path, truncate: bool) -> io::Result<Self> {
        // A missing index must not pass for an empty one.
        let existed = truncate || path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if truncate {
            file.set_len(0)?;
        }
        let bytes = file.metadata()?.len();
        Ok(Self {
            file,
            len: AtomicU64::new(bytes / E::LEN as u64),
            whole: existed && bytes % E::LEN as u64 == 0,
            _entry: PhantomData,
        })
    }

    /// Whether the file existed and held whole entries only when it was opened.
    pub(crate) fn is_whole(&self) -> bool {
        self.whole
    }

    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, i: u64) -> io::Result<E> {
        let mut buf = [0u8; 16];
        let buf = &mut buf[..E::LEN];
        read_exact_at(&self.file, buf, i * E::LEN as u64)?;
        Ok(E::decode(buf))
    }

    pub(crate) fn last(&self) -> io::Result<Option<E>> {
        match self.len() {
            0 => Ok(None),
            n => self.get(n - 1).map(Some),
        }
    }

    /// The last entry for which `before` holds, `before` being true on a prefix of the entries
    /// (they are sorted by offset, and by timestamp).
    pub(crate) fn last_where(&self, before: impl Fn(&E) -> bool) -> io::Result<Option<E>> {
        let (mut lo, mut hi) = (0, self.len());
        let mut found = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.get(mid)?;
            if before(&e) {
                found = Some(e);
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(found)
    }

    pub(crate) fn append(&self, entries: &[E]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(entries.len() * E::LEN);
        for e in entries {
            e.encode(&mut buf);
        }
        (&self.file).write_all(&buf)?;
        self.len.fetch_add(entries.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Drops entries from `len` on, undoing a failed append.
    pub(crate) fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len * E::LEN as u64)?;
        self.len.store(len, Ordering::Release);
        Ok(())
    }

    /// Replaces the whole index, after a rebuild from the log.
    pub(crate) fn rewrite(&mut self, entries: &[E]) -> io::Result<()> {
        self.truncate(0)?;
        self.append(entries)?;
        self.whole = true;
        Ok(())
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Decides where index entries go. Appends and index rebuilds feed every batch through one of
/// these, so an index rebuilt from the log equals the one written live.
#[derive(Debug, Clone)]
pub(crate) struct Indexer {
    interval: u64,
    bytes_since_entry: u64,
    /// Largest max timestamp in the segment so far.
    max_ts: Option<i64>,
    last_rel: Option<u32>,
    last_time_entry: Option<i64>,
}

impl Indexer {
    pub(crate) fn new(interval_bytes: u32) -> Self {
        Self {
            interval: u64::from(interval_bytes),
            bytes_since_entry: 0,
            max_ts: None,
            last_rel: None,
            last_time_entry: None,
        }
    }

    /// Accounts for a batch at relative offset `rel` and position `pos`; returns the entries to
    /// write for it. Like Kafka, the first entry comes only after `interval` bytes: a lookup
    /// that finds no entry scans from position 0.
    pub(crate) fn on_batch(
        &mut self,
        rel: u32,
        pos: u32,
        len: u64,
        max_ts: i64,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let due = self.bytes_since_entry >= self.interval;
        self.bytes_since_entry += len;
        self.max_ts = Some(self.max_ts.map_or(max_ts, |m| m.max(max_ts)));
        self.last_rel = Some(rel);
        if !due {
            return (None, None);
        }
        self.bytes_since_entry = len;
        (Some(OffsetEntry { rel, pos }), self.time_entry())
    }

    /// The final time entry of a segment being sealed, if the last one does not already carry
    /// the segment's largest timestamp.
    pub(crate) fn seal(&mut self) -> Option<TimeEntry> {
        self.time_entry()
    }

    fn time_entry(&mut self) -> Option<TimeEntry> {
        let (ts, rel) = (self.max_ts?, self.last_rel?);
        if self.last_time_entry.is_some_and(|last| last >= ts) {
            return None;
        }
        self.last_time_entry = Some(ts);
        Some(TimeEntry { ts, rel })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets_with(dir: &Path, entries: &[OffsetEntry]) -> Index<OffsetEntry> {
        let idx = Index::open(&dir.join("x.index"), true).unwrap();
        idx.append(entries).unwrap();
        idx
    }

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_before_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (0..100)
            .map(|i| OffsetEntry {
                rel: i * 10,
                pos: i * 1000,
            })
            .collect();
        let idx = offsets_with(dir.path(), &entries);
        let at = |rel: u32| idx.last_where(|e| e.rel <= rel).unwrap().map(|e| e.pos);
        assert_eq!(at(0), Some(0));
        assert_eq!(at(9), Some(0));
        assert_eq!(at(10), Some(1000));
        assert_eq!(at(555), Some(55_000));
        assert_eq!(at(u32::MAX), Some(99_000));
    }

    #[test]
    fn lookup_before_the_first_entry_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let idx = offsets_with(dir.path(), &[OffsetEntry { rel: 5, pos: 4096 }]);
        assert_eq!(idx.last_where(|e| e.rel <= 4).unwrap(), None);
        let empty = Index::<OffsetEntry>::open(&dir.path().join("e.index"), true).unwrap();
        assert_eq!(empty.last_where(|_| true).unwrap(), None);
    }

    #[test]
    fn index_reopens_with_its_entries_and_detects_a_torn_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.timeindex");
        let idx = Index::<TimeEntry>::open(&path, true).unwrap();
        idx.append(&[TimeEntry { ts: -5, rel: 1 }, TimeEntry { ts: 7, rel: 9 }])
            .unwrap();
        drop(idx);
        let again = Index::<TimeEntry>::open(&path, false).unwrap();
        assert!(again.is_whole());
        assert_eq!(again.last().unwrap(), Some(TimeEntry { ts: 7, rel: 9 }));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[1, 2, 3])
            .unwrap();
        assert!(!Index::<TimeEntry>::open(&path, false).unwrap().is_whole());
    }

    #[test]
    fn indexer_writes_an_entry_every_interval_and_time_entries_only_when_time_grows() {
        let mut ix = Indexer::new(100);
        assert_eq!(ix.on_batch(0, 0, 60, 10), (None, None));
        assert_eq!(ix.on_batch(1, 60, 60, 5), (None, None));
        let (o, t) = ix.on_batch(2, 120, 60, 7);
        assert_eq!(o, Some(OffsetEntry { rel: 2, pos: 120 }));
        assert_eq!(t, Some(TimeEntry { ts: 10, rel: 2 }));
        assert_eq!(ix.on_batch(3, 180, 60, 9), (None, None));
        let (o, t) = ix.on_batch(4, 240, 60, 8);
        assert_eq!(o, Some(OffsetEntry { rel: 4, pos: 240 }));
        assert_eq!(t, None, "the largest timestamp did not grow");
        ix.on_batch(5, 300, 60, 42);
        assert_eq!(ix.seal(), Some(TimeEntry { ts: 42, rel: 5 }));
        assert_eq!(ix.seal(), None);
    }
}
