//! The in-memory index: for every partition, which object and byte range holds which offsets.
//! It is rebuilt on start from the newest manifest plus the wal objects after it, and changed
//! only by applying the operations of wal objects, in sequence order.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use switchboard_model::{Offset, TopicPartition};
use switchboard_storage::Bounds;

use crate::layout::Op;

/// A run of one partition's batches inside one wal object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub base: Offset,
    pub last: Offset,
    pub max_ts: i64,
    pub seq: u64,
    pub pos: u64,
    pub len: u64,
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
                    });
                    part.next = last + 1;
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

    /// The oldest wal object any partition still reads from.
    pub fn oldest_referenced(&self) -> Option<u64> {
        self.parts
            .values()
            .filter_map(|p| p.entries.iter().map(|e| e.seq).min())
            .min()
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
        assert_eq!(s.oldest_referenced(), Some(1));
        assert_eq!(State::from_manifest(&s.to_manifest()).unwrap(), s);
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
