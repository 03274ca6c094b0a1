//! Idempotent-producer sequence checks, per partition (KIP-98).
//!
//! Each producer (id, epoch) numbers its batches per partition. A batch whose sequence range
//! was already appended is a retry: it is answered with the original offsets and not written
//! again. A gap means a lost batch and is refused so the client can recover. Up to five
//! in-flight requests per connection are allowed, so the last five ranges are remembered.

use std::collections::{HashMap, VecDeque};

use switchboard_model::{BatchHeader, Offset};

const REMEMBERED: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Landed {
    first_seq: i32,
    last_seq: i32,
    base_offset: Offset,
    last_offset: Offset,
}

#[derive(Debug)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Landed>,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not from an idempotent producer, or the next expected sequence: append it.
    Append,
    /// Already stored at these offsets: acknowledge without writing.
    Duplicate {
        base_offset: Offset,
        last_offset: Offset,
    },
    /// A gap or a reordering.
    OutOfOrder { expected: i32, got: i32 },
    /// The producer was fenced by a newer epoch.
    StaleEpoch { current: i16, got: i16 },
}

/// Whether a batch comes from an idempotent producer: one with a producer id and a sequence
/// number, whose duplicates and gaps are checked.
pub(crate) fn is_sequenced(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0
}

/// Sequence state of every producer that wrote to one partition since it was opened.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

fn last_seq(h: &BatchHeader) -> i32 {
    let last = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerStates {
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if !is_sequenced(h) {
            return SequenceCheck::Append;
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            // Unknown producer: state is not kept across restarts, so accept whatever sequence
            // it continues with rather than fail a producer that did nothing wrong.
            return SequenceCheck::Append;
        };
        if h.producer_epoch < p.epoch {
            return SequenceCheck::StaleEpoch {
                current: p.epoch,
                got: h.producer_epoch,
            };
        }
        if h.producer_epoch > p.epoch {
            return SequenceCheck::Append;
        }
        let last = last_seq(h);
        if let Some(l) = p
            .recent
            .iter()
            .find(|l| l.first_seq == h.base_sequence && l.last_seq == last)
        {
            return SequenceCheck::Duplicate {
                base_offset: l.base_offset,
                last_offset: l.last_offset,
            };
        }
        let expected = p
            .recent
            .back()
            .map_or(h.base_sequence, |l| next_seq(l.last_seq));
        if h.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                got: h.base_sequence,
            }
        }
    }

    /// Records that the batch was stored at `base_offset`.
    pub fn record(&mut self, h: &BatchHeader, base_offset: Offset) {
        if !is_sequenced(h) {
            return;
        }
        let p = self.producers.entry(h.producer_id).or_insert(Producer {
            epoch: h.producer_epoch,
            recent: VecDeque::new(),
        });
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.recent.clear();
        }
        if p.recent.len() == REMEMBERED {
            p.recent.pop_front();
        }
        p.recent.push_back(Landed {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset,
            last_offset: base_offset + u64::from(h.last_offset_delta as u32),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn retried_batch_is_a_duplicate_with_its_original_offsets() {
        let mut s = ProducerStates::default();
        let first = header(7, 0, 0, 10);
        assert_eq!(s.check(&first), SequenceCheck::Append);
        s.record(&first, 100);
        assert_eq!(
            s.check(&first),
            SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 109
            }
        );
        let next = header(7, 0, 10, 5);
        assert_eq!(s.check(&next), SequenceCheck::Append);
    }

    #[test]
    fn gap_in_sequence_is_out_of_order() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 0, 0, 10), 0);
        assert_eq!(
            s.check(&header(7, 0, 15, 1)),
            SequenceCheck::OutOfOrder {
                expected: 10,
                got: 15
            }
        );
    }

    #[test]
    fn older_epoch_is_fenced_and_newer_epoch_resets() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 3, 0, 1), 0);
        assert_eq!(
            s.check(&header(7, 2, 1, 1)),
            SequenceCheck::StaleEpoch { current: 3, got: 2 }
        );
        assert_eq!(s.check(&header(7, 4, 0, 1)), SequenceCheck::Append);
    }

    #[test]
    fn non_idempotent_batches_are_never_checked() {
        let s = ProducerStates::default();
        assert_eq!(s.check(&header(-1, -1, -1, 3)), SequenceCheck::Append);
    }
}
