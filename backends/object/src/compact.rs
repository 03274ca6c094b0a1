//! Compaction: many small runs of one partition (one per flush in direct mode) are copied, in
//! order, into one run object, and an [`Op::Compact`] in the wal points the index at it. Reads
//! of old data then cost one GET per `compact_target` bytes instead of one per flush, the
//! index and manifests shrink, and the wal objects the small runs lived in become collectable.
//!
//! The copy is written first (under a fresh id, so it can never replace anything) and recorded
//! after; a crash in between leaves an unused object for the collector. Applying the record
//! checks that the index still holds exactly the runs that were copied, so a deletion or a
//! removal that raced with the copy wins.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use switchboard_model::TopicPartition;
use switchboard_storage::StorageResult;

use crate::index::Entry;
use crate::layout::{self, Op};
use crate::writer::Request;
use crate::{ObjectStorage, unavailable};

/// Bytes of small runs read per compaction round, so one round stays short.
const ROUND_BYTES: u64 = 256 << 20;

/// Groups of consecutive small runs worth merging, per partition: each run smaller than half
/// the target, each group at least two runs and at most `target` bytes.
fn groups(entries: &[Entry], target: u64) -> Vec<Vec<Entry>> {
    let mut out = Vec::new();
    let mut current: Vec<Entry> = Vec::new();
    let mut bytes = 0u64;
    for e in entries {
        let small = e.len < target / 2;
        let continues = current.last().is_some_and(|p| p.last + 1 == e.base);
        if !small || !continues || bytes + e.len > target {
            if current.len() >= 2 {
                out.push(std::mem::take(&mut current));
            }
            current.clear();
            bytes = 0;
        }
        if small {
            bytes += e.len;
            current.push(*e);
        }
    }
    if current.len() >= 2 {
        out.push(current);
    }
    out
}

/// A fresh run id: the clock in nanoseconds mixed with a process-wide counter, never 0.
fn fresh_run_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_add(n.wrapping_mul(0x9E37_79B9)) | 1
}

impl ObjectStorage {
    /// Merges small runs of every partition; returns how many groups were recorded.
    pub async fn compact_once(&self) -> StorageResult<usize> {
        let target = self.shared.cfg.compact_target;
        let plan: Vec<(TopicPartition, Vec<Entry>)> = {
            let state = self.shared.lock_state();
            let mut plan = Vec::new();
            for (tp, part) in &state.parts {
                let entries: Vec<Entry> = part.entries.iter().copied().collect();
                for group in groups(&entries, target) {
                    plan.push((tp.clone(), group));
                }
            }
            plan
        };
        let mut done = 0;
        let mut read = 0u64;
        for (tp, group) in plan {
            if read >= ROUND_BYTES {
                break;
            }
            let mut bytes = BytesMut::new();
            for e in &group {
                bytes.extend_from_slice(&self.shared.run_bytes(&tp, e).await?);
            }
            read += bytes.len() as u64;
            let run = fresh_run_id();
            let len = bytes.len() as u64;
            let key = layout::run_key(&self.shared.root, run);
            self.shared
                .store
                .put(&key, bytes.freeze().into())
                .await
                .map_err(|e| unavailable("writing a compacted run", e))?;
            let (first, last) = (group[0], group[group.len() - 1]);
            let op = Op::Compact {
                tp: tp.clone(),
                base: first.base,
                last: last.last,
                max_ts: group.iter().map(|e| e.max_ts).max().unwrap_or(i64::MIN),
                run,
                len,
            };
            self.submit(|reply| Request::Compact { op, reply }).await?;
            done += 1;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(base: u64, last: u64, len: u64) -> Entry {
        Entry {
            base,
            last,
            max_ts: 0,
            seq: base,
            pos: 8,
            len,
            run: 0,
        }
    }

    #[test]
    fn groups_are_consecutive_small_runs_within_the_target() {
        let entries = [
            e(0, 0, 10),
            e(1, 1, 10),
            e(2, 2, 60), // not small for a target of 100: ends the group
            e(3, 3, 10),
            e(4, 4, 10),
            e(5, 5, 45),
            e(6, 6, 45), // would pass 100 bytes: starts a new group
            e(7, 7, 10),
            e(9, 9, 10), // a gap (offset 8 deleted): not consecutive
        ];
        let got: Vec<Vec<u64>> = groups(&entries, 100)
            .iter()
            .map(|g| g.iter().map(|e| e.base).collect())
            .collect();
        assert_eq!(got, vec![vec![0, 1], vec![3, 4, 5], vec![6, 7]]);
    }

    #[test]
    fn run_ids_are_distinct_and_never_zero() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| fresh_run_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&0));
    }
}
