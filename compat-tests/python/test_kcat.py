"""Debian's kcat (librdkafka 2.0.2): an old client must work too."""
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (apt-get install kcat)")


def kcat(*args, stdin=None, timeout=60):
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=timeout, check=True)


@pytest.mark.loopback_kafka  # expects the broker to advertise 127.0.0.1:<port>
def test_kcat_produces_consumes_and_lists_metadata(server):
    lines = [f"line-{i}" for i in range(50)]
    kcat("-b", server.bootstrap, "-P", "-t", "kc", stdin="\n".join(lines).encode())
    out = kcat("-b", server.bootstrap, "-C", "-t", "kc", "-o", "beginning", "-e", "-q")
    assert out.stdout.decode().split() == lines
    meta = kcat("-b", server.bootstrap, "-L").stdout.decode()
    assert 'topic "kc" with 1 partitions' in meta
    assert f"127.0.0.1:{server.kafka_port}" in meta


def test_kcat_consumer_group_mode(server):
    kcat("-b", server.bootstrap, "-P", "-t", "kcg", stdin=b"a\nb\nc")
    out = subprocess.run(
        ["kcat", "-b", server.bootstrap, "-G", "kcat-group", "-o", "beginning", "-c", "3", "-q", "kcg"],
        capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert sorted(out.stdout.decode().split()) == ["a", "b", "c"]
