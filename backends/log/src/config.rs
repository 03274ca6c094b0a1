//! Settings of the native log.

use std::time::Duration;

use switchboard_storage::Durability;

/// Largest segment size honoured. Index entries store file positions as `u32`; capping a segment
/// at `i32::MAX` (as Kafka does) and an append at the same size keeps every batch start below
/// 4 GiB even when one large append lands in an empty segment.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// When segment data is forced to stable storage (`fsync`, precisely `sync_data`).
///
/// Whatever the policy, when `append` returns its batches have been written to the segment file
/// with `write(2)`: they sit in the operating system's page cache, readers see them, and they
/// survive the process being killed (`kill -9`). The policy decides what else survives a crash
/// or power loss of the machine:
///
/// * everything an append returned for once an fsync covering it has completed;
/// * every sealed segment (its log and both indexes are fsynced when it is rolled, and the
///   directory after the new segment is created), except under [`FsyncPolicy::Never`];
/// * the `log-start` file, written by `delete_before` with tmp + rename + fsync, except under
///   [`FsyncPolicy::Never`].
///
/// Concurrent appends that must wait for an fsync share one (group commit): each waits until the
/// partition's "synced up to offset" mark passes its last offset, and whichever finds no fsync in
/// flight runs the next one for everyone who wrote before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// `Durability::Sync` appends return only after an fsync covering them; `Buffered` appends
    /// are never fsynced on their own behalf: they reach the disk with the next Sync append or
    /// `flush()` on the partition, when their segment is rolled, or when the OS writes the page
    /// cache back.
    #[default]
    OnSync,
    /// Every append, `Buffered` or `Sync`, returns only after an fsync covering it.
    Always,
    /// A background task fsyncs, at this period, every partition with appends not yet synced,
    /// so a machine crash loses at most about one period of `Buffered` appends. `Sync` appends
    /// still wait for their own fsync, exactly as under [`FsyncPolicy::OnSync`].
    Interval(Duration),
    /// Never fsync anything, not even for `Sync` appends, `flush()` or a roll: a machine crash
    /// may lose or tear any data. For tests and throwaway streams only.
    Never,
}

impl FsyncPolicy {
    /// Whether this policy ever calls fsync.
    pub fn syncs(&self) -> bool {
        !matches!(self, Self::Never)
    }

    /// Whether an append with `durability` must wait for an fsync before it returns.
    pub fn waits_for(&self, durability: Durability) -> bool {
        match self {
            Self::OnSync | Self::Interval(_) => durability == Durability::Sync,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Configuration of a [`crate::LogStorage`]; the same for every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is rolled before an append that would take it past this size, unless it is
    /// empty (so an append larger than a segment still fits, alone). Default 1 GiB; values above
    /// [`MAX_SEGMENT_BYTES`] are treated as that.
    pub segment_bytes: u64,
    /// A segment is rolled before an append once this many milliseconds have passed since its
    /// first batch was appended (for a segment found on disk: since the file was created, or
    /// last modified where the file system does not record creation). Default 7 days; `None`
    /// rolls by size only.
    pub segment_ms: Option<u64>,
    /// Bytes of batches between two entries of the sparse offset and time indexes. Smaller
    /// means bigger indexes and shorter scans on reads. Default 4 KiB, as Kafka.
    pub index_interval_bytes: u32,
    /// When data is fsynced; see [`FsyncPolicy`].
    pub fsync: FsyncPolicy,
    /// Bytes of the most recently appended batches each partition keeps in memory, so that
    /// readers following the end of the log are served without a file read. 0 turns it off.
    /// Default 1 MiB.
    pub tail_cache_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 60 * 60 * 1000),
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::OnSync,
            tail_cache_bytes: 1 << 20,
        }
    }
}

impl LogConfig {
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(MAX_SEGMENT_BYTES)
    }
}
