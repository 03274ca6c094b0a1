//! AMQP 0-9-1 scenarios, driven through lapin. lapin runs each connection's socket I/O on a
//! thread of its own, besides the tokio workers: a run with P publishers and Q consumers has
//! P + Q such threads, all competing with the broker for the same cores.

mod consumer;
mod publisher;
mod pubsub;

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties, Event};
use tokio::task::JoinSet;

use crate::cli::{AmqpScenario, AmqpTarget};
use crate::report::Report;

pub async fn run(scenario: AmqpScenario) -> Result<Report> {
    match scenario {
        AmqpScenario::ConfirmPubsub(args) => pubsub::run(args).await,
    }
}

/// Totals over all connections of a run, read by the coordinator and the progress line.
#[derive(Default)]
pub struct Counters {
    /// basic.publish frames written to the socket.
    pub published: AtomicU64,
    /// Publishes the broker confirmed with basic.ack.
    pub confirmed: AtomicU64,
    /// Publishes the broker refused with basic.nack.
    pub nacked: AtomicU64,
    /// Deliveries received by consumers.
    pub received: AtomicU64,
    /// connection.blocked notifications (a RabbitMQ memory or disk alarm stops publishers).
    pub blocked: AtomicU64,
    /// [`crate::probe::now_ns`] of the latest confirm.
    pub last_confirm_ns: AtomicU64,
    /// [`crate::probe::now_ns`] of the latest delivery.
    pub last_delivery_ns: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Opens a connection named `name` (brokers show it in their connection lists), failing after
/// `limit`.
async fn connect(target: &AmqpTarget, name: &str, limit: Duration) -> Result<Connection> {
    // Built field by field rather than parsed, so that no vhost or password needs URL escaping.
    let uri = AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: target.user.clone(),
                password: target.password.clone(),
            },
            host: target.host.clone(),
            port: target.port,
        },
        vhost: target.vhost.clone(),
        query: AMQPQueryString::default(),
    };
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let address = format!("{}:{}", target.host, target.port);
    match tokio::time::timeout(limit, Connection::connect_uri(uri, properties)).await {
        Err(_) => bail!("{name}: no connection.open-ok from {address} within {limit:?}"),
        Ok(result) => result.with_context(|| format!("{name}: connecting to {address}")),
    }
}

/// Awaits a broker reply, failing after `limit`.
async fn bounded<T>(
    what: impl Display,
    limit: Duration,
    reply: impl Future<Output = lapin::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, reply).await {
        Err(_) => bail!("{what}: no reply from the broker within {limit:?}"),
        Ok(result) => result.with_context(|| what.to_string()),
    }
}

/// Closes a connection; a broker that does not answer within `limit` is not waited for (the
/// socket closes when the connection is dropped).
async fn close(conn: &Connection, limit: Duration) {
    let _ = tokio::time::timeout(limit, conn.close(200, "OK".into())).await;
}

/// Reports on stderr when the broker blocks or unblocks `conn` (connection.blocked: RabbitMQ
/// does it to publishers during a memory or disk alarm), counting the blocks.
fn watch_blocking(
    conn: &Connection,
    name: String,
    counters: std::sync::Arc<Counters>,
    tasks: &mut JoinSet<()>,
) {
    let events = conn.events_listener();
    tasks.spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Event::ConnectionBlocked(reason) => {
                    Counters::add(&counters.blocked, 1);
                    eprintln!("{name}: the broker blocked the connection: {reason}");
                }
                Event::ConnectionUnblocked => {
                    eprintln!("{name}: the broker unblocked the connection");
                }
                _ => {}
            }
        }
    });
}
