//! Decompressing the records section of a produced Kafka batch.
//!
//! A v2 batch compresses everything after its 61-byte header as one unit, under the codec named by
//! the low three bits of the attributes. Decoding is bounded: a small produced batch may expand to
//! any size (a "zip bomb"), so every codec stops one byte past the caller's limit.
//!
//! gzip is RFC 1952 (members back to back read as one stream, as Java's `GZIPInputStream` does);
//! snappy is snappy-java's framing or one raw block; LZ4 is the standard LZ4 frame format (only
//! magic v0 message sets, before Kafka 0.10 and KAFKA-3160, wrote a wrong frame header checksum;
//! a v2 batch never does); zstd is the standard frame format.

use std::fmt;
use std::io::Read;

use bytes::Bytes;

use crate::records::RecordsError;

/// snappy-java's stream header, which the Java client (and librdkafka, for compatibility) writes
/// before the snappy blocks. A raw snappy block cannot start with these bytes: `82 53` would be
/// the length varint, and the following `4e` a copy element, which is invalid before any literal.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// The xerial header: magic, then two big-endian i32s (version, compatible version).
const XERIAL_HEADER_LEN: usize = 16;

/// Compression codec of a batch, numbered as in the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl TryFrom<u8> for Compression {
    type Error = RecordsError;

    /// Codec ids 5 to 7 fit the attribute bits but no Kafka version defines them.
    fn try_from(id: u8) -> Result<Self, Self::Error> {
        Ok(match id {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => return Err(RecordsError::UnknownCodec(other)),
        })
    }
}

impl fmt::Display for Compression {
    /// The name Kafka's `compression.type` setting uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        })
    }
}

impl Compression {
    /// Decompresses a records section, failing with [`RecordsError::TooLarge`] as soon as the
    /// output passes `limit` bytes. `None` hands the input back untouched: it is already in
    /// memory, so the limit does not apply to it.
    pub fn decompress(self, input: Bytes, limit: usize) -> Result<Bytes, RecordsError> {
        let out = match self {
            Self::None => return Ok(input),
            Self::Gzip => {
                self.read_bounded(flate2::read::MultiGzDecoder::new(&input[..]), limit)?
            }
            Self::Snappy => snappy(&input, limit)?,
            Self::Lz4 => {
                self.read_bounded(lz4_flex::frame::FrameDecoder::new(&input[..]), limit)?
            }
            Self::Zstd => zstd(&input, limit)?,
        };
        Ok(Bytes::from(out))
    }

    fn corrupt(self, reason: impl fmt::Display) -> RecordsError {
        RecordsError::Corrupt {
            codec: self,
            reason: reason.to_string(),
        }
    }

    fn too_large(self, limit: usize) -> RecordsError {
        RecordsError::TooLarge { codec: self, limit }
    }

    /// Reads a decoder to its end, or to one byte past `limit`. The output vector grows by
    /// doubling, so memory stays under about twice the limit.
    fn read_bounded(self, decoder: impl Read, limit: usize) -> Result<Vec<u8>, RecordsError> {
        let mut out = Vec::new();
        self.append_bounded(decoder, &mut out, limit)?;
        Ok(out)
    }

    fn append_bounded(
        self,
        decoder: impl Read,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), RecordsError> {
        let room = limit.saturating_sub(out.len()) as u64;
        decoder
            .take(room.saturating_add(1))
            .read_to_end(out)
            .map_err(|e| self.corrupt(e))?;
        if out.len() > limit {
            return Err(self.too_large(limit));
        }
        Ok(())
    }
}

/// Kafka's snappy is either snappy-java's stream (what the Java client writes, and librdkafka by
/// default) or, from some librdkafka-based producers, one raw snappy block. librdkafka tells them
/// apart by the magic alone, and so do we.
fn snappy(input: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    if !input.starts_with(XERIAL_MAGIC) {
        snappy_block(input, &mut out, limit)?;
        return Ok(out);
    }
    // The versions are not checked: every snappy-java release writes 1 and 1, and librdkafka
    // ignores them too.
    let mut rest = input
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| Compression::Snappy.corrupt("snappy-java header is truncated"))?;
    while !rest.is_empty() {
        let truncated = || Compression::Snappy.corrupt("snappy-java block runs past the payload");
        let (len, after) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        let (block, after) = after.split_at_checked(len).ok_or_else(truncated)?;
        snappy_block(block, &mut out, limit)?;
        rest = after;
    }
    Ok(out)
}

/// Appends one raw snappy block. Its decoded length is declared up front, so a block that would
/// pass the limit is refused before anything is allocated for it.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), RecordsError> {
    let codec = Compression::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| codec.corrupt(e))?;
    if len > limit.saturating_sub(out.len()) {
        return Err(codec.too_large(limit));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| codec.corrupt(e))?;
    out.truncate(start + written);
    Ok(())
}

/// Decodes every zstd frame in the payload, as Kafka's zstd-jni stream does, skipping skippable
/// frames. The decoder reserves the window a frame declares, up to the 128 MiB that libzstd (and
/// so Kafka's zstd-jni reader) accepts by default; the reservation is not written beyond what is
/// decoded, so resident memory still follows the output limit.
fn zstd(input: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    use ruzstd::decoding::StreamingDecoder;
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};

    let codec = Compression::Zstd;
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let skip = match StreamingDecoder::new(&mut rest) {
            Ok(frame) => {
                codec.append_bounded(frame, &mut out, limit)?;
                0
            }
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => length as usize,
            Err(e) => return Err(codec.corrupt(e)),
        };
        rest = rest
            .get(skip..)
            .ok_or_else(|| codec.corrupt("skippable frame runs past the payload"))?;
    }
    Ok(out)
}
