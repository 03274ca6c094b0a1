use switchboard_model::{BatchError, Offset, TopicPartition};

pub type StorageResult<T> = Result<T, StorageError>;

/// Errors of the storage layer. [`StorageError::is_retryable`] tells front ends whether to give
/// the client a retriable error code.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("partition {0} does not exist")]
    UnknownPartition(TopicPartition),
    #[error("offset {offset} is outside {tp}'s range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        tp: TopicPartition,
        offset: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error("corrupt data in {tp}: {reason}")]
    Corrupt { tp: TopicPartition, reason: String },
    /// Damage that belongs to the store as a whole rather than to one partition (an object
    /// log's unreadable index object, say).
    #[error("corrupt storage: {0}")]
    CorruptStore(String),
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage is shutting down")]
    Closed,
}

impl StorageError {
    /// True when the same request may succeed later (the disk or store came back).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Unavailable(_))
    }
}
