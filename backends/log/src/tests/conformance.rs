//! The storage conformance suite, over a temporary directory, with each fsync policy.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_model::TopicPartition;
use switchboard_model::batch::peek_header;
use switchboard_storage::SharedStorage;
use switchboard_storage::conformance::{Harness, batch, run_all};
use tempfile::TempDir;

use super::{cut_to_batches, partition_dir, segment_logs, small_config};
use crate::{FsyncPolicy, LogConfig, LogStorage};

struct Disk {
    dir: TempDir,
    config: LogConfig,
}

impl Disk {
    fn new(fsync: FsyncPolicy) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            config: LogConfig {
                fsync,
                ..small_config(4096)
            },
        }
    }
}

/// The offset after the last batch of a segment file, found by walking its headers.
fn next_offset(log: &[u8]) -> u64 {
    let (mut at, mut next) = (0, 0);
    while let Ok(h) = peek_header(&log[at..]) {
        next = h.base_offset as u64 + h.offset_count();
        at += h.total_len();
    }
    next
}

#[async_trait]
impl Harness for Disk {
    async fn open(&self) -> SharedStorage {
        Arc::new(
            LogStorage::open(self.dir.path(), self.config.clone())
                .await
                .unwrap(),
        )
    }

    /// Appends a whole batch at the next offset with its last byte flipped: the length and
    /// header are plausible, only the CRC gives the torn write away.
    async fn tear_tail(&self, tp: &TopicPartition) -> bool {
        let log = segment_logs(&partition_dir(self.dir.path(), tp))
            .pop()
            .unwrap();
        cut_to_batches(&log);
        let next = next_offset(&std::fs::read(&log).unwrap());
        let mut torn = batch(2, 50, 0).with_base_offset(next).into_bytes().to_vec();
        *torn.last_mut().unwrap() ^= 0xff;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(&torn).unwrap();
        true
    }
}

#[tokio::test]
async fn passes_the_conformance_suite_when_fsyncing_sync_appends() {
    run_all(&Disk::new(FsyncPolicy::OnSync)).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_when_fsyncing_every_append() {
    run_all(&Disk::new(FsyncPolicy::Always)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_with_a_background_flusher() {
    run_all(&Disk::new(FsyncPolicy::Interval(Duration::from_millis(5)))).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_without_fsync() {
    run_all(&Disk::new(FsyncPolicy::Never)).await;
}
