"""The Dask workers' side of the evaluator: a plugin that loads the circuit once, a key cache bounded in bytes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import OrderedDict

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from protocol.run_dir import die_with_parent

PLUGIN_NAME = "fcs-circuit"


class ByteBoundedKeys:
    """Deserialized evaluation keys by sha256, least recently used first out once their bytes pass the bound.

    A key's cost is the size of its serialized form (what was uploaded); the bound is never exceeded except by
    a single key larger than it, which is kept alone."""

    def __init__(self, max_bytes: int, load=None):
        self.max_bytes = max_bytes
        self.load = load  # blob -> key object (default: Concrete's deserializer)
        self.entries: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self.bytes = 0
        self.loads = 0
        self.lock = threading.Lock()

    def get(self, sha256: str, blob: bytes):
        with self.lock:
            if sha256 in self.entries:
                self.entries.move_to_end(sha256)
                return self.entries[sha256][0], True
        if self.load is None:
            from credit_model.runtime.circuit_server import CircuitServer
            self.load = CircuitServer.load_keys
        keys = self.load(blob)
        with self.lock:
            self.loads += 1
            self.entries[sha256] = (keys, len(blob))
            self.bytes += len(blob)
            while self.bytes > self.max_bytes and len(self.entries) > 1:
                _, (_, size) = self.entries.popitem(last=False)
                self.bytes -= size
        return keys, False


def _ignore_sigpipe() -> None:
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to do there
        pass


class CircuitPlugin(WorkerPlugin):
    """Registered by the evaluator (the cluster's only client): each worker compiles the server circuit once.

    It carries only the deployment's name or directory, the mode and the cache bound: no key, no ciphertext."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, deployment: str, simulate: bool, cache_bytes: int):
        self.deployment, self.simulate, self.cache_bytes = deployment, simulate, cache_bytes
        self.server = None
        self.keys = None

    def setup(self, worker=None):
        from credit_model.deployment import load_deployment
        stop_profiler(worker)
        die_with_starter()
        self.server = load_deployment(self.deployment).circuit_server(self.simulate)
        self.keys = ByteBoundedKeys(self.cache_bytes)
        self.run_lock = threading.Lock()  # one run at a time per worker, whatever its thread count

    def teardown(self, worker=None):
        if self.server is not None:
            self.server.close()


# Dask's statistical profiler walks every thread's stack every 10 ms; during a run it costs the circuit ~15 % more
# CPU (0.75 s against 0.64 s per kaggle run, single-threaded workers: BENCHMARKS.md "Engines").
PROFILER_CALLBACKS = ("profile", "profile-cycle")


def stop_profiler(worker) -> None:
    """Stop a worker's statistical profiler (its periodic callbacks): a worker of ours runs one circuit at a time
    and nobody reads its profile. Done by the plugin, so it holds on any worker, local or started by hand."""
    if worker is None:
        return
    for name in PROFILER_CALLBACKS:
        callback = worker.periodic_callbacks.pop(name, None)
        if callback is not None:
            callback.stop()


def die_with_starter() -> None:
    """SIGKILL this worker process when the process that started it (the evaluator's local cluster, or a `dask worker`
    nanny) dies. Dask's own check (a pipe the worker's thread watches) cannot end a worker that is stopped, nor can
    a SIGTERM: the kernel's SIGKILL does, and with it goes the pipe that keeps multiprocessing's tracker alive. A
    worker started by init (no nanny) is left as it is."""
    if os.getppid() != 1:
        die_with_parent(signal.SIGKILL)


def _plugin() -> CircuitPlugin:
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None or plugin.server is None:
        raise RuntimeError(f"worker {worker.address} has no circuit (plugin {PLUGIN_NAME} not set up)")
    return plugin


def run_circuit(key_sha256: str | None, key_blob: bytes | None, inputs: tuple[bytes, ...]) -> dict:
    """One run on this worker. A failure of the run itself (a bad ciphertext) is returned, not raised: an
    exception out of this task means the cluster lost it (and the evaluator may retry it elsewhere)."""
    plugin = _plugin()
    address = get_worker().address
    try:
        with plugin.run_lock:
            cached = None
            keys = None
            if key_sha256 is not None and not plugin.simulate:
                keys, cached = plugin.keys.get(key_sha256, key_blob)
            start = time.perf_counter()
            cpu = time.process_time()
            output = plugin.server.run_parties(list(inputs), keys)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        # Concrete's runtime makes SIGPIPE fatal when it first runs: ignored again, as Python does, on the
        # worker's event-loop thread (signal handlers can only be set there)
        get_worker().loop.add_callback(_ignore_sigpipe)
        return {"ok": True, "output": output, "seconds": seconds, "cpu_seconds": cpu, "worker": address,
                "key_cached": cached, "pid": os.getpid()}
    except Exception as exc:  # noqa: BLE001 - the run failed on its inputs: reported to the user
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "worker": address, "pid": os.getpid()}


def worker_pid() -> int:
    """The worker's process id (tests kill a worker by it)."""
    return os.getpid()
