//! Settings of the AMQP front end, taken from the server config.

use std::collections::HashMap;
use std::time::Duration;

/// What the AMQP front end accepts and announces.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// user name → password, checked on `connection.start-ok` (PLAIN, AMQPLAIN).
    pub users: HashMap<String, String>,
    /// Virtual hosts a client may open; `connection.open` of another is 530 NOT_ALLOWED.
    pub vhosts: Vec<String>,
    /// Largest frame, header and frame-end included, offered in `connection.tune`.
    pub frame_max: u32,
    /// Highest channel number offered in `connection.tune`.
    pub channel_max: u16,
    /// Heartbeat interval offered in `connection.tune`; zero offers none.
    pub heartbeat: Duration,
    /// Largest message body accepted (RabbitMQ's `max_message_size`); larger is 406.
    pub max_message_size: usize,
    /// How long a client may take from TCP connect to `connection.open`.
    pub connect_timeout: Duration,
    /// Users that may only connect from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_only_users: Vec<String>,
    /// Publisher flow control.
    pub flow: FlowSettings,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            users: HashMap::from([("guest".to_owned(), "guest".to_owned())]),
            vhosts: vec!["/".to_owned()],
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: Duration::from_secs(60),
            max_message_size: 128 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            loopback_only_users: vec!["guest".to_owned()],
            flow: FlowSettings::default(),
        }
    }
}

/// Publisher flow control (see `broker::flow`): a connection that publishes into a queue whose
/// ready backlog reached a high-water mark stops being read until the queue is back at its
/// low-water mark, or for `max_pause` at most. A limit of 0 is off; both off is no flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSettings {
    /// Ready messages at which publishers pause.
    pub high_messages: u64,
    /// Ready messages at or below which they resume.
    pub low_messages: u64,
    /// Ready body bytes at which publishers pause.
    pub high_bytes: u64,
    /// Ready body bytes at or below which they resume.
    pub low_bytes: u64,
    /// The longest one pause lasts, whatever the queue does: a bound that keeps connections
    /// whose reading the queue waits for (their acks) from waiting on each other for ever.
    pub max_pause: Duration,
}

impl FlowSettings {
    /// No flow control.
    pub const OFF: Self = Self {
        high_messages: 0,
        low_messages: 0,
        high_bytes: 0,
        low_bytes: 0,
        max_pause: Duration::ZERO,
    };

    /// Whether any limit is on.
    pub fn is_on(&self) -> bool {
        !self.max_pause.is_zero() && (self.high_messages > 0 || self.high_bytes > 0)
    }

    /// Whether a queue with this backlog makes its publishers pause.
    pub fn above_high(&self, ready: u64, ready_bytes: u64) -> bool {
        !self.max_pause.is_zero()
            && ((self.high_messages > 0 && ready >= self.high_messages)
                || (self.high_bytes > 0 && ready_bytes >= self.high_bytes))
    }

    /// Whether a queue with this backlog keeps its publishers paused: above either low-water
    /// mark whose limit is on.
    pub fn above_low(&self, ready: u64, ready_bytes: u64) -> bool {
        !self.max_pause.is_zero()
            && ((self.high_messages > 0 && ready > self.low_messages)
                || (self.high_bytes > 0 && ready_bytes > self.low_bytes))
    }
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            high_messages: 400,
            low_messages: 200,
            high_bytes: 16 * 1024 * 1024,
            low_bytes: 8 * 1024 * 1024,
            max_pause: Duration::from_secs(1),
        }
    }
}
