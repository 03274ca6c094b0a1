//! Switchboard's configuration: typed settings, their layered loader, and `default.toml`, the
//! embedded default config that documents every key.
//!
//! Sources, lowest precedence first: [`DEFAULT_TOML`] → the `--config` file → `SWITCHBOARD_*`
//! environment variables → `--set key.path=value` flags. See [`load`].

mod error;
mod load;
mod schema;
mod units;

pub use error::{ConfigError, Origin};
pub use load::{CONFIG_FILE_ENV, ENV_PREFIX, OPTIONAL_KEYS, load};
pub use schema::{
    AdminConfig, Config, FsyncPolicy, KafkaConfig, LogConfig, LogFormat, MetaConfig, ObjectMode,
    RetentionConfig, StorageConfig, StorageLogConfig, StorageObjectConfig,
};
pub use units::{HumanDuration, Limit, ParseUnitError, Size};

/// The default configuration, commented: `switchboard config` prints it as it is.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");
