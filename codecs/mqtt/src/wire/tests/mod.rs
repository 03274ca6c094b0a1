//! Tests of the codec as a whole: byte-exact vectors, framing, one test per validation rule,
//! and property-based round trips.

mod framing;
mod malformed;
mod roundtrip;
mod strategies;
mod vectors;

use bytes::BytesMut;

use super::{DecodeError, Packet, ProtocolVersion, decode, encode, encoded_len};

/// Large enough never to get in the way of tests that are not about the limit.
const NO_LIMIT: usize = 1 << 20;

/// Decodes `bytes`, which must hold exactly one whole packet.
fn decode_whole(bytes: &[u8], version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, NO_LIMIT)
        .expect("valid packet")
        .expect("complete packet");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    packet
}

/// The error decoding `bytes` gives.
fn decode_error(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, version, NO_LIMIT) {
        Err(e) => e,
        Ok(packet) => panic!("expected an error, decoded {packet:?}"),
    }
}

fn encode_to_vec(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    assert_eq!(
        out.len(),
        encoded_len(packet, version),
        "encoded_len disagrees"
    );
    out.to_vec()
}

/// Concatenates byte slices, so vectors can be written field by field.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
