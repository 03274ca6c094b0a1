//! Dormant connections: a quiet client gives up its task, and must still get its deliveries,
//! have its packets answered, time out on keep-alive, be taken over and be closed at shutdown
//! exactly as an awake one.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, TestServer, WAIT, closed_for_keep_alive, connect_packet, subscribe};
use switchboard_mqtt::broker::MqttSettings;
use switchboard_mqtt::wire::{Packet, ProtocolVersion, PubResp, Publish, QoS, reason};

async fn server() -> TestServer {
    TestServer::start_with(MqttSettings {
        dormant_after: Duration::from_millis(200),
        ..Default::default()
    })
    .await
}

/// Waits (bounded) until exactly `n` connections are dormant.
async fn dormant(server: &TestServer, n: i64) {
    let gauge = &server.broker.metrics.dormant;
    let waited = tokio::time::timeout(WAIT, async {
        while gauge.get() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "dormant connections: {} not {n}",
        gauge.get()
    );
}

async fn subscriber(server: &TestServer, id: &str) -> RawClient {
    let (mut c, ack) =
        RawClient::connect(server.addr, connect_packet(ProtocolVersion::V5, id, true)).await;
    assert_eq!(ack.code, reason::SUCCESS);
    c.send(&subscribe(1, "dormant/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

#[tokio::test]
async fn a_dormant_subscriber_gets_deliveries_and_answers_packets() {
    let server = server().await;
    let mut sub = subscriber(&server, "sleeper").await;
    dormant(&server, 1).await;

    // Woken by a delivery.
    let (mut publisher, _) =
        RawClient::connect(server.addr, connect_packet(ProtocolVersion::V311, "", true)).await;
    publisher
        .send(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "dormant/a".into(),
            packet_id: 5,
            payload: Bytes::from_static(b"wake up"),
            ..Default::default()
        }))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(a)) if a.packet_id == 5));
    let Some(Packet::Publish(p)) = sub.recv().await else {
        panic!("the dormant subscriber got no PUBLISH");
    };
    assert_eq!(p.payload, Bytes::from_static(b"wake up"));
    sub.send(&Packet::PubAck(PubResp {
        packet_id: p.packet_id,
        ..Default::default()
    }))
    .await;

    // Both go to sleep again; then one is woken by its own packet.
    dormant(&server, 2).await;
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    dormant(&server, 2).await;
    assert_eq!(server.broker.metrics.connections.get(), 2);
}

#[tokio::test]
async fn keep_alive_runs_out_while_dormant() {
    let server = server().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "silent", true);
    connect.keep_alive = 1;
    let started = tokio::time::Instant::now();
    let (mut c, _) = RawClient::connect(server.addr, connect).await;
    dormant(&server, 1).await;
    let got = c.until_closed().await;
    closed_for_keep_alive(&got, started);
    dormant(&server, 0).await;
    assert_eq!(server.broker.metrics.connections.get(), 0);
}

#[tokio::test]
async fn a_dormant_connection_is_taken_over() {
    let server = server().await;
    let mut old = subscriber(&server, "twin").await;
    dormant(&server, 1).await;
    let (mut new, ack) = RawClient::connect(
        server.addr,
        connect_packet(ProtocolVersion::V5, "twin", false),
    )
    .await;
    assert_eq!(ack.code, reason::SUCCESS);
    let got = old.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == reason::SESSION_TAKEN_OVER),
        "{got:?}"
    );
    new.send(&Packet::PingReq).await;
    assert_eq!(new.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn shutdown_closes_dormant_connections() {
    let server = server().await;
    let mut c = subscriber(&server, "at-shutdown").await;
    dormant(&server, 1).await;
    let stopping = tokio::spawn(server.stop());
    let got = c.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == reason::SERVER_SHUTTING_DOWN),
        "{got:?}"
    );
    stopping.await.expect("the server stops");
}

#[tokio::test]
async fn connections_stay_awake_when_dormancy_is_off() {
    let server = TestServer::start_with(MqttSettings {
        dormant_after: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let mut c = subscriber(&server, "insomniac").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.broker.metrics.dormant.get(), 0);
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn dormant_connections_count_under_the_connection_limit() {
    use tokio::io::AsyncReadExt;

    let settings = MqttSettings {
        dormant_after: Duration::from_millis(200),
        ..Default::default()
    };
    let server = TestServer::start_limited(settings, 1).await;
    let (_first, ack) = RawClient::connect(
        server.addr,
        connect_packet(ProtocolVersion::V5, "first", true),
    )
    .await;
    assert_eq!(ack.code, reason::SUCCESS);
    dormant(&server, 1).await;
    // The dormant connection still holds the only slot: the next one is closed unanswered.
    let mut second = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, second.read(&mut byte))
        .await
        .expect("the second connection is closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
