//! The tests' Kafka front end and a hand-driven client.
#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use switchboard_kafka::{
    ConnLimits, Coordinator, GroupSettings, KafkaContext, KafkaMetrics, KafkaSettings,
    serve_listener,
};
use switchboard_memory::MemoryStorage;
use switchboard_router::{MetaStore, Router};
use switchboard_storage::SharedStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a test waits for the broker before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A Kafka front end on a free loopback port.
pub struct Broker {
    pub addr: SocketAddr,
    pub router: Arc<Router>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Over in-memory storage.
    pub async fn start() -> Self {
        Self::start_on(Arc::new(MemoryStorage::new())).await
    }

    pub async fn start_on(storage: SharedStorage) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaStore::open(dir.path()).await.expect("meta store");
        let router = Router::new(meta, storage);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ctx = Arc::new(KafkaContext {
            router: router.clone(),
            coordinator: Arc::new(Coordinator::new(GroupSettings::default())),
            settings: KafkaSettings {
                advertised_port: addr.port(),
                ..KafkaSettings::default()
            },
            metrics: KafkaMetrics::unregistered().expect("metrics"),
        });
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let limits = ConnLimits {
            max_connections: 16,
        };
        tracker.spawn(serve_listener(
            ctx,
            listener,
            limits,
            cancel.clone(),
            tracker.clone(),
        ));
        Self {
            addr,
            router,
            cancel,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A hand-driven Kafka client: what client libraries, which negotiate versions first, will not do.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub async fn connect(broker: &Broker) -> Self {
        let stream = TcpStream::connect(broker.addr).await.expect("connect");
        Self { stream }
    }

    pub async fn send<R: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &R,
    ) {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("raw-test-client")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, api.request_header_version(version))
            .expect("header encodes");
        body.encode(&mut payload, version).expect("body encodes");
        self.send_raw(&payload).await;
    }

    /// Sends `payload` as one frame, size first.
    pub async fn send_raw(&mut self, payload: &[u8]) {
        let mut frame = BytesMut::with_capacity(4 + payload.len());
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.expect("write");
    }

    /// Reads one response to `api` at `version`: its correlation id and body.
    pub async fn receive<R: Decodable>(&mut self, api: ApiKey, version: i16) -> (i32, R) {
        let mut frame = tokio::time::timeout(WAIT, self.read_frame())
            .await
            .expect("the broker answers in time");
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .expect("response header decodes");
        let body = R::decode(&mut frame, version).expect("response body decodes");
        assert!(!frame.has_remaining(), "one response per frame");
        (header.correlation_id, body)
    }

    pub async fn read_frame(&mut self) -> Bytes {
        let size = self.stream.read_i32().await.expect("response size");
        let mut frame = vec![0; size as usize];
        self.stream.read_exact(&mut frame).await.expect("response");
        Bytes::from(frame)
    }

    /// Whether the broker closed the connection (end of stream or reset) within `WAIT`.
    pub async fn closed_by_broker(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(WAIT, self.stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    /// Asks for the cluster's metadata (a request every version of us serves).
    pub async fn metadata(&mut self, correlation_id: i32) -> MetadataResponse {
        self.send(
            ApiKey::Metadata,
            12,
            correlation_id,
            &MetadataRequest::default(),
        )
        .await;
        let (answered, response) = self.receive(ApiKey::Metadata, 12).await;
        assert_eq!(answered, correlation_id);
        response
    }
}
