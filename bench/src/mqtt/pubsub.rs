//! Fan-in and fan-out: publishers and subscribers on one broker, in phases: subscribe, connect
//! the publishers, publish for a while, let the deliveries drain, disconnect. Every phase has a
//! time bound; a broker that stops making progress fails the run.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, EventLoop, QoS};
use serde_json::{Map, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::publisher::{self, Counters, Plan};
use super::{connect, options, subscribe, subscriber};
use crate::cli::LoadArgs;
use crate::probe::{self, Receipts};
use crate::procfs;
use crate::progress::Progress;
use crate::report::{BrokerUsage, Delivery, Latency, Report, per_second, spectrum, thousands};
use crate::timeline::Timeline;
use crate::watch::Watch;

/// Keep-alive of every connection: long enough that a busy broker answering PINGREQ late does
/// not look like a dead one, short enough that the broker notices a vanished bench.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How often the coordinator looks at the counters.
const TICK: Duration = Duration::from_millis(50);

/// Who publishes to whom.
pub struct Shape {
    name: &'static str,
    publishers: u32,
    subscribers: u32,
    /// Subscribers use `<prefix>/+` (fan-in) rather than the one topic `<prefix>/0`.
    wildcard: bool,
}

impl Shape {
    pub fn fan_in(publishers: u32) -> Shape {
        Shape {
            name: "fan-in",
            publishers,
            subscribers: 1,
            wildcard: true,
        }
    }

    pub fn fan_out(subscribers: u32) -> Shape {
        Shape {
            name: "fan-out",
            publishers: 1,
            subscribers,
            wildcard: false,
        }
    }

    fn topic(&self, prefix: &str, publisher: u32) -> String {
        format!("{prefix}/{publisher}")
    }

    fn filter(&self, prefix: &str) -> String {
        if self.wildcard {
            format!("{prefix}/+")
        } else {
            self.topic(prefix, 0)
        }
    }
}

/// The tasks of a running load.
struct Fleet {
    producers: JoinSet<Result<(u32, u64)>>,
    publishers: JoinSet<Result<()>>,
    subscribers: JoinSet<Result<Receipts>>,
    stop_publishing: CancellationToken,
    stop_publishers: CancellationToken,
    stop_subscribers: CancellationToken,
    counters: Arc<Counters>,
    /// Messages each publisher queued, filled in as its producer ends.
    sent: Vec<Option<u64>>,
}

pub async fn run(shape: Shape, load: LoadArgs) -> Result<Report> {
    if shape.publishers == 0 || shape.subscribers == 0 {
        bail!(
            "{} needs at least one publisher and one subscriber",
            shape.name
        );
    }
    let id = probe::run_id();
    let prefix = format!("sbbench/{id}");
    let qos: QoS = load.qos.into();
    let mut fleet = Fleet {
        producers: JoinSet::new(),
        publishers: JoinSet::new(),
        subscribers: JoinSet::new(),
        stop_publishing: CancellationToken::new(),
        stop_publishers: CancellationToken::new(),
        stop_subscribers: CancellationToken::new(),
        counters: Arc::new(Counters::default()),
        sent: vec![None; shape.publishers as usize],
    };

    let progress = Progress::start(|| "connecting".to_string());
    start_subscribers(&shape, &load, &id, &prefix, &mut fleet).await?;
    let clients = open_publishers(&shape, &load, &id).await?;

    let before = load.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_before = procfs::own_cpu_s();
    let start = Instant::now();
    let start_ns = probe::now_ns();
    start_publishers(&shape, &load, &prefix, qos, clients, &mut fleet);
    progress.set(status(fleet.counters.clone(), qos));
    let timeline = Timeline::start({
        let c = fleet.counters.clone();
        move || Counters::get(&c.received)
    });

    publish_phase(&load, &mut fleet, start).await?;
    let sent = finish_publishing(&load, qos, &mut fleet).await?;
    let published_at = Instant::now();

    let sent_total: u64 = sent.iter().sum();
    let expected = sent_total * u64::from(shape.subscribers);
    drain_deliveries(&load, expected, &fleet).await;
    let after = load.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_after = procfs::own_cpu_s();

    let timeline = timeline.finish().await;
    let receipts = stop(&mut fleet).await?;
    progress.finish().await;

    let last_ns = Counters::get(&fleet.counters.last_delivery_ns);
    let seconds = Duration::from_nanos(last_ns.saturating_sub(start_ns)).as_secs_f64();
    let publish_seconds = (published_at - start).as_secs_f64();
    let mut report = report(
        &shape,
        &load,
        &sent,
        &receipts,
        seconds,
        publish_seconds,
        before.zip(after).map(|(b, a)| BrokerUsage::between(b, a)),
    );
    report.bench_cpu_s = bench_before.zip(bench_after).map(|(b, a)| a - b);
    report.timeline = timeline;
    Ok(report)
}

/// Connects and subscribes every subscriber before anyone publishes, so none misses the start.
async fn start_subscribers(
    shape: &Shape,
    load: &LoadArgs,
    id: &str,
    prefix: &str,
    fleet: &mut Fleet,
) -> Result<()> {
    let filter = shape.filter(prefix);
    let qos: QoS = load.qos.into();
    let size = load.traffic.size as usize;
    let clients = open_all(shape.subscribers, |i| {
        let opts = options(&load.target, format!("sbb-{id}-s{i}"), KEEP_ALIVE, size);
        let filter = filter.clone();
        let target = load.target.clone();
        let timeout = load.limits.connect_timeout;
        async move {
            let (client, mut eventloop) = connect(opts, &target, timeout).await?;
            subscribe(&client, &mut eventloop, &filter, qos, timeout)
                .await
                .with_context(|| format!("subscriber {i}"))?;
            Ok((client, eventloop))
        }
    })
    .await?;
    for (i, (client, eventloop)) in (0..).zip(clients) {
        fleet.subscribers.spawn(subscriber::drive(
            i,
            client,
            eventloop,
            shape.publishers,
            fleet.stop_subscribers.clone(),
            fleet.counters.clone(),
        ));
    }
    Ok(())
}

async fn open_publishers(
    shape: &Shape,
    load: &LoadArgs,
    id: &str,
) -> Result<Vec<(AsyncClient, EventLoop)>> {
    open_all(shape.publishers, |i| {
        let mut opts = options(
            &load.target,
            format!("sbb-{id}-p{i}"),
            KEEP_ALIVE,
            load.traffic.size as usize,
        );
        // The QoS 1 window: rumqttc stops taking publishes while this many await PUBACK.
        opts.set_inflight(load.inflight);
        let target = load.target.clone();
        let timeout = load.limits.connect_timeout;
        async move { connect(opts, &target, timeout).await }
    })
    .await
}

fn start_publishers(
    shape: &Shape,
    load: &LoadArgs,
    prefix: &str,
    qos: QoS,
    clients: Vec<(AsyncClient, EventLoop)>,
    fleet: &mut Fleet,
) {
    let interval = load.traffic.interval(shape.publishers);
    for (i, (client, eventloop)) in (0..).zip(clients) {
        let plan = Plan {
            index: i,
            topic: shape.topic(prefix, i),
            qos,
            size: load.traffic.size as usize,
            quota: load.traffic.quota(i, shape.publishers),
            interval,
        };
        let stop = fleet.stop_publishing.clone();
        let counters = fleet.counters.clone();
        let producer_client = client.clone();
        fleet.producers.spawn(async move {
            let queued = publisher::produce(producer_client, plan, stop, counters).await?;
            Ok((i, queued))
        });
        fleet.publishers.spawn(publisher::drive(
            i,
            client,
            eventloop,
            fleet.stop_publishers.clone(),
            fleet.counters.clone(),
        ));
    }
}

/// Runs the load until the duration is over (or every quota is sent), failing when the broker
/// stops taking publishes or stops delivering.
async fn publish_phase(load: &LoadArgs, fleet: &mut Fleet, start: Instant) -> Result<()> {
    let c = fleet.counters.clone();
    let mut written = Watch::new("publishers wrote nothing", load.limits.stall_timeout);
    let mut received = Watch::new(
        "the subscribers received nothing",
        load.limits.stall_timeout,
    );
    let paced_slowly = load.traffic.paced_slowly(load.limits.stall_timeout);
    loop {
        tokio::time::sleep(TICK).await;
        check_connections(fleet)?;
        collect_producers(fleet)?;
        match load.traffic.messages {
            None if fleet.sent.iter().any(Option::is_some) => {
                bail!("a publisher stopped before the end of the run")
            }
            None if start.elapsed() >= load.traffic.duration => return Ok(()),
            Some(_) if fleet.sent.iter().all(Option::is_some) => return Ok(()),
            _ => {}
        }
        if !paced_slowly {
            let state = || counts(&c);
            written.check(Counters::get(&c.written), state)?;
            received.check(Counters::get(&c.received), state)?;
        }
    }
}

/// Notes the count of every producer that has ended; fails with a producer's error.
fn collect_producers(fleet: &mut Fleet) -> Result<()> {
    while let Some(done) = fleet.producers.try_join_next() {
        let (i, queued) = done.context("a producer task panicked")??;
        fleet.sent[i as usize] = Some(queued);
    }
    Ok(())
}

/// Waits for the producers to stop and for rumqttc to write (and, QoS 1, get acknowledged)
/// everything they queued. Returns how many messages each publisher sent.
async fn finish_publishing(load: &LoadArgs, qos: QoS, fleet: &mut Fleet) -> Result<Vec<u64>> {
    fleet.stop_publishing.cancel();
    let limit = load.limits.stall_timeout;
    let joined = tokio::time::timeout(limit, async {
        while let Some(done) = fleet.producers.join_next().await {
            let (i, queued) = done.context("a producer task panicked")??;
            fleet.sent[i as usize] = Some(queued);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match joined {
        Err(_) => bail!(
            "publishers still blocked {limit:?} after the end of the run: the broker stopped \
             taking publishes ({})",
            counts(&fleet.counters)
        ),
        Ok(r) => r?,
    }
    let sent: Vec<u64> = fleet.sent.iter().map(|n| n.unwrap_or(0)).collect();

    let c = fleet.counters.clone();
    let deadline = Instant::now() + load.limits.drain_timeout;
    loop {
        check_connections(fleet)?;
        let queued = Counters::get(&c.queued);
        let written = Counters::get(&c.written);
        let acked = Counters::get(&c.acked);
        if written == queued && (qos == QoS::AtMostOnce || acked == written) {
            return Ok(sent);
        }
        if Instant::now() >= deadline {
            bail!(
                "the broker did not take (or acknowledge) the last publishes within {:?} ({})",
                load.limits.drain_timeout,
                counts(&c)
            );
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Waits until every expected delivery arrived, nothing arrived for `--drain-idle`, or the
/// drain timeout passed. Missing deliveries are reported as lost, not as an error.
async fn drain_deliveries(load: &LoadArgs, expected: u64, fleet: &Fleet) {
    let c = &fleet.counters;
    let deadline = Instant::now() + load.limits.drain_timeout;
    let mut idle = Watch::new("", load.limits.drain_idle);
    loop {
        let received = Counters::get(&c.received);
        if received >= expected || Instant::now() >= deadline {
            return;
        }
        if idle.check(received, String::new).is_err() {
            return;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Disconnects everyone and collects the subscribers' receipts.
async fn stop(fleet: &mut Fleet) -> Result<Vec<Receipts>> {
    fleet.stop_publishers.cancel();
    fleet.stop_subscribers.cancel();
    let bound = Duration::from_secs(10);
    let mut receipts = Vec::new();
    tokio::time::timeout(bound, async {
        while let Some(done) = fleet.subscribers.join_next().await {
            receipts.push(done.context("a subscriber task panicked")??);
        }
        while let Some(done) = fleet.publishers.join_next().await {
            done.context("a publisher task panicked")??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .map_err(|_| anyhow!("disconnecting took longer than {bound:?}"))??;
    Ok(receipts)
}

fn report(
    shape: &Shape,
    load: &LoadArgs,
    sent: &[u64],
    receipts: &[Receipts],
    seconds: f64,
    publish_seconds: f64,
    broker: Option<BrokerUsage>,
) -> Report {
    let sent_total: u64 = sent.iter().sum();
    let mut latency: Histogram<u64> = probe::histogram();
    let mut delivery = Delivery {
        sent: sent_total,
        publish_seconds,
        publish_msg_per_s: per_second(sent_total, publish_seconds),
        expected: sent_total * receipts.len() as u64,
        ..Delivery::default()
    };
    let mut msgs = 0;
    for r in receipts {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = latency.add(&r.latency);
        msgs += r.deliveries;
        delivery.duplicates += r.duplicates;
        delivery.reordered += r.reordered;
        delivery.lost += (0..sent.len())
            .map(|i| sent[i].saturating_sub(r.unique_from(i)))
            .sum::<u64>();
    }
    Report {
        tool: "switchboard-bench",
        protocol: "mqtt",
        scenario: shape.name,
        label: load.run.label.clone(),
        params: params(shape, load),
        msgs: Some(msgs),
        seconds,
        msg_per_s: Some(per_second(msgs, seconds)),
        mb_per_s: Some(per_second(msgs * u64::from(load.traffic.size), seconds) / 1e6),
        delivery: Some(delivery),
        latency: Latency::of(&latency),
        percentiles: spectrum(&latency),
        connections: None,
        broker,
        fetches: None,
        bench_cpu_s: None,
        timeline: Vec::new(),
    }
}

fn params(shape: &Shape, load: &LoadArgs) -> Map<String, serde_json::Value> {
    let mut p = Map::new();
    p.insert("qos".into(), json!(load.qos.number()));
    p.insert("publishers".into(), json!(shape.publishers));
    p.insert("subscribers".into(), json!(shape.subscribers));
    load.traffic.describe(&mut p);
    if load.qos.number() > 0 {
        p.insert("inflight".into(), json!(load.inflight));
    }
    p
}

/// Opens `n` connections at once (each `open(i)`), failing with the first error.
async fn open_all<T, F, Fut>(n: u32, mut open: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for i in 0..n {
        let fut = open(i);
        set.spawn(async move { fut.await.map(|t| (i, t)) });
    }
    let mut opened = Vec::with_capacity(n as usize);
    while let Some(done) = set.join_next().await {
        opened.push(done.context("a connecting task panicked")??);
    }
    opened.sort_unstable_by_key(|(i, _)| *i);
    Ok(opened.into_iter().map(|(_, t)| t).collect())
}

/// Fails the run when a connection broke (its driver task ended on its own).
fn check_connections(fleet: &mut Fleet) -> Result<()> {
    if let Some(done) = fleet.publishers.try_join_next() {
        done.context("a publisher task panicked")??;
        bail!("a publisher's connection ended early");
    }
    if let Some(done) = fleet.subscribers.try_join_next() {
        done.context("a subscriber task panicked")??;
        bail!("a subscriber's connection ended early");
    }
    Ok(())
}

fn counts(c: &Counters) -> String {
    format!(
        "queued {}, written {}, acked {}, received {}",
        Counters::get(&c.queued),
        Counters::get(&c.written),
        Counters::get(&c.acked),
        Counters::get(&c.received)
    )
}

/// The progress line: totals and the rates since the previous line.
fn status(c: Arc<Counters>, qos: QoS) -> impl Fn() -> String + Send + Sync + 'static {
    let previous = Mutex::new((Instant::now(), 0u64, 0u64));
    move || {
        let written = Counters::get(&c.written);
        let received = Counters::get(&c.received);
        let Ok(mut prev) = previous.lock() else {
            return String::new();
        };
        let dt = prev.0.elapsed().as_secs_f64().max(1e-3);
        let mut line = format!(
            "sent {} ({}/s)  received {} ({}/s)",
            thousands(written as f64),
            thousands(written.saturating_sub(prev.1) as f64 / dt),
            thousands(received as f64),
            thousands(received.saturating_sub(prev.2) as f64 / dt),
        );
        if qos != QoS::AtMostOnce {
            line += &format!("  acked {}", thousands(Counters::get(&c.acked) as f64));
        }
        *prev = (Instant::now(), written, received);
        line
    }
}
