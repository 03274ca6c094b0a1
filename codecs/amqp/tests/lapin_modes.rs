//! lapin against the AMQP front end: publisher confirms, mandatory returns, transactions,
//! exclusive and deleted queues, and channel exceptions that leave the connection open.

mod common;

use common::{TestServer, body, consume, declare, next, nothing_within, publish, reply_code};
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ConnectionProperties};

async fn confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    body: &str,
    mandatory: bool,
) -> Confirmation {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions {
            mandatory,
            ..Default::default()
        },
        body.as_bytes(),
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirmation")
}

#[tokio::test]
async fn confirms_ack_every_stored_message() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let q = declare(&ch, "confirmed", FieldTable::default()).await;
    for i in 0..20 {
        let c = confirmed(&ch, "", &q, &i.to_string(), false).await;
        assert!(matches!(c, Confirmation::Ack(None)), "{c:?}");
    }
    let mut c = consume(&ch, &q, "", 0).await;
    assert_eq!(body(&next(&mut c).await), "0");
}

#[tokio::test]
async fn mandatory_unroutable_message_is_returned_with_no_route() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let c = confirmed(&ch, "amq.direct", "nobody", "lost", true).await;
    let Confirmation::Ack(Some(returned)) = c else {
        panic!("expected an ack with a returned message, got {c:?}");
    };
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"lost");
}

#[tokio::test]
async fn reject_publish_overflow_is_nacked() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let q = declare(&ch, "full", args).await;
    assert!(matches!(
        confirmed(&ch, "", &q, "1", false).await,
        Confirmation::Ack(_)
    ));
    assert!(matches!(
        confirmed(&ch, "", &q, "2", false).await,
        Confirmation::Nack(_)
    ));
}

#[tokio::test]
async fn tx_commit_publishes_and_rollback_discards() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "txq", FieldTable::default()).await;
    ch.tx_select().await.expect("tx.select");
    publish(&ch, "", &q, "rolled back").await;
    ch.tx_rollback().await.expect("tx.rollback");
    publish(&ch, "", &q, "committed").await;
    let (_other, watcher) = server.channel().await;
    let mut c = consume(&watcher, &q, "w", 0).await;
    nothing_within(&mut c, 100).await;
    ch.tx_commit().await.expect("tx.commit");
    assert_eq!(body(&next(&mut c).await), "committed");
    nothing_within(&mut c, 100).await;
}

#[tokio::test]
async fn tx_holds_acks_until_commit() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "txack", FieldTable::default()).await;
    publish(&ch, "", &q, "m").await;
    ch.tx_select().await.expect("tx.select");
    let mut c = consume(&ch, &q, "c", 0).await;
    let d = next(&mut c).await;
    d.ack(BasicAckOptions::default()).await.expect("ack");
    ch.tx_rollback().await.expect("rollback drops the ack");
    ch.basic_recover(Default::default()).await.expect("recover");
    let again = next(&mut c).await;
    assert!(again.redelivered);
    again.ack(BasicAckOptions::default()).await.expect("ack");
    ch.tx_commit().await.expect("commit");
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection_and_deleted_with_it() {
    let server = TestServer::start().await;
    let (owner, ch) = server.channel().await;
    ch.queue_declare(
        "mine".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let (_other, ch2) = server.channel().await;
    let err = ch2
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("locked");
    assert_eq!(reply_code(&err), Some(405));
    owner.close(200, "bye".into()).await.expect("close");
    let ch3 = _other.create_channel().await.expect("channel");
    let err = ch3
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("gone");
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers() {
    let server = TestServer::start().await;
    let conn = lapin::Connection::connect(&server.uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = declare(&ch, "doomed", FieldTable::default()).await;
    let mut c = consume(&ch, &q, "victim", 0).await;
    let (_other, ch2) = server.channel().await;
    ch2.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    // lapin ends the consumer's stream when the server cancels it.
    let end = tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut c))
        .await
        .expect("cancel in time");
    assert!(end.is_none(), "consumer stream should end, got {end:?}");
}

#[tokio::test]
async fn missing_queue_closes_the_channel_with_404_but_not_the_connection() {
    let server = TestServer::start().await;
    let (conn, ch) = server.channel().await;
    let err = ch
        .queue_declare(
            "nope".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("404");
    assert_eq!(reply_code(&err), Some(404));
    assert!(conn.status().connected());
    let ch2 = conn.create_channel().await.expect("a new channel works");
    let q = declare(&ch2, "fine", FieldTable::default()).await;
    assert_eq!(q, "fine");
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_closes_the_channel_with_404() {
    let server = TestServer::start().await;
    let (conn, ch) = server.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let result = ch
        .basic_publish(
            "no-such-exchange".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let err = match result {
        Ok(confirm) => confirm.await.expect_err("channel closed"),
        Err(e) => e,
    };
    assert_eq!(reply_code(&err), Some(404));
    assert!(conn.status().connected());
}

#[tokio::test]
async fn redeclaring_with_other_arguments_is_precondition_failed() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    declare(&ch, "shape", FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    let err = ch
        .queue_declare("shape".into(), QueueDeclareOptions::default(), args)
        .await
        .expect_err("inequivalent");
    assert_eq!(reply_code(&err), Some(406));
}

#[tokio::test]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    ch.queue_declare(
        "temp".into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let _c1 = consume(&ch, "temp", "c1", 0).await;
    let _c2 = consume(&ch, "temp", "c2", 0).await;
    let vhost = server.broker.vhost("/").expect("vhost");
    ch.basic_cancel("c1".into(), Default::default())
        .await
        .expect("cancel");
    assert!(vhost.queue("temp").is_some(), "one consumer is left");
    ch.basic_cancel("c2".into(), Default::default())
        .await
        .expect("cancel");
    assert!(
        vhost.queue("temp").is_none(),
        "deleted with its last consumer"
    );
}

#[tokio::test]
async fn queue_with_x_expires_is_deleted_once_unused() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(100));
    declare(&ch, "fleeting", args).await;
    let vhost = server.broker.vhost("/").expect("vhost");
    assert!(vhost.queue("fleeting").is_some());
    let gone = tokio::time::timeout(common::WAIT, async {
        while vhost.queue("fleeting").is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "expired in time");
}

#[tokio::test]
async fn exclusive_consumer_keeps_others_out() {
    let server = TestServer::start().await;
    let (_conn, ch) = server.channel().await;
    let q = declare(&ch, "solo", FieldTable::default()).await;
    let _solo = ch
        .basic_consume(
            q.as_str().into(),
            "solo".into(),
            lapin::options::BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exclusive consume");
    let (_other, ch2) = server.channel().await;
    let err = ch2
        .basic_consume(
            q.as_str().into(),
            "second".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(reply_code(&err), Some(403));
}
