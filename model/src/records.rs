//! Reading records back out of a v2 batch, compressed or not.
//!
//! Record layout, as in the Kafka protocol guide (varints zig-zag encoded):
//!
//! ```text
//! length varint   attributes i8   timestampDelta varlong   offsetDelta varint
//! keyLength varint   key   valueLength varint   value   headerCount varint
//! headers: headerKeyLength varint   headerKey   headerValueLength varint   headerValue
//! ```
//!
//! Every length and count here was written by a producer, so none sizes an allocation on its
//! own: a count reserves no more entries than the remaining bytes could encode.

use bytes::Bytes;

use crate::batch::{BatchError, BatchHeader, HEADER_LEN, RecordBatch};
use crate::builder::{Header, Record};
use crate::compression::Compression;
use crate::varint::{get_varint, get_varlong};

/// The bound [`RecordBatch::records`] puts on a decompressed records section. Kafka's default
/// `message.max.bytes` lets about 1 MiB of *compressed* batch in; 64 MiB leaves room for very
/// compressible payloads while one hostile batch cannot exhaust memory.
pub const DEFAULT_MAX_RECORDS_BYTES: usize = 64 * 1024 * 1024;

/// The smallest record: length, attributes, timestamp delta, offset delta, key length, value
/// length and header count, one byte each.
const MIN_RECORD_LEN: usize = 7;
/// The smallest header: key length and value length, one byte each.
const MIN_HEADER_LEN: usize = 2;

/// Why records could not be read out of a batch. None is retryable: the batch bytes read the
/// same way every time, so the batch can only be skipped (or fetched by a Kafka consumer, which
/// gets the bytes as stored).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("unknown compression codec {0} in the batch attributes (Kafka defines 0 to 4)")]
    UnknownCodec(u8),
    #[error("{codec} records section does not decompress: {reason}")]
    Corrupt { codec: Compression, reason: String },
    #[error("{codec} records section expands past the {limit}-byte limit")]
    TooLarge { codec: Compression, limit: usize },
    #[error("malformed record at byte {at} of the (decompressed) records section: {what}")]
    Malformed { at: usize, what: &'static str },
}

impl RecordBatch {
    /// Expands the batch into records with absolute offsets, decompressing it if needed with a
    /// bound of [`DEFAULT_MAX_RECORDS_BYTES`].
    pub fn records(&self) -> Result<Vec<Record>, RecordsError> {
        self.records_limited(DEFAULT_MAX_RECORDS_BYTES)
    }

    /// Like [`records`](Self::records), failing with [`RecordsError::TooLarge`] when a
    /// compressed records section expands past `max_bytes`.
    pub fn records_limited(&self, max_bytes: usize) -> Result<Vec<Record>, RecordsError> {
        let codec = Compression::try_from(self.header().compression())?;
        let section = codec.decompress(self.bytes().slice(HEADER_LEN..), max_bytes)?;
        read_records(self.header(), &section)
    }
}

/// Reads exactly `record_count` records; like Kafka, bytes left over after them are an error.
fn read_records(h: &BatchHeader, section: &Bytes) -> Result<Vec<Record>, RecordsError> {
    // `RecordBatch::parse` has already refused a negative count.
    let count = usize::try_from(h.record_count).unwrap_or(0);
    let mut out = Vec::with_capacity(count.min(section.len() / MIN_RECORD_LEN));
    let mut cur = Cursor {
        buf: section,
        at: 0,
    };
    for _ in 0..count {
        out.push(read_record(h, &mut cur, section)?);
    }
    if cur.at != section.len() {
        return Err(cur.malformed("bytes remain after the declared record count"));
    }
    Ok(out)
}

fn read_record(
    h: &BatchHeader,
    cur: &mut Cursor<'_>,
    section: &Bytes,
) -> Result<Record, RecordsError> {
    let mut rec = cur.record()?;
    let start = rec.at;
    rec.byte()?; // record attributes: unused since v2
    let ts_delta = rec.varlong()?;
    let offset = record_offset(h, rec.varint()?)
        .ok_or_else(|| Cursor::error(start, "offset delta outside the batch"))?;
    let share = |b: &[u8]| section.slice_ref(b);
    let key = rec.bytes()?.map(share);
    let value = rec.bytes()?.map(share);
    let count =
        usize::try_from(rec.varint()?).map_err(|_| rec.malformed("negative header count"))?;
    let mut headers = Vec::with_capacity(count.min(rec.remaining() / MIN_HEADER_LEN));
    for _ in 0..count {
        let key = rec
            .bytes()?
            .ok_or_else(|| rec.malformed("null header key"))?;
        let value = rec.bytes()?.map(share);
        headers.push(Header {
            key: String::from_utf8_lossy(key).into_owned(),
            value,
        });
    }
    if rec.remaining() != 0 {
        return Err(rec.malformed("record length exceeds its fields"));
    }
    // Kafka gives every record of a log-append-time batch the broker's time, kept as the max
    // timestamp, whatever the producer wrote; delta arithmetic wraps as Java's does.
    let timestamp_ms = if h.log_append_time() {
        h.max_timestamp
    } else {
        h.base_timestamp.wrapping_add(ts_delta)
    };
    Ok(Record {
        offset,
        timestamp_ms,
        key,
        value,
        headers,
    })
}

/// A record's absolute offset, if its delta lies within the batch and the result is not negative.
fn record_offset(h: &BatchHeader, delta: i32) -> Option<u64> {
    if !(0..=h.last_offset_delta).contains(&delta) {
        return None;
    }
    u64::try_from(h.base_offset.checked_add(i64::from(delta))?).ok()
}

/// Reads forward through a records section; positions are absolute within it.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn error(at: usize, what: &'static str) -> RecordsError {
        RecordsError::Malformed { at, what }
    }

    fn malformed(&self, what: &'static str) -> RecordsError {
        Self::error(self.at, what)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn byte(&mut self) -> Result<u8, RecordsError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or_else(|| self.malformed("record ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        let (v, n) =
            get_varint(&self.buf[self.at..]).ok_or_else(|| self.malformed("bad varint"))?;
        self.at += n;
        Ok(v)
    }

    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let (v, n) =
            get_varlong(&self.buf[self.at..]).ok_or_else(|| self.malformed("bad varlong"))?;
        self.at += n;
        Ok(v)
    }

    /// Reads a length-prefixed byte string; any negative length means null, as in Kafka.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        let Ok(len) = usize::try_from(self.varint()?) else {
            return Ok(None);
        };
        let b = self
            .buf
            .get(self.at..)
            .and_then(|rest| rest.get(..len))
            .ok_or_else(|| self.malformed("length runs past the record"))?;
        self.at += len;
        Ok(Some(b))
    }

    /// Reads a record's length and returns a cursor over just its body, so no field can run
    /// into the next record; this cursor moves past the record.
    fn record(&mut self) -> Result<Cursor<'a>, RecordsError> {
        let len = usize::try_from(self.varint()?)
            .map_err(|_| self.malformed("negative record length"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.malformed("record runs past the records section"))?;
        let body = Cursor {
            buf: &self.buf[..end],
            at: self.at,
        };
        self.at = end;
        Ok(body)
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
