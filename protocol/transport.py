"""ZeroMQ plumbing shared by every role: bounded sockets, bounded receives, non-blocking replies,
deadline-bound requests, a bounded traffic log."""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import zmq

from . import PROTOCOL_VERSION
from .errors import ErrorCode, PeerLost, ProtocolError, PeerTimeout, RemoteError
from .liveness import DEFAULT_LIVENESS_S, ConnectionWatch, set_heartbeats
from .messages import BLOB_CHUNK, MAX_HEADER_BYTES, MESSAGE_CLASSES, Error, Message, MessageType, Packet, decode, encode

# The largest single frame any socket accepts unless told otherwise: a blob chunk plus slack. libzmq
# refuses (and disconnects) a larger frame as soon as its length is announced, before the CURVE
# handshake too, so an unauthenticated peer cannot make a role allocate more than this per connection.
MAX_FRAME_BYTES = BLOB_CHUNK + MAX_HEADER_BYTES
# A send that cannot be queued (no connection, or the peer's queue is full) gives up after this long.
SEND_TIMEOUT_MS = 30_000
# Replies queued for one peer that is not reading; beyond this the reply is dropped, never waited for.
ROUTER_SNDHWM = 16
# A connection that has not completed its (CURVE) handshake within this time is closed.
HANDSHAKE_MS = 5_000

log = logging.getLogger("fhe_credit_sim")
# The libzmq that pyzmq carries was patched against the `!_io_error` abort (.ci/pyzmq/build.py): without it, any
# authenticated peer that floods a role and hangs up can abort the role's process (SPEC §9).
LIBZMQ_PATCH = getattr(__import__("zmq.sugar.version", fromlist=["_"]), "fcs_libzmq_patch", None)


def routing_identity(role: str) -> str:
    """A connecting socket's ZeroMQ routing identity: `role:pid:` and 128 random bits, new for every socket.

    It only routes replies to this connection; it is never a credential (the sender is the role whose CURVE key
    the ZAP handshake proved). A ROUTER ignores a second connection that claims an identity in use (handover
    off), so an identity a peer could guess would let it squat an applicant's: these cannot be guessed."""
    return f"{role}:{os.getpid()}:{secrets.token_hex(16)}"


def make_socket(ctx: zmq.Context, kind: int, identity: str | None = None,
                max_frame: int = MAX_FRAME_BYTES, liveness: float = DEFAULT_LIVENESS_S) -> zmq.Socket:
    """A socket that never lingers on close, refuses any frame over `max_frame`, bounds its handshake,
    heartbeats every connection (closed after `liveness` s of silence: protocol/liveness.py), and (a ROUTER)
    queues at most ROUTER_SNDHWM replies per peer."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    set_heartbeats(sock, liveness)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity.encode())
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 0)  # a connection never takes over another's identity
        sock.setsockopt(zmq.SNDHWM, ROUTER_SNDHWM)
    return sock


def limits_of(type_frame: bytes, version_frame: bytes, overrides: dict | None = None) -> tuple[int, int]:
    """(max bytes, max frames) of a message whose first frames are these; small for anything unknown."""
    try:
        if bytes(version_frame) != PROTOCOL_VERSION:
            raise ValueError
        cls = MESSAGE_CLASSES[MessageType(bytes(type_frame).decode("ascii"))]
    except (ValueError, UnicodeDecodeError):
        return 2 * MAX_HEADER_BYTES, 4
    return (overrides or {}).get(cls.TYPE, cls.MAX_BYTES), cls.MAX_FRAMES


@dataclass
class Received:
    """One multipart message as received: the routing identity (ROUTER only), the frames, the sender's
    proven CURVE key (ZAP User-Id, or None), and `too_large` when it was over its type's limits (its
    frames beyond the first three were then dropped while receiving, never kept)."""

    identity: bytes
    frames: list[bytes]
    user_id: str | None
    too_large: str | None = None
    source_fd: int | None = None  # the connection it came in on (ROUTER only), for liveness.RouterWatch


def receive(sock: zmq.Socket, router: bool, overrides: dict | None = None) -> Received:
    """Receive one message frame by frame, keeping nothing beyond its type's byte and frame limits."""
    identity, source_fd = b"", None
    if router:
        first = sock.recv(copy=False)
        identity = first.bytes
        if not first.more:
            return Received(identity, [], None, source_fd=source_fd)
    kept: list[bytes] = []
    user_id, size, count, limit, too_large = None, 0, 0, None, None
    more = True
    while more:
        frame = sock.recv(copy=False)
        more = frame.more
        if count == 0:
            try:
                user_id = frame.get("User-Id") or None
            except zmq.ZMQError:  # no ZAP handshake on this connection (no CURVE)
                user_id = None
            if router:  # the connection's descriptor: on the first data frame (libzmq 4.3.4 has none on the identity)
                try:
                    source_fd = frame.get(zmq.SRCFD)
                except zmq.ZMQError:
                    source_fd = None
        count += 1
        size += len(frame)
        if limit is None and count == 3:  # version and type are known: the type's own limits apply
            limit = limits_of(kept[1], kept[0], overrides)
        if too_large is None and limit is not None and (size > limit[0] or count > limit[1]):
            too_large = f"message exceeds its limit of {limit[0]} bytes in {limit[1]} frames"
            del kept[3:]  # keep the header (for the reply's seq), let go of the rest at once
            if more:
                discard_rest(sock)
            break
        kept.append(frame.bytes)
    return Received(identity, kept, user_id, too_large, source_fd)


def discard_rest(sock: zmq.Socket) -> int:
    """Drop the remaining frames of the message being received, as fast as pyzmq allows (a hostile peer's message
    can have millions of tiny frames; another peer on the same socket waits until they are gone)."""
    dropped = 0
    while sock.getsockopt(zmq.RCVMORE):
        sock.recv(copy=True)  # a bytes object costs less than a Frame for the tiny frames that make this slow
        dropped += 1
    return dropped


def send_nowait(sock: zmq.Socket, frames: list) -> bool:
    """Queue a message without ever blocking; False when the peer is gone or not reading (dropped)."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        return True
    except zmq.ZMQError:  # EAGAIN: its queue is full; EHOSTUNREACH: it went away
        return False


class RateLimitedLog:
    """At most `burst` lines per `window` seconds, each truncated; then one line counting what was skipped."""

    def __init__(self, logger: logging.Logger, burst: int = 20, window: float = 10.0, width: int = 300):
        self.logger, self.burst, self.window, self.width = logger, burst, window, width
        self.started, self.count, self.suppressed = 0.0, 0, 0

    def __call__(self, level: int, text: str) -> None:
        now = time.monotonic()
        if now - self.started > self.window:
            if self.suppressed:
                self.logger.log(level, "... %d similar line(s) suppressed", self.suppressed)
            self.started, self.count, self.suppressed = now, 0, 0
        self.count += 1
        if self.count > self.burst:
            self.suppressed += 1
            return
        self.logger.log(level, "%s", text if len(text) <= self.width else text[:self.width] + "…")


SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(text: str, limit: int = 32) -> str:
    """A peer-supplied name made safe for a file name (no path separators, no dots, short)."""
    return SAFE_NAME.sub("_", text)[:limit] or "_"


PREVIEW_BYTES = 16


def preview_offset(size: int) -> int:
    """Where the preview of a blob of `size` bytes starts: past Concrete's serialization header, which is the same
    for every value of a circuit (the first 64 bytes of a ciphertext; about 800 of an evaluation key, so 1 KiB is
    skipped of anything over 4 KiB: keys, outputs, a key's first 1 MiB frame)."""
    start = 64 if size <= 4096 else 1024
    return max(0, min(start, size - PREVIEW_BYTES))


def blob_preview(blob: bytes) -> str:
    """Hex of PREVIEW_BYTES of a key or ciphertext's own data (they differ between two keys or two encryptions)."""
    start = preview_offset(len(blob))
    return bytes(blob[start:start + PREVIEW_BYTES]).hex()


def preview(frames: Sequence[bytes]) -> str:
    """What the report shows of a message's first blob; nothing of a CLIENT_KEY (secret keys past their header)."""
    if len(frames) <= 3 or bytes(frames[1]) == b"CLIENT_KEY":
        return ""
    return blob_preview(frames[3])


@dataclass(frozen=True)
class TrafficRecord:
    t: float
    sender: str
    receiver: str
    type: str
    bytes: int
    preview: str


class TrafficLog:
    """Every message a role sends: who to, what type, how many bytes, a hex preview of its first blob; and every
    message it receives (who from, type, bytes, when it arrived whole), for the reports' timelines.

    Bounded: it keeps the latest `limit` records of each and counts the ones it had to drop, so a role that
    nobody drains (no runner, or a hostile peer making it answer) cannot grow without end."""

    def __init__(self, role: str, limit: int = 5000):
        self.role = role
        self._records: deque[TrafficRecord] = deque(maxlen=limit)
        self._received: deque[TrafficRecord] = deque(maxlen=limit)
        self.dropped = 0
        self._lock = threading.Lock()

    def add_received(self, sender: str, frames: Sequence[bytes]) -> None:
        """A message that arrived from `sender` (all its frames, or what was kept of one over its limit)."""
        kind = bytes(frames[1]).decode("ascii", "replace")[:16] if len(frames) > 1 else "?"
        rec = TrafficRecord(time.time(), sender, self.role, kind, sum(len(f) for f in frames), "")
        with self._lock:
            self._received.append(rec)

    def drain_received(self) -> list[dict]:
        with self._lock:
            records, self._received = list(self._received), deque(maxlen=self._received.maxlen)
        return [asdict(r) for r in records]

    def add(self, receiver: str, frames: Sequence[bytes]) -> None:
        rec = TrafficRecord(time.time(), self.role, receiver, bytes(frames[1]).decode("ascii", "replace")[:16],
                            sum(len(f) for f in frames), preview(frames))
        with self._lock:
            if len(self._records) == self._records.maxlen:
                self.dropped += 1
            self._records.append(rec)

    def drain(self) -> list[dict]:
        with self._lock:
            records, self._records = list(self._records), deque(maxlen=self._records.maxlen)
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
                 traffic: TrafficLog, setup=None, should_stop: Callable[[], bool] = lambda: False,
                 max_reply: int = MAX_FRAME_BYTES, liveness: float = DEFAULT_LIVENESS_S,
                 on_receive: Callable[[list[bytes]], None] | None = None):
        self.name, self.endpoint, self.traffic, self.liveness = name, endpoint, traffic, liveness
        self.on_receive = on_receive  # sees every reply's frames as received (the capture of custody audits)
        self.should_stop = should_stop  # a signal arrived: give up waiting at once
        self._ctx, self._identity, self._setup, self._max_reply = ctx, identity, setup, max_reply
        self.broken = False  # the connection was lost: the next request gets a new socket (see _connect)
        self._connect()

    def _connect(self) -> None:
        """A fresh socket to the peer. libzmq never reconnects a connection it ended for a protocol error (a frame
        over MAXMSGSIZE from the peer, say): after a lost connection the link is rebuilt, never ended for good."""
        identity = self._identity if not self.broken else routing_identity(self._identity.split(":", 1)[0])
        self.socket = make_socket(self._ctx, zmq.DEALER, identity, max_frame=self._max_reply, liveness=self.liveness)
        if self._setup is not None:
            self._setup(self.socket)
        self.watch = ConnectionWatch(self.socket, self.liveness)  # the peer's connection closing ends a wait
        self.socket.connect(self.endpoint)
        self.broken = False

    faults = None  # a FaultPlan (fault injection for tests and scenarios), shared by the role's peers

    def send(self, message: Message, timeout: float = SEND_TIMEOUT_MS / 1000) -> int:
        """Queue a request; waits at most `timeout` for room (no connection yet, or a full queue), and
        gives up at once when the role is stopping."""
        seq = next(self._seq)
        frames = encode(message, seq)
        copies = self.faults.apply(message.TYPE.value, frames) if self.faults else [frames]
        if self.broken:
            self.close()
            self._connect()
        self.watch.arm()
        deadline = time.monotonic() + timeout
        for out in copies:
            self.traffic.add(self.name, out)
            while not send_nowait(self.socket, out):
                if self.should_stop():
                    raise ProtocolError(f"shutting down while sending {message.TYPE.value} to {self.name}")
                if time.monotonic() >= deadline:
                    raise PeerTimeout(f"{self.name} could not take {message.TYPE.value} within "
                                      f"{timeout:.0f} s (no connection)")
                why = self.watch.lost()
                if why:
                    self.broken = True
                    raise PeerLost(f"the {self.name} could not take {message.TYPE.value}: {why}")
                self.socket.poll(100, zmq.POLLOUT)
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
            why = self.watch.lost()
            if why:
                self.broken = True
                raise PeerLost(f"the {self.name} was lost while it was to answer {what}: {why}")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(int(min(remaining, 0.2) * 1000) + 1, zmq.POLLIN):
                if time.monotonic() >= deadline:
                    raise PeerTimeout(f"{self.name} did not answer {what} within {timeout:.1f} s")
                continue
            got = receive(self.socket, router=False)
            if got.frames:
                self.traffic.add_received(self.name, got.frames)
            if self.on_receive is not None:
                self.on_receive(got.frames)
            if got.too_large:
                continue
            try:
                packet = decode(got.frames)
            except ProtocolError:
                continue  # garbage from the peer is not our answer; keep waiting until the deadline
            if packet.seq != seq:
                continue  # a late answer to an earlier, timed-out request
            if isinstance(packet.message, Error):
                raise RemoteError(packet.message.reason, ErrorCode.parse(packet.message.code), self.name)
            return packet

    def close(self) -> None:
        self.watch.close()
        self.socket.close(linger=0)
