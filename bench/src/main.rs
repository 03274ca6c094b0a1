//! `switchboard-bench`: load scenarios against a running broker (Switchboard or any other),
//! reporting throughput, latency percentiles and the broker's memory.
//!
//!     switchboard-bench mqtt fan-in --port 1883 --qos 1 --publishers 10 --duration 10s
//!     switchboard-bench mqtt conn-storm --port 1883 --connections 10000 --broker-pid 4242
//!     switchboard-bench amqp confirm-pubsub --port 5672 --queues 10 --prefetch 100
//!     switchboard-bench kafka produce --port 9092 --partitions 8 --acks all --plot produce.png
//!     switchboard-bench plot --out compare.png results/*.json

mod amqp;
mod cli;
mod kafka;
mod mqtt;
mod plot;
mod probe;
mod procfs;
mod progress;
mod report;
mod timeline;
mod watch;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Protocol};

/// The clients allocate per message (lapin: a promise, a frame and a flume hand-off per publish;
/// rumqttc and rskafka: their packets), and glibc's malloc was a fifth of the bench's CPU in an
/// AMQP run, contending with the broker under test for the same cores. mimalloc's thread-local
/// free lists take most of that away, for every broker alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Protocol::Plot(args) = &cli.protocol {
        return plot::from_files(args);
    }
    let run = cli.protocol.run_options().clone();
    let threads = run
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut report = runtime.block_on(async {
        match cli.protocol {
            Protocol::Mqtt { scenario } => mqtt::run(scenario).await,
            Protocol::Amqp { scenario } => amqp::run(scenario).await,
            Protocol::Kafka { scenario } => kafka::run(scenario).await,
            Protocol::Plot(_) => unreachable!("plot runs no load"),
        }
    })?;
    report
        .params
        .insert("threads".into(), serde_json::json!(threads));
    report.emit(&run)
}
