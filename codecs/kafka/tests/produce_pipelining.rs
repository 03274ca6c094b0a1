//! acks=all produce requests on one connection overlap while they wait for their fsync, and
//! their answers still go out in request order, ahead of any later request's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Broker, Client, WAIT};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use switchboard_memory::MemoryStorage;
use switchboard_model::{BatchBuilder, Record, StreamName, TopicPartition};
use switchboard_storage::fault::FaultyStorage;

const PRODUCE_VERSION: i16 = 9;

fn produce(topic: &'static str, value: &'static str) -> ProduceRequest {
    let mut batch = BatchBuilder::new();
    batch.push(Record::new(
        None,
        Some(Bytes::from_static(value.as_bytes())),
        0,
    ));
    let records = batch.build().expect("a batch").into_bytes();
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str(topic)))
        .with_partition_data(vec![partition]);
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![topic])
}

/// Base offset and error code of a one-partition produce answer.
fn placed(response: &ProduceResponse) -> (i64, i16) {
    let p = &response.responses[0].partition_responses[0];
    (p.base_offset, p.error_code)
}

#[tokio::test]
async fn acks_all_produces_are_appended_while_earlier_ones_wait_and_answered_in_order() {
    let (storage, faults) = FaultyStorage::new(Arc::new(MemoryStorage::new()));
    let broker = Broker::start_on(Arc::new(storage)).await;
    let mut client = Client::connect(&broker).await;
    // The topic is created by a first produce, answered at once.
    client
        .send(
            ApiKey::Produce,
            PRODUCE_VERSION,
            1,
            &produce("orders", "first"),
        )
        .await;
    let (id, first): (_, ProduceResponse) = client.receive(ApiKey::Produce, PRODUCE_VERSION).await;
    assert_eq!((id, placed(&first)), (1, (0, 0)));

    faults.hold_syncs(true);
    client
        .send(ApiKey::Produce, PRODUCE_VERSION, 2, &produce("orders", "a"))
        .await;
    client
        .send(ApiKey::Produce, PRODUCE_VERSION, 3, &produce("orders", "b"))
        .await;
    client
        .send(ApiKey::Metadata, 12, 4, &MetadataRequest::default())
        .await;

    // The second produce is appended although the first still waits for its fsync.
    let tp = TopicPartition::new(StreamName::new("orders").expect("name"), 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let hw = broker
            .router
            .bounds(&tp)
            .await
            .expect("bounds")
            .high_watermark;
        if hw == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second acks=all produce was not appended while the first waited (high \
             watermark {hw})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(200), client.stream.peek(&mut byte));
    assert!(early.await.is_err(), "an answer came before the fsync");

    faults.hold_syncs(false);
    let (id, a): (_, ProduceResponse) = client.receive(ApiKey::Produce, PRODUCE_VERSION).await;
    assert_eq!((id, placed(&a)), (2, (1, 0)));
    let (id, b): (_, ProduceResponse) = client.receive(ApiKey::Produce, PRODUCE_VERSION).await;
    assert_eq!((id, placed(&b)), (3, (2, 0)));
    let (id, metadata): (_, MetadataResponse) = client.receive(ApiKey::Metadata, 12).await;
    assert_eq!(id, 4);
    assert_eq!(metadata.brokers.len(), 1);
}
