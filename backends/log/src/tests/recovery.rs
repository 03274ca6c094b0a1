//! Opening a log after a crash: torn tails are cut, damaged sealed segments are refused.

use std::fs;
use std::io::Write;
use std::path::Path;

use switchboard_storage::conformance::{batch, read_all};
use switchboard_storage::{Durability, Storage, StorageError};

use super::{
    batch_bytes, cut_to_batches, fill, partition_dir, segment_logs, set_file_len, small_config, tp,
};
use crate::LogStorage;
use crate::segment::{INDEX_EXT, RESERVE_BYTES, file_name};

fn append_bytes(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[tokio::test]
async fn a_torn_tail_with_a_bad_crc_is_cut_off_on_reopen() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("bad-crc");
    {
        let s = LogStorage::open(root.path(), small_config(1 << 20))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 5, 100, 0).await;
    }
    let log = segment_logs(&partition_dir(root.path(), &tp))
        .pop()
        .unwrap();
    let intact = cut_to_batches(&log);
    let mut torn = batch(3, 100, 0).with_base_offset(5).into_bytes().to_vec();
    torn[100] ^= 0x01;
    append_bytes(&log, &torn);

    let s = LogStorage::open(root.path(), small_config(1 << 20))
        .await
        .unwrap();
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        intact,
        "the file is cut back"
    );
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 5);
    let at = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 5);
    assert_eq!(read_all(&s, &tp, 0).await.len(), 6);
}

#[tokio::test]
async fn a_reserved_tail_left_by_a_crash_is_cut_off_and_appends_follow_the_batches() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("reserved");
    {
        let s = LogStorage::open(root.path(), small_config(1 << 20))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 4, 100, 0).await;
    }
    let log = segment_logs(&partition_dir(root.path(), &tp))
        .pop()
        .unwrap();
    let intact = cut_to_batches(&log);
    // A crash leaves the active segment as long as it was reserved: zeros after the batches.
    set_file_len(&log, intact + RESERVE_BYTES);

    let s = LogStorage::open(root.path(), small_config(1 << 20))
        .await
        .unwrap();
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 4);
    let at = s
        .append(&tp, vec![batch(2, 10, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 4);
    drop(s);
    // Had the append gone anywhere but right after the old batches, the next scan would stop
    // short of it.
    let s = LogStorage::open(root.path(), small_config(1 << 20))
        .await
        .unwrap();
    assert_eq!(read_all(&s, &tp, 0).await.len(), 5);
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 6);
    assert_eq!(fs::metadata(&log).unwrap().len(), batch_bytes(&log));
}

#[tokio::test]
async fn a_sealed_segment_left_with_a_reserved_tail_is_cut_back_on_reopen() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("sealed-reserve");
    {
        let s = LogStorage::open(root.path(), small_config(4096))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        // Batches of ~560 bytes, seven to a segment: three segments.
        fill(&s, &tp, 20, 500, 0).await;
    }
    let logs = segment_logs(&partition_dir(root.path(), &tp));
    assert_eq!(logs.len(), 3);
    let sealed = &logs[0];
    let batches = batch_bytes(sealed);
    // The cut at sealing undone, as a crash without fsync could leave it.
    set_file_len(sealed, batches + RESERVE_BYTES);

    let s = LogStorage::open(root.path(), small_config(4096))
        .await
        .unwrap();
    assert_eq!(fs::metadata(sealed).unwrap().len(), batches);
    let read = read_all(&s, &tp, 0).await;
    assert_eq!(read.len(), 20, "every batch, and nothing from the zeros");
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 20);
}

#[tokio::test]
async fn a_partial_batch_header_is_cut_off_on_reopen() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("partial");
    {
        let s = LogStorage::open(root.path(), small_config(1 << 20))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 3, 10, 0).await;
    }
    let log = segment_logs(&partition_dir(root.path(), &tp))
        .pop()
        .unwrap();
    let intact = cut_to_batches(&log);
    append_bytes(&log, &batch(1, 10, 0).with_base_offset(3).bytes()[..30]);

    let s = LogStorage::open(root.path(), small_config(1 << 20))
        .await
        .unwrap();
    assert_eq!(fs::metadata(&log).unwrap().len(), intact);
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 3);
}

#[tokio::test]
async fn a_batch_at_the_wrong_offset_counts_as_torn() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("wrong-offset");
    {
        let s = LogStorage::open(root.path(), small_config(1 << 20))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 3, 10, 0).await;
    }
    let log = segment_logs(&partition_dir(root.path(), &tp))
        .pop()
        .unwrap();
    cut_to_batches(&log);
    // Valid CRC (the base offset is outside it), but offset 9 cannot follow offset 2.
    append_bytes(&log, batch(1, 10, 0).with_base_offset(9).bytes());

    let s = LogStorage::open(root.path(), small_config(1 << 20))
        .await
        .unwrap();
    assert_eq!(s.bounds(&tp).await.unwrap().high_watermark, 3);
}

#[tokio::test]
async fn a_corrupt_sealed_segment_keeps_only_its_partition_closed() {
    let root = tempfile::tempdir().unwrap();
    let (broken, fine) = (tp("broken"), tp("fine"));
    {
        let s = LogStorage::open(root.path(), small_config(1024))
            .await
            .unwrap();
        for tp in [&broken, &fine] {
            s.open_partition(tp).await.unwrap();
            fill(&s, tp, 10, 200, 0).await;
        }
    }
    let dir = partition_dir(root.path(), &broken);
    let first = segment_logs(&dir).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[200] ^= 0xff;
    fs::write(&first, bytes).unwrap();
    // Sealed segments are trusted while their indexes look whole; lose one to force a check.
    fs::remove_file(dir.join(file_name(0, INDEX_EXT))).unwrap();

    let s = LogStorage::open(root.path(), small_config(1024))
        .await
        .unwrap();
    assert_eq!(s.bounds(&fine).await.unwrap().high_watermark, 10);
    assert!(matches!(
        s.bounds(&broken).await,
        Err(StorageError::UnknownPartition(_))
    ));
    assert!(matches!(
        s.open_partition(&broken).await,
        Err(StorageError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn a_log_start_past_the_recovered_end_empties_the_log_and_continues_there() {
    let root = tempfile::tempdir().unwrap();
    let tp = tp("start-past-end");
    {
        let s = LogStorage::open(root.path(), small_config(1 << 20))
            .await
            .unwrap();
        s.open_partition(&tp).await.unwrap();
        fill(&s, &tp, 4, 10, 0).await;
    }
    // As if appends up to offset 9 had been deleted before, and lost in a crash.
    fs::write(partition_dir(root.path(), &tp).join("log-start"), "9\n").unwrap();

    let s = LogStorage::open(root.path(), small_config(1 << 20))
        .await
        .unwrap();
    let b = s.bounds(&tp).await.unwrap();
    assert_eq!((b.log_start, b.high_watermark), (9, 9));
    let at = s
        .append(&tp, vec![batch(1, 1, 0)], Durability::Sync)
        .await
        .unwrap();
    assert_eq!(at.base_offset, 9);
    assert_eq!(read_all(&s, &tp, 9).await.len(), 1);
}

/// The check of a sealed segment's end reads one window and walks headers inside it; headers
/// past the window (batches after the last index entry that outgrow it) are read one by one.
#[test]
fn a_walk_of_batch_headers_ends_exactly_at_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("walk.log");
    // Three batches of about 40 KiB: the third header lies past the 64 KiB window.
    let mut bytes = Vec::new();
    for i in 0..3 {
        bytes.extend_from_slice(batch(1, 40 * 1024, 0).with_base_offset(i).bytes());
    }
    fs::write(&path, &bytes).unwrap();
    let len = bytes.len() as u64;
    let file = fs::File::open(&path).unwrap();
    assert!(crate::recovery::ends_with_a_batch(&file, 0, len).unwrap());

    // Zeros after the batches, or a length that cuts the last one: not a sealed segment's end.
    set_file_len(&path, len + 100);
    assert!(!crate::recovery::ends_with_a_batch(&file, 0, len + 100).unwrap());
    set_file_len(&path, len - 100);
    assert!(!crate::recovery::ends_with_a_batch(&file, 0, len - 100).unwrap());
}
