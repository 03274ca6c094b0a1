//! The hot tail of a partition, in memory: the batches appended last, as they were written.
//! Followers (MQTT fan-out, AMQP stream consumers, Kafka consumers at the end of the log) read
//! what was just appended; serving that from memory saves a file read and a trip through the
//! blocking pool per append.

use std::collections::VecDeque;

use bytes::Bytes;
use switchboard_model::Offset;

#[derive(Debug, Default)]
pub(crate) struct TailCache {
    /// (base offset, next offset after the batch, batch bytes), oldest first, contiguous.
    batches: VecDeque<(Offset, Offset, Bytes)>,
    bytes: usize,
    limit: usize,
}

impl TailCache {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Adds a batch just written at `base`. A batch that does not follow the cached ones (after
    /// a roll-back, say) restarts the cache. Keeps at most `limit` bytes, but always the last
    /// batch.
    pub(crate) fn push(&mut self, base: Offset, next: Offset, bytes: Bytes) {
        if self.limit == 0 {
            return;
        }
        if self.batches.back().is_some_and(|(_, n, _)| *n != base) {
            self.clear();
        }
        self.bytes += bytes.len();
        self.batches.push_back((base, next, bytes));
        while self.bytes > self.limit && self.batches.len() > 1 {
            if let Some((_, _, b)) = self.batches.pop_front() {
                self.bytes -= b.len();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// The batches from the one holding `from` on, below `high_watermark`, up to `max_bytes`
    /// (at least one batch); `None` when `from` is older than the cache.
    pub(crate) fn read(
        &self,
        from: Offset,
        max_bytes: usize,
        high_watermark: Offset,
    ) -> Option<Vec<Bytes>> {
        let (first_base, _, _) = self.batches.front()?;
        if from < *first_base {
            return None;
        }
        let start = self.batches.partition_point(|(_, next, _)| *next <= from);
        let mut out = Vec::new();
        let mut total = 0;
        for (base, _, bytes) in self.batches.range(start..) {
            if *base >= high_watermark || (!out.is_empty() && total + bytes.len() > max_bytes) {
                break;
            }
            total += bytes.len();
            out.push(bytes.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(limit: usize, batches: &[(Offset, Offset, usize)]) -> TailCache {
        let mut c = TailCache::new(limit);
        for (base, next, len) in batches {
            c.push(*base, *next, Bytes::from(vec![*base as u8; *len]));
        }
        c
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset() {
        let c = cache_with(1000, &[(0, 3, 10), (3, 5, 10), (5, 9, 10)]);
        let got = c.read(4, 1000, 9).expect("cached");
        assert_eq!(got.iter().map(|b| b[0]).collect::<Vec<_>>(), vec![3, 5]);
        assert_eq!(c.read(9, 1000, 9), Some(vec![]));
    }

    #[test]
    fn reads_stop_at_the_byte_budget_but_return_one_batch() {
        let c = cache_with(1000, &[(0, 1, 10), (1, 2, 10), (2, 3, 10)]);
        assert_eq!(c.read(0, 15, 3).map(|v| v.len()), Some(1));
        assert_eq!(c.read(0, 5, 3).map(|v| v.len()), Some(1));
        assert_eq!(c.read(0, 20, 3).map(|v| v.len()), Some(2));
    }

    #[test]
    fn old_offsets_are_not_cached_and_the_limit_evicts_the_oldest() {
        let c = cache_with(25, &[(0, 1, 10), (1, 2, 10), (2, 3, 10)]);
        assert_eq!(c.read(0, 100, 3), None);
        assert_eq!(c.read(1, 100, 3).map(|v| v.len()), Some(2));
    }

    #[test]
    fn batches_past_the_high_watermark_are_not_returned() {
        let c = cache_with(100, &[(0, 1, 10), (1, 2, 10)]);
        assert_eq!(c.read(0, 100, 1).map(|v| v.len()), Some(1));
    }

    #[test]
    fn a_gap_restarts_the_cache() {
        let c = cache_with(100, &[(0, 1, 10), (5, 6, 10)]);
        assert_eq!(c.read(0, 100, 6), None);
        assert_eq!(c.read(5, 100, 6).map(|v| v.len()), Some(1));
    }

    #[test]
    fn a_zero_limit_caches_nothing() {
        let c = cache_with(0, &[(0, 1, 10)]);
        assert_eq!(c.read(0, 100, 1), None);
    }
}
