//! Publisher flow control through lapin: a publisher faster than the consumers of its queue is
//! paused near the queue's high-water mark and loses nothing, and connections whose reading a
//! queue waits for (their own consumers' acks) are never stuck.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestServer, WAIT, consume, declare, next};
use futures_util::future::join_all;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};
use switchboard_amqp::{AmqpSettings, FlowSettings};

/// Limits small enough for a test, and a pause bound long enough that a publisher resumed by
/// anything but its queue draining would fail the test's bounded waits.
fn flow(high: u64, max_pause: Duration) -> AmqpSettings {
    AmqpSettings {
        flow: FlowSettings {
            high_messages: high,
            low_messages: high / 2,
            high_bytes: 0,
            low_bytes: 0,
            max_pause,
        },
        ..AmqpSettings::default()
    }
}

/// Publishes `bodies` to `queue` without waiting in between (the confirms are awaited later),
/// as a publisher with an unbounded confirm window does.
async fn publish_all(
    ch: &Channel,
    queue: &str,
    bodies: impl Iterator<Item = u32>,
) -> Vec<PublisherConfirm> {
    let mut confirms = Vec::new();
    for i in bodies {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("basic.publish");
        confirms.push(confirm);
    }
    confirms
}

async fn all_acked(confirms: Vec<PublisherConfirm>) {
    let confirmed = tokio::time::timeout(WAIT, join_all(confirms))
        .await
        .expect("every publish confirmed in time");
    for c in confirmed {
        assert!(matches!(c.expect("confirm"), Confirmation::Ack(_)));
    }
}

/// Takes `n` deliveries from `consumer`, acking each, and counts how often each body came.
async fn receive_into(consumer: &mut lapin::Consumer, n: usize, seen: &mut BTreeMap<u32, u32>) {
    for _ in 0..n {
        let d = next(consumer).await;
        assert!(!d.redelivered, "nothing is redelivered");
        count(seen, &d);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

async fn receive(consumer: &mut lapin::Consumer, n: usize) -> BTreeMap<u32, u32> {
    let mut seen = BTreeMap::new();
    receive_into(consumer, n, &mut seen).await;
    seen
}

fn count(seen: &mut BTreeMap<u32, u32>, d: &lapin::message::Delivery) {
    let body: u32 = common::body(d).parse().expect("a number");
    *seen.entry(body).or_insert(0) += 1;
}

fn exactly_once(seen: &BTreeMap<u32, u32>, bodies: std::ops::Range<u32>) {
    let expected: BTreeMap<u32, u32> = bodies.map(|i| (i, 1)).collect();
    assert_eq!(seen, &expected, "every message exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_publisher_is_held_near_the_high_water_mark_and_loses_nothing() {
    const HIGH: u64 = 200;
    const MESSAGES: u32 = 5000;
    let server = TestServer::start_with(flow(HIGH, Duration::from_secs(60))).await;
    let (_cc, consumer_ch) = server.channel().await;
    let q = declare(&consumer_ch, "flow", FieldTable::default()).await;
    let mut consumer = consume(&consumer_ch, &q, "slow", 10).await;
    let queue = server
        .broker
        .vhost("/")
        .expect("vhost")
        .queue(&q)
        .expect("queue");

    // The largest backlog seen while the run lasts.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (queue, done) = (queue.clone(), done.clone());
        async move {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                most = most.max(queue.message_count());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        }
    });

    // A slow consumer: a millisecond's nap every five messages.
    let consuming = tokio::spawn(async move {
        let mut seen = BTreeMap::new();
        for i in 0..MESSAGES {
            receive_into(&mut consumer, 1, &mut seen).await;
            if i % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        (seen, consumer)
    });

    let (_pc, publisher) = server.channel().await;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let confirms = publish_all(&publisher, &q, 0..MESSAGES).await;
    all_acked(confirms).await;
    let (seen, mut consumer) = tokio::time::timeout(WAIT, consuming)
        .await
        .expect("everything consumed in time")
        .expect("consumer task");
    done.store(true, Ordering::Relaxed);
    let most = sampler.await.expect("sampler");

    exactly_once(&seen, 0..MESSAGES);
    common::nothing_within(&mut consumer, 100).await;
    let metrics = &server.broker.metrics;
    assert!(metrics.flow_pauses.get() > 0, "the publisher was paused");
    assert_eq!(
        metrics.flow_pauses_timed_out.get(),
        0,
        "each pause ended because the queue drained"
    );
    // Past the mark by at most one round of frames (1024: 341 messages of three frames), far
    // below the 5000 an unthrottled publisher piles up.
    assert!(most <= HIGH as u32 + 500, "backlog reached {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_consumes_its_own_queue_is_not_paused_by_it() {
    const MESSAGES: u32 = 2000;
    // A pause would only end after a minute: longer than the test may wait.
    let server = TestServer::start_with(flow(50, Duration::from_secs(60))).await;
    let conn = server.connect().await;
    let consumer_ch = conn.create_channel().await.expect("channel");
    let publisher = conn.create_channel().await.expect("channel");
    let q = declare(&consumer_ch, "own", FieldTable::default()).await;
    let mut consumer = consume(&consumer_ch, &q, "own", 10).await;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");

    let consuming = tokio::spawn(async move { receive(&mut consumer, MESSAGES as usize).await });
    let confirms = publish_all(&publisher, &q, 0..MESSAGES).await;
    all_acked(confirms).await;
    let seen = tokio::time::timeout(WAIT, consuming)
        .await
        .expect("everything consumed in time")
        .expect("consumer task");

    exactly_once(&seen, 0..MESSAGES);
    assert_eq!(server.broker.metrics.flow_pauses.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_waiting_for_each_others_acks_go_on_after_the_longest_pause() {
    const MESSAGES: u32 = 1000;
    let server = TestServer::start_with(flow(50, Duration::from_millis(100))).await;
    // A consumes `a` and publishes into `b`; B consumes `b` and publishes into `a`. Paused
    // together, neither would read the acks that the other's queue waits for.
    let (a, b) = (server.connect().await, server.connect().await);
    let mut setup = Vec::new();
    for (conn, consumes) in [(&a, "a"), (&b, "b")] {
        let consumer_ch = conn.create_channel().await.expect("channel");
        declare(&consumer_ch, consumes, FieldTable::default()).await;
        let consumer = consume(&consumer_ch, consumes, consumes, 10).await;
        let publisher = conn.create_channel().await.expect("channel");
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        setup.push((consumer_ch, consumer, publisher));
    }
    let mut consuming = Vec::new();
    let mut publishing = Vec::new();
    for ((_ch, mut consumer, publisher), into) in setup.into_iter().zip(["b", "a"]) {
        consuming.push(tokio::spawn(async move {
            receive(&mut consumer, MESSAGES as usize).await
        }));
        publishing.push(tokio::spawn(async move {
            let confirms = publish_all(&publisher, into, 0..MESSAGES).await;
            all_acked(confirms).await;
            publisher
        }));
    }
    for p in publishing {
        p.await.expect("publisher task");
    }
    for c in consuming {
        let seen = tokio::time::timeout(WAIT, c)
            .await
            .expect("everything consumed in time")
            .expect("consumer task");
        exactly_once(&seen, 0..MESSAGES);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_publisher_keeps_its_heartbeats_and_resumes_when_the_queue_drains() {
    const MESSAGES: u32 = 500;
    let settings = AmqpSettings {
        heartbeat: Duration::from_secs(1),
        ..flow(20, Duration::from_secs(60))
    };
    let server = TestServer::start_with(settings).await;
    let connect = || async {
        let uri = format!("{}?heartbeat=1", server.uri());
        tokio::time::timeout(
            WAIT,
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    };
    let consumer_conn = connect().await;
    let consumer_ch = consumer_conn.create_channel().await.expect("channel");
    let q = declare(&consumer_ch, "stalled", FieldTable::default()).await;
    let mut consumer = consume(&consumer_ch, &q, "stalled", 1).await;
    let publisher_conn = connect().await;
    let publisher = publisher_conn.create_channel().await.expect("channel");
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");

    // The consumer holds its one delivery unacknowledged: the queue fills and stays full.
    let confirms = publish_all(&publisher, &q, 0..MESSAGES).await;
    let first = next(&mut consumer).await;
    let paused = async {
        while server.broker.metrics.flow_pauses.get() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, paused)
        .await
        .expect("the publisher is paused");

    // Three heartbeat intervals with the publisher's socket unread: nobody times out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        publisher_conn.status().connected(),
        "publisher still connected"
    );
    assert!(
        consumer_conn.status().connected(),
        "consumer still connected"
    );
    assert_eq!(server.broker.metrics.closed_by_server.get(), 0);

    // The consumer catches up: the queue drains and the publisher goes on.
    first.ack(BasicAckOptions::default()).await.expect("ack");
    let mut seen = BTreeMap::new();
    count(&mut seen, &first);
    receive_into(&mut consumer, MESSAGES as usize - 1, &mut seen).await;
    all_acked(confirms).await;
    exactly_once(&seen, 0..MESSAGES);
    assert_eq!(server.broker.metrics.flow_pauses_timed_out.get(), 0);
}
