//! MQTT to Kafka: P MQTT publishers (rumqttc, QoS 1) each on `sbbench/<run>/<i>`, and one Kafka
//! fetch loop per partition of the stream Switchboard stores MQTT publishes in (`mqtt`, key =
//! MQTT topic, value = payload; docs/mapping.md). Latency is from the moment a publish is
//! handed to rumqttc to the moment a fetch response carrying it is decoded.
//!
//! The readers start at each partition's end offset, taken before anyone publishes, and count
//! only records whose key is one of this run's topics: other traffic on the stream is ignored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rskafka::client::Client;
use rumqttc::QoS;
use serde_json::{Map, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::TICK;
use super::fetch::{self, ReadCounters, Reader};
use crate::cli::{MqttToKafkaArgs, Target};
use crate::mqtt::publisher::{self, Counters, Plan};
use crate::probe::{self, Receipts};
use crate::procfs;
use crate::progress::Progress;
use crate::report::{BrokerUsage, Delivery, Latency, Report, per_second, spectrum, thousands};
use crate::timeline::Timeline;
use crate::watch::Watch;

const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Fetch size per partition: latency runs are not about throughput.
const FETCH_MAX_BYTES: i32 = 1 << 20;
/// How long an idle partition's fetch is parked at the broker; records arriving end it at once
/// on Switchboard, so this only bounds how long an idle reader takes to see the end of the run.
const FETCH_MAX_WAIT_MS: i32 = 200;

/// The running tasks.
struct Fleet {
    readers: JoinSet<Result<Receipts>>,
    producers: JoinSet<Result<u64>>,
    publishers: JoinSet<Result<()>>,
    stop_publishing: CancellationToken,
    stop_rest: CancellationToken,
    mqtt: Arc<Counters>,
    kafka: Arc<ReadCounters>,
}

pub async fn run(args: MqttToKafkaArgs) -> Result<Report> {
    let id = probe::run_id();
    let prefix = format!("sbbench/{id}");
    let client = super::client(&args.target, &args.limits, &id).await?;
    let mut fleet = Fleet {
        readers: JoinSet::new(),
        producers: JoinSet::new(),
        publishers: JoinSet::new(),
        stop_publishing: CancellationToken::new(),
        stop_rest: CancellationToken::new(),
        mqtt: Arc::new(Counters::default()),
        kafka: Arc::new(ReadCounters::default()),
    };
    let result = measure(&args, &client, &prefix, &id, &mut fleet).await;
    fleet.stop_publishing.cancel();
    fleet.stop_rest.cancel();
    result
}

async fn measure(
    args: &MqttToKafkaArgs,
    client: &Client,
    prefix: &str,
    id: &str,
    fleet: &mut Fleet,
) -> Result<Report> {
    start_readers(args, client, prefix, fleet).await?;
    let target = Target {
        host: args.target.host.clone(),
        port: args.mqtt_port,
        broker_pid: None,
        nagle: false,
    };
    let mut clients = Vec::new();
    for i in 0..args.publishers {
        let mut opts = crate::mqtt::options(
            &target,
            format!("sbb-{id}-p{i}"),
            KEEP_ALIVE,
            args.traffic.size as usize,
        );
        opts.set_inflight(args.inflight);
        clients.push(crate::mqtt::connect(opts, &target, args.limits.connect_timeout).await?);
    }

    let before = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_before = procfs::own_cpu_s();
    let progress = Progress::start(status(fleet.mqtt.clone(), fleet.kafka.clone()));
    let timeline = Timeline::start({
        let c = fleet.kafka.clone();
        move || c.received()
    });
    let start = Instant::now();
    let start_ns = probe::now_ns();
    let interval = args.traffic.interval(args.publishers);
    for (i, (client, eventloop)) in (0..).zip(clients) {
        let plan = Plan {
            index: i,
            topic: format!("{prefix}/{i}"),
            qos: QoS::AtLeastOnce,
            size: args.traffic.size as usize,
            quota: args.traffic.quota(i, args.publishers),
            interval,
        };
        let (stop, counters) = (fleet.stop_publishing.clone(), fleet.mqtt.clone());
        let producer_client = client.clone();
        fleet
            .producers
            .spawn(publisher::produce(producer_client, plan, stop, counters));
        fleet.publishers.spawn(publisher::drive(
            i,
            client,
            eventloop,
            fleet.stop_rest.clone(),
            fleet.mqtt.clone(),
        ));
    }

    let outcome = async {
        publish_phase(args, fleet, start).await?;
        let sent = finish_publishing(args, fleet).await?;
        let published_at = Instant::now();
        drain(args, fleet, sent).await;
        Ok::<_, anyhow::Error>((sent, (published_at - start).as_secs_f64()))
    }
    .await;
    let after = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_after = procfs::own_cpu_s();
    let timeline = timeline.finish().await;
    progress.finish().await;
    let (sent, publish_seconds) = outcome?;
    let receipts = stop(fleet).await?;

    let last_ns = fleet.kafka.last_ns.load(Ordering::Relaxed);
    let seconds = Duration::from_nanos(last_ns.saturating_sub(start_ns)).as_secs_f64();
    let mut latency = probe::histogram();
    let mut delivery = Delivery {
        sent,
        publish_seconds,
        publish_msg_per_s: per_second(sent, publish_seconds),
        expected: sent,
        ..Delivery::default()
    };
    let mut msgs = 0;
    for r in &receipts {
        let _ = latency.add(&r.latency);
        msgs += r.deliveries;
        delivery.duplicates += r.duplicates;
        delivery.reordered += r.reordered;
    }
    let unique: u64 = (0..args.publishers as usize)
        .map(|i| receipts.iter().map(|r| r.unique_from(i)).sum::<u64>())
        .sum();
    delivery.lost = sent.saturating_sub(unique);
    Ok(Report {
        tool: "switchboard-bench",
        protocol: "kafka",
        scenario: "mqtt-to-kafka",
        label: args.run.label.clone(),
        params: params(args),
        msgs: Some(msgs),
        seconds,
        msg_per_s: Some(per_second(msgs, seconds)),
        mb_per_s: Some(per_second(msgs * u64::from(args.traffic.size), seconds) / 1e6),
        delivery: Some(delivery),
        latency: Latency::of(&latency),
        percentiles: spectrum(&latency),
        timeline,
        broker: before.zip(after).map(|(b, a)| BrokerUsage::between(b, a)),
        bench_cpu_s: bench_before.zip(bench_after).map(|(b, a)| a - b),
        ..Report::default()
    })
}

/// One fetch loop per partition of the stream, each from the partition's current end.
async fn start_readers(
    args: &MqttToKafkaArgs,
    client: &Client,
    prefix: &str,
    fleet: &mut Fleet,
) -> Result<()> {
    // A broker that has just started may serve Kafka before it has created its MQTT streams.
    let deadline = Instant::now() + args.limits.connect_timeout;
    let partitions = loop {
        let partitions = super::partitions_of(client, &args.stream).await?;
        if !partitions.is_empty() {
            break partitions;
        }
        if Instant::now() >= deadline {
            bail!(
                "the broker has no topic {:?} after {:?}: MQTT publishes are read from the \
                 stream Switchboard stores them in (--stream, default \"mqtt\"); this scenario \
                 needs Switchboard",
                args.stream,
                args.limits.connect_timeout
            );
        }
        tokio::time::sleep(TICK).await;
    };
    for p in partitions {
        let pc = fetch::partition_client(client, &args.stream, p).await?;
        let from = fetch::end_offset(&pc).await?;
        let reader = Reader {
            partition: p,
            from,
            until: None,
            max_bytes: FETCH_MAX_BYTES,
            max_wait_ms: FETCH_MAX_WAIT_MS,
            key_prefix: Some(format!("{prefix}/").into_bytes()),
            publishers: args.publishers,
        };
        fleet.readers.spawn(fetch::read(
            pc,
            reader,
            fleet.stop_rest.clone(),
            fleet.kafka.clone(),
        ));
    }
    Ok(())
}

/// Publishes for the duration (or until the quotas are sent), failing when the broker stops
/// taking publishes or nothing reaches the Kafka side.
async fn publish_phase(args: &MqttToKafkaArgs, fleet: &mut Fleet, start: Instant) -> Result<()> {
    let limit = args.limits.stall_timeout;
    let mut written = Watch::new("publishers wrote nothing", limit);
    let mut received = Watch::new("the Kafka readers received nothing", limit);
    let paced_slowly = args.traffic.paced_slowly(limit);
    let mut done = 0;
    loop {
        tokio::time::sleep(TICK).await;
        check_tasks(fleet)?;
        while let Some(finished) = fleet.producers.try_join_next() {
            finished.context("a producer task panicked")??;
            done += 1;
        }
        match args.traffic.messages {
            None if done > 0 => bail!("an MQTT publisher stopped before the end of the run"),
            None if start.elapsed() >= args.traffic.duration => return Ok(()),
            Some(_) if done == args.publishers => return Ok(()),
            _ => {}
        }
        if !paced_slowly {
            let state = || counts(fleet);
            written.check(publisher_count(&fleet.mqtt.written), state)?;
            received.check(fleet.kafka.received(), state)?;
        }
    }
}

/// Stops the producers and waits until every publish is acknowledged (PUBACK). Returns how
/// many were sent.
async fn finish_publishing(args: &MqttToKafkaArgs, fleet: &mut Fleet) -> Result<u64> {
    fleet.stop_publishing.cancel();
    let mut sent = 0;
    let joined = tokio::time::timeout(args.limits.stall_timeout, async {
        while let Some(done) = fleet.producers.join_next().await {
            sent += done.context("a producer task panicked")??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    joined.map_err(|_| anyhow!("MQTT publishers still blocked after the end of the run"))??;
    // Producers that ended earlier (with --messages) were counted as they ended.
    let sent = sent.max(publisher_count(&fleet.mqtt.queued));
    let deadline = Instant::now() + args.limits.drain_timeout;
    while publisher_count(&fleet.mqtt.acked) < sent {
        check_tasks(fleet)?;
        if Instant::now() >= deadline {
            bail!(
                "the broker did not acknowledge the last publishes within {:?} ({})",
                args.limits.drain_timeout,
                counts(fleet)
            );
        }
        tokio::time::sleep(TICK).await;
    }
    Ok(sent)
}

/// Waits until every publish reached a reader, nothing arrived for `--drain-idle`, or the drain
/// timeout passed. Missing records are reported as lost.
async fn drain(args: &MqttToKafkaArgs, fleet: &Fleet, sent: u64) {
    let deadline = Instant::now() + args.limits.drain_timeout;
    let mut idle = Watch::new("", args.limits.drain_idle);
    loop {
        let received = fleet.kafka.received();
        if received >= sent
            || Instant::now() >= deadline
            || idle.check(received, String::new).is_err()
        {
            return;
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn stop(fleet: &mut Fleet) -> Result<Vec<Receipts>> {
    fleet.stop_rest.cancel();
    let bound = Duration::from_secs(10);
    let mut receipts = Vec::new();
    tokio::time::timeout(bound, async {
        while let Some(done) = fleet.readers.join_next().await {
            receipts.push(done.context("a reading task panicked")??);
        }
        while let Some(done) = fleet.publishers.join_next().await {
            done.context("a publisher task panicked")??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .map_err(|_| anyhow!("stopping took longer than {bound:?}"))??;
    Ok(receipts)
}

/// Fails the run when a connection or a reader ended on its own.
fn check_tasks(fleet: &mut Fleet) -> Result<()> {
    if let Some(done) = fleet.publishers.try_join_next() {
        done.context("a publisher task panicked")??;
        bail!("an MQTT publisher's connection ended early");
    }
    if let Some(done) = fleet.readers.try_join_next() {
        done.context("a reading task panicked")??;
        bail!("a Kafka reader ended early");
    }
    Ok(())
}

fn publisher_count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn counts(fleet: &Fleet) -> String {
    format!(
        "queued {}, written {}, acked {}, received over Kafka {}",
        publisher_count(&fleet.mqtt.queued),
        publisher_count(&fleet.mqtt.written),
        publisher_count(&fleet.mqtt.acked),
        fleet.kafka.received()
    )
}

fn params(args: &MqttToKafkaArgs) -> Map<String, serde_json::Value> {
    let mut p = Map::new();
    p.insert("qos".into(), json!(1));
    p.insert("publishers".into(), json!(args.publishers));
    p.insert("inflight".into(), json!(args.inflight));
    p.insert("stream".into(), json!(args.stream));
    args.traffic.describe(&mut p);
    p
}

fn status(
    mqtt: Arc<Counters>,
    kafka: Arc<ReadCounters>,
) -> impl Fn() -> String + Send + Sync + 'static {
    let previous = std::sync::Mutex::new((Instant::now(), 0u64));
    move || {
        let received = kafka.received();
        let Ok(mut prev) = previous.lock() else {
            return String::new();
        };
        let dt = prev.0.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "published {}  acked {}  received over Kafka {} ({}/s)",
            thousands(publisher_count(&mqtt.written) as f64),
            thousands(publisher_count(&mqtt.acked) as f64),
            thousands(received as f64),
            thousands(received.saturating_sub(prev.1) as f64 / dt),
        );
        *prev = (Instant::now(), received);
        line
    }
}
