"""The binary's own surface: config printing, port conflicts, the topic admin CLI."""
import json
import socket
import subprocess

import pytest

from conftest import Server, binary

pytestmark = pytest.mark.switchboard_specific


def run(*args, timeout=60):
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout)


def test_config_prints_the_commented_default():
    out = run("config")
    assert out.returncode == 0
    assert "listen" in out.stdout and "#" in out.stdout


def test_taken_port_is_named_and_exit_is_nonzero(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        s = Server(tmp_path / "d")
        args = s.args() + ["--set", f"kafka.listen=127.0.0.1:{port}"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "kafka listener" in out.stderr and str(port) in out.stderr


def test_topic_cli_round_trip(server):
    admin = ["--admin", server.admin]
    out = run("topic", *admin, "create", "cli-topic", "--partitions", "4", "--config", "retention.ms=60000")
    assert out.returncode == 0, out.stderr
    listed = run("topic", *admin, "list")
    assert "cli-topic\t4 partition(s)" in listed.stdout
    described = json.loads(run("topic", *admin, "describe", "cli-topic").stdout)
    assert len(described["partitions"]) == 4
    assert described["config"]["retention.ms"] == "60000"
    dup = run("topic", *admin, "create", "cli-topic")
    assert dup.returncode != 0 and "already exists" in dup.stderr
    assert run("topic", *admin, "delete", "cli-topic").returncode == 0
    assert "cli-topic" not in run("topic", *admin, "list").stdout


def metric(admin, name):
    """The value of an unlabelled metric on /metrics."""
    import urllib.request
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        body = r.read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def test_metrics_and_health_endpoints(server):
    import urllib.request
    with urllib.request.urlopen(f"http://{server.admin}/metrics", timeout=5) as r:
        body = r.read().decode()
    assert "switchboard_kafka_connections" in body


def test_metrics_count_the_fsyncs_of_acks_all_produces(server):
    from confluent_kafka import Producer
    before = metric(server.admin, "switchboard_storage_fsyncs_total")
    p = Producer({"bootstrap.servers": server.bootstrap, "acks": "all"})
    delivered = []
    for i in range(3):
        p.produce("fsync-counted", f"v{i}".encode(), on_delivery=lambda e, m: delivered.append(e))
        p.flush(10)
    assert delivered == [None, None, None]
    assert metric(server.admin, "switchboard_storage_fsyncs_total") >= before + 1
