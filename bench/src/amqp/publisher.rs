//! One publishing channel in confirm mode. Up to `window` publishes may be unconfirmed at once;
//! confirms are taken as they arrive, in whatever order, while publishing goes on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Counters;
use crate::probe;

/// What one publisher sends, and how long it waits for the broker.
pub struct Plan {
    pub index: u32,
    /// Published to through the default exchange, so the routing key is the queue's name.
    pub queue: String,
    pub size: usize,
    /// Messages to send, or `None` to send until stopped.
    pub quota: Option<u64>,
    /// Time between two messages, or `None` for as fast as the window allows.
    pub interval: Option<Duration>,
    pub window: usize,
    /// Delivery mode 2 (persistent) rather than 1.
    pub persistent: bool,
    /// With the window full, longest wait for a confirm.
    pub stall_timeout: Duration,
    /// After the stop, longest wait for the outstanding confirms.
    pub drain_timeout: Duration,
}

/// One publisher's outcome; at the end every publish is either acked or nacked.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub published: u64,
    pub acked: u64,
    pub nacked: u64,
}

/// Publishes until `stop` or the quota, then waits for the outstanding confirms.
pub async fn run(
    channel: Channel,
    plan: Plan,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Sent> {
    let name = format!("publisher {}", plan.index);
    let properties =
        BasicProperties::default().with_delivery_mode(if plan.persistent { 2 } else { 1 });
    let mut unconfirmed = FuturesUnordered::new();
    let mut sent = Sent::default();
    let start = Instant::now();
    while !stop.is_cancelled() && plan.quota.is_none_or(|q| sent.published < q) {
        while let Some(Some(confirm)) = unconfirmed.next().now_or_never() {
            settle(&name, confirm, &mut sent, &counters)?;
        }
        if unconfirmed.len() >= plan.window {
            tokio::select! {
                _ = stop.cancelled() => break,
                confirm = tokio::time::timeout(plan.stall_timeout, unconfirmed.next()) => {
                    let Ok(Some(confirm)) = confirm else {
                        bail!(
                            "{name}: {} publishes unconfirmed and no confirm for {:?}",
                            unconfirmed.len(),
                            plan.stall_timeout
                        );
                    };
                    settle(&name, confirm, &mut sent, &counters)?;
                }
            }
            continue;
        }
        if let Some(interval) = plan.interval {
            let due = start + interval.mul_f64(sent.published as f64);
            if Instant::now() < due {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(due) => {}
                    Some(confirm) = unconfirmed.next() => {
                        settle(&name, confirm, &mut sent, &counters)?;
                    }
                }
                continue;
            }
        }
        let seq = u32::try_from(sent.published)
            .map_err(|_| anyhow!("{name}: sequence numbers exhausted"))?;
        // Stamped only now, after waiting for room in the window: time spent blocked on our own
        // window is not broker latency.
        let payload = probe::payload(plan.size, plan.index, seq);
        let mut publish = Box::pin(publish(&channel, &plan.queue, payload, properties.clone()));
        sent.published += 1;
        Counters::add(&counters.published, 1);
        // Polled once here: that first poll numbers the publish for confirms and queues its
        // frames, so doing it in creation order keeps frames and confirm numbers in step.
        match std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await {
            Poll::Ready(confirm) => settle(&name, confirm, &mut sent, &counters)?,
            Poll::Pending => unconfirmed.push(publish),
        }
    }
    let outstanding = unconfirmed.len();
    let drained = tokio::time::timeout(plan.drain_timeout, async {
        while let Some(confirm) = unconfirmed.next().await {
            settle(&name, confirm, &mut sent, &counters)?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match drained {
        Err(_) => bail!(
            "{name}: {} of the last {outstanding} publishes still unconfirmed {:?} after the end \
             of the run",
            unconfirmed.len(),
            plan.drain_timeout
        ),
        Ok(result) => result?,
    }
    Ok(sent)
}

/// One publish through the default exchange, resolved by the broker's confirm. Not awaited
/// one by one: lapin resolves `basic_publish` only once its I/O thread has written the frames,
/// and waiting for that before the next publish costs a thread hand-off per message (most of
/// the bench's CPU time), where a window of them in flight lets the I/O thread write many per
/// wake-up.
///
/// The future borrows the channel (which outlives every publish of the run) instead of holding
/// a clone: a lapin `Channel` is a bundle of reference counts, and cloning and dropping one per
/// message was 4 % of the bench's CPU.
fn publish<'a>(
    channel: &'a Channel,
    queue: &str,
    payload: Vec<u8>,
    properties: BasicProperties,
) -> impl Future<Output = lapin::Result<Confirmation>> + Send + use<'a> {
    let queue = queue.into();
    async move {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue,
                BasicPublishOptions::default(),
                &payload,
                properties,
            )
            .await?;
        confirm.await
    }
}

/// Counts one confirm.
fn settle(
    name: &str,
    confirm: lapin::Result<Confirmation>,
    sent: &mut Sent,
    counters: &Counters,
) -> Result<()> {
    match confirm.with_context(|| format!("{name}: waiting for a confirm"))? {
        Confirmation::Ack(_) => {
            sent.acked += 1;
            Counters::add(&counters.confirmed, 1);
        }
        Confirmation::Nack(_) => {
            sent.nacked += 1;
            Counters::add(&counters.nacked, 1);
        }
        Confirmation::NotRequested => bail!("{name}: its channel is not in confirm mode"),
    }
    counters
        .last_confirm_ns
        .fetch_max(probe::now_ns(), Ordering::Relaxed);
    Ok(())
}
