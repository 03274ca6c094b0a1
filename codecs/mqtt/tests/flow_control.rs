//! Publisher flow control: a publisher whose messages pile up at a connected subscriber stops
//! being read until that subscriber's queue drains, and is never held back by its own
//! subscriptions.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, TestServer, connect_packet, subscribe};
use switchboard_mqtt::broker::{MqttFlow, MqttSettings};
use switchboard_mqtt::wire::{Packet, ProtocolVersion, PubResp, Publish, QoS};

const V: ProtocolVersion = ProtocolVersion::V5;
/// How long a paused connection is watched for an answer that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn settings() -> MqttSettings {
    MqttSettings {
        flow: MqttFlow {
            high: 4,
            low: 2,
            // Longer than any test: only the subscriber's draining ends a pause here.
            max_pause: Duration::from_secs(60),
        },
        ..MqttSettings::default()
    }
}

fn publish(packet_id: u16, topic: &str) -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(b"m"),
        ..Default::default()
    })
}

/// A QoS 1 subscriber to `filter` that takes one unacknowledged delivery at a time, so the
/// rest wait in its queue until it acknowledges.
async fn slow_subscriber(server: &TestServer, id: &str, filter: &str) -> RawClient {
    let mut connect = connect_packet(V, id, true);
    connect.properties.receive_maximum = Some(1);
    let (mut sub, _) = RawClient::connect(server.addr, connect).await;
    sub.send(&subscribe(1, filter, QoS::AtLeastOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub
}

/// The next PUBACK's packet id, or `None` if nothing comes within `QUIET`.
async fn puback_within_quiet(client: &mut RawClient) -> Option<u16> {
    match tokio::time::timeout(QUIET, client.recv()).await {
        Ok(Some(Packet::PubAck(a))) => Some(a.packet_id),
        Ok(other) => panic!("expected PUBACK, got {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_publisher_is_paused_while_its_subscriber_is_backlogged() {
    let server = TestServer::start_with(settings()).await;
    let mut sub = slow_subscriber(&server, "flow-sub", "flow/#").await;
    let (mut publisher, _) =
        RawClient::connect(server.addr, connect_packet(V, "flow-pub", true)).await;

    // One at a time, each acknowledged: the subscriber holds one delivery in flight and
    // queues the rest. The publish that takes its queue to the high mark still is stored and
    // acknowledged; the connection is not read after it.
    // The first four cannot take its queue past the mark before they are acknowledged: they
    // are waited for as long as any answer; only later ones may be held back.
    let mut acked = 0u16;
    for id in 1..=8u16 {
        publisher.send(&publish(id, "flow/t")).await;
        if id <= 4 {
            let got = publisher.recv().await;
            assert!(
                matches!(&got, Some(Packet::PubAck(a)) if a.packet_id == id),
                "publish {id} below the high mark: expected its PUBACK, got {got:?}"
            );
            acked = id;
            continue;
        }
        match puback_within_quiet(&mut publisher).await {
            Some(got) => {
                assert_eq!(got, id);
                acked = id;
            }
            None => break,
        }
    }
    assert!(
        (4..8).contains(&acked),
        "the publisher was paused after {acked} publishes (queue high mark 4, one in flight)"
    );
    let waiting = acked + 1;

    // The subscriber works through its queue; once it is down to the low mark the publisher
    // is read again and the waiting publish acknowledged.
    let mut resumed = false;
    for _ in 0..acked + 1 {
        let Some(Packet::Publish(p)) = sub.recv().await else {
            panic!("the subscriber gets its queued deliveries");
        };
        sub.send(&Packet::PubAck(PubResp {
            packet_id: p.packet_id,
            ..Default::default()
        }))
        .await;
        if let Some(got) = puback_within_quiet(&mut publisher).await {
            assert_eq!(got, waiting);
            resumed = true;
            break;
        }
    }
    if !resumed {
        // Drained: the answer must come, however slow the machine.
        let got = publisher.recv().await;
        assert!(
            matches!(&got, Some(Packet::PubAck(a)) if a.packet_id == waiting),
            "the publisher was not read again after the queue drained: got {got:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_publisher_is_not_paused_by_its_own_subscription() {
    let server = TestServer::start_with(settings()).await;
    let mut connect = connect_packet(V, "flow-self", true);
    connect.properties.receive_maximum = Some(1);
    let (mut client, _) = RawClient::connect(server.addr, connect).await;
    client.send(&subscribe(1, "self/#", QoS::AtLeastOnce)).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));

    // Its own queue grows past the high mark (it acknowledges nothing), and every publish is
    // still read and acknowledged.
    let mut acks = 0;
    for id in 1..=10u16 {
        client.send(&publish(id, "self/t")).await;
        loop {
            match client.recv().await {
                Some(Packet::PubAck(a)) => {
                    assert_eq!(a.packet_id, id);
                    acks += 1;
                    break;
                }
                Some(Packet::Publish(_)) => {} // its own delivery, left unacknowledged
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(acks, 10);
    server.stop().await;
}
