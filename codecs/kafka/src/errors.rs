//! Mapping of router and storage errors to Kafka error codes.

use kafka_protocol::ResponseError;
use switchboard_router::{Rejection, RouterError};
use switchboard_storage::StorageError;

pub fn code(e: ResponseError) -> i16 {
    e.code()
}

/// The Kafka error code a client should see for `e`. Retryable storage failures map to
/// `KAFKA_STORAGE_ERROR`, which every client retries.
pub fn router_error_code(e: &RouterError) -> i16 {
    let r = match e {
        RouterError::UnknownStream(_) | RouterError::UnknownPartition(_) => {
            ResponseError::UnknownTopicOrPartition
        }
        RouterError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        RouterError::StaleProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        RouterError::Rejected(r) => match r {
            Rejection::StreamExists(_) => ResponseError::TopicAlreadyExists,
            Rejection::UnknownStream(_) => ResponseError::UnknownTopicOrPartition,
            Rejection::InvalidPartitions(_) | Rejection::CannotShrink { .. } => {
                ResponseError::InvalidPartitions
            }
            Rejection::UnknownGroup(_) => ResponseError::GroupIdNotFound,
            // Only the broker's own start proposes a restore; no client request leads here.
            Rejection::NotEmpty | Rejection::BadSnapshot(_) => ResponseError::UnknownServerError,
        },
        RouterError::Meta(m) if m.is_retryable() => ResponseError::NotController,
        RouterError::Meta(_) => ResponseError::UnknownServerError,
        RouterError::Storage(s) => storage_error(s),
    };
    r.code()
}

fn storage_error(e: &StorageError) -> ResponseError {
    match e {
        StorageError::UnknownPartition(_) => ResponseError::UnknownTopicOrPartition,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidBatch(_) => ResponseError::CorruptMessage,
        StorageError::Corrupt { .. }
        | StorageError::CorruptStore(_)
        | StorageError::Io(_)
        | StorageError::Unavailable(_) => ResponseError::KafkaStorageError,
        StorageError::Closed => ResponseError::NotLeaderOrFollower,
    }
}
