//! What each fsync policy does, and group commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_model::{Offset, TopicPartition};
use switchboard_storage::conformance::batch;
use switchboard_storage::{Durability, Storage};
use tempfile::TempDir;

use super::{fill, tp};
use crate::partition::EARLY_WRITEBACK_BYTES;
use crate::{FsyncPolicy, LogConfig, LogStorage};

async fn open(root: &std::path::Path, fsync: FsyncPolicy) -> Arc<LogStorage> {
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    Arc::new(LogStorage::open(root, config).await.unwrap())
}

/// A storage under `fsync` in a fresh directory (kept alive by the returned guard), with the
/// partition `name` open.
async fn opened(fsync: FsyncPolicy, name: &str) -> (TempDir, Arc<LogStorage>, TopicPartition) {
    let root = tempfile::tempdir().unwrap();
    let s = open(root.path(), fsync).await;
    let tp = tp(name);
    s.open_partition(&tp).await.unwrap();
    (root, s, tp)
}

/// Spawns `n` tasks that each append one record with `Durability::Sync`, all before any runs;
/// returns their base offsets in spawn order.
async fn sync_appends_at_once(s: &Arc<LogStorage>, tp: &TopicPartition, n: usize) -> Vec<Offset> {
    let appends: Vec<_> = (0..n)
        .map(|_| {
            let (s, tp) = (s.clone(), tp.clone());
            tokio::spawn(async move {
                s.append(&tp, vec![batch(1, 100, 0)], Durability::Sync)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut offsets = Vec::with_capacity(n);
    for append in appends {
        offsets.push(append.await.unwrap().base_offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_appends_share_fsyncs() {
    let (_root, s, tp) = opened(FsyncPolicy::OnSync, "group-commit").await;

    let mut offsets = sync_appends_at_once(&s, &tp, 50).await;
    offsets.sort_unstable();
    assert_eq!(offsets, (0..50).collect::<Vec<_>>());

    let p = s.partition_for_test(&tp);
    let fsyncs = p.fsyncs.load(Ordering::Relaxed);
    assert!(fsyncs >= 1, "Sync appends must be fsynced");
    assert!(
        fsyncs < 50,
        "50 concurrent Sync appends took {fsyncs} fsyncs"
    );
    assert_eq!(p.commit.durable(), 50);
}

/// The flusher lets the appenders that are ready run before its fsync starts, so one fsync
/// covers them all; starting it at once covers the first append alone and needs a second.
#[tokio::test(flavor = "current_thread")]
async fn an_fsync_waits_for_the_appenders_ready_to_run() {
    let (_root, s, tp) = opened(FsyncPolicy::OnSync, "ready-first").await;

    sync_appends_at_once(&s, &tp, 20).await;
    let p = s.partition_for_test(&tp);
    assert_eq!(p.commit.durable(), 20);
    assert_eq!(p.fsyncs.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn buffered_appends_are_not_fsynced_until_flush() {
    let (_root, s, tp) = opened(FsyncPolicy::OnSync, "buffered").await;
    fill(&s, &tp, 10, 100, 0).await;
    let p = s.partition_for_test(&tp);
    assert_eq!(p.fsyncs.load(Ordering::Relaxed), 0);

    s.flush().await.unwrap();
    assert_eq!(p.fsyncs.load(Ordering::Relaxed), 1);
    assert_eq!(p.commit.durable(), 10);
    s.flush().await.unwrap();
    assert_eq!(p.fsyncs.load(Ordering::Relaxed), 1, "nothing new to sync");
}

#[tokio::test]
async fn the_always_policy_fsyncs_buffered_appends_too() {
    let (_root, s, tp) = opened(FsyncPolicy::Always, "always").await;
    fill(&s, &tp, 3, 100, 0).await;
    let p = s.partition_for_test(&tp);
    assert_eq!(
        p.fsyncs.load(Ordering::Relaxed),
        3,
        "one at a time, nothing to share"
    );
    assert_eq!(p.commit.durable(), 3);
}

#[tokio::test]
async fn the_never_policy_does_not_fsync_even_sync_appends() {
    let (_root, s, tp) = opened(FsyncPolicy::Never, "never").await;
    s.append(&tp, vec![batch(1, 1, 0)], Durability::Sync)
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.partition_for_test(&tp).fsyncs.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_interval_policy_syncs_buffered_appends_in_the_background() {
    let root = tempfile::tempdir().unwrap();
    let s = open(
        root.path(),
        FsyncPolicy::Interval(Duration::from_millis(10)),
    )
    .await;
    let tp = tp("interval");
    s.open_partition(&tp).await.unwrap();
    fill(&s, &tp, 5, 100, 0).await;
    let p = s.partition_for_test(&tp);
    tokio::time::timeout(Duration::from_secs(10), p.durable_reaches(5))
        .await
        .expect("the background flusher syncs within its period");
    assert!(p.fsyncs.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn an_empty_sync_append_returns_at_once_without_fsync() {
    let (_root, s, tp) = opened(FsyncPolicy::OnSync, "empty-append").await;
    let at = tokio::time::timeout(
        Duration::from_secs(10),
        s.append(&tp, Vec::new(), Durability::Sync),
    )
    .await
    .expect("nothing to wait for")
    .unwrap();
    assert_eq!((at.base_offset, at.last_offset), (0, 0));
    assert_eq!(s.partition_for_test(&tp).fsyncs.load(Ordering::Relaxed), 0);
}

/// A busy partition is fsynced in the background every `EARLY_WRITEBACK_BYTES`, so a roll (which
/// must fsync the whole sealed segment before the next append) finds little left to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_appends_are_written_back_early_in_the_background() {
    let (_root, s, tp) = opened(FsyncPolicy::OnSync, "early-writeback").await;
    let p = s.partition_for_test(&tp);
    // Appends of 100 records of 10 KiB, none of them asking for an fsync, to twice the mark.
    let appends = (2 * EARLY_WRITEBACK_BYTES / (100 * 10 * 1024) + 1) as i64;
    for i in 0..appends {
        s.append(
            &tp,
            vec![batch(100, 10 * 1024, i * 100)],
            Durability::Buffered,
        )
        .await
        .unwrap();
    }
    let started = tokio::time::Instant::now();
    while p.fsyncs.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no early writeback after {appends} buffered appends of 1 MB"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.commit.durable(), 0, "an early writeback promises nothing");
}

/// A group-commit fsync covers what was appended before it, so the early writeback counts from
/// it: a partition whose writers sync often (acks=all, MQTT QoS 1) gets no extra fsyncs.
#[tokio::test]
async fn a_group_commit_restarts_the_early_writeback_count() {
    let (_root, s, tp) = opened(FsyncPolicy::OnSync, "writeback-count").await;
    fill(&s, &tp, 5, 100, 0).await;
    let p = s.partition_for_test(&tp);
    assert!(p.unflushed.load(Ordering::Acquire) > 0);
    s.sync(&tp).await.unwrap();
    assert_eq!(p.unflushed.load(Ordering::Acquire), 0);
}
