"""Typed, frozen messages and the matched encode/decode pair for the multipart frame layout.

Frame layout (protocol/SPEC.md): [version tag, type name, JSON header, blob 0, blob 1, ...].
The header always has "seq" (int); the other keys are the message's fields. Binary fields
(keys, ciphertexts) are raw frames, never JSON. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Sequence, Union, get_origin, get_type_hints

from . import PROTOCOL_VERSION
from .errors import ErrorCode, MalformedMessage, MessageTooLarge, UnknownMessageType, VersionMismatch

MAX_HEADER_BYTES = 64 * 1024
# Large blobs (evaluation keys) travel as frames of at most this size, so that every socket can refuse
# any single frame larger than its largest legal frame before allocating it (ZMQ_MAXMSGSIZE is per frame).
BLOB_CHUNK = 1024 * 1024


class MessageType(str, Enum):
    # control plane (runner <-> role)
    READY = "READY"
    COMMAND = "COMMAND"
    RESULT = "RESULT"
    SHUTDOWN = "SHUTDOWN"
    # data plane (role <-> role)
    PING = "PING"
    PONG = "PONG"
    ACK = "ACK"
    ERROR = "ERROR"
    KEY_QUERY = "KEY_QUERY"
    KEY_STATUS = "KEY_STATUS"
    EVAL_KEY = "EVAL_KEY"
    CLIENT_KEY = "CLIENT_KEY"
    INPUT = "INPUT"
    RUN = "RUN"
    GET_OUTPUT = "GET_OUTPUT"
    OUTPUT = "OUTPUT"
    CANDIDATE = "CANDIDATE"


@dataclass(frozen=True)
class Message:
    """Base of every message. Subclasses set TYPE, MAX_BYTES, and BLOBS (names of bytes fields).

    A blob field typed `tuple` is a list of frames; a bytes field named in CHUNKED is cut into frames of
    at most BLOB_CHUNK bytes. MAX_FRAMES bounds the frames of one message (checked before copying).
    """

    TYPE: ClassVar[MessageType]
    BLOBS: ClassVar[tuple[str, ...]] = ()
    CHUNKED: ClassVar[tuple[str, ...]] = ()
    MAX_BYTES: ClassVar[int] = 64 * 1024
    MAX_FRAMES: ClassVar[int] = 3
    MAX_HEADER: ClassVar[int] = MAX_HEADER_BYTES


@dataclass(frozen=True)
class Ready(Message):
    TYPE = MessageType.READY
    role: str
    pid: int
    endpoints: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Command(Message):
    TYPE = MessageType.COMMAND
    action: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Result(Message):
    TYPE = MessageType.RESULT
    MAX_BYTES = 4 * 1024 * 1024  # `stats` carries the role's (bounded) traffic log in its header
    MAX_HEADER = MAX_BYTES
    action: str
    result: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Shutdown(Message):
    TYPE = MessageType.SHUTDOWN


@dataclass(frozen=True)
class Ping(Message):
    TYPE = MessageType.PING


@dataclass(frozen=True)
class Pong(Message):
    TYPE = MessageType.PONG
    role: str


@dataclass(frozen=True)
class Ack(Message):
    TYPE = MessageType.ACK
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Error(Message):
    TYPE = MessageType.ERROR
    code: str
    reason: str


@dataclass(frozen=True)
class KeyQuery(Message):
    """Is this key id's evaluation key at the evaluator, and is it this one (`fingerprint`: sha256 hex of the
    serialized evaluation key)? A key id whose stored key has another fingerprint is not present."""
    TYPE = MessageType.KEY_QUERY
    key_id: str
    fingerprint: str


@dataclass(frozen=True)
class KeyStatus(Message):
    TYPE = MessageType.KEY_STATUS
    key_id: str
    present: bool


@dataclass(frozen=True)
class EvalKey(Message):
    TYPE = MessageType.EVAL_KEY
    BLOBS = ("evaluation_key",)
    CHUNKED = ("evaluation_key",)
    MAX_BYTES = 512 * 1024 * 1024  # the evaluator lowers it to its circuit's exact key size
    MAX_FRAMES = 3 + MAX_BYTES // BLOB_CHUNK
    key_id: str
    evaluation_key: bytes


@dataclass(frozen=True)
class ClientKey(Message):
    """The secret keys the inputs are encrypted under (`key_ids[i]` is the circuit's id of `secret_keys[i]`),
    sent by the user to bank and agency only. The output's secret key is never among them."""

    TYPE = MessageType.CLIENT_KEY
    BLOBS = ("secret_keys",)
    MAX_BYTES = 4 * 1024 * 1024
    MAX_FRAMES = 3 + 8
    key_id: str
    key_ids: list = field(default_factory=list)
    secret_keys: tuple = ()


@dataclass(frozen=True)
class Input(Message):
    TYPE = MessageType.INPUT
    BLOBS = ("ciphertext",)
    MAX_BYTES = 1024 * 1024
    MAX_FRAMES = 4
    session_id: str
    key_id: str
    party: str
    variant: str
    ciphertext: bytes


@dataclass(frozen=True)
class Run(Message):
    TYPE = MessageType.RUN
    session_id: str
    run_id: str
    variants: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GetOutput(Message):
    """With wait_ms > 0 the evaluator holds the request until the output is ready or wait_ms passed."""

    TYPE = MessageType.GET_OUTPUT
    session_id: str
    run_id: str
    wait_ms: int = 0


@dataclass(frozen=True)
class Output(Message):
    """`inputs` binds the output to its run: party -> sha256 (hex) of the ciphertext the run used."""

    TYPE = MessageType.OUTPUT
    BLOBS = ("ciphertext",)
    MAX_BYTES = 16 * 1024 * 1024
    MAX_FRAMES = 4
    session_id: str
    run_id: str
    run_seconds: float
    inputs: dict
    ciphertext: bytes


@dataclass(frozen=True)
class Candidate(Message):
    """User -> agency: encrypt the applicant's agency features with the bin `offset` bins above its own.

    With encrypt false the agency only answers (ACK) with the bin name and how many bins lie above.
    """

    TYPE = MessageType.CANDIDATE
    session_id: str
    key_id: str
    offset: int
    variant: str
    encrypt: bool = True


MESSAGE_CLASSES: dict[MessageType, type[Message]] = {
    cls.TYPE: cls for cls in (Ready, Command, Result, Shutdown, Ping, Pong, Ack, Error, KeyQuery,
                              KeyStatus, EvalKey, ClientKey, Input, Run, GetOutput, Output, Candidate)
}
AnyMessage = Union[tuple(MESSAGE_CLASSES.values())]


@dataclass(frozen=True)
class Packet:
    """A decoded message with its envelope (sequence number)."""

    seq: int
    message: Message


def encode(message: Message, seq: int) -> list[bytes]:
    """Message -> frames. The inverse of `decode`."""
    header: dict[str, Any] = {"seq": seq}
    blobs: list[bytes] = []
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if f.name in message.CHUNKED:
            chunks = [value[i:i + BLOB_CHUNK] for i in range(0, len(value), BLOB_CHUNK)] or [b""]
            header[f"{f.name}_count"] = len(chunks)
            blobs.extend(bytes(c) for c in chunks)
        elif f.name in message.BLOBS:
            items = list(value) if isinstance(value, (tuple, list)) else [value]
            if isinstance(value, (tuple, list)):
                header[f"{f.name}_count"] = len(items)
            blobs.extend(bytes(b) for b in items)
        else:
            header[f.name] = value
    return [PROTOCOL_VERSION, message.TYPE.value.encode(), json.dumps(header).encode()] + blobs


def _check_type(name: str, value: Any, hint: Any) -> None:
    expected = get_origin(hint) or hint
    if expected is tuple or expected is bytes:
        return
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise MalformedMessage(f"header field {name!r} must be an integer")
    if expected is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise MalformedMessage(f"header field {name!r} must be a number")
    if expected in (str, bool, dict, list) and not isinstance(value, expected):
        raise MalformedMessage(f"header field {name!r} must be of type {expected.__name__}")


def decode(frames: Sequence[bytes]) -> Packet:
    """Frames -> Packet; raises a ProtocolError subclass naming what is wrong."""
    if len(frames) < 3:
        raise MalformedMessage(f"expected at least 3 frames (version, type, header), got {len(frames)}")
    version, type_name, raw_header, *blobs = [bytes(f) for f in frames]
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(f"version tag {version[:16]!r} is not {PROTOCOL_VERSION!r}")
    try:
        cls = MESSAGE_CLASSES[MessageType(type_name.decode("ascii"))]
    except (UnicodeDecodeError, ValueError):
        raise UnknownMessageType(f"unknown message type {type_name[:32]!r}") from None
    size = sum(len(f) for f in frames)
    if size > cls.MAX_BYTES or len(raw_header) > cls.MAX_HEADER or len(frames) > cls.MAX_FRAMES:
        raise MessageTooLarge(f"{cls.TYPE.value} of {size} bytes in {len(frames)} frames exceeds its limit "
                              f"of {cls.MAX_BYTES} bytes in {cls.MAX_FRAMES} frames")
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MalformedMessage("header must be a JSON object")
    seq = header.pop("seq", None)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise MalformedMessage("header field 'seq' must be a non-negative integer")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in cls.BLOBS:
            chunked = f.name in cls.CHUNKED
            is_list = get_origin(hints[f.name]) is tuple or hints[f.name] is tuple
            count = header.pop(f"{f.name}_count", None) if is_list or chunked else 1
            if isinstance(count, bool) or not isinstance(count, int) or count < 0 or count > len(blobs) \
                    or (chunked and count < 1):
                raise MalformedMessage(f"{cls.TYPE.value}: blob count for {f.name!r} does not match the frames")
            taken, blobs = blobs[:count], blobs[count:]
            if chunked and any(len(c) > BLOB_CHUNK for c in taken):
                raise MalformedMessage(f"{cls.TYPE.value}: a {f.name!r} frame exceeds {BLOB_CHUNK} bytes")
            kwargs[f.name] = b"".join(taken) if chunked else tuple(taken) if is_list else taken[0]
            continue
        if f.name not in header:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise MalformedMessage(f"{cls.TYPE.value}: header field {f.name!r} is missing")
        value = header.pop(f.name)
        _check_type(f.name, value, hints[f.name])
        kwargs[f.name] = value
    if header:
        raise MalformedMessage(f"{cls.TYPE.value}: unknown header fields {sorted(header)}")
    if blobs:
        raise MalformedMessage(f"{cls.TYPE.value}: {len(blobs)} unexpected extra frame(s)")
    return Packet(seq, cls(**kwargs))


SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_id(kind: str, value: str) -> str:
    """Ids (session, key, run, variant) are short and of a safe alphabet, matched whole (no trailing newline)."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value):
        raise MalformedMessage(f"{kind} {str(value)[:80]!r} must match {SAFE_ID.pattern}")
    return value


FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def check_fingerprint(value: str) -> str:
    """A key fingerprint: the sha256 of a serialized evaluation key, 64 lower-case hex digits."""
    if not isinstance(value, str) or not FINGERPRINT.fullmatch(value):
        raise MalformedMessage(f"fingerprint {str(value)[:80]!r} must be a sha256 in 64 lower-case hex digits")
    return value


def error_message(code: ErrorCode | str, reason: str) -> Error:
    return Error(code=ErrorCode(code).value, reason=reason)
