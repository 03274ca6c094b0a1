"""Debian's mosquitto_pub / mosquitto_sub (libmosquitto 2.0.11) against the broker chosen with
--mqtt-broker: every protocol version and QoS, retained messages, MQTT 5 properties, line mode,
credentials, and interplay with paho clients."""
import shutil
import subprocess
import threading
import time

import pytest

from mqttkit import V5, WAIT, publish_props, unique

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None,
    reason="mosquitto-clients not installed (scripts/setup installs it)")

VERSIONS = ["mqttv31", "mqttv311", "mqttv5"]
# Fields printed for each message by mosquitto_sub -F.
FORMAT = "MSG|%t|%q|%r|%p"


def cli_help():
    if shutil.which("mosquitto_sub") is None:
        return ""
    out = subprocess.run(["mosquitto_sub", "--help"], capture_output=True, timeout=10)
    return (out.stdout + out.stderr).decode(errors="replace")


def where(broker):
    return ["-h", broker.host, "-p", str(broker.port)]


def pub(broker, *args, target=None, check=True):
    """Runs mosquitto_pub to completion; `target` replaces the -h/-p arguments."""
    out = subprocess.run(["mosquitto_pub", *(target or where(broker)), *args],
                         capture_output=True, timeout=WAIT * 2)
    if check:
        assert out.returncode == 0, f"mosquitto_pub failed: {out.stderr.decode()}"
    return out


class Sub:
    """A mosquitto_sub process; `ready()` waits until its SUBACK arrived (it runs with -d, whose
    debug lines say so), `result()` waits for it to exit (-C count) and returns the MSG lines."""

    def __init__(self, broker, *args, count=1, fmt=FORMAT, target=None):
        # stdbuf: line-buffered output through the pipe, so the SUBACK line shows up at once.
        cmd = ["stdbuf", "-oL", "mosquitto_sub", *(target or where(broker)), "-d",
               "-C", str(count), "-W", str(int(WAIT * 2)), "-F", fmt, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def ready(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any("received SUBACK" in line for line in self.lines):
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, f"mosquitto_sub never subscribed: {self.lines}"
                self.cond.wait(min(left, 0.2))
        return self

    def result(self, timeout=WAIT * 2):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"mosquitto_sub did not finish: {self.lines}") from None
        self.reader.join(WAIT)
        assert self.proc.returncode == 0, f"mosquitto_sub exited {self.proc.returncode}: {self.lines}"
        return [line.split("|", 1)[1] for line in self.lines if line.startswith("MSG|")]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def subs():
    made = []

    def make(*args, **kw):
        s = Sub(*args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
def test_cli_publish_reaches_cli_subscriber(mqtt_broker, subs, version, qos):
    topic = unique("cli") + "/t"
    sub = subs(mqtt_broker, "-V", version, "-q", str(qos), "-t", topic).ready()
    pub(mqtt_broker, "-V", version, "-q", str(qos), "-t", topic, "-m", "hello from the cli")
    assert sub.result() == [f"{topic}|{qos}|0|hello from the cli"]


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_retained_message_reaches_a_later_subscriber(mqtt_broker, subs, version):
    topic = unique("cli") + "/r"
    pub(mqtt_broker, "-V", version, "-q", "1", "-r", "-t", topic, "-m", "kept")
    sub = subs(mqtt_broker, "-V", version, "-q", "1", "-t", topic)
    assert sub.result() == [f"{topic}|1|1|kept"]


def test_cli_null_retained_message_clears_it(mqtt_broker, subs):
    topic = unique("cli") + "/r"
    pub(mqtt_broker, "-q", "1", "-r", "-t", topic, "-m", "kept")
    pub(mqtt_broker, "-q", "1", "-r", "-t", topic, "-n")
    # --retained-only prints retained messages and exits at the first live one.
    sub = subs(mqtt_broker, "-q", "1", "-t", topic, "--retained-only").ready()
    pub(mqtt_broker, "-q", "1", "-t", topic, "-m", "live")
    assert sub.result() == []


def test_cli_line_mode_publishes_every_line_in_order(mqtt_broker, peers):
    topic = unique("cli") + "/lines"
    watcher = peers(mqtt_broker)
    watcher.subscribe(topic, 1)
    lines = [f"line-{i}" for i in range(200)]
    out = subprocess.run(["mosquitto_pub", "-h", mqtt_broker.host, "-p", str(mqtt_broker.port),
                          "-q", "1", "-t", topic, "-l"],
                         input="\n".join(lines).encode() + b"\n", capture_output=True, timeout=WAIT * 2)
    assert out.returncode == 0, out.stderr.decode()
    assert [m.payload.decode() for m in watcher.expect(len(lines))] == lines


def test_cli_v5_properties_reach_a_paho_subscriber(mqtt_broker, peers):
    topic = unique("cli") + "/p"
    watcher = peers(mqtt_broker, protocol=V5)
    watcher.subscribe(topic, 1)
    pub(mqtt_broker, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", "{}",
        "-D", "publish", "user-property", "origin", "cli",
        "-D", "publish", "content-type", "application/json")
    m = watcher.expect(1)[0]
    assert m.payload == b"{}"
    assert m.prop("UserProperty") == [("origin", "cli")]
    assert m.prop("ContentType") == "application/json"


def test_paho_v5_properties_reach_the_cli_subscriber(mqtt_broker, peers, subs):
    topic = unique("cli") + "/p"
    sub = subs(mqtt_broker, "-V", "mqttv5", "-q", "1", "-t", topic, fmt="MSG|%p|%P|%C").ready()
    props = publish_props(UserProperty=[("origin", "paho")], ContentType="text/plain")
    peers(mqtt_broker, protocol=V5).publish(topic, b"from paho", qos=1, properties=props)
    assert sub.result() == ["from paho|origin:paho|text/plain"]


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_with_the_right_password_publishes(mqtt_auth_broker, peers, version):
    topic = unique("cli") + "/auth"
    watcher = peers(mqtt_auth_broker, username="alice", password="secret")
    watcher.subscribe(topic, 1)
    pub(mqtt_auth_broker, "-V", version, "-u", "alice", "-P", "secret", "-q", "1", "-t", topic, "-m", "ok")
    assert watcher.expect(1)[0].payload == b"ok"


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_with_a_wrong_password_is_refused(mqtt_auth_broker, version):
    out = pub(mqtt_auth_broker, "-V", version, "-u", "alice", "-P", "wrong", "-t", "x", "-m", "no",
              check=False)
    assert out.returncode != 0, "mosquitto_pub must fail when the broker refuses it"


@pytest.mark.skipif("websocket" not in cli_help().lower(),
                    reason="this mosquitto_sub/mosquitto_pub build has no WebSocket transport "
                           "(Debian's 2.0.11 --help lists none); WebSocket is covered by paho")
@pytest.mark.mqtt_websocket
def test_cli_over_websocket(mqtt_broker, subs):
    # Only reached with a client build that supports WebSocket; the ws:// URL form is assumed.
    topic = unique("cli") + "/ws"
    url = f"ws://{mqtt_broker.host}:{mqtt_broker.ws_port}/{topic}"
    sub = subs(mqtt_broker, "-q", "1", target=["-L", url]).ready()
    pub(mqtt_broker, "-q", "1", "-m", "over ws", target=["-L", url])
    assert sub.result() == [f"{topic}|1|0|over ws"]
