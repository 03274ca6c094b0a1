//! Over a real socket: a request for an API or a version the broker does not serve is answered
//! with UNSUPPORTED_VERSION (35) and the connection stays usable; a frame that has no possible
//! answer closes its own connection and nobody else's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use switchboard_kafka::{
    ConnLimits, Coordinator, GroupSettings, KafkaContext, KafkaMetrics, KafkaSettings,
    serve_listener,
};
use switchboard_memory::MemoryStorage;
use switchboard_router::{MetaStore, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const UNSUPPORTED_VERSION: i16 = 35;

/// How long a test waits for the broker before failing.
const WAIT: Duration = Duration::from_secs(10);

/// A Kafka front end on a free loopback port, over in-memory storage.
struct Broker {
    addr: SocketAddr,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Broker {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaStore::open(dir.path()).await.expect("meta store");
        let router = Router::new(meta, Arc::new(MemoryStorage::new()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ctx = Arc::new(KafkaContext {
            router,
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
struct Client {
    stream: TcpStream,
}

impl Client {
    async fn connect(broker: &Broker) -> Self {
        let stream = TcpStream::connect(broker.addr).await.expect("connect");
        Self { stream }
    }

    async fn send<R: Encodable>(
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
    async fn send_raw(&mut self, payload: &[u8]) {
        let mut frame = BytesMut::with_capacity(4 + payload.len());
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.expect("write");
    }

    /// Reads one response to `api` at `version`: its correlation id and body.
    async fn receive<R: Decodable>(&mut self, api: ApiKey, version: i16) -> (i32, R) {
        let mut frame = tokio::time::timeout(WAIT, self.read_frame())
            .await
            .expect("the broker answers in time");
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .expect("response header decodes");
        let body = R::decode(&mut frame, version).expect("response body decodes");
        assert!(!frame.has_remaining(), "one response per frame");
        (header.correlation_id, body)
    }

    async fn read_frame(&mut self) -> Bytes {
        let size = self.stream.read_i32().await.expect("response size");
        let mut frame = vec![0; size as usize];
        self.stream.read_exact(&mut frame).await.expect("response");
        Bytes::from(frame)
    }

    /// Whether the broker closed the connection (end of stream or reset) within `WAIT`.
    async fn closed_by_broker(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(WAIT, self.stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    /// Asks for the cluster's metadata (a request every version of us serves).
    async fn metadata(&mut self, correlation_id: i32) -> MetadataResponse {
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

#[tokio::test]
async fn an_api_we_do_not_serve_is_answered_and_the_connection_keeps_serving() {
    let broker = Broker::start().await;
    let mut client = Client::connect(&broker).await;
    let acl = AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("orders"))
        .with_resource_pattern_type(3)
        .with_principal(StrBytes::from_static_str("User:alice"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(2)
        .with_permission_type(3);

    // Both requests go out before either answer is read, as a pipelining client sends them.
    let create = CreateAclsRequest::default().with_creations(vec![acl]);
    client.send(ApiKey::CreateAcls, 3, 1, &create).await;
    client
        .send(ApiKey::Metadata, 12, 2, &MetadataRequest::default())
        .await;

    let (correlation_id, refused): (_, CreateAclsResponse) =
        client.receive(ApiKey::CreateAcls, 3).await;
    assert_eq!(correlation_id, 1);
    let codes: Vec<_> = refused.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [UNSUPPORTED_VERSION]);

    let (correlation_id, metadata): (_, MetadataResponse) =
        client.receive(ApiKey::Metadata, 12).await;
    assert_eq!(correlation_id, 2);
    assert_eq!(
        metadata.brokers.len(),
        1,
        "the second request is served as usual"
    );
}

#[tokio::test]
async fn a_version_we_do_not_serve_is_answered_and_the_connection_keeps_serving() {
    let broker = Broker::start().await;
    let mut client = Client::connect(&broker).await;
    // Produce v10 is past our range (KIP-951 leader hints) yet one the codec can read.
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![PartitionProduceData::default().with_index(0)]),
        ]);

    client.send(ApiKey::Produce, 10, 7, &produce).await;
    let (correlation_id, refused): (_, ProduceResponse) = client.receive(ApiKey::Produce, 10).await;

    assert_eq!(correlation_id, 7);
    let codes: Vec<_> = refused
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| (p.index, p.error_code))
        .collect();
    assert_eq!(codes, [(0, UNSUPPORTED_VERSION)]);
    assert_eq!(client.metadata(8).await.brokers.len(), 1);
}

#[tokio::test]
async fn an_unknown_api_key_closes_only_that_connection() {
    let broker = Broker::start().await;
    let mut bystander = Client::connect(&broker).await;
    bystander.metadata(1).await;
    let mut offender = Client::connect(&broker).await;

    // API key 999, version 0, correlation id 1, null client id: no response layout exists.
    let mut unknown = BytesMut::new();
    unknown.put_i16(999);
    unknown.put_i16(0);
    unknown.put_i32(1);
    unknown.put_i16(-1);
    offender.send_raw(&unknown).await;

    assert!(
        offender.closed_by_broker().await,
        "no answer exists, so the broker hangs up"
    );
    assert_eq!(
        bystander.metadata(2).await.brokers.len(),
        1,
        "everyone else is still served"
    );
    let mut newcomer = Client::connect(&broker).await;
    assert_eq!(newcomer.metadata(1).await.brokers.len(), 1);
}
