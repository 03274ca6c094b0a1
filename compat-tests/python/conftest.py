"""Fixtures: a real `switchboard serve` on free loopback ports with a fresh data directory.

The binary is taken from $SB_TEST_BIN, else target/debug/switchboard (built by scripts/test).
Ports are never assumed free: each server gets ports the OS just handed out.

The MQTT tests run against the broker chosen with `--mqtt-broker`: `switchboard` (the default)
or `mosquitto`, the reference broker (Debian's /usr/sbin/mosquitto, started by the fixture on
free ports). Tests marked `switchboard_only` (cross-protocol behaviour) are skipped under
mosquitto.

The AMQP tests run against the broker chosen with `--amqp-broker`: `switchboard` (the default)
or `rabbitmq`, the reference broker (Debian's rabbitmq-server: one private node per session, on
free ports). Tests marked `amqp_switchboard_only` are skipped under rabbitmq.

External endpoints: `--kafka HOST:PORT`, `--mqtt HOST:PORT` (with `--mqtt-ws HOST:PORT` for the
WebSocket cases) and `--amqp HOST:PORT` point the fixtures of that protocol at a broker that is
already running, of any vendor, instead of starting one (AMQP logs in as guest/guest). Against
an external endpoint, tests that start, kill, restart or configure the broker
(`broker_control`), need Switchboard itself (`switchboard_specific`), cross protocols
(`switchboard_only`, `amqp_switchboard_only`), or talk to 127.0.0.1 by hand (`loopback_kafka`)
are skipped with the reason. compat-tests/run drives all this and draws the matrix.
"""
import functools
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from prockit import free_ports, terminate

# The cases shared by the client test files live in modules pytest does not collect by itself:
# their asserts are rewritten as a test file's are, for the same failure messages.
pytest.register_assert_rewrite("cases_kafka", "cases_mqtt", "cases_amqp")

ROOT = Path(__file__).resolve().parents[2]


def binary() -> str:
    return os.environ.get("SB_TEST_BIN", str(ROOT / "target" / "debug" / "switchboard"))




def wait_for_port(port, is_alive, describe, timeout=30.0):
    """Waits until 127.0.0.1:port accepts a TCP connection."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not is_alive():
            raise RuntimeError(f"exited before listening on {port}: {describe()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s: {describe()}")


@functools.lru_cache(maxsize=None)
def binary_config_keys() -> frozenset:
    """Dotted keys of the binary's embedded configuration (`switchboard config`); empty when the
    binary cannot be run."""
    try:
        out = subprocess.run([binary(), "config"], capture_output=True, timeout=30, check=True).stdout
        tree = tomllib.loads(out.decode())
    except (OSError, subprocess.SubprocessError, ValueError):
        return frozenset()
    keys = set()

    def walk(prefix, node):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                keys.add(f"{prefix}{k}")

    walk("", tree)
    return frozenset(keys)


class Server:
    """One switchboard process; can be killed with SIGKILL and restarted on the same ports."""

    def __init__(self, data_dir: Path, extra_sets=(), mqtt=False, config_file=None, amqp=False):
        """mqtt: the test needs the MQTT listeners (their ports are then always passed, and the
        start waits for them); otherwise they are passed only when the binary has those keys,
        so that no server binds the default MQTT port. amqp: the same for the AMQP listener.
        config_file: given as `--config`."""
        self.data_dir = data_dir
        self.pick_ports()
        self.started_once = False
        self.mqtt = mqtt
        self.amqp = amqp
        self.config_file = config_file
        self.extra_sets = list(extra_sets)
        self.proc = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def pick_ports(self):
        """Five distinct ports the OS just handed out."""
        (self.kafka_port, self.admin_port, self.mqtt_port, self.ws_port,
         self.amqp_port) = free_ports(5)

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
        ]
        known = binary_config_keys()
        if self.mqtt or "mqtt.listen" in known:
            sets.append(f"mqtt.listen=127.0.0.1:{self.mqtt_port}")
        if self.mqtt or "mqtt.ws_listen" in known:
            sets.append(f"mqtt.ws_listen=127.0.0.1:{self.ws_port}")
        if self.amqp or "amqp.listen" in known:
            sets.append(f"amqp.listen=127.0.0.1:{self.amqp_port}")
        sets += self.extra_sets
        out = [binary(), "serve", "--data-dir", str(self.data_dir)]
        if self.config_file is not None:
            out += ["--config", str(self.config_file)]
        for s in sets:
            out += ["--set", s]
        return out

    def start(self, timeout=30.0):
        """Starts the server. A port picked as free can be taken by another process before the
        server binds it; the server then exits with 2 and says so, and the first start tries
        again on fresh ports (a restart keeps its ports: clients know them)."""
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except RuntimeError as e:
                taken = "already in use" in str(e) and self.proc is not None and self.proc.returncode == 2
                if self.started_once or not taken or attempt == 2:
                    raise
                self.pick_ports()
        raise AssertionError("unreachable")

    def _start_once(self, timeout):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/healthz", timeout=1) as r:
                    if r.status == 200:
                        if self.mqtt:
                            left = max(1.0, deadline - time.time())
                            for port in (self.mqtt_port, self.ws_port):
                                wait_for_port(port, self.is_alive, self.log_tail, left)
                        if self.amqp:
                            left = min(AMQP_LISTEN_TIMEOUT, max(1.0, deadline - time.time()))
                            wait_for_amqp(self.amqp_port, self.is_alive, self.log_tail, left)
                        self.started_once = True
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy: {self.log_tail()}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        terminate(self.proc, 30)

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture
def server(request, tmp_path):
    ext = external(request.config, "kafka")
    if ext is not None:
        yield ExternalKafka(*ext)
        return
    s = Server(tmp_path / "data").start()
    yield s
    s.stop()


@pytest.fixture
def server_factory(request, tmp_path):
    if external(request.config, "kafka") is not None:
        pytest.skip(EXTERNAL_REASON["broker_control"])
    made = []

    def make(**kw):
        s = Server(tmp_path / f"data{len(made)}", **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


# ----------------------------------------------------------------------------------------------
# MQTT: the broker under test.

MOSQUITTO = "/usr/sbin/mosquitto"


def pytest_addoption(parser):
    parser.addoption(
        "--mqtt-broker", choices=("switchboard", "mosquitto"), default="switchboard",
        help="broker the MQTT tests run against: switchboard (default) or Debian's mosquitto, "
             "the reference broker")
    parser.addoption(
        "--amqp-broker", choices=("switchboard", "rabbitmq"), default="switchboard",
        help="broker the AMQP tests run against: switchboard (default) or Debian's "
             "rabbitmq-server, the reference broker (one private node per session)")
    group = parser.getgroup("external", "already running endpoints (any vendor)")
    group.addoption("--kafka", metavar="HOST:PORT", default=None,
                    help="run the Kafka tests against this running broker instead of starting one")
    group.addoption("--mqtt", metavar="HOST:PORT", default=None,
                    help="run the MQTT tests against this running broker instead of starting one")
    group.addoption("--mqtt-ws", metavar="HOST:PORT", default=None,
                    help="MQTT over WebSocket endpoint of the --mqtt broker (WebSocket cases are "
                         "skipped without it)")
    group.addoption("--amqp", metavar="HOST:PORT", default=None,
                    help="run the AMQP tests against this running broker (user guest/guest, "
                         "vhost /) instead of starting one")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "switchboard_only: behaviour only Switchboard has (MQTT <-> Kafka); "
                   "skipped under --mqtt-broker=mosquitto")
    config.addinivalue_line(
        "markers", "amqp_switchboard_only: behaviour only Switchboard has (AMQP <-> MQTT / "
                   "Kafka); skipped under --amqp-broker=rabbitmq")
    config.addinivalue_line("markers", "mqtt_websocket: MQTT over WebSocket; skipped against an "
                                       "external --mqtt endpoint without --mqtt-ws")
    for name, reason in EXTERNAL_REASON.items():
        if name in ("switchboard_only", "amqp_switchboard_only"):
            continue  # registered above
        config.addinivalue_line("markers", f"{name}: skipped against external endpoints "
                                           f"({reason})")
    for flag in ("--kafka", "--mqtt", "--mqtt-ws", "--amqp"):
        value = config.getoption(flag)
        if value is not None:
            try:
                parse_hostport(value)
            except ValueError as e:
                raise pytest.UsageError(f"{flag}: {e}") from None


# ----------------------------------------------------------------------------------------------
# External endpoints (--kafka / --mqtt / --amqp): brokers already running, of any vendor.

EXTERNAL_REASON = {
    "broker_control": "starts, kills, restarts or configures the broker: not possible with an "
                      "external endpoint",
    "switchboard_specific": "tests Switchboard's own binary or admin endpoint, not a protocol "
                            "endpoint",
    "switchboard_only": "cross-protocol behaviour of one Switchboard (MQTT <-> Kafka): not run "
                        "against external endpoints",
    "amqp_switchboard_only": "cross-protocol behaviour of one Switchboard (AMQP <-> MQTT / "
                             "Kafka): not run against external endpoints",
    "loopback_kafka": "the test talks to 127.0.0.1 by hand; the external Kafka endpoint is on "
                      "another host",
}
# Fixtures through which a test reaches each protocol's broker.
PROTOCOL_FIXTURES = {
    "kafka": ("server", "server_factory"),
    "mqtt": ("mqtt_broker", "mqtt_auth_broker"),
    "amqp": ("amqp_broker",),
}


def parse_hostport(value):
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"want HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def external(config, protocol):
    """(host, port) of the external endpoint given for `protocol`, or None."""
    value = config.getoption(f"--{protocol}")
    return None if value is None else parse_hostport(value)


def any_external(config) -> bool:
    return any(external(config, p) is not None for p in PROTOCOL_FIXTURES)


def item_protocols(item):
    names = set(getattr(item, "fixturenames", ()))
    return {p for p, fixtures in PROTOCOL_FIXTURES.items() if names & set(fixtures)}


def skip_for_external(config, items):
    """Against external endpoints: skips what cannot run there, with the reason."""
    if not any_external(config):
        return
    kafka = external(config, "kafka")
    for item in items:
        on_external = {p for p in item_protocols(item) if external(config, p) is not None}
        reason = None
        if "switchboard_specific" in item.keywords:
            reason = EXTERNAL_REASON["switchboard_specific"]
        elif not on_external:
            continue
        elif "switchboard_only" in item.keywords:
            reason = EXTERNAL_REASON["switchboard_only"]
        elif "amqp_switchboard_only" in item.keywords:
            reason = EXTERNAL_REASON["amqp_switchboard_only"]
        elif "broker_control" in item.keywords:
            reason = EXTERNAL_REASON["broker_control"]
        elif "mqtt_auth_broker" in item.fixturenames and "mqtt" in on_external:
            reason = ("needs a broker configured with user alice / secret and anonymous access "
                      "off: not possible with an external endpoint")
        elif "loopback_kafka" in item.keywords and kafka and kafka[0] != "127.0.0.1":
            reason = EXTERNAL_REASON["loopback_kafka"]
        elif "mqtt" in on_external and config.getoption("--mqtt-ws") is None and (
                "mqtt_websocket" in item.keywords
                or getattr(item, "callspec", None) is not None
                and item.callspec.params.get("transport") == "websockets"):
            reason = "MQTT over WebSocket: no --mqtt-ws endpoint given"
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


class ExternalKafka:
    """A Kafka endpoint already running (`--kafka`), in place of `Server` for the Kafka tests."""

    kind = "external"

    def __init__(self, host, port):
        self.host = host
        self.kafka_port = port

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    def _cannot(self, *_args, **_kw):
        pytest.skip(EXTERNAL_REASON["broker_control"])

    start = stop = kill9 = restart = _cannot

    def is_alive(self) -> bool:
        return True

    def log_tail(self, n=4000) -> str:
        return "(external endpoint: no log)"


class ExternalMqtt:
    """An MQTT endpoint already running (`--mqtt`, `--mqtt-ws`), in place of the brokers the
    fixtures start. `.bootstrap` is the `--kafka` endpoint when one was given."""

    kind = "external"
    # Unknown broker: allow as much slack past 1.5 x keep-alive as mosquitto needs.
    keepalive_slack = 5.0

    def __init__(self, host, port, ws=None, kafka=None):
        self.host = host
        self.port = port
        self.ws_port = ws[1] if ws else None
        self.bootstrap = f"{kafka[0]}:{kafka[1]}" if kafka else None

    def _cannot(self, *_args, **_kw):
        pytest.skip(EXTERNAL_REASON["broker_control"])

    start = stop = kill9 = restart = _cannot

    def close(self):
        pass

    def is_alive(self) -> bool:
        return True

    def log_tail(self, n=4000) -> str:
        return "(external endpoint: no log)"


class ExternalAmqp(ExternalMqtt):
    """An AMQP 0-9-1 endpoint already running (`--amqp`); logs in as guest/guest."""

    def __init__(self, host, port, kafka=None):
        super().__init__(host, port, kafka=kafka)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"


def pytest_collection_modifyitems(config, items):
    deselect_what_clients_cannot(config, items)
    skip_for_external(config, items)
    if config.getoption("--amqp-broker") == "rabbitmq":
        skip_amqp = pytest.mark.skip(reason="switchboard-only (cross-protocol) behaviour; "
                                            "the suite runs with --amqp-broker=rabbitmq")
        for item in items:
            if "amqp_switchboard_only" in item.keywords:
                item.add_marker(skip_amqp)
    if config.getoption("--mqtt-broker") != "mosquitto":
        return
    skip = pytest.mark.skip(reason="switchboard-only (cross-protocol) behaviour; "
                                   "the suite runs with --mqtt-broker=mosquitto")
    for item in items:
        if "switchboard_only" in item.keywords:
            item.add_marker(skip)


class Mosquitto:
    """The reference broker on free loopback ports: MQTT over TCP and over WebSocket, with
    persistence in its own directory. `restart()` keeps ports and data; mosquitto writes its
    persistence file on a clean shutdown (and only every autosave_interval otherwise), so a
    kill -9 loses sessions: `kill9()` exists for symmetry, not for durability tests."""

    kind = "mosquitto"
    host = "127.0.0.1"
    # Largest packet accepted (max_packet_size); advertised in the MQTT 5 CONNACK.
    max_packet_size = 256 * 1024
    # Seconds past 1.5 x keep-alive before a silent client is cut off: mosquitto 2.0.11 checks
    # keep-alives only every 5 s or so.
    keepalive_slack = 5.0

    def __init__(self, workdir: Path, users=None):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "persist").mkdir(exist_ok=True)
        self.port, self.ws_port = free_ports(2)
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.proc = None
        lines = [
            "per_listener_settings false",
            "persistence true",
            f"persistence_location {self.dir / 'persist'}/",
            f"max_packet_size {self.max_packet_size}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # stay root: the temp directories belong to root
        if users:
            pw = self.dir / "passwd"
            for n, (name, password) in enumerate(users.items()):
                flags = ["-c"] if n == 0 else []
                subprocess.run(["mosquitto_passwd", *flags, "-b", str(pw), name, password],
                               check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        lines += [
            f"listener {self.port} 127.0.0.1",
            f"listener {self.ws_port} 127.0.0.1",
            "protocol websockets",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)],
                                     stdout=log, stderr=subprocess.STDOUT)
        for port in (self.port, self.ws_port):
            wait_for_port(port, self.is_alive, self.log_tail, timeout)
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        terminate(self.proc, 30)

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        """End of test: nothing to keep, so no 100 ms clean shutdown."""
        if self.proc and self.proc.poll() is None:
            self.kill9()

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class SwitchboardMqtt:
    """A switchboard server seen as an MQTT broker; `.server` is the Server (for Kafka)."""

    kind = "switchboard"
    host = "127.0.0.1"
    keepalive_slack = 1.0

    def __init__(self, server: Server):
        self.server = server

    @property
    def port(self):
        return self.server.mqtt_port

    @property
    def ws_port(self):
        return self.server.ws_port

    @property
    def bootstrap(self):
        return self.server.bootstrap

    def start(self):
        self.server.start()
        return self

    def kill9(self):
        self.server.kill9()

    def stop(self):
        self.server.stop()

    def restart(self):
        self.server.stop()
        self.server.start()
        return self

    def close(self):
        self.server.stop()

    def is_alive(self) -> bool:
        return self.server.is_alive()

    def log_tail(self, n=4000) -> str:
        return self.server.log_tail(n)


def make_mqtt_broker(config, workdir: Path, users=None):
    """Starts the broker chosen with --mqtt-broker in workdir; `users` ({name: password}) turns
    anonymous access off."""
    kind = config.getoption("--mqtt-broker")
    if kind == "mosquitto":
        if not os.path.exists(MOSQUITTO) or (users and shutil.which("mosquitto_passwd") is None):
            pytest.skip("mosquitto not installed (scripts/setup installs it)")
        return Mosquitto(workdir, users=users).start()
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = None
    if users:
        config_file = workdir / "switchboard.toml"
        body = ["[mqtt]", "allow_anonymous = false", "", "[users]"]
        body += [f'{name} = "{password}"' for name, password in users.items()]
        config_file.write_text("\n".join(body) + "\n")
    return SwitchboardMqtt(Server(workdir / "data", mqtt=True, config_file=config_file)).start()


@pytest.fixture
def mqtt_broker(request, tmp_path):
    ext = external(request.config, "mqtt")
    if ext is not None:
        ws = request.config.getoption("--mqtt-ws")
        yield ExternalMqtt(*ext, ws=parse_hostport(ws) if ws else None,
                           kafka=external(request.config, "kafka"))
        return
    b = make_mqtt_broker(request.config, tmp_path / "mqtt")
    yield b
    b.close()


@pytest.fixture
def mqtt_auth_broker(request, tmp_path):
    """A broker that admits only alice / secret."""
    if external(request.config, "mqtt") is not None:
        pytest.skip("needs a broker configured with user alice / secret and anonymous access "
                    "off: not possible with an external endpoint")
    b = make_mqtt_broker(request.config, tmp_path / "mqtt-auth", users={"alice": "secret"})
    yield b
    b.close()


@pytest.fixture
def peers():
    """peers(broker, **kw) -> a connected mqttkit.Peer; all closed after the test."""
    from mqttkit import Peers

    made = Peers()
    yield made
    made.close_all()


# ----------------------------------------------------------------------------------------------
# AMQP 0-9-1: the broker under test.
#
# `--amqp-broker` picks `switchboard` (the default: a fresh `switchboard serve` per test, with
# its AMQP, MQTT and Kafka listeners on free ports) or `rabbitmq`, the reference broker: one
# private node of Debian's rabbitmq-server per session (it takes seconds to start), with its
# own epmd, on free ports. Tests share that node and keep apart by unique queue and exchange
# names. Tests marked `amqp_switchboard_only` (cross-protocol behaviour) are skipped under
# rabbitmq.

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
AMQP_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
# Seconds a switchboard whose admin endpoint is healthy gets to open its AMQP port.
AMQP_LISTEN_TIMEOUT = 10.0


def wait_for_amqp(port, is_alive, describe, timeout):
    """Waits until 127.0.0.1:port answers the AMQP 0-9-1 protocol header with a method frame on
    channel 0 (connection.start): a listening socket alone does not mean the broker is up."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not is_alive():
            raise RuntimeError(f"exited before serving AMQP on {port}: {describe()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(AMQP_PROTOCOL_HEADER)
                head = b""
                while len(head) < 7:
                    chunk = s.recv(7 - len(head))
                    if not chunk:
                        break
                    head += chunk
                if len(head) == 7 and head[0] == 1 and head[1:3] == b"\x00\x00":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no AMQP connection.start on {port} after {timeout} s: {describe()}")


class RabbitMQ:
    """A private RabbitMQ node (Debian's rabbitmq-server, run in the foreground as the current
    user) on free loopback ports, with its own epmd, cookie, data and logs in `workdir`.
    `restart()` keeps ports, node name and data (so durable queues and persistent messages
    come back); `kill9()` kills the node's process group."""

    kind = "rabbitmq"
    host = "127.0.0.1"
    _made = itertools.count()

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.dist_port, self.epmd_port = free_ports(3)
        self.node = f"rabbit-test-{os.getpid()}-{next(self._made)}@localhost"
        self.log_path = self.dir / "rabbitmq-server.log"
        self.proc = None
        self.epmd = None
        self.started_in = None  # seconds the last start took
        conf = self.dir / "rabbitmq.conf"
        conf.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                        "log.file.level = info\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            # The Erlang cookie lives in $HOME; rabbitmqctl finds it there too.
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    def _start_epmd(self, timeout):
        """epmd as a child of ours (`-port` keeps it in the foreground), so it ends with the
        session; the node finds it through ERL_EPMD_PORT instead of daemonising its own."""
        if self.epmd is not None and self.epmd.poll() is None:
            return
        with open(self.dir / "epmd.log", "ab") as log:
            self.epmd = subprocess.Popen([shutil.which("epmd") or "epmd", "-port",
                                          str(self.epmd_port)], env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for_port(self.epmd_port, lambda: self.epmd.poll() is None,
                      lambda: f"epmd exited with {self.epmd.returncode}", timeout)

    def start(self, timeout=60.0):
        began = time.monotonic()
        self._start_epmd(timeout)
        # A session of its own: kill9() ends the wrapper shell and the Erlang VM together.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env, cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_amqp(self.port, self.is_alive, self.log_tail, timeout)
        except RuntimeError:
            self.kill9()
            raise
        self.started_in = time.monotonic() - began
        return self

    def kill9(self):
        if self.proc is None:
            return
        # The Erlang VM first (its OS pid is in the pid file), so that the wrapper shell reaps
        # it and leaves; then whatever is left of the node's process group.
        try:
            beam = int((self.dir / "rabbitmq.pid").read_text().strip())
            if os.getpgid(beam) == self.proc.pid:
                os.kill(beam, signal.SIGKILL)
                self.proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def stop(self):
        """Clean shutdown: the wrapper script turns SIGTERM into a node stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        elif self.proc is not None:
            self.kill9()  # the wrapper is gone; make sure the VM is too

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        """End of session: nothing to keep."""
        self.kill9()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            try:
                self.epmd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait()

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=4000) -> str:
        parts = []
        for path in (self.log_path, self.dir / "log" / f"{self.node}.log"):
            try:
                parts.append(path.read_text(errors="replace")[-n:])
            except OSError:
                pass
        return "\n".join(parts)


class SwitchboardAmqp:
    """A switchboard server seen as an AMQP broker; `.server` is the Server (Kafka, MQTT)."""

    kind = "switchboard"
    host = "127.0.0.1"

    def __init__(self, server: Server):
        self.server = server

    @property
    def port(self):
        return self.server.amqp_port

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    @property
    def bootstrap(self):
        return self.server.bootstrap

    def start(self):
        self.server.start()
        return self

    def kill9(self):
        self.server.kill9()

    def stop(self):
        self.server.stop()

    def restart(self):
        self.server.stop()
        self.server.start()
        return self

    def close(self):
        self.server.stop()

    def is_alive(self) -> bool:
        return self.server.is_alive()

    def log_tail(self, n=4000) -> str:
        return self.server.log_tail(n)


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory):
    """The session's RabbitMQ node, started on first use."""
    if not os.path.exists(RABBITMQ_SERVER) or shutil.which("epmd") is None:
        pytest.skip("rabbitmq-server not installed (scripts/setup installs it)")
    failures = []
    for _ in range(3):
        # Fresh ports each time: the node binds them seconds after free_port() picked them, and
        # another process may have taken one meanwhile (the node then exits).
        node = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
        try:
            node.start()
            break
        except RuntimeError as e:
            node.close()
            failures.append(str(e))
    else:
        raise RuntimeError("RabbitMQ did not start:\n" + "\n---\n".join(failures))
    yield node
    node.close()


# Set when a healthy switchboard never opened its AMQP port: later tests fail at once instead
# of waiting again (until the AMQP listener is wired into `serve`, every test would wait).
_amqp_listener_missing = []


@pytest.fixture
def amqp_broker(request, tmp_path):
    """The broker chosen with --amqp-broker: `.host`, `.port`, `.kind`, `.url`, `restart()`,
    `kill9()` (then `restart()`)."""
    ext = external(request.config, "amqp")
    if ext is not None:
        yield ExternalAmqp(*ext, kafka=external(request.config, "kafka"))
        return
    if request.config.getoption("--amqp-broker") == "rabbitmq":
        node = request.getfixturevalue("rabbitmq_node")
        if not node.is_alive():  # an earlier restart or kill -9 test left it down
            node.start()
        yield node
        return
    if _amqp_listener_missing:
        pytest.fail(_amqp_listener_missing[0], pytrace=False)
    server = Server(tmp_path / "amqp-data", mqtt=True, amqp=True)
    try:
        server.start()
    except RuntimeError as e:
        if server.is_alive():
            _amqp_listener_missing.append(f"switchboard serves no AMQP on --set amqp.listen "
                                          f"(seen in an earlier test): {e}")
        server.stop()
        raise
    b = SwitchboardAmqp(server)
    yield b
    b.close()


@pytest.fixture
def conns():
    """conns(broker, **connection params) -> an open pika BlockingConnection; all closed after
    the test."""
    from amqpkit import Connections

    made = Connections()
    yield made
    made.close_all()


# ----------------------------------------------------------------------------------------------
# Client adapters (adapterkit.py): one small program per client library, Node.js scripts in
# compat-tests/node and the Rust binary of compat-tests/rust, each run by a test file that takes
# the cases of cases_<protocol>.py.


@pytest.fixture
def adapters():
    """adapters.node(script) / adapters.rust(library) -> an adapterkit.Adapter process; all are
    closed after the test."""
    from adapterkit import Adapters

    made = Adapters()
    yield made
    made.close_all()


def deselect_what_clients_cannot(config, items):
    """A client's test file may list in a module-level CANNOT what its library cannot do:
    {case name: reason} or {"param=value": reason} (every case run with that parameter value,
    e.g. "transport=websockets"). Those tests are not run at all (matrix.py's NA says why in
    the matrix); a CANNOT entry that names no case of its file is an error, so a renamed case
    cannot slip back in unnoticed."""
    keep, dropped, checked = [], [], set()
    for item in items:
        module = getattr(item, "module", None)
        cannot = getattr(module, "CANNOT", None) or {}
        if cannot and module not in checked:
            checked.add(module)
            unknown = [k for k in cannot if "=" not in k and not hasattr(module, k)]
            if unknown:
                raise pytest.UsageError(f"{module.__name__}.CANNOT names no case: {unknown}")
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = getattr(item, "originalname", item.name)
        if name in cannot or any(f"{k}={v}" in cannot for k, v in params.items()):
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
