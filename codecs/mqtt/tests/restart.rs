//! What MQTT keeps across a server restart: persistent sessions with the messages they missed,
//! and retained messages.

mod common;

use bytes::Bytes;
use common::{RawClient, TestServer, connect_packet, subscribe};
use switchboard_mqtt::wire::{
    Packet, ProtocolVersion, PubResp, Publish, QoS, Subscribe, SubscriptionOptions,
};

async fn publish_acked(server: &TestServer, topic: &str, payload: String, retain: bool) {
    let (mut p, _) =
        RawClient::connect(server.addr, connect_packet(ProtocolVersion::V311, "", true)).await;
    p.send(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        retain,
        topic: topic.into(),
        packet_id: 1,
        payload: Bytes::from(payload),
        ..Default::default()
    }))
    .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
}

#[tokio::test]
async fn persistent_session_and_retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path()).await;
    let v = ProtocolVersion::V5;
    let mut connect = connect_packet(v, "durable", false);
    connect.properties.session_expiry_interval = Some(3600);
    let (mut c, _) = RawClient::connect(server.addr, connect.clone()).await;
    c.send(&subscribe(1, "orders/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(&Packet::Disconnect(Default::default())).await;
    assert!(c.until_closed().await.is_empty());

    for i in 0..5 {
        publish_acked(
            &server,
            &format!("orders/{}", i % 2),
            format!("order-{i}"),
            false,
        )
        .await;
    }
    publish_acked(&server, "config/mode", "fast".into(), true).await;
    server.stop().await;

    let server = TestServer::start_in(dir.path()).await;
    let (mut c, ack) = RawClient::connect(server.addr, connect).await;
    assert!(ack.session_present, "the session was restored");
    let mut got = Vec::new();
    for _ in 0..5 {
        let Some(Packet::Publish(p)) = c.recv().await else {
            panic!("expected PUBLISH")
        };
        c.send(&Packet::PubAck(PubResp {
            packet_id: p.packet_id,
            ..Default::default()
        }))
        .await;
        got.push(String::from_utf8(p.payload.to_vec()).expect("utf-8"));
    }
    got.sort();
    assert_eq!(
        got,
        (0..5).map(|i| format!("order-{i}")).collect::<Vec<_>>()
    );

    let (mut fresh, _) = RawClient::connect(server.addr, connect_packet(v, "fresh", true)).await;
    fresh
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("config/+".into(), SubscriptionOptions::default())],
            properties: Default::default(),
        }))
        .await;
    assert!(matches!(fresh.recv().await, Some(Packet::SubAck(_))));
    let Some(Packet::Publish(retained)) = fresh.recv().await else {
        panic!("expected the retained message")
    };
    assert!(retained.retain);
    assert_eq!(retained.payload.as_ref(), b"fast");
    server.stop().await;
}

/// The sum of a stored session's positions: how many records it has finished with.
fn stored_progress(server: &TestServer, client_id: &str) -> u64 {
    let stored = server.router.space("mqtt.sessions");
    let Some((_, bytes)) = stored.iter().find(|(k, _)| k == client_id) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("stored session is JSON");
    v["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .filter_map(|p| p[2].as_u64())
        .sum()
}

#[tokio::test]
async fn a_connected_persistent_session_stores_its_progress() {
    let settings = switchboard_mqtt::broker::MqttSettings {
        checkpoint_interval: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    let server = TestServer::start_with(settings).await;
    let mut connect = connect_packet(ProtocolVersion::V311, "steady", false);
    connect.keep_alive = 0;
    let (mut c, _) = RawClient::connect(server.addr, connect).await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "work".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(stored_progress(&server, "steady"), 0);
    for i in 0..3 {
        publish_acked(&server, "work", format!("w{i}"), false).await;
        let Some(Packet::Publish(p)) = c.recv().await else {
            panic!("expected PUBLISH")
        };
        c.send(&Packet::PubAck(PubResp {
            packet_id: p.packet_id,
            ..Default::default()
        }))
        .await;
    }
    // Still connected: the position is stored on its own, shortly after the acknowledgements.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while stored_progress(&server, "steady") < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "progress never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
