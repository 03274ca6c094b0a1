//! lapin against the AMQP front end: prefetch, acks, nacks, rejects, recover, basic.get,
//! dead-lettering, TTL and length limits.

mod common;

use std::time::Duration;

use common::{TestServer, body, consume, declare, next, nothing_within, publish};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions, BasicRecoverOptions,
    BasicRejectOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};

fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries_until_acks_free_credit() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "pf", FieldTable::default()).await;
    for i in 0..5 {
        publish(&ch, "", &q, &i.to_string()).await;
    }
    let mut c = consume(&ch, &q, "c", 2).await;
    let first = next(&mut c).await;
    let second = next(&mut c).await;
    nothing_within(&mut c, 150).await;
    first.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(body(&next(&mut c).await), "2");
    nothing_within(&mut c, 100).await;
    second.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(body(&next(&mut c).await), "3");
}

#[tokio::test]
async fn global_qos_limits_the_whole_channel() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let a = declare(&ch, "ga", FieldTable::default()).await;
    let b = declare(&ch, "gb", FieldTable::default()).await;
    for i in 0..3 {
        publish(&ch, "", &a, &format!("a{i}")).await;
        publish(&ch, "", &b, &format!("b{i}")).await;
    }
    ch.basic_qos(2, BasicQosOptions { global: true })
        .await
        .expect("qos");
    let mut ca = consume(&ch, &a, "ca", 0).await;
    let mut cb = consume(&ch, &b, "cb", 0).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        tokio::select! {
            d = async { next(&mut ca).await } => got.push(d),
            d = async { next(&mut cb).await } => got.push(d),
        }
    }
    nothing_within(&mut ca, 100).await;
    nothing_within(&mut cb, 100).await;
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn ack_multiple_settles_every_earlier_delivery() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "multi", FieldTable::default()).await;
    for i in 0..4 {
        publish(&ch, "", &q, &i.to_string()).await;
    }
    let mut c = consume(&ch, &q, "c", 0).await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(next(&mut c).await);
    }
    let _fourth = next(&mut c).await;
    last.expect("third")
        .ack(BasicAckOptions { multiple: true })
        .await
        .expect("ack multiple");
    // Three settled, one still held: a recover brings back exactly that one.
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .expect("recover");
    let again = next(&mut c).await;
    assert_eq!(body(&again), "3");
    assert!(again.redelivered);
}

#[tokio::test]
async fn nack_with_requeue_redelivers_with_the_redelivered_flag() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "nq", FieldTable::default()).await;
    publish(&ch, "", &q, "m").await;
    let mut c = consume(&ch, &q, "c", 1).await;
    let d = next(&mut c).await;
    assert!(!d.redelivered);
    d.nack(BasicNackOptions {
        multiple: false,
        requeue: true,
    })
    .await
    .expect("nack");
    let again = next(&mut c).await;
    assert_eq!(body(&again), "m");
    assert!(again.redelivered);
}

#[tokio::test]
async fn reject_without_requeue_dead_letters_with_x_death() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let dead = declare(&ch, "dead", FieldTable::default()).await;
    ch.queue_bind(
        dead.as_str().into(),
        "amq.direct".into(),
        "dead".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let q = declare(
        &ch,
        "jobs",
        args(&[
            ("x-dead-letter-exchange", text("amq.direct")),
            ("x-dead-letter-routing-key", text("dead")),
        ]),
    )
    .await;
    publish(&ch, "", &q, "poison").await;
    let mut c = consume(&ch, &q, "c", 1).await;
    next(&mut c)
        .await
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject");
    let mut dc = consume(&ch, &dead, "dc", 0).await;
    let d = next(&mut dc).await;
    assert_eq!(body(&d), "poison");
    let headers = d.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death in {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("x-death is empty");
    };
    assert_eq!(death.inner().get("reason"), Some(&text("rejected")));
    assert_eq!(death.inner().get("queue"), Some(&text("jobs")));
    assert_eq!(death.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_without_any_consumer() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let dead = declare(&ch, "expired", FieldTable::default()).await;
    let q = declare(
        &ch,
        "short-lived",
        args(&[
            ("x-message-ttl", AMQPValue::LongInt(50)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("expired")),
        ]),
    )
    .await;
    let mut dc = consume(&ch, &dead, "dc", 0).await;
    publish(&ch, "", &q, "late").await;
    let d = next(&mut dc).await;
    assert_eq!(body(&d), "late");
    let headers = d.properties.headers().clone().expect("headers");
    assert_eq!(
        headers.inner().get("x-first-death-reason"),
        Some(&text("expired"))
    );
}

#[tokio::test]
async fn max_length_drops_the_oldest_messages() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(
        &ch,
        "bounded",
        args(&[("x-max-length", AMQPValue::LongInt(2))]),
    )
    .await;
    for i in 0..5 {
        publish(&ch, "", &q, &i.to_string()).await;
    }
    let mut c = consume(&ch, &q, "c", 0).await;
    assert_eq!(body(&next(&mut c).await), "3");
    assert_eq!(body(&next(&mut c).await), "4");
    nothing_within(&mut c, 100).await;
}

#[tokio::test]
async fn basic_get_takes_one_message_and_reports_the_rest() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "pull", FieldTable::default()).await;
    assert!(
        ch.basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .expect("get")
            .is_none()
    );
    publish(&ch, "", &q, "a").await;
    publish(&ch, "", &q, "b").await;
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(got.delivery.data, b"a");
    assert_eq!(got.message_count, 1);
    got.delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
}

#[tokio::test]
async fn unacked_messages_return_when_the_connection_closes() {
    let server = TestServer::start().await;
    let (conn, ch) = server.channel().await;
    let q = declare(&ch, "held", FieldTable::default()).await;
    publish(&ch, "", &q, "x").await;
    let mut c = consume(&ch, &q, "c", 0).await;
    let _held = next(&mut c).await;
    conn.close(200, "bye".into()).await.expect("close");

    let (_conn2, ch2) = server.channel().await;
    let mut c2 = consume(&ch2, &q, "c2", 0).await;
    let d = next(&mut c2).await;
    assert_eq!(body(&d), "x");
    assert!(d.redelivered);
}

#[tokio::test]
async fn many_consumers_share_a_queue_round_robin() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "shared", FieldTable::default()).await;
    let mut c1 = consume(&ch, &q, "c1", 0).await;
    let mut c2 = consume(&ch, &q, "c2", 0).await;
    for i in 0..4 {
        publish(&ch, "", &q, &i.to_string()).await;
    }
    let (a, b) = (next(&mut c1).await, next(&mut c2).await);
    let (c, d) = (next(&mut c1).await, next(&mut c2).await);
    let mut all: Vec<String> = [a, b, c, d].iter().map(body).collect();
    all.sort();
    assert_eq!(all, ["0", "1", "2", "3"]);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
