//! The conformance suite every backend runs. A backend's test module implements [`Harness`] and
//! calls [`run_all`]; each case uses its own partition, so cases do not interfere.
//!
//! Harnesses should configure small segments (a few KiB) so that reads cross segment boundaries.

// Test support: a panic is how a case reports a violation.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_model::{BatchBuilder, Record, RecordBatch, StreamName, TopicPartition};

use crate::fault::FaultyStorage;
use crate::{Durability, SharedStorage, Storage, StorageError};

/// How the suite reaches a backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the backend over the harness's persistent state; every call sees what earlier,
    /// closed instances acknowledged.
    async fn open(&self) -> SharedStorage;

    /// Simulates a crash in the middle of a write: leaves a partial batch after the last
    /// acknowledged one of `tp` (the storage instance has been dropped). Returns false if the
    /// backend has no such failure mode, and the case is skipped.
    async fn tear_tail(&self, tp: &TopicPartition) -> bool;
}

/// A batch of `n` records of `size` value bytes, timestamps starting at `ts`.
pub fn batch(n: usize, size: usize, ts: i64) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let value = Bytes::from(vec![b'a' + (i % 26) as u8; size]);
        b.push(Record::new(
            Some(Bytes::from(format!("key-{i}"))),
            Some(value),
            ts + i as i64,
        ));
    }
    b.build().expect("a batch with records")
}

fn tp(case: &str) -> TopicPartition {
    TopicPartition::new(StreamName::new(case).expect("valid case name"), 0)
}

/// Reads every batch from `from` to the high watermark, checking that offsets are contiguous.
pub async fn read_all(s: &dyn Storage, tp: &TopicPartition, from: u64) -> Vec<RecordBatch> {
    let mut out: Vec<RecordBatch> = Vec::new();
    let mut next = from;
    for _ in 0..100_000 {
        let chunk = s.read(tp, next, 4096).await.expect("read");
        if chunk.batches.is_empty() {
            assert_eq!(
                next, chunk.bounds.high_watermark,
                "empty read below the high watermark"
            );
            return out;
        }
        for raw in chunk.batches {
            let b = RecordBatch::parse(raw).expect("stored batches stay valid");
            if let Some(prev) = out.last() {
                assert_eq!(
                    b.base_offset(),
                    prev.last_offset() + 1,
                    "offsets must be dense"
                );
            }
            next = b.last_offset() as u64 + 1;
            out.push(b);
        }
    }
    panic!("read_all did not reach the high watermark");
}

/// Runs every case. Panics (as a test failure) on the first violation.
pub async fn run_all(h: &dyn Harness) {
    append_then_read_round_trips(h).await;
    offsets_are_dense_and_monotonic(h).await;
    concurrent_appends_get_distinct_ranges(h).await;
    reads_cross_segment_boundaries(h).await;
    read_mid_batch_returns_the_containing_batch(h).await;
    read_respects_byte_budget_but_returns_one_batch(h).await;
    bounds_and_out_of_range_reads(h).await;
    delete_before_moves_log_start(h).await;
    offset_for_timestamp_finds_first_newer(h).await;
    retention_by_size_and_age(h).await;
    reopen_after_close_keeps_everything(h).await;
    reopen_after_torn_tail_truncates_it(h).await;
    remove_partition_forgets_data(h).await;
    injected_faults_surface_as_retryable_errors(h).await;
}

async fn append_then_read_round_trips(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("round-trip");
    assert_eq!(s.open_partition(&tp).await.unwrap().high_watermark, 0);
    let sent = batch(3, 10, 1_000);
    let at = s
        .append(&tp, vec![sent.clone()], Durability::Sync)
        .await
        .unwrap();
    assert_eq!((at.base_offset, at.last_offset), (0, 2));
    let got = read_all(&*s, &tp, 0).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].records().unwrap(),
        sent.with_base_offset(0).records().unwrap()
    );
}

async fn offsets_are_dense_and_monotonic(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("dense");
    s.open_partition(&tp).await.unwrap();
    let mut expected = 0;
    for n in [1usize, 5, 2, 7, 1] {
        let at = s
            .append(
                &tp,
                vec![batch(n, 8, 0), batch(1, 8, 0)],
                Durability::Buffered,
            )
            .await
            .unwrap();
        assert_eq!(at.base_offset, expected);
        expected += n as u64 + 1;
        assert_eq!(at.last_offset, expected - 1);
    }
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, expected);
    assert_eq!(read_all(&*s, &tp, 0).await.len(), 10);
}

async fn concurrent_appends_get_distinct_ranges(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("concurrent");
    s.open_partition(&tp).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, tp) = (s.clone(), tp.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.push(
                    s.append(&tp, vec![batch(3, 8, 0)], Durability::Sync)
                        .await
                        .unwrap(),
                );
            }
            got
        }));
    }
    let mut starts = Vec::new();
    for t in tasks {
        starts.extend(t.await.unwrap().into_iter().map(|a| a.base_offset));
    }
    starts.sort_unstable();
    let want: Vec<u64> = (0..80).map(|i| i * 3).collect();
    assert_eq!(starts, want, "each append must own a distinct dense range");
}

async fn reads_cross_segment_boundaries(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("segments");
    s.open_partition(&tp).await.unwrap();
    for i in 0..200 {
        s.append(&tp, vec![batch(2, 100, i)], Durability::Buffered)
            .await
            .unwrap();
    }
    for from in [0u64, 1, 57, 200, 399] {
        let got = read_all(&*s, &tp, from).await;
        assert!(got[0].base_offset() as u64 <= from && got[0].last_offset() as u64 >= from);
        assert_eq!(got.last().unwrap().last_offset(), 399);
    }
}

async fn read_mid_batch_returns_the_containing_batch(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("mid-batch");
    s.open_partition(&tp).await.unwrap();
    s.append(
        &tp,
        vec![batch(5, 4, 0), batch(5, 4, 0)],
        Durability::Buffered,
    )
    .await
    .unwrap();
    let chunk = s.read(&tp, 7, 1 << 20).await.unwrap();
    let first = RecordBatch::parse(chunk.batches[0].clone()).unwrap();
    assert_eq!((first.base_offset(), first.last_offset()), (5, 9));
}

async fn read_respects_byte_budget_but_returns_one_batch(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("budget");
    s.open_partition(&tp).await.unwrap();
    for _ in 0..10 {
        s.append(&tp, vec![batch(1, 1000, 0)], Durability::Buffered)
            .await
            .unwrap();
    }
    let one = s.read(&tp, 0, 10).await.unwrap();
    assert_eq!(
        one.batches.len(),
        1,
        "a batch larger than the budget is still returned alone"
    );
    let some = s.read(&tp, 0, 3500).await.unwrap();
    assert!(some.byte_len() <= 3500 && some.batches.len() >= 2);
}

async fn bounds_and_out_of_range_reads(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("bounds");
    s.open_partition(&tp).await.unwrap();
    s.append(&tp, vec![batch(4, 4, 0)], Durability::Buffered)
        .await
        .unwrap();
    let b = s.bounds(&tp).await.unwrap();
    assert_eq!((b.log_start, b.high_watermark), (0, 4));
    let at_end = s.read(&tp, 4, 1000).await.unwrap();
    assert!(at_end.batches.is_empty());
    assert!(matches!(
        s.read(&tp, 5, 1000).await,
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let missing = TopicPartition::new(StreamName::new("never-created").unwrap(), 0);
    assert!(matches!(
        s.bounds(&missing).await,
        Err(StorageError::UnknownPartition(_))
    ));
}

async fn delete_before_moves_log_start(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("delete-before");
    s.open_partition(&tp).await.unwrap();
    for _ in 0..50 {
        s.append(&tp, vec![batch(2, 200, 0)], Durability::Buffered)
            .await
            .unwrap();
    }
    let start = s.delete_before(&tp, 60).await.unwrap();
    assert_eq!(start, 60);
    let b = s.bounds(&tp).await.unwrap();
    assert_eq!((b.log_start, b.high_watermark), (60, 100));
    assert!(matches!(
        s.read(&tp, 10, 1000).await,
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let got = read_all(&*s, &tp, 60).await;
    assert_eq!(got[0].base_offset(), 60);
    let at = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Buffered)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 100);
}

async fn offset_for_timestamp_finds_first_newer(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("by-time");
    s.open_partition(&tp).await.unwrap();
    for i in 0..20 {
        s.append(
            &tp,
            vec![batch(2, 100, 10_000 + i * 100)],
            Durability::Buffered,
        )
        .await
        .unwrap();
    }
    let (off, ts) = s.offset_for_timestamp(&tp, 10_950).await.unwrap().unwrap();
    assert_eq!((off, ts), (20, 11_000));
    assert_eq!(s.offset_for_timestamp(&tp, 0).await.unwrap().unwrap().0, 0);
    assert_eq!(s.offset_for_timestamp(&tp, 99_999).await.unwrap(), None);
}

async fn retention_by_size_and_age(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("retention");
    s.open_partition(&tp).await.unwrap();
    for i in 0..100 {
        s.append(&tp, vec![batch(1, 500, 1_000 + i)], Durability::Buffered)
            .await
            .unwrap();
    }
    let by_size = Some(20_000);
    let start = s
        .apply_retention(
            &tp,
            crate::Retention {
                max_bytes: by_size,
                max_age_ms: None,
            },
            2_000,
        )
        .await
        .unwrap();
    assert!(
        start > 0,
        "size retention must drop something from 100 × ~580 bytes"
    );
    assert!(
        100 - start >= 20_000 / 1_000,
        "size retention kept too little: start {start}"
    );
    let by_age = crate::Retention {
        max_bytes: None,
        max_age_ms: Some(1_000),
    };
    let start2 = s
        .apply_retention(&tp, by_age, 1_000 + 1_000 + 90)
        .await
        .unwrap();
    assert!(start2 >= start);
    assert!(
        start2 <= 90,
        "records newer than the age limit must stay: start {start2}"
    );
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 100);
}

async fn reopen_after_close_keeps_everything(h: &dyn Harness) {
    let tp = tp("reopen");
    {
        let s = h.open().await;
        s.open_partition(&tp).await.unwrap();
        for _ in 0..30 {
            s.append(&tp, vec![batch(3, 100, 0)], Durability::Sync)
                .await
                .unwrap();
        }
        s.flush().await.unwrap();
    }
    let s = h.open().await;
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 90);
    assert_eq!(read_all(&*s, &tp, 0).await.len(), 30);
    let at = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 90);
}

async fn reopen_after_torn_tail_truncates_it(h: &dyn Harness) {
    let tp = tp("torn-tail");
    {
        let s = h.open().await;
        s.open_partition(&tp).await.unwrap();
        for _ in 0..10 {
            s.append(&tp, vec![batch(2, 50, 0)], Durability::Sync)
                .await
                .unwrap();
        }
    }
    if !h.tear_tail(&tp).await {
        eprintln!("conformance: torn-tail case skipped, backend cannot tear a write");
        return;
    }
    let s = h.open().await;
    assert_eq!(
        s.bounds(&tp).await.unwrap().high_watermark,
        20,
        "acknowledged data must survive"
    );
    assert_eq!(read_all(&*s, &tp, 0).await.len(), 10);
    let at = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 20, "the torn bytes must not occupy offsets");
    assert_eq!(read_all(&*s, &tp, 0).await.len(), 11);
}

async fn remove_partition_forgets_data(h: &dyn Harness) {
    let s = h.open().await;
    let tp = tp("remove");
    s.open_partition(&tp).await.unwrap();
    s.append(&tp, vec![batch(2, 2, 0)], Durability::Buffered)
        .await
        .unwrap();
    s.remove_partition(&tp).await.unwrap();
    assert!(matches!(
        s.bounds(&tp).await,
        Err(StorageError::UnknownPartition(_))
    ));
    assert_eq!(s.open_partition(&tp).await.unwrap().high_watermark, 0);
}

async fn injected_faults_surface_as_retryable_errors(h: &dyn Harness) {
    let tp = tp("faults");
    let (s, faults) = FaultyStorage::new(h.open().await);
    s.open_partition(&tp).await.unwrap();
    faults.fail_next_appends(1);
    let err = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Sync)
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    let at = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(
        at.base_offset, 0,
        "a failed append must not consume offsets"
    );
    faults.set_down(true);
    assert!(s.read(&tp, 0, 100).await.unwrap_err().is_retryable());
    faults.set_down(false);
    tokio::time::timeout(Duration::from_secs(10), s.read(&tp, 0, 100))
        .await
        .expect("read after recovery")
        .unwrap();
}
