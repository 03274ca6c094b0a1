//! Producing: one task per partition, each keeping up to `--inflight` produce requests of
//! `--batch` records outstanding on the one shared connection (rskafka pipelines them by
//! correlation id, as every Kafka client does up to max.in.flight.requests.per.connection).
//!
//! Latency is per message: from the moment its batch was due (built, or its slot in the
//! `--rate` schedule when a full window held it back) to the produce response. Every message of
//! a batch gets its batch's latency, so the percentiles are over messages, not requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rskafka::protocol::messages::{
    ProduceRequest, ProduceRequestPartitionData, ProduceRequestTopicData, ProduceResponse,
};
use rskafka::protocol::primitives::{Int16, Int32, NullableString, Records, String_};
use rskafka::protocol::record::{
    ControlBatchOrRecords, Record, RecordBatch, RecordBatchCompression, RecordBatchTimestampType,
};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Connection, TICK};
use crate::cli::{Limits, ProduceArgs, ProduceOptions};
use crate::probe;
use crate::procfs;
use crate::progress::Progress;
use crate::report::{BrokerUsage, Latency, Report, per_second, spectrum, thousands};
use crate::timeline::Timeline;
use crate::watch::Watch;

/// How long the broker may take to meet `acks` before it answers with a timeout error.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

pub async fn run(args: ProduceArgs) -> Result<Report> {
    let id = probe::run_id();
    let topic = format!("sbbench-{id}");
    let client = super::client(&args.target, &args.limits, &id).await?;
    super::create_topic(&client, &topic, args.produce.partitions, &args.limits).await?;
    let conn = super::connection(&args.target, &args.limits, &id).await?;

    let plan = Plan {
        size: args.traffic.size as usize,
        messages: args.traffic.messages,
        duration: args.traffic.duration,
        rate: args.traffic.rate,
    };
    let before = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_before = procfs::own_cpu_s();
    let outcome = load(&conn, &topic, &args.produce, &plan, &args.limits).await;
    let after = args.target.broker_pid.map(procfs::usage).transpose()?;
    let bench_after = procfs::own_cpu_s();
    super::delete_topic(&client, &topic, &args.limits).await;
    let outcome = outcome?;

    let mut params = options_params(&args.produce);
    args.traffic.describe(&mut params);
    let bytes = outcome.acked * args.traffic.size as u64;
    Ok(Report {
        tool: "switchboard-bench",
        protocol: "kafka",
        scenario: "produce",
        label: args.run.label.clone(),
        params,
        msgs: Some(outcome.acked),
        seconds: outcome.seconds,
        msg_per_s: Some(per_second(outcome.acked, outcome.seconds)),
        mb_per_s: Some(per_second(bytes, outcome.seconds) / 1e6),
        latency: Latency::of(&outcome.latency),
        percentiles: spectrum(&outcome.latency),
        timeline: outcome.timeline,
        broker: before.zip(after).map(|(b, a)| BrokerUsage::between(b, a)),
        bench_cpu_s: bench_before.zip(bench_after).map(|(b, a)| a - b),
        ..Report::default()
    })
}

/// The shape of the produce requests, as report parameters.
pub fn options_params(o: &ProduceOptions) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("partitions".into(), json!(o.partitions));
    p.insert("acks".into(), json!(o.acks.name()));
    p.insert("batch".into(), json!(o.batch));
    p.insert("inflight".into(), json!(o.inflight));
    p
}

/// What to send: message size, and a count or a duration, at a total rate (0 = unpaced).
pub struct Plan {
    pub size: usize,
    pub messages: Option<u64>,
    pub duration: Duration,
    pub rate: u64,
}

/// What a load achieved.
pub struct Outcome {
    /// Messages the broker acknowledged.
    pub acked: u64,
    /// Acknowledged messages per partition (index = partition).
    pub per_partition: Vec<u64>,
    /// From the first request to the last acknowledgement.
    pub seconds: f64,
    pub latency: Histogram<u64>,
    pub timeline: Vec<[f64; 2]>,
}

#[derive(Default)]
struct Counters {
    /// Messages in requests written.
    sent: AtomicU64,
    /// Messages acknowledged.
    acked: AtomicU64,
    /// [`probe::now_ns`] of the latest acknowledgement.
    last_ack_ns: AtomicU64,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One partition's share of the load.
struct PartitionPlan {
    topic: String,
    partition: u32,
    acks: i16,
    batch: u64,
    inflight: usize,
    size: usize,
    quota: Option<u64>,
    /// Time between two batches, or `None` for as fast as acknowledgements allow.
    interval: Option<Duration>,
}

/// Produces `plan` to every partition of `topic` over `conn`, failing when the broker refuses a
/// request or stops acknowledging. Values carry the probe header (publisher = partition).
pub async fn load(
    conn: &Connection,
    topic: &str,
    opts: &ProduceOptions,
    plan: &Plan,
    limits: &Limits,
) -> Result<Outcome> {
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let partitions = opts.partitions;
    let traffic = crate::cli::Traffic {
        size: u32::try_from(plan.size).unwrap_or(u32::MAX),
        duration: plan.duration,
        messages: plan.messages,
        rate: plan.rate,
    };
    // Each partition sends `batch` messages per request at its share of the rate.
    let interval = traffic
        .interval(partitions)
        .map(|per_message| per_message * opts.batch);
    let progress = Progress::start(status(counters.clone()));
    let timeline = Timeline::start({
        let c = counters.clone();
        move || get(&c.acked)
    });
    let start_ns = probe::now_ns();
    let mut tasks = JoinSet::new();
    for p in 0..partitions {
        let plan = PartitionPlan {
            topic: topic.to_string(),
            partition: p,
            acks: opts.acks.wire(),
            batch: u64::from(opts.batch),
            inflight: opts.inflight as usize,
            size: plan.size,
            quota: traffic.quota(p, partitions),
            interval,
        };
        tasks.spawn(produce_partition(
            conn.clone(),
            plan,
            stop.clone(),
            counters.clone(),
        ));
    }
    let done = coordinate(&mut tasks, &traffic, limits, &stop, &counters).await;
    stop.cancel();
    tasks.abort_all();
    let timeline = timeline.finish().await;
    progress.finish().await;
    let results = done?;

    let mut latency = probe::histogram();
    let mut per_partition = vec![0; partitions as usize];
    for (p, acked, h) in results {
        // Same bounds everywhere, so adding cannot fail.
        let _ = latency.add(&h);
        per_partition[p as usize] = acked;
    }
    let last_ns = get(&counters.last_ack_ns);
    Ok(Outcome {
        acked: per_partition.iter().sum(),
        per_partition,
        seconds: Duration::from_nanos(last_ns.saturating_sub(start_ns)).as_secs_f64(),
        latency,
        timeline,
    })
}

type PartitionResult = Result<(u32, u64, Histogram<u64>)>;

/// Runs the load for the duration (or until every quota is sent) and collects every
/// partition's result; fails with the first error, a stall, or acknowledgements missing
/// `--drain-timeout` after the end.
async fn coordinate(
    tasks: &mut JoinSet<PartitionResult>,
    traffic: &crate::cli::Traffic,
    limits: &Limits,
    stop: &CancellationToken,
    counters: &Counters,
) -> Result<Vec<(u32, u64, Histogram<u64>)>> {
    let start = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    let mut watch = Watch::new("no produce request was acknowledged", limits.stall_timeout);
    let paced_slowly = traffic.paced_slowly(limits.stall_timeout);
    let mut results = Vec::new();
    while !tasks.is_empty() {
        tokio::time::sleep(TICK).await;
        while let Some(done) = tasks.try_join_next() {
            let result = done.context("a producing task panicked")??;
            if traffic.messages.is_none() && stopped_at.is_none() {
                bail!(
                    "partition {} stopped producing before the end of the run",
                    result.0
                );
            }
            results.push(result);
        }
        if traffic.messages.is_none() && stopped_at.is_none() && start.elapsed() >= traffic.duration
        {
            stop.cancel();
            stopped_at = Some(Instant::now());
        }
        let state = || counts(counters);
        match stopped_at {
            Some(at) if at.elapsed() >= limits.drain_timeout => bail!(
                "produce requests still unacknowledged {:?} after the end of the run ({})",
                limits.drain_timeout,
                state()
            ),
            _ if !paced_slowly => watch.check(get(&counters.acked), state)?,
            _ => {}
        }
    }
    Ok(results)
}

/// Keeps up to `inflight` requests of this partition outstanding until the quota is sent or
/// `stop`, then waits for the outstanding ones. Returns (partition, acknowledged, latency).
async fn produce_partition(
    conn: Connection,
    plan: PartitionPlan,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> PartitionResult {
    let mut inflight = FuturesUnordered::new();
    let mut latency = probe::histogram();
    let start = Instant::now();
    let (mut queued, mut batches, mut acked) = (0u64, 0u64, 0u64);
    let mut stopping = false;
    loop {
        let more = !stopping && plan.quota.is_none_or(|q| queued < q);
        let due = plan.interval.map(|i| start + i.mul_f64(batches as f64));
        tokio::select! {
            biased;
            Some((due, n, response)) = inflight.next() => {
                let due: Instant = due;
                check(response, &plan)?;
                let us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record_n(us.max(1), n);
                acked += n;
                counters.acked.fetch_add(n, Ordering::Relaxed);
                counters.last_ack_ns.fetch_max(probe::now_ns(), Ordering::Relaxed);
            }
            _ = stop.cancelled(), if more => stopping = true,
            due = until(due), if more && inflight.len() < plan.inflight => {
                let n = plan.quota.map_or(plan.batch, |q| plan.batch.min(q - queued));
                let request = request(&plan, queued, n)?;
                let conn = conn.clone();
                inflight.push(async move { (due, n, conn.request(&request).await) });
                queued += n;
                batches += 1;
                counters.sent.fetch_add(n, Ordering::Relaxed);
            }
            else => break,
        }
    }
    Ok((plan.partition, acked, latency))
}

/// Waits for a paced batch's slot and returns the time its latency counts from: the slot
/// itself when it had already passed (the batch waited for a free place in the window, and that
/// wait is the broker's doing), else the moment the timer woke us (which may be up to a
/// millisecond after the slot: tokio's timer rounds deadlines up to its next tick, and that
/// lateness is ours, not the broker's). Unpaced, returns at once without the timer, for the
/// same reason: even a sleep until now would cost up to a millisecond per batch.
async fn until(due: Option<Instant>) -> Instant {
    match due {
        Some(due) if due > Instant::now() => {
            tokio::time::sleep_until(due).await;
            Instant::now()
        }
        Some(due) => due,
        None => Instant::now(),
    }
}

/// A produce request of one uncompressed batch of `n` stamped values, sequence numbers from
/// `first`.
fn request(plan: &PartitionPlan, first: u64, n: u64) -> Result<ProduceRequest> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let records = (0..n)
        .map(|i| {
            let seq = u32::try_from(first + i)
                .map_err(|_| anyhow!("partition {}: sequence numbers exhausted", plan.partition))?;
            Ok(Record {
                timestamp_delta: 0,
                offset_delta: i32::try_from(i)?,
                key: None,
                value: Some(probe::payload(plan.size, plan.partition, seq)),
                headers: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch {
        base_offset: 0,
        partition_leader_epoch: -1,
        last_offset_delta: i32::try_from(n - 1)?,
        first_timestamp: now_ms,
        max_timestamp: now_ms,
        // Not idempotent: no producer id, no sequence numbers.
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records: ControlBatchOrRecords::Records(records),
        compression: RecordBatchCompression::NoCompression,
        is_transactional: false,
        timestamp_type: RecordBatchTimestampType::CreateTime,
    };
    Ok(ProduceRequest {
        transactional_id: NullableString(None),
        acks: Int16(plan.acks),
        timeout_ms: Int32(PRODUCE_TIMEOUT_MS),
        topic_data: vec![ProduceRequestTopicData {
            name: String_(plan.topic.clone()),
            partition_data: vec![ProduceRequestPartitionData {
                index: Int32(i32::try_from(plan.partition)?),
                records: Records(vec![batch]),
            }],
        }],
    })
}

/// Fails unless the response acknowledges the partition without an error.
fn check(
    response: Result<ProduceResponse, rskafka::messenger::RequestError>,
    plan: &PartitionPlan,
) -> Result<()> {
    let p = plan.partition;
    let response = response.with_context(|| format!("partition {p}: produce request failed"))?;
    let answer = response
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .find(|r| i64::from(r.index.0) == i64::from(p))
        .ok_or_else(|| anyhow!("partition {p}: the produce response does not mention it"))?;
    match &answer.error {
        None => Ok(()),
        Some(e) => bail!("partition {p}: the broker refused a produce request: {e}"),
    }
}

fn counts(c: &Counters) -> String {
    format!("sent {}, acked {}", get(&c.sent), get(&c.acked))
}

/// The progress line: totals and the rates since the previous line.
fn status(c: Arc<Counters>) -> impl Fn() -> String + Send + Sync + 'static {
    let previous = std::sync::Mutex::new((Instant::now(), 0u64));
    move || {
        let acked = get(&c.acked);
        let Ok(mut prev) = previous.lock() else {
            return String::new();
        };
        let dt = prev.0.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "sent {}  acked {} ({}/s)",
            thousands(get(&c.sent) as f64),
            thousands(acked as f64),
            thousands(acked.saturating_sub(prev.1) as f64 / dt),
        );
        *prev = (Instant::now(), acked);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PartitionPlan {
        PartitionPlan {
            topic: "t".into(),
            partition: 3,
            acks: 1,
            batch: 10,
            inflight: 5,
            size: 100,
            quota: None,
            interval: None,
        }
    }

    #[test]
    fn a_request_carries_one_batch_of_stamped_values_with_the_asked_acks() {
        let r = request(&plan(), 20, 4).expect("builds");
        assert_eq!(r.acks.0, 1);
        let data = &r.topic_data[0].partition_data[0];
        assert_eq!(data.index.0, 3);
        let batch = &data.records.0[0];
        assert_eq!(batch.last_offset_delta, 3);
        let ControlBatchOrRecords::Records(records) = &batch.records else {
            panic!("not records");
        };
        let stamps: Vec<_> = records
            .iter()
            .map(|r| probe::Stamp::read(r.value.as_deref().unwrap_or_default()))
            .map(|s| s.map(|s| (s.publisher, s.seq)))
            .collect();
        assert_eq!(
            stamps,
            [Some((3, 20)), Some((3, 21)), Some((3, 22)), Some((3, 23))]
        );
        assert!(
            records
                .iter()
                .all(|r| r.value.as_ref().map(Vec::len) == Some(100))
        );
    }
}
