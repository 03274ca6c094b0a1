//! confirm-pubsub: Q queues, P publishers in confirm mode (publisher i to queue i mod Q, through
//! the default exchange), one consumer per queue. In phases: declare the queues, start the
//! consumers, connect the publishers, publish for a while, wait for the last confirms and
//! deliveries, disconnect, delete the queues. Every phase has a time bound; a broker that stops
//! making progress fails the run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::{Map, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::consumer::{self, Tally};
use super::publisher::{self, Sent};
use super::{Counters, bounded, close, connect, watch_blocking};
use crate::cli::ConfirmArgs;
use crate::probe;
use crate::procfs;
use crate::progress::Progress;
use crate::report::{BrokerUsage, Delivery, Latency, Report, per_second, spectrum, thousands};
use crate::timeline::Timeline;
use crate::watch::Watch;

/// How often the coordinator looks at the counters.
const TICK: Duration = Duration::from_millis(50);
/// Longest wait for the consumers to stop, and for all connections to close, at the end.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// The tasks and connections of a running load.
struct Fleet {
    publishers: JoinSet<Result<(u32, Sent)>>,
    consumers: JoinSet<Result<(u32, Tally)>>,
    /// connection.blocked listeners; aborted at the end.
    watchers: JoinSet<()>,
    connections: Vec<Connection>,
    stop_publishing: CancellationToken,
    stop_consuming: CancellationToken,
    counters: Arc<Counters>,
    /// Each publisher's outcome, filled in as it ends.
    sent: Vec<Option<Sent>>,
}

pub async fn run(args: ConfirmArgs) -> Result<Report> {
    if args.prefetch > 0 && args.ack_every > args.prefetch {
        bail!(
            "--ack-every {} is more than --prefetch {}: the broker would stop delivering before \
             the delivery that is acknowledged",
            args.ack_every,
            args.prefetch
        );
    }
    let id = probe::run_id();
    let limit = args.limits.connect_timeout;
    let progress = Progress::start(|| "connecting".to_string());
    let setup = connect(&args.target, &format!("sbbench-{id}-setup"), limit).await?;
    let channel = bounded("setup: opening a channel", limit, setup.create_channel()).await?;

    let mut declared = Vec::new();
    let result = async {
        for q in 0..args.queues {
            let name = format!("sbbench-{id}-{q}");
            declare(&channel, &name, !args.transient, limit).await?;
            declared.push(name);
        }
        load(&args, &id, &declared, &progress).await
    }
    .await;

    // Whatever happened, leave no queues behind on a broker that outlives the run.
    progress.set(|| "deleting the queues".to_string());
    delete(&channel, &declared, limit).await;
    close(&setup, limit).await;
    progress.finish().await;
    result
}

async fn declare(channel: &Channel, queue: &str, durable: bool, limit: Duration) -> Result<()> {
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    let reply = channel.queue_declare(queue.into(), options, FieldTable::default());
    let declared = bounded(format!("declaring queue {queue}"), limit, reply).await?;
    if declared.message_count() > 0 {
        bail!(
            "queue {queue} already holds {} messages",
            declared.message_count()
        );
    }
    Ok(())
}

/// Deletes the run's queues, warning on stderr about any left behind.
async fn delete(channel: &Channel, queues: &[String], limit: Duration) {
    for (i, queue) in queues.iter().enumerate() {
        let reply = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
        if let Err(e) = bounded(format!("deleting queue {queue}"), limit, reply).await {
            eprintln!(
                "switchboard-bench: {e:#}; left behind: {}",
                queues[i..].join(", ")
            );
            return;
        }
    }
}

/// The measured part: consumers, publishers, load, drain, report.
async fn load(
    args: &ConfirmArgs,
    id: &str,
    queues: &[String],
    progress: &Progress,
) -> Result<Report> {
    let publishers = args.publishers();
    let mut fleet = Fleet {
        publishers: JoinSet::new(),
        consumers: JoinSet::new(),
        watchers: JoinSet::new(),
        connections: Vec::new(),
        stop_publishing: CancellationToken::new(),
        stop_consuming: CancellationToken::new(),
        counters: Arc::new(Counters::default()),
        sent: vec![None; publishers as usize],
    };
    let outcome = measure(args, id, queues, progress, &mut fleet).await;
    fleet.stop_publishing.cancel();
    fleet.stop_consuming.cancel();
    fleet.watchers.abort_all();
    let conns = std::mem::take(&mut fleet.connections);
    let closing = conns.iter().map(|c| close(c, STOP_BOUND));
    futures_util::future::join_all(closing).await;
    outcome
}

async fn measure(
    args: &ConfirmArgs,
    id: &str,
    queues: &[String],
    progress: &Progress,
    fleet: &mut Fleet,
) -> Result<Report> {
    start_consumers(args, id, queues, fleet).await?;
    let channels = open_publishers(args, id, fleet).await?;

    let before = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_before = procfs::own_cpu_s();
    let start = Instant::now();
    let start_ns = probe::now_ns();
    start_publishers(args, queues, channels, fleet);
    progress.set(status(fleet.counters.clone()));
    let timeline = Timeline::start({
        let c = fleet.counters.clone();
        move || Counters::get(&c.received)
    });

    publish_phase(args, fleet, start).await?;
    let sent = finish_publishing(args, fleet).await?;
    let expected: u64 = sent.iter().map(|s| s.acked).sum();
    drain_deliveries(args, expected, fleet).await;
    let after = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_after = procfs::own_cpu_s();

    let timeline = timeline.finish().await;
    progress.set(|| "disconnecting".to_string());
    let tallies = stop_consumers(fleet).await?;
    let c = &fleet.counters;
    let since_start = |ns: u64| Duration::from_nanos(ns.saturating_sub(start_ns)).as_secs_f64();
    let mut report = report(
        args,
        &sent,
        &tallies,
        since_start(Counters::get(&c.last_delivery_ns)),
        since_start(Counters::get(&c.last_confirm_ns)),
    );
    report.broker = before.zip(after).map(|(b, a)| BrokerUsage::between(b, a));
    report.bench_cpu_s = bench_before.zip(bench_after).map(|(b, a)| a - b);
    report.timeline = timeline;
    Ok(report)
}

/// One channel per consumer (a connection per `--channels-per-connection` of them), each
/// consuming before anyone publishes.
async fn start_consumers(
    args: &ConfirmArgs,
    id: &str,
    queues: &[String],
    fleet: &mut Fleet,
) -> Result<()> {
    let limit = args.limits.connect_timeout;
    for (i, queue) in (0..).zip(queues) {
        let name = format!("sbbench-{id}-c{i}");
        if i % args.channels_per_connection == 0 {
            let conn = connect(&args.target, &name, limit).await?;
            fleet.connections.push(conn);
        }
        let conn = fleet.connections.last().context("a consumer connection")?;
        let channel = bounded(
            format!("{name}: opening a channel"),
            limit,
            conn.create_channel(),
        );
        let channel = channel.await?;
        if args.prefetch > 0 {
            let qos = channel.basic_qos(args.prefetch, BasicQosOptions::default());
            bounded(format!("{name}: basic.qos"), limit, qos).await?;
        }
        let consume = channel.basic_consume(
            queue.as_str().into(),
            name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let consumer = bounded(format!("{name}: consuming {queue}"), limit, consume).await?;
        let plan = consumer::Plan {
            index: i,
            publishers: args.publishers(),
            ack_every: args.ack_every,
        };
        let stop = fleet.stop_consuming.clone();
        let counters = fleet.counters.clone();
        fleet.consumers.spawn(async move {
            // The channel lives as long as its consumer.
            let _channel = channel;
            Ok((i, consumer::run(consumer, plan, stop, counters).await?))
        });
    }
    Ok(())
}

/// One channel per publisher (a connection per `--channels-per-connection` of them), in
/// confirm mode.
async fn open_publishers(args: &ConfirmArgs, id: &str, fleet: &mut Fleet) -> Result<Vec<Channel>> {
    let limit = args.limits.connect_timeout;
    let mut channels = Vec::new();
    for i in 0..args.publishers() {
        let name = format!("sbbench-{id}-p{i}");
        if i % args.channels_per_connection == 0 {
            let conn = connect(&args.target, &name, limit).await?;
            watch_blocking(
                &conn,
                format!("publisher {i}"),
                fleet.counters.clone(),
                &mut fleet.watchers,
            );
            fleet.connections.push(conn);
        }
        let conn = fleet.connections.last().context("a publisher connection")?;
        let channel = bounded(
            format!("{name}: opening a channel"),
            limit,
            conn.create_channel(),
        );
        let channel = channel.await?;
        let select = channel.confirm_select(ConfirmSelectOptions::default());
        bounded(format!("{name}: confirm.select"), limit, select).await?;
        channels.push(channel);
    }
    Ok(channels)
}

fn start_publishers(
    args: &ConfirmArgs,
    queues: &[String],
    channels: Vec<Channel>,
    fleet: &mut Fleet,
) {
    let publishers = args.publishers();
    for (i, channel) in (0..).zip(channels) {
        let plan = publisher::Plan {
            index: i,
            queue: queues[(i % args.queues) as usize].clone(),
            size: args.traffic.size as usize,
            quota: args.traffic.quota(i, publishers),
            interval: args.traffic.interval(publishers),
            window: args.window as usize,
            persistent: !args.transient,
            stall_timeout: args.limits.stall_timeout,
            drain_timeout: args.limits.drain_timeout,
        };
        let stop = fleet.stop_publishing.clone();
        let counters = fleet.counters.clone();
        fleet
            .publishers
            .spawn(async move { Ok((i, publisher::run(channel, plan, stop, counters).await?)) });
    }
}

/// Runs the load until the duration is over (or every quota is sent), failing when the broker
/// stops confirming or stops delivering.
async fn publish_phase(args: &ConfirmArgs, fleet: &mut Fleet, start: Instant) -> Result<()> {
    let c = fleet.counters.clone();
    let stall = args.limits.stall_timeout;
    let mut confirmed = Watch::new("no publish was confirmed", stall);
    let mut received = Watch::new("the consumers received nothing", stall);
    let paced_slowly = args.traffic.paced_slowly(stall);
    loop {
        tokio::time::sleep(TICK).await;
        check_consumers(fleet)?;
        collect_publishers(fleet)?;
        match args.traffic.messages {
            None if fleet.sent.iter().any(Option::is_some) => {
                bail!("a publisher stopped before the end of the run")
            }
            None if start.elapsed() >= args.traffic.duration => return Ok(()),
            Some(_) if fleet.sent.iter().all(Option::is_some) => return Ok(()),
            _ => {}
        }
        if !paced_slowly {
            let state = || counts(&c);
            confirmed.check(Counters::get(&c.confirmed), state)?;
            received.check(Counters::get(&c.received), state)?;
        }
    }
}

/// Notes the outcome of every publisher that has ended; fails with a publisher's error.
fn collect_publishers(fleet: &mut Fleet) -> Result<()> {
    while let Some(done) = fleet.publishers.try_join_next() {
        let (i, sent) = done.context("a publisher task panicked")??;
        fleet.sent[i as usize] = Some(sent);
    }
    Ok(())
}

/// Fails the run when a consumer ended on its own (its channel or connection broke).
fn check_consumers(fleet: &mut Fleet) -> Result<()> {
    if let Some(done) = fleet.consumers.try_join_next() {
        done.context("a consumer task panicked")??;
        bail!("a consumer ended before the end of the run");
    }
    Ok(())
}

/// Stops the publishers and waits for them to collect their last confirms (each bounds that
/// wait by --drain-timeout itself). Returns each publisher's outcome.
async fn finish_publishing(args: &ConfirmArgs, fleet: &mut Fleet) -> Result<Vec<Sent>> {
    fleet.stop_publishing.cancel();
    // A publisher may be inside a write bounded by the stall timeout, then drains.
    let limit = args.limits.stall_timeout + args.limits.drain_timeout + STOP_BOUND;
    let joined = tokio::time::timeout(limit, async {
        while let Some(done) = fleet.publishers.join_next().await {
            let (i, sent) = done.context("a publisher task panicked")??;
            fleet.sent[i as usize] = Some(sent);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match joined {
        Err(_) => bail!(
            "publishers still running {limit:?} after the end of the run ({})",
            counts(&fleet.counters)
        ),
        Ok(result) => result?,
    }
    Ok(fleet.sent.iter().map(|s| s.unwrap_or_default()).collect())
}

/// Waits until every confirmed message was delivered, nothing arrived for `--drain-idle`, or the
/// drain timeout passed. Missing deliveries are reported as lost, not as an error.
async fn drain_deliveries(args: &ConfirmArgs, expected: u64, fleet: &mut Fleet) {
    let c = fleet.counters.clone();
    let deadline = Instant::now() + args.limits.drain_timeout;
    let mut idle = Watch::new("", args.limits.drain_idle);
    loop {
        let received = Counters::get(&c.received);
        if received >= expected || Instant::now() >= deadline {
            return;
        }
        if idle.check(received, String::new).is_err() || check_consumers(fleet).is_err() {
            return;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Stops the consumers (they acknowledge what they hold) and collects what they saw.
async fn stop_consumers(fleet: &mut Fleet) -> Result<Vec<(u32, Tally)>> {
    fleet.stop_consuming.cancel();
    let mut tallies = Vec::new();
    tokio::time::timeout(STOP_BOUND, async {
        while let Some(done) = fleet.consumers.join_next().await {
            tallies.push(done.context("a consumer task panicked")??);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .map_err(|_| anyhow!("stopping the consumers took longer than {STOP_BOUND:?}"))??;
    tallies.sort_unstable_by_key(|(i, _)| *i);
    Ok(tallies)
}

/// `seconds`: from the first publish to the last delivery; `confirm_seconds`: to the last
/// confirm.
fn report(
    args: &ConfirmArgs,
    sent: &[Sent],
    tallies: &[(u32, Tally)],
    seconds: f64,
    confirm_seconds: f64,
) -> Report {
    let acked: u64 = sent.iter().map(|s| s.acked).sum();
    let mut latency: Histogram<u64> = probe::histogram();
    let mut delivery = Delivery {
        sent: acked,
        nacked: Some(sent.iter().map(|s| s.nacked).sum()),
        publish_seconds: confirm_seconds,
        publish_msg_per_s: per_second(acked, confirm_seconds),
        expected: acked,
        redelivered: Some(0),
        ..Delivery::default()
    };
    let mut msgs = 0;
    let mut redelivered = 0;
    for (q, tally) in tallies {
        let r = &tally.receipts;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = latency.add(&r.latency);
        msgs += r.deliveries;
        redelivered += tally.redelivered;
        delivery.duplicates += r.duplicates;
        delivery.reordered += r.reordered;
        // This consumer's queue gets the messages of publishers q, q + Q, q + 2Q, ...
        delivery.lost += (*q..args.publishers())
            .step_by(args.queues as usize)
            .map(|i| {
                sent[i as usize]
                    .acked
                    .saturating_sub(r.unique_from(i as usize))
            })
            .sum::<u64>();
    }
    delivery.redelivered = Some(redelivered);
    Report {
        tool: "switchboard-bench",
        protocol: "amqp",
        scenario: "confirm-pubsub",
        label: args.run.label.clone(),
        params: params(args),
        msgs: Some(msgs),
        seconds,
        msg_per_s: Some(per_second(msgs, seconds)),
        mb_per_s: Some(per_second(msgs * u64::from(args.traffic.size), seconds) / 1e6),
        delivery: Some(delivery),
        latency: Latency::of(&latency),
        percentiles: spectrum(&latency),
        ..Report::default()
    }
}

fn params(args: &ConfirmArgs) -> Map<String, serde_json::Value> {
    let mut p = Map::new();
    p.insert("queues".into(), json!(args.queues));
    p.insert("publishers".into(), json!(args.publishers()));
    p.insert("prefetch".into(), json!(args.prefetch));
    p.insert("ack_every".into(), json!(args.ack_every));
    p.insert(
        "channels_per_connection".into(),
        json!(args.channels_per_connection),
    );
    p.insert("window".into(), json!(args.window));
    let mode = if args.transient {
        "transient"
    } else {
        "durable+persistent"
    };
    p.insert("mode".into(), json!(mode));
    args.traffic.describe(&mut p);
    p
}

fn counts(c: &Counters) -> String {
    format!(
        "published {}, confirmed {}, nacked {}, received {}, blocked {}",
        Counters::get(&c.published),
        Counters::get(&c.confirmed),
        Counters::get(&c.nacked),
        Counters::get(&c.received),
        Counters::get(&c.blocked)
    )
}

/// The progress line: totals and the rates since the previous line.
fn status(c: Arc<Counters>) -> impl Fn() -> String + Send + Sync + 'static {
    let previous = Mutex::new((Instant::now(), 0u64, 0u64));
    move || {
        let confirmed = Counters::get(&c.confirmed);
        let received = Counters::get(&c.received);
        let Ok(mut prev) = previous.lock() else {
            return String::new();
        };
        let dt = prev.0.elapsed().as_secs_f64().max(1e-3);
        let mut line = format!(
            "confirmed {} ({}/s)  received {} ({}/s)  unconfirmed {}",
            thousands(confirmed as f64),
            thousands(confirmed.saturating_sub(prev.1) as f64 / dt),
            thousands(received as f64),
            thousands(received.saturating_sub(prev.2) as f64 / dt),
            thousands(
                Counters::get(&c.published).saturating_sub(confirmed + Counters::get(&c.nacked))
                    as f64
            ),
        );
        for (what, n) in [
            ("nacked", Counters::get(&c.nacked)),
            ("blocked", Counters::get(&c.blocked)),
        ] {
            if n > 0 {
                line += &format!("  {what} {n}");
            }
        }
        *prev = (Instant::now(), confirmed, received);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{AmqpScenario, Cli, Protocol};
    use clap::Parser;

    fn args(extra: &[&str]) -> ConfirmArgs {
        let cli = Cli::try_parse_from(
            ["switchboard-bench", "amqp", "confirm-pubsub"]
                .iter()
                .chain(extra),
        )
        .expect("parses");
        let Protocol::Amqp {
            scenario: AmqpScenario::ConfirmPubsub(args),
        } = cli.protocol
        else {
            panic!("not confirm-pubsub");
        };
        args
    }

    fn tally(publishers: u32, seen: &[(u32, u32)]) -> Tally {
        let mut receipts = probe::Receipts::new(publishers);
        for &(publisher, seq) in seen {
            receipts.record(&probe::payload(16, publisher, seq), probe::now_ns());
        }
        Tally {
            receipts,
            redelivered: 0,
        }
    }

    #[test]
    fn losses_are_counted_against_the_queue_each_publisher_feeds() {
        // Two queues, four publishers: queue 0 gets publishers 0 and 2, queue 1 gets 1 and 3.
        let args = args(&["--queues", "2", "--publishers", "4"]);
        let sent = [2, 2, 1, 1].map(|acked| Sent {
            published: acked,
            acked,
            nacked: 0,
        });
        let tallies = [
            (0, tally(4, &[(0, 0), (0, 1), (2, 0)])),
            (1, tally(4, &[(1, 0), (3, 0), (3, 0)])),
        ];
        let report = report(&args, &sent, &tallies, 1.0, 1.0);
        let d = report.delivery.expect("delivery counts");
        assert_eq!((d.sent, d.expected), (6, 6));
        assert_eq!(d.lost, 1, "publisher 1's second message never came");
        assert_eq!(d.duplicates, 1);
        assert_eq!(report.msgs, Some(6));
        assert_eq!(report.params["mode"], "durable+persistent");
    }
}
