//! Byte-exact vectors, written field by field from the specifications and from what common
//! clients and brokers put on the wire. Each is checked in both directions where the codec
//! would produce the same bytes.

use bytes::Bytes;

use super::{cat, decode_whole, encode_to_vec};
use crate::wire::ProtocolVersion::{V5, V31, V311};
use crate::wire::*;

/// What `mosquitto_pub -t test -m hello` sends first: MQTT 3.1.1, clean session, keep-alive 60,
/// a generated client id.
const MOSQUITTO_PUB_CONNECT: &[u8] =
    b"\x10\x21\x00\x04MQTT\x04\x02\x00\x3c\x00\x15mosq-Ab3dEf6hIj9kLm2n";

#[test]
fn mosquitto_pub_connect_decodes() {
    let packet = decode_whole(MOSQUITTO_PUB_CONNECT, V311);
    let expected = Connect {
        version: V311,
        client_id: "mosq-Ab3dEf6hIj9kLm2n".into(),
        clean_start: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
        properties: ConnectProperties::default(),
    };
    assert_eq!(packet, Packet::Connect(Box::new(expected.clone())));
    assert_eq!(
        encode_to_vec(&Packet::Connect(Box::new(expected)), V311),
        MOSQUITTO_PUB_CONNECT
    );
}

#[test]
fn mosquitto_pub_publish_decodes_with_its_payload() {
    let bytes = b"\x30\x0b\x00\x04testhello";
    let expected = Packet::Publish(Publish {
        topic: "test".into(),
        payload: Bytes::from_static(b"hello"),
        ..Default::default()
    });
    assert_eq!(decode_whole(bytes, V311), expected);
    assert_eq!(encode_to_vec(&expected, V311), bytes);
}

#[test]
fn mqtt31_connect_uses_mqisdp_and_level_3() {
    let bytes = b"\x10\x10\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02c1";
    let expected = Connect {
        version: V31,
        client_id: "c1".into(),
        clean_start: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
        properties: ConnectProperties::default(),
    };
    let packet = Packet::Connect(Box::new(expected));
    // The connection's level is not known before CONNECT: the packet names its own.
    assert_eq!(decode_whole(bytes, V5), packet);
    assert_eq!(encode_to_vec(&packet, V5), bytes);
}

fn v5_connect_bytes() -> Vec<u8> {
    cat(&[
        b"\x10\x37",
        b"\x00\x04MQTT\x05",
        // user name, password, will QoS 1, will, clean start
        b"\xce",
        b"\x00\x1e",
        // properties: session expiry 3600, receive maximum 20, topic alias maximum 10, k=v
        b"\x12",
        b"\x11\x00\x00\x0e\x10",
        b"\x21\x00\x14",
        b"\x22\x00\x0a",
        b"\x26\x00\x01k\x00\x01v",
        b"\x00\x02c1",
        // will properties: will delay 5, payload format indicator 1
        b"\x07\x18\x00\x00\x00\x05\x01\x01",
        b"\x00\x01w",
        b"\x00\x03bye",
        b"\x00\x01u",
        b"\x00\x01p",
    ])
}

fn v5_connect() -> Connect {
    Connect {
        version: V5,
        client_id: "c1".into(),
        clean_start: true,
        keep_alive: 30,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            delay_interval: 5,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                ..Default::default()
            },
        }),
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        },
    }
}

#[test]
fn v5_connect_with_properties_and_will_decodes() {
    let packet = Packet::Connect(Box::new(v5_connect()));
    assert_eq!(decode_whole(&v5_connect_bytes(), V311), packet);
}

#[test]
fn v5_connect_with_properties_and_will_encodes() {
    let packet = Packet::Connect(Box::new(v5_connect()));
    assert_eq!(encode_to_vec(&packet, V5), v5_connect_bytes());
}

fn v5_publish_qos1() -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "a/b".into(),
        packet_id: 10,
        payload: Bytes::from_static(b"hi"),
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            ..Default::default()
        },
        ..Default::default()
    })
}

const V5_PUBLISH_QOS1: &[u8] =
    b"\x32\x14\x00\x03a/b\x00\x0a\x0a\x01\x01\x02\x00\x00\x00\x3c\x23\x00\x03hi";

#[test]
fn v5_publish_qos1_with_properties_round_trips_byte_exact() {
    assert_eq!(decode_whole(V5_PUBLISH_QOS1, V5), v5_publish_qos1());
    assert_eq!(encode_to_vec(&v5_publish_qos1(), V5), V5_PUBLISH_QOS1);
}

#[test]
fn publish_for_v311_drops_the_properties() {
    assert_eq!(
        encode_to_vec(&v5_publish_qos1(), V311),
        b"\x32\x09\x00\x03a/b\x00\x0ahi"
    );
}

#[test]
fn publish_payload_shares_the_read_buffer() {
    let mut buf = bytes::BytesMut::from(V5_PUBLISH_QOS1);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, V5, 1024).expect("valid") else {
        panic!("expected a PUBLISH");
    };
    assert_eq!(
        p.payload.as_ptr() as usize,
        start + V5_PUBLISH_QOS1.len() - 2
    );
}

#[test]
fn v311_suback_carries_granted_qos_and_failure() {
    let bytes = b"\x90\x05\x00\x07\x00\x01\x80";
    let expected = Packet::SubAck(SubAck {
        packet_id: 7,
        reasons: vec![0, 1, 0x80],
        ..Default::default()
    });
    assert_eq!(decode_whole(bytes, V311), expected);
    assert_eq!(encode_to_vec(&expected, V311), bytes);
}

#[test]
fn v5_suback_failure_codes_collapse_to_0x80_for_v311() {
    let packet = Packet::SubAck(SubAck {
        packet_id: 7,
        reasons: vec![reason::GRANTED_QOS_2, reason::NOT_AUTHORIZED],
        properties: AckProperties {
            reason_string: Some("no".into()),
            ..Default::default()
        },
    });
    assert_eq!(
        encode_to_vec(&packet, V5),
        b"\x90\x0a\x00\x07\x05\x1f\x00\x02no\x02\x87"
    );
    assert_eq!(encode_to_vec(&packet, V311), b"\x90\x04\x00\x07\x02\x80");
}

#[test]
fn v5_subscribe_encodes_options_and_identifier() {
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "a/#".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            },
        )],
        properties: SubscribeProperties {
            subscription_identifier: Some(200),
            ..Default::default()
        },
    });
    let bytes = b"\x82\x0c\x00\x01\x03\x0b\xc8\x01\x00\x03a/#\x2e";
    assert_eq!(encode_to_vec(&packet, V5), bytes);
    assert_eq!(decode_whole(bytes, V5), packet);
}

#[test]
fn v5_puback_success_without_properties_uses_the_short_form() {
    let packet = Packet::PubAck(PubResp {
        packet_id: 7,
        ..Default::default()
    });
    assert_eq!(encode_to_vec(&packet, V5), b"\x40\x02\x00\x07");
}

#[test]
fn v5_puback_with_reason_only_has_remaining_length_3() {
    let packet = Packet::PubAck(PubResp {
        packet_id: 7,
        reason: reason::NO_MATCHING_SUBSCRIBERS,
        ..Default::default()
    });
    assert_eq!(encode_to_vec(&packet, V5), b"\x40\x03\x00\x07\x10");
    assert_eq!(decode_whole(b"\x40\x03\x00\x07\x10", V5), packet);
}

#[test]
fn v5_puback_with_explicit_empty_properties_decodes() {
    let packet = decode_whole(b"\x40\x04\x00\x07\x00\x00", V5);
    assert_eq!(
        packet,
        Packet::PubAck(PubResp {
            packet_id: 7,
            ..Default::default()
        })
    );
}

#[test]
fn v311_acks_drop_reason_codes() {
    let resp = PubResp {
        packet_id: 7,
        reason: reason::PACKET_IDENTIFIER_NOT_FOUND,
        ..Default::default()
    };
    assert_eq!(
        encode_to_vec(&Packet::PubRel(resp.clone()), V311),
        b"\x62\x02\x00\x07"
    );
    assert_eq!(
        encode_to_vec(&Packet::PubComp(resp), V311),
        b"\x70\x02\x00\x07"
    );
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: 7,
        reasons: vec![reason::NO_SUBSCRIPTION_EXISTED],
        ..Default::default()
    });
    assert_eq!(encode_to_vec(&unsuback, V311), b"\xb0\x02\x00\x07");
    assert_eq!(encode_to_vec(&unsuback, V5), b"\xb0\x04\x00\x07\x00\x11");
}

#[test]
fn v5_disconnect_normal_is_two_bytes() {
    let packet = Packet::Disconnect(Disconnect::default());
    assert_eq!(encode_to_vec(&packet, V5), b"\xe0\x00");
    assert_eq!(encode_to_vec(&packet, V311), b"\xe0\x00");
    assert_eq!(decode_whole(b"\xe0\x00", V5), packet);
}

#[test]
fn v5_disconnect_session_taken_over_decodes_as_a_broker_sends_it() {
    let expected = Packet::Disconnect(Disconnect {
        reason: reason::SESSION_TAKEN_OVER,
        ..Default::default()
    });
    assert_eq!(decode_whole(b"\xe0\x02\x8e\x00", V5), expected);
    assert_eq!(decode_whole(b"\xe0\x01\x8e", V5), expected);
    assert_eq!(encode_to_vec(&expected, V5), b"\xe0\x01\x8e");
}

#[test]
fn v5_auth_with_remaining_length_0_is_success() {
    assert_eq!(decode_whole(b"\xf0\x00", V5), Packet::Auth(Auth::default()));
}

#[test]
fn connack_vectors() {
    let accepted = Packet::ConnAck(ConnAck {
        session_present: true,
        ..Default::default()
    });
    assert_eq!(encode_to_vec(&accepted, V311), b"\x20\x02\x01\x00");
    // 3.1 has no Session Present flag.
    assert_eq!(encode_to_vec(&accepted, V31), b"\x20\x02\x00\x00");
    let v5 = Packet::ConnAck(ConnAck {
        session_present: false,
        code: reason::SUCCESS,
        properties: ConnAckProperties {
            receive_maximum: Some(100),
            retain_available: Some(false),
            ..Default::default()
        },
    });
    let bytes = b"\x20\x08\x00\x00\x05\x21\x00\x64\x25\x00";
    assert_eq!(encode_to_vec(&v5, V5), bytes);
    assert_eq!(decode_whole(bytes, V5), v5);
}

#[test]
fn ping_vectors() {
    assert_eq!(encode_to_vec(&Packet::PingReq, V311), b"\xc0\x00");
    assert_eq!(encode_to_vec(&Packet::PingResp, V5), b"\xd0\x00");
    assert_eq!(decode_whole(b"\xc0\x00", V31), Packet::PingReq);
    assert_eq!(decode_whole(b"\xd0\x00", V5), Packet::PingResp);
}

#[test]
fn v311_unsubscribe_vector() {
    let bytes = b"\xa2\x0a\x00\x02\x00\x01a\x00\x03b/c";
    let packet = Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["a".into(), "b/c".into()],
        user_properties: Vec::new(),
    });
    assert_eq!(decode_whole(bytes, V311), packet);
    assert_eq!(encode_to_vec(&packet, V311), bytes);
}

#[test]
fn decode_error_reason_codes_follow_mqtt5() {
    assert_eq!(DecodeError::Malformed("x").reason_code(), 0x81);
    assert_eq!(DecodeError::Protocol("x").reason_code(), 0x82);
    let too_large = DecodeError::PacketTooLarge { size: 2, max: 1 };
    assert_eq!(too_large.reason_code(), 0x95);
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(6).reason_code(),
        0x84
    );
}
