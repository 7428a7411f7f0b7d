"""Where the evaluator's FHE runs happen in-process (--engine local): one thread of its own process.

Runs on other processes or hosts go to a Dask cluster (--engine dask, evaluator/dask_runner.py), which shares the
Job and Finished records defined here."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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
    """Runs jobs one at a time on a thread of the evaluator process (--engine local, the default).

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
