//! What a command can fail with, and the `code` its reply carries.

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("{op}: bad arguments: {source}")]
    BadArguments {
        op: String,
        source: serde_json::Error,
    },
    /// A command that needs an earlier one (`connect`, `init`) or names something unknown.
    #[error("{0}")]
    State(String),
    /// Something this library has no way to do; the suite leaves such cases out for it.
    #[error("{0}")]
    Unsupported(String),
    /// The library (or the broker through it) refused or failed the command.
    #[error("{message}")]
    Library { message: String, code: Value },
    #[error("{0}: no answer within {1} ms")]
    Timeout(String, u64),
}

impl AdapterError {
    pub fn library(message: impl std::fmt::Display, code: impl Into<Value>) -> Self {
        Self::Library {
            message: message.to_string(),
            code: code.into(),
        }
    }

    /// The reply's `code`: what a test may branch on, as the Node adapters give the library's
    /// error code.
    pub fn code(&self) -> Value {
        match self {
            Self::UnknownOp(_) => json!("unknown-op"),
            Self::BadArguments { .. } => json!("bad-arguments"),
            Self::State(_) => json!("state"),
            Self::Unsupported(_) => json!("unsupported"),
            Self::Library { code, .. } => code.clone(),
            Self::Timeout(..) => json!("timeout"),
        }
    }
}

pub type Result<T, E = AdapterError> = std::result::Result<T, E>;

/// A command's arguments (the command line itself: `id` and `op` are ignored fields) as the
/// typed struct of that op.
pub fn parse<T: serde::de::DeserializeOwned>(op: &str, line: &str) -> Result<T> {
    serde_json::from_str(line).map_err(|source| AdapterError::BadArguments {
        op: op.to_string(),
        source,
    })
}
