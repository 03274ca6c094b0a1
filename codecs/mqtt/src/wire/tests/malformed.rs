//! One test per validation rule: each feeds the smallest packet that breaks it and checks the
//! kind of error (which decides the reason code the connection reports).

use super::{cat, decode_error, decode_whole};
use crate::wire::ProtocolVersion::{V5, V31, V311};
use crate::wire::*;

#[track_caller]
fn assert_malformed(bytes: &[u8], version: ProtocolVersion) {
    let error = decode_error(bytes, version);
    assert!(matches!(error, DecodeError::Malformed(_)), "got {error:?}");
}

#[track_caller]
fn assert_protocol_error(bytes: &[u8], version: ProtocolVersion) {
    let error = decode_error(bytes, version);
    assert!(matches!(error, DecodeError::Protocol(_)), "got {error:?}");
}

/// A 3.1.1 CONNECT with the given flags byte, keep-alive 60, an empty client id, then `rest`.
fn v311_connect(flags: u8, rest: &[u8]) -> Vec<u8> {
    let body = cat(&[b"\x00\x04MQTT\x04", &[flags], b"\x00\x3c\x00\x00", rest]);
    cat(&[&[0x10, body.len() as u8], &body])
}

/// A v5 CONNECT with the given flags, property section and payload after the client id.
fn v5_connect(flags: u8, properties: &[u8], rest: &[u8]) -> Vec<u8> {
    let body = cat(&[
        b"\x00\x04MQTT\x05",
        &[flags],
        b"\x00\x3c",
        &[properties.len() as u8],
        properties,
        b"\x00\x00",
        rest,
    ]);
    cat(&[&[0x10, body.len() as u8], &body])
}

/// A v5 QoS 0 PUBLISH to "t" with the given property section and no payload.
fn v5_publish(properties: &[u8]) -> Vec<u8> {
    let body = cat(&[b"\x00\x01t", &[properties.len() as u8], properties]);
    cat(&[&[0x30, body.len() as u8], &body])
}

/// A SUBSCRIBE (packet id 1) to "a" with the given options byte, and v5 properties if some.
fn subscribe(options: u8, properties: Option<&[u8]>) -> Vec<u8> {
    let props = properties
        .map(|p| cat(&[&[p.len() as u8], p]))
        .unwrap_or_default();
    let body = cat(&[b"\x00\x01", &props, b"\x00\x01a", &[options]]);
    cat(&[&[0x82, body.len() as u8], &body])
}

// Fixed header (§2.1.3).

#[test]
fn pubrel_subscribe_unsubscribe_without_flags_0010_are_malformed() {
    assert_malformed(b"\x60\x02\x00\x01", V311);
    assert_malformed(b"\x80\x06\x00\x01\x00\x01a\x00", V311);
    assert_malformed(b"\xa0\x05\x00\x01\x00\x01a", V5);
}

#[test]
fn other_packets_with_flags_set_are_malformed() {
    assert_malformed(b"\x42\x02\x00\x01", V311);
    assert_malformed(b"\xc1\x00", V5);
    assert_malformed(&cat(&[&[0x11], &v311_connect(0x02, b"")[1..]]), V311);
}

#[test]
fn mqtt31_allows_dup_on_pubrel_but_311_does_not() {
    let pubrel = decode_whole(b"\x6a\x02\x00\x01", V31);
    assert!(matches!(
        pubrel,
        Packet::PubRel(PubResp { packet_id: 1, .. })
    ));
    assert_malformed(b"\x6a\x02\x00\x01", V311);
}

#[test]
fn reserved_packet_types_are_malformed() {
    assert_malformed(b"\x00\x00", V5);
    assert_malformed(b"\xf0\x00", V311);
}

#[test]
fn publish_with_qos_3_is_malformed() {
    assert_malformed(b"\x36\x05\x00\x01t\x00\x01", V311);
}

#[test]
fn publish_qos0_with_dup_is_malformed() {
    assert_malformed(b"\x38\x03\x00\x01t", V311);
}

// CONNECT (§3.1.2).

#[test]
fn connect_with_unknown_level_is_an_unsupported_version() {
    let level_6 = b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00";
    assert_eq!(
        decode_error(level_6, V5),
        DecodeError::UnsupportedProtocolVersion(6)
    );
    let mqisdp_4 = b"\x10\x0e\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x00";
    assert_eq!(
        decode_error(mqisdp_4, V311),
        DecodeError::UnsupportedProtocolVersion(4)
    );
}

#[test]
fn connect_with_wrong_protocol_name_is_refused() {
    assert_protocol_error(b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00", V311);
}

#[test]
fn connect_ignores_the_connection_version() {
    let packet = decode_whole(&v311_connect(0x02, b""), V5);
    let Packet::Connect(connect) = packet else {
        panic!("expected CONNECT");
    };
    assert_eq!(connect.version, V311);
}

#[test]
fn connect_reserved_flag_is_malformed() {
    assert_malformed(&v311_connect(0x03, b""), V311);
}

#[test]
fn will_qos_or_retain_without_will_flag_is_malformed() {
    assert_malformed(&v311_connect(0x02 | 0x08, b""), V311);
    assert_malformed(&v311_connect(0x02 | 0x20, b""), V311);
}

#[test]
fn will_qos_3_is_malformed() {
    assert_malformed(&v311_connect(0x1e, b"\x00\x01w\x00\x00"), V311);
}

#[test]
fn password_without_user_name_is_malformed_before_v5() {
    assert_malformed(&v311_connect(0x42, b"\x00\x01p"), V311);
    let mqtt31 = b"\x10\x11\x00\x06MQIsdp\x03\x42\x00\x3c\x00\x00\x00\x01p";
    assert_malformed(mqtt31, V31);
}

#[test]
fn password_without_user_name_is_allowed_in_v5() {
    let Packet::Connect(connect) = decode_whole(&v5_connect(0x42, b"", b"\x00\x01p"), V5) else {
        panic!("expected CONNECT");
    };
    assert_eq!(connect.username, None);
    assert_eq!(connect.password.as_deref(), Some(&b"p"[..]));
}

#[test]
fn connect_with_bytes_after_its_payload_is_malformed() {
    assert_malformed(&v311_connect(0x02, b"\x00"), V311);
}

#[test]
fn connect_missing_the_user_name_its_flag_announces_is_malformed() {
    assert_malformed(&v311_connect(0x82, b""), V311);
}

// Data representation (§1.5).

#[test]
fn invalid_utf8_in_a_topic_is_malformed() {
    assert_malformed(b"\x30\x04\x00\x02\xc3\x28", V311);
    // An encoded surrogate, U+D800.
    assert_malformed(b"\x30\x05\x00\x03\xed\xa0\x80", V311);
}

#[test]
fn null_character_in_a_string_is_malformed() {
    assert_malformed(b"\x30\x04\x00\x02a\x00", V311);
    assert_malformed(&v5_publish(b"\x26\x00\x01\x00\x00\x00"), V5);
}

#[test]
fn string_longer_than_the_packet_is_malformed() {
    assert_malformed(b"\x30\x03\x00\x05t", V311);
}

// Packet identifiers (§2.2.1).

#[test]
fn packet_id_0_is_a_protocol_error() {
    assert_protocol_error(b"\x32\x05\x00\x01t\x00\x00", V311);
    assert_protocol_error(b"\x82\x06\x00\x00\x00\x01a\x00", V311);
    assert_protocol_error(b"\xa2\x05\x00\x00\x00\x01a", V5);
}

// SUBSCRIBE and UNSUBSCRIBE (§3.8, §3.10).

#[test]
fn subscribe_without_a_topic_filter_is_a_protocol_error() {
    assert_protocol_error(b"\x82\x02\x00\x01", V311);
    assert_protocol_error(b"\x82\x03\x00\x01\x00", V5);
}

#[test]
fn unsubscribe_without_a_topic_filter_is_a_protocol_error() {
    assert_protocol_error(b"\xa2\x02\x00\x01", V311);
    assert_protocol_error(b"\xa2\x03\x00\x01\x00", V5);
}

#[test]
fn subscription_options_reserved_bits_are_malformed() {
    assert_malformed(&subscribe(0x40, Some(b"")), V5);
    assert_malformed(&subscribe(0x80, Some(b"")), V5);
}

#[test]
fn subscription_qos_3_is_malformed() {
    assert_malformed(&subscribe(0x03, Some(b"")), V5);
    assert_malformed(&subscribe(0x03, None), V311);
}

#[test]
fn retain_handling_3_is_a_protocol_error() {
    assert_protocol_error(&subscribe(0x30, Some(b"")), V5);
}

#[test]
fn v311_requested_qos_with_upper_bits_is_malformed() {
    // No Local does not exist before MQTT 5.
    assert_malformed(&subscribe(0x04, None), V311);
    assert_malformed(&subscribe(0x81, None), V311);
}

#[test]
fn suback_without_reason_codes_is_a_protocol_error() {
    assert_protocol_error(b"\x90\x02\x00\x01", V311);
}

// Properties (§2.2.2).

#[test]
fn unknown_property_is_malformed() {
    assert_malformed(&v5_publish(b"\x7f\x00"), V5);
    assert_malformed(&v5_publish(b"\x00\x00"), V5);
    // A two-byte identifier: none is defined.
    assert_malformed(&v5_publish(b"\x81\x01"), V5);
}

#[test]
fn property_not_allowed_in_the_packet_is_a_protocol_error() {
    // Session Expiry Interval belongs to CONNECT, CONNACK and DISCONNECT.
    assert_protocol_error(&v5_publish(b"\x11\x00\x00\x00\x01"), V5);
    // Topic Alias may not stand in a CONNECT.
    assert_protocol_error(&v5_connect(0x02, b"\x23\x00\x01", b""), V5);
}

#[test]
fn topic_alias_in_will_properties_is_a_protocol_error() {
    let will = b"\x03\x23\x00\x01\x00\x01w\x00\x00";
    assert_protocol_error(&v5_connect(0x06, b"", will), V5);
}

#[test]
fn single_valued_property_twice_is_a_protocol_error() {
    let twice = b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02";
    assert_protocol_error(&v5_publish(twice), V5);
    let two_identifiers = b"\x0b\x01\x0b\x02";
    assert_protocol_error(&subscribe(0x00, Some(two_identifiers)), V5);
}

#[test]
fn user_property_and_publish_subscription_identifier_may_repeat() {
    let props = b"\x26\x00\x01a\x00\x00\x26\x00\x01a\x00\x01b\x0b\x01\x0b\x02";
    let Packet::Publish(publish) = decode_whole(&v5_publish(props), V5) else {
        panic!("expected PUBLISH");
    };
    assert_eq!(
        publish.properties.user_properties,
        vec![("a".into(), "".into()), ("a".into(), "b".into())]
    );
    assert_eq!(publish.properties.subscription_identifiers, vec![1, 2]);
}

#[test]
fn property_length_past_the_packet_is_malformed() {
    assert_malformed(b"\x30\x05\x00\x01t\x05\x01", V5);
}

#[test]
fn property_length_ending_inside_a_property_is_malformed() {
    // Declares 2 bytes of properties, but Message Expiry Interval needs 5.
    assert_malformed(b"\x30\x09\x00\x01t\x02\x02\x00\x00\x00\x01", V5);
}

#[test]
fn subscription_identifier_0_is_a_protocol_error() {
    assert_protocol_error(&v5_publish(b"\x0b\x00"), V5);
    assert_protocol_error(&subscribe(0x00, Some(b"\x0b\x00")), V5);
}

#[test]
fn receive_maximum_0_is_a_protocol_error() {
    assert_protocol_error(&v5_connect(0x02, b"\x21\x00\x00", b""), V5);
}

#[test]
fn maximum_packet_size_0_is_a_protocol_error() {
    assert_protocol_error(&v5_connect(0x02, b"\x27\x00\x00\x00\x00", b""), V5);
}

#[test]
fn topic_alias_0_is_a_protocol_error() {
    assert_protocol_error(&v5_publish(b"\x23\x00\x00"), V5);
}

#[test]
fn authentication_data_without_a_method_is_a_protocol_error() {
    assert_protocol_error(&v5_connect(0x02, b"\x16\x00\x01x", b""), V5);
}

#[test]
fn request_problem_information_other_than_0_or_1_is_a_protocol_error() {
    assert_protocol_error(&v5_connect(0x02, b"\x17\x02", b""), V5);
}

// Lengths and reason codes of the short packets.

#[test]
fn bytes_after_the_declared_contents_are_malformed() {
    assert_malformed(b"\x40\x03\x00\x01\x00", V311);
    assert_malformed(b"\xb0\x03\x00\x01\x00", V311);
    assert_malformed(b"\xc0\x01\x00", V5);
    assert_malformed(b"\xe0\x01\x00", V311);
    assert_malformed(b"\x40\x06\x00\x01\x00\x00\xff\xff", V5);
    assert_malformed(b"\x20\x04\x00\x00\x00\x00", V5);
}

#[test]
fn reason_code_not_defined_for_the_packet_is_a_protocol_error() {
    // 0x92 (Packet Identifier not found) answers a PUBREL, not a PUBLISH.
    assert_protocol_error(b"\x40\x03\x00\x01\x92", V5);
    assert_protocol_error(b"\xf0\x01\x01", V5);
    assert_protocol_error(b"\xe0\x01\x18", V5);
}

#[test]
fn v311_connack_code_above_5_is_a_protocol_error() {
    assert_protocol_error(b"\x20\x02\x00\x06", V311);
}

#[test]
fn connack_reserved_flags_are_malformed() {
    assert_malformed(b"\x20\x02\x02\x00", V311);
}

#[test]
fn v5_acks_take_the_short_forms() {
    let reason_only = decode_whole(b"\x62\x03\x00\x09\x92", V5);
    let expected = PubResp {
        packet_id: 9,
        reason: reason::PACKET_IDENTIFIER_NOT_FOUND,
        ..Default::default()
    };
    assert_eq!(reason_only, Packet::PubRel(expected));
    let success = decode_whole(b"\x70\x02\x00\x09", V5);
    assert_eq!(
        success,
        Packet::PubComp(PubResp {
            packet_id: 9,
            ..Default::default()
        })
    );
}
