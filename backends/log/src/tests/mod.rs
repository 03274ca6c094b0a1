//! Tests of the whole backend: the shared conformance suite, then this backend's own
//! behaviours (segments, recovery, group commit, retention).

mod commit;
mod conformance;
mod recovery;
mod retention;
mod segments;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchboard_model::batch::peek_header;
use switchboard_model::{StreamName, TopicPartition};
use switchboard_storage::Durability;
use switchboard_storage::conformance::batch;

use crate::partition::Partition;
use crate::{FsyncPolicy, LogConfig, LogStorage, Storage, partition_dir_name};

/// Small segments and a dense index, so a few appends exercise rolls and index lookups.
fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: None,
        index_interval_bytes: 256,
        fsync: FsyncPolicy::OnSync,
        // Small, so that tests read recent batches from memory and older ones from the files.
        tail_cache_bytes: 2048,
    }
}

fn tp(name: &str) -> TopicPartition {
    TopicPartition::new(StreamName::new(name).unwrap(), 0)
}

fn partition_dir(root: &Path, tp: &TopicPartition) -> PathBuf {
    root.join(partition_dir_name(tp))
}

/// The segment log files of a partition, oldest first.
fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// Bytes of the whole batches a segment log file starts with. An active segment's file may be
/// longer: it is reserved ahead of its batches (see `segment`).
fn batch_bytes(log: &Path) -> u64 {
    let bytes = std::fs::read(log).unwrap();
    let mut at = 0;
    while let Ok(h) = peek_header(&bytes[at..]) {
        at += h.total_len();
    }
    at as u64
}

/// Cuts a segment log file back to its batches, as reopening does: a crash test that adds bytes
/// at the end then puts them right after the last batch, not after the reserved tail.
fn cut_to_batches(log: &Path) -> u64 {
    let len = batch_bytes(log);
    set_file_len(log, len);
    len
}

/// Cuts or extends (with zeros) the file at `path` to `len` bytes.
fn set_file_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

impl LogStorage {
    fn partition_for_test(&self, tp: &TopicPartition) -> Arc<Partition> {
        self.partition(tp).unwrap()
    }
}

/// Appends `count` single-record batches of `size` bytes, timestamps `ts`, `ts + 1`, ….
async fn fill(s: &LogStorage, tp: &TopicPartition, count: i64, size: usize, ts: i64) {
    for i in 0..count {
        s.append(tp, vec![batch(1, size, ts + i)], Durability::Buffered)
            .await
            .unwrap();
    }
}
