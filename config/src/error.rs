//! The one error type of this crate. Every message names the key at fault and where its value
//! came from, so an operator can find and fix it.

use std::fmt;
use std::path::PathBuf;

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The embedded `default.toml`.
    Default,
    /// The file given with `--config`.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A `--set key=value` flag, as given.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the embedded default config"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag --set {flag}"),
        }
    }
}

/// A configuration that cannot be loaded. None of these is retryable: the input must change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{origin} is not valid TOML: {message}")]
    Syntax { origin: Origin, message: String },

    #[error("unknown config key `{key}` in {origin}{}", did_you_mean(suggestion))]
    UnknownKey {
        /// The dotted key, e.g. `kafka.listn`.
        key: String,
        origin: Origin,
        /// The closest known key, written as the origin writes keys (an environment variable
        /// name for [`Origin::Env`], a dotted key otherwise).
        suggestion: Option<String>,
    },

    #[error("`{key}` in {origin} is a section, not a key; set one of its keys, e.g. `{example}`")]
    NotAKey {
        key: String,
        origin: Origin,
        example: String,
    },

    #[error("flag --set {flag:?} is not of the form key.path=value")]
    BadFlag { flag: String },

    #[error("invalid value for `{key}` in {origin}: {message}")]
    Invalid {
        /// The dotted key, e.g. `kafka.idle_timeout`.
        key: String,
        origin: Origin,
        message: String,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(known) => format!("; did you mean `{known}`?"),
        None => String::new(),
    }
}
