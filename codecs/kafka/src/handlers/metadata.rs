//! Metadata: this node is every partition's leader; brokers are stateless over shared storage,
//! so the routing table, not replica placement, decides what a client sees.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use switchboard_router::StreamMeta;
use uuid::Uuid;

use super::{Request, ensure_topic, str_bytes, stream_name, topic_name};
use crate::KafkaContext;

/// Kafka's marker for "authorized operations were not requested".
const OPS_NOT_REQUESTED: i32 = i32::MIN;

/// There are no ACLs yet, so every operation that applies to a resource is authorized.
/// Bits are Kafka's AclOperation codes: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7,
/// DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
pub(crate) const TOPIC_OPS: i32 = bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
const CLUSTER_OPS: i32 = bits(&[5, 7, 8, 9, 10, 11, 12]);
/// For groups: READ, DELETE, DESCRIBE.
pub(crate) const GROUP_OPS: i32 = bits(&[3, 6, 8]);

const fn bits(ops: &[u32]) -> i32 {
    let mut v = 0i32;
    let mut i = 0;
    while i < ops.len() {
        v |= 1 << ops[i];
        i += 1;
    }
    v
}

pub async fn handle(
    ctx: &KafkaContext,
    req: &Request<'_>,
    body: MetadataRequest,
) -> MetadataResponse {
    let node = BrokerId(ctx.settings.node_id);
    let broker = MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(str_bytes(ctx.settings.advertised_host.clone()))
        .with_port(i32::from(ctx.settings.advertised_port));
    // v0 had no way to ask for "no topics": an empty list meant all of them.
    let wanted: Option<Vec<_>> = match body.topics {
        None => None,
        Some(t) if t.is_empty() && req.version == 0 => None,
        Some(t) => Some(t.into_iter().filter_map(|t| t.name).collect()),
    };
    // Auto-creation through Metadata is on by default before v4, where the flag appeared.
    let allow_create = body.allow_auto_topic_creation || req.version < 4;
    let mut topics: Vec<MetadataResponseTopic> = match wanted {
        None => ctx
            .router
            .streams()
            .iter()
            .map(|m| describe(ctx, m))
            .collect(),
        Some(names) => {
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                out.push(one_topic(ctx, name, allow_create).await);
            }
            out
        }
    };
    if body.include_topic_authorized_operations {
        for t in topics.iter_mut().filter(|t| t.error_code == 0) {
            t.topic_authorized_operations = TOPIC_OPS;
        }
    }
    let cluster_ops = if body.include_cluster_authorized_operations {
        CLUSTER_OPS
    } else {
        OPS_NOT_REQUESTED
    };
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str_bytes(ctx.settings.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}

async fn one_topic(
    ctx: &KafkaContext,
    name: TopicName,
    allow_create: bool,
) -> MetadataResponseTopic {
    let Some(stream) = stream_name(&name) else {
        return MetadataResponseTopic::default()
            .with_name(Some(name))
            .with_error_code(ResponseError::InvalidTopicException.code());
    };
    if !ensure_topic(ctx, &stream, allow_create).await {
        return MetadataResponseTopic::default()
            .with_name(Some(name))
            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
    }
    match ctx.router.stream(&stream) {
        Some(meta) => describe(ctx, &meta),
        None => MetadataResponseTopic::default()
            .with_name(Some(name))
            .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
    }
}

fn describe(ctx: &KafkaContext, meta: &StreamMeta) -> MetadataResponseTopic {
    let node = BrokerId(ctx.settings.node_id);
    let partitions = (0..meta.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&meta.name)))
        .with_topic_id(Uuid::from_u128(meta.id))
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
}
