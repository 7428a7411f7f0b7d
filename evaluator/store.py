"""The evaluator's bounded, on-disk session store: evaluation keys, input and output ciphertexts (files 0600)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import ErrorCode, MalformedMessage, ProtocolError
from protocol.states import SESSION_TABLE, Event, SessionState, StateMachine

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BASE_VARIANT = "base"


def check_id(kind: str, value: str) -> str:
    """Ids become file names: allow only a short, safe alphabet."""
    if not isinstance(value, str) or not SAFE_ID.match(value):
        raise MalformedMessage(f"{kind} {value!r} must match {SAFE_ID.pattern}")
    return value


def write_private(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename) with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


@dataclass
class Session:
    session_id: str
    key_id: str
    order: int
    directory: Path
    parties: tuple[str, ...]
    machine: StateMachine = None
    inputs: dict[tuple[str, str], Path] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, ProtocolError] = field(default_factory=dict)
    running: str | None = None

    def __post_init__(self):
        if self.machine is None:
            self.machine = StateMachine(f"session {self.session_id}", SessionState.COLLECTING, SESSION_TABLE)

    def missing(self) -> list[str]:
        return [p for p in self.parties if (p, BASE_VARIANT) not in self.inputs]


class SessionStore:
    """At most `max_sessions` sessions (the oldest is evicted with all its files), `max_keys` keys,
    and `max_bytes` on disk (oldest idle sessions go first, then the oldest keys)."""

    def __init__(self, root: Path, parties: tuple[str, ...], max_sessions: int = 20, max_keys: int = 20,
                 max_bytes: int | None = None):
        self.root = Path(root)
        self.parties = parties
        self.max_sessions, self.max_keys, self.max_bytes = max_sessions, max_keys, max_bytes
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.keys: OrderedDict[str, Path] = OrderedDict()
        self._order = 0
        (self.root / "sessions").mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "keys").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.recovered = self._recover()

    def _recover(self) -> int:
        """Reload keys and sessions a previous evaluator process wrote (files are written atomically,
        so a file that exists is whole); a run that was in flight is simply not there: ask again."""
        for path in sorted((self.root / "keys").glob("*.evk"), key=lambda p: p.stat().st_mtime):
            self.keys[path.stem] = path
        found = []
        for directory in (self.root / "sessions").iterdir():
            try:
                meta = json.loads((directory / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            found.append((int(meta["order"]), directory, meta["key_id"]))
        for order, directory, key_id in sorted(found):
            session = Session(directory.name, key_id, order, directory, self.parties)
            for path in directory.glob("input__*__*.bin"):
                _, party, variant = path.stem.split("__")
                session.inputs[(party, variant)] = path
            for path in directory.glob("output__*.bin"):
                session.outputs[path.stem.split("__", 1)[1]] = path
            if not session.missing():
                session.machine.fire(Event.INPUT_COMPLETE)
            self.sessions[session.session_id] = session
            self._order = max(self._order, order)
        return len(found)

    # --- keys -----------------------------------------------------------------------------
    def put_key(self, key_id: str, blob: bytes) -> list[str]:
        """Store an evaluation key; returns the ids of keys evicted to stay within bounds."""
        check_id("key id", key_id)
        path = self.root / "keys" / f"{key_id}.evk"
        write_private(path, blob)
        self.keys[key_id] = path
        self.keys.move_to_end(key_id)
        evicted = []
        while len(self.keys) > self.max_keys:
            old, old_path = self.keys.popitem(last=False)
            old_path.unlink(missing_ok=True)
            evicted.append(old)
        self.enforce_bytes(keep=key_id)
        return evicted

    def enforce_bytes(self, keep: str | None = None) -> None:
        """Evict the oldest idle sessions, then the oldest keys, while the store is over max_bytes."""
        if self.max_bytes is None:
            return
        while self.bytes_on_disk() > self.max_bytes:
            victim = next((s for s, v in self.sessions.items() if v.running is None and s != keep), None)
            if victim is not None:
                shutil.rmtree(self.sessions.pop(victim).directory, ignore_errors=True)
                continue
            key = next((k for k in self.keys if k != keep), None)
            if key is None:
                return
            self.keys.pop(key).unlink(missing_ok=True)

    def key_path(self, key_id: str) -> Path | None:
        return self.keys.get(key_id)

    # --- sessions -------------------------------------------------------------------------
    def get(self, session_id: str) -> Session:
        try:
            return self.sessions[check_id("session id", session_id)]
        except KeyError:
            raise ProtocolError(f"unknown session {session_id!r} (never opened, or evicted)",
                                ErrorCode.UNKNOWN_SESSION) from None

    def open(self, session_id: str, key_id: str) -> Session:
        check_id("session id", session_id)
        check_id("key id", key_id)
        if session_id in self.sessions:
            session = self.sessions[session_id]
            if session.key_id != key_id:
                raise ProtocolError(f"session {session_id!r} belongs to another key id",
                                    ErrorCode.ILLEGAL_STATE)
            return session
        self._order += 1
        directory = self.root / "sessions" / session_id
        directory.mkdir(mode=0o700, exist_ok=True)
        (directory / "meta.json").write_text(json.dumps({"key_id": key_id, "order": self._order}))
        session = Session(session_id, key_id, self._order, directory, self.parties)
        self.sessions[session_id] = session
        self._evict()
        return session

    def _evict(self) -> None:
        while len(self.sessions) > self.max_sessions:
            oldest_id = next((s for s, v in self.sessions.items() if v.running is None), None)
            if oldest_id is None:
                return
            oldest = self.sessions.pop(oldest_id)
            shutil.rmtree(oldest.directory, ignore_errors=True)

    def add_input(self, session: Session, party: str, variant: str, blob: bytes) -> None:
        check_id("variant", variant)
        still_missing = [p for p in session.missing() if not (p == party and variant == BASE_VARIANT)]
        event = Event.INPUT_PARTIAL if still_missing else Event.INPUT_COMPLETE
        if not session.machine.can(event):
            session.machine.fire(event)  # raises IllegalState naming the state (e.g. RUNNING)
        path = session.directory / f"input__{party}__{variant}.bin"
        write_private(path, blob)
        session.inputs[(party, variant)] = path
        session.machine.fire(event)
        self.enforce_bytes(keep=session.session_id)

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
