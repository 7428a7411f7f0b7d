"""Randomized faults on real runs: kill, stop, or stop-then-continue one random role at a random moment; every
run must end passed, or failed cleanly naming the faulted role, with no process left behind and no wrong decision.

The moment is drawn uniformly over the scenario's own fault-free duration (measured once per scenario first),
so it falls where the run spends its time: mostly in work (keygen, encryption, runs, explanations), some in
start-up. Time to detection is from the signal to the runner's return (roles stopped, report written).
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from protocol.liveness import DEFAULT_LIVENESS_S

from simulation.processes import ROLES, ProcessSet
from simulation.progress import Progress
from simulation.runner import ScenarioRunner
from scenarios.spec import Scenario

FAULTS = ("kill", "stop", "stop_continue")
WORKER = "worker"  # a fault aimed at one of the evaluator's Dask workers (chaos --dask-workers N)
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Iteration:
    index: int
    scenario: str
    fault: str
    role: str
    at_s: float
    fired: bool = False
    outcome: str = ""          # passed | clean failure | BAD: ...
    detail: str = ""
    detection_s: float | None = None
    leftovers: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.outcome.startswith("BAD")


class Fault:
    """Signals one role's process `at_s` after the run started (once it exists)."""

    def __init__(self, action: str, role: str, at_s: float, resume_after: float, pick: int = 0):
        self.action, self.role, self.at_s, self.resume_after, self.pick = action, role, at_s, resume_after, pick
        self.fired_at: float | None = None
        self.procs: ProcessSet | None = None
        self._cancel = threading.Event()

    def arm(self, procs: ProcessSet) -> None:
        self.procs = procs
        threading.Thread(target=self._fire, daemon=True).start()

    def cancel(self) -> None:
        self._cancel.set()

    def _fire(self) -> None:
        if self._cancel.wait(self.at_s):
            return
        role = "evaluator" if self.role == WORKER else self.role
        proc = self.procs.procs.get(role) if self.procs else None
        if proc is None or proc.popen is None or proc.popen.poll() is not None:
            return
        pid = proc.popen.pid
        if self.role == WORKER:  # one of the evaluator's Dask worker processes, drawn at the moment
            workers = dask_worker_pids(pid)
            while not workers and proc.popen.poll() is None:  # none yet (the cluster still starting): at the first
                if self._cancel.wait(0.05):
                    return
                workers = dask_worker_pids(pid)
            if not workers:
                return
            pid = workers[self.pick % len(workers)]
        try:
            os.kill(pid, signal.SIGKILL if self.action == "kill" else signal.SIGSTOP)
            self.fired_at = time.monotonic()
            if self.action == "stop_continue" and not self._cancel.wait(self.resume_after):
                os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def dask_worker_pids(evaluator_pid: int) -> list[int]:
    """The worker processes of the evaluator's local Dask cluster: its children that multiprocessing spawned (a child
    still between fork and exec carries the evaluator's own command line and is not a worker yet: stopped there it
    would never become one; multiprocessing's tracker is not a worker either)."""
    import psutil
    try:
        children = psutil.Process(evaluator_pid).children()
        return sorted(c.pid for c in children if "spawn_main" in " ".join(c.cmdline()))
    except psutil.Error:
        return []


def _become_subreaper() -> None:
    """Orphans of this process tree (e.g. a keygen child whose user was killed) come back to us, so the
    leftover check sees them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[1]) == me and fields[0] != b"Z":
            found.append(int(entry))
    return found


def _describe(pid: int) -> str:
    """What a left-behind process was: its state (T: stopped) and command line, shortened."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat[stat.rindex(")") + 2]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "gone"
    return f"{state} {cmdline[-90:]}"


def _leftovers(before: set[int], wait: float = 3.0) -> dict[int, str]:
    """Processes this run left behind: children of ours (direct, or orphans re-parented to us) still
    alive `wait` seconds after the runner returned, each with what it was; they are killed and reaped."""
    deadline = time.monotonic() + wait
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        left = [pid for pid in _children() if pid not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    named = {pid: _describe(pid) for pid in left}
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return named


def _tracebacks(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.glob("*.log") if "Traceback (most recent call last)" in p.read_text(errors="replace")]


def classify(report, fault: Fault, tracebacks: list[str]) -> tuple[str, str]:
    """(outcome, detail) of one run under a fault."""
    wrong = [f for a in report.applicants for f in a.failures if "expected decision" in f or "expected outcome" in f
             or "expected bin" in f]
    if tracebacks:
        return "BAD: traceback", ", ".join(tracebacks)
    if report.passed:
        return "passed", "no fault applied (the run ended first)" if fault.fired_at is None else "the run absorbed it"
    if fault.fired_at is None:
        return "BAD: failed without a fault", str(report.fatal)[:200]
    if fault.role == WORKER:  # the cluster retries a lost run elsewhere: a worker fault must never fail a run
        return "BAD: a worker fault failed the run", str(report.fatal)[:200]
    failure = report.failure or {}
    if failure.get("role") == fault.role or f"the {fault.role} " in str(failure.get("reason", "")):
        if wrong and not report.fatal:
            return "BAD: wrong decision", wrong[0][:200]
        return "clean failure", f"{failure.get('role')} at {failure.get('step')}: {str(failure.get('reason'))[:160]}"
    if wrong:
        return "BAD: wrong decision", wrong[0][:200]
    return "BAD: failure names another role", str(report.fatal)[:200]


def run_chaos(scenarios: list[Scenario], iterations: int, seed: int, fhe: str | None,
              liveness: float = DEFAULT_LIVENESS_S, log: Callable[[str], None] = print, dask_workers: int = 0) -> dict:
    """Run `iterations` faulted runs over the scenarios in turn; returns the per-iteration results and summary.
    With `dask_workers`, the evaluator runs on a local Dask cluster of that many workers, and a fault may aim at one
    of them (the role drawn is then "worker")."""
    _become_subreaper()
    rng = random.Random(seed)
    with Progress(len(scenarios) + iterations, "chaos", log, unit="run") as bar:
        return _chaos(scenarios, iterations, seed, fhe, liveness, bar, rng, dask_workers)


def _chaos(scenarios, iterations, seed, fhe, liveness, bar: Progress, rng: random.Random, dask_workers: int = 0) -> dict:
    log = bar.log
    durations = {}
    extra = {"evaluator": ["--engine", "dask", "--workers", str(dask_workers)]} if dask_workers else None
    targets = ROLES + ((WORKER,) if dask_workers else ())
    for scenario in scenarios:  # each scenario's fault-free duration, to draw fault moments within
        report = ScenarioRunner(scenario, fhe=fhe, liveness=liveness, extra_args=extra).run()
        if not report.passed:
            raise RuntimeError(f"{scenario.name} fails without any fault: {report.fatal}")
        durations[scenario.name] = report.duration_s
        log(f"baseline {scenario.name}: passed in {report.duration_s:.1f} s")
        bar.update(status=f"baseline {scenario.name}")
    results: list[Iteration] = []
    for index in range(1, iterations + 1):
        scenario = scenarios[(index - 1) % len(scenarios)]
        action, role = rng.choice(FAULTS), rng.choice(targets)
        at_s = round(rng.uniform(0.1, durations[scenario.name]), 2)
        fault = Fault(action, role, at_s, rng.uniform(0.5, 2 * liveness), pick=rng.randrange(max(dask_workers, 1)))
        item = Iteration(index, scenario.name, action, role, at_s)
        before = set(_children())
        deadline = max(60.0, 4 * durations[scenario.name])
        with tempfile.TemporaryDirectory(prefix="fcs-chaos-") as tmp:
            runner = ScenarioRunner(replace(scenario, deadline_s=deadline), fhe=fhe, run_dir=Path(tmp),
                                    liveness=liveness, on_start=fault.arm, extra_args=extra)
            try:
                report = runner.run()
            finally:
                fault.cancel()
            ended = time.monotonic()
            item.fired = fault.fired_at is not None
            item.outcome, item.detail = classify(report, fault, _tracebacks(Path(tmp)))
        if item.fired:
            item.detection_s = round(ended - fault.fired_at, 2)
        left = _leftovers(before)
        item.leftovers = list(left)
        if left:
            item.outcome, item.detail = "BAD: processes left behind", "; ".join(
                f"pid {pid} ({what})" for pid, what in left.items())
        results.append(item)
        took = f"{item.detection_s:.1f} s after the fault" if item.detection_s is not None else "no fault fired"
        log(f"{index:>3} {scenario.name:<22} {action:<13} {role:<9} at {at_s:5.2f} s -> {item.outcome}, "
            f"{took}: {item.detail}")
        bar.update(status=f"{sum(not r.ok for r in results)} failed")
    detections = sorted(r.detection_s for r in results if r.detection_s is not None and r.outcome == "clean failure")
    summary = {
        "iterations": iterations, "seed": seed, "dask_workers": dask_workers, "fhe": fhe or "scenario's", "liveness_s": liveness,
        "passed": sum(r.ok for r in results), "failed": sum(not r.ok for r in results),
        "outcomes": {o: sum(r.outcome == o for r in results) for o in sorted({r.outcome for r in results})},
        "detection_s": _distribution(detections),
    }
    return {"summary": summary, "iterations": [asdict(r) for r in results], "baselines_s": durations}


def _distribution(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return {"count": len(values), "min": values[0], "median": round(statistics.median(values), 2),
            "p95": p95, "max": values[-1]}
