//! One handler per API key. Each takes the decoded request and returns the typed response;
//! this module decodes, calls and encodes.

mod api_versions;
mod cluster;
mod configs;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod records;
mod topics;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use switchboard_model::StreamName;

use crate::KafkaContext;
use crate::dispatch::Reply;
use crate::wire::{self, WireError};

/// A request's header and version, handed to every handler.
pub struct Request<'a> {
    pub header: &'a RequestHeader,
    pub version: i16,
    pub api: ApiKey,
}

fn reply<'a, R: Encodable + HeaderVersion>(
    req: &Request<'_>,
    body: &R,
) -> Result<Reply<'a>, WireError> {
    wire::encode_response(req.header.correlation_id, req.version, body).map(Reply::Frame)
}

/// Decodes the body as the handler's request type, awaits `$handler(ctx, &req, body)` and
/// encodes its answer.
macro_rules! route {
    ($ctx:expr, $req:expr, $body:expr, $handler:path) => {{
        let decoded = wire::decode_body($req.api, $req.version, &mut $body)?;
        let response = $handler($ctx, &$req, decoded).await;
        reply(&$req, &response)
    }};
}

pub async fn handle<'a>(
    ctx: &'a KafkaContext,
    req: Request<'_>,
    mut body: Bytes,
) -> Result<Reply<'a>, WireError> {
    match req.api {
        ApiKey::ApiVersions => route!(ctx, req, body, api_versions::handle),
        ApiKey::Metadata => route!(ctx, req, body, metadata::handle),
        ApiKey::Produce => {
            let decoded = wire::decode_body(req.api, req.version, &mut body)?;
            let appended = produce::append(ctx, &req, decoded).await;
            if appended.acks == 0 {
                return Ok(Reply::Nothing);
            }
            if appended.to_sync.is_empty() {
                return reply(&req, &appended.response);
            }
            let (correlation_id, version) = (req.header.correlation_id, req.version);
            Ok(Reply::Later(Box::pin(async move {
                let response = produce::sync(ctx, appended).await;
                wire::encode_response(correlation_id, version, &response)
            })))
        }
        ApiKey::Fetch => route!(ctx, req, body, fetch::handle),
        ApiKey::ListOffsets => route!(ctx, req, body, list_offsets::handle),
        ApiKey::OffsetForLeaderEpoch => route!(ctx, req, body, records::offset_for_leader_epoch),
        ApiKey::DeleteRecords => route!(ctx, req, body, records::delete_records),
        ApiKey::CreateTopics => route!(ctx, req, body, topics::create_topics),
        ApiKey::DeleteTopics => route!(ctx, req, body, topics::delete_topics),
        ApiKey::CreatePartitions => route!(ctx, req, body, topics::create_partitions),
        ApiKey::DescribeConfigs => route!(ctx, req, body, configs::describe_configs),
        ApiKey::AlterConfigs => route!(ctx, req, body, configs::alter_configs),
        ApiKey::IncrementalAlterConfigs => {
            route!(ctx, req, body, configs::incremental_alter_configs)
        }
        ApiKey::InitProducerId => route!(ctx, req, body, producer_id::handle),
        ApiKey::FindCoordinator => route!(ctx, req, body, cluster::find_coordinator),
        ApiKey::DescribeCluster => route!(ctx, req, body, cluster::describe_cluster),
        ApiKey::JoinGroup => route!(ctx, req, body, groups::join_group),
        ApiKey::SyncGroup => route!(ctx, req, body, groups::sync_group),
        ApiKey::Heartbeat => route!(ctx, req, body, groups::heartbeat),
        ApiKey::LeaveGroup => route!(ctx, req, body, groups::leave_group),
        ApiKey::ListGroups => route!(ctx, req, body, groups::list_groups),
        ApiKey::DescribeGroups => route!(ctx, req, body, groups::describe_groups),
        ApiKey::DeleteGroups => route!(ctx, req, body, groups::delete_groups),
        ApiKey::OffsetCommit => route!(ctx, req, body, offsets::offset_commit),
        ApiKey::OffsetFetch => route!(ctx, req, body, offsets::offset_fetch),
        other => Err(WireError::BadHeader(format!("{other:?} is not served"))),
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(crate) fn topic_name(s: &StreamName) -> TopicName {
    TopicName(str_bytes(s.as_str()))
}

/// Parses a topic name from the wire; `None` if it is not a valid stream name.
pub(crate) fn stream_name(t: &TopicName) -> Option<StreamName> {
    StreamName::new(t.0.as_str()).ok()
}

/// Creates `name` when auto-creation is on and it does not exist; returns whether it exists now.
pub(crate) async fn ensure_topic(ctx: &KafkaContext, name: &StreamName, allow: bool) -> bool {
    if ctx.router.stream(name).is_some() {
        return true;
    }
    if !(allow && ctx.settings.auto_create_topics) {
        return false;
    }
    let created = ctx
        .router
        .create_stream(
            name.clone(),
            ctx.settings.default_partitions,
            Default::default(),
        )
        .await;
    match created {
        Ok(_) => {
            tracing::info!(topic = %name, "auto-created topic");
            true
        }
        // Another connection may have created it in between.
        Err(_) => ctx.router.stream(name).is_some(),
    }
}
