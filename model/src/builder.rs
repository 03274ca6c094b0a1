//! Records, and the builder that turns messages from any protocol into a v2 batch.
//!
//! MQTT and AMQP publishes become records: key, value, headers, timestamp. Protocol properties
//! travel as headers by the mapping in `docs/mapping.md`.

use bytes::{BufMut, Bytes};

use crate::batch::{HEADER_LEN, RecordBatch};
use crate::varint::{put_varint, put_varlong};

/// Re-exported at its former home; reading records out of a batch lives in [`crate::records`].
pub use crate::records::RecordsError;

/// A record header: Kafka allows a null value, and keys are strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One message in protocol-neutral form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    pub fn new(key: Option<Bytes>, value: Option<Bytes>, timestamp_ms: i64) -> Self {
        Self {
            offset: 0,
            timestamp_ms,
            key,
            value,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value,
        });
        self
    }

    pub fn header(&self, key: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.key == key)
    }
}

/// Builds one uncompressed v2 batch from records, as a non-transactional producer would: not
/// idempotent (producer id -1) unless [`BatchBuilder::idempotent`] says otherwise. Offsets are
/// relative; the backend assigns the base.
#[derive(Debug)]
pub struct BatchBuilder {
    records: Vec<Record>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, record: Record) -> &mut Self {
        self.records.push(record);
        self
    }

    /// Marks the batch as written by an idempotent producer, with the sequence number of its
    /// first record.
    pub fn idempotent(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> &mut Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encodes the batch; `None` when there is nothing to encode.
    pub fn build(&self) -> Option<RecordBatch> {
        let first = self.records.first()?;
        let base_ts = first.timestamp_ms;
        let max_ts = self
            .records
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .unwrap_or(base_ts);
        let mut body = Vec::with_capacity(64 * self.records.len());
        let mut rec = Vec::with_capacity(128);
        for (i, r) in self.records.iter().enumerate() {
            rec.clear();
            rec.push(0); // record attributes: unused
            put_varlong(&mut rec, r.timestamp_ms - base_ts);
            put_varint(&mut rec, i as i32);
            put_bytes(&mut rec, r.key.as_deref());
            put_bytes(&mut rec, r.value.as_deref());
            put_varint(&mut rec, r.headers.len() as i32);
            for h in &r.headers {
                put_bytes(&mut rec, Some(h.key.as_bytes()));
                put_bytes(&mut rec, h.value.as_deref());
            }
            put_varint(&mut body, rec.len() as i32);
            body.extend_from_slice(&rec);
        }
        let count = self.records.len() as i32;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.put_i64(0);
        out.put_i32((HEADER_LEN - 12 + body.len()) as i32);
        out.put_i32(-1); // partition leader epoch: set by nobody here
        out.put_i8(2);
        out.put_u32(0); // crc, filled below
        out.put_i16(0);
        out.put_i32(count - 1);
        out.put_i64(base_ts);
        out.put_i64(max_ts);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(count);
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::parse(Bytes::from(out)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchError, split_batches, valid_prefix_len};

    fn sample() -> RecordBatch {
        let mut b = BatchBuilder::new();
        b.push(Record::new(
            Some(Bytes::from_static(b"k1")),
            Some(Bytes::from_static(b"v1")),
            1000,
        ));
        b.push(
            Record::new(None, Some(Bytes::from_static(b"v2")), 1005)
                .with_header("mqtt.qos", Some(Bytes::from_static(b"1")))
                .with_header("nil", None),
        );
        b.build().expect("non-empty")
    }

    #[test]
    fn built_batch_parses_and_expands_back_to_its_records() {
        let batch = sample().with_base_offset(40);
        let h = batch.header();
        assert_eq!((h.record_count, h.last_offset_delta), (2, 1));
        assert_eq!((h.base_timestamp, h.max_timestamp), (1000, 1005));
        let records = batch.records().unwrap();
        assert_eq!(records[0].offset, 40);
        assert_eq!(records[1].offset, 41);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].timestamp_ms, 1005);
        assert_eq!(
            records[1].header("mqtt.qos").unwrap().value.as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(records[1].header("nil").unwrap().value, None);
    }

    #[test]
    fn base_offset_rewrite_keeps_crc_valid() {
        let moved = sample().with_base_offset(1 << 40);
        let again = RecordBatch::parse(moved.bytes().clone()).unwrap();
        assert_eq!(again.base_offset(), 1 << 40);
        assert_eq!(again.last_offset(), (1 << 40) + 1);
    }

    #[test]
    fn flipped_payload_byte_fails_the_crc() {
        let mut raw = sample().bytes().to_vec();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        assert!(matches!(
            RecordBatch::parse(Bytes::from(raw)),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn split_and_valid_prefix_find_the_torn_tail() {
        let a = sample();
        let mut raw = a.bytes().to_vec();
        raw.extend_from_slice(a.bytes());
        assert_eq!(split_batches(Bytes::from(raw.clone())).unwrap().len(), 2);
        let whole = raw.len();
        raw.extend_from_slice(&a.bytes()[..30]);
        assert_eq!(valid_prefix_len(&raw), whole);
        assert!(split_batches(Bytes::from(raw)).is_err());
    }

    #[test]
    fn log_append_time_rewrite_recomputes_crc() {
        let b = sample().with_log_append_time(99_999);
        let again = RecordBatch::parse(b.bytes().clone()).unwrap();
        assert!(again.header().log_append_time());
        assert_eq!(again.header().max_timestamp, 99_999);
    }
}
