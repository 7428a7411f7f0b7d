"""The runtime every role process shares: a poll loop with deadlines, a control channel, clean shutdown."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Callable

import zmq

from .errors import ErrorCode, IllegalState, ProtocolError, RemoteError
from .messages import Command, Error, Message, Ping, Pong, Ready, Result, Shutdown, decode, encode
from .transport import FaultPlan, PeerClient, TrafficLog, make_socket, role_of

Handler = Callable[[str, object], Message]
log = logging.getLogger("fhe_credit_sim")


class Node:
    """One role: ROUTER sockets it serves, peers it calls, an optional control DEALER to the runner.

    Handlers return the reply message (or None for no reply); a ProtocolError they raise becomes an
    ERROR reply with its code and reason, any other exception an INTERNAL error; either way the
    process keeps serving. `current_identity` is the raw socket identity of the message being handled.
    """

    def __init__(self, role: str, control: str | None = None, poll_ms: int = 50,
                 capture_dir: Path | None = None, curve=None, exit_with_parent: bool = False,
                 faults: str | None = None):
        self.role = role
        self.faults = FaultPlan(faults.split(",")) if faults else None
        self.parent = os.getppid() if exit_with_parent else None
        self.curve = curve
        self.capture_dir = Path(capture_dir) if capture_dir else None
        self._captured = 0
        self.identity = f"{role}:{os.getpid()}"
        self.ctx = zmq.Context()
        self.traffic = TrafficLog(role)
        self.poller = zmq.Poller()
        self.routers: dict[zmq.Socket, Handler] = {}
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
            self.control = make_socket(self.ctx, zmq.DEALER, self.identity)
            if curve is not None:
                curve.client("runner")(self.control)
            self.control.connect(control)
            self.poller.register(self.control, zmq.POLLIN)

    # --- set-up ---------------------------------------------------------------------------
    def serve_router(self, endpoint: str, handler: Handler, setup=None) -> zmq.Socket:
        sock = make_socket(self.ctx, zmq.ROUTER)
        if self.curve is not None:
            self.curve.server(sock)
        if setup is not None:
            setup(sock)
        sock.bind(endpoint)
        self.endpoints[f"{self.role}"] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.routers[sock] = handler
        self.poller.register(sock, zmq.POLLIN)
        return sock

    def connect_peer(self, name: str, endpoint: str, setup=None) -> PeerClient:
        if setup is None and self.curve is not None:
            setup = self.curve.client(name)
        peer = PeerClient(self.ctx, name, endpoint, self.identity, self.traffic, setup,
                          should_stop=lambda: self.stopping)
        peer.faults = self.faults
        self.peers[name] = peer
        return peer

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame):
            log.info("%s: signal %s, shutting down", self.role, signum)
            self.stopping = True
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    # --- hooks for roles --------------------------------------------------------------------
    def on_command(self, action: str, params: dict) -> dict:
        raise ProtocolError(f"{self.role} has no action {action!r}", ErrorCode.UNKNOWN_ACTION)

    def tick(self) -> None:
        """Called after every poll; roles finish background work here."""

    # --- the loop ---------------------------------------------------------------------------
    def announce(self) -> None:
        if self.control is not None:
            self._send_control(Ready(self.role, os.getpid(), dict(self.endpoints)), 0)

    def _send_control(self, message: Message, seq: int) -> None:
        frames = encode(message, seq)
        self.traffic.add("runner", frames)
        try:
            self.control.send_multipart(frames)
        except zmq.Again:
            log.warning("%s: the runner cannot take %s (no connection)", self.role, message.TYPE.value)

    def _capture(self, sender: str, frames: list[bytes]) -> None:
        """With a capture dir, keep every raw frame received, as evidence for custody audits."""
        self._captured += 1
        for i, frame in enumerate(frames):
            name = f"{self._captured:05d}-{sender}.{i}"
            (self.capture_dir / name).write_bytes(bytes(frame))

    def _reply_for(self, handler: Handler, sender: str, frames: list[bytes]) -> tuple[Message, int]:
        seq = 0
        if self.capture_dir is not None:
            self._capture(sender, frames)
        try:
            packet = decode(frames)
            seq = self.current_seq = packet.seq
            if isinstance(packet.message, Ping):
                return Pong(self.role), seq
            return handler(sender, packet), seq
        except ProtocolError as exc:
            log.info("%s: error reply to %s: %s", self.role, sender, exc)
            reason = f"{exc.peer}: {exc.reason}" if isinstance(exc, RemoteError) and exc.peer else exc.reason
            return Error(exc.code.value, reason), seq
        except Exception as exc:  # noqa: BLE001 - a bug must not take the role down
            log.exception("%s: internal error", self.role)
            return Error(ErrorCode.INTERNAL.value, f"{type(exc).__name__}: {exc}"), seq

    def _control_handler(self, _sender: str, packet) -> Message:
        message = packet.message
        if isinstance(message, Shutdown):
            self.stopping = True
            return Result("shutdown", {})
        if not isinstance(message, Command):
            raise IllegalState(f"{message.TYPE.value} is not a control message a role accepts")
        if message.action == "stats":
            return Result("stats", {"messages": self.traffic.drain(), "pid": os.getpid()})
        return Result(message.action, self.on_command(message.action, dict(message.params)))

    def _sender(self, identity: bytes, frames) -> str:
        """Who sent this: with CURVE, the role whose public key the ZAP handshake proved (never the
        identity a peer claims); without CURVE, the role part of the socket identity."""
        if self.curve is None or not frames:
            return role_of(identity)
        user_id = frames[0].get("User-Id")
        return self.key_roles.get(user_id, "unknown")

    def send_reply(self, sock: zmq.Socket, identity: bytes, reply: Message, seq: int) -> None:
        """Answer a peer on a ROUTER (now, or later for a request a handler deferred by returning None)."""
        out = encode(reply, seq)
        for copy in self.faults.apply(reply.TYPE.value, out) if self.faults else [out]:
            self.traffic.add(role_of(identity), copy)
            try:
                sock.send_multipart([identity] + copy)
            except zmq.ZMQError:
                log.warning("%s: peer %s went away before its reply", self.role, role_of(identity))

    def poll_once(self) -> None:
        events = dict(self.poller.poll(self.poll_ms))
        for sock, handler in self.routers.items():
            while sock in events and sock.poll(0, zmq.POLLIN):
                identity, *frames = sock.recv_multipart(copy=False)
                identity, sender = identity.bytes, self._sender(identity.bytes, frames)
                frames = [f.bytes for f in frames]
                self.current_identity = identity
                reply, seq = self._reply_for(handler, sender, frames)
                if reply is not None:
                    self.send_reply(sock, identity, reply, seq)
        if self.parent is not None and os.getppid() != self.parent:
            log.warning("%s: the process that started it exited; shutting down", self.role)
            self.stopping = True
        if self.control is not None and self.control in events:
            frames = self.control.recv_multipart()
            reply, seq = self._reply_for(self._control_handler, "runner", frames)
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

