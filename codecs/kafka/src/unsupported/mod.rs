//! Answers to requests for an API, or an API version, this broker does not serve.
//!
//! The rule (the requirement): an API we do not support is answered with the right error
//! code, never a dropped connection. The answer is the response of the requested API at the
//! requested version carrying UNSUPPORTED_VERSION (35): in the top-level error code when the
//! response has one at that version, otherwise in every per-item error code, one item per
//! topic, partition, group or resource the request named. A client library therefore gets an
//! error it maps to "the broker does not support this" instead of a broken connection, and its
//! other requests on the same connection keep working.
//!
//! Apache Kafka does otherwise: its `SocketServer` closes the connection when
//! `RequestContext.parseRequest` throws `InvalidRequestException` (a version the broker cannot
//! parse) or when the API is not enabled on the listener; only ApiVersions is answered, with a
//! v0 body and error 35 (KIP-511, which we follow too, in `dispatch`). Clients negotiate versions
//! through ApiVersions before anything else, so a well-behaved client meets neither behaviour;
//! the difference shows with hand-written or misconfigured clients, which get a readable error
//! from us where Kafka hangs up. We follow the requirement.
//!
//! What still closes the connection, because no well-formed answer exists (`dispatch::refuse`):
//! an API key number kafka-protocol does not know (no response layout), a version beyond what it
//! can decode and encode (no way to find where the header ends), and a body that does not decode.

mod not_served;
mod served;
#[cfg(test)]
mod tests;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{self as m, RequestKind, ResponseKind};

/// The answer to `request` at `version`, refusing it with UNSUPPORTED_VERSION; `None` for an
/// API kafka-protocol added after this table was written (the caller closes the connection).
pub fn answer(request: &RequestKind, version: i16) -> Option<ResponseKind> {
    answer_with(request, version, ResponseError::UnsupportedVersion.code())
}

/// Whether the client waits for any answer: a produce with acks=0 never gets one, not even an
/// error, or the next response would be read as the answer to a later request.
pub fn expects_answer(request: &RequestKind) -> bool {
    !matches!(request, RequestKind::Produce(p) if p.acks == 0)
}

fn answer_with(request: &RequestKind, version: i16, code: i16) -> Option<ResponseKind> {
    per_item(request, version, code).or_else(|| top_level(request, code))
}

/// APIs whose error goes per item at some or all versions, each built from the request so that
/// every topic, partition, group or resource it named is answered. The APIs we serve come first.
fn per_item(request: &RequestKind, version: i16, code: i16) -> Option<ResponseKind> {
    use RequestKind as Q;
    use ResponseKind as A;
    use not_served as n;
    use served as s;
    Some(match request {
        Q::Produce(r) => A::Produce(s::produce(r, code)),
        Q::Fetch(r) => A::Fetch(s::fetch(r, version, code)),
        Q::ListOffsets(r) => A::ListOffsets(s::list_offsets(r, code)),
        Q::Metadata(r) => A::Metadata(s::metadata(r, version, code)),
        Q::OffsetCommit(r) => A::OffsetCommit(s::offset_commit(r, code)),
        Q::OffsetFetch(r) => A::OffsetFetch(s::offset_fetch(r, version, code)),
        Q::FindCoordinator(r) => A::FindCoordinator(s::find_coordinator(r, version, code)),
        Q::DescribeGroups(r) => A::DescribeGroups(s::describe_groups(r, code)),
        Q::CreateTopics(r) => A::CreateTopics(s::create_topics(r, code)),
        Q::DeleteTopics(r) => A::DeleteTopics(s::delete_topics(r, code)),
        Q::DeleteRecords(r) => A::DeleteRecords(s::delete_records(r, code)),
        Q::OffsetForLeaderEpoch(r) => A::OffsetForLeaderEpoch(s::offset_for_leader_epoch(r, code)),
        Q::DescribeConfigs(r) => A::DescribeConfigs(s::describe_configs(r, code)),
        Q::AlterConfigs(r) => A::AlterConfigs(s::alter_configs(r, code)),
        Q::CreatePartitions(r) => A::CreatePartitions(s::create_partitions(r, code)),
        Q::DeleteGroups(r) => A::DeleteGroups(s::delete_groups(r, code)),
        Q::IncrementalAlterConfigs(r) => {
            A::IncrementalAlterConfigs(s::incremental_alter_configs(r, code))
        }
        Q::AddPartitionsToTxn(r) => {
            A::AddPartitionsToTxn(n::add_partitions_to_txn(r, version, code))
        }
        Q::AlterClientQuotas(r) => A::AlterClientQuotas(n::alter_client_quotas(r, code)),
        Q::AlterReplicaLogDirs(r) => A::AlterReplicaLogDirs(n::alter_replica_log_dirs(r, code)),
        Q::AlterUserScramCredentials(r) => {
            A::AlterUserScramCredentials(n::alter_user_scram_credentials(r, code))
        }
        Q::ConsumerGroupDescribe(r) => {
            A::ConsumerGroupDescribe(n::consumer_group_describe(r, code))
        }
        Q::CreateAcls(r) => A::CreateAcls(n::create_acls(r, code)),
        Q::DeleteAcls(r) => A::DeleteAcls(n::delete_acls(r, code)),
        Q::DescribeLogDirs(_) => A::DescribeLogDirs(n::describe_log_dirs(version, code)),
        Q::DescribeProducers(r) => A::DescribeProducers(n::describe_producers(r, code)),
        Q::DescribeShareGroupOffsets(r) => {
            A::DescribeShareGroupOffsets(n::describe_share_group_offsets(r, code))
        }
        Q::DescribeTopicPartitions(r) => {
            A::DescribeTopicPartitions(n::describe_topic_partitions(r, code))
        }
        Q::DescribeTransactions(r) => A::DescribeTransactions(n::describe_transactions(r, code)),
        Q::ElectLeaders(r) => A::ElectLeaders(n::elect_leaders(r, version, code)),
        Q::ShareGroupDescribe(r) => A::ShareGroupDescribe(n::share_group_describe(r, code)),
        Q::TxnOffsetCommit(r) => A::TxnOffsetCommit(n::txn_offset_commit(r, code)),
        Q::WriteTxnMarkers(r) => A::WriteTxnMarkers(n::write_txn_markers(r, code)),
        Q::InitializeShareGroupState(r) => {
            A::InitializeShareGroupState(n::initialize_share_group_state(r, code))
        }
        Q::ReadShareGroupState(r) => A::ReadShareGroupState(n::read_share_group_state(r, code)),
        Q::ReadShareGroupStateSummary(r) => {
            A::ReadShareGroupStateSummary(n::read_share_group_state_summary(r, code))
        }
        Q::WriteShareGroupState(r) => A::WriteShareGroupState(n::write_share_group_state(r, code)),
        Q::DeleteShareGroupState(r) => {
            A::DeleteShareGroupState(n::delete_share_group_state(r, code))
        }
        _ => return None,
    })
}

/// Declares `top_level`: for each listed API, the default response with the error code in its
/// top-level `error_code` field, which exists at every version kafka-protocol knows (checked for
/// all of them by `tests::every_api_at_every_codec_version_is_answered`).
macro_rules! top_level {
    ($($api:ident => $response:ident),+ $(,)?) => {
        fn top_level(request: &RequestKind, code: i16) -> Option<ResponseKind> {
            Some(match request {
                $(RequestKind::$api(_) => {
                    ResponseKind::$api(m::$response::default().with_error_code(code))
                })+
                _ => return None,
            })
        }
    };
}

top_level! {
    AddOffsetsToTxn => AddOffsetsToTxnResponse,
    AddRaftVoter => AddRaftVoterResponse,
    AllocateProducerIds => AllocateProducerIdsResponse,
    AlterPartition => AlterPartitionResponse,
    AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
    AlterShareGroupOffsets => AlterShareGroupOffsetsResponse,
    ApiVersions => ApiVersionsResponse,
    AssignReplicasToDirs => AssignReplicasToDirsResponse,
    BeginQuorumEpoch => BeginQuorumEpochResponse,
    BrokerHeartbeat => BrokerHeartbeatResponse,
    BrokerRegistration => BrokerRegistrationResponse,
    ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
    ControllerRegistration => ControllerRegistrationResponse,
    CreateDelegationToken => CreateDelegationTokenResponse,
    DeleteShareGroupOffsets => DeleteShareGroupOffsetsResponse,
    DescribeAcls => DescribeAclsResponse,
    DescribeClientQuotas => DescribeClientQuotasResponse,
    DescribeCluster => DescribeClusterResponse,
    DescribeDelegationToken => DescribeDelegationTokenResponse,
    DescribeQuorum => DescribeQuorumResponse,
    DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
    EndQuorumEpoch => EndQuorumEpochResponse,
    EndTxn => EndTxnResponse,
    Envelope => EnvelopeResponse,
    ExpireDelegationToken => ExpireDelegationTokenResponse,
    FetchSnapshot => FetchSnapshotResponse,
    GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
    Heartbeat => HeartbeatResponse,
    InitProducerId => InitProducerIdResponse,
    JoinGroup => JoinGroupResponse,
    LeaveGroup => LeaveGroupResponse,
    ListConfigResources => ListConfigResourcesResponse,
    ListGroups => ListGroupsResponse,
    ListPartitionReassignments => ListPartitionReassignmentsResponse,
    ListTransactions => ListTransactionsResponse,
    OffsetDelete => OffsetDeleteResponse,
    PushTelemetry => PushTelemetryResponse,
    RemoveRaftVoter => RemoveRaftVoterResponse,
    RenewDelegationToken => RenewDelegationTokenResponse,
    SaslAuthenticate => SaslAuthenticateResponse,
    SaslHandshake => SaslHandshakeResponse,
    ShareAcknowledge => ShareAcknowledgeResponse,
    ShareFetch => ShareFetchResponse,
    ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
    SyncGroup => SyncGroupResponse,
    UnregisterBroker => UnregisterBrokerResponse,
    UpdateFeatures => UpdateFeaturesResponse,
    UpdateRaftVoter => UpdateRaftVoterResponse,
    Vote => VoteResponse,
}
