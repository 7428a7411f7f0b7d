"""Where the evaluator's FHE runs happen: a thread of its own process, or a pool of worker processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from protocol.messages import Ready, Shutdown, Work, WorkDone, encode

from .store import write_private

log = logging.getLogger("fhe_credit_sim.evaluator")


@dataclass(frozen=True)
class Job:
    session_id: str
    run_id: str
    key_path: Path | None
    inputs: tuple[Path, ...]
    output: Path


@dataclass(frozen=True)
class Finished:
    job: Job
    seconds: float
    error: str | None = None


class KeyCache:
    """Deserialized evaluation keys by file, bounded (LRU): the first run on a key object pays its set-up."""

    def __init__(self, size: int = 4):
        self.size = size
        self.objects: OrderedDict[tuple[str, float], object] = OrderedDict()

    def get(self, path: Path | None, preloaded=None):
        if path is None:
            return None
        entry = (str(path), path.stat().st_mtime)
        if entry not in self.objects:
            if preloaded is None:
                from concrete import fhe
                preloaded = fhe.EvaluationKeys.deserialize(path.read_bytes())
            self.objects[entry] = preloaded
        self.objects.move_to_end(entry)
        while len(self.objects) > self.size:
            self.objects.popitem(last=False)
        return self.objects[entry]


def run_job(server, keys, job: Job) -> float:
    """Run one job: read the three input files, run the circuit, write the output file (0600)."""
    start = time.perf_counter()
    output = server.run_parties([p.read_bytes() for p in job.inputs], keys)
    seconds = time.perf_counter() - start
    write_private(job.output, output)
    return seconds


class ThreadRunner:
    """Runs jobs one at a time on a thread of the evaluator process (the default, --workers 0)."""

    def __init__(self, server, warm_keys: int = 4):
        self.server = server
        self.keys = KeyCache(warm_keys)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhe-run")
        self.pending: dict[Job, Future] = {}

    def prime(self, path: Path, keys) -> None:
        self.keys.get(path, keys)

    def submit(self, job: Job) -> None:
        self.pending[job] = self.executor.submit(lambda: run_job(self.server, self.keys.get(job.key_path), job))

    def finished(self) -> list[Finished]:
        done = []
        for job, future in list(self.pending.items()):
            if future.done():
                del self.pending[job]
                try:
                    done.append(Finished(job, future.result()))
                except Exception as exc:  # noqa: BLE001 - reported to the user as a failed run
                    done.append(Finished(job, 0.0, f"{type(exc).__name__}: {exc}"))
        return done

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class WorkerPool:
    """N worker processes behind a ROUTER; each idle worker gets the next queued job (load balancing).

    Workers run on the evaluator's host and share its store directory: jobs name files, not bytes.
    """

    def __init__(self, node, endpoint: str, count: int, deployment: str | None, simulate: bool,
                 log_dir: Path, threads: int = 0, keys_dir: str | None = None):
        self.node = node
        self.socket = node.serve_router(endpoint, self.on_message)
        self.idle: deque[bytes] = deque()
        self.queue: deque[Job] = deque()
        self.running: dict[bytes, Job] = {}
        self.done: list[Finished] = []
        self.procs = []
        args = [sys.executable, "-m", "evaluator.worker", "--endpoint", endpoint, "--fhe",
                "simulate" if simulate else "execute"] + (["--deployment", deployment] if deployment else [])
        args += ["--keys-dir", keys_dir] if keys_dir else []
        env = dict(os.environ)
        if threads > 0:  # Concrete's runtime parallelises one run over every core unless told otherwise
            env["OMP_NUM_THREADS"] = str(threads)
        for i in range(count):
            with open(log_dir / f"worker-{i}.log", "wb") as out:
                self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, env=env))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.idle) + len(self.running) < len(self.procs):
            dead = [p.pid for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"evaluator workers not ready (dead: {dead}) within {timeout:.0f} s")
            self.node.poll_once()

    def prime(self, path: Path, keys) -> None:
        """Workers load keys from the store themselves."""

    def on_message(self, _sender: str, packet):
        identity, message = self.node.current_identity, packet.message
        if isinstance(message, WorkDone):
            job = self.running.pop(identity, None)
            if job is not None:
                self.done.append(Finished(job, message.seconds, None if message.ok else message.reason))
        if isinstance(message, (Ready, WorkDone)):
            self.idle.append(identity)
            self._dispatch()
        return None

    def _dispatch(self) -> None:
        while self.idle and self.queue:
            worker, job = self.idle.popleft(), self.queue.popleft()
            self.running[worker] = job
            work = Work(job.session_id, job.run_id, str(job.key_path or ""), [str(p) for p in job.inputs],
                        str(job.output))
            self.socket.send_multipart([worker] + encode(work, 0))

    def submit(self, job: Job) -> None:
        self.queue.append(job)
        self._dispatch()

    def finished(self) -> list[Finished]:
        by_pid = {p.pid: p for p in self.procs}
        dead = [w for w in self.running if by_pid[int(w.split(b":")[1])].poll() is not None]
        for worker in dead:
            log.error("evaluator worker %s died during a run", worker.decode())
        done, self.done = self.done, []
        return done + [Finished(self.running.pop(w), 0.0, "the worker process died") for w in dead]

    def close(self) -> None:
        for worker in list(self.idle) + list(self.running):
            try:
                self.socket.send_multipart([worker] + encode(Shutdown(), 0))
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
