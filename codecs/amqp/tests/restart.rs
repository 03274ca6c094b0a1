//! What AMQP keeps across a server restart: durable exchanges, queues and bindings, and the
//! persistent messages of durable queues that were not acknowledged.

mod common;

use common::{TestServer, body, consume, next, nothing_within};
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, ExchangeKind};

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn publish_confirmed(ch: &lapin::Channel, body: &str, persistent: bool) {
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let c = ch
        .basic_publish(
            "orders".into(),
            "eu".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(matches!(c, Confirmation::Ack(None)), "{c:?}");
}

#[tokio::test]
async fn durable_queue_keeps_its_persistent_messages_and_bindings_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path()).await;
    {
        let (conn, ch) = server.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        ch.exchange_declare(
            "orders".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange.declare");
        ch.queue_declare("eu-orders".into(), durable(), FieldTable::default())
            .await
            .expect("queue.declare");
        ch.queue_bind(
            "eu-orders".into(),
            "orders".into(),
            "eu".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue.bind");
        for i in 0..5 {
            publish_confirmed(&ch, &format!("p{i}"), true).await;
        }
        publish_confirmed(&ch, "transient", false).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let m = ch
                .basic_get("eu-orders".into(), Default::default())
                .await
                .expect("get")
                .expect("a message");
            got.push(m.delivery);
        }
        got[0].ack(BasicAckOptions::default()).await.expect("ack");
        got[1].ack(BasicAckOptions::default()).await.expect("ack");
        // p2 stays unacknowledged when the server stops: it comes back redelivered.
        conn.close(200, "bye".into()).await.expect("close");
    }
    server.stop().await;

    let server = TestServer::start_in(dir.path()).await;
    let (_conn, ch) = server.channel().await;
    let ok = ch
        .queue_declare(
            "eu-orders".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the queue is back");
    assert_eq!(
        ok.message_count(),
        3,
        "p2, p3 and p4; not the transient one"
    );
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    publish_confirmed(&ch, "after", true).await;
    let mut c = consume(&ch, "eu-orders", "c", 0).await;
    let p2 = next(&mut c).await;
    assert_eq!(body(&p2), "p2");
    assert!(p2.redelivered, "p2 was delivered before the restart");
    let p3 = next(&mut c).await;
    assert_eq!(body(&p3), "p3");
    assert!(!p3.redelivered, "p3 was never delivered");
    assert_eq!(body(&next(&mut c).await), "p4");
    assert_eq!(
        body(&next(&mut c).await),
        "after",
        "the binding survived the restart"
    );
    nothing_within(&mut c, 100).await;
    server.stop().await;
}

#[tokio::test]
async fn deleted_durable_queue_stays_deleted_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path()).await;
    {
        let (_conn, ch) = server.channel().await;
        ch.queue_declare("gone".into(), durable(), FieldTable::default())
            .await
            .expect("declare");
        ch.queue_declare("kept".into(), durable(), FieldTable::default())
            .await
            .expect("declare");
        ch.queue_delete("gone".into(), Default::default())
            .await
            .expect("delete");
    }
    server.stop().await;
    let server = TestServer::start_in(dir.path()).await;
    let vhost = server.broker.vhost("/").expect("vhost");
    assert!(vhost.queue("kept").is_some());
    assert!(vhost.queue("gone").is_none());
    server.stop().await;
}
