//! The typed configuration. `default.toml` documents every key; the doc comments here say what
//! the code that reads a value may rely on.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::{HumanDuration, Limit, Size};

/// The whole configuration of one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Local directory for the native log and the metadata store.
    pub data_dir: PathBuf,
    /// This broker's id in the cluster; the Kafka broker id.
    pub node_id: u64,
    /// Name of the cluster; the Kafka cluster id.
    pub cluster_id: String,
    pub kafka: KafkaConfig,
    pub mqtt: MqttConfig,
    pub amqp: AmqpConfig,
    pub admin: AdminConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub meta: MetaConfig,
    pub log: LogConfig,
    /// User name → password, for every protocol that authenticates.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
}

/// `[kafka]`: the Kafka front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Host given to clients in Metadata responses; see [`KafkaConfig::advertised_host`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic; at least 1.
    pub default_partitions: u32,
    /// Largest accepted request frame; not zero.
    pub max_frame_size: Size,
    /// Most open client connections; at least 1.
    pub max_connections: usize,
    pub idle_timeout: HumanDuration,
    pub group_initial_rebalance_delay: HumanDuration,
    /// At most `group_max_session_timeout`.
    pub group_min_session_timeout: HumanDuration,
    pub group_max_session_timeout: HumanDuration,
}

impl KafkaConfig {
    /// The host to advertise to clients: `advertised_host` when set, else the IP of `listen`,
    /// or 127.0.0.1 when `listen` is the unspecified address (`0.0.0.0` or `[::]`), which no client
    /// can connect to.
    pub fn advertised_host(&self) -> String {
        if let Some(host) = &self.advertised_host {
            return host.clone();
        }
        match self.listen.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
            ip => ip.to_string(),
        }
    }
}

/// `[mqtt]`: the MQTT front end (TCP and WebSocket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub ws_enabled: bool,
    pub ws_listen: SocketAddr,
    /// Starts with `/`.
    pub ws_path: String,
    pub allow_anonymous: bool,
    /// Not zero, at most 268 435 455 (the protocol's largest packet).
    pub max_packet_size: Size,
    /// At least 1.
    pub max_connections: usize,
    /// 1 to 65535.
    pub receive_maximum: u16,
    /// Whole seconds, at most 65535; zero accepts what clients ask.
    pub max_keep_alive: HumanDuration,
    pub topic_alias_maximum: u16,
    /// At least 1.
    pub max_queued_messages: usize,
    pub max_session_expiry: Limit<HumanDuration>,
    pub connect_timeout: HumanDuration,
    /// Not zero.
    pub checkpoint_interval: HumanDuration,
    /// Quiet time after which a connection goes dormant; zero keeps connections awake.
    pub dormant_after: HumanDuration,
    /// Flow control: deliveries queued for a connected subscriber at which the connections
    /// publishing to it pause; 0 turns flow control off.
    pub flow_high_messages: u64,
    /// Queued deliveries at or below which paused publishers resume; at most the high mark.
    pub flow_low_messages: u64,
    /// The longest one pause lasts.
    pub flow_max_pause: HumanDuration,
    /// A valid stream name.
    pub default_stream: String,
    /// At least 1.
    pub stream_partitions: u32,
    #[serde(default)]
    pub routes: Vec<MqttRoute>,
}

/// One `[[mqtt.routes]]` entry: publishes whose topic matches `filter` go to `stream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttRoute {
    pub filter: String,
    pub stream: String,
}

/// `[amqp]`: the AMQP 0-9-1 front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Not empty; each starts with `/`.
    pub vhosts: Vec<String>,
    /// At least 4096 (the protocol's minimum frame), at most 4 GiB.
    pub frame_max: Size,
    /// At least 1.
    pub channel_max: u16,
    pub heartbeat: HumanDuration,
    /// Not zero.
    pub max_message_size: Size,
    /// At least 1.
    pub max_connections: usize,
    pub connect_timeout: HumanDuration,
    /// Users that may only log in from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_only_users: Vec<String>,
    /// Flow control: ready messages in a queue at which its publishers pause; 0 = no limit.
    pub flow_high_messages: u64,
    /// Ready messages at or below which paused publishers resume; at most the high mark.
    pub flow_low_messages: u64,
    /// Ready body bytes in a queue at which its publishers pause; 0 = no limit.
    pub flow_high_bytes: Size,
    /// Ready body bytes at or below which paused publishers resume; at most the high mark.
    pub flow_low_bytes: Size,
    /// The longest one pause lasts; 0 turns flow control off.
    pub flow_max_pause: HumanDuration,
}

/// `[admin]`: the admin HTTP endpoint (/metrics, /healthz, API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

/// `[storage]`: where streams are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Backend URL; empty means the default, see [`Config::storage_url`].
    pub url: String,
    pub log: StorageLogConfig,
    pub object: StorageObjectConfig,
}

/// `[storage.object]`: object stores (`s3://`, and `object+file://` / `object+memory://`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageObjectConfig {
    pub mode: ObjectMode,
    /// S3 endpoint URL; empty means AWS (or `AWS_ENDPOINT` from the environment).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
    pub virtual_hosted: bool,
    /// How long a failing store request is retried before clients get a retryable error.
    pub retry_timeout: HumanDuration,
    /// Direct mode: how long a write waits for others to share its object; not zero.
    pub flush_interval: HumanDuration,
    /// Direct mode: an object is written once this much is waiting; not zero.
    pub flush_size: Size,
    /// Recently written or read object bytes kept in memory.
    pub cache_size: Size,
    /// Tiered mode: bytes each partition keeps on local disk once they are uploaded.
    pub local_retention: Size,
    /// Tiered mode: how often closed ranges of the local log are uploaded; not zero.
    pub upload_interval: HumanDuration,
    /// How often the routing table is saved beside the data, when it changed; not zero.
    pub table_save_interval: HumanDuration,
    /// Small runs are merged into objects of up to this size; not zero.
    pub compact_size: Size,
    /// How often small runs are looked for; not zero.
    pub compact_interval: HumanDuration,
}

/// How an object store holds the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectMode {
    /// Everything in the object store, nothing on local disk.
    Direct,
    /// The native log takes writes; older data moves to the object store.
    Tiered,
}

/// `[storage.log]`: the native segment log (`file://`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageLogConfig {
    /// Roll a segment at this size; not zero.
    pub segment_size: Size,
    pub segment_age: HumanDuration,
    /// Bytes between offset index entries; not zero.
    pub index_interval: Size,
    pub fsync: FsyncPolicy,
    /// Period of the background flush under [`FsyncPolicy::Interval`]; not zero then.
    pub fsync_interval: HumanDuration,
    /// Recently appended bytes kept in memory per partition; zero turns the cache off.
    pub tail_cache: Size,
}

/// When the native log flushes written data to disk. Written in kebab case in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// Before acknowledging a Kafka produce with acks=all; concurrent writes share one fsync.
    OnAckAll,
    /// After every write, before acknowledging it.
    Always,
    /// Every `fsync_interval`, in the background.
    Interval,
    /// Never explicitly; left to the operating system.
    Never,
}

/// `[retention]`: when old records are deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub max_age: Limit<HumanDuration>,
    /// Per partition.
    pub max_size: Limit<Size>,
    /// Not zero.
    pub check_interval: HumanDuration,
}

/// `[meta]`: the metadata (Raft) store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    /// See [`Config::meta_dir`] for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Where peers connect; see [`Config::meta_listen`] for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Node id → "host:port" of every voter of the metadata group. Empty: a group of this
    /// broker alone. When not empty it holds [`Config::node_id`], and every address has a port.
    #[serde(default, with = "member_ids")]
    pub members: BTreeMap<u64, String>,
    /// How long start-up waits for the group to elect a leader; not zero.
    pub ready_timeout: HumanDuration,
}

/// TOML keys are strings; node ids are numbers. Written as `1 = "host:port"`, read back the
/// same, in id order.
mod member_ids {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        members: &BTreeMap<u64, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(members.iter().map(|(id, addr)| (id.to_string(), addr)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, String>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(id, addr)| match id.parse::<u64>() {
                Ok(id) => Ok((id, addr)),
                Err(_) => Err(D::Error::custom(format!(
                    "{id:?} is not a node id (a whole number, like the top-level node_id)"
                ))),
            })
            .collect()
    }
}

/// `[log]`: the broker's own logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive, e.g. "info,switchboard_kafka=debug".
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// The storage backend URL: `storage.url`, or `file://<data_dir>/streams` when that is
    /// empty. A relative `data_dir` stays relative (`file://./data/streams`): the backend
    /// resolves it against the working directory, like every other path in the config.
    pub fn storage_url(&self) -> String {
        if self.storage.url.is_empty() {
            format!("file://{}", self.data_dir.join("streams").display())
        } else {
            self.storage.url.clone()
        }
    }

    /// The metadata store's directory: `meta.dir`, or `<data_dir>/meta` when absent.
    pub fn meta_dir(&self) -> PathBuf {
        self.meta
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("meta"))
    }

    /// The address the metadata listener binds when the group has other members:
    /// `meta.listen`, else this broker's own address in `meta.members` (which may be a host
    /// name, resolved when binding). `None` for a group of this broker alone, which needs no
    /// listener. The second value is the key to change to move it.
    pub fn meta_listen(&self) -> Option<(String, String)> {
        let members = &self.meta.members;
        if !members.keys().any(|id| *id != self.node_id) {
            return None;
        }
        match self.meta.listen {
            Some(addr) => Some((addr.to_string(), "meta.listen".into())),
            None => members
                .get(&self.node_id)
                .map(|addr| (addr.clone(), format!("meta.members.{}", self.node_id))),
        }
    }

    /// The configuration as TOML, every key present: what `switchboard config --effective`
    /// would print. Loading the output gives back an equal `Config`.
    pub fn to_toml(&self) -> String {
        // Every field serializes to a TOML string, integer, boolean or table, and paths come
        // from UTF-8 text, so serialization cannot fail; the round-trip test covers it.
        toml::to_string(self).expect("a Config always serializes to TOML")
    }

    /// Checks that hold between keys or that a type cannot express. On failure, the dotted key
    /// to blame and why.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        let kafka = &self.kafka;
        let log = &self.storage.log;
        let nonzero = [
            (
                "kafka.default_partitions",
                u64::from(kafka.default_partitions),
            ),
            ("kafka.max_frame_size", kafka.max_frame_size.bytes()),
            ("kafka.max_connections", kafka.max_connections as u64),
            ("storage.log.segment_size", log.segment_size.bytes()),
            ("storage.log.index_interval", log.index_interval.bytes()),
        ];
        if let Some((key, _)) = nonzero.iter().find(|(_, value)| *value == 0) {
            return Err((key, "must not be zero".into()));
        }
        let object = &self.storage.object;
        let object_zero = [
            (
                "storage.object.flush_interval",
                object.flush_interval.get().is_zero(),
            ),
            ("storage.object.flush_size", object.flush_size.bytes() == 0),
            (
                "storage.object.upload_interval",
                object.upload_interval.get().is_zero(),
            ),
            (
                "storage.object.table_save_interval",
                object.table_save_interval.get().is_zero(),
            ),
            (
                "storage.object.compact_size",
                object.compact_size.bytes() == 0,
            ),
            (
                "storage.object.compact_interval",
                object.compact_interval.get().is_zero(),
            ),
        ];
        if let Some((key, _)) = object_zero.iter().find(|(_, zero)| *zero) {
            return Err((key, "must not be zero".into()));
        }
        if self.retention.check_interval.get().is_zero() {
            return Err(("retention.check_interval", "must not be zero".into()));
        }
        if log.fsync == FsyncPolicy::Interval && log.fsync_interval.get().is_zero() {
            return Err((
                "storage.log.fsync_interval",
                "must not be zero when fsync = \"interval\"".into(),
            ));
        }
        let mqtt = &self.mqtt;
        let mqtt_nonzero = [
            ("mqtt.max_packet_size", mqtt.max_packet_size.bytes()),
            ("mqtt.max_connections", mqtt.max_connections as u64),
            ("mqtt.receive_maximum", u64::from(mqtt.receive_maximum)),
            ("mqtt.max_queued_messages", mqtt.max_queued_messages as u64),
            ("mqtt.stream_partitions", u64::from(mqtt.stream_partitions)),
        ];
        if let Some((key, _)) = mqtt_nonzero.iter().find(|(_, value)| *value == 0) {
            return Err((key, "must not be zero".into()));
        }
        if mqtt.checkpoint_interval.get().is_zero() {
            return Err(("mqtt.checkpoint_interval", "must not be zero".into()));
        }
        if mqtt.max_packet_size.bytes() > 268_435_455 {
            return Err((
                "mqtt.max_packet_size",
                "must be at most 268435455 bytes, the largest MQTT packet".into(),
            ));
        }
        if mqtt.max_keep_alive.get().as_secs() > u64::from(u16::MAX) {
            return Err(("mqtt.max_keep_alive", "must be at most 65535s".into()));
        }
        if !mqtt.ws_path.starts_with('/') {
            return Err((
                "mqtt.ws_path",
                format!("{:?} must start with '/'", mqtt.ws_path),
            ));
        }
        let amqp = &self.amqp;
        if amqp.vhosts.is_empty() || amqp.vhosts.iter().any(|v| !v.starts_with('/')) {
            return Err((
                "amqp.vhosts",
                "must list at least one vhost, each starting with '/'".into(),
            ));
        }
        if amqp.frame_max.bytes() < 4096 || amqp.frame_max.bytes() > u64::from(u32::MAX) {
            return Err(("amqp.frame_max", "must be between 4 KiB and 4 GiB".into()));
        }
        let amqp_nonzero = [
            ("amqp.channel_max", u64::from(amqp.channel_max)),
            ("amqp.max_message_size", amqp.max_message_size.bytes()),
            ("amqp.max_connections", amqp.max_connections as u64),
        ];
        if let Some((key, _)) = amqp_nonzero.iter().find(|(_, value)| *value == 0) {
            return Err((key, "must not be zero".into()));
        }
        let flow_marks = [
            (
                "mqtt.flow_low_messages",
                mqtt.flow_low_messages,
                mqtt.flow_high_messages,
                "mqtt.flow_high_messages",
            ),
            (
                "amqp.flow_low_messages",
                amqp.flow_low_messages,
                amqp.flow_high_messages,
                "amqp.flow_high_messages",
            ),
            (
                "amqp.flow_low_bytes",
                amqp.flow_low_bytes.bytes(),
                amqp.flow_high_bytes.bytes(),
                "amqp.flow_high_bytes",
            ),
        ];
        for (key, low, high, high_key) in flow_marks {
            if high > 0 && low > high {
                return Err((key, format!("{low} is more than {high_key} ({high})")));
            }
        }
        self.check_meta()?;
        if kafka.group_min_session_timeout > kafka.group_max_session_timeout {
            return Err((
                "kafka.group_min_session_timeout",
                format!(
                    "{} is more than kafka.group_max_session_timeout ({})",
                    kafka.group_min_session_timeout, kafka.group_max_session_timeout
                ),
            ));
        }
        Ok(())
    }

    fn check_meta(&self) -> Result<(), (&'static str, String)> {
        let meta = &self.meta;
        if meta.ready_timeout.get().is_zero() {
            return Err(("meta.ready_timeout", "must not be zero".into()));
        }
        if meta.members.is_empty() {
            return Ok(());
        }
        if !meta.members.contains_key(&self.node_id) {
            return Err((
                "meta.members",
                format!(
                    "lists nodes {:?} but not this broker's node_id {}",
                    meta.members.keys().collect::<Vec<_>>(),
                    self.node_id
                ),
            ));
        }
        for (id, addr) in &meta.members {
            let port = addr
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
                return Err((
                    "meta.members",
                    format!("node {id}: {addr:?} is not \"host:port\""),
                ));
            }
        }
        Ok(())
    }
}
