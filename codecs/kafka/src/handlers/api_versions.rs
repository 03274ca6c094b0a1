//! ApiVersions: the ranges we serve, answered at the version the client asked for (old
//! librdkafka, e.g. Debian's kcat 2.0.2, parses v0–v2 layouts only).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::Request;
use crate::{KafkaContext, versions};

pub async fn handle(
    _ctx: &KafkaContext,
    _req: &Request<'_>,
    _body: ApiVersionsRequest,
) -> ApiVersionsResponse {
    let api_keys = versions::all()
        .into_iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_api_keys(api_keys)
        .with_finalized_features_epoch(-1)
}
