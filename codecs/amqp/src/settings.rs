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
        }
    }
}
