"""Process helpers shared by the suite's server runners (conftest.py, weedkit.py) and the
benchmark scripts: free loopback ports, and stopping a child process cleanly."""
import signal
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list:
    """n distinct ports the OS just handed out (two free_port() calls can return the same one:
    the first socket is closed before the second binds)."""
    ports = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def terminate(proc, grace: float) -> bool:
    """SIGTERM, then SIGKILL if `proc` has not exited within `grace` seconds. True when it
    stopped on SIGTERM (or had already exited)."""
    if proc is None or proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
