"""The implementation under test, as the conformance checks reach it: one socket per identity they speak as."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import zmq

from ..messages import Message, Packet, decode, encode
from ..transport import make_socket

Check = tuple[str, "callable"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


class Target:
    """DEALER sockets to the role under test, one per identity it must tell apart (user, bank, agency,
    runner, evaluator: each with that role's CURVE key from keys_dir), plus clients it must not admit."""

    def __init__(self, role: str, endpoint: str, keys_dir: str | None, server_key: bytes | None,
                 timeout: float):
        self.role, self.endpoint, self.timeout = role, endpoint, timeout
        self.ctx = zmq.Context()
        self.keys_dir, self.server_key = keys_dir, server_key
        self.secure = keys_dir is not None
        self.socks: dict[str, zmq.Socket] = {}
        self.seq = 0
        self._fresh = 0

    def has_identity(self, as_role: str) -> bool:
        from ..curve import own_keys_dir
        return not self.secure or (own_keys_dir(as_role, self.keys_dir) / f"{as_role}.key_secret").is_file()

    def server_public_key(self) -> bytes:
        from ..curve import Curve
        return self.server_key or Curve.load("runner" if self.has_identity("runner") else "user",
                                             self.keys_dir).peer_key(self.role)

    def connect(self, as_role: str, curve_keys: tuple[bytes, bytes] | None = None, plain: bool = False,
                options: dict | None = None, identity: str | None = None) -> zmq.Socket:
        """A new socket speaking as `as_role` (its CURVE key), or with the given key pair, or without CURVE."""
        self._fresh += 1
        sock = make_socket(self.ctx, zmq.DEALER, identity or f"{as_role}:{os.getpid()}-{self._fresh}")
        for option, value in (options or {}).items():
            sock.setsockopt(option, value)
        if self.secure and not plain:
            if curve_keys is None:
                from ..curve import Curve
                curve = Curve.load(as_role, self.keys_dir)
                curve_keys = (curve.public, curve.secret)
            sock.curve_publickey, sock.curve_secretkey = curve_keys
            sock.curve_serverkey = self.server_public_key()
        sock.connect(self.endpoint)
        return sock

    def sock(self, as_role: str) -> zmq.Socket:
        if as_role not in self.socks:
            self.socks[as_role] = self.connect(as_role)
        return self.socks[as_role]

    def raw(self, frames: list[bytes], as_role: str = "user", sock: zmq.Socket | None = None,
            timeout: float | None = None):
        """Send frames; return the decoded reply (None on timeout, "undecodable" for garbage)."""
        sock = sock or self.sock(as_role)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return None
        if sock.poll(int((self.timeout if timeout is None else timeout) * 1000)):
            try:
                return decode(sock.recv_multipart())
            except Exception:  # noqa: BLE001 - an undecodable reply is no reply
                return "undecodable"
        return None

    def message(self, frames: list[bytes], as_role: str = "user"):
        """Send raw frames; the reply's message, or what went wrong instead, as text."""
        packet = self.raw(frames, as_role)
        return packet if packet is None or isinstance(packet, str) else packet.message

    def ask(self, message: Message, as_role: str = "user", timeout: float | None = None):
        self.seq += 1
        packet = self.raw(encode(message, self.seq), as_role, timeout=timeout)
        if not isinstance(packet, Packet):
            return packet
        return packet.message if packet.seq == self.seq else f"reply carried seq {packet.seq}, not {self.seq}"

    def alive(self, timeout: float = 10.0) -> bool:
        """A fresh connection's PING is answered by a PONG within `timeout` (the implementation still serves)."""
        from ..messages import Ping, Pong
        sock = self.connect("user" if self.has_identity("user") else "runner")
        try:
            packet = self.raw(encode(Ping(), 1), sock=sock, timeout=timeout)
            return isinstance(getattr(packet, "message", None), Pong)
        finally:
            sock.close(linger=0)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.ctx.destroy(linger=0)


def is_error(reply, code: str, mention: str = "") -> tuple[bool, str]:
    ok = getattr(reply, "TYPE", None) is not None and reply.TYPE.value == "ERROR" and reply.code == code \
        and mention in reply.reason
    return ok, f"expected ERROR {code}{' mentioning ' + repr(mention) if mention else ''}, got {show(reply)}"


def is_type(reply, type_name: str, **fields) -> tuple[bool, str]:
    ok = getattr(reply, "TYPE", None) is not None and reply.TYPE.value == type_name and all(
        getattr(reply, k, None) == v for k, v in fields.items())
    return ok, f"expected {type_name} {fields or ''}, got {show(reply)}"


def show(reply) -> str:
    if reply is None:
        return "no reply before the deadline"
    if isinstance(reply, str):
        return reply
    text = json.dumps({k: v for k, v in reply.__dict__.items() if not isinstance(v, (bytes, tuple))})
    return f"{reply.TYPE.value} {text[:160]}"


def code_of(reply) -> str:
    if reply is None or isinstance(reply, str):
        return show(reply)
    return reply.code if reply.TYPE.value == "ERROR" else reply.TYPE.value
