use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, CreateAclsRequest, CreateAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, DescribeLogDirsRequest, ElectLeadersRequest, FetchRequest,
    FindCoordinatorRequest, GroupId, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, OffsetFetchRequest, ProduceRequest,
    ProduceResponse, RequestHeader, RequestKind, ResponseHeader, TopicName,
    add_partitions_to_txn_request, describe_log_dirs_request,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{answer_with, per_item};
use crate::dispatch::{Reply, refuse};
use crate::versions;
use crate::wire::{self, WireError};

const UNSUPPORTED_VERSION: i16 = 35;

fn name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

/// A request frame as the connection loop hands it to dispatch: header and body, no size.
fn frame<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("unit-test")));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, api.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    out.freeze()
}

fn assert_not_served(api: ApiKey, version: i16) {
    let served = versions::supported(api).is_some_and(|(lo, hi)| (lo..=hi).contains(&version));
    assert!(
        !served,
        "{api:?} v{version} is served; the test needs one we refuse"
    );
}

/// Refuses `frame` as dispatch does and decodes the answer: its correlation id and body.
fn refused<R: Decodable>(frame: Bytes) -> (i32, R) {
    let pre = wire::peek_preamble(&frame).unwrap();
    let api = ApiKey::try_from(pre.api_key).unwrap();
    assert_not_served(api, pre.api_version);
    let Reply::Frame(mut out) = refuse(api, pre, frame).unwrap() else {
        panic!("{api:?} expects an answer");
    };
    let size = out.get_i32();
    assert_eq!(size as usize, out.len(), "the size prefix covers the frame");
    let header_version = api.response_header_version(pre.api_version);
    let header = ResponseHeader::decode(&mut out, header_version).unwrap();
    let body = R::decode(&mut out, pre.api_version).unwrap();
    assert!(out.is_empty(), "one response, nothing after it");
    (header.correlation_id, body)
}

#[test]
fn a_served_api_with_a_top_level_code_is_refused_there_at_a_version_we_do_not_serve() {
    let request = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
    let (correlation_id, response): (_, InitProducerIdResponse) =
        refused(frame(ApiKey::InitProducerId, 5, 7, &request));
    assert_eq!(correlation_id, 7);
    assert_eq!(response.error_code, UNSUPPORTED_VERSION);
}

#[test]
fn a_served_api_at_a_version_we_do_not_serve_names_every_partition_it_was_asked_about() {
    let topic = |n, parts: &[i32]| {
        ListOffsetsTopic::default()
            .with_name(name(n))
            .with_partitions(
                parts
                    .iter()
                    .map(|&p| ListOffsetsPartition::default().with_partition_index(p))
                    .collect(),
            )
    };
    let request = ListOffsetsRequest::default()
        .with_topics(vec![topic("orders", &[0, 1]), topic("audit", &[3])]);

    let (correlation_id, response): (_, ListOffsetsResponse) =
        refused(frame(ApiKey::ListOffsets, 8, 11, &request));

    assert_eq!(correlation_id, 11);
    let answered: Vec<_> = response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p)))
        .map(|(t, p)| (t, p.partition_index, p.error_code, p.offset))
        .collect();
    assert_eq!(
        answered,
        [
            ("orders", 0, UNSUPPORTED_VERSION, -1),
            ("orders", 1, UNSUPPORTED_VERSION, -1),
            ("audit", 3, UNSUPPORTED_VERSION, -1),
        ]
    );
}

fn produce_request(acks: i16) -> ProduceRequest {
    let partition = PartitionProduceData::default().with_index(2);
    ProduceRequest::default()
        .with_acks(acks)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("orders"))
                .with_partition_data(vec![partition]),
        ])
}

#[test]
fn a_produce_at_a_version_we_do_not_serve_is_refused_per_partition() {
    let (correlation_id, response): (_, ProduceResponse) =
        refused(frame(ApiKey::Produce, 10, 3, &produce_request(-1)));
    assert_eq!(correlation_id, 3);
    let [topic] = &response.responses[..] else {
        panic!("one topic expected: {response:?}");
    };
    assert_eq!(topic.name.as_str(), "orders");
    let [partition] = &topic.partition_responses[..] else {
        panic!("one partition expected: {topic:?}");
    };
    assert_eq!(
        (partition.index, partition.error_code),
        (2, UNSUPPORTED_VERSION)
    );
}

#[test]
fn a_produce_with_acks_0_is_refused_without_an_answer() {
    let frame = frame(ApiKey::Produce, 10, 3, &produce_request(0));
    let pre = wire::peek_preamble(&frame).unwrap();
    let reply = refuse(ApiKey::Produce, pre, frame).unwrap();
    assert!(
        matches!(reply, Reply::Nothing),
        "acks=0 clients read no response: {reply:?}"
    );
}

#[test]
fn an_api_we_do_not_serve_is_refused_once_per_acl_it_asked_to_create() {
    let acl = |principal| {
        AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_resource_pattern_type(3)
            .with_principal(StrBytes::from_static_str(principal))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(2)
            .with_permission_type(3)
    };
    let request =
        CreateAclsRequest::default().with_creations(vec![acl("User:alice"), acl("User:bob")]);

    let (correlation_id, response): (_, CreateAclsResponse) =
        refused(frame(ApiKey::CreateAcls, 3, 21, &request));

    assert_eq!(correlation_id, 21);
    let codes: Vec<_> = response.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [UNSUPPORTED_VERSION, UNSUPPORTED_VERSION]);
}

#[test]
fn an_api_we_do_not_serve_is_refused_at_top_level_when_its_response_has_one() {
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    let (correlation_id, response): (_, DescribeAclsResponse) =
        refused(frame(ApiKey::DescribeAcls, 1, 5, &request));
    assert_eq!(correlation_id, 5);
    assert_eq!(response.error_code, UNSUPPORTED_VERSION);
    assert!(response.resources.is_empty());
}

#[test]
fn a_version_beyond_the_codec_closes_the_connection() {
    let mut raw = frame(ApiKey::DescribeAcls, 1, 5, &DescribeAclsRequest::default()).to_vec();
    raw[2..4].copy_from_slice(&99i16.to_be_bytes());
    let frame = Bytes::from(raw);
    let pre = wire::peek_preamble(&frame).unwrap();
    let err = refuse(ApiKey::DescribeAcls, pre, frame).unwrap_err();
    assert!(
        matches!(err, WireError::VersionBeyondCodec { version: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_body_that_does_not_decode_closes_the_connection() {
    let request = CreateAclsRequest::default().with_creations(vec![AclCreation::default()]);
    let whole = frame(ApiKey::CreateAcls, 3, 21, &request);
    let cut = whole.slice(..whole.len() - 3);
    let pre = wire::peek_preamble(&cut).unwrap();
    let err = refuse(ApiKey::CreateAcls, pre, cut).unwrap_err();
    assert!(matches!(err, WireError::BadBody { .. }), "{err}");
}

/// The answer to `request` at `version`, encoded, with `code` wherever the refusal puts one.
fn encoded(api: ApiKey, version: i16, request: &RequestKind, code: i16) -> Bytes {
    let answer = answer_with(request, version, code)
        .unwrap_or_else(|| panic!("{api:?} v{version} has no answer"));
    wire::encode_response_kind(0, api, version, &answer)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"))
}

fn carries_code(api: ApiKey, version: i16, request: &RequestKind) -> bool {
    encoded(api, version, request, UNSUPPORTED_VERSION) != encoded(api, version, request, 0)
}

macro_rules! every_request {
    ($($api:ident),+ $(,)?) => {
        vec![$((ApiKey::$api, RequestKind::$api(Default::default()))),+]
    };
}

/// Every API key kafka-protocol knows, at every version it can encode, gets an answer that
/// encodes; and where the answer is a top-level code (the `top_level!` list), the code is
/// really on the wire at that version rather than silently dropped by the encoder.
#[test]
fn every_api_at_every_codec_version_is_answered() {
    let requests = every_request![
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        SaslHandshake,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        WriteTxnMarkers,
        TxnOffsetCommit,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeConfigs,
        AlterConfigs,
        AlterReplicaLogDirs,
        DescribeLogDirs,
        SaslAuthenticate,
        CreatePartitions,
        CreateDelegationToken,
        RenewDelegationToken,
        ExpireDelegationToken,
        DescribeDelegationToken,
        DeleteGroups,
        ElectLeaders,
        IncrementalAlterConfigs,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        OffsetDelete,
        DescribeClientQuotas,
        AlterClientQuotas,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        Vote,
        BeginQuorumEpoch,
        EndQuorumEpoch,
        DescribeQuorum,
        AlterPartition,
        UpdateFeatures,
        Envelope,
        FetchSnapshot,
        DescribeCluster,
        DescribeProducers,
        BrokerRegistration,
        BrokerHeartbeat,
        UnregisterBroker,
        DescribeTransactions,
        ListTransactions,
        AllocateProducerIds,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe,
        ControllerRegistration,
        GetTelemetrySubscriptions,
        PushTelemetry,
        AssignReplicasToDirs,
        ListConfigResources,
        DescribeTopicPartitions,
        ShareGroupHeartbeat,
        ShareGroupDescribe,
        ShareFetch,
        ShareAcknowledge,
        AddRaftVoter,
        RemoveRaftVoter,
        UpdateRaftVoter,
        InitializeShareGroupState,
        ReadShareGroupState,
        WriteShareGroupState,
        DeleteShareGroupState,
        ReadShareGroupStateSummary,
        DescribeShareGroupOffsets,
        AlterShareGroupOffsets,
        DeleteShareGroupOffsets,
    ];
    assert_eq!(
        requests.len(),
        ApiKey::iter().count(),
        "every API key is listed"
    );
    for (api, request) in &requests {
        let range = api.valid_versions();
        for version in range.min..=range.max {
            let top_level_only = per_item(request, version, UNSUPPORTED_VERSION).is_none();
            let carried = carries_code(*api, version, request);
            assert!(
                carried || !top_level_only,
                "{api:?} v{version}: the top-level code is not on the wire"
            );
        }
    }
}

/// The APIs whose error moves between top level and per item with the version, each asked
/// about one item in every field any version reads: the code is on the wire at every version.
#[test]
fn version_dependent_answers_carry_the_code_at_every_version() {
    let group = GroupId(StrBytes::from_static_str("g"));
    let requests = [
        (
            ApiKey::Fetch,
            RequestKind::Fetch(FetchRequest::default().with_topics(vec![
                FetchTopic::default()
                    .with_topic(name("t"))
                    .with_partitions(vec![FetchPartition::default()]),
            ])),
        ),
        (
            ApiKey::Metadata,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("t"))),
            ]))),
        ),
        (
            ApiKey::OffsetFetch,
            RequestKind::OffsetFetch(
                OffsetFetchRequest::default()
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(name("t"))
                            .with_partition_indexes(vec![0]),
                    ]))
                    .with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(group.clone())
                            .with_topics(Some(vec![OffsetFetchRequestTopics::default()])),
                    ]),
            ),
        ),
        (
            ApiKey::FindCoordinator,
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default()
                    .with_key(group.0.clone())
                    .with_coordinator_keys(vec![group.0.clone()]),
            ),
        ),
        (
            ApiKey::AddPartitionsToTxn,
            RequestKind::AddPartitionsToTxn(
                AddPartitionsToTxnRequest::default().with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(name("t"))
                        .with_partitions(vec![0]),
                ]),
            ),
        ),
        (
            ApiKey::DescribeLogDirs,
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(Some(
                vec![describe_log_dirs_request::DescribableLogDirTopic::default()],
            ))),
        ),
        (
            ApiKey::ElectLeaders,
            RequestKind::ElectLeaders(ElectLeadersRequest::default().with_topic_partitions(Some(
                vec![
                    TopicPartitions::default()
                        .with_topic(name("t"))
                        .with_partitions(vec![0]),
                ],
            ))),
        ),
    ];
    for (api, request) in &requests {
        let range = api.valid_versions();
        for version in range.min..=range.max {
            assert!(
                carries_code(*api, version, request),
                "{api:?} v{version}: the code is not on the wire"
            );
        }
    }
}
