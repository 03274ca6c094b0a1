//! Framing: partial input, several packets in one read, the maximum packet size.

use bytes::{BufMut, BytesMut};

use super::{NO_LIMIT, decode_error, encode_to_vec};
use crate::wire::ProtocolVersion::{V5, V311};
use crate::wire::*;

/// Every strict prefix of `bytes` must ask for more input and leave the buffer as it was.
fn assert_prefixes_need_more(bytes: &[u8], version: ProtocolVersion) {
    for len in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..len]);
        assert_eq!(
            decode(&mut buf, version, NO_LIMIT),
            Ok(None),
            "prefix of {len} bytes"
        );
        assert_eq!(
            &buf[..],
            &bytes[..len],
            "prefix of {len} bytes was consumed"
        );
    }
}

#[test]
fn every_strict_prefix_of_a_connect_needs_more_bytes() {
    let connect = Packet::Connect(Box::new(Connect {
        version: V5,
        client_id: "client".into(),
        clean_start: false,
        keep_alive: 10,
        username: Some("user".into()),
        password: None,
        will: None,
        properties: ConnectProperties {
            receive_maximum: Some(5),
            ..Default::default()
        },
    }));
    assert_prefixes_need_more(&encode_to_vec(&connect, V5), V5);
}

#[test]
fn every_strict_prefix_of_a_long_publish_needs_more_bytes() {
    // 200 bytes of payload: a two-byte remaining length, so a prefix can end inside it.
    let publish = Packet::Publish(Publish {
        topic: "t".into(),
        payload: vec![7u8; 200].into(),
        ..Default::default()
    });
    let bytes = encode_to_vec(&publish, V311);
    assert_eq!(&bytes[..3], b"\x30\xcb\x01");
    assert_prefixes_need_more(&bytes, V311);
}

#[test]
fn two_packets_in_one_read_decode_one_at_a_time() {
    let first = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 1,
        topic: "a".into(),
        payload: "one".into(),
        ..Default::default()
    });
    let second = Packet::PingReq;
    let mut buf = BytesMut::new();
    encode(&first, V5, &mut buf);
    encode(&second, V5, &mut buf);
    buf.put_u8(0x30); // the first byte of a third packet

    assert_eq!(decode(&mut buf, V5, NO_LIMIT), Ok(Some(first)));
    assert_eq!(decode(&mut buf, V5, NO_LIMIT), Ok(Some(second)));
    assert_eq!(decode(&mut buf, V5, NO_LIMIT), Ok(None));
    assert_eq!(&buf[..], b"\x30");
}

#[test]
fn empty_buffer_needs_more_bytes() {
    let mut buf = BytesMut::new();
    assert_eq!(decode(&mut buf, V5, NO_LIMIT), Ok(None));
}

#[test]
fn oversized_packet_is_refused_from_its_fixed_header_alone() {
    // A PUBLISH announcing 200 MB, of which only the fixed header has arrived.
    let mut buf = BytesMut::from(&b"\x30\x80\x80\x80\x64"[..]);
    let announced = 200 * 1024 * 1024;
    assert_eq!(
        decode(&mut buf, V311, 1024 * 1024),
        Err(DecodeError::PacketTooLarge {
            size: 5 + announced,
            max: 1024 * 1024,
        })
    );
}

#[test]
fn packet_exactly_at_the_maximum_is_accepted() {
    let bytes = b"\x30\x06\x00\x01tabc";
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(decode(&mut buf, V311, 8), Ok(Some(_))));
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode(&mut buf, V311, 7),
        Err(DecodeError::PacketTooLarge { size: 8, max: 7 })
    );
}

#[test]
fn remaining_length_of_five_bytes_is_malformed() {
    let error = decode_error(b"\x30\xff\xff\xff\xff\x01", V311);
    assert!(matches!(error, DecodeError::Malformed(_)), "{error}");
}

#[test]
fn remaining_length_with_needless_bytes_is_malformed() {
    // 0 written in two bytes: MQTT 5 §1.5.5 requires the shortest encoding.
    let error = decode_error(b"\xc0\x80\x00", V311);
    assert!(matches!(error, DecodeError::Malformed(_)), "{error}");
}

#[test]
fn remaining_length_at_its_maximum_is_read() {
    let mut buf = BytesMut::from(&b"\x30\xff\xff\xff\x7f"[..]);
    assert_eq!(
        decode(&mut buf, V311, 1),
        Err(DecodeError::PacketTooLarge {
            size: 5 + MAX_VARIABLE_BYTE_INTEGER as usize,
            max: 1,
        })
    );
}

#[test]
fn bad_fixed_header_flags_are_refused_before_the_body_arrives() {
    let mut buf = BytesMut::from(&b"\x36"[..]);
    assert!(matches!(
        decode(&mut buf, V311, NO_LIMIT),
        Err(DecodeError::Malformed(_))
    ));
}
