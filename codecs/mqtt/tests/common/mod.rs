//! An MQTT front end on a free loopback port, over in-memory storage, for integration tests;
//! and a raw client speaking our own codec, for what client libraries cannot be made to do.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_log::{LogConfig, LogStorage};
use switchboard_memory::MemoryStorage;
use switchboard_mqtt::broker::{Broker, MqttSettings};
use switchboard_mqtt::conn::{Transport, serve_listener};
use switchboard_mqtt::metrics::MqttMetrics;
use switchboard_mqtt::wire::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};
use switchboard_router::{MetaStore, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub broker: Arc<Broker>,
    pub router: Arc<Router>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(MqttSettings::default()).await
    }

    pub async fn start_with(settings: MqttSettings) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaStore::open(dir.path()).await.expect("meta store");
        let router = Router::new(meta, Arc::new(MemoryStorage::new()));
        Self::serve(router, settings, Some(dir)).await
    }

    /// A server over `storage` (a test double, say).
    pub async fn start_on(
        storage: switchboard_storage::SharedStorage,
        settings: MqttSettings,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaStore::open(dir.path()).await.expect("meta store");
        let router = Router::new(meta, storage);
        Self::serve(router, settings, Some(dir)).await
    }

    /// A server that accepts at most `max_connections` MQTT connections at once.
    pub async fn start_limited(settings: MqttSettings, max_connections: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaStore::open(dir.path()).await.expect("meta store");
        let router = Router::new(meta, Arc::new(MemoryStorage::new()));
        Self::serve_limited(router, settings, Some(dir), max_connections).await
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
        Self::serve(router, MqttSettings::default(), None).await
    }

    /// Stops as `switchboard serve` does on SIGTERM: connections park their sessions, tasks
    /// drain, storage is flushed and the metadata store shut down.
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
        settings: MqttSettings,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        Self::serve_limited(router, settings, dir, 1000).await
    }

    async fn serve_limited(
        router: Arc<Router>,
        settings: MqttSettings,
        dir: Option<tempfile::TempDir>,
        max_connections: usize,
    ) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let metrics = MqttMetrics::unregistered().expect("metrics");
        let broker = Broker::start(
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
            Transport::Tcp,
            max_connections,
            cancel.clone(),
            tracker.clone(),
        ));
        let ws = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
        let ws_addr = ws.local_addr().expect("ws addr");
        let transport = Transport::WebSocket {
            path: "/mqtt".into(),
        };
        tracker.spawn(serve_listener(
            broker.clone(),
            ws,
            transport,
            max_connections,
            cancel.clone(),
            tracker.clone(),
        ));
        Self {
            addr,
            ws_addr,
            broker,
            router,
            cancel,
            tracker,
            _dir: dir,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A hand-driven MQTT client over our own codec.
pub struct RawClient {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl RawClient {
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Connects with CONNECT built from `connect`, returning the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (Self, wire::ConnAck) {
        let mut c = Self::open(addr, connect.version).await;
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(a)) => (c, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        wire::encode(p, self.version, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .expect("a packet or close in time")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = wire::decode(&mut self.buf, self.version, usize::MAX)
                .expect("server sends valid packets")
            {
                return Some(p);
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Waits until the server closes the connection, returning the packets it sent before.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }
}

/// SUBSCRIBE to one filter.
pub fn subscribe(packet_id: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    })
}

/// Checks that a client with a 1 s keep-alive was closed for it, no sooner than 1.5 s after
/// `started`, having been sent `got` (an MQTT 5 DISCONNECT 0x8D).
pub fn closed_for_keep_alive(got: &[Packet], started: tokio::time::Instant) {
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
    assert!(
        matches!(got, [Packet::Disconnect(d)] if d.reason == wire::reason::KEEP_ALIVE_TIMEOUT),
        "{got:?}"
    );
}

pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        version,
        client_id: client_id.into(),
        clean_start,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
        properties: ConnectProperties::default(),
    }
}
