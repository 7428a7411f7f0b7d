"""The Dask engine: each run goes to a cluster worker holding its evaluation key; lost runs are retried."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .runners import Finished, Job
from .store import write_private

log = logging.getLogger("fhe_credit_sim.evaluator")

MAX_ATTEMPTS = 3          # a run lost with its worker is submitted again at most twice
CONNECT_TIMEOUT = 10.0    # seconds to reach the scheduler (at start, and when it comes back)
RECONNECT_EVERY = 2.0     # seconds between attempts while the scheduler is lost
WATCH_EVERY = 2.0        # seconds between checks that the scheduler answers while runs are in flight
IDENTITY_TIMEOUT = 5.0   # seconds for the scheduler to say who it is and which workers it has
CALL_TIMEOUT = 60.0       # seconds for one blocking cluster call (placing a 40 MB key, registering the plugin)
WORKER_WAIT = 30.0        # seconds a run waits for a worker when the cluster has none (a nanny restarting its worker)


class SchedulerLost(RuntimeError):
    pass


@dataclass
class Placed:
    future: object                       # the key's bytes, scattered once by the evaluator
    workers: set[str] = field(default_factory=set)
    path: Path | None = None             # the store's file it came from


class DaskRunner:
    """Same interface as ThreadRunner: prime(), submit(), finished(), close(); never blocks the evaluator's loop.

    Every cluster call happens on one dispatcher thread. A key is scattered (as bytes, once) to one worker; a run
    is submitted with that worker as its preferred place (`workers=`, `allow_other_workers=True`); when every
    holder is busy and a worker is idle, the run goes to the idle one, which fetches the key from a holder (Dask
    worker-to-worker) and keeps it: the key is replicated under load, never re-sent by the evaluator per run."""

    def __init__(self, *, deployment: str, simulate: bool, cache_bytes: int, warmup_inputs: list[bytes] | None,
                 scheduler: str | None, tls_dir: str | None, workers: int, worker_threads: int, workdir: Path):
        from .cluster import check_scheduler, quiet_dask_logs, security, start_local
        quiet_dask_logs()
        from .dask_worker import CircuitPlugin
        self.plugin = CircuitPlugin(deployment, simulate, cache_bytes)
        self.simulate, self.warmup_inputs = simulate, warmup_inputs
        self.local = None
        if scheduler:
            check_scheduler(scheduler, tls_dir)
            self.address, self.security = scheduler, security(tls_dir)
        else:
            self.local, self.security = start_local(max(workers, 1), worker_threads, tls_dir, workdir)
            self.address = self.local.scheduler_address
        self.label = f"the Dask scheduler {self.address}"
        self.client = None
        self.registered_with = None
        self.last_error, self.next_connect = "not connected yet", 0.0
        self.placed: dict[str, Placed] = {}
        self.digests: dict[tuple[str, float], str] = {}
        self.inflight: dict[str, int] = {}
        self.events: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.active: dict[str, tuple[Job, str]] = {}   # runs in flight, by their task's key
        self.next_watch = 0.0
        try:
            self._client()
            log.info("evaluator: runs go to %s (%d worker(s))", self.label, len(self._workers()))
        except SchedulerLost as exc:
            log.error("evaluator: %s; runs fail until it is reachable", exc)
        self.thread = threading.Thread(target=self._loop, name="dask-dispatch", daemon=True)
        self.thread.start()

    # --- the evaluator's side (its loop thread) -----------------------------------------------------------
    def prime(self, path: Path, keys) -> None:
        self.events.put(("prime", path, None, 0))

    def submit(self, job: Job) -> None:
        self.events.put(("run", job, None, 1))

    def finished(self) -> list[Finished]:
        done = []
        while True:
            try:
                done.append(self.results.get_nowait())
            except queue.Empty:
                return done

    def close(self) -> None:
        self.stopping.set()
        self.events.put(("stop", None, None, 0))
        self.thread.join(10)
        from .cluster import close_quietly, kill_leftover_workers
        close_quietly(self.client, self.local)
        if self.local is not None:
            kill_leftover_workers()

    # --- the dispatcher thread ------------------------------------------------------------------------------
    def _client(self):
        client = self.client
        if client is not None and client.status == "running":
            identity = self._identity(client).get("id")
            if identity != self.registered_with:  # the scheduler came back (a new one): the plugin again
                self._register(client)
                self.registered_with, self.placed, self.inflight = identity, {}, {}
            return client
        if client is not None and client.status in ("connecting", "newly-created"):
            raise SchedulerLost(f"{self.label} is lost (its connection closed; reconnecting)")
        if time.monotonic() < self.next_connect:
            raise SchedulerLost(f"{self.label} is unreachable: {self.last_error}")
        if client is not None:
            try:
                client.close(timeout=2)
            except Exception:  # noqa: BLE001
                pass
            self.client = None
        from .cluster import connect
        try:
            client = connect(self.address, self.security, CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same for the user
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.next_connect = time.monotonic() + RECONNECT_EVERY
            raise SchedulerLost(f"{self.label} is unreachable: {self.last_error}") from None
        self.client = client
        self._register(client)
        self.registered_with = self._identity(client).get("id")
        self.placed, self.inflight = {}, {}
        return client

    def _register(self, client) -> None:
        """The plugin, with the scheduler (which sets it up on every worker, later ones too). The scheduler keeps
        it even when its broadcast to a worker dying at that moment fails: that error is logged, not fatal (a run
        sent to a worker without the circuit raises there and is retried on another)."""
        try:
            client.register_plugin(self.plugin)
        except Exception as exc:  # noqa: BLE001
            if client.status != "running":
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                raise SchedulerLost(f"{self.label} is lost: {self.last_error}") from None
            log.warning("evaluator: the circuit plugin did not reach every worker (%s: %s); the scheduler sets it "
                        "up on the workers that join", type(exc).__name__, str(exc)[:200])

    def _identity(self, client) -> dict:
        """The scheduler's identity (its id, its workers), asked with a deadline: a hung scheduler is named."""
        try:
            return client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=IDENTITY_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - timeout or a closed connection: the same for the user
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            raise SchedulerLost(f"{self.label} did not answer within {IDENTITY_TIMEOUT:.0f} s "
                                f"({self.last_error})") from None

    def _workers(self) -> list[str]:
        return sorted(self._identity(self.client).get("workers", {})) if self.client is not None else []

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                kind, subject, future, attempt = self.events.get(timeout=0.5)
            except queue.Empty:
                self._watch()
                continue
            try:
                if kind == "run":
                    self._run(subject, attempt)
                elif kind == "prime":
                    self._prime(subject)
                elif kind == "done":
                    self._done(subject, future, attempt)
            except Exception as exc:  # noqa: BLE001 - the dispatcher never dies; the run is failed and named
                log.exception("evaluator: Dask dispatch of %s failed", kind)
                if kind in ("run", "done"):
                    job = subject if kind == "run" else subject[0]
                    self.results.put(Finished(job, 0.0, f"{type(exc).__name__}: {exc}"))

    def _watch(self) -> None:
        """While runs are in flight, ask the scheduler who it is every few seconds: one that stopped answering (hung,
        its host cut off) fails those runs within seconds, naming it, instead of leaving them to the run deadline."""
        if not self.active or self.client is None or time.monotonic() < self.next_watch:
            return
        self.next_watch = time.monotonic() + WATCH_EVERY
        try:
            self._identity(self.client)
        except SchedulerLost as exc:
            log.error("evaluator: %s; %d run(s) in flight fail", exc, len(self.active))
            for job, _target in self.active.values():
                self.results.put(Finished(job, 0.0, f"{exc} during the run", "INTERNAL"))
            self.active.clear()
            client, self.client = self.client, None
            self.next_connect = time.monotonic() + RECONNECT_EVERY
            threading.Thread(target=client.close, kwargs={"timeout": 2}, daemon=True).start()

    def _digest(self, path: Path) -> str:
        entry = (str(path), path.stat().st_mtime)
        if entry not in self.digests:
            self.digests[entry] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self.digests[entry]

    def _target(self, client, sha: str | None, path: Path | None) -> tuple[str, object]:
        """The worker this run goes to, and the key's future (placed now if no live worker holds it)."""
        live = self._workers()
        if not live:
            log.warning("evaluator: %s has no worker; waiting up to %.0f s for one", self.label, WORKER_WAIT)
            deadline = time.monotonic() + WORKER_WAIT
            while not live and time.monotonic() < deadline and not self.stopping.is_set():
                time.sleep(0.25)
                live = self._workers()
        if not live:
            raise SchedulerLost(f"{self.label} has had no worker for {WORKER_WAIT:.0f} s")
        load = lambda w: self.inflight.get(w, 0)  # noqa: E731
        if sha is None:
            return min(live, key=load), None
        placed = self.placed.get(sha)
        if placed is not None and placed.future.status != "finished":  # its only holder died with it
            placed = None
        if placed is None:
            self._prune()
            target = min(live, key=load)
            future = client.scatter(path.read_bytes(), workers=[target], hash=False, direct=True,
                                    timeout=CALL_TIMEOUT)
            placed = self.placed[sha] = Placed(future, {target}, path)
            log.info("evaluator: evaluation key %s placed on worker %s", path.name, target)
            return target, future
        holders = [w for w in live if w in placed.workers]
        idle = [w for w in live if load(w) == 0]
        if holders and load(min(holders, key=load)) == 0:
            target = min(holders, key=load)
        elif idle:  # every holder busy: the idle worker fetches the key from a holder and keeps it
            target = idle[0]
            placed.workers.add(target)
            log.info("evaluator: evaluation key %s replicated to idle worker %s", path.name, target)
        else:
            target = min(holders or live, key=load)
            placed.workers.add(target)
        return target, placed.future

    def _prune(self) -> None:
        """Keys the store no longer holds (evicted, or replaced by their owner) leave the cluster's memory too."""
        for sha, placed in list(self.placed.items()):
            if placed.path is not None and not placed.path.exists():
                placed.future.release()
                del self.placed[sha]
        if len(self.digests) > 4096:
            self.digests.clear()

    def _run(self, job: Job, attempt: int) -> None:
        from .dask_worker import run_circuit
        try:
            client = self._client()
            sha = None if job.key_path is None else self._digest(job.key_path)
            target, key_future = self._target(client, sha, job.key_path)
        except SchedulerLost as exc:
            log.error("evaluator: run %s of %s not started: %s", job.run_id, job.session_id, exc)
            self.results.put(Finished(job, 0.0, str(exc), "INTERNAL"))
            return
        inputs = tuple(p.read_bytes() for p in job.inputs)
        future = client.submit(run_circuit, sha, key_future, inputs, workers=[target], allow_other_workers=True,
                               pure=False, key=f"run-{job.session_id}-{job.run_id}-{attempt}")
        self.inflight[target] = self.inflight.get(target, 0) + 1
        log.info("evaluator: run %s of %s submitted to worker %s (attempt %d)", job.run_id, job.session_id, target,
                 attempt)
        self.active[future.key] = (job, target)
        future.add_done_callback(lambda f: self.events.put(("done", (job, target), f, attempt)))

    def _prime(self, path: Path) -> None:
        """Place an uploaded key on a worker and pay Concrete's set-up there on the warm-up inputs."""
        if self.simulate or not self.warmup_inputs:
            return
        from .dask_worker import run_circuit
        try:
            client = self._client()
            sha = self._digest(path)
            target, key_future = self._target(client, sha, path)
        except SchedulerLost as exc:
            log.error("evaluator: evaluation key %s not prepared: %s", path.name, exc)
            return
        started = time.perf_counter()
        future = client.submit(run_circuit, sha, key_future, tuple(self.warmup_inputs), workers=[target],
                               allow_other_workers=True, pure=False)
        future.add_done_callback(lambda f: log.info(
            "evaluator: evaluation key %s prepared on %s in %.2f s (%s)", path.name, target,
            time.perf_counter() - started, f.status))

    def _done(self, subject, future, attempt: int) -> None:
        job, target = subject
        self.inflight[target] = max(0, self.inflight.get(target, 0) - 1)
        if self.active.pop(future.key, None) is None:  # already failed by the watch: the scheduler was lost
            return
        if future.status == "finished":
            result = future.result()
            placed = self.placed.get(self._digest(job.key_path)) if job.key_path is not None else None
            if placed is not None:  # where it really ran (Dask may have moved it) now holds the key too
                placed.workers.add(result["worker"])
            if not result["ok"]:
                self.results.put(Finished(job, 0.0, result["reason"]))
                return
            write_private(job.output, result["output"])
            log.info("evaluator: run %s of %s ran on worker %s (pid %s, key %s, %.2f s CPU)", job.run_id,
                     job.session_id, result["worker"], result["pid"],
                     {True: "cached", False: "loaded"}.get(result["key_cached"], "none"), result["cpu_seconds"])
            self.results.put(Finished(job, result["seconds"]))
            return
        # Lost with its worker, or with the scheduler: try elsewhere while the cluster is there.
        try:
            error = future.exception() if future.status == "error" else None
            reason = f"{type(error).__name__}: {error}" if error is not None else \
                f"{future.status}: its worker, or the worker holding its key, was lost"
        except Exception as exc:  # noqa: BLE001 - whatever the future says, the run is lost
            reason = f"{type(exc).__name__}: {exc}"
        reason = reason[:300]
        lost_scheduler = self.client is None or self.client.status != "running"
        if lost_scheduler:
            self.last_error = reason
            log.error("evaluator: run %s of %s lost with %s (%s)", job.run_id, job.session_id, self.label, reason)
            self.results.put(Finished(job, 0.0, f"{self.label} was lost during the run ({reason})",
                                      "INTERNAL"))
        elif attempt < MAX_ATTEMPTS:
            log.warning("evaluator: run %s of %s lost on worker %s (%s); attempt %d on another worker",
                        job.run_id, job.session_id, target, reason, attempt + 1)
            self.events.put(("run", job, None, attempt + 1))
        else:
            log.error("evaluator: run %s of %s lost on worker %s (%s); %d attempts, the run fails", job.run_id,
                      job.session_id, target, reason, attempt)
            self.results.put(Finished(job, 0.0, f"the run was lost {attempt} times on the cluster: its worker died each "
                                                f"time ({reason})"))
