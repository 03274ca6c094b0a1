//! Command line: `switchboard-bench mqtt <scenario> --host H --port P [options]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load generator for message brokers: MQTT fan-in, fan-out and connection storms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub protocol: Protocol,
}

#[derive(Subcommand, Debug)]
pub enum Protocol {
    /// MQTT 3.1.1 scenarios.
    Mqtt {
        #[command(subcommand)]
        scenario: MqttScenario,
    },
}

#[derive(Subcommand, Debug)]
pub enum MqttScenario {
    /// P publishers, each on its own topic, to one subscriber on a wildcard filter.
    FanIn(FanInArgs),
    /// One publisher to S subscribers of the same topic.
    FanOut(FanOutArgs),
    /// Open N idle connections, measure the broker's memory, disconnect.
    ConnStorm(StormArgs),
}

#[derive(Args, Debug, Clone)]
pub struct FanInArgs {
    /// Publishing connections.
    #[arg(long, default_value_t = 10)]
    pub publishers: u32,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args, Debug, Clone)]
pub struct FanOutArgs {
    /// Subscribing connections, all on the one topic.
    #[arg(long, default_value_t = 100)]
    pub subscribers: u32,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// What fan-in and fan-out share: the message stream and the time limits.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: Target,
    /// QoS of the publishes and of the subscriptions.
    #[arg(long, value_enum, default_value = "0")]
    pub qos: Qos,
    /// Payload bytes per message; the first 16 carry the send time and a sequence number.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub size: u32,
    /// How long to publish, e.g. "10s", "500ms", "2m" (a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Publish this many messages in total instead of publishing for --duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Total publish rate in messages per second, shared by the publishers; 0 = as fast as the
    /// broker takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// QoS 1 publishes a publisher may have unacknowledged at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Args, Debug, Clone)]
pub struct StormArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: u32,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// MQTT keep-alive of each connection.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub keep_alive: Duration,
    /// How long to hold the connections open after the last CONNACK before reading the broker's
    /// memory, so that allocations made just after CONNACK are counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker MQTT port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Pid of the broker process (same machine): its memory (VmRSS, VmHWM) and CPU time are
    /// read from /proc and reported.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Leave Nagle's algorithm on for the bench's sockets (rumqttc's default). Off by default,
    /// so that small publishes and acknowledgements are not held back by the client's kernel.
    #[arg(long)]
    pub nagle: bool,
}

/// Every wait has a bound: a broker that stops answering fails the run with a message.
#[derive(Args, Debug, Clone)]
pub struct Limits {
    /// Longest wait for a CONNACK or SUBACK.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Fail when nothing is published or received for this long while the load runs.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// After publishing stops, longest wait for the remaining deliveries and acknowledgements.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// After publishing stops, stop waiting for deliveries once none arrived for this long
    /// (QoS 0 messages a broker dropped never come).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain_idle: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct RunOptions {
    /// Name of the broker under test, shown in the outputs (e.g. "switchboard", "mosquitto").
    #[arg(long)]
    pub label: Option<String>,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also append the result as a row of a Markdown table to this file (header when new).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Worker threads of the load generator (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    #[value(name = "0")]
    AtMostOnce,
    #[value(name = "1")]
    AtLeastOnce,
}

impl Qos {
    pub fn number(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

impl MqttScenario {
    pub fn run_options(&self) -> &RunOptions {
        match self {
            MqttScenario::FanIn(a) => &a.load.run,
            MqttScenario::FanOut(a) => &a.load.run,
            MqttScenario::ConnStorm(a) => &a.run,
        }
    }
}

/// "10s", "250ms", "2m", "1h", or a bare number of seconds ("1.5").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as \"10s\" or \"500ms\""))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_human_units_and_bare_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn the_command_line_parses_as_documented() {
        let cli = Cli::try_parse_from([
            "switchboard-bench",
            "mqtt",
            "fan-in",
            "--port",
            "18830",
            "--qos",
            "1",
            "--publishers",
            "100",
        ])
        .expect("parses");
        let Protocol::Mqtt {
            scenario: MqttScenario::FanIn(args),
        } = cli.protocol
        else {
            panic!("not fan-in: {cli:?}");
        };
        assert_eq!(args.publishers, 100);
        assert_eq!(args.load.qos, Qos::AtLeastOnce);
        assert_eq!(args.load.target.port, 18830);
        assert_eq!(args.load.size, 100);
    }
}
