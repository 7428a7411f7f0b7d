"""One error root for everything that goes wrong between roles, with codes that cross the wire."""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Codes carried by ERROR messages (see protocol/SPEC.md, "Errors")."""

    VERSION_MISMATCH = "VERSION_MISMATCH"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    MALFORMED = "MALFORMED"
    TOO_LARGE = "TOO_LARGE"
    ILLEGAL_STATE = "ILLEGAL_STATE"
    FORBIDDEN = "FORBIDDEN"
    OVER_QUOTA = "OVER_QUOTA"
    UNKNOWN_SESSION = "UNKNOWN_SESSION"
    KEYS_NOT_GENERATED = "KEYS_NOT_GENERATED"
    MISSING_INPUTS = "MISSING_INPUTS"
    OUTPUT_NOT_READY = "OUTPUT_NOT_READY"
    BAD_CIPHERTEXT = "BAD_CIPHERTEXT"
    INVALID_INPUT = "INVALID_INPUT"
    NOT_DENIED = "NOT_DENIED"
    UNKNOWN_ACTION = "UNKNOWN_ACTION"
    TIMEOUT = "TIMEOUT"
    PEER_LOST = "PEER_LOST"
    INTERNAL = "INTERNAL"

    @classmethod
    def parse(cls, text: str) -> "ErrorCode":
        """The code a peer sent, or INTERNAL for one this version does not know."""
        try:
            return cls(text)
        except ValueError:
            return cls.INTERNAL


class ProtocolError(Exception):
    """Root of every protocol-level failure; `code` says which, `reason` says why in words."""

    code = ErrorCode.INTERNAL

    def __init__(self, reason: str, code: ErrorCode | None = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = ErrorCode(code)

    def __str__(self) -> str:
        return f"{self.code.value}: {self.reason}"


class PeerLost(ProtocolError):
    """A peer's connection closed while an answer was awaited: its process ended, or it answered no
    heartbeat within the liveness window (stopped, frozen, or cut off)."""

    code = ErrorCode.PEER_LOST


class VersionMismatch(ProtocolError):
    code = ErrorCode.VERSION_MISMATCH


class UnknownMessageType(ProtocolError):
    code = ErrorCode.UNKNOWN_TYPE


class MalformedMessage(ProtocolError):
    code = ErrorCode.MALFORMED


class MessageTooLarge(ProtocolError):
    code = ErrorCode.TOO_LARGE


class IllegalState(ProtocolError):
    code = ErrorCode.ILLEGAL_STATE


class Forbidden(ProtocolError):
    """The proven sender may not send this message, or may not touch what it names (another owner's)."""

    code = ErrorCode.FORBIDDEN


class OverQuota(ProtocolError):
    """The sender reached its own bound (count or bytes); other owners' state is never evicted for it."""

    code = ErrorCode.OVER_QUOTA


class PeerTimeout(ProtocolError):
    """A peer did not answer before the deadline (it may be dead, hung or cut off)."""

    code = ErrorCode.TIMEOUT


class RemoteError(ProtocolError):
    """The peer answered with an ERROR message; code and reason are the peer's."""

    def __init__(self, reason: str, code: ErrorCode, peer: str = ""):
        super().__init__(reason, code)
        self.peer = peer
