//! The in-memory index: for every partition, which object and byte range holds which offsets.
//! It is rebuilt on start from the newest manifest plus the wal objects after it, and changed
//! only by applying the operations of wal objects, in sequence order.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use switchboard_model::{Offset, TopicPartition};
use switchboard_storage::Bounds;

use crate::layout::Op;

/// A run of one partition's batches: bytes `pos..pos + len` of wal object `seq`, or, when
/// `run` is not 0, of the compacted run object `run` (see [`crate::compact`]; `seq` is then the
/// wal object that recorded the compaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub base: Offset,
    pub last: Offset,
    pub max_ts: i64,
    pub seq: u64,
    pub pos: u64,
    pub len: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub log_start: Offset,
    pub next: Offset,
    /// In offset order; the first may start below `log_start` (deletes cut inside runs).
    pub entries: VecDeque<Entry>,
}

impl Part {
    pub fn bounds(&self) -> Bounds {
        Bounds {
            log_start: self.log_start,
            high_watermark: self.next,
        }
    }

    /// The index of the first entry holding offsets at or after `offset`.
    pub fn entry_at(&self, offset: Offset) -> usize {
        self.entries.partition_point(|e| e.last < offset)
    }

    pub fn byte_len(&self) -> u64 {
        self.entries.iter().map(|e| e.len).sum()
    }

    /// Replaces the consecutive entries that cover exactly `base..=last` of `merged` with it.
    /// Anything else (the entries were deleted, or the partition was removed and written
    /// again meanwhile) leaves the index as it is: the compacted object is then unused.
    fn replace_runs(&mut self, merged: Entry) {
        let Some(first) = self.entries.iter().position(|e| e.base == merged.base) else {
            return;
        };
        let Some(count) = self
            .entries
            .iter()
            .skip(first)
            .position(|e| e.last == merged.last)
            .map(|i| i + 1)
        else {
            return;
        };
        let covered = self.entries.range(first..first + count);
        let len: u64 = covered.clone().map(|e| e.len).sum();
        let dense = covered
            .clone()
            .zip(covered.skip(1))
            .all(|(a, b)| a.last + 1 == b.base);
        if !dense || len != merged.len {
            return;
        }
        self.entries.drain(first..first + count);
        self.entries.insert(first, merged);
    }

    fn delete_before(&mut self, log_start: Offset) {
        self.log_start = self.log_start.max(log_start.min(self.next));
        while self
            .entries
            .front()
            .is_some_and(|e| e.last < self.log_start)
        {
            self.entries.pop_front();
        }
    }
}

/// The whole index, and the number of the next wal object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub parts: HashMap<TopicPartition, Part>,
    pub next_seq: u64,
}

impl State {
    /// Applies wal object `seq`'s operations. Objects must come in sequence order.
    pub fn apply(&mut self, seq: u64, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Append {
                    tp,
                    base,
                    last,
                    max_ts,
                    pos,
                    len,
                } => {
                    let part = self.parts.entry(tp.clone()).or_default();
                    if *base > part.next {
                        // Copied data that starts past the end: the offsets between were
                        // deleted at the source before they were copied.
                        part.entries.clear();
                        part.log_start = *base;
                    }
                    part.entries.push_back(Entry {
                        base: *base,
                        last: *last,
                        max_ts: *max_ts,
                        seq,
                        pos: *pos,
                        len: *len,
                        run: 0,
                    });
                    part.next = last + 1;
                }
                Op::Compact {
                    tp,
                    base,
                    last,
                    max_ts,
                    run,
                    len,
                } => {
                    if let Some(part) = self.parts.get_mut(tp) {
                        part.replace_runs(Entry {
                            base: *base,
                            last: *last,
                            max_ts: *max_ts,
                            seq,
                            pos: 0,
                            len: *len,
                            run: *run,
                        });
                    }
                }
                Op::DeleteBefore { tp, log_start } => {
                    if let Some(part) = self.parts.get_mut(tp) {
                        part.delete_before(*log_start);
                    }
                }
                Op::Remove { tp } => {
                    self.parts.remove(tp);
                }
            }
        }
        self.next_seq = seq + 1;
    }

    /// The wal objects and compacted run objects some partition still reads from.
    pub fn referenced(&self) -> (HashSet<u64>, HashSet<u64>) {
        let mut wal = HashSet::new();
        let mut runs = HashSet::new();
        for e in self.parts.values().flat_map(|p| p.entries.iter()) {
            if e.run == 0 {
                wal.insert(e.seq);
            } else {
                runs.insert(e.run);
            }
        }
        (wal, runs)
    }

    pub fn to_manifest(&self) -> Vec<u8> {
        let parts = self
            .parts
            .iter()
            .map(|(tp, part)| ManifestPart {
                tp: tp.clone(),
                part: part.clone(),
            })
            .collect();
        serde_json::to_vec(&Manifest {
            next_seq: self.next_seq,
            parts,
        })
        .unwrap_or_default()
    }

    pub fn from_manifest(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let m: Manifest = serde_json::from_slice(bytes)?;
        Ok(Self {
            parts: m.parts.into_iter().map(|p| (p.tp, p.part)).collect(),
            next_seq: m.next_seq,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    next_seq: u64,
    parts: Vec<ManifestPart>,
}

#[derive(Serialize, Deserialize)]
struct ManifestPart {
    tp: TopicPartition,
    #[serde(flatten)]
    part: Part,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use switchboard_model::StreamName;

    fn tp(n: &str) -> TopicPartition {
        TopicPartition::new(StreamName::new(n).unwrap(), 0)
    }

    fn append(tp: TopicPartition, base: u64, last: u64) -> Op {
        Op::Append {
            tp,
            base,
            last,
            max_ts: base as i64,
            pos: 8,
            len: 10,
        }
    }

    #[test]
    fn replay_applies_appends_deletes_and_removes_in_order() {
        let mut s = State::default();
        s.apply(0, &[append(tp("a"), 0, 4), append(tp("b"), 0, 0)]);
        s.apply(1, &[append(tp("a"), 5, 9)]);
        s.apply(
            2,
            &[
                Op::DeleteBefore {
                    tp: tp("a"),
                    log_start: 6,
                },
                Op::Remove { tp: tp("b") },
                append(tp("b"), 0, 2),
            ],
        );
        let a = &s.parts[&tp("a")];
        assert_eq!((a.log_start, a.next), (6, 10));
        assert_eq!(
            a.entries.len(),
            1,
            "the run wholly below the start is dropped"
        );
        assert_eq!(a.entry_at(7), 0);
        let b = &s.parts[&tp("b")];
        assert_eq!((b.log_start, b.next, b.entries[0].seq), (0, 3, 2));
        assert_eq!(s.next_seq, 3);
        assert_eq!(s.referenced().0, HashSet::from([1, 2]));
        assert_eq!(State::from_manifest(&s.to_manifest()).unwrap(), s);
    }

    #[test]
    fn compaction_replaces_exactly_the_runs_it_covers() {
        let mut s = State::default();
        s.apply(0, &[append(tp("a"), 0, 4)]);
        s.apply(1, &[append(tp("a"), 5, 9)]);
        s.apply(2, &[append(tp("a"), 10, 12)]);
        let compact = |base, last, len| Op::Compact {
            tp: tp("a"),
            base,
            last,
            max_ts: 9,
            run: 77,
            len,
        };
        s.apply(3, &[compact(0, 9, 20)]);
        let a = &s.parts[&tp("a")];
        assert_eq!(a.entries.len(), 2);
        assert_eq!(
            (a.entries[0].run, a.entries[0].pos, a.entries[0].len),
            (77, 0, 20)
        );
        assert_eq!(a.entry_at(7), 0);
        assert_eq!(s.referenced(), (HashSet::from([2]), HashSet::from([77])));
        // A compaction that no longer matches the index (wrong length, or ranges since
        // deleted) changes nothing.
        let before = s.clone();
        s.apply(4, &[compact(10, 12, 999)]);
        s.apply(
            5,
            &[Op::DeleteBefore {
                tp: tp("a"),
                log_start: 11,
            }],
        );
        let mut expected = before;
        expected.apply(4, &[]);
        expected.apply(
            5,
            &[Op::DeleteBefore {
                tp: tp("a"),
                log_start: 11,
            }],
        );
        assert_eq!(s, expected);
    }

    #[test]
    fn a_delete_never_passes_the_end() {
        let mut s = State::default();
        s.apply(0, &[append(tp("a"), 0, 4)]);
        s.apply(
            1,
            &[Op::DeleteBefore {
                tp: tp("a"),
                log_start: 99,
            }],
        );
        assert_eq!(s.parts[&tp("a")].bounds().log_start, 5);
    }
}
