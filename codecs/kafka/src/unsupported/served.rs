//! Refusals for the APIs we serve, asked for at a version we do not. Each answer names every
//! topic, partition, group or resource of the request, as the handler would at a version we do
//! serve. Fields the client reads as "nothing here" are set as Kafka sets them on an error
//! (offsets and watermarks -1, no coordinator node).

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse, alter_configs_response,
    incremental_alter_configs_response,
};

pub fn produce(req: &ProduceRequest, code: i16) -> ProduceResponse {
    let responses = req.topic_data.iter().map(|t| {
        let partitions = t.partition_data.iter().map(|p| {
            PartitionProduceResponse::default()
                .with_index(p.index)
                .with_error_code(code)
                .with_base_offset(-1)
        });
        // v13 names topics by id and v3 to v12 by name; the field the version lacks is empty
        // in the request, so copying both is right at every version.
        TopicProduceResponse::default()
            .with_name(t.name.clone())
            .with_topic_id(t.topic_id)
            .with_partition_responses(partitions.collect())
    });
    ProduceResponse::default().with_responses(responses.collect())
}

/// FetchResponse has a top-level error code from v7 (where Kafka answers whole-request errors
/// with no topics); before, every partition carries it.
pub fn fetch(req: &FetchRequest, version: i16, code: i16) -> FetchResponse {
    if version >= 7 {
        return FetchResponse::default().with_error_code(code);
    }
    let responses = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            PartitionData::default()
                .with_partition_index(p.partition)
                .with_error_code(code)
                .with_high_watermark(-1)
        });
        FetchableTopicResponse::default()
            .with_topic(t.topic.clone())
            .with_topic_id(t.topic_id)
            .with_partitions(partitions.collect())
    });
    FetchResponse::default().with_responses(responses.collect())
}

pub fn list_offsets(req: &ListOffsetsRequest, code: i16) -> ListOffsetsResponse {
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code)
        });
        ListOffsetsTopicResponse::default()
            .with_name(t.name.clone())
            .with_partitions(partitions.collect())
    });
    ListOffsetsResponse::default().with_topics(topics.collect())
}

/// MetadataResponse has a top-level error code from v13; before, each requested topic carries
/// it. A request for every topic names none, so its answer lists none.
pub fn metadata(req: &MetadataRequest, version: i16, code: i16) -> MetadataResponse {
    if version >= 13 {
        return MetadataResponse::default().with_error_code(code);
    }
    let topics = req.topics.iter().flatten().map(|t| {
        MetadataResponseTopic::default()
            .with_error_code(code)
            .with_name(t.name.clone())
            .with_topic_id(t.topic_id)
    });
    MetadataResponse::default().with_topics(topics.collect())
}

pub fn offset_commit(req: &OffsetCommitRequest, code: i16) -> OffsetCommitResponse {
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code)
        });
        OffsetCommitResponseTopic::default()
            .with_name(t.name.clone())
            .with_topic_id(t.topic_id)
            .with_partitions(partitions.collect())
    });
    OffsetCommitResponse::default().with_topics(topics.collect())
}

/// OffsetFetch moved its error code twice: per partition in v1, top level in v2 to v7, per
/// group from v8 (one request may ask for several groups).
pub fn offset_fetch(req: &OffsetFetchRequest, version: i16, code: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req.groups.iter().map(|g| {
            OffsetFetchResponseGroup::default()
                .with_group_id(g.group_id.clone())
                .with_error_code(code)
        });
        return OffsetFetchResponse::default().with_groups(groups.collect());
    }
    if version >= 2 {
        return OffsetFetchResponse::default().with_error_code(code);
    }
    let topics = req.topics.iter().flatten().map(|t| {
        let partitions = t.partition_indexes.iter().map(|&p| {
            OffsetFetchResponsePartition::default()
                .with_partition_index(p)
                .with_committed_offset(-1)
                .with_error_code(code)
        });
        OffsetFetchResponseTopic::default()
            .with_name(t.name.clone())
            .with_partitions(partitions.collect())
    });
    OffsetFetchResponse::default().with_topics(topics.collect())
}

/// FindCoordinator answers one key at top level up to v3, then one entry per key (KIP-699).
pub fn find_coordinator(
    req: &FindCoordinatorRequest,
    version: i16,
    code: i16,
) -> FindCoordinatorResponse {
    if version <= 3 {
        return FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_node_id((-1).into())
            .with_port(-1);
    }
    let coordinators = req.coordinator_keys.iter().map(|key| {
        Coordinator::default()
            .with_key(key.clone())
            .with_node_id((-1).into())
            .with_port(-1)
            .with_error_code(code)
    });
    FindCoordinatorResponse::default().with_coordinators(coordinators.collect())
}

pub fn describe_groups(req: &DescribeGroupsRequest, code: i16) -> DescribeGroupsResponse {
    let groups = req.groups.iter().map(|g| {
        DescribedGroup::default()
            .with_group_id(g.clone())
            .with_error_code(code)
    });
    DescribeGroupsResponse::default().with_groups(groups.collect())
}

pub fn create_topics(req: &CreateTopicsRequest, code: i16) -> CreateTopicsResponse {
    let topics = req.topics.iter().map(|t| {
        CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_error_code(code)
    });
    CreateTopicsResponse::default().with_topics(topics.collect())
}

/// DeleteTopics names topics in `topic_names` up to v5 and in `topics` (name or id) from v6;
/// the list the version lacks is empty.
pub fn delete_topics(req: &DeleteTopicsRequest, code: i16) -> DeleteTopicsResponse {
    let by_name = req.topic_names.iter().map(|n| {
        DeletableTopicResult::default()
            .with_name(Some(n.clone()))
            .with_error_code(code)
    });
    let by_state = req.topics.iter().map(|t| {
        DeletableTopicResult::default()
            .with_name(t.name.clone())
            .with_topic_id(t.topic_id)
            .with_error_code(code)
    });
    DeleteTopicsResponse::default().with_responses(by_name.chain(by_state).collect())
}

pub fn delete_records(req: &DeleteRecordsRequest, code: i16) -> DeleteRecordsResponse {
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1)
                .with_error_code(code)
        });
        DeleteRecordsTopicResult::default()
            .with_name(t.name.clone())
            .with_partitions(partitions.collect())
    });
    DeleteRecordsResponse::default().with_topics(topics.collect())
}

pub fn offset_for_leader_epoch(
    req: &OffsetForLeaderEpochRequest,
    code: i16,
) -> OffsetForLeaderEpochResponse {
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            EpochEndOffset::default()
                .with_partition(p.partition)
                .with_error_code(code)
        });
        OffsetForLeaderTopicResult::default()
            .with_topic(t.topic.clone())
            .with_partitions(partitions.collect())
    });
    OffsetForLeaderEpochResponse::default().with_topics(topics.collect())
}

pub fn describe_configs(req: &DescribeConfigsRequest, code: i16) -> DescribeConfigsResponse {
    let results = req.resources.iter().map(|r| {
        DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            .with_error_code(code)
    });
    DescribeConfigsResponse::default().with_results(results.collect())
}

pub fn alter_configs(req: &AlterConfigsRequest, code: i16) -> AlterConfigsResponse {
    let responses = req.resources.iter().map(|r| {
        alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            .with_error_code(code)
    });
    AlterConfigsResponse::default().with_responses(responses.collect())
}

pub fn incremental_alter_configs(
    req: &IncrementalAlterConfigsRequest,
    code: i16,
) -> IncrementalAlterConfigsResponse {
    let responses = req.resources.iter().map(|r| {
        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            .with_error_code(code)
    });
    IncrementalAlterConfigsResponse::default().with_responses(responses.collect())
}

pub fn create_partitions(req: &CreatePartitionsRequest, code: i16) -> CreatePartitionsResponse {
    let results = req.topics.iter().map(|t| {
        CreatePartitionsTopicResult::default()
            .with_name(t.name.clone())
            .with_error_code(code)
    });
    CreatePartitionsResponse::default().with_results(results.collect())
}

pub fn delete_groups(req: &DeleteGroupsRequest, code: i16) -> DeleteGroupsResponse {
    let results = req.groups_names.iter().map(|g| {
        DeletableGroupResult::default()
            .with_group_id(g.clone())
            .with_error_code(code)
    });
    DeleteGroupsResponse::default().with_results(results.collect())
}
