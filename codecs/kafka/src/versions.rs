//! The API versions this broker answers. Each range is capped at what the handlers implement
//! (no topic-id-only Fetch/Produce, no KIP-848 consumer protocol), and intersected with what the
//! kafka-protocol crate can decode.

use kafka_protocol::messages::ApiKey;

/// (api, min, max) that we implement.
const IMPLEMENTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
];

/// Supported range of `api`, or `None` if we do not serve it at all.
pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    let &(_, min, max) = IMPLEMENTED.iter().find(|(k, _, _)| *k == api)?;
    let valid = api.valid_versions();
    let (lo, hi) = (min.max(valid.min), max.min(valid.max));
    (lo <= hi).then_some((lo, hi))
}

/// Every API we serve, with its range, in key order (the ApiVersions answer).
pub fn all() -> Vec<(ApiKey, i16, i16)> {
    let mut out: Vec<_> = IMPLEMENTED
        .iter()
        .filter_map(|(k, _, _)| supported(*k).map(|(lo, hi)| (*k, lo, hi)))
        .collect();
    out.sort_by_key(|(k, _, _)| *k as i16);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implemented_range_is_decodable_by_the_crate() {
        for (api, _, _) in IMPLEMENTED {
            assert!(supported(*api).is_some(), "{api:?} has an empty range");
        }
        assert_eq!(supported(ApiKey::Produce), Some((3, 9)));
        assert_eq!(supported(ApiKey::EndTxn), None);
    }
}
