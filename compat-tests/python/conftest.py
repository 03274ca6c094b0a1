"""Fixtures: a real `switchboard serve` on free loopback ports with a fresh data directory.

The binary is taken from $SB_TEST_BIN, else target/debug/switchboard (built by scripts/test).
Ports are never assumed free: each server gets ports the OS just handed out.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def binary() -> str:
    return os.environ.get("SB_TEST_BIN", str(ROOT / "target" / "debug" / "switchboard"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One switchboard process; can be killed with SIGKILL and restarted on the same ports."""

    def __init__(self, data_dir: Path, extra_sets=()):
        self.data_dir = data_dir
        self.kafka_port = free_port()
        self.admin_port = free_port()
        self.extra_sets = list(extra_sets)
        self.proc = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def args(self):
        sets = [
            f"kafka.listen=127.0.0.1:{self.kafka_port}",
            f"admin.listen=127.0.0.1:{self.admin_port}",
            "kafka.group_initial_rebalance_delay=1s",
            *self.extra_sets,
        ]
        out = [binary(), "serve", "--data-dir", str(self.data_dir)]
        for s in sets:
            out += ["--set", s]
        return out

    def start(self, timeout=30.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy: {self.log_tail()}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data").start()
    yield s
    s.stop()


@pytest.fixture
def server_factory(tmp_path):
    made = []

    def make(**kw):
        s = Server(tmp_path / f"data{len(made)}", **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
