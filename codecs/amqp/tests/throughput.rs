//! A quick throughput run, ignored by default:
//! `cargo test -p switchboard-amqp --release --test throughput -- --ignored --nocapture`.
//! One lapin connection publishes with confirms (pipelined, all confirmations awaited), another
//! consumes with a prefetch of 1000 and acks every 100th delivery with `multiple`.

mod common;

use std::time::Instant;

use common::{TestServer, declare, next};
use futures_util::future::join_all;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

const MESSAGES: usize = 50_000;
const BODY: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn confirmed_publish_and_consume_throughput() {
    let server = TestServer::start().await;
    let (_pc, publisher) = server.channel().await;
    let (_cc, consumer_ch) = server.channel().await;
    let q = declare(&publisher, "bench", FieldTable::default()).await;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let mut consumer = common::consume(&consumer_ch, &q, "bench", 1000).await;
    let consume = tokio::spawn(async move {
        let started = Instant::now();
        for i in 1..=MESSAGES {
            let d = next(&mut consumer).await;
            if i % 100 == 0 {
                d.ack(BasicAckOptions { multiple: true })
                    .await
                    .expect("ack");
            }
        }
        started.elapsed()
    });
    let body = vec![b'x'; BODY];
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(1000);
    for i in 0..MESSAGES {
        let confirm = publisher
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
        if confirms.len() == 1000 || i + 1 == MESSAGES {
            for c in join_all(confirms.drain(..)).await {
                assert!(matches!(c.expect("confirm"), Confirmation::Ack(_)));
            }
        }
    }
    let published = started.elapsed();
    let consumed = consume.await.expect("consumer");
    println!(
        "{MESSAGES} x {BODY} B: publish+confirm {:.0} msg/s, consume {:.0} msg/s",
        MESSAGES as f64 / published.as_secs_f64(),
        MESSAGES as f64 / consumed.as_secs_f64()
    );
}
