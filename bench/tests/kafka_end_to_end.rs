//! The Kafka scenarios end to end against a real Switchboard on free loopback ports: each runs a
//! few hundred messages and must report them all. No timings are asserted: numbers are not
//! tests.
//!
//! The server binary is `$SB_TEST_BIN`, else `switchboard` next to this test's bench binary
//! (target/debug/switchboard, which `scripts/test` builds before `cargo test`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_switchboard-bench");

struct Server {
    child: Child,
    kafka: u16,
    mqtt: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn server_binary() -> PathBuf {
    let path = std::env::var_os("SB_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(BENCH).with_file_name("switchboard"));
    assert!(
        path.exists(),
        "{} not found: build the server first (cargo build --bin switchboard) or set SB_TEST_BIN",
        path.display()
    );
    path
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (kafka, mqtt) = (free_port(), free_port());
    let listen = |key: &str, port: u16| format!("{key}=127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("log")).expect("log file");
    let child = Command::new(server_binary())
        .arg("serve")
        .args(["--set", &listen("kafka.listen", kafka)])
        .args(["--set", &listen("mqtt.listen", mqtt)])
        .args(["--set", "mqtt.ws_enabled=false"])
        .args(["--set", &listen("amqp.listen", free_port())])
        .args(["--set", &listen("admin.listen", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting switchboard");
    let server = Server {
        child,
        kafka,
        mqtt,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", kafka)).is_err() {
        assert!(
            Instant::now() < deadline,
            "switchboard did not listen on {kafka} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Runs the bench with `args` plus `--json`, and returns the parsed result.
fn bench(args: &[&str], dir: &Path) -> serde_json::Value {
    let json = dir.join("result.json");
    let out = Command::new(BENCH)
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running switchboard-bench");
    assert!(
        out.status.success(),
        "switchboard-bench {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("the JSON result");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn a_small_produce_run_has_every_message_acknowledged_and_draws_a_chart() {
    let server = start_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let png = dir.path().join("produce.png");
    let port = server.kafka.to_string();
    let png_arg = png.to_string_lossy().into_owned();
    let r = bench(
        &[
            "kafka",
            "produce",
            "--port",
            &port,
            "--partitions",
            "2",
            "--acks",
            "1",
            "--batch",
            "10",
            "--messages",
            "300",
            "--plot",
            &png_arg,
        ],
        dir.path(),
    );
    assert_eq!(r["msgs"], 300, "{r}");
    assert!(r["p99_us"].as_u64().is_some_and(|us| us > 0), "{r}");
    let bytes = std::fs::read(&png).expect("the chart");
    assert_eq!(&bytes[1..4], b"PNG");
}

#[test]
fn a_small_consume_run_reads_back_everything_it_wrote() {
    let server = start_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = server.kafka.to_string();
    let r = bench(
        &[
            "kafka",
            "consume",
            "--port",
            &port,
            "--partitions",
            "3",
            "--messages",
            "500",
        ],
        dir.path(),
    );
    assert_eq!(
        (r["msgs"].as_u64(), r["sent"].as_u64()),
        (Some(500), Some(500)),
        "{r}"
    );
    assert_eq!(
        (r["lost"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
}

#[test]
fn mqtt_publishes_reach_a_kafka_reader_of_the_mqtt_stream() {
    let server = start_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let (kafka, mqtt) = (server.kafka.to_string(), server.mqtt.to_string());
    let r = bench(
        &[
            "kafka",
            "mqtt-to-kafka",
            "--port",
            &kafka,
            "--mqtt-port",
            &mqtt,
            "--publishers",
            "2",
            "--messages",
            "100",
        ],
        dir.path(),
    );
    assert_eq!(
        (r["msgs"].as_u64(), r["lost"].as_u64()),
        (Some(100), Some(0)),
        "{r}"
    );
}
