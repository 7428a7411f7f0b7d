"""The shaping forwarder: one loopback TCP listener per link that relays bytes to a role, with latency, jitter and a
token-bucket bandwidth in each direction. It never terminates CURVE: it sees only the encrypted ZMTP stream.

Run as its own process (`python -m simulation.shaper`, started by simulation.processes.Shaper): the link
specifications come as one JSON line on stdin, it answers `READY {link: port}` on stdout, and it ends when stdin
closes or the process that started it dies. Per direction a reader takes what the sender wrote (in chunks that
cross in about 2 ms at the link's rate), gives each chunk its departure time from a token bucket (rate, burst), and
a writer delivers it one way's latency (± jitter, never reordering) later. At most a bandwidth-delay product plus a
burst is held: then the reader stops and TCP's own flow control holds the sender back, as a bottleneck would.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
from collections import deque

RCVBUF = 128 * 1024  # a small receive window towards each sender: its data waits in its own socket, not here
MIN_BURST = 16 * 1024


def _endpoint_socket(endpoint: str) -> socket.socket:
    """A connected socket to a ZeroMQ tcp:// or ipc:// endpoint."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://"):].rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint[len("ipc://"):])
        return sock
    raise ValueError(f"cannot forward to {endpoint!r}: tcp:// or ipc:// only")


class Direction:
    """One way of a link: latency and jitter (seconds), rate (bits/s, 0 = unlimited), as a token bucket."""

    def __init__(self, latency_s: float = 0.0, jitter_s: float = 0.0, rate_bps: int = 0, seed: int | None = None):
        self.latency, self.jitter, self.rate = float(latency_s), float(jitter_s), int(rate_bps)
        self.bytes_per_s = self.rate / 8 if self.rate else 0.0
        self.burst = max(MIN_BURST, int(self.bytes_per_s * 0.005)) if self.rate else 0
        self.chunk = int(min(65536, max(1460, self.bytes_per_s * 0.002))) if self.rate else 65536
        self.limit = int(self.bytes_per_s * (self.latency + self.jitter + 0.01)) + self.burst + 65536 \
            if self.rate else 4 << 20
        self.random = random.Random(seed)


class Pipe:
    """src -> dst through one Direction: a reader thread and a writer thread around a queue of timed chunks."""

    def __init__(self, src: socket.socket, dst: socket.socket, how: Direction, done):
        self.src, self.dst, self.how, self.done = src, dst, how, done
        self.queue: deque = deque()
        self.held = 0
        self.cond = threading.Condition()
        self.tokens = float(how.burst)
        self.tokens_at = time.monotonic()
        self.departs = 0.0  # when the last chunk left the bucket
        self.delivers = 0.0  # when the last chunk is due: later chunks never arrive before it
        self.bytes = 0
        for target in (self._read, self._write):
            threading.Thread(target=target, daemon=True).start()

    def _timing(self, size: int, now: float) -> float:
        how = self.how
        start = max(now, self.departs)
        if how.rate:
            self.tokens = min(how.burst, self.tokens + (start - self.tokens_at) * how.bytes_per_s)
            self.tokens_at = start
            if self.tokens >= size:
                self.tokens -= size
            else:
                start += (size - self.tokens) / how.bytes_per_s
                self.tokens, self.tokens_at = 0.0, start
        self.departs = start
        delay = how.latency + (how.random.uniform(-how.jitter, how.jitter) if how.jitter else 0.0)
        self.delivers = max(self.delivers, start + max(0.0, delay))
        return self.delivers

    def _read(self) -> None:
        while True:
            with self.cond:
                while self.held >= self.how.limit:
                    self.cond.wait()
            try:
                data = self.src.recv(self.how.chunk)
            except OSError:
                data = b""
            with self.cond:
                due = self._timing(len(data), time.monotonic()) if data else max(self.delivers, time.monotonic()
                                                                                    + self.how.latency)
                self.queue.append((due, data))
                self.held += len(data)
                self.cond.notify_all()
            if not data:
                return

    def _write(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                self.queue.popleft()
            if not data:  # the sender closed: so does this side, once what it sent has arrived
                try:
                    self.dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self.done(self)
                return
            try:
                self.dst.sendall(data)
                self.bytes += len(data)
            except OSError:
                self.done(self, failed=True)
                return
            with self.cond:
                self.held -= len(data)
                self.cond.notify_all()


class Connection:
    """One accepted connection and its upstream: two pipes; both sockets closed when both ways ended (or one
    failed)."""

    def __init__(self, client: socket.socket, upstream: socket.socket, up: Direction, down: Direction):
        self.sockets, self.ended, self.lock = (client, upstream), 0, threading.Lock()
        self.pipes = (Pipe(client, upstream, up, self._ended), Pipe(upstream, client, down, self._ended))

    def _ended(self, _pipe, failed: bool = False) -> None:
        with self.lock:
            self.ended += 1
            close = failed or self.ended == 2
        if close:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class Link:
    """A listener on 127.0.0.1 for one link; every connection it accepts is forwarded to `upstream`."""

    def __init__(self, name: str, upstream: str, up: dict, down: dict, seed: int | None = None):
        self.name, self.upstream, self.up, self.down, self.seed = name, upstream, up, down, seed
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # inherited by accepted sockets
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        count = 0
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                upstream = _endpoint_socket(self.upstream)
            except OSError:
                client.close()  # the role is not there (yet, or any more): the connecting side retries
                continue
            count += 1
            seed = None if self.seed is None else self.seed * 1000 + count
            Connection(client, upstream, Direction(**self.up, seed=seed), Direction(**self.down, seed=seed))


def serve(specs: list[dict], out=sys.stdout) -> dict[str, Link]:
    links = {s["name"]: Link(s["name"], s["upstream"], s["up"], s["down"], s.get("seed")) for s in specs}
    out.write("READY " + json.dumps({name: link.port for name, link in links.items()}) + "\n")
    out.flush()
    return links


def main() -> None:
    from protocol.run_dir import die_with_parent

    die_with_parent()
    try:  # the network is not one of the hosts: the roles' CPU load must not slow it (root only; else as it is)
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass
    specs = json.loads(sys.stdin.readline())
    serve(specs)
    while sys.stdin.readline():  # the runner holds stdin open for as long as the run lasts
        pass


if __name__ == "__main__":
    main()
