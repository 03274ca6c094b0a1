//! One publishing connection: a producer task that stamps and queues messages, and a driver
//! task that polls the rumqttc event loop (which writes them and handles the acknowledgements).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::probe;

/// Totals over all connections of a run, read by the coordinator and the progress line.
#[derive(Default)]
pub struct Counters {
    /// Publishes handed to rumqttc.
    pub queued: AtomicU64,
    /// Publishes written to the socket.
    pub written: AtomicU64,
    /// PUBACKs received (QoS 1).
    pub acked: AtomicU64,
    /// Deliveries received by subscribers.
    pub received: AtomicU64,
    /// [`probe::now_ns`] of the latest delivery.
    pub last_delivery_ns: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What one publisher sends.
#[derive(Clone)]
pub struct Plan {
    pub index: u32,
    pub topic: String,
    pub qos: QoS,
    pub size: usize,
    /// Messages to send, or `None` to send until stopped.
    pub quota: Option<u64>,
    /// Time between two messages, or `None` for as fast as the broker takes them.
    pub interval: Option<Duration>,
}

/// Queues messages until `stop` or the quota; returns how many were queued. A publish blocks
/// while rumqttc's channel is full, i.e. while the broker does not keep up; the caller bounds
/// how long it waits for this task.
pub async fn produce(
    client: AsyncClient,
    plan: Plan,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<u64> {
    let start = Instant::now();
    let mut seq: u64 = 0;
    while !stop.is_cancelled() && plan.quota.is_none_or(|q| seq < q) {
        if let Some(interval) = plan.interval {
            let due = start + interval.mul_f64(seq as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = stop.cancelled() => break,
            }
        }
        let seq32 = u32::try_from(seq)
            .map_err(|_| anyhow!("publisher {}: sequence numbers exhausted", plan.index))?;
        let payload = probe::payload(plan.size, plan.index, seq32);
        client
            .publish(plan.topic.as_str(), plan.qos, false, payload)
            .await
            .with_context(|| format!("publisher {}: its connection is gone", plan.index))?;
        seq += 1;
        counters.queued.fetch_add(1, Ordering::Relaxed);
    }
    Ok(seq)
}

/// Polls the event loop until `stop`, counting writes and acknowledgements. Returns early only
/// with the error that broke the connection.
pub async fn drive(
    index: u32,
    client: AsyncClient,
    mut eventloop: EventLoop,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<()> {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event.with_context(|| format!("publisher {index}: connection failed"))? {
            Event::Outgoing(Outgoing::Publish(_)) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
            }
            Event::Incoming(Packet::PubAck(_)) => {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Event::Incoming(Packet::Disconnect) => {
                return Err(anyhow!("publisher {index}: the broker disconnected it"));
            }
            _ => {}
        }
    }
    super::disconnect(&client, &mut eventloop).await;
    Ok(())
}
