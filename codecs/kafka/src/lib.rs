//! Kafka front end: framing ([`wire`]), one handler per API key ([`handlers`]), the classic
//! consumer-group coordinator ([`coordinator`]) and the connection loop ([`conn`]). A request
//! for an API or version we do not serve gets an UNSUPPORTED_VERSION answer (`unsupported`).

pub mod conn;
pub mod coordinator;
mod dispatch;
pub mod errors;
pub mod handlers;
pub mod metrics;
mod unsupported;
pub mod versions;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use switchboard_router::Router;

pub use conn::{ConnLimits, serve_listener};
pub use coordinator::{Coordinator, GroupSettings};
pub use metrics::KafkaMetrics;

/// Settings of the Kafka front end, taken from the server config.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub node_id: i32,
    pub cluster_id: String,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub max_frame_size: usize,
    pub idle_timeout: Duration,
    /// Largest record batch accepted in a produce request (Kafka's `message.max.bytes`).
    pub max_message_bytes: usize,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            node_id: 1,
            cluster_id: "switchboard".into(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: true,
            default_partitions: 1,
            max_frame_size: 100 * 1024 * 1024,
            idle_timeout: Duration::from_secs(600),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Everything a request handler may use.
pub struct KafkaContext {
    pub router: Arc<Router>,
    pub coordinator: Arc<Coordinator>,
    pub settings: KafkaSettings,
    pub metrics: KafkaMetrics,
}
