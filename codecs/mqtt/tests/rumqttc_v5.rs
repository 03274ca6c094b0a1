//! MQTT 5 behaviour seen through rumqttc's v5 client.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, WAIT};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, LastWill, Packet, Publish, PublishProperties, RetainForwardRule,
    SubscribeProperties,
};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use switchboard_mqtt::broker::MqttSettings;
use tokio::sync::mpsc;

struct Client {
    client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<Publish>,
    events: mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

fn options(server: &TestServer, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", server.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

async fn connect(options: MqttOptions) -> Client {
    let (client, eventloop) = AsyncClient::new(options, 1000);
    let (ptx, publishes) = mpsc::unbounded_channel();
    let (etx, mut events) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(eventloop, ptx, etx));
    let first = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("connack in time");
    match first {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
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

    async fn wait_for(&mut self, what: &str, f: impl Fn(&Packet) -> bool) -> Packet {
        loop {
            let p = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{what} in time"))
                .unwrap_or_else(|| panic!("connection closed before {what}"));
            if f(&p) {
                return p;
            }
        }
    }

    async fn subscribe(&mut self, filter: Filter, properties: Option<SubscribeProperties>) {
        match properties {
            Some(p) => {
                self.client
                    .subscribe_many_with_properties([filter], p)
                    .await
            }
            None => self.client.subscribe_many([filter]).await,
        }
        .expect("subscribe");
        self.wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await;
    }

    async fn publish_acked(
        &mut self,
        topic: &str,
        retain: bool,
        payload: &str,
        properties: PublishProperties,
    ) {
        self.client
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                retain,
                payload.to_owned(),
                properties,
            )
            .await
            .expect("publish");
        self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)))
            .await;
    }

    async fn nothing_within(&mut self, d: Duration) {
        if let Ok(Some(p)) = tokio::time::timeout(d, self.publishes.recv()).await {
            panic!("unexpected publish {p:?}");
        }
    }
}

#[tokio::test]
async fn session_expiry_keeps_a_session_until_it_runs_out() {
    let server = TestServer::start().await;
    let mut o = options(&server, "expiring");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(1));
    let mut c = connect(o.clone()).await;
    c.subscribe(Filter::new("exp/t", QoS::AtLeastOnce), None)
        .await;
    c.client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(WAIT, c.task).await;
    // Within the interval the session is still there...
    let back = connect(o.clone()).await;
    back.client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(WAIT, back.task).await;
    // ...and after it, it is gone: publishes for it are not kept.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut publisher = connect(options(&server, "p")).await;
    publisher
        .publish_acked("exp/t", false, "late", PublishProperties::default())
        .await;
    let mut last = connect(o).await;
    last.nothing_within(Duration::from_millis(300)).await;
    assert_eq!(
        server.broker.session_count(),
        2,
        "only the two live clients keep sessions"
    );
}

#[tokio::test]
async fn subscription_identifiers_and_retain_handling() {
    let server = TestServer::start().await;
    let mut publisher = connect(options(&server, "p")).await;
    publisher
        .publish_acked("cfg/a", true, "v1", PublishProperties::default())
        .await;

    let mut c = connect(options(&server, "c")).await;
    let props = SubscribeProperties {
        id: Some(42),
        user_properties: vec![],
    };
    c.subscribe(Filter::new("cfg/+", QoS::AtLeastOnce), Some(props))
        .await;
    let retained = c.next().await;
    assert!(retained.retain);
    assert_eq!(
        retained.properties.map(|p| p.subscription_identifiers),
        Some(vec![42])
    );

    // Retain Handling 2: no retained messages at subscribe time.
    let mut never = connect(options(&server, "never")).await;
    let mut f = Filter::new("cfg/a", QoS::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::Never;
    never.subscribe(f, None).await;
    never.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_flag_on_live_messages() {
    let server = TestServer::start().await;
    let mut keep = connect(options(&server, "keep")).await;
    let mut f = Filter::new("rap/x", QoS::AtLeastOnce);
    f.preserve_retain = true;
    keep.subscribe(f, None).await;
    let mut plain = connect(options(&server, "plain")).await;
    plain
        .subscribe(Filter::new("rap/x", QoS::AtLeastOnce), None)
        .await;
    let mut publisher = connect(options(&server, "p")).await;
    publisher
        .publish_acked("rap/x", true, "r", PublishProperties::default())
        .await;
    assert!(keep.next().await.retain);
    assert!(!plain.next().await.retain);
}

#[tokio::test]
async fn expired_retained_message_is_not_delivered() {
    let server = TestServer::start().await;
    let mut publisher = connect(options(&server, "p")).await;
    let props = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    publisher
        .publish_acked("short/lived", true, "soon gone", props)
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut c = connect(options(&server, "c")).await;
    c.subscribe(Filter::new("short/lived", QoS::AtLeastOnce), None)
        .await;
    c.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn will_delay_is_cancelled_by_a_reconnect() {
    let server = TestServer::start().await;
    let mut watcher = connect(options(&server, "watcher")).await;
    watcher
        .subscribe(Filter::new("will/#", QoS::AtLeastOnce), None)
        .await;
    let mut o = options(&server, "flaky");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    let props = rumqttc::v5::mqttbytes::v5::LastWillProperties {
        delay_interval: Some(1),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    };
    o.set_last_will(LastWill::new(
        "will/flaky",
        "down",
        QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    let c = connect(o.clone()).await;
    c.task.abort();
    // Back within the delay: the will must never be published.
    let back = connect(o).await;
    watcher.nothing_within(Duration::from_millis(1500)).await;
    back.task.abort();
    // Gone for good this time: after the delay, the will arrives.
    let will = watcher.next().await;
    assert_eq!(will.payload, Bytes::from_static(b"down"));
}

#[tokio::test]
async fn anonymous_clients_are_refused_when_disabled() {
    let settings = MqttSettings {
        allow_anonymous: false,
        users: [("alice".to_owned(), "secret".to_owned())].into(),
        ..Default::default()
    };
    let server = TestServer::start_with(settings).await;
    for (creds, expected) in [
        (None, ConnectReturnCode::NotAuthorized),
        (
            Some(("alice", "wrong")),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ] {
        let mut o = options(&server, "intruder");
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        let (_client, mut eventloop) = AsyncClient::new(o, 10);
        let err = tokio::time::timeout(WAIT, eventloop.poll())
            .await
            .expect("answer in time")
            .expect_err("refused");
        assert!(
            format!("{err:?}").contains(&format!("{expected:?}")),
            "{err:?}"
        );
    }
    let mut o = options(&server, "alice");
    o.set_credentials("alice", "secret");
    connect(o).await;
}
