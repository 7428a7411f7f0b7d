"""ZeroMQ plumbing shared by every role: sockets with linger 0, deadline-bound requests, a traffic log."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import zmq

from .errors import ErrorCode, ProtocolError, PeerTimeout, RemoteError
from .messages import Error, Message, Packet, decode, encode

# Backstop for any single message; per-type limits in messages.py are tighter.
MAX_MESSAGE_BYTES = 600 * 1024 * 1024
# A send that cannot even be queued (no connection to the peer) gives up after this long.
SEND_TIMEOUT_MS = 30_000


def make_socket(ctx: zmq.Context, kind: int, identity: str | None = None) -> zmq.Socket:
    """A socket that never lingers on close and refuses absurdly large messages."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity.encode())
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


def preview(frames: Sequence[bytes]) -> str:
    """Hex of the first bytes of the first binary frame (what the report shows of a ciphertext)."""
    return bytes(frames[3][:16]).hex() if len(frames) > 3 else ""


@dataclass(frozen=True)
class TrafficRecord:
    t: float
    sender: str
    receiver: str
    type: str
    bytes: int
    preview: str


class TrafficLog:
    """Every message a role sends: who to, what type, how many bytes, a hex preview of its first blob."""

    def __init__(self, role: str):
        self.role = role
        self._records: list[TrafficRecord] = []
        self._lock = threading.Lock()

    def add(self, receiver: str, frames: Sequence[bytes]) -> None:
        rec = TrafficRecord(time.time(), self.role, receiver, bytes(frames[1]).decode("ascii", "replace"),
                            sum(len(f) for f in frames), preview(frames))
        with self._lock:
            self._records.append(rec)

    def drain(self) -> list[dict]:
        with self._lock:
            records, self._records = self._records, []
        return [asdict(r) for r in records]


class FaultPlan:
    """Injected message faults: `kind:TYPE:count[:seconds]` with kind drop, delay, duplicate or corrupt.

    Each applies to the next `count` messages of that type this role sends (corrupt flips every byte
    of the binary frames; delay sleeps before sending). Used by scenarios that test recovery.
    """

    KINDS = ("drop", "delay", "duplicate", "corrupt")

    def __init__(self, specs: Sequence[str]):
        self.rules = []
        for spec in specs:
            parts = spec.split(":")
            if len(parts) not in (3, 4) or parts[0] not in self.KINDS or not parts[2].isdigit():
                raise ValueError(f"fault {spec!r}: expected KIND:TYPE:COUNT[:SECONDS], KIND in {self.KINDS}")
            self.rules.append([parts[0], parts[1], int(parts[2]), float(parts[3]) if len(parts) == 4 else 0.0])

    def apply(self, type_name: str, frames: list[bytes]) -> list[list[bytes]]:
        for rule in self.rules:
            kind, target, left, seconds = rule
            if target != type_name or left <= 0:
                continue
            rule[2] -= 1
            if kind == "drop":
                return []
            if kind == "delay":
                time.sleep(seconds)
            if kind == "duplicate":
                return [frames, frames]
            if kind == "corrupt":
                return [frames[:3] + [bytes(b ^ 0xFF for b in blob) for blob in frames[3:]]]
        return [frames]


def role_of(identity: bytes) -> str:
    """Socket identities are "role:pid"; the role is what logs and reports name."""
    return identity.decode("utf-8", "replace").split(":", 1)[0]


class PeerClient:
    """A DEALER connected to one peer; every request has a deadline and is matched by sequence number."""

    _seq = itertools.count(1)

    def __init__(self, ctx: zmq.Context, name: str, endpoint: str, identity: str,
                 traffic: TrafficLog, setup=None, should_stop=lambda: False):
        self.name, self.endpoint, self.traffic = name, endpoint, traffic
        self.should_stop = should_stop  # a signal arrived: give up waiting at once
        self.socket = make_socket(ctx, zmq.DEALER, identity)
        if setup is not None:
            setup(self.socket)
        self.socket.connect(endpoint)

    faults = None  # a FaultPlan (fault injection for tests and scenarios), shared by the role's peers

    def send(self, message: Message) -> int:
        seq = next(self._seq)
        frames = encode(message, seq)
        copies = self.faults.apply(message.TYPE.value, frames) if self.faults else [frames]
        for out in copies:
            self.traffic.add(self.name, out)
            try:
                self.socket.send_multipart(out, copy=False)
            except zmq.Again:
                raise PeerTimeout(f"{self.name} could not take {message.TYPE.value} within "
                                  f"{SEND_TIMEOUT_MS / 1000:.0f} s (no connection)") from None
        return seq

    def request(self, message: Message, timeout: float) -> Packet:
        """Send and wait for the reply with the same seq; raise PeerTimeout or RemoteError."""
        return self.wait_reply(self.send(message), timeout, message.TYPE.value)

    def wait_reply(self, seq: int, timeout: float, what: str) -> Packet:
        """Wait for the reply to request `seq` (sent earlier with `send`)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.should_stop():
                raise ProtocolError(f"shutting down while waiting for {self.name} to answer {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(int(min(remaining, 0.2) * 1000) + 1, zmq.POLLIN):
                if time.monotonic() >= deadline:
                    raise PeerTimeout(f"{self.name} did not answer {what} within {timeout:.1f} s")
                continue
            frames = self.socket.recv_multipart()
            try:
                packet = decode(frames)
            except ProtocolError:
                continue  # garbage from the peer is not our answer; keep waiting until the deadline
            if packet.seq != seq:
                continue  # a late answer to an earlier, timed-out request
            if isinstance(packet.message, Error):
                raise RemoteError(packet.message.reason, ErrorCode.parse(packet.message.code), self.name)
            return packet

    def close(self) -> None:
        self.socket.close(linger=0)
