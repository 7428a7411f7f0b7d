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

    def key_moves(self) -> dict:
        """How often the evaluator placed its key on a worker, and replicated it to an idle one (its log)."""
        log = (self.procs.run_dir / "evaluator.log").read_text(errors="replace")
        return {"placed": log.count(" placed on worker "), "replicated": log.count(" replicated to idle worker ")}

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.ctx.term()
        self.procs.stop()


def _median(values):
    return round(statistics.median(values), 4)


def run_engine_bench(deployment: Deployment, records: dict, log: Log, repeats: int = 20, jobs: int = 8,
                     rounds: int = 3) -> dict:
    """Measured in one invocation with the evaluators up side by side and their measurements interleaved (A, B, A,
    B, ...), so that what else the machine does in the meantime weighs on both alike."""
    log("== engines: in-process against Dask (real FHE, a warm key), interleaved")
    configs = {"in-process (--engine local)": [],
               "dask, 1 worker on 2 cores": ["--engine", "dask", "--workers", "1", "--worker-threads", "2"]}
    with tempfile.TemporaryDirectory(prefix="fcs-engines-") as tmp:
        drivers = {}
        try:
            for i, (label, args) in enumerate(configs.items()):
                drivers[label] = Driver(deployment, records, args + ["--max-sessions", "256"], Path(tmp) / str(i))
            for driver in drivers.values():
                for _ in range(3):  # the key's set-up (and on Dask its placement) paid before the timed runs
                    driver.latency()
            samples = {label: [] for label in drivers}
            for _ in range(repeats):
                for label, driver in drivers.items():
                    samples[label].append(driver.latency())
        finally:
            for driver in drivers.values():
                driver.close()
    latency = []
    for label, rows in samples.items():
        row = {"engine": label, "args": " ".join(configs[label]), "repeats": repeats,
               "latency_s": _median([r[0] for r in rows]), "run_s": _median([r[1] for r in rows]),
               "latency_all_s": [round(r[0], 4) for r in rows]}
        log(f"   {label:30} warm run, RUN to OUTPUT: median {row['latency_s']} s (the circuit itself {row['run_s']} s)")
        latency.append(row)
    ratios = [b[0] / a[0] for a, b in zip(*samples.values())]
    throughput = dask_throughput(deployment, records, log, jobs, rounds)
    figures = {"latency": latency, "throughput": throughput,
               "dask_overhead_ratio": round(latency[1]["latency_s"] / latency[0]["latency_s"], 3),
               "dask_overhead_ratio_pairs_median": round(statistics.median(ratios), 3),
               "dask_scaling_2_vs_1": round(throughput[1]["per_minute"] / throughput[0]["per_minute"], 3)}
    log(f"   Dask latency overhead on a warm key: x{figures['dask_overhead_ratio']} of medians, "
        f"x{figures['dask_overhead_ratio_pairs_median']} median of pairs (target <= 1.05); 2 workers against 1: "
        f"x{figures['dask_scaling_2_vs_1']} (target >= 1.8)")
    return figures


def dask_throughput(deployment: Deployment, records: dict, log: Log, jobs: int = 8, rounds: int = 3) -> list[dict]:
    """Applications per minute of one evaluator on a local Dask cluster of 1 and of 2 single-threaded workers
    (`--engine dask --workers N --worker-threads 1`), the two evaluators up side by side and their rounds of `jobs`
    runs (all submitted at once) interleaved; the median round counts."""
    log(f"== engines: throughput with 1 and 2 single-threaded Dask workers, {rounds} interleaved rounds of {jobs} runs")
    with tempfile.TemporaryDirectory(prefix="fcs-engines-") as tmp:
        drivers = {}
        try:
            for n in (1, 2):
                drivers[n] = Driver(deployment, records, ["--engine", "dask", "--workers", str(n), "--worker-threads",
                                                          "1", "--max-sessions", "256"], Path(tmp) / str(n))
                drivers[n].batch(2 * n)  # every worker gets the key (placed, then replicated) and pays its set-up
            seconds = {1: [], 2: []}
            for _ in range(rounds):
                for n, driver in drivers.items():
                    seconds[n].append(driver.batch(jobs))
            moves = {n: driver.key_moves() for n, driver in drivers.items()}
        finally:
            for driver in drivers.values():
                driver.close()
    throughput = [{"workers": n, "jobs": jobs, "rounds": rounds, "seconds": [round(x, 3) for x in seconds[n]],
                   "per_minute": round(jobs / statistics.median(seconds[n]) * 60, 1), "key": moves[n]}
                  for n in (1, 2)]
    for row in throughput:
        log(f"   dask, {row['workers']} single-threaded worker(s): {jobs} runs in {row['seconds']} s = "
            f"{row['per_minute']} applications/min (median round); the key placed {row['key']['placed']}x, "
            f"replicated to an idle worker {row['key']['replicated']}x")
    return throughput
