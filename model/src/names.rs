//! Names of streams and partitions, and the offset type.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A dense per-partition position: the first record of a partition is 0, the next 1, and so on.
/// Kafka clients assume N+1 follows N, so no backend may leave gaps.
pub type Offset = u64;

/// Index of a partition within its stream.
pub type PartitionId = u32;

/// Longest stream name Kafka accepts (`Topic.MAX_NAME_LENGTH`).
pub const MAX_STREAM_NAME_LEN: usize = 249;

/// The name of a stream; a Kafka topic name is a stream name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(Arc<str>);

/// Why a stream name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidName {
    #[error("stream name is empty")]
    Empty,
    #[error("stream name is longer than {MAX_STREAM_NAME_LEN} characters")]
    TooLong,
    #[error("stream name may not be '.' or '..'")]
    Dots,
    #[error("stream name {0:?} contains a character outside [a-zA-Z0-9._-]")]
    BadCharacter(String),
}

impl StreamName {
    /// Checks the name against Kafka's topic rules, which also keep it safe as a directory name.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        if name.is_empty() {
            return Err(InvalidName::Empty);
        }
        if name.len() > MAX_STREAM_NAME_LEN {
            return Err(InvalidName::TooLong);
        }
        if name == "." || name == ".." {
            return Err(InvalidName::Dots);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidName::BadCharacter(name.to_owned()));
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, InvalidName> {
        Self::new(&s)
    }
}

impl From<StreamName> for String {
    fn from(s: StreamName) -> String {
        s.0.to_string()
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// One partition of one stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    pub stream: StreamName,
    pub partition: PartitionId,
}

impl TopicPartition {
    pub fn new(stream: StreamName, partition: PartitionId) -> Self {
        Self { stream, partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.stream, self.partition)
    }
}

impl fmt::Debug for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_rules_are_enforced() {
        assert!(StreamName::new("orders.v1_eu-west").is_ok());
        assert_eq!(StreamName::new(""), Err(InvalidName::Empty));
        assert_eq!(StreamName::new(".."), Err(InvalidName::Dots));
        assert!(matches!(
            StreamName::new("a/b"),
            Err(InvalidName::BadCharacter(_))
        ));
        assert_eq!(StreamName::new(&"x".repeat(250)), Err(InvalidName::TooLong));
    }
}
