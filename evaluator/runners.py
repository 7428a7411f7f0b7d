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

import zmq
import zmq.auth

from protocol.errors import Forbidden
from protocol.messages import Ready, Shutdown, Work, encode
from protocol.transport import send_nowait

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
    code: str = "BAD_CIPHERTEXT"  # the error code a failed run is reported with


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
                from credit_model.runtime.circuit_server import CircuitServer
                preloaded = CircuitServer.load_keys(path.read_bytes())
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
    """Runs jobs one at a time on a thread of the evaluator process (the default, --workers 0).

    An uploaded evaluation key is prepared at once: one run on the deployment's warm-up inputs (zeros
    under a discarded key) pays Concrete's set-up of the new key object on the run thread, before the
    user's first RUN (which, if it comes sooner, waits for it in the queue)."""

    def __init__(self, server, warm_keys: int = 4, warmup_inputs: list[bytes] | None = None):
        self.server = server
        self.keys = KeyCache(warm_keys)
        self.warmup_inputs = warmup_inputs
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhe-run")
        self.pending: dict[Job, Future] = {}
        self.warming: list[tuple[Path, float, Future]] = []

    def prime(self, path: Path, keys) -> None:
        keys = self.keys.get(path, keys)
        if self.warmup_inputs and not self.server.simulate:
            self.warming.append((path, time.perf_counter(), self.executor.submit(
                self.server.run_parties, self.warmup_inputs, keys)))

    def submit(self, job: Job) -> None:
        self.pending[job] = self.executor.submit(lambda: run_job(self.server, self.keys.get(job.key_path), job))

    def finished(self) -> list[Finished]:
        for entry in [w for w in self.warming if w[2].done()]:
            self.warming.remove(entry)
            path, started, future = entry
            outcome = "failed: " + str(future.exception()) if future.exception() else "ready"
            log.info("evaluator: evaluation key %s prepared in %.2f s (%s)", path.name,
                     time.perf_counter() - started, outcome)
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

    Workers run on the evaluator's host and share its store directory: jobs name files, not bytes. The
    worker channel is an ipc socket in the evaluator's private work directory; with CURVE it also has
    its own ZAP domain that admits only a key pair made for this evaluator's workers (no role's key), and
    a worker is known by the pid the evaluator started it with: nothing else can register as a worker.
    """

    def __init__(self, node, workdir: Path, count: int, deployment: str | None, simulate: bool,
                 threads: int = 0, keys_dir: str | None = None):
        self.node = node
        self.idle: deque[bytes] = deque()
        self.queue: deque[Job] = deque()
        self.running: dict[bytes, Job] = {}
        self.workers: dict[bytes, subprocess.Popen] = {}
        self.done: list[Finished] = []
        self.procs: list[subprocess.Popen] = []
        self.log_dir = workdir
        endpoint = f"ipc://{workdir.resolve()}/workers.ipc"
        self.args = [sys.executable, "-m", "evaluator.worker", "--endpoint", endpoint, "--fhe",
                     "simulate" if simulate else "execute"] + (["--deployment", deployment] if deployment else [])
        setup = None
        if node.curve is not None:
            key_dir = workdir / "worker-keys"
            key_dir.mkdir(mode=0o700, exist_ok=True)
            public_file, secret_file = zmq.auth.create_certificates(key_dir, "worker")
            for path in (public_file, secret_file):
                os.chmod(path, 0o600)
            node.curve.auth.configure_curve(domain="workers", location=str(key_dir))
            node.key_roles[zmq.auth.load_certificate(public_file)[0].decode()] = "worker"
            self.args += ["--worker-key", str(secret_file), "--server-key", str(Path(keys_dir) / "evaluator.key")]

            def setup(sock):
                sock.setsockopt(zmq.ZAP_DOMAIN, b"workers")
                node.curve.server(sock)
        self.socket = node.serve_router(endpoint, self.on_message, channel="workers", max_frame=64 * 1024,
                                        setup=setup)
        self.env = dict(os.environ)
        if threads > 0:  # Concrete's runtime parallelises one run over every core unless told otherwise
            self.env["OMP_NUM_THREADS"] = str(threads)
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        with open(self.log_dir / f"worker-{len(self.procs)}.log", "wb") as out:
            self.procs.append(subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=self.env))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.workers) < len(self.procs):
            dead = [p.pid for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"evaluator workers not ready (dead: {dead}) within {timeout:.0f} s")
            self.node.poll_once()

    def prime(self, path: Path, keys) -> None:
        """Workers load keys from the store themselves."""

    def on_message(self, _sender: str, packet):
        identity, message = self.node.current_identity, packet.message
        if isinstance(message, Ready):
            proc = next((p for p in self.procs if p.pid == message.pid and p.poll() is None), None)
            if proc is None or identity in self.workers or proc in self.workers.values():
                raise Forbidden(f"pid {message.pid} is not a worker this evaluator started and awaits")
            self.workers[identity] = proc
        elif identity not in self.workers:
            raise Forbidden("WORK_DONE from a worker that never registered")
        else:
            job = self.running.pop(identity, None)
            if job is not None and (job.session_id, job.run_id) == (message.session_id, message.run_id):
                self.done.append(Finished(job, message.seconds, None if message.ok else message.reason))
        self.idle.append(identity)
        self._dispatch()
        return None

    def _dispatch(self) -> None:
        while self.idle and self.queue:
            worker, job = self.idle.popleft(), self.queue.popleft()
            self.running[worker] = job
            work = Work(job.session_id, job.run_id, str(job.key_path or ""), [str(p) for p in job.inputs],
                        str(job.output))
            if not send_nowait(self.socket, [worker] + encode(work, 0)):
                self.done.append(Finished(self.running.pop(worker), 0.0, "the worker could not take the job"))

    def submit(self, job: Job) -> None:
        self.queue.append(job)
        self._dispatch()

    def finished(self) -> list[Finished]:
        dead = [w for w, proc in self.workers.items() if proc.poll() is not None]
        lost = []
        for worker in dead:
            proc = self.workers.pop(worker)
            if worker in self.idle:
                self.idle.remove(worker)
            job = self.running.pop(worker, None)
            log.error("evaluator worker %s (pid %s) died%s; starting another", worker.decode(errors="replace"),
                      proc.pid, " during a run" if job else "")
            if job is not None:
                lost.append(Finished(job, 0.0, "the worker process died"))
            self._spawn()
        done, self.done = self.done, []
        return done + lost

    def close(self) -> None:
        for worker in list(self.workers):
            send_nowait(self.socket, [worker] + encode(Shutdown(), 0))
        deadline = time.monotonic() + 2
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
