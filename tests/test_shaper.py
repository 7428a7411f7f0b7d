"""The shaping forwarder as a process on real sockets (issue 21): bytes cross unchanged both ways, a link adds its
latency and holds its rate (generous bounds: the figures are in BENCHMARKS.md, "Network emulation"), a close
crosses, it ends with its stdin or its parent, and it relays bytes only (no ZeroMQ, no CURVE, no keys in it)."""

import ast
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scenarios.network import Link, Network
from simulation.links import Shaper, check_liveness

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def upstream():
    """A TCP server that answers every byte it receives with the same byte + 1 (so a relay that changed nothing
    is told from an echo), and counts what it got."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    got = {"bytes": 0, "closed": threading.Event()}

    def serve():
        conn, _ = server.accept()
        while True:
            data = conn.recv(65536)
            if not data:
                got["closed"].set()
                conn.close()
                return
            got["bytes"] += len(data)
            conn.sendall(bytes((b + 1) % 256 for b in data))
    threading.Thread(target=serve, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}", got
    server.close()


def start(endpoint, **link):
    shaper = Shaper(Network({"user-evaluator": Link("user-evaluator", **link)}), {"evaluator": endpoint})
    shaper.start(30)
    host, port = shaper.peer_endpoints("user")["evaluator"][len("tcp://"):].split(":")
    client = socket.create_connection((host, int(port)))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return shaper, client


def receive(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the link closed early"
        data += chunk
    return data


def test_bytes_cross_unchanged_with_the_links_latency_each_way(upstream):
    endpoint, got = upstream
    shaper, client = start(endpoint, latency_ms=60.0)
    try:
        payload = bytes(range(256)) * 40
        client.sendall(b"x")
        receive(client, 1)  # the connection is made
        t0 = time.monotonic()
        client.sendall(payload)
        answer = receive(client, len(payload))
        rtt = time.monotonic() - t0
        assert answer == bytes((b + 1) % 256 for b in payload)
        assert 0.115 <= rtt < 0.6, rtt  # 2 x 60 ms, and generous above for a loaded machine
        client.close()
        assert got["closed"].wait(5), "the close did not cross"
    finally:
        shaper.stop()
    assert shaper.proc.returncode == 0  # ended by its stdin closing


def test_the_rate_holds_each_way(upstream):
    endpoint, _ = upstream
    shaper, client = start(endpoint, up_mbit=8.0, down_mbit=16.0)
    try:
        payload = os.urandom(1_000_000)
        t0 = time.monotonic()
        threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
        receive(client, len(payload))
        seconds = time.monotonic() - t0
        assert 0.9 <= seconds < 3.0, seconds  # 1 MB at 8 Mbit/s up: 1.0 s (the 16 Mbit/s way back overlaps it)
    finally:
        client.close()
        shaper.stop()


def test_a_forwarder_whose_runner_dies_ends_too(upstream, tmp_path):
    endpoint, _ = upstream
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from scenarios.network import Link, Network\nfrom simulation.links import Shaper\n"
            "s = Shaper(Network({'user-evaluator': Link('user-evaluator', 5.0)}), {'evaluator': %r}); s.start(30)\n"
            "print(s.pid, flush=True); time.sleep(60)\n") % (str(ROOT), endpoint)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)  # no clean-up at all: the kernel tells the forwarder (PR_SET_PDEATHSIG)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        assert not Path(f"/proc/{pid}").exists(), "the forwarder outlived its runner"


def test_the_forwarder_relays_bytes_only():
    """It cannot terminate CURVE or read a message: it imports nothing of ZeroMQ or of the protocol's keys and
    codec, and is given no keys (links.Shaper passes it the link specifications only)."""
    tree = ast.parse((ROOT / "simulation" / "shaper.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "json", "os", "random", "socket", "sys", "threading", "time", "collections",
                        "protocol.run_dir"}, imported
    spec = Shaper(Network({"user-evaluator": Link("user-evaluator", 5.0)}), {"evaluator": "ipc:///x"}).specs()
    assert spec == [{"name": "user-evaluator", "upstream": "ipc:///x", "seed": None,
                     "up": {"latency_s": 0.005, "jitter_s": 0.0, "rate_bps": 0},
                     "down": {"latency_s": 0.005, "jitter_s": 0.0, "rate_bps": 0}}]


def test_a_link_too_slow_for_the_liveness_window_is_refused_before_anything_starts():
    check_liveness(Network({"user-bank": Link("user-bank", up_mbit=5.0)}), 4.0)  # 1.7 s per 1 MiB frame: fine
    with pytest.raises(ValueError, match="user-bank.up_mbit 2 Mbit/s takes 4.2 s per 1 MiB frame"):
        check_liveness(Network({"user-bank": Link("user-bank", up_mbit=2.0)}), 4.0)
    check_liveness(Network({"user-bank": Link("user-bank", up_mbit=2.0)}), 10.0)
