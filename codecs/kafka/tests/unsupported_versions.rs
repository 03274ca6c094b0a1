//! Over a real socket: a request for an API or a version the broker does not serve is answered
//! with UNSUPPORTED_VERSION (35) and the connection stays usable; a frame that has no possible
//! answer closes its own connection and nobody else's.

mod common;

use bytes::{BufMut, BytesMut};
use common::{Broker, Client};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const UNSUPPORTED_VERSION: i16 = 35;

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
