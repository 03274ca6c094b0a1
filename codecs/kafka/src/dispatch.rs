//! Decodes one request frame, runs its handler and encodes the answer.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader};

use crate::handlers::{self, Request};
use crate::wire::{self, WireError};
use crate::{KafkaContext, versions};

/// What to send back for one frame.
pub enum Reply {
    Frame(Bytes),
    /// acks=0 produce: the protocol sends nothing.
    Nothing,
}

/// Handles one frame. An error means the connection must be closed.
pub async fn dispatch(ctx: &KafkaContext, mut frame: Bytes) -> Result<Reply, WireError> {
    let pre = wire::peek_preamble(&frame)?;
    let Ok(api) = ApiKey::try_from(pre.api_key) else {
        return Err(WireError::BadHeader(format!(
            "unknown API key {}",
            pre.api_key
        )));
    };
    let supported = versions::supported(api);
    let api_name: &'static str = api_name(api);
    ctx.metrics.requests.with_label_values(&[api_name]).inc();
    let in_range = supported.is_some_and(|(lo, hi)| (lo..=hi).contains(&pre.api_version));
    if api == ApiKey::ApiVersions && !in_range {
        // KIP-511: a client newer than us learns our range from a v0 answer with error 35.
        return unsupported_api_versions(pre.correlation_id).map(Reply::Frame);
    }
    if !in_range {
        tracing::info!(
            api = api_name,
            version = pre.api_version,
            "request for an API version we do not serve; closing as Kafka does"
        );
        return Err(WireError::BadHeader(format!(
            "{api_name} v{} is not supported (supported: {supported:?})",
            pre.api_version
        )));
    }
    let header: RequestHeader = wire::decode_header(api, pre.api_version, &mut frame)?;
    let request = Request {
        header: &header,
        version: pre.api_version,
        api,
    };
    handlers::handle(ctx, request, frame).await
}

fn unsupported_api_versions(correlation_id: i32) -> Result<Bytes, WireError> {
    let (lo, hi) = versions::supported(ApiKey::ApiVersions).unwrap_or((0, 0));
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::ApiVersions as i16)
                .with_min_version(lo)
                .with_max_version(hi),
        ]);
    wire::encode_response_with_header_version(correlation_id, 0, 0, &body)
}

pub fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        _ => "other",
    }
}
