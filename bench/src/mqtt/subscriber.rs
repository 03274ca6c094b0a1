//! One subscribing connection: polls its event loop and records every delivery.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, anyhow};
use rumqttc::{AsyncClient, Event, EventLoop, Packet};
use tokio_util::sync::CancellationToken;

use super::publisher::Counters;
use crate::probe::{self, Receipts};

/// Records deliveries until `stop`, then disconnects and returns what it saw. Returns early
/// only with the error that broke the connection.
pub async fn drive(
    index: u32,
    client: AsyncClient,
    mut eventloop: EventLoop,
    publishers: u32,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Receipts> {
    let mut receipts = Receipts::new(publishers);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event.with_context(|| format!("subscriber {index}: connection failed"))? {
            Event::Incoming(Packet::Publish(p)) => {
                let now = probe::now_ns();
                receipts.record(&p.payload, now);
                counters.received.fetch_add(1, Ordering::Relaxed);
                counters.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
            }
            Event::Incoming(Packet::Disconnect) => {
                return Err(anyhow!("subscriber {index}: the broker disconnected it"));
            }
            _ => {}
        }
    }
    super::disconnect(&client, &mut eventloop).await;
    Ok(receipts)
}
