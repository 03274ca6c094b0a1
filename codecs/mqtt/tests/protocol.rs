//! Protocol rules checked packet by packet with a hand-driven client: flows that client
//! libraries hide (QoS 2 across a reconnect, keep-alive, bad input, MQTT 5 reason codes).

mod common;

use bytes::Bytes;
use common::{RawClient, TestServer, closed_for_keep_alive, connect_packet, subscribe};
use switchboard_mqtt::broker::MqttSettings;
use switchboard_mqtt::wire::{
    Disconnect, Packet, ProtocolVersion, PubResp, Publish, PublishProperties, QoS, Subscribe,
    SubscriptionOptions, reason,
};

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(payload),
        ..Default::default()
    })
}

fn resp(packet_id: u16) -> PubResp {
    PubResp {
        packet_id,
        ..Default::default()
    }
}

async fn subscribed(
    server: &TestServer,
    v: ProtocolVersion,
    id: &str,
    clean: bool,
    filter: &str,
    qos: QoS,
) -> RawClient {
    let (mut c, ack) = RawClient::connect(server.addr, connect_packet(v, id, clean)).await;
    assert_eq!(ack.code, reason::SUCCESS);
    c.send(&subscribe(1, filter, qos)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// Publishes at QoS 1 from a fresh client and waits for PUBACK.
async fn publish_acked(server: &TestServer, topic: &str, payload: &'static [u8]) {
    let (mut p, _) =
        RawClient::connect(server.addr, connect_packet(ProtocolVersion::V311, "", true)).await;
    p.send(&publish(topic, QoS::AtLeastOnce, 7, payload)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(a)) if a.packet_id == 7));
}

/// Publishes at QoS 2 from a fresh client, through PUBREC, PUBREL and PUBCOMP.
async fn publish_exactly_once(server: &TestServer, topic: &str, payload: &'static [u8]) {
    let (mut p, _) =
        RawClient::connect(server.addr, connect_packet(ProtocolVersion::V311, "", true)).await;
    p.send(&publish(topic, QoS::ExactlyOnce, 8, payload)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 8));
    p.send(&Packet::PubRel(resp(8))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(a)) if a.packet_id == 8));
}

#[tokio::test]
async fn qos2_message_is_delivered_once_after_reconnect() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V5;
    let mut c = RawClient::connect(server.addr, {
        let mut p = connect_packet(v, "q2", false);
        p.properties.session_expiry_interval = Some(300);
        p
    })
    .await
    .0;
    c.send(&subscribe(1, "exact", QoS::ExactlyOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    publish_exactly_once(&server, "exact", b"once").await;

    // Receive it, acknowledge with PUBREC, and drop the connection before PUBREL.
    let Some(Packet::Publish(p)) = c.recv().await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(
        (p.qos, p.payload.as_ref()),
        (QoS::ExactlyOnce, &b"once"[..])
    );
    c.send(&Packet::PubRec(resp(p.packet_id))).await;
    assert!(matches!(c.recv().await, Some(Packet::PubRel(r)) if r.packet_id == p.packet_id));
    drop(c);

    // On reconnect the server resumes with PUBREL, never the PUBLISH again.
    let (mut c, ack) = RawClient::connect(server.addr, connect_packet(v, "q2", false)).await;
    assert!(ack.session_present);
    let Some(Packet::PubRel(r)) = c.recv().await else {
        panic!("expected PUBREL")
    };
    assert_eq!(r.packet_id, p.packet_id);
    c.send(&Packet::PubComp(resp(r.packet_id))).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn unacknowledged_qos1_is_resent_with_dup_on_reconnect() {
    let server = TestServer::start().await;
    let mut c = subscribed(
        &server,
        ProtocolVersion::V311,
        "dup",
        false,
        "d",
        QoS::AtLeastOnce,
    )
    .await;
    publish_acked(&server, "d", b"m").await;
    let Some(Packet::Publish(first)) = c.recv().await else {
        panic!("expected PUBLISH")
    };
    assert!(!first.dup);
    drop(c);
    let (mut c, ack) = RawClient::connect(
        server.addr,
        connect_packet(ProtocolVersion::V311, "dup", false),
    )
    .await;
    assert!(ack.session_present);
    let Some(Packet::Publish(again)) = c.recv().await else {
        panic!("expected PUBLISH")
    };
    assert!(again.dup);
    assert_eq!(
        (again.packet_id, again.payload),
        (first.packet_id, first.payload)
    );
}

#[tokio::test]
async fn incoming_qos2_is_stored_once_even_when_resent() {
    let server = TestServer::start().await;
    let mut sub = subscribed(
        &server,
        ProtocolVersion::V311,
        "s",
        true,
        "x",
        QoS::AtLeastOnce,
    )
    .await;
    let (mut p, _) = RawClient::connect(
        server.addr,
        connect_packet(ProtocolVersion::V311, "p", true),
    )
    .await;
    p.send(&publish("x", QoS::ExactlyOnce, 9, b"one")).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 9));
    // The client did not see PUBREC (say) and sends the PUBLISH again with DUP.
    let Packet::Publish(mut again) = publish("x", QoS::ExactlyOnce, 9, b"one") else {
        unreachable!()
    };
    again.dup = true;
    p.send(&Packet::Publish(again)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 9));
    p.send(&Packet::PubRel(resp(9))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(r)) if r.packet_id == 9));
    let Some(Packet::Publish(got)) = sub.recv().await else {
        panic!("expected PUBLISH")
    };
    sub.send(&Packet::PubAck(resp(got.packet_id))).await;
    sub.send(&Packet::PingReq).await;
    // Only PINGRESP follows: no second copy.
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let server = TestServer::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "sleepy", true);
    connect.keep_alive = 1;
    let (mut c, _) = RawClient::connect(server.addr, connect).await;
    let started = tokio::time::Instant::now();
    let got = c.until_closed().await;
    closed_for_keep_alive(&got, started);
}

#[tokio::test]
async fn first_packet_other_than_connect_closes_the_connection() {
    let server = TestServer::start().await;
    let mut c = RawClient::open(server.addr, ProtocolVersion::V311).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.until_closed().await, vec![]);
}

#[tokio::test]
async fn malformed_packet_gets_reason_0x81_and_server_keeps_serving() {
    let server = TestServer::start().await;
    let (mut c, _) = RawClient::connect(
        server.addr,
        connect_packet(ProtocolVersion::V5, "bad", true),
    )
    .await;
    // PUBLISH with QoS 3, which does not exist.
    c.send_raw(&[0x36, 0x03, 0x00, 0x01, b'a']).await;
    let got = c.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == reason::MALFORMED_PACKET),
        "{got:?}"
    );
    publish_acked(&server, "still/alive", b"yes").await;
}

#[tokio::test]
async fn oversized_packet_gets_reason_0x95() {
    let settings = MqttSettings {
        max_packet_size: 1024,
        ..Default::default()
    };
    let server = TestServer::start_with(settings).await;
    let (mut c, ack) = RawClient::connect(
        server.addr,
        connect_packet(ProtocolVersion::V5, "big", true),
    )
    .await;
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    c.send(&Packet::Publish(Publish {
        topic: "t".into(),
        payload: Bytes::from(vec![0u8; 2000]),
        ..Default::default()
    }))
    .await;
    let got = c.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == reason::PACKET_TOO_LARGE),
        "{got:?}"
    );
}

#[tokio::test]
async fn wildcard_in_a_publish_topic_is_refused() {
    let server = TestServer::start().await;
    let (mut c, _) = RawClient::connect(
        server.addr,
        connect_packet(ProtocolVersion::V5, "wild", true),
    )
    .await;
    c.send(&publish("a/+", QoS::AtMostOnce, 0, b"x")).await;
    let got = c.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == reason::TOPIC_NAME_INVALID),
        "{got:?}"
    );
}

#[tokio::test]
async fn unsupported_protocol_level_is_refused_with_connack() {
    let server = TestServer::start().await;
    let mut c = RawClient::open(server.addr, ProtocolVersion::V311).await;
    // CONNECT, protocol name "MQTT", level 6.
    c.send_raw(&[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
    ])
    .await;
    let got = c.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::ConnAck(a)] if a.code == reason::v3::UNACCEPTABLE_PROTOCOL_VERSION),
        "{got:?}"
    );
}

#[tokio::test]
async fn v5_properties_reach_the_subscriber_intact() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V5;
    let mut sub = subscribed(&server, v, "props-sub", true, "rpc/#", QoS::AtLeastOnce).await;
    let (mut p, _) = RawClient::connect(server.addr, connect_packet(v, "props-pub", true)).await;
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        response_topic: Some("rpc/reply".into()),
        correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
        user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    p.send(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "rpc/call".into(),
        packet_id: 1,
        payload: Bytes::from_static(b"{}"),
        properties: properties.clone(),
        ..Default::default()
    }))
    .await;
    let Some(Packet::Publish(got)) = sub.recv().await else {
        panic!("expected PUBLISH")
    };
    let expiry = got.properties.message_expiry_interval.expect("expiry kept");
    assert!((119..=120).contains(&expiry), "{expiry}");
    let expected = PublishProperties {
        message_expiry_interval: got.properties.message_expiry_interval,
        ..properties
    };
    assert_eq!(
        got.properties,
        PublishProperties {
            topic_alias: None,
            ..expected.clone()
        }
    );
}

#[tokio::test]
async fn topic_alias_from_the_client_is_resolved() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V5;
    let mut sub = subscribed(
        &server,
        v,
        "alias-sub",
        true,
        "long/topic/name",
        QoS::AtMostOnce,
    )
    .await;
    let (mut p, _) = RawClient::connect(server.addr, connect_packet(v, "alias-pub", true)).await;
    let with_alias = |topic: &str, payload: &'static [u8]| {
        Packet::Publish(Publish {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            properties: PublishProperties {
                topic_alias: Some(3),
                ..Default::default()
            },
            ..Default::default()
        })
    };
    p.send(&with_alias("long/topic/name", b"1")).await;
    p.send(&with_alias("", b"2")).await;
    for payload in [b"1", b"2"] {
        let Some(Packet::Publish(got)) = sub.recv().await else {
            panic!("expected PUBLISH")
        };
        assert_eq!(
            (got.topic.as_str(), got.payload.as_ref()),
            ("long/topic/name", &payload[..])
        );
    }
    // An alias never set is a protocol error.
    p.send(&Packet::Publish(Publish {
        properties: PublishProperties {
            topic_alias: Some(9),
            ..Default::default()
        },
        ..Default::default()
    }))
    .await;
    let got = p.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == reason::PROTOCOL_ERROR),
        "{got:?}"
    );
}

#[tokio::test]
async fn shared_subscription_spreads_messages_across_members() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V5;
    let mut a = subscribed(
        &server,
        v,
        "member-a",
        true,
        "$share/workers/tasks",
        QoS::AtMostOnce,
    )
    .await;
    let mut b = subscribed(
        &server,
        v,
        "member-b",
        true,
        "$share/workers/tasks",
        QoS::AtMostOnce,
    )
    .await;
    let (mut p, _) = RawClient::connect(server.addr, connect_packet(v, "boss", true)).await;
    for _ in 0..10 {
        p.send(&publish("tasks", QoS::AtMostOnce, 0, b"t")).await;
    }
    p.send(&Packet::Disconnect(Disconnect::default())).await;
    let (mut got_a, mut got_b) = (0, 0);
    for _ in 0..10 {
        tokio::select! {
            Some(Packet::Publish(_)) = a.recv() => got_a += 1,
            Some(Packet::Publish(_)) = b.recv() => got_b += 1,
        }
    }
    assert_eq!(got_a + got_b, 10);
    assert!(got_a > 0 && got_b > 0, "a got {got_a}, b got {got_b}");
}

#[tokio::test]
async fn no_local_skips_the_publishers_own_messages() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V5;
    let (mut c, _) = RawClient::connect(server.addr, connect_packet(v, "echo", true)).await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "chat/local".into(),
            SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: true,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(&publish("chat/local", QoS::AtMostOnce, 0, b"mine"))
        .await;
    publish_acked(&server, "chat/local", b"theirs").await;
    let Some(Packet::Publish(got)) = c.recv().await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(got.payload.as_ref(), b"theirs");
}

/// A client whose subscriptions overlap gets each message once, at the highest QoS among
/// them, carrying every matching subscription's identifier (MQTT 5 §3.3.4): with a few
/// overlapping filters, and with more than the broker tells apart by a scan. (A raw client:
/// rumqttc 0.25's v5 decoder counts each Subscription Identifier's property byte twice and
/// reads the last of several as payload.)
#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_with_every_identifier() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V5;
    for (client, count) in [("few", 3u32), ("many", 20)] {
        let (mut c, _) = RawClient::connect(server.addr, connect_packet(v, client, true)).await;
        for (id, filter) in (1..).zip(overlapping_filters(count as usize)) {
            // Only the last is QoS 1: the copy must come at QoS 1 all the same.
            let qos = if id == count {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            let Packet::Subscribe(mut s) = subscribe(id as u16, &filter, qos) else {
                unreachable!()
            };
            s.properties.subscription_identifier = Some(id);
            c.send(&Packet::Subscribe(s)).await;
            assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
        }
        publish_acked(&server, "w/x/y/z", b"overlap").await;
        let Some(Packet::Publish(got)) = c.recv().await else {
            panic!("{client}: expected PUBLISH")
        };
        assert_eq!(got.payload.as_ref(), b"overlap", "{client}");
        assert_eq!(got.qos, QoS::AtLeastOnce, "{client}");
        let mut ids = got.properties.subscription_identifiers.clone();
        ids.sort_unstable();
        assert_eq!(ids, (1..=count).collect::<Vec<_>>(), "{client}");
        c.send(&Packet::PubAck(resp(got.packet_id))).await;
        // One copy only: the next packet is the answer to a ping, not a second PUBLISH.
        c.send(&Packet::PingReq).await;
        assert!(
            matches!(c.recv().await, Some(Packet::PingResp)),
            "{client}: a second copy"
        );
    }
}

/// `count` (at most 20) distinct filters that all match `w/x/y/z`.
fn overlapping_filters(count: usize) -> Vec<String> {
    let levels = ["w", "x", "y", "z"];
    let mut filters: Vec<String> = (0..16u32)
        .map(|mask| {
            let parts: Vec<&str> = (0..4)
                .map(|i| if mask & (1 << i) != 0 { "+" } else { levels[i] })
                .collect();
            parts.join("/")
        })
        .collect();
    filters.extend(["#", "w/#", "w/x/#", "w/x/y/#"].map(String::from));
    filters.truncate(count);
    filters
}

#[tokio::test]
async fn a_session_that_took_over_a_clean_one_can_itself_be_taken_over() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V311;
    let (mut first, _) = RawClient::connect(server.addr, connect_packet(v, "chain", true)).await;
    let mut second = subscribed(&server, v, "chain", false, "chain/t", QoS::AtLeastOnce).await;
    assert_eq!(first.until_closed().await, vec![]);
    publish_acked(&server, "chain/t", b"to-second").await;
    let Some(Packet::Publish(got)) = second.recv().await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(got.payload.as_ref(), b"to-second");
    // A third connection finds the second one in the registry and takes over from it.
    let (_third, ack) = RawClient::connect(server.addr, connect_packet(v, "chain", false)).await;
    assert!(ack.session_present);
    assert!(
        second
            .until_closed()
            .await
            .iter()
            .all(|p| matches!(p, Packet::Publish(_)))
    );
}

#[tokio::test]
async fn reconnecting_right_after_disconnect_resumes_the_session() {
    let server = TestServer::start().await;
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for round in 0..20 {
            let mut connect = connect_packet(v, &format!("quick-{v:?}"), false);
            connect.properties.session_expiry_interval = Some(300);
            let (mut c, ack) = RawClient::connect(server.addr, connect.clone()).await;
            assert_eq!(ack.session_present, round > 0, "{v:?} round {round}");
            c.send(&Packet::Disconnect(Disconnect::default())).await;
            assert!(c.until_closed().await.is_empty());
        }
    }
}

/// MQTT 5 §4.6: PUBACKs go out in the order the PUBLISHes came, a refused one (here a payload
/// that is not the UTF-8 its format indicator promises) included, and the stored ones only
/// after the fsync that makes them durable.
#[tokio::test]
async fn acknowledgements_keep_the_order_of_the_publishes_refused_ones_included() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V5;
    let (mut p, _) = RawClient::connect(server.addr, connect_packet(v, "in-order", true)).await;
    let publish = |packet_id: u16, payload: &'static [u8], utf8: bool| {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "order/t".into(),
            packet_id,
            payload: Bytes::from_static(payload),
            properties: PublishProperties {
                payload_format_indicator: utf8.then_some(1),
                ..Default::default()
            },
            ..Default::default()
        })
    };
    // One write, so the broker reads them together.
    let mut out = bytes::BytesMut::new();
    for packet in [
        publish(1, b"first", false),
        publish(2, &[0xff, 0xfe], true),
        publish(3, b"third", false),
    ] {
        switchboard_mqtt::wire::encode(&packet, v, &mut out);
    }
    p.send_raw(&out).await;
    let mut acks = Vec::new();
    for _ in 0..3 {
        match p.recv().await {
            Some(Packet::PubAck(a)) => acks.push((a.packet_id, a.reason)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(
        acks,
        vec![
            (1, reason::SUCCESS),
            (2, reason::PAYLOAD_FORMAT_INVALID),
            (3, reason::SUCCESS)
        ]
    );
}
