//! Property-based tests: round trips of arbitrary packets, and decoding arbitrary bytes.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::strategies::{packet, publish, version, versioned_packet};
use super::{NO_LIMIT, encode_to_vec};
use crate::wire::*;

/// Decodes until `buf` runs dry or fails, checking the framing contract on the way: a packet
/// consumes bytes, and "need more" leaves the buffer untouched.
fn decode_all(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max: usize,
) -> Result<(), TestCaseError> {
    loop {
        let before = buf.clone();
        match decode(buf, version, max) {
            Ok(Some(_)) => prop_assert!(buf.len() < before.len(), "a packet consumed nothing"),
            Ok(None) => {
                prop_assert_eq!(&*buf, &before, "an incomplete packet consumed bytes");
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

fn encode_variable_byte_integer(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn encoded_packets_decode_to_themselves((version, packet) in versioned_packet()) {
        let bytes = encode_to_vec(&packet, version);
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode(&mut buf, version, bytes.len()), Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_strict_prefix_of_a_packet_needs_more_bytes(
        (version, packet) in versioned_packet(),
    ) {
        let bytes = encode_to_vec(&packet, version);
        for len in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..len]);
            prop_assert_eq!(decode(&mut buf, version, NO_LIMIT), Ok(None), "prefix {}", len);
            prop_assert_eq!(&buf[..], &bytes[..len]);
        }
    }

    #[test]
    fn back_to_back_packets_decode_one_at_a_time(
        (version, first, second) in version()
            .prop_flat_map(|version| (Just(version), packet(version), packet(version))),
    ) {
        let mut buf = BytesMut::new();
        encode(&first, version, &mut buf);
        encode(&second, version, &mut buf);
        let second_len = encoded_len(&second, version);
        prop_assert_eq!(decode(&mut buf, version, NO_LIMIT), Ok(Some(first)));
        prop_assert_eq!(buf.len(), second_len);
        prop_assert_eq!(decode(&mut buf, version, NO_LIMIT), Ok(Some(second)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn v5_publish_encoded_for_v311_loses_only_its_properties(
        packet in publish(true),
    ) {
        let Packet::Publish(publish) = packet else {
            return Err(TestCaseError::fail("the strategy makes PUBLISH packets"));
        };
        let bytes = encode_to_vec(&Packet::Publish(publish.clone()), ProtocolVersion::V311);
        let mut buf = BytesMut::from(&bytes[..]);
        let expected = Publish { properties: PublishProperties::default(), ..publish };
        prop_assert_eq!(
            decode(&mut buf, ProtocolVersion::V311, NO_LIMIT),
            Ok(Some(Packet::Publish(expected)))
        );
    }

    #[test]
    fn a_publish_from_borrowed_parts_is_the_same_bytes_as_the_packet(
        packet in publish(true),
        v5 in any::<bool>(),
        expiry in proptest::option::of(any::<u32>()),
        alias in proptest::option::of(1u16..),
        ids in vec(1u32..268_435_455, 0..3),
    ) {
        let Packet::Publish(publish) = packet else {
            return Err(TestCaseError::fail("the strategy makes PUBLISH packets"));
        };
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        let parts = OutgoingPublish {
            dup: publish.dup,
            qos: publish.qos,
            retain: publish.retain,
            topic: &publish.topic,
            packet_id: publish.packet_id,
            payload: &publish.payload,
            properties: &publish.properties,
            message_expiry_interval: expiry,
            topic_alias: alias,
            subscription_identifiers: &ids,
        };
        let whole = Publish {
            properties: PublishProperties {
                message_expiry_interval: expiry,
                topic_alias: alias,
                subscription_identifiers: ids.clone(),
                ..publish.properties.clone()
            },
            ..publish.clone()
        };
        let expected = encode_to_vec(&Packet::Publish(whole), version);
        let mut out = BytesMut::new();
        prop_assert!(encode_publish(&parts, version, expected.len(), &mut out));
        prop_assert_eq!(&out[..], &expected[..]);
        let mut short = BytesMut::new();
        prop_assert!(!encode_publish(&parts, version, expected.len() - 1, &mut short));
        prop_assert!(short.is_empty(), "nothing written when the packet is too large");
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..300),
        version in version(),
        max in prop_oneof![0..300usize, Just(NO_LIMIT)],
    ) {
        decode_all(&mut BytesMut::from(&bytes[..]), version, max)?;
    }

    #[test]
    fn complete_frames_of_arbitrary_content_decode_or_fail(
        first_byte in any::<u8>(),
        body in vec(any::<u8>(), 0..200),
        version in version(),
    ) {
        let mut frame = vec![first_byte];
        encode_variable_byte_integer(body.len(), &mut frame);
        frame.extend_from_slice(&body);
        let mut buf = BytesMut::from(&frame[..]);
        match decode(&mut buf, version, NO_LIMIT) {
            Ok(Some(_)) => prop_assert!(buf.is_empty(), "a whole frame must be consumed"),
            Ok(None) => prop_assert!(false, "a complete frame asked for more bytes"),
            Err(_) => {}
        }
    }

    #[test]
    fn corrupted_packets_never_panic(
        (version, packet) in versioned_packet(),
        flips in vec((any::<Index>(), 1..=255u8), 1..4),
    ) {
        let mut bytes = encode_to_vec(&packet, version);
        for (at, mask) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
        }
        decode_all(&mut BytesMut::from(&bytes[..]), version, NO_LIMIT)?;
    }
}
