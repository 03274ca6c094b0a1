//! QoS 1 acknowledgements wait for the fsync that makes the publish durable, and only they do:
//! the publish is delivered at once, and the connection goes on reading while the fsync runs.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{RawClient, TestServer, connect_packet, subscribe};
use switchboard_memory::MemoryStorage;
use switchboard_mqtt::broker::MqttSettings;
use switchboard_mqtt::wire::{Packet, ProtocolVersion, Publish, QoS, reason};
use switchboard_storage::fault::{Faults, FaultyStorage};

/// A server over memory storage whose fsyncs the test holds until it releases them.
async fn held_syncs() -> (TestServer, Arc<Faults>) {
    let (storage, faults) = FaultyStorage::new(Arc::new(MemoryStorage::new()));
    faults.hold_syncs(true);
    let server = TestServer::start_on(Arc::new(storage), MqttSettings::default()).await;
    (server, faults)
}

fn publish(packet_id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "gate/t".into(),
        packet_id,
        payload: Bytes::from_static(payload),
        ..Default::default()
    })
}

#[tokio::test]
async fn puback_waits_for_the_fsync_but_the_connection_reads_on() {
    let (server, faults) = held_syncs().await;
    let v = ProtocolVersion::V5;
    let (mut sub, _) = RawClient::connect(server.addr, connect_packet(v, "gate-sub", true)).await;
    sub.send(&subscribe(1, "gate/#", QoS::AtMostOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, ack) =
        RawClient::connect(server.addr, connect_packet(v, "gate-pub", true)).await;
    assert_eq!(ack.code, reason::SUCCESS);

    // Stored and delivered, not yet durable: no PUBACK.
    publisher.send(&publish(1, b"one")).await;
    let Some(Packet::Publish(first)) = sub.recv().await else {
        panic!("the first publish was not delivered before its fsync");
    };
    assert_eq!(first.payload, Bytes::from_static(b"one"));
    // The connection still reads: a second publish gets through while the first one's fsync
    // is held.
    publisher.send(&publish(2, b"two")).await;
    let Some(Packet::Publish(second)) = sub.recv().await else {
        panic!("the second publish was not read while the first one's fsync ran");
    };
    assert_eq!(second.payload, Bytes::from_static(b"two"));
    publisher.send(&Packet::PingReq).await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PingResp),
        "no PUBACK may come before the fsync"
    );

    faults.hold_syncs(false);
    let mut acks = Vec::new();
    for _ in 0..2 {
        match publisher.recv().await {
            Some(Packet::PubAck(a)) => acks.push((a.packet_id, a.reason)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(acks, vec![(1, reason::SUCCESS), (2, reason::SUCCESS)]);
}

/// A QoS 2 publish whose PUBREC was still waiting for its fsync when the connection dropped:
/// the client's resend is not stored again (exactly once), and it is acknowledged only once the
/// first copy is durable.
#[tokio::test]
async fn a_resent_qos2_publish_is_acknowledged_only_once_durable() {
    let (server, faults) = held_syncs().await;
    let v = ProtocolVersion::V5;
    let mut connect = connect_packet(v, "resender", true);
    connect.properties.session_expiry_interval = Some(300);
    let (mut first, _) = RawClient::connect(server.addr, connect.clone()).await;
    let qos2 = |dup: bool| {
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            dup,
            topic: "gate/q2".into(),
            packet_id: 9,
            payload: Bytes::from_static(b"once"),
            ..Default::default()
        })
    };
    first.send(&qos2(false)).await;
    first.send(&Packet::PingReq).await;
    assert_eq!(
        first.recv().await,
        Some(Packet::PingResp),
        "no PUBREC before the fsync"
    );
    drop(first);

    connect.clean_start = false;
    let (mut second, ack) = RawClient::connect(server.addr, connect).await;
    assert!(ack.session_present);
    second.send(&qos2(true)).await;
    second.send(&Packet::PingReq).await;
    assert_eq!(
        second.recv().await,
        Some(Packet::PingResp),
        "no PUBREC for the resend before the first copy is durable"
    );
    faults.hold_syncs(false);
    assert!(
        matches!(second.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 9 && r.reason == reason::SUCCESS)
    );
}

/// Packets sent in the same write as CONNECT are handled without waiting for more bytes.
#[tokio::test]
async fn packets_behind_connect_in_one_write_are_handled() {
    let server = TestServer::start().await;
    let v = ProtocolVersion::V311;
    let mut c = RawClient::open(server.addr, v).await;
    let mut out = bytes::BytesMut::new();
    switchboard_mqtt::wire::encode(
        &Packet::Connect(Box::new(connect_packet(v, "eager", true))),
        v,
        &mut out,
    );
    switchboard_mqtt::wire::encode(&subscribe(3, "eager/#", QoS::AtMostOnce), v, &mut out);
    c.send_raw(&out).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    assert!(matches!(c.recv().await, Some(Packet::SubAck(a)) if a.packet_id == 3));
}
