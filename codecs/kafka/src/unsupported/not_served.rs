//! Refusals for the APIs we do not serve at all whose responses carry their error codes per
//! item (ACLs, transactions, quotas, log directories, KIP-848 and share groups, and the
//! broker-to-broker APIs). Each answer names every item of the request, as Kafka's own error
//! response for that API does.

use std::collections::BTreeSet;

use kafka_protocol::messages as m;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::describe_log_dirs_response::DescribeLogDirsResult;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, TopicResponse};
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, AlterClientQuotasRequest,
    AlterClientQuotasResponse, AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse,
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, CreateAclsRequest,
    CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeLogDirsResponse,
    DescribeProducersRequest, DescribeProducersResponse, DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    ElectLeadersRequest, ElectLeadersResponse, ShareGroupDescribeRequest,
    ShareGroupDescribeResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
    alter_user_scram_credentials_response::AlterUserScramCredentialsResult,
    consumer_group_describe_response,
    describe_share_group_offsets_response::DescribeShareGroupOffsetsResponseGroup,
    describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic,
    share_group_describe_response,
};

/// AddPartitionsToTxn answers per topic and partition up to v3; from v4 (KIP-890, batched
/// transactions) it has a top-level error code.
pub fn add_partitions_to_txn(
    req: &AddPartitionsToTxnRequest,
    version: i16,
    code: i16,
) -> AddPartitionsToTxnResponse {
    if version >= 4 {
        return AddPartitionsToTxnResponse::default().with_error_code(code);
    }
    let topics = req.v3_and_below_topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|&p| {
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(p)
                .with_partition_error_code(code)
        });
        AddPartitionsToTxnTopicResult::default()
            .with_name(t.name.clone())
            .with_results_by_partition(partitions.collect())
    });
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics.collect())
}

pub fn alter_client_quotas(req: &AlterClientQuotasRequest, code: i16) -> AlterClientQuotasResponse {
    let entries = req.entries.iter().map(|e| {
        let entity = e.entity.iter().map(|d| {
            EntityData::default()
                .with_entity_type(d.entity_type.clone())
                .with_entity_name(d.entity_name.clone())
        });
        EntryData::default()
            .with_error_code(code)
            .with_entity(entity.collect())
    });
    AlterClientQuotasResponse::default().with_entries(entries.collect())
}

pub fn alter_replica_log_dirs(
    req: &AlterReplicaLogDirsRequest,
    code: i16,
) -> AlterReplicaLogDirsResponse {
    let results = req.dirs.iter().flat_map(|d| &d.topics).map(|t| {
        let partitions = t.partitions.iter().map(|&p| {
            AlterReplicaLogDirPartitionResult::default()
                .with_partition_index(p)
                .with_error_code(code)
        });
        AlterReplicaLogDirTopicResult::default()
            .with_topic_name(t.name.clone())
            .with_partitions(partitions.collect())
    });
    AlterReplicaLogDirsResponse::default().with_results(results.collect())
}

/// One result per user, however many deletions and upsertions name them (as Kafka answers).
pub fn alter_user_scram_credentials(
    req: &AlterUserScramCredentialsRequest,
    code: i16,
) -> AlterUserScramCredentialsResponse {
    let deleted = req.deletions.iter().map(|d| &d.name);
    let upserted = req.upsertions.iter().map(|u| &u.name);
    let users: BTreeSet<_> = deleted.chain(upserted).collect();
    let results = users.into_iter().map(|user| {
        AlterUserScramCredentialsResult::default()
            .with_user(user.clone())
            .with_error_code(code)
    });
    AlterUserScramCredentialsResponse::default().with_results(results.collect())
}

pub fn consumer_group_describe(
    req: &ConsumerGroupDescribeRequest,
    code: i16,
) -> ConsumerGroupDescribeResponse {
    let groups = req.group_ids.iter().map(|g| {
        consumer_group_describe_response::DescribedGroup::default()
            .with_group_id(g.clone())
            .with_error_code(code)
    });
    ConsumerGroupDescribeResponse::default().with_groups(groups.collect())
}

/// One result per ACL to create, in request order: the client matches them by position.
pub fn create_acls(req: &CreateAclsRequest, code: i16) -> CreateAclsResponse {
    let results = req
        .creations
        .iter()
        .map(|_| AclCreationResult::default().with_error_code(code));
    CreateAclsResponse::default().with_results(results.collect())
}

/// One result per filter, in request order: the client matches them by position.
pub fn delete_acls(req: &DeleteAclsRequest, code: i16) -> DeleteAclsResponse {
    let results = req
        .filters
        .iter()
        .map(|_| DeleteAclsFilterResult::default().with_error_code(code));
    DeleteAclsResponse::default().with_filter_results(results.collect())
}

/// DescribeLogDirs has a top-level error code from v3. Before, errors are per log directory,
/// which the request does not name: the answer is one unnamed directory carrying the code
/// (Kafka itself loses the code there and answers an empty list).
pub fn describe_log_dirs(version: i16, code: i16) -> DescribeLogDirsResponse {
    if version >= 3 {
        return DescribeLogDirsResponse::default().with_error_code(code);
    }
    DescribeLogDirsResponse::default()
        .with_results(vec![DescribeLogDirsResult::default().with_error_code(code)])
}

pub fn describe_producers(req: &DescribeProducersRequest, code: i16) -> DescribeProducersResponse {
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partition_indexes.iter().map(|&p| {
            PartitionResponse::default()
                .with_partition_index(p)
                .with_error_code(code)
        });
        TopicResponse::default()
            .with_name(t.name.clone())
            .with_partitions(partitions.collect())
    });
    DescribeProducersResponse::default().with_topics(topics.collect())
}

pub fn describe_share_group_offsets(
    req: &DescribeShareGroupOffsetsRequest,
    code: i16,
) -> DescribeShareGroupOffsetsResponse {
    let groups = req.groups.iter().map(|g| {
        DescribeShareGroupOffsetsResponseGroup::default()
            .with_group_id(g.group_id.clone())
            .with_error_code(code)
    });
    DescribeShareGroupOffsetsResponse::default().with_groups(groups.collect())
}

pub fn describe_topic_partitions(
    req: &DescribeTopicPartitionsRequest,
    code: i16,
) -> DescribeTopicPartitionsResponse {
    let topics = req.topics.iter().map(|t| {
        DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(t.name.clone()))
            .with_error_code(code)
    });
    DescribeTopicPartitionsResponse::default().with_topics(topics.collect())
}

pub fn describe_transactions(
    req: &DescribeTransactionsRequest,
    code: i16,
) -> DescribeTransactionsResponse {
    let states = req.transactional_ids.iter().map(|id| {
        TransactionState::default()
            .with_transactional_id(id.clone())
            .with_error_code(code)
    });
    DescribeTransactionsResponse::default().with_transaction_states(states.collect())
}

/// ElectLeaders has a top-level error code from v1; v0 answers per partition. A request for
/// every partition names none, so its v0 answer lists none.
pub fn elect_leaders(req: &ElectLeadersRequest, version: i16, code: i16) -> ElectLeadersResponse {
    if version >= 1 {
        return ElectLeadersResponse::default().with_error_code(code);
    }
    let results = req.topic_partitions.iter().flatten().map(|t| {
        let partitions = t.partitions.iter().map(|&p| {
            PartitionResult::default()
                .with_partition_id(p)
                .with_error_code(code)
        });
        ReplicaElectionResult::default()
            .with_topic(t.topic.clone())
            .with_partition_result(partitions.collect())
    });
    ElectLeadersResponse::default().with_replica_election_results(results.collect())
}

pub fn share_group_describe(
    req: &ShareGroupDescribeRequest,
    code: i16,
) -> ShareGroupDescribeResponse {
    let groups = req.group_ids.iter().map(|g| {
        share_group_describe_response::DescribedGroup::default()
            .with_group_id(g.clone())
            .with_error_code(code)
    });
    ShareGroupDescribeResponse::default().with_groups(groups.collect())
}

pub fn txn_offset_commit(req: &TxnOffsetCommitRequest, code: i16) -> TxnOffsetCommitResponse {
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code)
        });
        TxnOffsetCommitResponseTopic::default()
            .with_name(t.name.clone())
            .with_partitions(partitions.collect())
    });
    TxnOffsetCommitResponse::default().with_topics(topics.collect())
}

pub fn write_txn_markers(req: &WriteTxnMarkersRequest, code: i16) -> WriteTxnMarkersResponse {
    let markers = req.markers.iter().map(|marker| {
        let topics = marker.topics.iter().map(|t| {
            let partitions = t.partition_indexes.iter().map(|&p| {
                WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(p)
                    .with_error_code(code)
            });
            WritableTxnMarkerTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions.collect())
        });
        WritableTxnMarkerResult::default()
            .with_producer_id(marker.producer_id)
            .with_topics(topics.collect())
    });
    WriteTxnMarkersResponse::default().with_markers(markers.collect())
}

/// The share-group state APIs (KIP-932, broker to share coordinator) share one shape: topics by
/// id, each with partitions; the answer mirrors it with an error code per partition.
macro_rules! share_group_state {
    ($($name:ident: $request:ident -> $response:ident, $module:ident::$result:ident;)+) => {$(
        pub fn $name(req: &m::$request, code: i16) -> m::$response {
            use m::$module::{PartitionResult, $result};
            let results = req.topics.iter().map(|t| {
                let partitions = t.partitions.iter().map(|p| {
                    PartitionResult::default()
                        .with_partition(p.partition)
                        .with_error_code(code)
                });
                $result::default()
                    .with_topic_id(t.topic_id)
                    .with_partitions(partitions.collect())
            });
            m::$response::default().with_results(results.collect())
        }
    )+};
}

share_group_state! {
    initialize_share_group_state: InitializeShareGroupStateRequest
        -> InitializeShareGroupStateResponse,
        initialize_share_group_state_response::InitializeStateResult;
    read_share_group_state: ReadShareGroupStateRequest
        -> ReadShareGroupStateResponse,
        read_share_group_state_response::ReadStateResult;
    read_share_group_state_summary: ReadShareGroupStateSummaryRequest
        -> ReadShareGroupStateSummaryResponse,
        read_share_group_state_summary_response::ReadStateSummaryResult;
    write_share_group_state: WriteShareGroupStateRequest
        -> WriteShareGroupStateResponse,
        write_share_group_state_response::WriteStateResult;
    delete_share_group_state: DeleteShareGroupStateRequest
        -> DeleteShareGroupStateResponse,
        delete_share_group_state_response::DeleteStateResult;
}
