//! The session driven by frames, without sockets: what it writes for each step.

use std::sync::Arc;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{
    AMQPClass, BasicProperties, basic, channel as chan, confirm, connection, queue,
};
use switchboard_memory::MemoryStorage;
use switchboard_router::{MetaStore, Router};
use switchboard_storage::SharedStorage;
use switchboard_storage::fault::FaultyStorage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Phase, Session};
use crate::broker::AmqpBroker;
use crate::metrics::AmqpMetrics;
use crate::settings::AmqpSettings;
use crate::wire::{AMQPFrame, decode_frame};

struct Harness {
    session: Session,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn broker(storage: SharedStorage) -> (Arc<AmqpBroker>, tempfile::TempDir, CancellationToken) {
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = MetaStore::open(dir.path()).await.expect("meta");
    let router = Router::new(meta, storage);
    let cancel = CancellationToken::new();
    let broker = AmqpBroker::start(
        router,
        AmqpSettings::default(),
        AmqpMetrics::unregistered().expect("metrics"),
        cancel.clone(),
        TaskTracker::new(),
    )
    .await
    .expect("broker");
    (broker, dir, cancel)
}

impl Harness {
    async fn new() -> Self {
        Self::on(Arc::new(MemoryStorage::new())).await
    }

    async fn on(storage: SharedStorage) -> Self {
        let (broker, dir, cancel) = broker(storage).await;
        let peer = "127.0.0.1:5000".parse().expect("addr");
        Self {
            session: Session::new(broker, peer),
            _dir: dir,
            cancel,
        }
    }

    /// Hands frames to the session and returns what it wrote (after a pump).
    async fn step(&mut self, frames: Vec<AMQPFrame>) -> Vec<AMQPFrame> {
        self.session.handle(frames).await;
        self.session.pump();
        self.written()
    }

    fn written(&mut self) -> Vec<AMQPFrame> {
        let mut out = std::mem::take(&mut self.session.out);
        let mut frames = Vec::new();
        while let Some(f) = decode_frame(&mut out, 0).expect("the session writes valid frames") {
            frames.push(f);
        }
        frames
    }

    async fn open(user: &str, pass: &str) -> (Self, Vec<AMQPFrame>) {
        Self::open_on(Arc::new(MemoryStorage::new()), user, pass).await
    }

    async fn open_on(storage: SharedStorage, user: &str, pass: &str) -> (Self, Vec<AMQPFrame>) {
        let mut h = Self::on(storage).await;
        let start = h.written();
        assert!(matches!(
            start.as_slice(),
            [AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Start(_))
            )]
        ));
        let response = format!("\0{user}\0{pass}");
        let tune = h
            .step(vec![method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: Default::default(),
                    mechanism: "PLAIN".into(),
                    response: response.as_str().into(),
                    locale: "en_US".into(),
                })),
            )])
            .await;
        if !matches!(
            tune.as_slice(),
            [AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Tune(_))
            )]
        ) {
            return (h, tune);
        }
        let opened = h
            .step(vec![
                method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                        channel_max: 16,
                        frame_max: 131_072,
                        heartbeat: 0,
                    })),
                ),
                method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                        virtual_host: "/".into(),
                    })),
                ),
            ])
            .await;
        (h, opened)
    }

    async fn opened_channel() -> Self {
        Self::opened_channel_on(Arc::new(MemoryStorage::new())).await
    }

    async fn opened_channel_on(storage: SharedStorage) -> Self {
        let (mut h, _) = Self::open_on(storage, "guest", "guest").await;
        let ok = h
            .step(vec![method(
                1,
                AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})),
            )])
            .await;
        assert!(matches!(
            ok.as_slice(),
            [AMQPFrame::Method(
                1,
                AMQPClass::Channel(chan::AMQPMethod::OpenOk(_))
            )]
        ));
        h
    }
}

fn method(channel: u16, m: AMQPClass) -> AMQPFrame {
    AMQPFrame::Method(channel, m)
}

fn publish(channel: u16, key: &str, body: &[u8]) -> Vec<AMQPFrame> {
    vec![
        method(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: key.into(),
                mandatory: false,
                immediate: false,
            })),
        ),
        AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: BasicProperties::default(),
            },
        ),
        AMQPFrame::Body(channel, body.to_vec()),
    ]
}

/// `confirm.select` with nowait.
fn confirm_select(channel: u16) -> AMQPFrame {
    method(
        channel,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: true,
        })),
    )
}

/// The frames are one `basic.ack` on channel 1 with `multiple`, up to `tag`.
fn assert_one_multiple_ack(frames: &[AMQPFrame], tag: u64) {
    match frames {
        [AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))] => {
            assert_eq!((a.delivery_tag, a.multiple), (tag, true));
        }
        other => panic!("expected one ack, got {other:?}"),
    }
}

fn declare(channel: u16, name: &str) -> AMQPFrame {
    method(
        channel,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
}

#[tokio::test]
async fn handshake_goes_start_tune_open() {
    let (h, opened) = Harness::open("guest", "guest").await;
    assert!(matches!(
        opened.as_slice(),
        [AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
        )]
    ));
    assert_eq!(h.session.phase(), Phase::Open);
    assert_eq!(h.session.frame_max(), 131_072);
    assert_eq!(h.session.heartbeat(), None);
}

#[tokio::test]
async fn bad_credentials_close_the_connection_with_access_refused() {
    let (mut h, reply) = Harness::open("guest", "nope").await;
    let [AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(close)))] =
        reply.as_slice()
    else {
        panic!("expected connection.close, got {reply:?}");
    };
    assert_eq!(close.reply_code, 403);
    assert_eq!(h.session.phase(), Phase::Closing);
    h.step(vec![method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )])
    .await;
    assert_eq!(h.session.phase(), Phase::Closed);
}

#[tokio::test]
async fn a_published_message_is_delivered_to_a_consumer_after_consume_ok() {
    let mut h = Harness::opened_channel().await;
    h.step(vec![declare(1, "q")]).await;
    let consumed = h
        .step(vec![method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "q".into(),
                consumer_tag: "c".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: Default::default(),
            })),
        )])
        .await;
    assert!(matches!(
        consumed.as_slice(),
        [AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))
        )]
    ));
    let delivered = h.step(publish(1, "q", b"hi")).await;
    match delivered.as_slice() {
        [
            AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))),
            AMQPFrame::Header(1, header),
            AMQPFrame::Body(1, body),
        ] => {
            assert_eq!(d.delivery_tag, 1);
            assert_eq!(d.consumer_tag.as_str(), "c");
            assert_eq!(header.body_size, 2);
            assert_eq!(body, b"hi");
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn publishes_of_one_read_are_confirmed_with_one_multiple_ack() {
    let mut h = Harness::opened_channel().await;
    h.step(vec![declare(1, "q"), confirm_select(1)]).await;
    let mut frames = Vec::new();
    for i in 0..3u8 {
        frames.extend(publish(1, "q", &[i]));
    }
    let acks = h.step(frames).await;
    assert_one_multiple_ack(&acks, 3);
}

#[tokio::test]
async fn ack_of_an_unknown_tag_closes_the_channel_naming_basic_ack() {
    let mut h = Harness::opened_channel().await;
    let closed = h
        .step(vec![method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 9,
                multiple: false,
            })),
        )])
        .await;
    match closed.as_slice() {
        [AMQPFrame::Method(1, AMQPClass::Channel(chan::AMQPMethod::Close(c)))] => {
            assert_eq!(c.reply_code, 406);
            assert_eq!((c.class_id, c.method_id), (60, 80));
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
    // The closing channel ignores everything until close-ok, then can be reopened.
    assert!(h.step(publish(1, "q", b"x")).await.is_empty());
    h.step(vec![method(
        1,
        AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
    )])
    .await;
    let reopened = h
        .step(vec![method(
            1,
            AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})),
        )])
        .await;
    assert!(matches!(
        reopened.as_slice(),
        [AMQPFrame::Method(
            1,
            AMQPClass::Channel(chan::AMQPMethod::OpenOk(_))
        )]
    ));
}

#[tokio::test]
async fn a_method_before_open_is_command_invalid() {
    let mut h = Harness::new().await;
    h.written();
    let reply = h.step(vec![declare(1, "q")]).await;
    match reply.as_slice() {
        [AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))] => {
            assert_eq!(c.reply_code, 503);
        }
        other => panic!("expected connection.close, got {other:?}"),
    }
}

fn declare_durable(channel: u16, name: &str) -> AMQPFrame {
    method(
        channel,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
}

/// The batches of a durable queue's stream, as record counts.
async fn stream_batches(h: &Harness, queue: &str) -> Vec<usize> {
    let tp =
        switchboard_model::TopicPartition::new(crate::broker::durable_stream_name("/", queue), 0);
    let chunk = h
        .session
        .broker
        .router()
        .read(&tp, 0, 1 << 20)
        .await
        .expect("the queue's stream");
    chunk
        .batches
        .into_iter()
        .map(|b| {
            switchboard_model::RecordBatch::parse(b)
                .expect("a batch")
                .records()
                .expect("records")
                .len()
        })
        .collect()
}

#[tokio::test]
async fn a_reads_publishes_to_a_durable_queue_are_one_append_and_confirmed_together() {
    let mut h = Harness::opened_channel().await;
    h.step(vec![declare_durable(1, "dq"), confirm_select(1)])
        .await;
    let mut frames = Vec::new();
    for i in 0..5u8 {
        frames.extend(publish(1, "dq", &[i]));
    }
    let acks = h.step(frames).await;
    assert_one_multiple_ack(&acks, 5);
    assert_eq!(stream_batches(&h, "dq").await, vec![5]);
}

#[tokio::test]
async fn held_copies_the_storage_refuses_are_nacked_and_never_queued() {
    let (storage, faults) = FaultyStorage::new(Arc::new(MemoryStorage::new()));
    let mut h = Harness::opened_channel_on(Arc::new(storage)).await;
    h.step(vec![declare_durable(1, "dq"), confirm_select(1)])
        .await;
    // One failure covers all three: the publishes of one read are one append.
    faults.fail_next_appends(1);
    let mut frames = Vec::new();
    for i in 0..3u8 {
        frames.extend(publish(1, "dq", &[i]));
    }
    let replies = h.step(frames).await;
    let mut nacked = 0;
    for frame in &replies {
        match frame {
            AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Nack(n))) => {
                nacked = if n.multiple {
                    n.delivery_tag
                } else {
                    assert_eq!(n.delivery_tag, nacked + 1, "nacks in order");
                    n.delivery_tag
                };
            }
            other => panic!("expected only nacks, got {other:?}"),
        }
    }
    assert_eq!(nacked, 3, "every publish of the failed append is nacked");
    assert!(stream_batches(&h, "dq").await.is_empty());

    // The queue holds none of them; the next publish is stored and confirmed as usual.
    let acked = h.step(publish(1, "dq", b"stored")).await;
    match acked.as_slice() {
        [AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))] => {
            assert_eq!(a.delivery_tag, 4);
        }
        other => panic!("expected an ack, got {other:?}"),
    }
    assert_eq!(stream_batches(&h, "dq").await, vec![1]);
    let count = h
        .step(vec![method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: "dq".into(),
                nowait: false,
            })),
        )])
        .await;
    match count.as_slice() {
        [AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)))] => {
            assert_eq!(ok.message_count, 1, "only the stored message was queued");
        }
        other => panic!("expected purge-ok, got {other:?}"),
    }
}

#[tokio::test]
async fn a_method_after_publishes_in_the_same_read_sees_them_stored() {
    let mut h = Harness::opened_channel().await;
    h.step(vec![declare_durable(1, "dq")]).await;
    let mut frames = Vec::new();
    for i in 0..3u8 {
        frames.extend(publish(1, "dq", &[i]));
    }
    frames.push(method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: "dq".into(),
            nowait: false,
        })),
    ));
    frames.extend(publish(1, "dq", b"after"));
    let replies = h.step(frames).await;
    match replies.as_slice() {
        [AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)))] => {
            assert_eq!(ok.message_count, 3, "the purge saw the publishes before it");
        }
        other => panic!("expected purge-ok, got {other:?}"),
    }
    // Before the purge, and the one after it: two appends.
    assert_eq!(stream_batches(&h, "dq").await, vec![3, 1]);
    let declared = h
        .step(vec![method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "dq".into(),
                passive: true,
                durable: true,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: Default::default(),
            })),
        )])
        .await;
    match declared.as_slice() {
        [AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))] => {
            assert_eq!(ok.message_count, 1);
        }
        other => panic!("expected declare-ok, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_with_ttl_0_held_for_a_durable_queue_still_reaches_a_waiting_consumer() {
    let mut h = Harness::opened_channel().await;
    h.step(vec![declare_durable(1, "dq")]).await;
    h.step(vec![method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "dq".into(),
            consumer_tag: "c".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )])
    .await;
    // Many publishes in one read, so the round takes a while before the held copies go in.
    let mut frames = Vec::new();
    for i in 0..200u8 {
        let mut publish = publish(1, "dq", &[i]);
        if let AMQPFrame::Header(_, header) = &mut publish[1] {
            header.properties = BasicProperties::default().with_expiration("0".into());
        }
        frames.extend(publish);
    }
    let delivered = h.step(frames).await;
    let deliveries = delivered
        .iter()
        .filter(|f| {
            matches!(
                f,
                AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(_)))
            )
        })
        .count();
    assert_eq!(
        deliveries, 200,
        "expiration 0 means deliver now or never: a consumer waits"
    );
}
