//! Reading a segment: locating the batch that holds an offset or a timestamp, and serving whole
//! batches with one contiguous read.

use bytes::Bytes;
use switchboard_model::batch::{BatchHeader, HEADER_LEN, peek_header};
use switchboard_model::{Offset, RecordBatch, TopicPartition};
use switchboard_storage::{StorageError, StorageResult};

use crate::fsio::read_exact_at;
use crate::segment::Segment;

fn last_offset(h: &BatchHeader) -> Offset {
    h.base_offset as Offset + h.offset_count() - 1
}

/// Walks the batch headers of a segment from a position, stopping at `end` (the size loaded
/// when the read began) or at the first batch at or beyond `hw`.
struct Walk<'a> {
    seg: &'a Segment,
    tp: &'a TopicPartition,
    pos: u64,
    end: u64,
    hw: Offset,
    /// The base offset the next batch must have, once one batch has been seen.
    expect: Option<Offset>,
}

impl Walk<'_> {
    /// An error for the batch at the current position; the walk ends there.
    fn corrupt(&mut self, why: String) -> StorageError {
        let at = std::mem::replace(&mut self.pos, self.end);
        StorageError::Corrupt {
            tp: self.tp.clone(),
            reason: format!("segment {} at byte {at}: {why}", self.seg.base()),
        }
    }

    fn header(&mut self) -> StorageResult<BatchHeader> {
        if self.end - self.pos < HEADER_LEN as u64 {
            return Err(self.corrupt("batch header runs past the end of the segment".into()));
        }
        let mut buf = [0u8; HEADER_LEN];
        read_exact_at(&self.seg.log, &mut buf, self.pos)?;
        let h = peek_header(&buf).map_err(|e| self.corrupt(e.to_string()))?;
        if h.base_offset < 0 || h.last_offset_delta < 0 {
            return Err(self.corrupt(format!("impossible batch header {h:?}")));
        }
        if h.total_len() as u64 > self.end - self.pos {
            return Err(self.corrupt("batch runs past the end of the segment".into()));
        }
        if self
            .expect
            .is_some_and(|want| want != h.base_offset as Offset)
        {
            return Err(self.corrupt(format!(
                "batch has base offset {} where {:?} was expected",
                h.base_offset, self.expect
            )));
        }
        Ok(h)
    }
}

impl Iterator for Walk<'_> {
    type Item = StorageResult<(u64, BatchHeader)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let h = match self.header() {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        if h.base_offset as Offset >= self.hw {
            return None;
        }
        let at = self.pos;
        self.pos += h.total_len() as u64;
        self.expect = Some(last_offset(&h) + 1);
        Some(Ok((at, h)))
    }
}

impl Segment {
    fn walk<'a>(&'a self, tp: &'a TopicPartition, pos: u64, hw: Offset) -> Walk<'a> {
        Walk {
            seg: self,
            tp,
            pos,
            end: self.size(),
            hw,
            expect: None,
        }
    }

    /// Where to start scanning for `offset`: the last indexed batch at or before it.
    fn index_position(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<u64> {
        let rel = offset.saturating_sub(self.base());
        let found = self.offsets.last_where(|e| u64::from(e.rel) <= rel)?;
        let pos = found.map_or(0, |e| u64::from(e.pos));
        if pos > self.size() {
            return Err(StorageError::Corrupt {
                tp: tp.clone(),
                reason: format!(
                    "offset index of segment {} points past its end",
                    self.base()
                ),
            });
        }
        Ok(pos)
    }

    /// Whole batches from the one containing `from`, up to `max_bytes` but at least one, below
    /// `hw`. Empty only if this segment does not hold `from`.
    pub(crate) fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
        hw: Offset,
    ) -> StorageResult<Vec<Bytes>> {
        let mut walk = self.walk(tp, self.index_position(tp, from)?, hw);
        let mut start = None;
        while let Some(item) = walk.next() {
            let (pos, h) = item?;
            if h.base_offset as Offset > from {
                return Err(walk.corrupt(format!("no batch holds offset {from}")));
            }
            if last_offset(&h) >= from {
                start = Some((pos, h.total_len()));
                break;
            }
        }
        let Some((start, first_len)) = start else {
            return Ok(Vec::new());
        };
        let mut lens = vec![first_len];
        let mut used = first_len;
        for item in walk {
            let len = item?.1.total_len();
            if used + len > max_bytes {
                break;
            }
            lens.push(len);
            used += len;
        }
        // One read for the whole range; the batches are slices of it.
        let mut buf = vec![0u8; used];
        read_exact_at(&self.log, &mut buf, start)?;
        let mut bytes = Bytes::from(buf);
        Ok(lens.into_iter().map(|n| bytes.split_to(n)).collect())
    }

    /// The first record at or after `log_start` whose batch has a max timestamp of at least
    /// `target`, with its timestamp (see [`Segment::first_match`]); `None` if this segment has
    /// none.
    pub(crate) fn find_timestamp(
        &self,
        tp: &TopicPartition,
        target: i64,
        log_start: Offset,
        hw: Offset,
    ) -> StorageResult<Option<(Offset, i64)>> {
        if self.max_timestamp() < target {
            return Ok(None);
        }
        // Every batch up to an entry's offset is older than the entry's timestamp.
        let older = self.times.last_where(|e| e.ts < target)?;
        let skip_to = older.map_or(0, |e| u64::from(e.rel) + 1);
        let from = (self.base() + skip_to).max(log_start);
        for item in self.walk(tp, self.index_position(tp, from)?, hw) {
            let (pos, h) = item?;
            if last_offset(&h) < from || h.max_timestamp < target {
                continue;
            }
            if let Some(hit) = self.first_match(tp, pos, &h, target, log_start)? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// Within one batch whose max timestamp reaches `target`: the first record at or after
    /// `log_start` with a timestamp of at least `target`. Compressed batches, and batches whose
    /// records carry the broker's append time, answer with their start and max timestamp, as
    /// Kafka does for batches it does not expand.
    fn first_match(
        &self,
        tp: &TopicPartition,
        pos: u64,
        h: &BatchHeader,
        target: i64,
        log_start: Offset,
    ) -> StorageResult<Option<(Offset, i64)>> {
        let whole_batch = ((h.base_offset as Offset).max(log_start), h.max_timestamp);
        if h.compression() != 0 || h.log_append_time() {
            return Ok(Some(whole_batch));
        }
        let mut buf = vec![0u8; h.total_len()];
        read_exact_at(&self.log, &mut buf, pos)?;
        let batch = RecordBatch::parse(Bytes::from(buf)).map_err(|e| StorageError::Corrupt {
            tp: tp.clone(),
            reason: format!("segment {} at byte {pos}: {e}", self.base()),
        })?;
        match batch.records() {
            Ok(records) => Ok(records
                .into_iter()
                .find(|r| r.timestamp_ms >= target && r.offset >= log_start)
                .map(|r| (r.offset, r.timestamp_ms))),
            Err(_) => Ok(Some(whole_batch)),
        }
    }
}
