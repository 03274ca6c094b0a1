//! QoS 1 acknowledgements wait for the fsync that makes the publish durable, and only they do:
//! the publish is delivered at once, and the connection goes on reading while the fsync runs.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::{RawClient, TestServer, connect_packet};
use switchboard_memory::MemoryStorage;
use switchboard_model::{Offset, RecordBatch, TopicPartition};
use switchboard_mqtt::broker::MqttSettings;
use switchboard_mqtt::wire::{
    Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions, reason,
};
use switchboard_storage::{
    Appended, Bounds, Durability, ReadChunk, Retention, Storage, StorageResult,
};
use tokio::sync::Semaphore;

/// Memory storage whose `sync` waits until the test lets it through.
struct GatedSync {
    inner: MemoryStorage,
    gate: Semaphore,
}

#[async_trait]
impl Storage for GatedSync {
    fn kind(&self) -> &'static str {
        "gated"
    }
    async fn open_partition(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.inner.open_partition(tp).await
    }
    async fn append(
        &self,
        tp: &TopicPartition,
        batches: Vec<RecordBatch>,
        durability: Durability,
    ) -> StorageResult<Appended> {
        let appended = self.inner.append(tp, batches, Durability::Buffered).await?;
        if durability == Durability::Sync {
            self.sync(tp).await?;
        }
        Ok(appended)
    }
    async fn read(
        &self,
        tp: &TopicPartition,
        from: Offset,
        max_bytes: usize,
    ) -> StorageResult<ReadChunk> {
        self.inner.read(tp, from, max_bytes).await
    }
    async fn bounds(&self, tp: &TopicPartition) -> StorageResult<Bounds> {
        self.inner.bounds(tp).await
    }
    async fn offset_for_timestamp(
        &self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(Offset, i64)>> {
        self.inner.offset_for_timestamp(tp, timestamp_ms).await
    }
    async fn delete_before(&self, tp: &TopicPartition, offset: Offset) -> StorageResult<Offset> {
        self.inner.delete_before(tp, offset).await
    }
    async fn apply_retention(
        &self,
        tp: &TopicPartition,
        retention: Retention,
        now_ms: i64,
    ) -> StorageResult<Offset> {
        self.inner.apply_retention(tp, retention, now_ms).await
    }
    async fn flush(&self) -> StorageResult<()> {
        self.inner.flush().await
    }
    async fn sync(&self, tp: &TopicPartition) -> StorageResult<()> {
        let permit = self.gate.acquire().await.expect("gate open");
        // Every sync passes once the gate is open.
        drop(permit);
        self.inner.sync(tp).await
    }
    async fn remove_partition(&self, tp: &TopicPartition) -> StorageResult<()> {
        self.inner.remove_partition(tp).await
    }
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
    let storage = Arc::new(GatedSync {
        inner: MemoryStorage::new(),
        gate: Semaphore::new(0),
    });
    let server = TestServer::start_on(storage.clone(), MqttSettings::default()).await;
    let v = ProtocolVersion::V5;
    let (mut sub, _) = RawClient::connect(server.addr, connect_packet(v, "gate-sub", true)).await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "gate/#".into(),
            SubscriptionOptions {
                qos: QoS::AtMostOnce,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    }))
    .await;
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

    storage.gate.add_permits(Semaphore::MAX_PERMITS / 2);
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
    let storage = Arc::new(GatedSync {
        inner: MemoryStorage::new(),
        gate: Semaphore::new(0),
    });
    let server = TestServer::start_on(storage.clone(), MqttSettings::default()).await;
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
    storage.gate.add_permits(Semaphore::MAX_PERMITS / 2);
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
    switchboard_mqtt::wire::encode(
        &Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![("eager/#".into(), SubscriptionOptions::default())],
            properties: Default::default(),
        }),
        v,
        &mut out,
    );
    c.send_raw(&out).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    assert!(matches!(c.recv().await, Some(Packet::SubAck(a)) if a.packet_id == 3));
}
