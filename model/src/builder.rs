//! Records, and the builder that turns messages from any protocol into a v2 batch.
//!
//! MQTT and AMQP publishes become records: key, value, headers, timestamp. Protocol properties
//! travel as headers by the mapping in `docs/mapping.md`.

use bytes::{BufMut, Bytes};

use crate::batch::{HEADER_LEN, RecordBatch};
use crate::varint::{VARINT_MAX, put_varint, put_varlong, varint_bytes};

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
///
/// Records are encoded as they are pushed, into the buffer that becomes the batch, so a
/// publish borrowed from a protocol's own message ([`BatchBuilder::record`]) costs no
/// allocation beyond that buffer's growth.
#[derive(Debug)]
pub struct BatchBuilder {
    /// Room for the batch header, then the records encoded so far.
    out: Vec<u8>,
    count: i32,
    base_ts: i64,
    max_ts: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Where a record whose writer has not finished starts: dropped (or forgotten) unfinished,
    /// its bytes are cut off by the next `record` or `build`.
    unfinished: Option<usize>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            out: Vec::new(),
            count: 0,
            base_ts: 0,
            max_ts: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            unfinished: None,
        }
    }
}

/// A record's fields besides its key and value, at most: attributes, timestamp and offset
/// deltas, the key, value and header-count lengths, and its own length prefix.
const RECORD_OVERHEAD: usize = 1 + 10 + 5 + 5 + 5 + 5 + 5;
/// Room first set aside for a record's headers.
const HEADERS_ROOM: usize = 128;
/// The most bytes a varint of an `i32` takes: the room left for a record's length and header
/// count, which are known only once its headers are written.
const VARINT_ROOM: usize = VARINT_MAX;

/// Writes `v` into the `VARINT_ROOM` bytes left at `at`, closing up what it does not use.
fn fill_varint_room(out: &mut Vec<u8>, at: usize, v: i32) {
    let (encoded, n) = varint_bytes(v);
    out.copy_within(at + VARINT_ROOM.., at + n);
    out[at..at + n].copy_from_slice(&encoded[..n]);
    out.truncate(out.len() - (VARINT_ROOM - n));
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

/// One record being written into a [`BatchBuilder`]: add its headers, then
/// [`finish`](RecordWriter::finish) it. A writer dropped unfinished adds nothing.
///
/// The record is written in place, with room left for its length prefix and its header
/// count, filled in (and closed up) by `finish`: no scratch buffers to allocate per record.
#[must_use = "a record is added by `finish` only"]
pub struct RecordWriter<'a> {
    builder: &'a mut BatchBuilder,
    timestamp_ms: i64,
    header_count: i32,
    /// Where the record starts in the batch (its length prefix's room).
    start: usize,
    /// Where the room for its header count is.
    count_at: usize,
}

impl RecordWriter<'_> {
    pub fn header(&mut self, key: &str, value: Option<&[u8]>) -> &mut Self {
        put_bytes(&mut self.builder.out, Some(key.as_bytes()));
        put_bytes(&mut self.builder.out, value);
        self.header_count += 1;
        self
    }

    /// Appends the record to the batch.
    pub fn finish(self) {
        let b = self.builder;
        fill_varint_room(&mut b.out, self.count_at, self.header_count);
        let body = b.out.len() - (self.start + VARINT_ROOM);
        fill_varint_room(&mut b.out, self.start, body as i32);
        b.max_ts = b.max_ts.max(self.timestamp_ms);
        b.count += 1;
        b.unfinished = None;
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, record: Record) -> &mut Self {
        let mut w = self.record(
            record.timestamp_ms,
            record.key.as_deref(),
            record.value.as_deref(),
        );
        for h in &record.headers {
            w.header(&h.key, h.value.as_deref());
        }
        w.finish();
        self
    }

    /// Starts the next record; its headers follow through the writer.
    pub fn record(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> RecordWriter<'_> {
        let data = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        self.drop_unfinished();
        if self.count == 0 {
            self.out.clear();
            // The first record with its headers, and room for as much again: most batches
            // built here hold one record, and then never grow.
            self.out
                .reserve(HEADER_LEN + 2 * (RECORD_OVERHEAD + data) + HEADERS_ROOM);
            self.out.resize(HEADER_LEN, 0);
            self.base_ts = timestamp_ms;
            self.max_ts = timestamp_ms;
        }
        let out = &mut self.out;
        out.reserve(RECORD_OVERHEAD + data + HEADERS_ROOM);
        let start = out.len();
        out.extend_from_slice(&[0; VARINT_ROOM]);
        out.push(0); // record attributes: unused
        put_varlong(out, timestamp_ms - self.base_ts);
        put_varint(out, self.count);
        put_bytes(out, key);
        put_bytes(out, value);
        let count_at = out.len();
        out.extend_from_slice(&[0; VARINT_ROOM]);
        self.unfinished = Some(start);
        RecordWriter {
            builder: self,
            timestamp_ms,
            header_count: 0,
            start,
            count_at,
        }
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
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Cuts off the bytes of a record whose writer was dropped before `finish`.
    fn drop_unfinished(&mut self) {
        if let Some(start) = self.unfinished.take() {
            self.out.truncate(start);
        }
    }

    /// Encodes the batch; `None` when there is nothing to encode.
    pub fn build(mut self) -> Option<RecordBatch> {
        self.drop_unfinished();
        if self.count == 0 {
            return None;
        }
        let mut out = self.out;
        let body = out.len() - HEADER_LEN;
        let mut header = &mut out[..HEADER_LEN];
        header.put_i64(0);
        header.put_i32((HEADER_LEN - 12 + body) as i32);
        header.put_i32(-1); // partition leader epoch: set by nobody here
        header.put_i8(2);
        header.put_u32(0); // crc, filled below
        header.put_i16(0);
        header.put_i32(self.count - 1);
        header.put_i64(self.base_ts);
        header.put_i64(self.max_ts);
        header.put_i64(self.producer_id);
        header.put_i16(self.producer_epoch);
        header.put_i32(self.base_sequence);
        header.put_i32(self.count);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        // The batch may live on in a partition's tail cache, which counts its length: give the
        // unused room back (a shrink in place), and a buffer of exactly its length also becomes
        // `Bytes` without a separate allocation for the reference count.
        out.shrink_to_fit();
        RecordBatch::built(Bytes::from(out)).ok()
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
    fn a_batch_nothing_else_holds_is_placed_in_place_and_a_shared_one_is_copied() {
        let unique = sample();
        let at = unique.bytes().as_ptr();
        let placed = unique.into_base_offset(7);
        assert_eq!(placed.bytes().as_ptr(), at, "rewritten where it was");
        assert_eq!(placed.base_offset(), 7);
        assert_eq!(
            RecordBatch::parse(placed.bytes().clone())
                .unwrap()
                .base_offset(),
            7
        );

        let original = sample();
        let placed = original.clone().into_base_offset(9);
        assert_ne!(placed.bytes().as_ptr(), original.bytes().as_ptr());
        assert_eq!(original.base_offset(), 0);
        assert_eq!(
            &original.bytes()[..8],
            &[0; 8],
            "the other owner's bytes are untouched"
        );
        assert_eq!(placed.base_offset(), 9);
        assert_eq!(
            placed.records().unwrap(),
            original
                .records()
                .unwrap()
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.offset += 9;
                    r
                })
                .collect::<Vec<_>>()
        );
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
    fn borrowed_records_encode_as_owned_ones_and_unfinished_ones_add_nothing() {
        let mut b = BatchBuilder::new();
        // Abandoned before and between records: neither leaves a trace.
        let _ = b.record(1, Some(b"gone"), None);
        b.record(1000, Some(b"k1"), Some(b"v1")).finish();
        let _ = b.record(999_999, Some(b"gone too"), Some(b"x"));
        let mut w = b.record(1005, None, Some(b"v2"));
        w.header("mqtt.qos", Some(b"1")).header("nil", None);
        w.finish();
        assert_eq!(b.len(), 2);
        let borrowed = b.build().expect("non-empty");
        assert_eq!(borrowed.bytes(), sample().bytes());
    }

    #[test]
    fn records_of_every_length_prefix_size_read_back_as_written() {
        // Value sizes and header counts whose varints take one to four bytes.
        let mut want = Vec::new();
        let mut b = BatchBuilder::new();
        for (i, (size, headers)) in [
            (0, 0),
            (40, 1),
            (200, 70),
            (20_000, 3),
            (1, 200),
            (1 << 20, 2),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = Record::new(
                (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
                Some(Bytes::from(vec![b'a' + i as u8; size])),
                1_000 + i as i64,
            );
            for h in 0..headers {
                r = r.with_header(format!("h{h}"), (h % 3 != 0).then(|| Bytes::from("v")));
            }
            b.push(r.clone());
            r.offset = i as u64;
            want.push(r);
        }
        let batch = b.build().expect("five records");
        assert_eq!(batch.records().expect("valid"), want);
    }

    #[test]
    fn a_builder_with_no_finished_record_builds_nothing() {
        let mut b = BatchBuilder::new();
        let _ = b.record(1, Some(b"k"), Some(b"v"));
        assert!(b.is_empty());
        assert!(b.build().is_none());
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
