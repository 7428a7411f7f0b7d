"""The evaluator's engines side by side: warm-run latency through Dask against in-process, 1 and 2 Dask workers."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import zmq

from credit_model.deployment import Deployment
from credit_model.schema import PARTIES
from credit_model.training.fhe_model import ml_client
from protocol.curve import Curve
from protocol.messages import EvalKey, GetOutput, Input, Output, Run, decode, encode
from protocol.transport import make_socket

from simulation.processes import ProcessSet

Log = Callable[[str], None]


class Driver:
    """One applicant's three parties on their own CURVE sockets against one evaluator process (no other role)."""

    def __init__(self, deployment: Deployment, records: dict, evaluator_args: list[str], tmp: Path):
        self.client = ml_client(deployment)
        self.client.generate_private_and_evaluation_keys(force=True)
        pres = {p: deployment.preprocessor(p) for p in PARTIES}
        self.blobs = {p: self.client.quantize_encrypt_serialize_party(p, pres[p].transform_records([records[p]]))
                      for p in PARTIES}
        self.procs = ProcessSet(tmp, "ipc", "execute", str(deployment.directory), {"evaluator": evaluator_args})
        self.ctx = zmq.Context()
        self.socks = {p: make_socket(self.ctx, zmq.DEALER, f"{p}:0") for p in PARTIES}
        self.procs.start(300, ("evaluator",))
        for party, sock in self.socks.items():
            Curve.load(party, self.procs.keys_dir).client("evaluator")(sock)
            sock.connect(self.procs.endpoints["evaluator"])
        self.ask("user", EvalKey("bench", self.client.get_serialized_evaluation_keys()))
        self.count = 0

    def ask(self, party, message, timeout=600.0):
        self.socks[party].send_multipart(encode(message, 1))
        if not self.socks[party].poll(int(timeout * 1000)):
            raise TimeoutError(f"evaluator did not answer {message.TYPE.value}")
        return decode(self.socks[party].recv_multipart()).message

    def sessions(self, count: int) -> list[str]:
        names = []
        for _ in range(count):
            self.count += 1
            name = f"s{self.count}"
            for party in PARTIES:
                self.ask(party, Input(name, "bench", party, "base", self.blobs[party]))
            names.append(name)
        return names

    def latency(self) -> tuple[float, float]:
        """One run alone: RUN sent to OUTPUT received (the evaluator's answer waits for the run), and the run's
        own seconds as the evaluator measured them."""
        name = self.sessions(1)[0]
        t0 = time.perf_counter()
        self.ask("user", Run(name, "r1", {}))
        out = self.ask("user", GetOutput(name, "r1", 600_000))
        if not isinstance(out, Output):
            raise RuntimeError(f"run failed: {out}")
        return time.perf_counter() - t0, out.run_seconds

    def batch(self, count: int) -> float:
        names = self.sessions(count)
        t0 = time.perf_counter()
        for name in names:
            self.ask("user", Run(name, "r1", {}))
        for name in names:
            out = self.ask("user", GetOutput(name, "r1", 600_000))
            if not isinstance(out, Output):
                raise RuntimeError(f"run failed: {out}")
        return time.perf_counter() - t0

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.ctx.term()
        self.procs.stop()


def _median(values):
    return round(statistics.median(values), 4)


def engine_latency(deployment: Deployment, records: dict, label: str, args: list[str], repeats: int, log: Log) -> dict:
    with tempfile.TemporaryDirectory(prefix="fcs-engines-") as tmp:
        driver = Driver(deployment, records, args, Path(tmp))
        try:
            for _ in range(3):  # the key's set-up (and on Dask its placement) paid before the timed runs
                driver.latency()
            samples = [driver.latency() for _ in range(repeats)]
        finally:
            driver.close()
    row = {"engine": label, "args": " ".join(args), "repeats": repeats,
           "latency_s": _median([s[0] for s in samples]), "run_s": _median([s[1] for s in samples]),
           "latency_all_s": [round(s[0], 4) for s in samples]}
    log(f"   {label:34} warm run, RUN to OUTPUT: median {row['latency_s']} s (the circuit itself {row['run_s']} s)")
    return row


def engine_throughput(deployment: Deployment, records: dict, workers: int, jobs: int, log: Log) -> dict:
    args = ["--engine", "dask", "--workers", str(workers), "--worker-threads", "1", "--max-sessions", "256"]
    with tempfile.TemporaryDirectory(prefix="fcs-engines-") as tmp:
        driver = Driver(deployment, records, args, Path(tmp))
        try:
            driver.batch(2 * workers)  # every worker gets the key (placed, then replicated) and pays its set-up
            seconds = driver.batch(jobs)
        finally:
            driver.close()
    per_minute = round(jobs / seconds * 60, 1)
    log(f"   dask, {workers} single-threaded worker(s): {jobs} runs in {seconds:.2f} s = {per_minute} applications/min")
    return {"workers": workers, "jobs": jobs, "seconds": round(seconds, 3), "per_minute": per_minute}


def run_engine_bench(deployment: Deployment, records: dict, log: Log, repeats: int = 20, jobs: int = 16) -> dict:
    """Measured in one invocation, one after another on the same machine."""
    log("== engines: in-process against Dask (real FHE, a warm key)")
    inproc = engine_latency(deployment, records, "in-process (--engine local)", [], repeats, log)
    dask2 = engine_latency(deployment, records, "dask, 1 worker on 2 cores", ["--engine", "dask", "--workers", "1",
                                                                              "--worker-threads", "2"], repeats, log)
    log("== engines: throughput with 1 and 2 single-threaded Dask workers (all runs submitted at once)")
    one, two = (engine_throughput(deployment, records, n, jobs, log) for n in (1, 2))
    figures = {"latency": [inproc, dask2], "throughput": [one, two],
               "dask_overhead_ratio": round(dask2["latency_s"] / inproc["latency_s"], 3),
               "dask_scaling_2_vs_1": round(two["per_minute"] / one["per_minute"], 3)}
    log(f"   Dask latency overhead on a warm key: x{figures['dask_overhead_ratio']} (target <= 1.05); "
        f"2 workers against 1: x{figures['dask_scaling_2_vs_1']} (target >= 1.8)")
    return figures
