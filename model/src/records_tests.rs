//! Records out of batches under every Kafka codec: each codec's own encoder, framings built by
//! hand from their specs, vectors from the reference tools, and hostile input.

use std::io::Write;

use bytes::Bytes;

use super::*;
use crate::builder::BatchBuilder;
use crate::varint::put_varint;

const GZIP: u8 = 1;
const SNAPPY: u8 = 2;
const LZ4: u8 = 3;
const ZSTD: u8 = 4;

// ---- the batch every codec carries ----

fn sample() -> RecordBatch {
    let reading = Bytes::from("temperature=21.5;".repeat(8));
    let mut b = BatchBuilder::new();
    b.push(
        Record::new(Some(Bytes::from_static(b"k1")), Some(reading.clone()), 1000)
            .with_header("mqtt.qos", Some(Bytes::from_static(b"1")))
            .with_header("nil", None),
    );
    b.push(Record::new(None, Some(reading), 1005));
    // A tombstone stamped before the batch's base timestamp: a negative delta.
    b.push(Record::new(Some(Bytes::from_static(b"k3")), None, 990));
    b.build().expect("non-empty").with_base_offset(100)
}

fn assert_sample_records(records: &[Record]) {
    let reading = Bytes::from("temperature=21.5;".repeat(8));
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [100, 101, 102]);
    let stamps: Vec<i64> = records.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(stamps, [1000, 1005, 990]);
    let keys: Vec<Option<&[u8]>> = records.iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, [Some(&b"k1"[..]), None, Some(&b"k3"[..])]);
    let values: Vec<Option<Bytes>> = records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, [Some(reading.clone()), Some(reading), None]);
    assert_eq!(
        records[0].headers,
        [
            Header {
                key: "mqtt.qos".into(),
                value: Some(Bytes::from_static(b"1")),
            },
            Header {
                key: "nil".into(),
                value: None,
            },
        ]
    );
    assert!(records[1].headers.is_empty() && records[2].headers.is_empty());
}

// ---- putting a records section into a batch, as a producer does ----

fn section(batch: &RecordBatch) -> &[u8] {
    &batch.bytes()[HEADER_LEN..]
}

/// The batch's header with the codec bits set to `codec`, followed by `section`; unsealed.
fn with_section(batch: &RecordBatch, codec: u8, section: &[u8]) -> Vec<u8> {
    let mut raw = batch.bytes()[..HEADER_LEN].to_vec();
    let attributes = (i16::from_be_bytes([raw[21], raw[22]]) & !0x07) | i16::from(codec);
    raw[21..23].copy_from_slice(&attributes.to_be_bytes());
    raw.extend_from_slice(section);
    raw
}

/// Sets the batch length and the CRC (which covers the compressed bytes) and validates.
fn seal(mut raw: Vec<u8>) -> RecordBatch {
    let batch_length = i32::try_from(raw.len() - 12).expect("small batch");
    raw[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&raw[21..]);
    raw[17..21].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::parse(Bytes::from(raw)).expect("sealed batch parses")
}

fn compressed(
    batch: &RecordBatch,
    codec: u8,
    compress: impl FnOnce(&[u8]) -> Vec<u8>,
) -> RecordBatch {
    seal(with_section(batch, codec, &compress(section(batch))))
}

// ---- encoders: the crates' own, and framings built by hand from their specs ----

type Encoder = fn(&[u8]) -> Vec<u8>;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("to a vec");
    enc.finish().expect("to a vec")
}

fn raw_snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("small input")
}

fn lz4(data: &[u8], info: lz4_flex::frame::FrameInfo) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(data).expect("to a vec");
    enc.finish().expect("to a vec")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// snappy-java's stream: `\x82SNAPPY\0`, version 1 and compatible version 1 (big-endian i32s),
/// then each block behind its big-endian length.
fn xerial(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for block in blocks {
        out.extend_from_slice(&u32::try_from(block.len()).expect("small").to_be_bytes());
        out.extend_from_slice(block);
    }
    out
}

/// A raw snappy block of literals only (format_description.txt): the decoded length as an
/// unsigned LEB128 varint, then literals of at most 60 bytes, each behind the tag `(len-1) << 2`.
fn snappy_literals(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut len = data.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    for chunk in data.chunks(60) {
        out.push(((chunk.len() - 1) as u8) << 2);
        out.extend_from_slice(chunk);
    }
    out
}

/// One gzip member (RFC 1952) holding DEFLATE stored blocks (RFC 1951 3.2.4).
fn gzip_stored_member(data: &[u8]) -> Vec<u8> {
    // ID1 ID2, CM = 8 (deflate), no flags, no mtime, no extra flags, OS = 255 (unknown).
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = data.chunks(0xffff).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len())); // BFINAL, BTYPE = 00 (stored)
        let len = u16::try_from(chunk.len()).expect("at most 0xffff");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32_ieee(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The gzip trailer's CRC-32 (ISO 3309, reflected polynomial 0xEDB88320), bit by bit.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---- each codec gives the records back ----

#[test]
fn gzip_batch_expands_to_its_records() {
    let batch = compressed(&sample(), GZIP, gzip);
    assert_eq!(batch.header().compression(), GZIP);
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn gzip_members_built_from_rfc_1952_expand_to_the_records() {
    // Two members back to back, which Java's GZIPInputStream reads as one stream.
    let plain = sample();
    let (a, b) = section(&plain).split_at(40);
    let mut payload = gzip_stored_member(a);
    payload.extend_from_slice(&gzip_stored_member(b));
    let batch = seal(with_section(&plain, GZIP, &payload));
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn snappy_java_stream_expands_to_its_records() {
    let plain = sample();
    let (a, b) = section(&plain).split_at(50);
    let batch = compressed(&plain, SNAPPY, |_| xerial(&[raw_snappy(a), raw_snappy(b)]));
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn snappy_java_stream_built_by_hand_expands_to_the_records() {
    let plain = sample();
    let (a, b) = section(&plain).split_at(70);
    let payload = xerial(&[snappy_literals(a), snappy_literals(b)]);
    let batch = seal(with_section(&plain, SNAPPY, &payload));
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn raw_snappy_block_without_java_framing_expands_to_its_records() {
    // What some librdkafka-based producers send.
    let batch = compressed(&sample(), SNAPPY, raw_snappy);
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn published_snappy_java_vector_decodes() {
    // snappy-java's own example encoding of "foobar\n", and our hand encoder agrees with it.
    let vector: &[u8] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\
                          \x00\x00\x00\x09\x07\x18foobar\n";
    assert_eq!(xerial(&[snappy_literals(b"foobar\n")]), vector);
    let out = Compression::Snappy.decompress(Bytes::from_static(vector), 64);
    assert_eq!(out.unwrap(), &b"foobar\n"[..]);
}

#[test]
fn lz4_frame_expands_to_its_records() {
    // The defaults match Kafka's Java writer: independent 64 KiB blocks, no content checksum.
    let batch = compressed(&sample(), LZ4, |s| lz4(s, Default::default()));
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn lz4_frame_of_linked_blocks_spanning_several_blocks_expands() {
    // librdkafka's liblz4 links blocks; 150 KB of records need three 64 KiB blocks.
    use lz4_flex::frame::{BlockMode, FrameInfo};
    let mut seed = 7u32;
    let mut b = BatchBuilder::new();
    for i in 0..3 {
        let value: Vec<u8> = (0..50_000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                b'a' + (seed >> 28) as u8
            })
            .collect();
        b.push(Record::new(None, Some(Bytes::from(value)), 2000 + i));
    }
    let plain = b.build().expect("non-empty");
    let info = FrameInfo::new()
        .block_mode(BlockMode::Linked)
        .content_checksum(true);
    let batch = compressed(&plain, LZ4, |s| lz4(s, info));
    assert_eq!(batch.records().unwrap(), plain.records().unwrap());
}

#[test]
fn lz4_reference_tool_frame_decodes() {
    // `lz4 -BD` 1.9.4 output for "kafka mqtt amqp, one log; " four times: content checksum set.
    const FRAME: &[u8] =
        b"\x04\x22\x4d\x18\x64\x40\xa7\x25\x00\x00\x00\xff\x0bkafka mqtt amqp, one \
                           log; \x1a\x00\x36\x50log; \x00\x00\x00\x00\xd1\xee\x0c\x54";
    let out = Compression::Lz4.decompress(Bytes::from_static(FRAME), 1024);
    assert_eq!(
        out.unwrap(),
        "kafka mqtt amqp, one log; ".repeat(4).as_bytes()
    );
}

#[test]
fn zstd_frame_expands_to_its_records() {
    let batch = compressed(&sample(), ZSTD, zstd);
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn zstd_frames_and_skippable_frames_decode_as_one_stream() {
    let plain = sample();
    let (a, b) = section(&plain).split_at(60);
    let mut payload = zstd(a);
    // A skippable frame: magic 0x184D2A5?, little-endian length, then that many ignored bytes.
    payload.extend_from_slice(&0x184d_2a53u32.to_le_bytes());
    payload.extend_from_slice(&3u32.to_le_bytes());
    payload.extend_from_slice(b"xyz");
    payload.extend_from_slice(&zstd(b));
    let batch = seal(with_section(&plain, ZSTD, &payload));
    assert_sample_records(&batch.records().unwrap());
}

#[test]
fn zstd_reference_tool_frame_with_checksum_decodes() {
    // `zstd --check` 1.5.4 output for "kafka mqtt amqp, one log; " four times.
    const FRAME: &[u8] = b"\x28\xb5\x2f\xfd\x24\x68\x0d\x01\x00\xd0kafka mqtt amqp, one log; \
                           \x01\x00\x6e\xa3\x73\x0c\x2e\x09\xcd\xac";
    let out = Compression::Zstd.decompress(Bytes::from_static(FRAME), 1024);
    assert_eq!(
        out.unwrap(),
        "kafka mqtt amqp, one log; ".repeat(4).as_bytes()
    );
}

// ---- the size bound ----

fn zeros_batch(len: usize) -> RecordBatch {
    let mut b = BatchBuilder::new();
    b.push(Record::new(None, Some(Bytes::from(vec![0u8; len])), 0));
    b.build().expect("non-empty")
}

#[test]
fn every_codec_refuses_to_expand_past_the_limit() {
    let plain = zeros_batch(256 * 1024);
    let cases: [(u8, Compression, Encoder); 5] = [
        (GZIP, Compression::Gzip, gzip),
        (SNAPPY, Compression::Snappy, raw_snappy),
        (SNAPPY, Compression::Snappy, |s| xerial(&[raw_snappy(s)])),
        (LZ4, Compression::Lz4, |s| lz4(s, Default::default())),
        (ZSTD, Compression::Zstd, zstd),
    ];
    for (id, codec, compress) in cases {
        let batch = compressed(&plain, id, compress);
        assert!(batch.len() < 64 * 1024, "{codec} compresses zeros");
        assert_eq!(
            batch.records_limited(64 * 1024),
            Err(RecordsError::TooLarge {
                codec,
                limit: 64 * 1024
            })
        );
        assert_eq!(batch.records_limited(1024 * 1024).unwrap().len(), 1);
    }
}

#[test]
fn default_limit_refuses_a_snappy_block_declaring_100_mib() {
    let mut block = Vec::new();
    let mut len = 100usize << 20;
    while len >= 0x80 {
        block.push((len as u8) | 0x80);
        len >>= 7;
    }
    block.push(len as u8);
    let batch = seal(with_section(&sample(), SNAPPY, &block));
    assert_eq!(
        batch.records(),
        Err(RecordsError::TooLarge {
            codec: Compression::Snappy,
            limit: DEFAULT_MAX_RECORDS_BYTES
        })
    );
}

#[test]
fn default_limit_stops_a_gzip_bomb() {
    // 65 members of 1 MiB of zeros each: a 70 KB payload that would expand to 65 MiB.
    let member = gzip(&vec![0u8; 1 << 20]);
    let payload = member.repeat(65);
    let batch = seal(with_section(&sample(), GZIP, &payload));
    assert!(batch.len() < 128 * 1024);
    assert!(matches!(
        batch.records(),
        Err(RecordsError::TooLarge {
            codec: Compression::Gzip,
            ..
        })
    ));
}

// ---- corrupt payloads are errors, never panics ----

fn sample_payloads() -> Vec<(u8, Vec<u8>)> {
    let s = section(&sample()).to_vec();
    vec![
        (GZIP, gzip(&s)),
        (SNAPPY, raw_snappy(&s)),
        (SNAPPY, xerial(&[raw_snappy(&s)])),
        (LZ4, lz4(&s, Default::default())),
        (ZSTD, zstd(&s)),
    ]
}

#[test]
fn truncated_payload_is_an_error_for_every_codec() {
    let plain = sample();
    for (codec, payload) in sample_payloads() {
        for cut in [1, payload.len() / 2, payload.len() - 1] {
            let batch = seal(with_section(&plain, codec, &payload[..cut]));
            // lz4_flex, unlike Kafka's reader, takes a frame cut inside its end mark as ended;
            // every data byte is there, so the records still come back whole.
            let end_mark_only = codec == LZ4 && cut == payload.len() - 1;
            assert_eq!(
                batch.records().is_ok(),
                end_mark_only,
                "codec {codec} cut at {cut}"
            );
        }
    }
}

#[test]
fn no_single_byte_corruption_panics() {
    // The CRC is resealed over each corruption, as a buggy producer would have sent it.
    let plain = sample();
    for (codec, payload) in sample_payloads() {
        for at in 0..payload.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = payload.clone();
                bad[at] ^= flip;
                let batch = seal(with_section(&plain, codec, &bad));
                let _ = batch.records_limited(1 << 20);
            }
        }
    }
}

#[test]
fn corrupt_gzip_reports_the_codec() {
    let plain = sample();
    let mut payload = gzip(section(&plain));
    payload[0] = 0; // no longer a gzip magic
    let err = seal(with_section(&plain, GZIP, &payload))
        .records()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::Corrupt {
                codec: Compression::Gzip,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn codec_five_is_unknown() {
    let batch = seal(with_section(&sample(), 5, section(&sample())));
    assert_eq!(batch.records(), Err(RecordsError::UnknownCodec(5)));
}

// ---- record parsing trusts no length or count ----

fn record_bytes(offset_delta: i32, header_count: i32) -> Vec<u8> {
    let mut body = vec![0]; // attributes
    put_varint(&mut body, 0); // timestamp delta (a varlong, same encoding)
    put_varint(&mut body, offset_delta);
    put_varint(&mut body, -1); // null key
    put_varint(&mut body, -1); // null value
    put_varint(&mut body, header_count);
    let mut out = Vec::new();
    put_varint(&mut out, body.len() as i32);
    out.extend_from_slice(&body);
    out
}

fn set_counts(raw: &mut [u8], last_offset_delta: i32, record_count: i32) {
    raw[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    raw[57..61].copy_from_slice(&record_count.to_be_bytes());
}

#[test]
fn huge_record_count_fails_without_reserving_for_it() {
    let mut raw = with_section(&sample(), 0, &record_bytes(0, 0));
    set_counts(&mut raw, i32::MAX, i32::MAX);
    let err = seal(raw).records().unwrap_err();
    assert!(
        matches!(err, RecordsError::Malformed { at: 7, .. }),
        "{err}"
    );
}

#[test]
fn huge_header_count_fails_without_reserving_for_it() {
    let mut raw = with_section(&sample(), 0, &record_bytes(0, i32::MAX));
    set_counts(&mut raw, 0, 1);
    assert!(matches!(
        seal(raw).records(),
        Err(RecordsError::Malformed { .. })
    ));
}

#[test]
fn offset_delta_outside_the_batch_is_malformed() {
    let mut raw = with_section(&sample(), 0, &record_bytes(5, 0));
    set_counts(&mut raw, 0, 1);
    let err = seal(raw).records().unwrap_err();
    assert_eq!(
        err,
        RecordsError::Malformed {
            at: 1,
            what: "offset delta outside the batch"
        }
    );
}

#[test]
fn bytes_after_the_last_record_are_malformed() {
    let mut section = record_bytes(0, 0);
    section.push(0);
    let mut raw = with_section(&sample(), 0, &section);
    set_counts(&mut raw, 0, 1);
    assert!(matches!(
        seal(raw).records(),
        Err(RecordsError::Malformed { at: 7, .. })
    ));
}

#[test]
fn log_append_time_batch_records_carry_the_append_time() {
    let batch = compressed(&sample(), ZSTD, zstd).with_log_append_time(77_000);
    let stamps: Vec<i64> = batch
        .records()
        .unwrap()
        .iter()
        .map(|r| r.timestamp_ms)
        .collect();
    assert_eq!(stamps, [77_000; 3]);
}
