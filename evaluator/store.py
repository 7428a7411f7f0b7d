"""The evaluator's bounded on-disk store: evaluation keys, sessions, inputs and outputs, each with an owner.

Layout under the work directory (directories 0700, files 0600, every file written atomically):
`keys/index.json` maps key ids to generated file names; `sessions/sNNNNNN/meta.json` holds a session's
ids, owner, inputs (party, variant, file, sha256), outputs (run id, file, seconds, input digests) and
every run id it ever accepted. Ids never become file names and file names are never parsed back, so
any id that was accepted survives a restart.

Ownership: a session is opened by its user's INPUT and belongs to it; bank and agency may only add
their own inputs to it, under the session's key id. Bounds are per owner: opening more sessions or
keys evicts only the opener's own oldest idle ones; a party's variants beyond its quota evict only that
party's own oldest variant; bytes are bounded per writer and in total, and a writer over its bound is
refused (OVER_QUOTA) rather than allowed to push another owner's data out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import ErrorCode, Forbidden, IllegalState, MalformedMessage, OverQuota, ProtocolError
from protocol.messages import check_fingerprint, check_id  # noqa: F401 (service)
from protocol.states import SESSION_TABLE, Event, SessionState, StateMachine

FILE_NAME = re.compile(r"[a-z][0-9]{1,12}\.(bin|evk)")
BASE_VARIANT = "base"
MAX_VARIANTS = 16          # per party per session, besides its base input
MAX_RUNS = 256             # run ids a session accepts in its life (they are never reused)
MAX_OUTPUTS = 16           # outputs kept per session (the oldest goes first)


def write_private(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename) with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class StoredInput:
    path: Path
    sha256: str
    size: int


@dataclass
class OutputRecord:
    path: Path
    seconds: float
    inputs: dict[str, str]  # party -> sha256 of the ciphertext the run used


@dataclass
class Session:
    session_id: str
    key_id: str
    owner: str
    order: int
    directory: Path
    parties: tuple[str, ...]
    machine: StateMachine = None
    inputs: dict[tuple[str, str], StoredInput] = field(default_factory=dict)
    outputs: OrderedDict[str, OutputRecord] = field(default_factory=OrderedDict)
    runs: list[str] = field(default_factory=list)
    failures: dict[str, ProtocolError] = field(default_factory=dict)
    running: str | None = None
    running_inputs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.machine is None:
            self.machine = StateMachine(f"session {self.session_id}", SessionState.COLLECTING, SESSION_TABLE)

    def missing(self) -> list[str]:
        return [p for p in self.parties if (p, BASE_VARIANT) not in self.inputs]

    def variants_of(self, party: str) -> list[str]:
        return [v for (p, v) in self.inputs if p == party and v != BASE_VARIANT]


class SessionStore:
    """Keys and sessions with owners and bounds; see the module docstring."""

    def __init__(self, root: Path, parties: tuple[str, ...], max_sessions: int = 20, max_keys: int = 20,
                 max_bytes: int | None = None):
        self.root = Path(root)
        self.parties = parties
        self.max_sessions, self.max_keys, self.max_bytes = max_sessions, max_keys, max_bytes
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.keys: OrderedDict[str, Path] = OrderedDict()
        self.key_owner: dict[str, str] = {}
        self.key_sha256: dict[str, str] = {}  # key id -> sha256 hex of its evaluation key (KEY_QUERY's fingerprint)
        self.bytes_by: dict[str, int] = {}
        self._counter = 0
        for directory in (self.root, self.root / "sessions", self.root / "keys"):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)
        self.recovered = self._recover()

    # --- bookkeeping ------------------------------------------------------------------------
    def _next_name(self, prefix: str, suffix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter:06d}{suffix}"

    def _quota(self, writer: str) -> int | None:
        """A writer's own byte bound: bank and agency a quarter of the store each, the user all of it."""
        if self.max_bytes is None:
            return None
        return self.max_bytes if writer == "user" else self.max_bytes // 4

    def _account(self, writer: str, delta: int) -> None:
        self.bytes_by[writer] = self.bytes_by.get(writer, 0) + delta

    def bytes_on_disk(self) -> int:
        return sum(self.bytes_by.values())

    def _save_meta(self, session: Session) -> None:
        meta = {"session_id": session.session_id, "key_id": session.key_id, "owner": session.owner,
                "order": session.order, "runs": session.runs,
                "inputs": [{"party": p, "variant": v, "file": s.path.name, "sha256": s.sha256}
                           for (p, v), s in session.inputs.items()],
                "outputs": [{"run_id": r, "file": o.path.name, "seconds": o.seconds, "inputs": o.inputs}
                            for r, o in session.outputs.items()]}
        write_private(session.directory / "meta.json", json.dumps(meta).encode())

    def _save_keys(self) -> None:
        index = {k: {"file": p.name, "owner": self.key_owner[k], "sha256": self.key_sha256[k]}
                 for k, p in self.keys.items()}
        write_private(self.root / "keys" / "index.json", json.dumps(index).encode())

    # --- recovery ---------------------------------------------------------------------------
    def _file(self, directory: Path, name) -> Path:
        """A file named in metadata: a generated name inside `directory`, which must exist."""
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or not (directory / name).is_file():
            raise ValueError(f"bad file entry {name!r}")
        return directory / name

    def _recover(self) -> int:
        """Reload what a previous evaluator process wrote (files are written atomically, so a file that
        exists is whole); entries that do not check out are skipped, never trusted. A run that was in
        flight is not there: the user asks again."""
        keys_dir = self.root / "keys"
        try:
            index = json.loads((keys_dir / "index.json").read_text())
        except (OSError, ValueError):
            index = {}
        for key_id, entry in index.items() if isinstance(index, dict) else ():
            try:
                path = self._file(keys_dir, entry["file"])
                digest = hashlib.sha256(path.read_bytes()).hexdigest()  # the file's, whatever the index says
                self.keys[check_id("key id", key_id)] = path
                self.key_owner[key_id], self.key_sha256[key_id] = str(entry["owner"]), digest
                self._account(self.key_owner[key_id], path.stat().st_size)
            except (ProtocolError, ValueError, KeyError, TypeError, OSError):
                continue
        found = []
        for directory in sorted((self.root / "sessions").iterdir()):
            try:
                found.append(self._recover_session(directory))
            except (ProtocolError, ValueError, KeyError, TypeError, OSError):
                continue
        for session in sorted(found, key=lambda s: s.order):
            self.sessions[session.session_id] = session
        self._counter = max([self._counter] + [int(p.stem[1:]) for p in self.root.rglob("*")
                                                if FILE_NAME.fullmatch(p.name)] +
                            [int(d.name[1:]) for d in (self.root / "sessions").iterdir() if d.name[1:].isdigit()])
        return len(found)

    def _recover_session(self, directory: Path) -> Session:
        meta = json.loads((directory / "meta.json").read_text())
        session = Session(check_id("session id", meta["session_id"]), check_id("key id", meta["key_id"]),
                          str(meta["owner"]), int(meta["order"]), directory, self.parties)
        for entry in meta["inputs"]:
            path = self._file(directory, entry["file"])
            party, variant = entry["party"], check_id("variant", entry["variant"])
            if party not in self.parties:
                raise ValueError(f"unknown party {party!r}")
            session.inputs[(party, variant)] = StoredInput(path, str(entry["sha256"]), path.stat().st_size)
            self._account(party, path.stat().st_size)
        for entry in meta["outputs"]:
            path = self._file(directory, entry["file"])
            session.outputs[check_id("run id", entry["run_id"])] = OutputRecord(
                path, float(entry["seconds"]), {str(k): str(v) for k, v in entry["inputs"].items()})
            self._account(session.owner, path.stat().st_size)
        session.runs = [check_id("run id", r) for r in meta["runs"]]
        if not session.missing():
            session.machine.fire(Event.INPUT_COMPLETE)
        return session

    # --- keys -----------------------------------------------------------------------------
    def put_key(self, key_id: str, blob: bytes, owner: str = "user", busy: set[str] = frozenset()) -> list[str]:
        """Store an evaluation key (keys are immutable); returns the owner's keys evicted to stay in bounds."""
        check_id("key id", key_id)
        if key_id in self.keys:
            raise IllegalState(f"key id {key_id!r} already has an evaluation key (keys are never replaced)")
        self._make_room(owner, len(blob), keep_key=key_id, busy_keys=busy)
        path = self.root / "keys" / self._next_name("k", ".evk")
        write_private(path, blob)
        self.keys[key_id], self.key_owner[key_id] = path, owner
        self.key_sha256[key_id] = hashlib.sha256(blob).hexdigest()
        self._account(owner, len(blob))
        evicted = []
        while sum(1 for k in self.keys if self.key_owner[k] == owner) > self.max_keys:
            victim = next((k for k in self.keys if self.key_owner[k] == owner and k != key_id and k not in busy),
                          None)
            if victim is None:
                break
            self._drop_key(victim)
            evicted.append(victim)
        self._save_keys()
        return evicted

    def replace_key(self, key_id: str) -> list[str]:
        """Its owner made new keys for `key_id`: drop the old key and every session under it (their ciphertexts
        were encrypted under the old keys); returns the sessions dropped."""
        dropped = [sid for sid, s in self.sessions.items() if s.key_id == key_id]
        for sid in dropped:
            self._drop_session(sid)
        self._drop_key(key_id)
        self._save_keys()
        return dropped

    def key_fingerprint(self, key_id: str) -> str | None:
        return self.key_sha256.get(key_id)

    def _drop_key(self, key_id: str) -> None:
        path = self.keys.pop(key_id)
        owner = self.key_owner.pop(key_id)
        self.key_sha256.pop(key_id, None)
        self._account(owner, -path.stat().st_size)
        path.unlink(missing_ok=True)

    def key_path(self, key_id: str) -> Path | None:
        return self.keys.get(key_id)

    # --- sessions -------------------------------------------------------------------------
    def get(self, session_id: str) -> Session:
        try:
            return self.sessions[check_id("session id", session_id)]
        except KeyError:
            raise ProtocolError(f"unknown session {session_id!r} (never opened by its user, or evicted)",
                                ErrorCode.UNKNOWN_SESSION) from None

    def open(self, session_id: str, key_id: str, owner: str = "user") -> Session:
        """The owner's session under this id, opened now if new; someone else's is FORBIDDEN."""
        check_id("session id", session_id)
        check_id("key id", key_id)
        if session_id in self.sessions:
            session = self.sessions[session_id]
            if session.owner != owner or session.key_id != key_id:
                raise Forbidden(f"session {session_id!r} belongs to another key id or owner")
            return session
        self._counter += 1
        directory = self.root / "sessions" / f"s{self._counter:06d}"
        directory.mkdir(mode=0o700)
        session = Session(session_id, key_id, owner, self._counter, directory, self.parties)
        self.sessions[session_id] = session
        self._save_meta(session)
        self._evict_sessions(owner, keep=session_id)
        return session

    def _drop_session(self, session_id: str) -> None:
        session = self.sessions.pop(session_id)
        for (party, _), stored in session.inputs.items():
            self._account(party, -stored.size)
        for output in session.outputs.values():
            self._account(session.owner, -output.path.stat().st_size if output.path.exists() else 0)
        shutil.rmtree(session.directory, ignore_errors=True)

    def _evict_sessions(self, owner: str, keep: str) -> None:
        """Beyond max_sessions of this owner, its oldest idle sessions go (never another owner's)."""
        while sum(1 for s in self.sessions.values() if s.owner == owner) > self.max_sessions:
            victim = next((sid for sid, s in self.sessions.items()
                           if s.owner == owner and s.running is None and sid != keep), None)
            if victim is None:
                return
            self._drop_session(victim)

    def _evictable(self, writer: str, keep_session: str | None, keep_key: str | None,
                   busy_keys: set[str]) -> list[tuple[str, object, int, int]]:
        """What the writer may give up, oldest first: (kind, what, its own bytes, total bytes)."""
        found: list[tuple[str, object, int, int]] = []
        if writer == "user":
            for sid, s in self.sessions.items():
                if s.owner == writer and s.running is None and sid != keep_session:
                    total = sum(i.size for i in s.inputs.values()) + self._outputs_bytes(s)
                    own = s.inputs[("user", "base")].size if ("user", "base") in s.inputs else 0
                    found.append(("session", sid, own + self._outputs_bytes(s), total))
            for key_id, path in self.keys.items():
                if self.key_owner[key_id] == writer and key_id != keep_key and key_id not in busy_keys:
                    size = path.stat().st_size
                    found.append(("key", key_id, size, size))
        else:
            for s in self.sessions.values():
                if s.running is None:
                    for v in s.variants_of(writer):
                        size = s.inputs[(writer, v)].size
                        found.append(("variant", (s, v), size, size))
        return found

    @staticmethod
    def _outputs_bytes(session: Session) -> int:
        return sum(o.path.stat().st_size for o in session.outputs.values() if o.path.exists())

    def _make_room(self, writer: str, size: int, keep_session: str | None = None, keep_key: str | None = None,
                   busy_keys: set[str] = frozenset()) -> None:
        """Free room for `size` more bytes within the writer's quota and the store's bound by evicting only
        the writer's own oldest idle data; if even all of that would not do, refuse (OverQuota) and
        evict nothing."""
        if self.max_bytes is None:
            return
        quota = self._quota(writer)
        own_over = self.bytes_by.get(writer, 0) + size - quota
        total_over = self.bytes_on_disk() + size - self.max_bytes
        if own_over <= 0 and total_over <= 0:
            return
        candidates = self._evictable(writer, keep_session, keep_key, busy_keys)
        if own_over > sum(c[2] for c in candidates) or total_over > sum(c[3] for c in candidates):
            raise OverQuota(f"the {writer} has no room for {size} more bytes (its quota is {quota} bytes, "
                            f"the store's {self.max_bytes})")
        for kind, what, own, total in candidates:
            if own_over <= 0 and total_over <= 0:
                return
            if kind == "session":
                self._drop_session(what)
            elif kind == "key":
                self._drop_key(what)
                self._save_keys()
            else:
                session, variant = what
                self._drop_input(session, writer, variant)
            own_over, total_over = own_over - own, total_over - total

    def _drop_input(self, session: Session, party: str, variant: str) -> None:
        stored = session.inputs.pop((party, variant))
        self._account(party, -stored.size)
        stored.path.unlink(missing_ok=True)
        self._save_meta(session)

    def add_input(self, session: Session, party: str, variant: str, key_id: str, blob: bytes) -> None:
        """Store a party's input (a resend replaces the party's own input of that variant)."""
        check_id("variant", variant)
        if key_id != session.key_id:
            raise Forbidden(f"session {session.session_id!r} is encrypted under another key id")
        still_missing = [p for p in session.missing() if not (p == party and variant == BASE_VARIANT)]
        event = Event.INPUT_PARTIAL if still_missing else Event.INPUT_COMPLETE
        if not session.machine.can(event):
            session.machine.fire(event)  # raises IllegalState naming the state (e.g. RUNNING)
        old = session.inputs.get((party, variant))
        self._make_room(party, len(blob) - (old.size if old else 0), keep_session=session.session_id)
        if variant != BASE_VARIANT and old is None:
            own = session.variants_of(party)
            if len(own) >= MAX_VARIANTS:
                self._drop_input(session, party, own[0])  # the party's own oldest variant
        path = old.path if old else session.directory / self._next_name("i", ".bin")
        write_private(path, blob)
        if old:
            self._account(party, -old.size)
        session.inputs.pop((party, variant), None)  # re-insert: the newest variant comes last
        session.inputs[(party, variant)] = StoredInput(path, digest(blob), len(blob))
        self._account(party, len(blob))
        session.machine.fire(event)
        self._save_meta(session)

    # --- runs -----------------------------------------------------------------------------
    def plan_run(self, session: Session, run_id: str, variants: dict) -> list[StoredInput]:
        """Check that a run with this new id can start; return its inputs (user, bank, agency order)."""
        check_id("run id", run_id)
        if run_id in session.runs:
            raise IllegalState(f"run id {run_id!r} was already used in session {session.session_id!r}; "
                               "every run needs a new id")
        if len(session.runs) >= MAX_RUNS:
            raise OverQuota(f"session {session.session_id!r} has had {MAX_RUNS} runs; open a new session")
        if session.machine.state is SessionState.COLLECTING:
            raise ProtocolError(f"inputs missing from: {', '.join(session.missing())}", ErrorCode.MISSING_INPUTS)
        chosen = []
        for party in self.parties:
            variant = variants.get(party, BASE_VARIANT)
            if not isinstance(variant, str) or (party, variant) not in session.inputs:
                raise ProtocolError(f"inputs missing from: {party} (variant {str(variant)[:64]!r})",
                                    ErrorCode.MISSING_INPUTS)
            chosen.append(session.inputs[(party, variant)])
        unknown = set(variants) - set(self.parties)
        if unknown:
            raise MalformedMessage(f"variants name unknown parties: {sorted(unknown)[:3]}")
        if not session.machine.can(Event.RUN):
            session.machine.fire(Event.RUN)  # raises IllegalState naming the state (e.g. RUNNING)
        return chosen

    def start_run(self, session: Session, run_id: str, chosen: list[StoredInput]) -> list[Path]:
        """Record the run (its id is used from now on); return the input files it reads."""
        session.machine.fire(Event.RUN)
        session.runs.append(run_id)
        session.running = run_id
        session.running_inputs = {p: s.sha256 for p, s in zip(self.parties, chosen)}
        self._save_meta(session)
        return [s.path for s in chosen]

    def begin_run(self, session: Session, run_id: str, variants: dict) -> list[Path]:
        return self.start_run(session, run_id, self.plan_run(session, run_id, variants))

    def output_path(self, session: Session) -> Path:
        return session.directory / self._next_name("o", ".bin")

    def finish_run(self, session: Session, run_id: str, path: Path, seconds: float) -> None:
        session.outputs[run_id] = OutputRecord(path, seconds, dict(session.running_inputs))
        self._account(session.owner, path.stat().st_size)
        while len(session.outputs) > MAX_OUTPUTS:
            _, old = session.outputs.popitem(last=False)
            self._account(session.owner, -old.path.stat().st_size)
            old.path.unlink(missing_ok=True)
        session.running, session.running_inputs = None, {}
        session.machine.fire(Event.RUN_DONE)
        self._save_meta(session)

    def fail_run(self, session: Session, run_id: str, error: ProtocolError) -> None:
        session.failures[run_id] = error
        session.running, session.running_inputs = None, {}
        session.machine.fire(Event.RUN_FAILED)
