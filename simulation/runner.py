"""Drive a scenario through the four role processes and check every expectation (the control plane only)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from credit_model.explainability import decision_message
from protocol.errors import ErrorCode, ProtocolError
from protocol.liveness import DEFAULT_LIVENESS_S
from protocol.run_dir import make_run_dir

from simulation.accounting import CpuSampler
from simulation.processes import ROLES, ProcessSet, RoleFailure
from simulation.stopping import RunStopped, deferred_signals, stopped_by
from scenarios.network import Network
from scenarios.spec import Applicant, Scenario, Step

# READY deadline: start-up measured at 1.1-1.3 s on an idle 2-core machine (bench `roles_ready_s`) and a few
# seconds with the test suite loading both cores; 30 s is generous for that and still names a stuck start fast.
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 600.0


@dataclass
class StepRecord:
    applicant: str
    name: str
    role: str
    seconds: float
    started: float
    ended: float
    bytes: int = 0
    ok: bool = True
    detail: dict = field(default_factory=dict)
    session: str = ""  # the application (session id): an applicant applying twice has two


@dataclass
class ApplicantReport:
    name: str
    session_id: str
    decision: str | None = None
    explanation: str | None = None
    errors: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    previews: dict[str, str] = field(default_factory=dict)

    @property
    def expectations_held(self) -> bool:
        return not self.failures


@dataclass
class RunReport:
    scenario: Scenario
    fhe: str
    strategy: str
    processes: dict[str, int] = field(default_factory=dict)
    applicants: list[ApplicantReport] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    fatal: str | None = None
    failure: dict | None = None  # {"role", "step", "reason"} of the failure that ended the run
    faults_applied: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    ended_by: dict[str, str] = field(default_factory=dict)  # how each role ended (ProcessSet.stop)
    run_dir: str | None = None  # only when it was kept (--keep-run-dir, or given by the caller)
    stopped: str | None = None  # "stopped by SIGTERM" when a signal ended the run
    network: Network | None = None  # the link conditions the run was emulated under (None: loopback as it is)
    cpu: dict = field(default_factory=dict)  # role -> [(time, cumulative CPU seconds)] (simulation/accounting.py)
    received: list[dict] = field(default_factory=list)  # every message a role received (time of arrival)

    @property
    def passed(self) -> bool:
        if self.stopped:  # a stopped run passes nothing, not even an expected failure
            return False
        expected = self.scenario.expect_failure
        if expected is not None:  # the run had to fail cleanly, naming this role and step
            return self.failure is not None and all(self.failure[k] == expected[k] for k in ("role", "step"))
        return self.fatal is None and all(a.expectations_held for a in self.applicants)


class ScenarioRunner:
    """Starts roles, tells them what to do, and records timings; keys and ciphertexts never pass through it."""

    def __init__(self, scenario: Scenario, fhe: str | None = None, strategy: str | None = None,
                 transport: str | None = None, deployment: str | None = None, run_dir: Path | None = None,
                 progress: Callable[[str], None] = lambda line: None,
                 extra_args: dict[str, list[str]] | None = None, secure: bool = True,
                 attach: str | None = None, keys_dir: str | None = None, liveness: float = DEFAULT_LIVENESS_S,
                 start_timeout: float = START_TIMEOUT, on_start: Callable[[ProcessSet], None] | None = None,
                 keep_run_dir: bool = False, network: Network | None = None):
        self.scenario = scenario
        self.fhe = fhe or scenario.fhe
        self.strategy = strategy
        self.transport = transport or scenario.transport
        # the deployment the scenario's applicants were checked against, unless one is given: roles that ran
        # another deployment's model would decide this scenario's applicants with it (bench did, on kaggle_xgboost)
        self.deployment = deployment or scenario.deployment or None
        self.run_dir = run_dir
        self.progress = progress
        self.secure = secure
        self.applicant_number = 0
        self.current_call = ""  # the runner call in flight (prepare, encrypt:bank, predict, explain)
        self.pending_faults = [f for f in scenario.faults if f.before is not None]
        message_faults: dict[str, list[str]] = {}
        for fault in scenario.faults:
            if fault.before is None:
                message_faults.setdefault(fault.role, []).append(fault.option())
        self.extra_args = {role: list((extra_args or {}).get(role, [])) for role in ROLES}
        for role, options in message_faults.items():
            self.extra_args[role] += ["--fault", ",".join(options)]
        if scenario.request_timeout_s is not None:
            for role in ROLES:
                self.extra_args[role] += ["--request-timeout", str(scenario.request_timeout_s)]
        self.attach, self.keys_dir = attach, keys_dir
        self.liveness, self.start_timeout, self.on_start = liveness, start_timeout, on_start
        self.keep_run_dir = keep_run_dir  # a given run_dir is the caller's, and kept too
        self.phase = "start"
        self.network = network if network is not None else scenario.network
        self.report = RunReport(scenario, self.fhe, strategy or scenario.strategy, network=self.network)
        self.deadline = 0.0

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RoleFailure("runner", f"the scenario deadline of {self.scenario.deadline_s:.0f} s passed",
                              ErrorCode.TIMEOUT)
        return left

    def run(self) -> RunReport:
        started = time.monotonic()
        self.deadline = started + self.scenario.deadline_s
        run_dir = Path(self.run_dir) if self.run_dir else make_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        procs, stopped, sampler = None, False, None
        self.phase = "start"
        try:
            procs = ProcessSet(run_dir, self.transport, self.fhe, self.deployment, self.extra_args, self.secure,
                               self.attach, self.keys_dir, self.liveness, self.network)
            how = f"attached at {self.attach}" if self.attach else self.transport
            if procs.network is not None:
                how += f", network {procs.network.label()} through the shaping forwarder"
            self.progress(f"{'waiting for' if self.attach else 'starting'} {', '.join(ROLES)} ({how}, "
                          f"fhe={self.fhe}, {'CurveZMQ' if self.secure else 'INSECURE: no CurveZMQ'})")
            if self.on_start is not None:
                self.on_start(procs)  # e.g. the chaos command arms its fault once the processes exist
            self.report.processes = procs.start(min(self.start_timeout, self.remaining()))
            self.progress("all roles ready: " + ", ".join(f"{r}={p}" for r, p in self.report.processes.items()))
            sampler = CpuSampler(lambda: {r: p.popen.pid for r, p in procs.procs.items() if p.popen is not None})
            sampler.start()
            counts: dict[str, int] = {}
            for applicant in self.scenario.applicants:
                counts[applicant.name] = counts.get(applicant.name, 0) + 1
                self.phase = f"applicant {applicant.name}"
                self.run_applicant(procs, applicant, f"{applicant.name}-{counts[applicant.name]}")
            self.phase, self.current_call = "stats", ""
            for role in procs.procs:
                stats = procs.command(role, "stats", {}, min(30.0, self.remaining()))
                self.report.messages.extend(stats["messages"])
                self.report.received.extend(stats.get("received", []))
            self.report.messages.extend(procs.traffic.drain())
        except ProtocolError as exc:
            stopped = isinstance(exc, RunStopped)
            if stopped:
                self.report.stopped = exc.reason
            role = getattr(exc, "role", "runner")
            self.report.fatal = f"{role}: {exc.reason}"
            if self.report.failure is None or stopped:
                # the runner call in flight, else the phase (start, stats): never "start" for a later failure
                step = self.current_call or self.phase
                self.report.failure = {"role": role, "step": step, "reason": exc.reason}
            self.progress(f"FATAL {self.report.fatal}")
        finally:
            with deferred_signals():  # a second Ctrl-C does not cut the clean-up short
                if sampler is not None:
                    self.report.cpu = sampler.stop()
                if procs is not None:
                    self.report.exit_codes = procs.stop(at_once=stopped)
                    self.report.ended_by = dict(procs.ended_by)
                if self.run_dir is None and not self.keep_run_dir:
                    shutil.rmtree(run_dir, ignore_errors=True)  # keys, ciphertexts, logs, ipc endpoints
                else:
                    self.progress(f"run directory kept: {run_dir}")
        if stopped_by() is not None and not stopped:  # the signal came while the roles were being stopped
            stop = RunStopped(stopped_by())
            self.report.fatal, self.report.stopped = f"runner: {stop.reason}", stop.reason
            self.report.failure = {"role": "runner", "step": self.current_call or self.phase, "reason": stop.reason}
        self.report.run_dir = str(run_dir) if (self.run_dir or self.keep_run_dir) else None
        self.report.messages.sort(key=lambda m: m["t"])
        self._attribute_bytes()
        self.report.duration_s = round(time.monotonic() - started, 3)
        return self.report

    def _attribute_bytes(self) -> None:
        for step in self.report.steps:
            step.bytes = sum(m["bytes"] for m in self.report.messages
                             if step.started <= m["t"] <= step.ended and m["receiver"] != "runner"
                             and m["sender"] != "runner")

    def _inject(self, procs: ProcessSet, call: str) -> None:
        """Apply the scenario's process faults due just before this call of this applicant."""
        for fault in [f for f in self.pending_faults if (f.applicant, f.before) == (self.applicant_number, call)]:
            self.pending_faults.remove(fault)
            text = f"{fault.action} {fault.role} before {call} of applicant {fault.applicant}"
            self.progress(f"FAULT {text}")
            self.report.faults_applied.append(text)
            if fault.action == "kill":
                procs.kill(fault.role)
            elif fault.action == "restart":
                pid = procs.restart(fault.role, min(self.start_timeout, self.remaining()))
                self.report.processes[f"{fault.role} (restarted)"] = pid
            else:
                procs.cut_off(fault.role, fault.seconds)

    def _call(self, procs: ProcessSet, app: ApplicantReport, name: str, role: str, action: str,
              params: dict) -> dict:
        call = self.current_call = f"{action}:{role}" if action == "encrypt" else action
        self._inject(procs, call)
        t0, wall0 = time.perf_counter(), time.time()
        ok, result = False, {}  # also what the step records if the call ends by any other exception (Ctrl-C)
        try:
            result = procs.command(role, action, params,
                                   min(COMMAND_TIMEOUT, self.scenario.command_timeout_s, self.remaining()))
            ok = True
            return result
        except RoleFailure as exc:
            ok, result = False, {}
            self.report.failure = {"role": exc.role, "step": call, "reason": exc.reason}
            raise
        except ProtocolError:
            ok, result = False, {}
            raise
        finally:
            seconds = time.perf_counter() - t0
            self.report.steps.append(StepRecord(app.name, name, role, round(seconds, 4), wall0, time.time(),
                                                ok=ok, detail=result, session=app.session_id))
            self.progress(f"[{app.session_id}] {name:<18} {role:<9} {seconds:7.2f} s {'ok' if ok else 'error'}")

    def run_applicant(self, procs: ProcessSet, applicant: Applicant, session_id: str) -> None:
        self.applicant_number += 1
        app = ApplicantReport(applicant.name, session_id)
        self.report.applicants.append(app)
        for index, step in enumerate(applicant.steps):
            label = f"applicant {applicant.name!r} ({session_id}), step {index + 1} ({step.action})"
            try:
                outcome = self.run_step(procs, applicant, app, step)
                error = None
            except (RoleFailure, RunStopped):
                raise
            except ProtocolError as exc:
                if exc.code is ErrorCode.PEER_LOST:  # a role lost a peer: name it and end the run cleanly
                    try:
                        procs.confirm_loss(getattr(exc, "peer", "") or "user", exc.reason, f"{step.action}")
                    except RoleFailure as failure:
                        # the runner call in flight, as when the runner sees the loss itself (not the step's action)
                        self.report.failure = {"role": failure.role, "step": self.current_call or step.action,
                                               "reason": failure.reason}
                        raise
                outcome, error = {}, exc
                role = getattr(exc, "peer", "") or "runner"
                app.errors.append({"step": step.action, "role": role, "code": exc.code.value, "reason": exc.reason})
            for failure in check(step, outcome, error, simulate=self.fhe == "simulate"):
                role = (getattr(error, "peer", "") or "user") if error else "user"
                app.failures.append(f"{label}, party {role}: {failure}")

    def run_step(self, procs: ProcessSet, applicant: Applicant, app: ApplicantReport, step: Step) -> dict:
        sid, key_id = app.session_id, applicant.name
        if step.action == "predict":
            prep = self._call(procs, app, "prepare+encrypt", "user", "prepare",
                              {"session_id": sid, "key_id": key_id, "features": applicant.data["user"]})
            app.previews["user"] = prep.get("preview", "")
            for party in ("bank", "agency"):
                if party in step.withhold:
                    self.progress(f"[{sid}] {party} withholds its input (scenario)")
                    continue
                res = self._call(procs, app, "encrypt", party, "encrypt",
                                 {"session_id": sid, "key_id": key_id, "features": applicant.data[party]})
                app.previews[party] = res.get("preview", "")
            result = self._call(procs, app, "run+decrypt", "user", "predict", {"session_id": sid})
            app.previews["output"] = result.get("output_preview", "")
            app.decision = result["decision"]
            return {**result, "keygen": "keygen_s" in prep, "eval_key_upload": prep.get("eval_key_uploaded")}
        strategy = step.strategy or self.strategy or self.scenario.strategy
        result = self._call(procs, app, f"explain ({strategy})", "user", "explain",
                            {"session_id": sid, "strategy": strategy})
        app.explanation = result["explanation"]
        return result


def check(step: Step, outcome: dict, error: ProtocolError | None, simulate: bool = False) -> list[str]:
    """Compare what happened with what the step expects; returns the failures in words.

    Simulation has no keys, so keygen / eval_key_upload expectations only apply to real FHE.
    """
    exp, failures = step.expect, []
    if error is not None:
        if exp.error is None:
            return [f"unexpected error {error.code.value}: {error.reason}"]
        if error.code.value != exp.error:
            failures.append(f"expected error {exp.error}, got {error.code.value}: {error.reason}")
        if exp.error_mentions and exp.error_mentions not in error.reason:
            failures.append(f"expected the error to mention {exp.error_mentions!r}, got {error.reason!r}")
        if exp.message and exp.message != error.reason:
            failures.append(f"expected message {exp.message!r}, got {error.reason!r}")
        return failures
    if exp.error is not None:
        return [f"expected error {exp.error}, but the step succeeded"]
    if step.action == "predict":
        if exp.decision and decision_message(exp.decision == "approved") != outcome["decision"]:
            failures.append(f"expected decision {exp.decision!r}, got {outcome['decision']!r}")
        for key in () if simulate else ("keygen", "eval_key_upload"):
            wanted = getattr(exp, key)
            if wanted is not None and bool(outcome.get(key)) != wanted:
                failures.append(f"expected {key}={wanted}, got {bool(outcome.get(key))}")
        if exp.message and exp.message != outcome["decision"]:
            failures.append(f"expected message {exp.message!r}, got {outcome['decision']!r}")
        return failures
    if exp.outcome and exp.outcome != outcome["outcome"]:
        failures.append(f"expected outcome {exp.outcome!r}, got {outcome['outcome']!r}")
    if exp.bin and exp.bin != outcome["bin"]:
        failures.append(f"expected bin {exp.bin!r}, got {outcome['bin']!r}")
    if exp.message and exp.message != outcome["explanation"]:
        failures.append(f"expected message {exp.message!r}, got {outcome['explanation']!r}")
    if exp.max_runs is not None and outcome["runs"] > exp.max_runs:
        failures.append(f"expected at most {exp.max_runs} encrypted runs, took {outcome['runs']}")
    return failures
