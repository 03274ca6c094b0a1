//! Kafka record batches, format v2 (magic 2): the unit every backend stores.
//!
//! Layout (big-endian), as in the Kafka protocol guide:
//!
//! ```text
//! 0  baseOffset i64        8  batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8              17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16        23 lastOffsetDelta i32  27 baseTimestamp i64
//! 35 maxTimestamp i64      43 producerId i64       51 producerEpoch i16
//! 53 baseSequence i32      57 recordCount i32      61 records…
//! ```
//!
//! The CRC does not cover the base offset or the leader epoch, so a backend assigns offsets by
//! rewriting the first eight bytes and the batch stays valid, compressed payload untouched.

use bytes::{Bytes, BytesMut};

/// Size of the fixed batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts from: base offset and the length field itself.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Why bytes are not a valid v2 batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("batch length {0} is invalid")]
    BadLength(i32),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch declares {count} records but last offset delta {last_delta}")]
    BadCount { count: i32, last_delta: i32 },
}

/// Decoded fixed header fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Compression codec id from the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    /// Timestamp type bit: true when the broker's log-append time is used.
    pub fn log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }
    /// Number of offsets this batch occupies.
    pub fn offset_count(&self) -> u64 {
        u64::from(self.last_offset_delta.max(0) as u32) + 1
    }
    /// Whole size on the wire, including base offset and length fields.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the fixed header from the front of `buf` without checking the CRC.
pub fn peek_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            have: buf.len(),
        });
    }
    let magic = buf[16] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let batch_length = be_i32(buf, 8);
    if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::BadLength(batch_length));
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, 0),
        batch_length,
        leader_epoch: be_i32(buf, 12),
        magic,
        crc: be_i32(buf, 17) as u32,
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        record_count: be_i32(buf, 57),
    })
}

/// One validated v2 batch, sharing the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Validates one whole batch (length, magic, CRC, counts).
    pub fn parse(bytes: Bytes) -> Result<Self, BatchError> {
        let header = peek_header(&bytes)?;
        let total = header.total_len();
        if bytes.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                have: bytes.len(),
            });
        }
        let bytes = bytes.slice(..total);
        let computed = crc32c::crc32c(&bytes[CRC_START..]);
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        if header.last_offset_delta < 0
            || header.record_count < 0
            || (header.record_count > 0 && header.last_offset_delta < header.record_count - 1)
        {
            return Err(BatchError::BadCount {
                count: header.record_count,
                last_delta: header.last_offset_delta,
            });
        }
        Ok(Self { header, bytes })
    }

    /// A batch [`BatchBuilder`](crate::BatchBuilder) has just encoded whole, with its CRC:
    /// checked by the builder's tests rather than again per batch (a second CRC pass, and a
    /// slice that made the buffer allocate its reference count at once).
    pub(crate) fn built(bytes: Bytes) -> Result<Self, BatchError> {
        let header = peek_header(&bytes)?;
        debug_assert_eq!(header.total_len(), bytes.len());
        Ok(Self { header, bytes })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }
    pub fn last_offset(&self) -> i64 {
        self.header.base_offset + i64::from(self.header.last_offset_delta)
    }

    /// The same batch placed at `base_offset`. The CRC does not cover this field, so the
    /// payload (possibly compressed) is untouched.
    pub fn with_base_offset(&self, base_offset: u64) -> Self {
        self.clone().into_base_offset(base_offset)
    }

    /// [`RecordBatch::with_base_offset`], rewriting the field in place when nothing else shares
    /// the bytes (a batch just built), and copying them only when something does (a slice of a
    /// request still in use).
    pub fn into_base_offset(self, base_offset: u64) -> Self {
        let mut out = self
            .bytes
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        out[..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
        let mut header = self.header;
        header.base_offset = base_offset as i64;
        Self {
            header,
            bytes: out.freeze(),
        }
    }

    /// Rewrites the broker-set fields for log-append-time topics: the max timestamp and the
    /// timestamp type bit are covered by the CRC, so it is recomputed.
    pub fn with_log_append_time(&self, now_ms: i64) -> Self {
        let mut out = BytesMut::from(&self.bytes[..]);
        let attrs = self.header.attributes | 0x08;
        out[21..23].copy_from_slice(&attrs.to_be_bytes());
        out[35..43].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut header = self.header;
        header.attributes = attrs;
        header.max_timestamp = now_ms;
        header.crc = crc;
        Self {
            header,
            bytes: out.freeze(),
        }
    }
}

/// Splits a concatenation of batches (a Kafka produce payload, a segment slice) and validates
/// each. A trailing partial batch is an error: producers never send one.
pub fn split_batches(mut bytes: Bytes) -> Result<Vec<RecordBatch>, BatchError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = peek_header(&bytes)?;
        let total = header.total_len();
        if bytes.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                have: bytes.len(),
            });
        }
        let batch = RecordBatch::parse(bytes.split_to(total))?;
        out.push(batch);
    }
    Ok(out)
}

/// Counts the bytes at the front of `buf` that are whole, CRC-valid batches; recovery truncates
/// a log to this length to drop a torn tail.
pub fn valid_prefix_len(buf: &[u8]) -> usize {
    let mut at = 0;
    while at < buf.len() {
        let Ok(header) = peek_header(&buf[at..]) else {
            break;
        };
        let total = header.total_len();
        if buf.len() - at < total {
            break;
        }
        if crc32c::crc32c(&buf[at + CRC_START..at + total]) != header.crc {
            break;
        }
        at += total;
    }
    at
}
