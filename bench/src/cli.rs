//! Command line: `switchboard-bench <mqtt|amqp|kafka> <scenario> --host H --port P [options]`,
//! and `switchboard-bench plot` to chart saved JSON results.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load generator for message brokers: MQTT fan-in, fan-out and connection storms, \
             AMQP 0-9-1 publish/consume with publisher confirms, Kafka produce/consume and \
             MQTT-to-Kafka latency"
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
    /// AMQP 0-9-1 scenarios (RabbitMQ's protocol).
    Amqp {
        #[command(subcommand)]
        scenario: AmqpScenario,
    },
    /// Kafka scenarios (through rskafka).
    Kafka {
        #[command(subcommand)]
        scenario: KafkaScenario,
    },
    /// Draw the latency percentiles and throughput over time of saved results (--json files)
    /// into one PNG, one line per result.
    Plot(PlotArgs),
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

#[derive(Subcommand, Debug)]
pub enum AmqpScenario {
    /// Q queues; P publishers with publisher confirms, each publishing to one queue through the
    /// default exchange; one consumer per queue with basic.qos and manual acks.
    ConfirmPubsub(ConfirmArgs),
}

#[derive(Subcommand, Debug)]
pub enum KafkaScenario {
    /// Produce to a new topic of P partitions, one pipelined connection, reporting acknowledged
    /// msg/s, MB/s and produce latency (request sent to acknowledgement).
    Produce(ProduceArgs),
    /// Fill a new topic with --messages, then read them back from offset 0, reporting consumed
    /// msg/s and MB/s.
    Consume(ConsumeArgs),
    /// MQTT QoS 1 publishes (rumqttc) read back by a Kafka consumer of the stream MQTT topics are
    /// stored in: publish-to-receive latency across protocols. Switchboard only.
    MqttToKafka(MqttToKafkaArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Chart title (default: the scenario and parameters of the first result).
    #[arg(long)]
    pub title: Option<String>,
    /// JSON results written by --json (bench/compare keeps them in its --out directory).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub target: KafkaTarget,
    #[command(flatten)]
    pub produce: ProduceOptions,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub run: RunOptions,
}

/// The shape of the produce requests (shared by `produce` and the fill of `consume`).
#[derive(Args, Debug, Clone)]
pub struct ProduceOptions {
    /// Partitions of the topic the run creates; every partition gets its share of the load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Acknowledgement the broker must give: after the leader's append (1) or after every
    /// in-sync replica has it (all).
    #[arg(long, value_enum, default_value = "all")]
    pub acks: Acks,
    /// Records per produce request (one record batch, uncompressed).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Produce requests a partition may have unacknowledged at once (Kafka clients default to
    /// 5 per connection).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub inflight: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub target: KafkaTarget,
    #[command(flatten)]
    pub produce: ProduceOptions,
    /// Messages to fill the topic with and read back.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Value bytes per message; the first 16 carry a sequence number.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub size: u32,
    /// Most bytes one fetch may return for a partition.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(i32).range(1024..))]
    pub fetch_max_bytes: i32,
    /// Longest time the broker may hold a fetch before answering (min bytes is 1, so a broker
    /// with data answers at once; one that waits anyway is held this long per fetch).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub fetch_max_wait: Duration,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Args, Debug, Clone)]
pub struct MqttToKafkaArgs {
    #[command(flatten)]
    pub target: KafkaTarget,
    /// The broker's MQTT port (same host).
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// The Kafka topic MQTT publishes are stored in (Switchboard: `mqtt.default_stream`).
    #[arg(long, default_value = "mqtt")]
    pub stream: String,
    /// MQTT publishing connections, each on a topic of its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// QoS 1 publishes a publisher may have unacknowledged at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Args, Debug, Clone)]
pub struct KafkaTarget {
    /// Broker host (the bootstrap broker; it must lead every partition the run uses).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker Kafka port.
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// Pid of the broker process (same machine): its memory (VmRSS, VmHWM) and CPU time are
    /// read from /proc and reported.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    #[value(name = "1")]
    Leader,
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    /// The value of the produce request's `acks` field.
    pub fn wire(self) -> i16 {
        match self {
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
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
    #[command(flatten)]
    pub traffic: Traffic,
    /// QoS 1 publishes a publisher may have unacknowledged at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub run: RunOptions,
}

/// The messages of a run, whatever the protocol: how big, how many or for how long, how fast.
#[derive(Args, Debug, Clone)]
pub struct Traffic {
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
}

impl Traffic {
    /// Time between two messages of one of `publishers` publishers sharing `--rate`, or `None`
    /// for as fast as the broker takes them.
    pub fn interval(&self, publishers: u32) -> Option<Duration> {
        (self.rate > 0).then(|| Duration::from_secs_f64(f64::from(publishers) / self.rate as f64))
    }

    /// Publisher `i`'s share of `--messages` among `publishers`: the first ones take the
    /// remainder. `None` when publishing for a duration.
    pub fn quota(&self, i: u32, publishers: u32) -> Option<u64> {
        let n = u64::from(publishers);
        self.messages
            .map(|m| m / n + u64::from(u64::from(i) < m % n))
    }

    /// True when `--rate` is so low that a stall timeout may pass between two messages: silence
    /// is then the plan, not a stall.
    pub fn paced_slowly(&self, stall_timeout: Duration) -> bool {
        self.rate > 0 && stall_timeout.as_secs_f64() * (self.rate as f64) < 10.0
    }

    /// Adds size, duration or message count, and rate to a report's parameters.
    pub fn describe(&self, params: &mut serde_json::Map<String, serde_json::Value>) {
        params.insert("size".into(), self.size.into());
        match self.messages {
            Some(m) => params.insert("messages".into(), m.into()),
            None => params.insert("duration_s".into(), self.duration.as_secs_f64().into()),
        };
        if self.rate > 0 {
            params.insert("rate".into(), self.rate.into());
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ConfirmArgs {
    #[command(flatten)]
    pub target: AmqpTarget,
    /// Queues, each with one consumer (on a connection of its own, unless
    /// --channels-per-connection says otherwise).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub queues: u32,
    /// Publishing connections (default: one per queue); publisher i publishes to queue i mod Q.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: Option<u32>,
    /// Publishes a publisher may have unconfirmed at once; beyond that it waits for confirms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub window: u32,
    /// basic.qos prefetch count of each consumer: deliveries it may hold unacknowledged
    /// (0 = no limit).
    #[arg(long, default_value_t = 100)]
    pub prefetch: u16,
    /// Acknowledge every Nth delivery with multiple=true; 1 acknowledges each delivery on its
    /// own. At most --prefetch, or the broker stops delivering before the Nth.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub ack_every: u16,
    /// Channels per connection: consumers (and publishers) share connections this many at a
    /// time, as an application with one connection and a channel per queue does. 1 gives every
    /// consumer and publisher a connection of its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub channels_per_connection: u32,
    /// Non-durable queues and transient messages (delivery mode 1). Without it: durable queues
    /// and persistent messages (delivery mode 2), which a broker must store before confirming.
    #[arg(long)]
    pub transient: bool,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub run: RunOptions,
}

impl ConfirmArgs {
    pub fn publishers(&self) -> u32 {
        self.publishers.unwrap_or(self.queues)
    }
}

#[derive(Args, Debug, Clone)]
pub struct AmqpTarget {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker AMQP port.
    #[arg(long, default_value_t = 5672)]
    pub port: u16,
    /// Virtual host.
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// User name (PLAIN).
    #[arg(long, default_value = "guest")]
    pub user: String,
    /// Password.
    #[arg(long, default_value = "guest")]
    pub password: String,
    /// Pid of the broker process (same machine): its memory (VmRSS, VmHWM) and CPU time are
    /// read from /proc and reported. For RabbitMQ, the Erlang VM (beam.smp), not its wrapper.
    #[arg(long)]
    pub broker_pid: Option<u32>,
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
    /// Longest wait for the broker to accept and set up a client (MQTT: CONNACK, SUBACK; AMQP:
    /// connection.open-ok and each declare, qos, consume or close reply).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Fail when nothing is published or received for this long while the load runs.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// After publishing stops, longest wait for the remaining deliveries and acknowledgements.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// After publishing stops, stop waiting for deliveries once none arrived for this long
    /// (messages a broker dropped never come).
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
    /// Also draw the result as a PNG chart: latency by percentile and throughput over time.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
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

impl Protocol {
    pub fn run_options(&self) -> &RunOptions {
        match self {
            Protocol::Mqtt { scenario } => scenario.run_options(),
            Protocol::Amqp {
                scenario: AmqpScenario::ConfirmPubsub(a),
            } => &a.run,
            Protocol::Kafka { scenario } => match scenario {
                KafkaScenario::Produce(a) => &a.run,
                KafkaScenario::Consume(a) => &a.run,
                KafkaScenario::MqttToKafka(a) => &a.run,
            },
            Protocol::Plot(_) => &NO_RUN_OPTIONS,
        }
    }
}

/// `plot` draws saved results and runs no load.
static NO_RUN_OPTIONS: RunOptions = RunOptions {
    label: None,
    json: None,
    markdown: None,
    threads: None,
    plot: None,
};

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
        assert_eq!(args.load.traffic.size, 100);
    }

    #[test]
    fn an_amqp_run_defaults_to_durable_queues_one_publisher_per_queue_and_prefetch_100() {
        let cli = Cli::try_parse_from([
            "switchboard-bench",
            "amqp",
            "confirm-pubsub",
            "--port",
            "5673",
            "--queues",
            "10",
        ])
        .expect("parses");
        let Protocol::Amqp {
            scenario: AmqpScenario::ConfirmPubsub(args),
        } = cli.protocol
        else {
            panic!("not confirm-pubsub: {cli:?}");
        };
        assert_eq!((args.queues, args.publishers()), (10, 10));
        assert_eq!((args.prefetch, args.ack_every, args.window), (100, 1, 1000));
        assert!(!args.transient);
        assert_eq!(args.target.port, 5673);
        assert_eq!(args.target.vhost, "/");
    }

    #[test]
    fn a_kafka_produce_defaults_to_acks_all_batches_of_100_and_5_in_flight() {
        let cli = Cli::try_parse_from([
            "switchboard-bench",
            "kafka",
            "produce",
            "--port",
            "19092",
            "--partitions",
            "8",
            "--plot",
            "p.png",
        ])
        .expect("parses");
        let Protocol::Kafka {
            scenario: KafkaScenario::Produce(args),
        } = cli.protocol
        else {
            panic!("not kafka produce: {cli:?}");
        };
        assert_eq!(args.produce.acks, Acks::All);
        assert_eq!(args.produce.acks.wire(), -1);
        assert_eq!((args.produce.partitions, args.produce.batch), (8, 100));
        assert_eq!(args.produce.inflight, 5);
        assert_eq!(args.target.port, 19092);
        assert_eq!(args.run.plot, Some(PathBuf::from("p.png")));
    }

    #[test]
    fn acks_take_1_all_and_minus_1() {
        for (text, acks) in [("1", Acks::Leader), ("all", Acks::All), ("-1", Acks::All)] {
            let cli = Cli::try_parse_from([
                "switchboard-bench",
                "kafka",
                "produce",
                &format!("--acks={text}"),
            ])
            .expect("parses");
            let Protocol::Kafka {
                scenario: KafkaScenario::Produce(args),
            } = cli.protocol
            else {
                panic!("not kafka produce");
            };
            assert_eq!(args.produce.acks, acks, "{text}");
        }
    }

    #[test]
    fn traffic_splits_a_message_count_and_a_rate_among_publishers() {
        let t = Traffic {
            size: 100,
            duration: Duration::from_secs(10),
            messages: Some(10),
            rate: 1000,
        };
        let quotas: Vec<_> = (0..3).map(|i| t.quota(i, 3)).collect();
        assert_eq!(quotas, [Some(4), Some(3), Some(3)]);
        assert_eq!(t.interval(4), Some(Duration::from_millis(4)));
    }
}
