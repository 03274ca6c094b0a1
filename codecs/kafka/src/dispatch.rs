//! Decodes one request frame, runs its handler and encodes the answer.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader};

use crate::handlers::{self, Request};
use crate::wire::{self, Preamble, WireError};
use crate::{KafkaContext, unsupported, versions};

/// What to send back for one frame.
pub enum Reply<'a> {
    Frame(Bytes),
    /// acks=0 produce: the protocol sends nothing.
    Nothing,
    /// acks=all produce: the answer, once an fsync has covered the request's appends.
    Later(Pending<'a>),
}

/// An answer that is not ready yet.
pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<Bytes, WireError>> + Send + 'a>>;

impl std::fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Frame(b) => f.debug_tuple("Frame").field(b).finish(),
            Reply::Nothing => f.write_str("Nothing"),
            Reply::Later(_) => f.write_str("Later"),
        }
    }
}

/// Handles one frame. An error means the connection must be closed.
pub async fn dispatch(ctx: &KafkaContext, mut frame: Bytes) -> Result<Reply<'_>, WireError> {
    let pre = wire::peek_preamble(&frame)?;
    // An unknown key has no response layout to answer in, so the connection closes.
    let api = ApiKey::try_from(pre.api_key).map_err(|()| WireError::UnknownApiKey(pre.api_key))?;
    let api_name: &'static str = api_name(api);
    ctx.metrics.requests.with_label_values(&[api_name]).inc();
    let supported = versions::supported(api);
    if supported.is_some_and(|(lo, hi)| (lo..=hi).contains(&pre.api_version)) {
        let header: RequestHeader = wire::decode_header(api, pre.api_version, &mut frame)?;
        let request = Request {
            header: &header,
            version: pre.api_version,
            api,
        };
        return handlers::handle(ctx, request, frame).await;
    }
    if api == ApiKey::ApiVersions {
        // KIP-511: a client newer than us learns our range from a v0 answer with error 35.
        return unsupported_api_versions(pre.correlation_id).map(Reply::Frame);
    }
    let reply = refuse(api, pre, frame)?;
    ctx.metrics
        .request_errors
        .with_label_values(&[api_name])
        .inc();
    tracing::info!(
        api = ?api,
        version = pre.api_version,
        supported = ?supported,
        "answered UNSUPPORTED_VERSION: we do not serve this API version"
    );
    Ok(reply)
}

/// Answers a request for an API or version we do not serve with UNSUPPORTED_VERSION (see
/// [`unsupported`] for the rule and how it differs from Apache Kafka). Pure: frame in, frame out.
///
/// Errs, closing the connection, where no well-formed answer exists: a version beyond what
/// kafka-protocol can decode and encode (we could not even find where the header ends, nor lay
/// out a response the client would parse), or a body that does not decode (the frame is garbage
/// and the stream may be out of step).
pub(crate) fn refuse(
    api: ApiKey,
    pre: Preamble,
    mut frame: Bytes,
) -> Result<Reply<'static>, WireError> {
    let version = pre.api_version;
    let codec = api.valid_versions();
    if !(codec.min..=codec.max).contains(&version) {
        return Err(WireError::VersionBeyondCodec {
            api,
            version,
            min: codec.min,
            max: codec.max,
        });
    }
    let header = wire::decode_header(api, version, &mut frame)?;
    let request = wire::decode_request(api, version, &mut frame)?;
    let response =
        unsupported::answer(&request, version).ok_or(WireError::Unanswerable { api, version })?;
    if !unsupported::expects_answer(&request) {
        return Ok(Reply::Nothing);
    }
    wire::encode_response_kind(header.correlation_id, api, version, &response).map(Reply::Frame)
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
