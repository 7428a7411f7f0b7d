"""Liveness: ZeroMQ heartbeats on every connection, and how a role or the runner learns that a peer is lost.

Every socket sends a ZMTP PING every `interval` and closes a connection whose peer answered nothing for
`liveness` seconds (ZMQ_HEARTBEAT_IVL / _TIMEOUT / _TTL). libzmq answers heartbeats from its own I/O
thread, so a peer busy in a long FHE run, or holding the GIL, still answers; a peer that is stopped
(SIGSTOP), frozen or cut off does not, and a peer that exits closes its connection at once. A socket
monitor turns the closed connection into an event:

- `ConnectionWatch` on a DEALER (one peer per socket: a role's link to the evaluator, bank or agency):
  `lost()` says why once the connection closed after `arm()` (called when a request is sent), or when
  there has been no connection for `liveness` seconds.
- `RouterWatch` on the runner's control ROUTER (one connection per role): the connection's file
  descriptor is learned from each message a role sends (ZMQ_SRCFD), so a closed connection names its role.
"""

from __future__ import annotations

import time

import zmq
from zmq.utils.monitor import recv_monitor_message

# A peer that answered no heartbeat for this long is lost (seconds); roles take --liveness, the runner too.
DEFAULT_LIVENESS_S = 4.0
MIN_LIVENESS_S, MAX_LIVENESS_S = 0.5, 3600.0


def set_heartbeats(sock: zmq.Socket, liveness: float = DEFAULT_LIVENESS_S) -> None:
    """PING the peer every liveness/4 (at most every second); close the connection after `liveness` s of
    silence, and ask the peer to do the same (TTL)."""
    timeout_ms = int(round(liveness * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, max(100, min(1000, timeout_ms // 4)))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, min(6_553_500, max(100, timeout_ms // 100 * 100)))


def _monitor(sock: zmq.Socket, events: int) -> zmq.Socket:
    return sock.get_monitor_socket(events)


def _close_monitor(sock: zmq.Socket, monitor: zmq.Socket) -> None:
    try:
        sock.disable_monitor()
    except zmq.ZMQError:
        pass
    monitor.close(linger=0)


def _drain(monitor: zmq.Socket) -> list[dict]:
    out = []
    while monitor.poll(0, zmq.POLLIN):
        try:
            out.append(recv_monitor_message(monitor, zmq.NOBLOCK))
        except zmq.Again:
            break
    return out


class ConnectionWatch:
    """The state of a DEALER's one connection: `lost()` says why a request sent after `arm()` will not be
    answered — the connection closed since, or there has been none for `liveness` seconds — or None."""

    def __init__(self, sock: zmq.Socket, liveness: float = DEFAULT_LIVENESS_S):
        self.sock, self.liveness = sock, liveness
        self.monitor = _monitor(sock, zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.up = False
        self.down_since = time.monotonic()
        self.closed = False
        self.armed_at = self.down_since

    def _update(self) -> None:
        for event in _drain(self.monitor):
            if event["event"] == zmq.EVENT_CONNECTED:
                self.up, self.down_since = True, None
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.up, self.down_since, self.closed = False, time.monotonic(), True

    def arm(self) -> None:
        """A request is being sent: closures before it do not count (the socket reconnects by itself)."""
        self._update()
        self.closed, self.armed_at = False, time.monotonic()

    def lost(self) -> str | None:
        self._update()
        if self.closed:
            return f"its connection closed (its process ended, or it answered no heartbeat for {self.liveness:g} s)"
        if not self.up and time.monotonic() - max(self.down_since or 0.0, self.armed_at) > self.liveness:
            return f"there has been no connection to it for {self.liveness:g} s"
        return None

    def close(self) -> None:
        _close_monitor(self.sock, self.monitor)


class RouterWatch:
    """Which of a ROUTER's peers lost their connection: each peer's connection is known by the file descriptor
    its messages arrived on; a DISCONNECTED event on that descriptor names the peer."""

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self.monitor = _monitor(sock, zmq.EVENT_DISCONNECTED)
        self.fds: dict[str, int] = {}

    def seen(self, name: str, source_fd: int | None) -> None:
        """A message from `name` arrived on connection `source_fd`."""
        if source_fd is not None and source_fd >= 0:
            self.fds[name] = source_fd

    def forget(self, name: str) -> None:
        self.fds.pop(name, None)

    def lost(self) -> list[str]:
        """Peers whose current connection closed since the last call (each reported once)."""
        gone = []
        for event in _drain(self.monitor):
            if event["event"] != zmq.EVENT_DISCONNECTED:
                continue
            for name, fd in list(self.fds.items()):
                if fd == event["value"]:
                    gone.append(name)
                    del self.fds[name]
        return gone

    def close(self) -> None:
        _close_monitor(self.sock, self.monitor)
