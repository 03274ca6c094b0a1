//! Proptest strategies for packets, restricted to what each protocol level can carry, so that
//! encoding then decoding must give back the very same value.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

use crate::wire::*;

/// Reason codes each MQTT 5 packet may carry (§3.2.2.2, §3.4.2.1 …), written out here
/// independently of the decoder's tables.
const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97,
    0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2,
];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];
/// 3.1.1 SUBACK return codes: the granted QoS or failure (3.1.1 §3.9.3).
const V3_SUBACK_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];

/// Short strings of any printable characters, multi-byte ones included (never U+0000).
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,6}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((text(), text()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn subscription_identifier() -> impl Strategy<Value = u32> {
    prop_oneof![1..=200u32, 1..=MAX_VARIABLE_BYTE_INTEGER]
}

/// `strategy` for MQTT 5, the default value (which encodes to nothing) for 3.1 / 3.1.1.
fn v5_only<T, S>(v5: bool, strategy: S) -> BoxedStrategy<T>
where
    T: Default + Clone + std::fmt::Debug + 'static,
    S: Strategy<Value = T> + 'static,
{
    if v5 {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

/// The properties of an application message, without the PUBLISH-only ones.
fn message_properties() -> impl Strategy<Value = PublishProperties> {
    (
        of(0..=1u8),
        of(any::<u32>()),
        of(text()),
        of(text()),
        of(binary()),
        user_properties(),
    )
        .prop_map(
            |(format, expiry, content_type, response, correlation, user)| PublishProperties {
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                response_topic: response,
                correlation_data: correlation,
                user_properties: user,
                content_type,
                ..Default::default()
            },
        )
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        message_properties(),
        of(1..=u16::MAX),
        vec(subscription_identifier(), 0..3),
    )
        .prop_map(|(message, alias, identifiers)| PublishProperties {
            topic_alias: alias,
            subscription_identifiers: identifiers,
            ..message
        })
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(text()), user_properties()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(1..=u32::MAX),
        of(any::<u16>()),
        of(0..=1u8),
        of(0..=1u8),
        user_properties(),
        of(text()),
        of(binary()),
    )
        .prop_map(
            |(expiry, receive, size, aliases, response, problem, user, method, data)| {
                ConnectProperties {
                    session_expiry_interval: expiry,
                    receive_maximum: receive,
                    maximum_packet_size: size,
                    topic_alias_maximum: aliases,
                    request_response_information: response,
                    request_problem_information: problem,
                    user_properties: user,
                    // Authentication Data needs a method (§3.1.2.11.10).
                    authentication_data: data.filter(|_| method.is_some()),
                    authentication_method: method,
                }
            },
        )
}

fn will(v5: bool) -> impl Strategy<Value = Will> {
    (
        text(),
        binary(),
        qos(),
        any::<bool>(),
        v5_only(v5, any::<u32>()),
        v5_only(v5, message_properties()),
    )
        .prop_map(
            |(topic, payload, qos, retain, delay_interval, properties)| Will {
                topic,
                payload,
                qos,
                retain,
                delay_interval,
                properties,
            },
        )
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    (
        text(),
        any::<bool>(),
        any::<u16>(),
        of(text()),
        of(binary()),
        of(will(v5)),
        v5_only(v5, connect_properties()),
    )
        .prop_map(
            move |(client_id, clean_start, keep_alive, username, password, will, properties)| {
                // Before MQTT 5 a password needs a user name.
                let password = password.filter(|_| v5 || username.is_some());
                Packet::Connect(Box::new(Connect {
                    version,
                    client_id,
                    clean_start,
                    keep_alive,
                    username,
                    password,
                    will,
                    properties,
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let limits = (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(0..=1u8),
        of(any::<bool>()),
        of(1..=u32::MAX),
        of(any::<u16>()),
        of(any::<u16>()),
    );
    let features = (of(any::<bool>()), of(any::<bool>()), of(any::<bool>()));
    let texts = (
        of(text()),
        of(text()),
        of(text()),
        of(text()),
        of(text()),
        user_properties(),
        of(binary()),
    );
    (limits, features, texts).prop_map(|(limits, features, texts)| {
        let (expiry, receive, max_qos, retain, size, aliases, keep_alive) = limits;
        let (wildcard, identifiers, shared) = features;
        let (assigned, reason, response, reference, method, user, data) = texts;
        ConnAckProperties {
            session_expiry_interval: expiry,
            receive_maximum: receive,
            maximum_qos: max_qos,
            retain_available: retain,
            maximum_packet_size: size,
            assigned_client_identifier: assigned,
            topic_alias_maximum: aliases,
            reason_string: reason,
            user_properties: user,
            wildcard_subscription_available: wildcard,
            subscription_identifiers_available: identifiers,
            shared_subscription_available: shared,
            server_keep_alive: keep_alive,
            response_information: response,
            server_reference: reference,
            authentication_method: method,
            authentication_data: data,
        }
    })
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let code = if v5 {
        select(CONNACK_REASONS).boxed()
    } else {
        (0..=5u8).boxed()
    };
    // MQTT 3.1 has no Session Present flag.
    let session_present = version != ProtocolVersion::V31;
    (any::<bool>(), code, v5_only(v5, connack_properties())).prop_map(
        move |(present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: present && session_present,
                code,
                properties,
            })
        },
    )
}

pub(super) fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        text(),
        packet_id(),
        vec(any::<u8>(), 0..64),
        v5_only(v5, publish_properties()),
    )
        .prop_map(
            |(dup, qos, retain, topic, packet_id, payload, properties)| {
                let qos0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: if qos0 { 0 } else { packet_id },
                    payload: payload.into(),
                    properties,
                })
            },
        )
}

fn pub_resp(v5: bool, reasons: &'static [u8]) -> impl Strategy<Value = PubResp> {
    (
        any::<u16>(),
        v5_only(v5, select(reasons)),
        v5_only(v5, ack_properties()),
    )
        .prop_map(|(packet_id, reason, properties)| PubResp {
            packet_id,
            reason,
            properties,
        })
}

fn subscription_options(v5: bool) -> BoxedStrategy<SubscriptionOptions> {
    if !v5 {
        return qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..Default::default()
            })
            .boxed();
    }
    (qos(), any::<bool>(), any::<bool>(), 0..=2u8)
        .prop_map(
            |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            },
        )
        .boxed()
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let properties = (of(subscription_identifier()), user_properties()).prop_map(
        |(subscription_identifier, user_properties)| SubscribeProperties {
            subscription_identifier,
            user_properties,
        },
    );
    (
        packet_id(),
        vec((text(), subscription_options(v5)), 1..4),
        v5_only(v5, properties),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn suback(v5: bool) -> impl Strategy<Value = Packet> {
    let reasons = if v5 { SUBACK_REASONS } else { V3_SUBACK_CODES };
    (
        any::<u16>(),
        vec(select(reasons), 1..4),
        v5_only(v5, ack_properties()),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn unsubscribe(v5: bool) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(text(), 1..4),
        v5_only(v5, user_properties()),
    )
        .prop_map(|(packet_id, filters, user_properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                user_properties,
            })
        })
}

fn unsuback(v5: bool) -> impl Strategy<Value = Packet> {
    (
        any::<u16>(),
        v5_only(v5, vec(select(UNSUBACK_REASONS), 1..4)),
        v5_only(v5, ack_properties()),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn disconnect(v5: bool) -> impl Strategy<Value = Packet> {
    let properties = (of(any::<u32>()), of(text()), user_properties(), of(text())).prop_map(
        |(session_expiry_interval, reason_string, user_properties, server_reference)| {
            DisconnectProperties {
                session_expiry_interval,
                reason_string,
                user_properties,
                server_reference,
            }
        },
    );
    (
        v5_only(v5, select(DISCONNECT_REASONS)),
        v5_only(v5, properties),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    let properties = (of(text()), of(binary()), of(text()), user_properties()).prop_map(
        |(authentication_method, authentication_data, reason_string, user_properties)| {
            AuthProperties {
                authentication_method,
                authentication_data,
                reason_string,
                user_properties,
            }
        },
    );
    (select(AUTH_REASONS), properties)
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any packet that `version` can carry, with the values it can carry.
pub(super) fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(v5),
        pub_resp(v5, PUBACK_REASONS).prop_map(Packet::PubAck),
        pub_resp(v5, PUBACK_REASONS).prop_map(Packet::PubRec),
        pub_resp(v5, PUBREL_REASONS).prop_map(Packet::PubRel),
        pub_resp(v5, PUBREL_REASONS).prop_map(Packet::PubComp),
        subscribe(v5),
        suback(v5),
        unsubscribe(v5),
        unsuback(v5),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v5),
    ];
    if v5 {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

pub(super) fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V31),
        Just(ProtocolVersion::V311),
        Just(ProtocolVersion::V5)
    ]
}

/// A version and a packet it can carry.
pub(super) fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|version| (Just(version), packet(version)))
}
