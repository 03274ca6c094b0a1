//! Connection storm: open N idle connections with bounded concurrency, wait for every CONNACK,
//! read the broker's memory, then disconnect them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{connect, disconnect, options};
use crate::cli::StormArgs;
use crate::procfs;
use crate::progress::Progress;
use crate::report::{BrokerUsage, Connections, Report};

/// How often the coordinator looks for progress and failures.
const TICK: Duration = Duration::from_millis(50);
/// Longest wait for every connection to say goodbye at the end.
const DISCONNECT_BOUND: Duration = Duration::from_secs(30);

pub async fn run(args: StormArgs) -> Result<Report> {
    let n = args.connections;
    if n == 0 {
        bail!("--connections must be at least 1");
    }
    let pid = args.target.broker_pid;
    let before = pid.map(procfs::usage).transpose()?;
    let connected = Arc::new(AtomicU64::new(0));
    let hold = CancellationToken::new();
    let progress = Progress::start({
        let connected = connected.clone();
        move || format!("connected {}/{n}", connected.load(Ordering::Relaxed))
    });

    let start = Instant::now();
    let mut tasks = open(&args, connected.clone(), hold.clone()).await?;
    await_all(&args, &connected, &mut tasks).await?;
    let connect_seconds = start.elapsed().as_secs_f64();

    progress.set(move || format!("holding {n} connections"));
    hold_for(args.settle, &mut tasks).await?;
    let after = pid.map(procfs::usage).transpose()?;

    progress.set(move || format!("disconnecting {n} connections"));
    hold.cancel();
    tokio::time::timeout(DISCONNECT_BOUND, async {
        while let Some(done) = tasks.join_next().await {
            done.context("a connection task panicked")??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .map_err(|_| {
        anyhow!("disconnecting {n} connections took longer than {DISCONNECT_BOUND:?}")
    })??;
    progress.finish().await;

    let broker = before.zip(after).map(|(b, a)| BrokerUsage {
        rss_per_conn_bytes: Some((a.rss_kb as f64 - b.rss_kb as f64) * 1024.0 / f64::from(n)),
        ..BrokerUsage::between(b, a)
    });
    Ok(Report {
        tool: "switchboard-bench",
        protocol: "mqtt",
        scenario: "conn-storm",
        label: args.run.label.clone(),
        params: params(&args),
        seconds: connect_seconds,
        connections: Some(Connections {
            connections: u64::from(n),
            connect_per_s: f64::from(n) / connect_seconds.max(1e-9),
        }),
        broker,
        ..Report::default()
    })
}

/// Starts one task per connection, at most `concurrency` of them connecting at once. Each task
/// holds its connection (answering keep-alives) until `hold` is cancelled.
async fn open(
    args: &StormArgs,
    connected: Arc<AtomicU64>,
    hold: CancellationToken,
) -> Result<JoinSet<Result<()>>> {
    let id = crate::probe::run_id();
    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut tasks = JoinSet::new();
    for i in 0..args.connections {
        let permit =
            tokio::time::timeout(args.limits.connect_timeout, permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    anyhow!(
                        "no connection attempt finished within {:?} ({} of {} connected)",
                        args.limits.connect_timeout,
                        connected.load(Ordering::Relaxed),
                        args.connections
                    )
                })?
                .context("connection semaphore closed")?;
        fail_on_first_error(&mut tasks, &connected, args.connections)?;
        let opts = options(&args.target, format!("sbb-{id}-c{i}"), args.keep_alive, 0);
        let timeout = args.limits.connect_timeout;
        let target = args.target.clone();
        let connected = connected.clone();
        let hold = hold.clone();
        tasks.spawn(async move {
            let opened = connect(opts, &target, timeout).await;
            drop(permit);
            let (client, mut eventloop) = opened.with_context(|| format!("connection {i}"))?;
            connected.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = hold.cancelled() => break,
                    event = eventloop.poll() => {
                        event.with_context(|| format!("connection {i} dropped while idle"))?;
                    }
                }
            }
            disconnect(&client, &mut eventloop).await;
            Ok(())
        });
    }
    Ok(tasks)
}

/// Waits for every CONNACK; fails on the first refused or broken connection, or when no
/// connection completes within the connect timeout.
async fn await_all(
    args: &StormArgs,
    connected: &AtomicU64,
    tasks: &mut JoinSet<Result<()>>,
) -> Result<()> {
    let target = u64::from(args.connections);
    let mut last = connected.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        fail_on_first_error(tasks, connected, args.connections)?;
        let now = connected.load(Ordering::Relaxed);
        if now >= target {
            return Ok(());
        }
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= args.limits.connect_timeout {
            bail!(
                "stalled: no CONNACK for {:?} ({now} of {target} connected)",
                args.limits.connect_timeout
            );
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Keeps the connections open for `settle`, failing if one of them breaks meanwhile.
async fn hold_for(settle: Duration, tasks: &mut JoinSet<Result<()>>) -> Result<()> {
    let until = Instant::now() + settle;
    while Instant::now() < until {
        if let Some(done) = tasks.try_join_next() {
            done.context("a connection task panicked")??;
            bail!("a connection ended while the connections were being held");
        }
        tokio::time::sleep(TICK).await;
    }
    Ok(())
}

fn fail_on_first_error(
    tasks: &mut JoinSet<Result<()>>,
    connected: &AtomicU64,
    total: u32,
) -> Result<()> {
    if let Some(done) = tasks.try_join_next() {
        let connected = connected.load(Ordering::Relaxed);
        done.context("a connection task panicked")?
            .with_context(|| format!("{connected} of {total} connected"))?;
        bail!(
            "a connection ended before the storm was complete ({connected} of {total} connected)"
        );
    }
    Ok(())
}

fn params(args: &StormArgs) -> Map<String, serde_json::Value> {
    let mut p = Map::new();
    p.insert("connections".into(), json!(args.connections));
    p.insert("concurrency".into(), json!(args.concurrency));
    p.insert("keep_alive_s".into(), json!(args.keep_alive.as_secs()));
    p
}
