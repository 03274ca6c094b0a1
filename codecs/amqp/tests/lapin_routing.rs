//! lapin against the AMQP front end: handshake, declares, and routing through each exchange
//! type, exchange-to-exchange bindings and the default exchange.

mod common;

use common::{TestServer, body, consume, declare, next, nothing_within, publish};
use lapin::options::{
    BasicAckOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

async fn exchange(ch: &lapin::Channel, name: &str, kind: ExchangeKind) {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
}

async fn bind(ch: &lapin::Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .expect("queue.bind");
}

#[tokio::test]
async fn lapin_connects_and_opens_channels() {
    let server = TestServer::start().await;
    let conn = server.connect().await;
    let a = conn.create_channel().await.expect("channel a");
    let b = conn.create_channel().await.expect("channel b");
    assert_ne!(a.id(), b.id());
    a.close(200, "bye".into()).await.expect("channel close");
    conn.close(200, "bye".into())
        .await
        .expect("connection close");
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name_and_ack_settles() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "work", FieldTable::default()).await;
    publish(&ch, "", &q, "hello").await;
    let mut consumer = consume(&ch, &q, "c1", 0).await;
    let d = next(&mut consumer).await;
    assert_eq!(body(&d), "hello");
    assert!(!d.redelivered);
    assert_eq!(d.routing_key.as_str(), "work");
    d.ack(BasicAckOptions::default()).await.expect("ack");
    let ok = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    assert_eq!(ok.message_count(), 0);
    assert_eq!(ok.consumer_count(), 1);
}

#[tokio::test]
async fn server_named_queues_start_with_amq_gen() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "", FieldTable::default()).await;
    assert!(q.starts_with("amq.gen-"), "{q}");
    assert_eq!(q.len(), "amq.gen-".len() + 22);
}

#[tokio::test]
async fn direct_exchange_routes_on_the_exact_key() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    exchange(&ch, "orders", ExchangeKind::Direct).await;
    let q = declare(&ch, "paris", FieldTable::default()).await;
    bind(&ch, &q, "orders", "eu.paris", FieldTable::default()).await;
    let mut c = consume(&ch, &q, "", 0).await;
    publish(&ch, "orders", "eu.berlin", "no").await;
    publish(&ch, "orders", "eu.paris", "yes").await;
    assert_eq!(body(&next(&mut c).await), "yes");
    nothing_within(&mut c, 100).await;
}

#[tokio::test]
async fn fanout_exchange_copies_to_every_bound_queue() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    exchange(&ch, "news", ExchangeKind::Fanout).await;
    let a = declare(&ch, "a", FieldTable::default()).await;
    let b = declare(&ch, "b", FieldTable::default()).await;
    bind(&ch, &a, "news", "", FieldTable::default()).await;
    bind(&ch, &b, "news", "ignored", FieldTable::default()).await;
    publish(&ch, "news", "whatever", "flash").await;
    let mut ca = consume(&ch, &a, "ca", 0).await;
    let mut cb = consume(&ch, &b, "cb", 0).await;
    assert_eq!(body(&next(&mut ca).await), "flash");
    assert_eq!(body(&next(&mut cb).await), "flash");
}

#[tokio::test]
async fn topic_exchange_matches_star_and_hash() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "temps", FieldTable::default()).await;
    bind(
        &ch,
        &q,
        "amq.topic",
        "sensors.*.temp",
        FieldTable::default(),
    )
    .await;
    bind(&ch, &q, "amq.topic", "alerts.#", FieldTable::default()).await;
    let mut c = consume(&ch, &q, "", 0).await;
    publish(&ch, "amq.topic", "sensors.kitchen.temp", "1").await;
    publish(&ch, "amq.topic", "sensors.kitchen.humidity", "x").await;
    publish(&ch, "amq.topic", "alerts", "2").await;
    publish(&ch, "amq.topic", "alerts.fire.floor1", "3").await;
    for want in ["1", "2", "3"] {
        assert_eq!(body(&next(&mut c).await), want);
    }
    nothing_within(&mut c, 100).await;
}

#[tokio::test]
async fn headers_exchange_matches_all_or_any() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let all = declare(&ch, "all", FieldTable::default()).await;
    let any = declare(&ch, "any", FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("format".into(), AMQPValue::LongString("pdf".into()));
    args.insert("type".into(), AMQPValue::LongString("report".into()));
    bind(&ch, &all, "amq.headers", "", args.clone()).await;
    args.insert("x-match".into(), AMQPValue::LongString("any".into()));
    bind(&ch, &any, "amq.headers", "", args).await;
    let mut headers = FieldTable::default();
    headers.insert("format".into(), AMQPValue::LongString("pdf".into()));
    ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        Default::default(),
        b"only format",
        BasicProperties::default().with_headers(headers.clone()),
    )
    .await
    .expect("publish")
    .await
    .expect("sent");
    headers.insert("type".into(), AMQPValue::LongString("report".into()));
    ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        Default::default(),
        b"both",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .expect("publish")
    .await
    .expect("sent");
    let mut c_all = consume(&ch, &all, "all", 0).await;
    let mut c_any = consume(&ch, &any, "any", 0).await;
    assert_eq!(body(&next(&mut c_all).await), "both");
    nothing_within(&mut c_all, 100).await;
    assert_eq!(body(&next(&mut c_any).await), "only format");
    assert_eq!(body(&next(&mut c_any).await), "both");
}

#[tokio::test]
async fn exchange_to_exchange_binding_forwards_messages() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    exchange(&ch, "ingress", ExchangeKind::Topic).await;
    exchange(&ch, "audit", ExchangeKind::Fanout).await;
    ch.exchange_bind(
        "audit".into(),
        "ingress".into(),
        "orders.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.bind");
    let q = declare(&ch, "audit-log", FieldTable::default()).await;
    bind(&ch, &q, "audit", "", FieldTable::default()).await;
    let mut c = consume(&ch, &q, "", 0).await;
    publish(&ch, "ingress", "payments.in", "skip").await;
    publish(&ch, "ingress", "orders.new", "kept").await;
    let d = next(&mut c).await;
    assert_eq!(body(&d), "kept");
    assert_eq!(d.exchange.as_str(), "ingress");
    assert_eq!(d.routing_key.as_str(), "orders.new");
    nothing_within(&mut c, 100).await;
}

#[tokio::test]
async fn basic_properties_arrive_intact() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "props", FieldTable::default()).await;
    let mut headers = FieldTable::default();
    headers.insert("x-n".into(), AMQPValue::LongLongInt(42));
    headers.insert("who".into(), AMQPValue::LongString("alice".into()));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("identity".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("mid".into())
        .with_timestamp(1_700_000_000)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("app".into());
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"{}",
        props.clone(),
    )
    .await
    .expect("publish")
    .await
    .expect("sent");
    let mut c = consume(&ch, &q, "", 0).await;
    let d = next(&mut c).await;
    assert_eq!(d.properties, props);
}

#[tokio::test]
async fn large_messages_are_split_and_joined_at_frame_max() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "big", FieldTable::default()).await;
    let big = "x".repeat(1_000_000);
    publish(&ch, "", &q, &big).await;
    let mut c = consume(&ch, &q, "", 0).await;
    assert_eq!(body(&next(&mut c).await).len(), big.len());
}
