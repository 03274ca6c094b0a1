"""Drives the client adapters of the suite: the Node.js scripts of compat-tests/node (kafkajs,
mqtt.js, amqplib) and the Rust binary of compat-tests/rust (rskafka, rumqttc, lapin).

Each adapter is one small program per library that speaks the same line protocol
(compat-tests/node/adapter.js, compat-tests/rust/src/protocol.rs): a JSON command per line on
stdin, a JSON reply per line on stdout. The cases are written once per behaviour, in Python, in
cases_kafka.py, cases_mqtt.py and cases_amqp.py, and run by one test file per client library
that names its adapter; an adapter only turns commands into library calls, so another library
of a protocol is another adapter with the same commands and another small test file.

`Adapter` is one adapter process (any command line); `Adapters` is the factory fixture
(`adapters`) that starts them (`adapters.node("kafkajs")`, `adapters.rust("rumqttc")`) and ends
them all after the test. `MqttClient`, `KafkaClient` and `AmqpClient` wrap each protocol's
commands in Python methods, so the cases read like the paho and pika ones.

Every wait is bounded: the adapter's own waits take a `timeoutMs`, and the Python side gives
each reply that plus a margin.
"""
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "compat-tests" / "node"
# Every wait in these tests is bounded by this many seconds unless it says otherwise.
WAIT = 5.0
# Seconds a reply may take beyond the wait the command itself asked for (process start-up,
# library set-up).
MARGIN = 10.0


def node_missing(package: str):
    """Why the adapters for npm `package` cannot run here, or None."""
    if shutil.which("node") is None:
        return "node not installed (scripts/setup installs nodejs)"
    if not (NODE_DIR / "node_modules" / package / "package.json").exists():
        return (f"npm package {package} not installed in compat-tests/node "
                f"(scripts/setup runs npm ci there)")
    return None


def needs_node(package: str):
    """A module mark: skip the file when node or the npm package is missing."""
    reason = node_missing(package)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def rust_binary() -> Path:
    """The Rust adapter: $SB_COMPAT_ADAPTER, else target/debug/sb-compat-adapter (scripts/test
    builds it)."""
    return Path(os.environ.get("SB_COMPAT_ADAPTER",
                               ROOT / "target" / "debug" / "sb-compat-adapter"))


def needs_rust():
    """A module mark: skip the file when the Rust adapter is not built."""
    binary = rust_binary()
    return pytest.mark.skipif(
        not os.access(binary, os.X_OK),
        reason=f"no Rust adapter at {binary}: cargo build -p switchboard-compat-rust "
               f"(scripts/test does), or set SB_COMPAT_ADAPTER")


def wait_until(what, predicate, timeout=WAIT, step=0.05):
    """Polls `predicate` until it holds and returns its value; fails after `timeout` seconds.
    For conditions a test can only ask about (a queue's ready count)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(step)


class AdapterError(AssertionError):
    """A command the library refused or failed: `.error` is its message, `.code` its code."""

    def __init__(self, op, error, code, stderr):
        self.op = op
        self.error = error
        self.code = code
        tail = f"\nadapter stderr:\n{stderr}" if stderr else ""
        super().__init__(f"{op}: {error} (code {code}){tail}")


class Adapter:
    """One adapter process: `argv` speaks the line protocol on its stdin and stdout."""

    def __init__(self, name: str, argv, cwd=None, env=None):
        self.name = name
        self.proc = subprocess.Popen(
            [str(a) for a in argv], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.ids = itertools.count(1)
        self.replies = {}
        self.cond = threading.Condition()
        self.stderr = []
        self.eof = False  # stdout ended: no more replies will come
        threading.Thread(target=self._read_replies, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_replies(self):
        for raw in self.proc.stdout:
            try:
                reply = json.loads(raw)
            except ValueError:
                self.stderr.append(f"(stdout, not JSON) {raw.decode(errors='replace').rstrip()}")
                continue
            with self.cond:
                self.replies[reply.get("id")] = reply
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _read_stderr(self):
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())
            del self.stderr[:-200]

    def stderr_tail(self, n=30) -> str:
        return "\n".join(self.stderr[-n:])

    def send(self, op, **args) -> int:
        """Sends a command without waiting; `reply(id)` collects the answer."""
        cid = next(self.ids)
        line = json.dumps({"id": cid, "op": op, **args}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise AssertionError(f"{self.name}: adapter gone before {op} "
                                 f"(exit {self.proc.poll()}):\n{self.stderr_tail()}") from None
        return cid

    def reply(self, cid, op="command", timeout=WAIT + MARGIN, check=True) -> dict:
        """Waits for the reply to command `cid`; returns its result (check) or the whole reply."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while cid not in self.replies:
                left = deadline - time.monotonic()
                if self.eof:
                    self.proc.wait(timeout=WAIT)
                    raise AssertionError(f"{self.name}: exited {self.proc.returncode} during "
                                         f"{op}:\n{self.stderr_tail()}")
                if left <= 0:
                    raise AssertionError(f"{self.name}: no reply to {op} within {timeout:.0f} s"
                                         f":\n{self.stderr_tail()}")
                self.cond.wait(min(left, 0.2))
            reply = self.replies.pop(cid)
        if not check:
            return reply
        if not reply.get("ok"):
            raise AdapterError(op, reply.get("error"), reply.get("code"), self.stderr_tail())
        return reply["result"]

    def call(self, op, timeout=WAIT + MARGIN, check=True, **args):
        """Runs one command and returns its result; a failed command raises AdapterError (or, with
        check=False, the reply `{ok, error, code}` is returned as is)."""
        return self.reply(self.send(op, **args), op, timeout, check)

    def kill(self):
        """SIGKILL: the library's connections drop without a goodbye."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self):
        """End of stdin: the adapter closes its connections and exits; killed if it hangs."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.kill()


def node_adapter(script: str) -> Adapter:
    """compat-tests/node/<script>.js."""
    return Adapter(script, [shutil.which("node") or "node", NODE_DIR / f"{script}.js"],
                   cwd=NODE_DIR, env={"NODE_NO_WARNINGS": "1"})


def rust_adapter(library: str) -> Adapter:
    """The Rust adapter binary driving `library` (rskafka, rumqttc, lapin)."""
    return Adapter(library, [rust_binary(), library], env={"RUST_BACKTRACE": "1"})


class Adapters:
    """Factory fixture `adapters`: `adapters.node(script)` / `adapters.rust(library)` start an
    adapter process; all are closed after the test."""

    def __init__(self):
        self.made = []

    def node(self, script: str) -> Adapter:
        return self._keep(node_adapter(script))

    def rust(self, library: str) -> Adapter:
        return self._keep(rust_adapter(library))

    def _keep(self, adapter: Adapter) -> Adapter:
        self.made.append(adapter)
        return adapter

    def close_all(self):
        for n in self.made:
            try:
                n.close()
            except Exception:
                pass


# ----------------------------------------------------------------------------------------------
# MQTT


class MqttClient:
    """One MQTT client of an MQTT adapter (mqttjs.js, rumqttc): one process, one connection at a
    time."""

    def __init__(self, adapter: Adapter, broker, protocol=4, transport="tcp", client_id=None,
                 clean=True, session_expiry=None, will=None, **options):
        """`options`: further connect arguments of the adapter, passed as they are
        (topicAliasMaximum, autoAssignTopicAlias)."""
        self.adapter = adapter
        self.options = options
        self.broker = broker
        self.protocol = protocol
        self.transport = transport
        self.client_id = client_id
        self.clean = clean
        self.session_expiry = session_expiry
        self.will = will

    @property
    def url(self) -> str:
        if self.transport == "websockets":
            return f"ws://{self.broker.host}:{self.broker.ws_port}/mqtt"
        return f"mqtt://{self.broker.host}:{self.broker.port}"

    def connect(self):
        """Connects and returns the CONNACK: {sessionPresent, reasonCode, properties}."""
        args = {"url": self.url, "protocolVersion": self.protocol, "clean": self.clean,
                "timeoutMs": int(WAIT * 1000)}
        if self.client_id is not None:
            args["clientId"] = self.client_id
        if self.session_expiry is not None:
            args["sessionExpiry"] = self.session_expiry
        if self.will is not None:
            args["will"] = self.will
        args.update(self.options)
        connack = self.adapter.call("connect", **args)
        assert connack["reasonCode"] == 0, f"connection refused: {connack}"
        return connack

    def subscribe(self, topics: dict, properties=None):
        """Subscribes to {topic: qos} and returns the granted QoS of each, in order."""
        args = {"topics": topics}
        if properties:
            args["properties"] = properties
        return [g["qos"] for g in self.adapter.call("subscribe", **args)["granted"]]

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        """Publishes and returns once the broker acknowledged it (PUBACK / PUBCOMP)."""
        args = {"topic": topic, "payload": payload, "qos": qos, "retain": retain}
        if properties:
            args["properties"] = properties
        self.adapter.call("publish", **args)

    def expect(self, n, timeout=WAIT):
        """Waits until at least n messages arrived; returns all that arrived (dicts: topic,
        payload, qos, retain, properties)."""
        got = self.adapter.call("expect", count=n, timeoutMs=int(timeout * 1000),
                             timeout=timeout + MARGIN)
        assert got["complete"], (f"{n} messages expected within {timeout} s, "
                                 f"got {len(got['messages'])}: {got['messages']}")
        return got["messages"]

    def received(self):
        """The messages that arrived so far, without waiting."""
        return self.adapter.call("expect", count=0, timeoutMs=0)["messages"]

    def until(self, marker: str, timeout=WAIT):
        """Messages that arrived before the one whose payload is `marker` (which must come)."""
        deadline = time.monotonic() + timeout
        n = 1
        while True:
            msgs = self.expect(n, max(0.1, deadline - time.monotonic()))
            for i, m in enumerate(msgs):
                if m["payload"] == marker:
                    return msgs[:i]
            n = len(msgs) + 1

    def sent(self):
        """Every PUBLISH this client wrote, as written: [{topic, topicAlias}]."""
        return self.adapter.call("sent")["packets"]

    def end(self):
        """A normal DISCONNECT."""
        self.adapter.call("end")


# ----------------------------------------------------------------------------------------------
# Kafka


class KafkaClient:
    """A Kafka client of a Kafka adapter (kafkajs.js, rskafka): an admin, producers and named
    consumers over one process. Values, keys and header values are text."""

    def __init__(self, adapter: Adapter, bootstrap: str):
        self.adapter = adapter
        adapter.call("init", brokers=[bootstrap])

    def __getattr__(self, op):
        """Any other command of the adapter, as a method: `kafka.listTopics()`."""
        if op.startswith("_"):
            raise AttributeError(op)
        return lambda **args: self.adapter.call(op, **args)

    def expect(self, consumer, n, timeout=WAIT):
        """Waits until `consumer` received at least n messages; returns them all (dicts:
        topic, partition, offset, key, value, headers)."""
        got = self.adapter.call("expect", consumer=consumer, count=n,
                             timeoutMs=int(timeout * 1000), timeout=timeout + MARGIN)
        assert got["complete"], (f"{consumer}: {n} messages expected within {timeout} s, "
                                 f"got {len(got['messages'])}: {got['messages'][:20]}")
        return got["messages"]


# ----------------------------------------------------------------------------------------------
# AMQP 0-9-1


class AmqpClient:
    """One AMQP connection of an AMQP adapter (amqplib.js, lapin), with numbered channels.
    Bodies are text; deliveries are dicts (body, deliveryTag, redelivered, exchange,
    routingKey, properties)."""

    def __init__(self, adapter: Adapter, broker):
        self.adapter = adapter
        adapter.call("connect", url=broker.url)

    def __getattr__(self, op):
        """Any other command of the adapter, as a method: `amqp.assertQueue(queue=...)`."""
        if op.startswith("_"):
            raise AttributeError(op)
        return lambda **args: self.adapter.call(op, **args)

    def expect(self, consumer, n, timeout=WAIT):
        """Waits until `consumer` (a consumer tag) got at least n deliveries; returns them all."""
        got = self.adapter.call("expect", consumer=consumer, count=n,
                             timeoutMs=int(timeout * 1000), timeout=timeout + MARGIN)
        assert got["complete"], (f"{n} deliveries expected within {timeout} s, "
                                 f"got {len(got['messages'])}: {got['messages']}")
        return got["messages"]

    def until(self, consumer, marker: str, timeout=WAIT):
        """Deliveries to `consumer` before the one whose body is `marker` (which must come)."""
        deadline = time.monotonic() + timeout
        n = 1
        while True:
            msgs = self.expect(consumer, n, max(0.1, deadline - time.monotonic()))
            for i, m in enumerate(msgs):
                if m["body"] == marker:
                    return msgs[:i]
            n = len(msgs) + 1
