//! Consuming: fill a new topic with `--messages` (the produce path, unpaced), then read every
//! partition back from offset 0 at once, one fetch loop per partition. The rate is over the
//! read phase only; the fill's rate is reported as the "sent" side. No latency: what a reader
//! sees is the age of the data, which says nothing about the broker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::TICK;
use super::fetch::{self, ReadCounters, Reader};
use super::produce::{self, Plan};
use crate::cli::ConsumeArgs;
use crate::probe::{self, Receipts};
use crate::procfs;
use crate::progress::Progress;
use crate::report::{BrokerUsage, Delivery, Report, per_second, thousands};
use crate::timeline::Timeline;
use crate::watch::Watch;

pub async fn run(args: ConsumeArgs) -> Result<Report> {
    let id = probe::run_id();
    let topic = format!("sbbench-{id}");
    let client = super::client(&args.target, &args.limits, &id).await?;
    super::create_topic(&client, &topic, args.produce.partitions, &args.limits).await?;
    let result = fill_and_read(&args, &client, &topic, &id).await;
    super::delete_topic(&client, &topic, &args.limits).await;
    result
}

async fn fill_and_read(
    args: &ConsumeArgs,
    client: &rskafka::client::Client,
    topic: &str,
    id: &str,
) -> Result<Report> {
    let conn = super::connection(&args.target, &args.limits, id).await?;
    let plan = Plan {
        size: args.size as usize,
        messages: Some(args.messages),
        duration: Duration::ZERO,
        rate: 0,
    };
    let filled = produce::load(&conn, topic, &args.produce, &plan, &args.limits)
        .await
        .context("filling the topic")?;

    let partitions = i32::try_from(args.produce.partitions).context("partition count")?;
    let mut clients = Vec::new();
    for p in 0..partitions {
        let pc = fetch::partition_client(client, topic, p).await?;
        let end = fetch::end_offset(&pc).await?;
        clients.push((pc, end));
    }

    let before = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_before = procfs::own_cpu_s();
    let counters = Arc::new(ReadCounters::default());
    let progress = Progress::start(status(counters.clone(), filled.acked));
    let timeline = Timeline::start({
        let c = counters.clone();
        move || c.received()
    });
    let start_ns = probe::now_ns();
    let stop = CancellationToken::new();
    let mut readers = JoinSet::new();
    for (p, (pc, end)) in (0..).zip(clients) {
        let reader = Reader {
            partition: p,
            from: 0,
            until: Some(end),
            max_bytes: args.fetch_max_bytes,
            max_wait_ms: i32::try_from(args.fetch_max_wait.as_millis()).unwrap_or(i32::MAX),
            key_prefix: None,
            publishers: args.produce.partitions,
        };
        readers.spawn(fetch::read(pc, reader, stop.clone(), counters.clone()));
    }
    let read = collect(&mut readers, args, &counters).await;
    stop.cancel();
    readers.abort_all();
    let timeline = timeline.finish().await;
    progress.finish().await;
    let receipts = read?;
    let after = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_after = procfs::own_cpu_s();

    let last_ns = counters.last_ns.load(std::sync::atomic::Ordering::Relaxed);
    let seconds = Duration::from_nanos(last_ns.saturating_sub(start_ns)).as_secs_f64();
    let mut delivery = Delivery {
        sent: filled.acked,
        publish_seconds: filled.seconds,
        publish_msg_per_s: per_second(filled.acked, filled.seconds),
        expected: filled.acked,
        ..Delivery::default()
    };
    let mut msgs = 0;
    for r in &receipts {
        msgs += r.deliveries;
        delivery.duplicates += r.duplicates;
        delivery.reordered += r.reordered;
    }
    // Publisher i of the probe headers is partition i.
    delivery.lost = (0..filled.per_partition.len())
        .map(|p| {
            let unique: u64 = receipts.iter().map(|r| r.unique_from(p)).sum();
            filled.per_partition[p].saturating_sub(unique)
        })
        .sum();

    let mut params = produce::options_params(&args.produce);
    params.insert("size".into(), json!(args.size));
    params.insert("messages".into(), json!(args.messages));
    params.insert("fetch_max_bytes".into(), json!(args.fetch_max_bytes));
    params.insert(
        "fetch_max_wait_ms".into(),
        json!(args.fetch_max_wait.as_millis()),
    );
    Ok(Report {
        tool: "switchboard-bench",
        protocol: "kafka",
        scenario: "consume",
        label: args.run.label.clone(),
        params,
        msgs: Some(msgs),
        seconds,
        msg_per_s: Some(per_second(msgs, seconds)),
        mb_per_s: Some(per_second(msgs * u64::from(args.size), seconds) / 1e6),
        delivery: Some(delivery),
        fetches: Some(counters.fetches.load(std::sync::atomic::Ordering::Relaxed)),
        timeline,
        broker: before.zip(after).map(|(b, a)| BrokerUsage::between(b, a)),
        bench_cpu_s: bench_before.zip(bench_after).map(|(b, a)| a - b),
        ..Report::default()
    })
}

/// Waits for every reader to reach its end offset; fails when one fails or nothing arrives for
/// `--stall-timeout`.
async fn collect(
    readers: &mut JoinSet<Result<Receipts>>,
    args: &ConsumeArgs,
    counters: &ReadCounters,
) -> Result<Vec<Receipts>> {
    let mut watch = Watch::new("the readers received nothing", args.limits.stall_timeout);
    let mut receipts = Vec::new();
    while !readers.is_empty() {
        tokio::time::sleep(TICK).await;
        while let Some(done) = readers.try_join_next() {
            receipts.push(done.context("a reading task panicked")??);
        }
        watch.check(counters.received(), || {
            format!("received {}", counters.received())
        })?;
    }
    Ok(receipts)
}

fn status(c: Arc<ReadCounters>, total: u64) -> impl Fn() -> String + Send + Sync + 'static {
    let previous = std::sync::Mutex::new((tokio::time::Instant::now(), 0u64));
    move || {
        let received = c.received();
        let Ok(mut prev) = previous.lock() else {
            return String::new();
        };
        let dt = prev.0.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "read {} of {} ({}/s)",
            thousands(received as f64),
            thousands(total as f64),
            thousands(received.saturating_sub(prev.1) as f64 / dt),
        );
        *prev = (tokio::time::Instant::now(), received);
        line
    }
}
