"""The four roles behind the web page: started here (or attached to, as `run --attach`) and driven only through the
protocol's control channel, exactly as the scenario runner does. One thread owns the runner's ProcessSet (its
control ROUTER), so the COMMANDs of every browser tab are serialized on the one socket; after each command it
drains every role's log of sent messages (`stats`), so a button can show the messages that passed while it ran.
A role lost (its process ended, stopped, or its control link closed) ends that role set: the roles started here are
started again, new processes on a new run directory (a new `generation`: every tab's keys went with the old ones);
roles started elsewhere cannot be, and every later click says they must be restarted.
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
RETRY_S = 10.0  # a role set that failed to start again is retried at the next click after this long


@dataclass
class StepOutcome:
    """What one COMMAND did: the role (and pid) that answered, seconds, bytes that passed between roles while it
    ran, those messages (the report's per-message data), and its RESULT or the error; `seq` numbers the commands
    of one role set (`generation`) in the order they ran."""

    role: str
    pid: int | None
    seconds: float
    bytes: int
    messages: list[dict]
    result: dict = field(default_factory=dict)
    error: ProtocolError | None = None
    seq: int = 0
    generation: int = 0

    def where(self) -> str:
        return f"{self.role} (pid {self.pid}) · {self.seconds:.2f} s · {self.bytes:,} B on the wire"


def _refused(role: str, reason: str, code: ErrorCode = ErrorCode.TIMEOUT, generation: int = 0) -> StepOutcome:
    return StepOutcome(role, None, 0.0, 0, [], error=ProtocolError(reason, code), generation=generation)


@dataclass
class _Job:
    future: Future
    role: str
    action: str
    params: dict
    thread: int  # the caller's thread, whose place in the queue `ahead` tells
    generation: int | None  # the role set the click was meant for (None: any)


class RoleDriver:
    """The four roles (started here, or attached) behind one thread that owns the runner's control socket."""

    def __init__(self, fhe: str = "execute", deployment: str | None = None, transport: str = "ipc",
                 secure: bool = True, attach: str | None = None, keys_dir: str | None = None,
                 liveness: float = DEFAULT_LIVENESS_S, command_timeout: float = COMMAND_TIMEOUT,
                 role_args: dict[str, list[str]] | None = None, network=None):
        self.fhe, self.command_timeout, self.attach = fhe, command_timeout, attach
        self._args = (transport, fhe, deployment, role_args or {}, secure, attach, keys_dir, liveness, network)
        self._jobs: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._procs: ProcessSet | None = None
        self._thread = threading.Thread(target=self._serve, name="role-driver", daemon=True)
        self._start_error: BaseException | None = None
        self._running: _Job | None = None
        self._seq = 0
        self.generation = 0  # +1 each time the roles are started again
        self.pids: dict[str, int] = {}
        self.exit_codes: dict[str, int | None] = {}
        self.ended_by: dict[str, str] = {}
        self.failure: str | None = None  # the last role lost: "role: reason"
        self.notice: str | None = None  # what the page says about it (the roles restarted, or to be restarted)
        self.down: str | None = None  # why the roles cannot be reached now (None: they can)
        self.events: list[str] = []  # each loss and restart, for the `ui` log

    def start(self, timeout: float = START_TIMEOUT) -> dict[str, int]:
        self._timeout = timeout
        self._thread.start()
        if not self._ready.wait(timeout + 30):  # ProcessSet.start has its own deadline; this one is a backstop
            raise ProtocolError(f"the roles were not ready within {timeout + 30:.0f} s", ErrorCode.TIMEOUT)
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        return self.pids

    # --- the driver thread ------------------------------------------------------------------------------------
    def _start_set(self, tmp: Path) -> ProcessSet | None:
        """Start (or attach to) one role set; None if it failed (start(): raised to its caller; later: `down`)."""
        procs = None
        try:
            procs = self._procs = ProcessSet(tmp, *self._args)
            self.pids = procs.start(self._timeout)
            return procs
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller, or said on the page
            if procs is not None:
                procs.stop()
            if not self._ready.is_set():
                self._start_error = exc
            else:
                self.down = f"the roles could not be started again ({exc}); stop `ui` and start it again"
                self.events.append(f"!! {self.down}")
            return None

    def _serve(self) -> None:
        attempt = 0.0
        while not self._stopping.is_set():
            with tempfile.TemporaryDirectory(prefix="fcs-ui-") as tmp:
                attempt = time.monotonic()
                procs = self._start_set(Path(tmp))
                first = not self._ready.is_set()
                self._ready.set()
                if procs is None and first:
                    return
                if procs is not None:
                    self.down = None
                    if not first:
                        self.generation += 1
                        pids = ", ".join(f"{r} pid {p}" for r, p in self.pids.items())
                        self.notice = (f"The roles were restarted at {time.strftime('%H:%M:%S')} (new processes: "
                                       f"{pids}) after {self.failure}. Every tab's keys and applications went with "
                                       f"the old ones: generate the keys again.")
                        self.events.append(f"!! {self.notice}")
                    self._drive(procs)
                    self.exit_codes = procs.stop()
                    self.ended_by = dict(procs.ended_by)
                    if self.attach and self.failure and not self._stopping.is_set():
                        self.down = (f"{self.failure}. These roles were started elsewhere (--attach), so the page "
                                     f"cannot start them again: restart the roles, then `ui`.")
                        self.notice = self.down
                        self.events.append(f"!! {self.down}")
                if self.down is not None:
                    self._refuse_until(attempt + (1e9 if self.attach else RETRY_S))
        self._answer_queued("the page is stopping")

    def _drive(self, procs: ProcessSet) -> None:
        """Run the queued clicks on this role set until the page stops or a role is lost."""
        while True:
            try:
                job = self._jobs.get(timeout=1.0)
            except queue.Empty:
                if self._stopping.is_set() or not self._watch(procs):
                    return
                continue
            if job is None or self._stopping.is_set():  # queued behind the stop: answered, not run
                if job is not None:
                    job.future.set_result(_refused(job.role, "the page is stopping"))
                return
            if job.generation is not None and job.generation != self.generation:
                job.future.set_result(_refused(job.role, self.notice or "the roles were restarted",
                                               ErrorCode.PEER_LOST, self.generation))
                continue
            self._running = job
            try:
                outcome = self._execute(procs, job.role, job.action, job.params)
            except Exception as exc:  # noqa: BLE001 - a bug or a socket error: the tab says so, the page goes on
                outcome = _refused(job.role, f"{type(exc).__name__}: {exc}", ErrorCode.INTERNAL, self.generation)
            finally:
                self._running = None
            lost = isinstance(outcome.error, RoleFailure) or not self._watch(procs)
            if lost:
                outcome.error = ProtocolError(f"{self.failure}. {self._after_loss()}", ErrorCode.PEER_LOST)
            job.future.set_result(outcome)
            if lost:
                return

    def _after_loss(self) -> str:
        if self.attach:
            return "These roles were started elsewhere (--attach): restart them, then `ui`."
        return "The page starts the roles again (new processes): generate the keys again."

    def _refuse_until(self, until: float) -> None:
        """While the roles are down: every click is answered with why, until the next attempt is due."""
        while not self._stopping.is_set():
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            if job is None:
                return
            if time.monotonic() >= until and not self.attach:
                self._jobs_put_front(job)
                return
            job.future.set_result(_refused(job.role, self.down or "the roles are down", ErrorCode.PEER_LOST,
                                           self.generation))

    def _jobs_put_front(self, job: _Job) -> None:
        with self._jobs.mutex:
            self._jobs.queue.appendleft(job)
            self._jobs.not_empty.notify()

    def _answer_queued(self, reason: str) -> None:
        while not self._jobs.empty():  # anything queued after the stop is answered too
            job = self._jobs.get()
            if job is not None:
                job.future.set_result(_refused(job.role, reason))

    def _watch(self, procs: ProcessSet) -> bool:
        """The runner's own liveness rule (same package: ProcessSet._check_alive); False once a role is lost."""
        try:
            procs._check_alive("waiting for the page")
        except RoleFailure as exc:
            self._lost(exc)
            return False
        return True

    def _lost(self, exc: RoleFailure) -> None:
        self.failure = f"the {exc.role} was lost ({exc.reason.splitlines()[0].split('; last log lines')[0]})"
        self.events.append(f"!! {exc.role}: {exc.reason}")

    def _execute(self, procs: ProcessSet, role: str, action: str, params: dict) -> StepOutcome:
        t0, wall0 = time.perf_counter(), time.time()
        self._seq += 1
        seq = self._seq
        result, error = {}, None
        try:
            result = procs.command(role, action, params, self.command_timeout)
        except ProtocolError as exc:
            error = exc
            if isinstance(exc, RoleFailure):
                self._lost(exc)
        seconds, wall1 = time.perf_counter() - t0, time.time()
        messages = procs.traffic.drain()
        for other in procs.procs:  # every role's log of what it sent (the report's message data)
            try:
                messages += procs.command(other, "stats", {}, 30.0)["messages"]
            except ProtocolError:
                pass
        window = sorted((m for m in messages if wall0 <= m["t"] <= wall1), key=lambda m: m["t"])
        wire = sum(m["bytes"] for m in window if "runner" not in (m["sender"], m["receiver"]))
        return StepOutcome(role, self.pids.get(role), round(seconds, 3), wire, window, result, error, seq,
                           self.generation)

    # --- what the tabs call -----------------------------------------------------------------------------------
    def call(self, role: str, action: str, params: dict, generation: int | None = None) -> StepOutcome:
        """Send a COMMAND to a role (on the driver's thread) and return what it did; never raises ProtocolError.
        With `generation`, a click meant for a role set that has since been replaced is answered, not run."""
        future: Future = Future()
        with self._lock:  # a job is queued before the stop's sentinel, or not at all
            if not self._thread.is_alive() or self._stopping.is_set():
                return _refused(role, "the roles are stopped")
            try:
                self._jobs.put_nowait(_Job(future, role, action, params, threading.get_ident(), generation))
            except queue.Full:
                return _refused(role, f"{MAX_QUEUED} clicks are already waiting for the roles; try again shortly")
        try:  # every command has its own deadline; a click queued behind many others gives up after this one
            return future.result(timeout=MAX_QUEUED * self.command_timeout)
        except FutureTimeout:
            return _refused(role, "the roles did not get to this click in time")

    def ahead(self, thread: int) -> int:
        """How many clicks run or wait before the one `thread` queued (0: it runs, or it queued nothing)."""
        with self._jobs.mutex:
            waiting = [job.thread if job is not None else None for job in self._jobs.queue]
        if thread not in waiting:
            return 0
        return waiting.index(thread) + (1 if self._running is not None else 0)

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
