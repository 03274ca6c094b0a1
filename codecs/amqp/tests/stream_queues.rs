//! Stream queues (`x-queue-type: stream`): consumers read from a position of their choice,
//! and records cross between AMQP and the streams Kafka clients use.

mod common;

use bytes::Bytes;
use common::{TestServer, body, next, nothing_within, publish, reply_code};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};
use switchboard_model::{BatchBuilder, Record, RecordBatch, StreamName, TopicPartition};
use switchboard_storage::Durability;

async fn declare_stream(ch: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("stream queue declare");
}

async fn consume_from(ch: &Channel, queue: &str, tag: &str, offset: AMQPValue) -> Consumer {
    ch.basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        args,
    )
    .await
    .expect("consume")
}

fn stream_offset(d: &lapin::message::Delivery) -> Option<AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-stream-offset").cloned())
}

#[tokio::test]
async fn stream_consumers_read_every_record_from_their_own_position() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    declare_stream(&ch, "events").await;
    for i in 0..3 {
        publish(&ch, "", "events", &format!("e{i}")).await;
    }
    let mut from_first = consume_from(
        &ch,
        "events",
        "first",
        AMQPValue::LongString("first".into()),
    )
    .await;
    let mut from_next =
        consume_from(&ch, "events", "next", AMQPValue::LongString("next".into())).await;
    for i in 0..3 {
        let d = next(&mut from_first).await;
        assert_eq!(body(&d), format!("e{i}"));
        assert_eq!(stream_offset(&d), Some(AMQPValue::LongLongInt(i)));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    nothing_within(&mut from_next, 100).await;
    publish(&ch, "", "events", "e3").await;
    assert_eq!(body(&next(&mut from_first).await), "e3");
    assert_eq!(body(&next(&mut from_next).await), "e3");
    let mut from_two = consume_from(&ch, "events", "two", AMQPValue::LongLongInt(2)).await;
    assert_eq!(body(&next(&mut from_two).await), "e2");
}

#[tokio::test]
async fn stream_consumer_waits_for_acks_beyond_its_prefetch() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    declare_stream(&ch, "paced").await;
    for i in 0..4 {
        publish(&ch, "", "paced", &i.to_string()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut c = ch
        .basic_consume(
            "paced".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .expect("consume");
    let first = next(&mut c).await;
    let _second = next(&mut c).await;
    nothing_within(&mut c, 150).await;
    first.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(body(&next(&mut c).await), "2");
}

#[tokio::test]
async fn stream_consumer_without_prefetch_is_refused() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    declare_stream(&ch, "strict").await;
    let err = ch
        .basic_consume(
            "strict".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("needs qos");
    assert_eq!(reply_code(&err), Some(406));
}

#[tokio::test]
async fn kafka_records_reach_amqp_consumers_of_a_stream_queue() {
    let server = TestServer::start().await;
    let name = StreamName::new("kafka-orders").expect("name");
    server
        .router
        .create_stream(name.clone(), 1, Default::default())
        .await
        .expect("topic");
    let mut batch = BatchBuilder::new();
    batch.push(
        Record::new(
            Some(Bytes::from_static(b"k1")),
            Some(Bytes::from_static(b"v1")),
            1,
        )
        .with_header("content-type", Some(Bytes::from_static(b"text/plain")))
        .with_header("trace", Some(Bytes::from_static(b"t-1"))),
    );
    server
        .router
        .append(
            &TopicPartition::new(name, 0),
            vec![batch.build().expect("batch")],
            Durability::Sync,
        )
        .await
        .expect("append");

    let (_conn, ch) = server.channel().await;
    declare_stream(&ch, "kafka-orders").await;
    let mut c = consume_from(
        &ch,
        "kafka-orders",
        "c",
        AMQPValue::LongString("first".into()),
    )
    .await;
    let d = next(&mut c).await;
    assert_eq!(body(&d), "v1");
    assert_eq!(d.routing_key.as_str(), "k1");
    assert_eq!(
        d.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    let headers = d.properties.headers().clone().expect("headers");
    assert_eq!(
        headers.inner().get("trace"),
        Some(&AMQPValue::LongString("t-1".into()))
    );
}

#[tokio::test]
async fn amqp_publishes_to_a_stream_queue_are_records_kafka_can_read() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    declare_stream(&ch, "audit").await;
    ch.confirm_select(Default::default())
        .await
        .expect("confirm.select");
    let mut headers = FieldTable::default();
    headers.insert("user".into(), AMQPValue::LongString("alice".into()));
    ch.basic_publish(
        "".into(),
        "audit".into(),
        Default::default(),
        b"login",
        BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_headers(headers),
    )
    .await
    .expect("publish")
    .await
    .expect("confirmed: the record is stored");
    let tp = TopicPartition::new(StreamName::new("audit").expect("name"), 0);
    let chunk = server.router.read(&tp, 0, 1 << 20).await.expect("read");
    let batch = RecordBatch::parse(chunk.batches[0].clone()).expect("batch");
    let records = batch.records().expect("records");
    let r = &records[0];
    assert_eq!(r.key.as_deref(), Some(&b"audit"[..]));
    assert_eq!(r.value.as_deref(), Some(&b"login"[..]));
    let header = |k: &str| r.header(k).and_then(|h| h.value.clone());
    assert_eq!(header("content-type").as_deref(), Some(&b"text/plain"[..]));
    assert_eq!(header("user").as_deref(), Some(&b"alice"[..]));
    assert_eq!(header("amqp.delivery-mode").as_deref(), Some(&b"2"[..]));
    assert_eq!(header("amqp.exchange").as_deref(), Some(&b""[..]));
}

#[tokio::test]
async fn a_stream_queue_needs_a_valid_stream_name() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    let err = ch
        .queue_declare(
            "bad name/with slash".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect_err("invalid");
    assert_eq!(reply_code(&err), Some(406));
}
