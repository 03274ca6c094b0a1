//! One consuming channel: records every delivery and acknowledges it, each on its own or every
//! Nth with `multiple`. Acknowledgements are pipelined (lapin resolves an ack once it is
//! written), so the consumer does not wait for one before taking the next delivery.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::BasicAckOptions;
use lapin::{Acker, Consumer};
use tokio_util::sync::CancellationToken;

use super::Counters;
use crate::probe::{self, Receipts};

/// With `ack_every` > 1, the latest deliveries are acknowledged anyway after this much silence,
/// so that the last few of a run, or of a burst, do not stay unacknowledged.
const ACK_FLUSH: Duration = Duration::from_millis(50);
/// At the end, longest wait for acknowledgements still being written.
const ACK_DRAIN: Duration = Duration::from_secs(2);

pub struct Plan {
    pub index: u32,
    /// Publishers of the whole run: the probe headers index them.
    pub publishers: u32,
    pub ack_every: u16,
}

/// What one consumer saw.
pub struct Tally {
    pub receipts: Receipts,
    pub redelivered: u64,
}

/// Consumes until `stop`. Returns early only with the error that ended the consumer.
pub async fn run(
    mut consumer: Consumer,
    plan: Plan,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Tally> {
    let name = format!("consumer {}", plan.index);
    let mut tally = Tally {
        receipts: Receipts::new(plan.publishers),
        redelivered: 0,
    };
    let mut acks = FuturesUnordered::new();
    // The latest delivery not acknowledged yet, and how many are waiting with it.
    let mut unacked: Option<Acker> = None;
    let mut waiting: u16 = 0;
    let multiple = plan.ack_every > 1;
    loop {
        let mut flush = false;
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = acks.next() => done?,
            next = consumer.next() => {
                let Some(delivery) = next else {
                    bail!("{name}: the broker cancelled the consumer or closed its channel");
                };
                let delivery = delivery.with_context(|| format!("{name}: receiving"))?;
                let now = probe::now_ns();
                tally.receipts.record(&delivery.data, now);
                tally.redelivered += u64::from(delivery.redelivered);
                Counters::add(&counters.received, 1);
                counters.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                unacked = Some(delivery.acker);
                waiting += 1;
            }
            _ = tokio::time::sleep(ACK_FLUSH), if unacked.is_some() && acks.is_empty() => {
                flush = true;
            }
        }
        // lapin writes each ack from a task of its own, so two acks in flight may reach the
        // broker in either order. Single acks do not mind; a multiple ack overtaken by a later
        // one would name a tag already settled (406 unknown delivery tag), so those go one at a
        // time, the next covering whatever arrived meanwhile.
        if (waiting >= plan.ack_every || flush)
            && (!multiple || acks.is_empty())
            && let Some(acker) = unacked.take()
        {
            acks.push(ack(plan.index, acker, multiple));
            waiting = 0;
        }
    }
    // Acknowledgements lost now only leave messages in queues that are about to be deleted.
    let _ = tokio::time::timeout(ACK_DRAIN, async {
        while acks.next().await.is_some() {}
        if let Some(acker) = unacked.take() {
            let _ = ack(plan.index, acker, true).await;
        }
    })
    .await;
    Ok(tally)
}

/// Acknowledges a delivery (with `multiple`: and every earlier one of the channel).
async fn ack(consumer: u32, acker: Acker, multiple: bool) -> Result<()> {
    acker
        .ack(BasicAckOptions { multiple })
        .await
        .with_context(|| format!("consumer {consumer}: basic.ack"))?;
    Ok(())
}
