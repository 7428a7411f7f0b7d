"""The four roles behind the web page: started here (or attached to, as `run --attach`) and driven only through the
protocol's control channel, exactly as the scenario runner does. One thread owns the runner's ProcessSet (its
control ROUTER), so the COMMANDs of every browser tab are serialized on the one socket; after each command it
drains every role's log of sent messages (`stats`), so a button can show the messages that passed while it ran.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import ErrorCode, ProtocolError
from protocol.liveness import DEFAULT_LIVENESS_S

from simulation.processes import ProcessSet, RoleFailure
from simulation.runner import COMMAND_TIMEOUT, START_TIMEOUT

MAX_QUEUED = 64  # clicks waiting for the driver thread, across every tab: more are refused, not queued


@dataclass
class StepOutcome:
    """What one COMMAND did: the role (and pid) that answered, seconds, bytes that passed between roles while it
    ran, those messages (the report's per-message data), and its RESULT or the error."""

    role: str
    pid: int | None
    seconds: float
    bytes: int
    messages: list[dict]
    result: dict = field(default_factory=dict)
    error: ProtocolError | None = None

    def where(self) -> str:
        return f"{self.role} (pid {self.pid}) · {self.seconds:.2f} s · {self.bytes:,} B on the wire"


def _refused(role: str, reason: str, code: ErrorCode = ErrorCode.TIMEOUT) -> StepOutcome:
    return StepOutcome(role, None, 0.0, 0, [], error=ProtocolError(reason, code))


class RoleDriver:
    """The four roles (started here, or attached) behind one thread that owns the runner's control socket."""

    def __init__(self, fhe: str = "execute", deployment: str | None = None, transport: str = "ipc",
                 secure: bool = True, attach: str | None = None, keys_dir: str | None = None,
                 liveness: float = DEFAULT_LIVENESS_S, command_timeout: float = COMMAND_TIMEOUT):
        self.fhe, self.command_timeout = fhe, command_timeout
        self._args = (transport, fhe, deployment, {}, secure, attach, keys_dir, liveness)
        self._jobs: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._procs: ProcessSet | None = None
        self._thread = threading.Thread(target=self._serve, name="role-driver", daemon=True)
        self._start_error: BaseException | None = None
        self.pids: dict[str, int] = {}
        self.exit_codes: dict[str, int | None] = {}
        self.ended_by: dict[str, str] = {}
        self.failure: str | None = None  # a role lost while the page was idle

    def start(self, timeout: float = START_TIMEOUT) -> dict[str, int]:
        self._timeout = timeout
        self._thread.start()
        if not self._ready.wait(timeout + 30):  # ProcessSet.start has its own deadline; this one is a backstop
            raise ProtocolError(f"the roles were not ready within {timeout + 30:.0f} s", ErrorCode.TIMEOUT)
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        return self.pids

    def _serve(self) -> None:
        with tempfile.TemporaryDirectory(prefix="fcs-ui-") as tmp:
            procs = None
            try:
                procs = self._procs = ProcessSet(Path(tmp), *self._args)
                self.pids = procs.start(self._timeout)
            except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
                self._start_error = exc
            self._ready.set()
            while self._start_error is None:
                try:
                    job = self._jobs.get(timeout=1.0)
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    self._watch(procs)
                    continue
                if job is None:
                    break
                future, (role, action, params) = job
                if self._stopping.is_set():  # queued behind the stop: answered, not run
                    future.set_result(_refused(role, "the page is stopping"))
                    continue
                try:
                    future.set_result(self._execute(procs, role, action, params))
                except Exception as exc:  # noqa: BLE001 - a bug or a socket error: the tab says so, the page goes on
                    future.set_result(_refused(role, f"{type(exc).__name__}: {exc}", ErrorCode.INTERNAL))
            while not self._jobs.empty():  # anything queued after the stop is answered too
                job = self._jobs.get()
                if job is not None:
                    job[0].set_result(_refused(job[1][0], "the page is stopping"))
            if procs is not None:
                self.exit_codes = procs.stop()
                self.ended_by = dict(procs.ended_by)

    def _watch(self, procs: ProcessSet) -> None:
        if self.failure is None:
            try:
                procs._check_alive("waiting for the page")  # same package: the runner's own liveness rule
            except RoleFailure as exc:
                self.failure = f"{exc.role}: {exc.reason}"

    def _execute(self, procs: ProcessSet, role: str, action: str, params: dict) -> StepOutcome:
        t0, wall0 = time.perf_counter(), time.time()
        result, error = {}, None
        try:
            result = procs.command(role, action, params, self.command_timeout)
        except ProtocolError as exc:
            error = exc
            if isinstance(exc, RoleFailure):
                self.failure = self.failure or f"{exc.role}: {exc.reason}"
        seconds, wall1 = time.perf_counter() - t0, time.time()
        messages = procs.traffic.drain()
        for other in procs.procs:  # every role's log of what it sent (the report's message data)
            try:
                messages += procs.command(other, "stats", {}, 30.0)["messages"]
            except ProtocolError:
                pass
        window = sorted((m for m in messages if wall0 <= m["t"] <= wall1), key=lambda m: m["t"])
        wire = sum(m["bytes"] for m in window if "runner" not in (m["sender"], m["receiver"]))
        return StepOutcome(role, self.pids.get(role), round(seconds, 3), wire, window, result, error)

    def call(self, role: str, action: str, params: dict) -> StepOutcome:
        """Send a COMMAND to a role (on the driver's thread) and return what it did; never raises ProtocolError."""
        future: Future = Future()
        with self._lock:  # a job is queued before the stop's sentinel, or not at all
            if not self._thread.is_alive() or self._stopping.is_set():
                return _refused(role, "the roles are stopped")
            try:
                self._jobs.put_nowait((future, (role, action, params)))
            except queue.Full:
                return _refused(role, f"{MAX_QUEUED} clicks are already waiting for the roles; try again shortly")
        try:  # every command has its own deadline; a click queued behind many others gives up after this one
            return future.result(timeout=MAX_QUEUED * self.command_timeout)
        except FutureTimeout:
            return _refused(role, "the roles did not get to this click in time")

    def stop(self, grace: float = 30.0) -> dict[str, int | None]:
        """SHUTDOWN every role (then SIGTERM, SIGKILL: ProcessSet.stop) once the command in flight, if any, ends;
        one still running after `grace` seconds is cut short by killing the roles started here."""
        with self._lock:
            self._stopping.set()
            try:
                self._jobs.put(None, timeout=grace)
            except queue.Full:
                pass  # the driver thread also ends once stopping is set and nothing is queued
        if self._thread.ident is None:  # never started
            return self.exit_codes
        self._thread.join(grace)
        if self._thread.is_alive() and self._procs is not None:
            for proc in self._procs.procs.values():
                if proc.popen is not None and proc.popen.poll() is None:
                    proc.popen.kill()  # the command in flight then fails at once, naming the role
            self._thread.join(grace)
        return self.exit_codes
