//! Deleting from the front: `delete_before`, retention by size and age, removing a partition.

use std::fs;

use switchboard_storage::conformance::{batch, read_all};
use switchboard_storage::{Durability, Retention, Storage, StorageError};

use super::{batch_bytes, fill, partition_dir, segment_logs, small_config, tp};
use crate::LogStorage;

#[tokio::test]
async fn delete_before_drops_whole_segments_and_survives_a_reopen() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("delete-before");
    let dir = partition_dir(root.path(), &tp);
    {
        let s = LogStorage::open(root.path(), small_config(2048))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 30, 200, 0).await;
        let segments = segment_logs(&dir).len();
        // Segments hold 7 batches: 0..7 and 7..14 go, 14..21 stays for offsets 17 to 20.
        assert_eq!(s.delete_before(&tp, 17).await.unwrap(), 17);
        assert_eq!(segment_logs(&dir).len(), segments - 2);
        assert_eq!(
            s.delete_before(&tp, 3).await.unwrap(),
            17,
            "the start never moves back"
        );
    }
    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    assert_eq!(s.bounds(&tp).await.unwrap().log_start, 17);
    assert!(matches!(
        s.read(&tp, 16, 100).await,
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&s, &tp, 17).await.len(), 13);
    assert_eq!(
        s.delete_before(&tp, 1_000).await.unwrap(),
        30,
        "capped at the high watermark"
    );
}

#[tokio::test]
async fn size_retention_deletes_oldest_segments_but_keeps_max_bytes() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("by-size");
    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    s.open_partition(&tp).await.unwrap();
    fill(&s, &tp, 50, 200, 0).await;
    let keep = 5_000;
    let retention = Retention {
        max_bytes: Some(keep),
        max_age_ms: None,
    };
    let start = s.apply_retention(&tp, retention, 0).await.unwrap();

    let logs = segment_logs(&partition_dir(root.path(), &tp));
    let kept: u64 = logs.iter().map(|l| batch_bytes(l)).sum();
    let oldest = batch_bytes(&logs[0]);
    assert!(kept >= keep && kept - oldest < keep, "kept {kept} bytes");
    assert_eq!(start % 7, 0, "a segment boundary");
    assert_eq!(s.bounds(&tp).await.unwrap().log_start, start);
}

#[tokio::test]
async fn age_retention_of_an_all_expired_log_rolls_and_empties_it() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("by-age");
    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    s.open_partition(&tp).await.unwrap();
    fill(&s, &tp, 20, 200, 1_000).await;
    let retention = Retention {
        max_bytes: None,
        max_age_ms: Some(100),
    };
    assert_eq!(
        s.apply_retention(&tp, retention, 1_000_000).await.unwrap(),
        20
    );

    let b = s.bounds(&tp).await.unwrap();
    assert_eq!((b.log_start, b.high_watermark), (20, 20));
    assert_eq!(segment_logs(&partition_dir(root.path(), &tp)).len(), 1);
    let at = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Buffered)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 20);
}

#[tokio::test]
async fn removing_a_partition_deletes_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("removed");
    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    s.open_partition(&tp).await.unwrap();
    fill(&s, &tp, 20, 200, 0).await;
    s.remove_partition(&tp).await.unwrap();

    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    assert!(matches!(
        s.append(&tp, vec![batch(1, 1, 0)], Durability::Buffered)
            .await,
        Err(StorageError::UnknownPartition(_))
    ));
    drop(s);
    let s = LogStorage::open(root.path(), small_config(2048))
        .await
        .unwrap();
    assert!(matches!(
        s.bounds(&tp).await,
        Err(StorageError::UnknownPartition(_))
    ));
}
