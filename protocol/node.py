"""The runtime every role process shares: one authorized dispatch path, deadlines, a control channel, clean shutdown."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zmq

from .authorization import authorize, size_limits
from .errors import ErrorCode, ProtocolError, RemoteError
from .messages import Error, Message, MessageType, Ping, Pong, Ready, Result, Shutdown, decode, encode
from .liveness import DEFAULT_LIVENESS_S
from .run_dir import Presence, die_with_parent
from .transport import (
    LIBZMQ_PATCH, MAX_FRAME_BYTES, FaultPlan, PeerClient, RateLimitedLog, Received, TrafficLog, make_socket, receive,
    role_of, routing_identity, safe_name, send_nowait,
)

Handler = Callable[[str, object], Message]
log = logging.getLogger("fhe_credit_sim")
# Messages handled per socket per poll, so that one busy peer cannot starve the others or the control channel.
BATCH = 32
# At most this many messages are written to a capture directory (a debugging and audit aid).
MAX_CAPTURED = 20_000


@dataclass
class Channel:
    """A ROUTER the role serves: its name in the authorization table, its handler, per-type size limits."""

    name: str
    handler: Handler
    limits: dict


_libc = None


def give_back_memory() -> None:
    """Return freed heap memory to the system (glibc's malloc_trim): after an oversized message, the frames libzmq
    held for it are freed but would otherwise stay in this process's heap (measured: +276 MB for 2,000,000
    one-byte frames, kept for good without it)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peek_seq(frames: list[bytes]) -> int:
    """The `seq` of a message that will not be decoded (too large, or refused by the codec), so that its refusal
    can echo it."""
    try:
        seq = json.loads(frames[2]).get("seq", 0) if len(frames) > 2 and len(frames[2]) <= 65536 else 0
    except (ValueError, AttributeError, UnicodeDecodeError):
        return 0
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else 0


class Node:
    """One role: ROUTER sockets it serves, peers it calls, an optional control DEALER to the runner.

    Every message received goes through `_reply_for`: size limits, decoding, then the authorization
    table (protocol/authorization.py) for the channel it came in on, and only then a handler. Handlers
    return the reply message (or None to answer later); a ProtocolError they raise becomes an ERROR
    reply with its code and reason, any other exception an INTERNAL error; the process keeps serving.
    Replies are never waited for: a peer that does not read loses them (see `send_reply`).
    `current_identity` is the raw socket identity of the message being handled.
    """

    def __init__(self, role: str, control: str | None = None, poll_ms: int = 50,
                 capture_dir: Path | None = None, curve=None, exit_with_parent: bool = False,
                 faults: str | None = None, capture_client_key: bool = False,
                 liveness: float = DEFAULT_LIVENESS_S, run_dir: str | Path | None = None,
                 workdir: str | Path | None = None):
        self.role = role
        if LIBZMQ_PATCH is None:
            log.warning("%s: UNSAFE: this pyzmq's libzmq is not patched (run .ci/setup.sh): an authenticated peer "
                        "that floods this role and hangs up can abort it (SPEC §9)", role)
        self.liveness = liveness  # a peer silent this long is lost (protocol/liveness.py)
        self.faults = FaultPlan(faults.split(",")) if faults else None
        # Started by a runner: the kernel sends SIGTERM when it dies (and its pid is checked in every wait).
        self.parent = die_with_parent() if exit_with_parent else None
        # The run directory this role shares with its runner: left clean when the runner is gone (protocol/run_dir.py)
        self.presence = Presence(run_dir) if run_dir else None
        self.workdir = Path(workdir) if workdir else None
        self.curve = curve
        self.capture_dir = Path(capture_dir) if capture_dir else None
        self.capture_client_key = capture_client_key
        if capture_client_key:
            log.warning("INSECURE (test only): the %s writes the secret keys of every CLIENT_KEY it receives "
                        "to %s", role, capture_dir)
        self._captured = self._last_captured() if self.capture_dir else 0  # a restarted role numbers on
        self._capture_lock = threading.Lock()
        self.ctx = zmq.Context()
        self.traffic = TrafficLog(role)
        self.log_error = RateLimitedLog(log)
        self.poller = zmq.Poller()
        self.routers: dict[zmq.Socket, Channel] = {}
        self.peers: dict[str, PeerClient] = {}
        self.endpoints: dict[str, str] = {}
        self.poll_ms = poll_ms
        self.stopping = False
        self.current_identity = b""
        self.current_seq = 0
        self.control: zmq.Socket | None = None
        self.key_roles: dict[str, str] = {}
        if curve is not None:
            curve.start_authenticator(self.ctx)
            self.key_roles = curve.roles_by_key()
        if control:
            self.control = make_socket(self.ctx, zmq.DEALER, routing_identity(role), liveness=liveness)
            if curve is not None:
                curve.client("runner")(self.control)
            self.control.connect(control)
            self.poller.register(self.control, zmq.POLLIN)

    # --- set-up ---------------------------------------------------------------------------
    def serve_router(self, endpoint: str, handler: Handler, channel: str | None = None,
                     max_frame: int = MAX_FRAME_BYTES, limits: dict | None = None, setup=None) -> zmq.Socket:
        """Bind a ROUTER for `channel` (default: the role's own name in the authorization table)."""
        sock = make_socket(self.ctx, zmq.ROUTER, max_frame=max_frame, liveness=self.liveness)
        if setup is not None:
            setup(sock)
        elif self.curve is not None:
            self.curve.server(sock)
        sock.bind(endpoint)
        self.endpoints[channel or self.role] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        name = channel or self.role
        self.routers[sock] = Channel(name, handler, size_limits(name, limits))
        self.poller.register(sock, zmq.POLLIN)
        return sock

    def connect_peer(self, name: str, endpoint: str, setup=None, max_reply: int = MAX_FRAME_BYTES) -> PeerClient:
        if setup is None and self.curve is not None:
            setup = self.curve.client(name)
        capture = (lambda frames: self._capture(name, frames)) if self.capture_dir is not None else None
        peer = PeerClient(self.ctx, name, endpoint, routing_identity(self.role), self.traffic, setup,
                          should_stop=self.should_stop, max_reply=max_reply, liveness=self.liveness,
                          on_receive=capture)
        peer.faults = self.faults
        self.peers[name] = peer
        return peer

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame):
            log.info("%s: signal %s, shutting down", self.role, signum)
            self.stopping = True
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def parent_gone(self) -> bool:
        return self.parent is not None and os.getppid() != self.parent

    def should_stop(self) -> bool:
        """A signal arrived, SHUTDOWN was asked, or the runner that started this role died: every wait ends."""
        if not self.stopping and self.parent_gone():
            log.warning("%s: the process that started it exited; shutting down", self.role)
            self.stopping = True
        return self.stopping

    # --- hooks for roles --------------------------------------------------------------------
    def on_command(self, action: str, params: dict) -> dict:
        raise ProtocolError(f"{self.role} has no action {action!r}", ErrorCode.UNKNOWN_ACTION)

    def tick(self) -> None:
        """Called after every poll; roles finish background work here."""

    def off_loop(self, what: str, work: Callable, *args):
        """Run a long call into Concrete (which releases the GIL) on a thread and wait for it, so that
        a signal is acted on at once instead of when the call returns."""
        outcome: dict = {}

        def target():
            try:
                outcome["value"] = work(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the loop's thread
                outcome["error"] = exc
        thread = threading.Thread(target=target, name=f"{self.role}-{what}", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.05)
            if self.should_stop():
                raise ProtocolError(f"shutting down during {what}")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    # --- the loop ---------------------------------------------------------------------------
    def announce(self) -> None:
        if self.control is not None:
            self._send_control(Ready(self.role, os.getpid(), dict(self.endpoints)), 0)

    def _send_control(self, message: Message, seq: int) -> None:
        frames = encode(message, seq)
        self.traffic.add("runner", frames)
        if not send_nowait(self.control, frames):
            self.log_error(logging.WARNING, f"{self.role}: the runner cannot take {message.TYPE.value}; dropped")

    def _capture(self, sender: str, frames: list[bytes]) -> None:
        """With a capture dir, keep every frame received, requests and replies (files 0600), as evidence for
        custody audits.
        The secret keys a CLIENT_KEY carries are never written, unless capture_client_key says so."""
        with self._capture_lock:  # replies are received on work threads too
            if self._captured >= MAX_CAPTURED:
                return
            self._captured += 1
            number = self._captured
        secret = len(frames) > 1 and frames[1] == MessageType.CLIENT_KEY.value.encode()
        try:
            for i, frame in enumerate(frames):
                data = bytes(frame)
                if secret and i >= 3 and not self.capture_client_key:
                    data = f"(a secret key of {len(data)} bytes, not kept)".encode()
                path = self.capture_dir / f"{number:05d}-{safe_name(sender)}.{i}"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
        except OSError as exc:  # a full disk or a clashing file ends the capture, never the role
            self.log_error(logging.WARNING, f"{self.role}: capture stopped: {exc}")
            self._captured = MAX_CAPTURED

    def _last_captured(self) -> int:
        """The highest message number already in the capture dir (files NNNNN-sender.i)."""
        numbers = [int(p.name[:5]) for p in self.capture_dir.glob("[0-9][0-9][0-9][0-9][0-9]-*")]
        return max(numbers, default=0)

    def _reply_for(self, channel: Channel, sender: str, got: Received) -> tuple[Message | None, int]:
        seq = 0
        if self.capture_dir is not None:
            self._capture(sender, got.frames)
        try:
            if got.too_large:
                seq = peek_seq(got.frames)
                give_back_memory()  # what libzmq held for the message is free now: return it to the system
                raise ProtocolError(got.too_large, ErrorCode.TOO_LARGE)
            packet = decode(got.frames)
            seq = self.current_seq = packet.seq
            authorize(channel.name, sender, packet.message)
            if isinstance(packet.message, Ping):
                return Pong(self.role), seq
            return channel.handler(sender, packet), seq
        except ProtocolError as exc:
            seq = seq or peek_seq(got.frames)  # a message that did not decode: its header's seq if it has one
            self.log_error(logging.INFO, f"{self.role}: error reply to {sender}: {exc}")
            reason = f"{exc.peer}: {exc.reason}" if isinstance(exc, RemoteError) and exc.peer else exc.reason
            return Error(exc.code.value, reason[:2000]), seq
        except Exception as exc:  # noqa: BLE001 - a bug must not take the role down
            log.exception("%s: internal error", self.role)
            return Error(ErrorCode.INTERNAL.value, f"{type(exc).__name__}: {exc}"[:2000]), seq

    def _control_handler(self, _sender: str, packet) -> Message:
        message = packet.message
        if isinstance(message, Shutdown):
            self.stopping = True
            return Result("shutdown", {})
        if message.action == "stats":
            return Result("stats", {"messages": self.traffic.drain(), "received": self.traffic.drain_received(),
                                    "dropped": self.traffic.dropped, "pid": os.getpid()})
        try:
            return Result(message.action, self.on_command(message.action, dict(message.params)))
        except KeyError as exc:  # a COMMAND without a parameter its action needs: the sender's error, not a bug
            if not exc.args or not isinstance(exc.args[0], str) or exc.args[0] in message.params:
                raise  # a KeyError of the role's own making stays a bug (INTERNAL)
            raise ProtocolError(f"{message.action}: missing parameter {exc}", ErrorCode.MALFORMED) from None

    def _sender(self, identity: bytes, user_id: str | None) -> str:
        """Who sent this: with CURVE, the role whose public key the ZAP handshake proved (never the
        identity a peer claims); without CURVE, the role part of the socket identity."""
        if self.curve is None:
            return role_of(identity)
        return self.key_roles.get(user_id or "", "unknown")

    def send_reply(self, sock: zmq.Socket, identity: bytes, reply: Message, seq: int) -> None:
        """Answer a peer on a ROUTER (now, or later for a request a handler deferred by returning None).
        Never blocks: a peer whose queue is full (it stopped reading) or that went away loses the reply."""
        out = encode(reply, seq)
        for copy in self.faults.apply(reply.TYPE.value, out) if self.faults else [out]:
            self.traffic.add(role_of(identity), copy)
            if not send_nowait(sock, [identity] + copy):
                self.log_error(logging.WARNING, f"{self.role}: {role_of(identity)} is not reading (or went "
                                                f"away); its {reply.TYPE.value} was dropped")

    def poll_once(self) -> None:
        events = dict(self.poller.poll(self.poll_ms))
        for sock, channel in self.routers.items():
            if sock not in events:
                continue
            for _ in range(BATCH):
                if not sock.poll(0, zmq.POLLIN):
                    break
                got = receive(sock, router=True, overrides=channel.limits)
                if not got.frames:
                    continue
                sender = self._sender(got.identity, got.user_id)
                self.traffic.add_received(sender, got.frames)
                self.current_identity = got.identity
                reply, seq = self._reply_for(channel, sender, got)
                if reply is not None:
                    self.send_reply(sock, got.identity, reply, seq)
        self.should_stop()
        if self.control is not None and self.control in events:
            got = receive(self.control, router=False)
            reply, seq = self._reply_for(Channel("control", self._control_handler, {}), "runner", got)
            self._send_control(reply, seq)
        self.tick()

    def serve_forever(self) -> None:
        self.install_signal_handlers()
        self.announce()
        try:
            while not self.stopping:
                self.poll_once()
        finally:
            self.close()
            self.leave_run_dir()
            self._exit_if_work_is_stuck()

    def own_paths(self) -> list[Path]:
        """What this role leaves in its run directory: its work directory, its CURVE keys, its capture, its log
        and its ipc endpoints (only paths inside the run directory are ever removed)."""
        paths = [p for p in (self.workdir, self.capture_dir, getattr(self.curve, "keys_dir", None)) if p]
        if self.presence is not None:
            paths.append(self.presence.run_dir / f"{self.role}.log")
        paths += [Path(e[len("ipc://"):]) for e in self.endpoints.values() if e.startswith("ipc://")]
        return paths

    def leave_run_dir(self) -> None:
        """With the runner gone, remove what is this role's (the last role out removes the directory); with the
        runner alive, only let go of the run (the runner removes it when the run ends)."""
        if self.presence is None:
            return
        if self.parent_gone():
            gone = self.presence.leave(self.own_paths(), last_out=True)
            log.warning("%s: its runner is gone: removed its files%s", self.role,
                        " and the run directory" if gone else "")
        else:
            self.presence.leave()

    @staticmethod
    def _exit_if_work_is_stuck(grace: float = 0.3) -> None:
        """A thread still inside a long Concrete call (a run, a key generation) would hold the interpreter's
        exit, daemon or not (Concrete's own exit hook waits for its runtime): after every socket is closed,
        give such threads `grace` seconds, then end the process at once (exit code 0)."""
        others = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
        for thread in others:
            thread.join(grace / max(1, len(others)))
        if any(t.is_alive() for t in others):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()
        for sock in self.routers:
            sock.close(linger=0)
        if self.control is not None:
            self.control.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        self.ctx.term()
