//! An AMQP front end on a free loopback port, over in-memory storage (or the native log in a
//! directory, for restarts), and helpers for lapin clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use switchboard_amqp::broker::AmqpBroker;
use switchboard_amqp::conn::serve_listener;
use switchboard_amqp::{AmqpMetrics, AmqpSettings};
use switchboard_log::{LogConfig, LogStorage};
use switchboard_memory::MemoryStorage;
use switchboard_router::{MetaStore, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub broker: Arc<AmqpBroker>,
    pub router: Arc<Router>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(AmqpSettings::default()).await
    }

    pub async fn start_with(settings: AmqpSettings) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaStore::open(dir.path()).await.expect("meta store");
        let router = Router::new(meta, Arc::new(MemoryStorage::new()));
        Self::serve(router, settings, Some(dir)).await
    }

    /// A server whose streams (native log) and metadata live in `dir`, so that a server
    /// started later on the same directory finds them.
    pub async fn start_in(dir: &std::path::Path) -> Self {
        let meta = MetaStore::open(&dir.join("meta"))
            .await
            .expect("meta store");
        let storage = LogStorage::open(dir.join("streams"), LogConfig::default())
            .await
            .expect("log storage");
        let router = Router::new(meta, Arc::new(storage));
        Self::serve(router, AmqpSettings::default(), None).await
    }

    /// Stops as `switchboard serve` does on SIGTERM: connections are closed, tasks drain,
    /// storage is flushed and the metadata store shut down.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(WAIT, self.tracker.wait())
            .await
            .expect("tasks drain");
        self.router.flush().await.expect("flush");
        self.router.meta().shutdown().await.expect("meta shutdown");
    }

    async fn serve(
        router: Arc<Router>,
        settings: AmqpSettings,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let metrics = AmqpMetrics::unregistered().expect("metrics");
        let broker = AmqpBroker::start(
            router.clone(),
            settings,
            metrics,
            cancel.clone(),
            tracker.clone(),
        )
        .await
        .expect("broker starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tracker.spawn(serve_listener(
            broker.clone(),
            listener,
            1000,
            cancel.clone(),
            tracker.clone(),
        ));
        Self {
            addr,
            broker,
            router,
            cancel,
            tracker,
            _dir: dir,
        }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub async fn connect(&self) -> Connection {
        tokio::time::timeout(
            WAIT,
            Connection::connect(&self.uri(), ConnectionProperties::default()),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }

    /// A connection and a channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("channel");
        (conn, ch)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Declares a transient queue with `args`.
pub async fn declare(ch: &Channel, name: &str, args: FieldTable) -> String {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
        .expect("queue.declare")
        .name()
        .to_string()
}

/// A consumer on `queue` with the given prefetch (0 = none).
pub async fn consume(ch: &Channel, queue: &str, tag: &str, prefetch: u16) -> Consumer {
    if prefetch > 0 {
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .expect("basic.qos");
    }
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

/// The next delivery, failing the test if none comes in time.
pub async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open")
        .expect("delivery ok")
}

/// Asserts that nothing is delivered within a short while.
pub async fn nothing_within(consumer: &mut Consumer, ms: u64) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), consumer.next()).await {
        panic!("unexpected delivery: {:?}", d.map(|d| d.data));
    }
}

pub fn body(d: &Delivery) -> String {
    String::from_utf8(d.data.clone()).expect("utf-8 body")
}

/// The reply code of the channel or connection exception behind a lapin error.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        lapin::options::BasicPublishOptions::default(),
        body.as_bytes(),
        lapin::BasicProperties::default(),
    )
    .await
    .expect("basic.publish")
    .await
    .expect("publish confirmation");
}
