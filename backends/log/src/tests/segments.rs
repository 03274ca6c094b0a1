//! Segment rolls, index lookups and reopening a multi-segment log.

use std::fs;

use switchboard_model::RecordBatch;
use switchboard_storage::conformance::{batch, read_all};
use switchboard_storage::{Durability, Storage};

use super::{batch_bytes, fill, partition_dir, segment_logs, small_config, tp};
use crate::segment::{INDEX_EXT, RESERVE_BYTES, TIME_INDEX_EXT, file_name};
use crate::{FsyncPolicy, LogConfig, LogStorage};

#[tokio::test]
async fn appends_past_segment_bytes_roll_new_segments_named_by_base_offset() {
    let root = tempfile::tempdir().unwrap();
    let s = LogStorage::open(root.path(), small_config(4096))
        .await
        .unwrap();
    let tp = tp("roll");
    s.open_partition(&tp).await.unwrap();
    // Batches of ~560 bytes: seven fit in 4 KiB, the eighth starts a new segment.
    fill(&s, &tp, 30, 500, 0).await;

    let logs = segment_logs(&partition_dir(root.path(), &tp));
    assert_eq!(logs.len(), 5, "30 batches of 7 per segment: {logs:?}");
    let names: Vec<_> = logs
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names[0], file_name(0, "log").as_str());
    assert_eq!(names[1], file_name(7, "log").as_str());
    for log in &logs {
        let len = batch_bytes(log);
        assert!(len <= 4096, "{log:?} holds {len} bytes");
    }
    assert_eq!(read_all(&s, &tp, 0).await.len(), 30);
}

#[cfg(unix)]
#[tokio::test]
async fn a_synced_active_segment_is_reserved_ahead_and_cut_back_when_sealed() {
    let root = tempfile::tempdir().unwrap();
    let s = LogStorage::open(root.path(), small_config(4096))
        .await
        .unwrap();
    let tp = tp("reserve");
    s.open_partition(&tp).await.unwrap();
    fill(&s, &tp, 10, 500, 0).await;

    let logs = segment_logs(&partition_dir(root.path(), &tp));
    let (active, sealed) = logs.split_last().unwrap();
    assert_eq!(sealed.len(), 1);
    let sealed_len = fs::metadata(&sealed[0]).unwrap().len();
    assert_eq!(
        sealed_len,
        batch_bytes(&sealed[0]),
        "a sealed segment is cut back"
    );
    let active_len = fs::metadata(active).unwrap().len();
    assert!(batch_bytes(active) > 0);
    assert_eq!(
        active_len % RESERVE_BYTES,
        0,
        "reserved ahead: {active_len}"
    );
    assert!(active_len > batch_bytes(active));
}

#[tokio::test]
async fn without_fsync_the_active_segment_is_not_reserved() {
    let root = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..small_config(1 << 20)
    };
    let s = LogStorage::open(root.path(), config).await.unwrap();
    let tp = tp("no-reserve");
    s.open_partition(&tp).await.unwrap();
    fill(&s, &tp, 3, 100, 0).await;
    let log = segment_logs(&partition_dir(root.path(), &tp))
        .pop()
        .unwrap();
    assert_eq!(fs::metadata(&log).unwrap().len(), batch_bytes(&log));
}

#[tokio::test]
async fn an_append_larger_than_a_segment_gets_a_segment_of_its_own() {
    let root = tempfile::tempdir().unwrap();
    let s = LogStorage::open(root.path(), small_config(1024))
        .await
        .unwrap();
    let tp = tp("big");
    s.open_partition(&tp).await.unwrap();
    s.append(&tp, vec![batch(1, 10, 0)], Durability::Buffered)
        .await
        .unwrap();
    let at = s
        .append(&tp, vec![batch(3, 2000, 0)], Durability::Buffered)
        .await
        .unwrap();
    assert_eq!((at.base_offset, at.last_offset), (1, 3));
    s.append(&tp, vec![batch(1, 10, 0)], Durability::Buffered)
        .await
        .unwrap();

    assert_eq!(segment_logs(&partition_dir(root.path(), &tp)).len(), 3);
    let chunk = s.read(&tp, 2, 10).await.unwrap();
    let only = RecordBatch::parse(chunk.batches[0].clone()).unwrap();
    assert_eq!((only.base_offset(), only.last_offset()), (1, 3));
}

#[tokio::test]
async fn segments_older_than_segment_ms_are_rolled_before_the_next_append() {
    let root = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: Some(0),
        ..small_config(1 << 20)
    };
    let s = LogStorage::open(root.path(), config).await.unwrap();
    let tp = tp("aged");
    s.open_partition(&tp).await.unwrap();
    fill(&s, &tp, 3, 10, 0).await;
    assert_eq!(segment_logs(&partition_dir(root.path(), &tp)).len(), 3);
}

#[tokio::test]
async fn reads_from_every_offset_use_the_index_and_return_the_containing_batch() {
    let root = tempfile::tempdir().unwrap();
    let s = LogStorage::open(root.path(), small_config(16 * 1024))
        .await
        .unwrap();
    let tp = tp("lookups");
    s.open_partition(&tp).await.unwrap();
    for i in 0..60 {
        s.append(&tp, vec![batch(3, 40, i * 10)], Durability::Buffered)
            .await
            .unwrap();
    }
    let dir = partition_dir(root.path(), &tp);
    let index = fs::metadata(dir.join(file_name(0, INDEX_EXT)))
        .unwrap()
        .len();
    assert!(
        index >= 8 * 10,
        "a 256-byte interval indexes many batches: {index} bytes"
    );

    for from in 0..180u64 {
        let chunk = s.read(&tp, from, 1).await.unwrap();
        assert_eq!(chunk.batches.len(), 1);
        let b = RecordBatch::parse(chunk.batches[0].clone()).unwrap();
        assert_eq!(b.base_offset() as u64, from / 3 * 3, "read from {from}");
    }
}

#[tokio::test]
async fn timestamp_lookup_uses_the_time_index_and_searches_inside_the_batch() {
    let root = tempfile::tempdir().unwrap();
    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    let tp = tp("times");
    s.open_partition(&tp).await.unwrap();
    // Batch i holds offsets 4i..4i+3 with timestamps 1000i..1000i+3.
    for i in 0..40 {
        s.append(&tp, vec![batch(4, 60, i * 1000)], Durability::Buffered)
            .await
            .unwrap();
    }
    let dir = partition_dir(root.path(), &tp);
    assert!(
        fs::metadata(dir.join(file_name(0, TIME_INDEX_EXT)))
            .unwrap()
            .len()
            >= 12
    );

    assert_eq!(
        s.offset_for_timestamp(&tp, 25_002).await.unwrap(),
        Some((102, 25_002))
    );
    assert_eq!(
        s.offset_for_timestamp(&tp, 25_004).await.unwrap(),
        Some((104, 26_000))
    );
    assert_eq!(s.offset_for_timestamp(&tp, -5).await.unwrap(), Some((0, 0)));
    assert_eq!(s.offset_for_timestamp(&tp, 39_004).await.unwrap(), None);
}

#[tokio::test]
async fn the_batches_of_one_append_are_written_in_order_whether_shared_or_not() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("vectored");
    let shared = batch(2, 30, 100);
    let kept = shared.clone();
    let sent = vec![batch(3, 20, 0), shared, batch(1, 500, 200)];
    let expected: Vec<_> = sent
        .iter()
        .map(|b| b.records().unwrap())
        .collect::<Vec<_>>();
    {
        let s = LogStorage::open(root.path(), small_config(1 << 20))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 1, 10, 0).await;
        let at = s.append(&tp, sent, Durability::Sync).await.unwrap();
        assert_eq!((at.base_offset, at.last_offset), (1, 6));
    }
    // A batch still referenced elsewhere is copied, not rewritten under its other owner.
    assert_eq!(&kept.bytes()[..8], &[0u8; 8]);

    // Reopened, so every byte comes back from the file rather than the tail cache.
    let s = LogStorage::open(root.path(), small_config(1 << 20))
        .await
        .unwrap();
    let got = read_all(&s, &tp, 1).await;
    let bases: Vec<i64> = got.iter().map(RecordBatch::base_offset).collect();
    assert_eq!(bases, [1, 4, 6]);
    for (g, want) in got.iter().zip(&expected) {
        let records = g.records().unwrap();
        let values: Vec<_> = records.iter().map(|r| r.value.clone()).collect();
        let wanted: Vec<_> = want.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, wanted);
    }
}

#[tokio::test]
async fn reopening_a_log_of_several_segments_serves_the_same_data() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("several");
    {
        let s = LogStorage::open(root.path(), small_config(2048))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 40, 200, 5_000).await;
    }
    let dir = partition_dir(root.path(), &tp);
    let segments = segment_logs(&dir).len();
    assert!(segments >= 4);

    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    let bounds = s.bounds(&tp).await.unwrap();
    assert_eq!((bounds.log_start, bounds.high_watermark), (0, 40));
    let got = read_all(&s, &tp, 0).await;
    assert_eq!(got.len(), 40);
    assert_eq!(got[17].records().unwrap()[0].timestamp_ms, 5_017);
    assert_eq!(
        s.offset_for_timestamp(&tp, 5_031).await.unwrap(),
        Some((31, 5_031))
    );
    let at = s
        .append(&tp, vec![batch(1, 200, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 40);
    assert_eq!(
        segment_logs(&dir).len(),
        segments,
        "the last segment keeps filling"
    );
}

#[tokio::test]
async fn a_sealed_segment_with_lost_indexes_gets_them_rebuilt() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("reindex");
    {
        let s = LogStorage::open(root.path(), small_config(2048))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 40, 200, 0).await;
    }
    let dir = partition_dir(root.path(), &tp);
    let index = dir.join(file_name(0, INDEX_EXT));
    let before = fs::read(&index).unwrap();
    fs::remove_file(&index).unwrap();
    fs::write(dir.join(file_name(0, TIME_INDEX_EXT)), [1, 2, 3]).unwrap();

    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    assert_eq!(
        fs::read(&index).unwrap(),
        before,
        "the rebuilt index equals the original"
    );
    assert_eq!(s.offset_for_timestamp(&tp, 3).await.unwrap(), Some((3, 3)));
    assert_eq!(read_all(&s, &tp, 0).await.len(), 40);
}
