//! The result of one run: a line on stdout, optionally JSON and a Markdown table row.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::RunOptions;
use crate::procfs::Usage;

/// Everything a run measured. Fields a scenario does not measure are left out of the JSON.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub protocol: &'static str,
    pub scenario: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The options that shape the load.
    pub params: Map<String, Value>,

    /// Messages delivered to subscribers (every delivery, duplicates included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgs: Option<u64>,
    /// From the first publish to the last delivery (fan-in, fan-out), or from the first
    /// connection attempt to the last CONNACK (conn-storm).
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_per_s: Option<f64>,
    /// Payload megabytes (10^6) per second delivered to subscribers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,

    #[serde(flatten)]
    pub delivery: Option<Delivery>,
    #[serde(flatten)]
    pub latency: Option<Latency>,
    #[serde(flatten)]
    pub connections: Option<Connections>,
    #[serde(flatten)]
    pub broker: Option<BrokerUsage>,
    /// Kafka fetch responses that carried records (consume): msgs / fetches is how many records
    /// the broker returns per fetch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetches: Option<u64>,
    /// CPU time (user + system) of this load generator during the load, seconds: when it is
    /// close to the wall-clock time times the cores, the bench, not the broker, is the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bench_cpu_s: Option<f64>,

    /// The latency distribution for charts: `[percentile, µs]` pairs from p0 to the maximum,
    /// denser towards the tail (see [`spectrum`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percentiles: Vec<[f64; 2]>,
    /// Throughput over time for charts: `[seconds since the load started, msg/s]` per interval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<[f64; 2]>,
}

/// Publisher-side counts and what went missing between publishers and subscribers.
#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    /// Publishes written to the broker (MQTT QoS 1: and acknowledged; AMQP: and confirmed with
    /// basic.ack).
    pub sent: u64,
    /// AMQP publishes the broker refused with basic.nack; `None` without publisher confirms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nacked: Option<u64>,
    pub publish_seconds: f64,
    pub publish_msg_per_s: f64,
    /// Deliveries the subscribers should have had: sent × matching subscribers.
    pub expected: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries that arrived after a later message of the same publisher.
    pub reordered: u64,
    /// AMQP deliveries flagged as redelivered (requeued after a consumer or channel went away).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redelivered: Option<u64>,
}

/// Publish-to-receive latency, microseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Points of the latency-by-percentile curve: eight per "nine" (90 %, 99 %, 99.9 % ...) up to
/// 99.999 %, then the maximum. The tail is where brokers differ, so it gets most of the points.
pub fn spectrum(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<[f64; 2]> = (0..=40)
        .map(|i| {
            let q = 1.0 - 10f64.powf(-f64::from(i) / 8.0);
            [q * 100.0, h.value_at_quantile(q) as f64]
        })
        .collect();
    points.push([100.0, h.max() as f64]);
    points
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        })
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Connections {
    pub connections: u64,
    pub connect_per_s: f64,
}

/// The broker process, when its pid was given.
#[derive(Debug, Default, Serialize)]
pub struct BrokerUsage {
    /// VmRSS before the load, KiB.
    pub rss_before_kb: u64,
    /// VmRSS at the measuring point (conn-storm: all connected; others: publishing done), KiB.
    pub rss_after_kb: u64,
    /// VmHWM (peak RSS since the broker started) at the measuring point, KiB.
    pub rss_hwm_kb: u64,
    /// (rss_after - rss_before) / connections, bytes; conn-storm only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_conn_bytes: Option<f64>,
    /// Broker CPU time (user + system) used during the load, seconds.
    pub broker_cpu_s: f64,
}

impl BrokerUsage {
    pub fn between(before: Usage, after: Usage) -> BrokerUsage {
        BrokerUsage {
            rss_before_kb: before.rss_kb,
            rss_after_kb: after.rss_kb,
            rss_hwm_kb: after.hwm_kb,
            rss_per_conn_bytes: None,
            broker_cpu_s: after.cpu_s - before.cpu_s,
        }
    }
}

impl Report {
    /// The one-line summary for stdout.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", self.protocol, self.scenario);
        if let Some(label) = &self.label {
            let _ = write!(s, " [{label}]");
        }
        let _ = write!(s, " {}:", params_text(&self.params));
        // With publisher confirms there are two rates: consumed (here) and confirmed (below).
        let confirming = self.delivery.as_ref().is_some_and(|d| d.nacked.is_some());
        if let (Some(msgs), Some(rate), Some(mb)) = (self.msgs, self.msg_per_s, self.mb_per_s) {
            let _ = write!(
                s,
                " {}{} msg/s {mb:.1} MB/s ({} msgs in {:.2} s)",
                if confirming { "consumed " } else { "" },
                thousands(rate),
                thousands(msgs as f64),
                self.seconds
            );
        }
        if let Some(d) = &self.delivery {
            let _ = write!(
                s,
                "; {} {} ({} msg/s)",
                if confirming { "confirmed" } else { "sent" },
                thousands(d.sent as f64),
                thousands(d.publish_msg_per_s),
            );
            if let Some(n) = d.nacked {
                let _ = write!(s, ", nacked {n}");
            }
            let _ = write!(
                s,
                ", lost {}, dup {}, reordered {}",
                d.lost, d.duplicates, d.reordered
            );
            if let Some(n) = d.redelivered {
                let _ = write!(s, ", redelivered {n}");
            }
        }
        if let Some(l) = &self.latency {
            let _ = write!(
                s,
                "; latency µs p50 {} p99 {} p99.9 {} max {}",
                l.p50_us, l.p99_us, l.p999_us, l.max_us
            );
        }
        if let (Some(f), Some(msgs)) = (self.fetches, self.msgs) {
            let _ = write!(
                s,
                "; {} fetches ({:.0} records/fetch)",
                thousands(f as f64),
                msgs as f64 / f.max(1) as f64
            );
        }
        if let Some(c) = &self.connections {
            let _ = write!(
                s,
                " {} connections in {:.2} s ({} conn/s)",
                c.connections,
                self.seconds,
                thousands(c.connect_per_s)
            );
        }
        if let Some(b) = &self.broker {
            let _ = write!(
                s,
                "; broker RSS {:.1} -> {:.1} MiB (peak {:.1})",
                b.rss_before_kb as f64 / 1024.0,
                b.rss_after_kb as f64 / 1024.0,
                b.rss_hwm_kb as f64 / 1024.0
            );
            if let Some(per) = b.rss_per_conn_bytes {
                let _ = write!(s, ", {} B/conn", thousands(per));
            }
            let _ = write!(s, ", CPU {:.2} s", b.broker_cpu_s);
        }
        if let Some(cpu) = self.bench_cpu_s {
            let _ = write!(s, "; bench CPU {cpu:.2} s");
        }
        s
    }

    /// Prints the line and writes the files the options ask for.
    pub fn emit(&self, run: &RunOptions) -> Result<()> {
        println!("{}", self.line());
        if let Some(path) = &run.json {
            let json = serde_json::to_string_pretty(self).context("encoding the JSON result")?;
            fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &run.markdown {
            self.append_markdown(path)?;
        }
        if let Some(path) = &run.plot {
            let json = serde_json::to_value(self).context("encoding the result for the chart")?;
            crate::plot::draw(path, None, &[json])?;
        }
        Ok(())
    }

    fn append_markdown(&self, path: &Path) -> Result<()> {
        let new = fs::metadata(path).map_or(true, |m| m.len() == 0);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut text = String::new();
        if new {
            text.push_str(MARKDOWN_HEADER);
        }
        text.push_str(&self.markdown_row());
        file.write_all(text.as_bytes())
            .with_context(|| format!("appending to {}", path.display()))
    }

    fn markdown_row(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "–".into());
        let cells = [
            self.label.clone().unwrap_or_default(),
            format!("{} {}", self.protocol, self.scenario),
            params_text(&self.params),
            opt(self.msgs.map(|m| thousands(m as f64))),
            format!("{:.2}", self.seconds),
            opt(self.msg_per_s.map(thousands)),
            opt(self.mb_per_s.map(|m| format!("{m:.1}"))),
            opt(self.latency.as_ref().map(|l| l.p50_us.to_string())),
            opt(self.latency.as_ref().map(|l| l.p99_us.to_string())),
            opt(self.latency.as_ref().map(|l| l.p999_us.to_string())),
            opt(self.delivery.as_ref().map(|d| d.lost.to_string())),
            opt(self
                .broker
                .as_ref()
                .map(|b| format!("{:.1}", b.rss_after_kb as f64 / 1024.0))),
            opt(self
                .broker
                .as_ref()
                .and_then(|b| b.rss_per_conn_bytes)
                .map(thousands)),
        ];
        format!("| {} |\n", cells.join(" | "))
    }
}

const MARKDOWN_HEADER: &str = "| broker | scenario | parameters | msgs | s | msg/s | MB/s | p50 µs | p99 µs | p99.9 µs | lost | RSS MiB | RSS B/conn |\n|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";

pub fn params_text(params: &Map<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `n` per second over `seconds`; 0 for an empty interval.
pub fn per_second(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// 1234567.8 as "1,234,568".
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut params = Map::new();
        params.insert("qos".into(), 1.into());
        params.insert("publishers".into(), 10.into());
        Report {
            tool: "switchboard-bench",
            protocol: "mqtt",
            scenario: "fan-in",
            label: Some("mosquitto".into()),
            params,
            msgs: Some(1_000_000),
            seconds: 10.0,
            msg_per_s: Some(100_000.0),
            mb_per_s: Some(10.0),
            delivery: Some(Delivery {
                sent: 1_000_000,
                ..Delivery::default()
            }),
            latency: Some(Latency {
                p50_us: 800,
                p99_us: 2000,
                p999_us: 3000,
                max_us: 9000,
                mean_us: 900.0,
            }),
            connections: None,
            broker: None,
            fetches: None,
            bench_cpu_s: None,
            percentiles: Vec::new(),
            timeline: Vec::new(),
        }
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn the_json_is_flat_with_the_measured_fields_only() {
        let json = serde_json::to_value(sample()).expect("serializes");
        assert_eq!(json["msg_per_s"], 100_000.0);
        assert_eq!(json["p999_us"], 3000);
        assert_eq!(json["sent"], 1_000_000);
        assert_eq!(json["params"]["qos"], 1);
        assert!(json.get("rss_after_kb").is_none());
        assert!(json.get("connections").is_none());
    }

    #[test]
    fn the_line_names_rate_and_percentiles() {
        let line = sample().line();
        assert!(
            line.starts_with("mqtt fan-in [mosquitto] publishers=10 qos=1:"),
            "{line}"
        );
        assert!(line.contains("100,000 msg/s 10.0 MB/s"), "{line}");
        assert!(line.contains("p99.9 3000"), "{line}");
    }

    #[test]
    fn with_confirms_the_line_says_consumed_and_confirmed() {
        let mut r = sample();
        r.protocol = "amqp";
        r.scenario = "confirm-pubsub";
        r.delivery = Some(Delivery {
            sent: 1_000_000,
            publish_msg_per_s: 90_000.0,
            nacked: Some(0),
            redelivered: Some(3),
            ..Delivery::default()
        });
        r.bench_cpu_s = Some(4.5);
        let line = r.line();
        assert!(line.contains(": consumed 100,000 msg/s"), "{line}");
        assert!(
            line.contains("confirmed 1,000,000 (90,000 msg/s), nacked 0"),
            "{line}"
        );
        assert!(line.contains("redelivered 3"), "{line}");
        assert!(line.ends_with("; bench CPU 4.50 s"), "{line}");
    }

    #[test]
    fn the_spectrum_rises_from_the_median_to_the_maximum() {
        let mut h = crate::probe::histogram();
        for us in 1..=10_000 {
            h.record(us).expect("in range");
        }
        let points = spectrum(&h);
        assert_eq!(points.first().map(|p| p[0]), Some(0.0));
        assert_eq!(points.last(), Some(&[100.0, h.max() as f64]));
        assert!(
            points
                .windows(2)
                .all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1])
        );
        assert!(spectrum(&crate::probe::histogram()).is_empty());
    }

    #[test]
    fn markdown_gets_a_header_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("results.md");
        sample().append_markdown(&path).expect("first row");
        sample().append_markdown(&path).expect("second row");
        let text = fs::read_to_string(&path).expect("read back");
        assert_eq!(text.matches("| broker |").count(), 1);
        assert_eq!(text.matches("| mosquitto | mqtt fan-in |").count(), 2);
    }
}
