//! MQTT 3.1.1 behaviour seen through a real client library, rumqttc.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

/// A connected client whose event loop runs in the background, forwarding what it receives.
struct Client {
    client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<Publish>,
    events: mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

fn options(server: &TestServer, id: &str, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", server.addr.port());
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

async fn connect(options: MqttOptions) -> Client {
    let (client, eventloop) = AsyncClient::new(options, 1000);
    let (ptx, publishes) = mpsc::unbounded_channel();
    let (etx, mut events) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(eventloop, ptx, etx));
    // Wait for CONNACK so that the test's next step happens on a live session.
    let first = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("connack in time");
    assert!(matches!(first, Some(Packet::ConnAck(_))), "got {first:?}");
    Client {
        client,
        publishes,
        events,
        task,
    }
}

async fn drive(
    mut eventloop: EventLoop,
    publishes: mpsc::UnboundedSender<Publish>,
    events: mpsc::UnboundedSender<Packet>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = publishes.send(p);
            }
            Ok(Event::Incoming(p)) => {
                let _ = events.send(p);
            }
            Ok(Event::Outgoing(_)) => {}
            Err(_) => return,
        }
    }
}

impl Client {
    async fn next(&mut self) -> Publish {
        tokio::time::timeout(WAIT, self.publishes.recv())
            .await
            .expect("a publish in time")
            .expect("event loop alive")
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        loop {
            let p = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("suback in time");
            if matches!(p, Some(Packet::SubAck(_))) {
                return;
            }
        }
    }

    /// Publishes at QoS 1 and waits for the server's PUBACK.
    async fn publish_acked(&mut self, topic: &str, retain: bool, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_owned())
            .await
            .expect("publish");
        loop {
            let p = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("puback in time");
            if matches!(p, Some(Packet::PubAck(_))) {
                return;
            }
        }
    }

    async fn nothing_within(&mut self, d: Duration) {
        if let Ok(Some(p)) = tokio::time::timeout(d, self.publishes.recv()).await {
            panic!("unexpected publish on {}", p.topic);
        }
    }

    /// Ends the connection without DISCONNECT, as a crashed client would.
    fn drop_connection(self) {
        self.task.abort();
    }

    async fn disconnect(self) {
        self.client.disconnect().await.expect("disconnect");
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

#[tokio::test]
async fn messages_of_one_topic_arrive_in_order_at_every_qos() {
    let server = TestServer::start().await;
    let mut sub = connect(options(&server, "sub", true)).await;
    sub.subscribe("orders/#", QoS::ExactlyOnce).await;
    let publisher = connect(options(&server, "pub", true)).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for i in 0..50 {
            publisher
                .client
                .publish("orders/eu", qos, false, format!("{qos:?}-{i}"))
                .await
                .expect("publish");
        }
        for i in 0..50 {
            let p = sub.next().await;
            assert_eq!(p.topic, "orders/eu");
            assert_eq!(p.payload, format!("{qos:?}-{i}").as_bytes());
            assert_eq!(p.qos, qos);
        }
    }
}

#[tokio::test]
async fn wildcards_match_levels_and_skip_dollar_topics() {
    let server = TestServer::start().await;
    let mut all = connect(options(&server, "all", true)).await;
    all.subscribe("#", QoS::AtLeastOnce).await;
    let mut plus = connect(options(&server, "plus", true)).await;
    plus.subscribe("a/+/c", QoS::AtLeastOnce).await;
    let publisher = connect(options(&server, "pub", true)).await;
    for topic in ["$sys/x", "a/b/c", "a/b/c/d"] {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, "x")
            .await
            .expect("publish");
    }
    // Different topics may arrive in any order; each topic's own order is what MQTT keeps.
    let mut got = vec![all.next().await.topic, all.next().await.topic];
    got.sort();
    assert_eq!(got, ["a/b/c", "a/b/c/d"]);
    assert_eq!(plus.next().await.topic, "a/b/c");
    plus.nothing_within(Duration::from_millis(300)).await;
    all.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn retained_message_is_set_replaced_and_cleared() {
    let server = TestServer::start().await;
    let mut publisher = connect(options(&server, "pub", true)).await;
    publisher.publish_acked("state/door", true, "open").await;
    publisher.publish_acked("state/door", true, "closed").await;
    // A later subscriber, with a wildcard, gets the latest retained value flagged as retained.
    let mut first = connect(options(&server, "s1", true)).await;
    first.subscribe("state/+", QoS::AtLeastOnce).await;
    let p = first.next().await;
    assert_eq!((p.payload.as_ref(), p.retain), (&b"closed"[..], true));
    // An empty retained payload clears it.
    publisher.publish_acked("state/door", true, "").await;
    let cleared = first.next().await;
    assert!(cleared.payload.is_empty());
    let mut second = connect(options(&server, "s2", true)).await;
    second.subscribe("state/+", QoS::AtLeastOnce).await;
    second.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn persistent_session_receives_what_was_published_while_away() {
    let server = TestServer::start().await;
    let mut sub = connect(options(&server, "keeper", false)).await;
    sub.subscribe("jobs", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let publisher = connect(options(&server, "pub", true)).await;
    for i in 0..20 {
        publisher
            .client
            .publish("jobs", QoS::AtLeastOnce, false, format!("job-{i}"))
            .await
            .expect("publish");
    }
    // QoS 0 messages are not queued for an absent session.
    publisher
        .client
        .publish("jobs", QoS::AtMostOnce, false, "not-queued")
        .await
        .expect("publish");
    publisher.disconnect().await;
    let mut back = connect(options(&server, "keeper", false)).await;
    for i in 0..20 {
        assert_eq!(back.next().await.payload, format!("job-{i}").as_bytes());
    }
    back.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn clean_session_forgets_subscriptions() {
    let server = TestServer::start().await;
    let mut sub = connect(options(&server, "forgetful", true)).await;
    sub.subscribe("jobs", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let publisher = connect(options(&server, "pub", true)).await;
    publisher
        .client
        .publish("jobs", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    let mut back = connect(options(&server, "forgetful", true)).await;
    back.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn will_is_published_on_abrupt_close_but_not_after_disconnect() {
    let server = TestServer::start().await;
    let mut watcher = connect(options(&server, "watcher", true)).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let mut polite = options(&server, "polite", true);
    polite.set_last_will(LastWill::new(
        "wills/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    connect(polite).await.disconnect().await;

    let mut crashing = options(&server, "crashing", true);
    crashing.set_last_will(LastWill::new(
        "wills/crashing",
        "lost",
        QoS::AtLeastOnce,
        true,
    ));
    connect(crashing).await.drop_connection();

    let will = watcher.next().await;
    assert_eq!(will.topic, "wills/crashing");
    assert_eq!(will.payload, &b"lost"[..]);
    watcher.nothing_within(Duration::from_millis(300)).await;
    // The will was retained: a new subscriber gets it.
    let mut late = connect(options(&server, "late", true)).await;
    late.subscribe("wills/crashing", QoS::AtLeastOnce).await;
    assert!(late.next().await.retain);
}

#[tokio::test]
async fn a_second_connection_with_the_same_id_takes_over() {
    let server = TestServer::start().await;
    let mut first = connect(options(&server, "twin", false)).await;
    first.subscribe("t", QoS::AtLeastOnce).await;
    let mut second = connect(options(&server, "twin", false)).await;
    // The first connection is closed by the server: its event loop ends.
    tokio::time::timeout(WAIT, &mut first.task)
        .await
        .expect("first connection closed")
        .ok();
    // The session (and its subscription) carried over to the second connection.
    let publisher = connect(options(&server, "pub", true)).await;
    publisher
        .client
        .publish("t", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    assert_eq!(second.next().await.payload, &b"x"[..]);
}
