"""Scenario files: their schema, and validation that names the file, the field and what was expected; applicants
are checked against the schema of the scenario's deployment (its `deployment:` field, or the one given)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credit_model.explainability import STRATEGIES
from credit_model.deployment import COMMITTED, DeploymentError, load_deployment, resolve
from credit_model.schema import PARTIES, InputValidationError, Schema
from protocol.errors import ErrorCode
from protocol.messages import MessageType
from protocol.safe_yaml import UnsafeYamlError, key_path, load_yaml

from .network import Network, NetworkError, parse_network

MESSAGE_TYPES = tuple(t.value for t in MessageType)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
OUTCOMES = ("approved_at_own_bin", "bin_found", "no_bin_helps", "at_last_bin")
ACTIONS = ("predict", "explain")
MAX_FILE_BYTES = 1024 * 1024
MAX_APPLICANTS = 200


class ScenarioError(ValueError):
    """A scenario file that does not fit the schema."""

    def __init__(self, path: Path | str, where: str, expected: str):
        self.path, self.where, self.expected = str(path), where, expected
        super().__init__(f"{path}: {where}: {expected}")


@dataclass(frozen=True)
class Expect:
    decision: str | None = None
    outcome: str | None = None
    bin: str | None = None
    message: str | None = None
    error: str | None = None
    error_mentions: str | None = None
    keygen: bool | None = None
    eval_key_upload: bool | None = None
    max_runs: int | None = None


@dataclass(frozen=True)
class Step:
    action: str
    strategy: str | None = None
    withhold: tuple[str, ...] = ()
    expect: Expect = field(default_factory=Expect)


@dataclass(frozen=True)
class Applicant:
    name: str
    data: dict[str, dict[str, Any]]
    steps: tuple[Step, ...]


PROCESS_FAULTS = ("kill", "restart", "cut_off")
MESSAGE_FAULTS = ("drop", "delay", "duplicate", "corrupt")
CALLS = ("prepare", "encrypt:bank", "encrypt:agency", "predict", "explain")
ROLES = ("evaluator", "user", "bank", "agency")


@dataclass(frozen=True)
class Fault:
    """kill / restart / cut_off a role just before a runner call of an applicant, or make a role
    drop / delay / duplicate / corrupt the next `count` messages of a type it sends."""

    action: str
    role: str
    before: str | None = None
    applicant: int = 1
    message: str | None = None
    count: int = 1
    seconds: float = 0.0

    def option(self) -> str:
        """The role's --fault value for a message fault."""
        return f"{self.action}:{self.message}:{self.count}:{self.seconds}"


@dataclass(frozen=True)
class Scenario:
    path: str
    name: str
    description: str
    applicants: tuple[Applicant, ...]
    deployment: str = ""  # the deployment directory the applicants were checked against
    fhe: str = "execute"
    transport: str = "ipc"
    strategy: str = "linear"
    deadline_s: float = 900.0
    command_timeout_s: float = 600.0
    request_timeout_s: float | None = None
    faults: tuple[Fault, ...] = ()
    expect_failure: dict | None = None  # {"role": ..., "step": ...}: the run must fail cleanly so
    network: Network | None = None  # link conditions (scenarios/network.py); None: loopback as it is


class _Checker:
    def __init__(self, path):
        self.path = path

    def fail(self, where: str, expected: str):
        raise ScenarioError(self.path, where, expected)

    def mapping(self, value, where: str, required: set[str], optional: set[str]) -> dict:
        """Check a mapping's keys; `where` is its path ("" for the top level of the file)."""
        if not isinstance(value, dict):
            self.fail(where or "(top level)", f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - required - optional, key=str)
        if unknown:
            self.fail(key_path(where, unknown[0]), f"unknown field; expected one of {sorted(required | optional)}")
        missing = sorted(required - set(value))
        if missing:
            self.fail(key_path(where, missing[0]), "required field is missing")
        return value

    def choice(self, value, where: str, allowed) -> str:
        if not isinstance(value, str) or value not in allowed:
            self.fail(where, f"expected one of {list(allowed)}, got {value!r:.80}")
        return value

    def seconds(self, value, where: str, minimum: float = 1.0, maximum: float = 86400.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
            self.fail(where, f"expected seconds from {minimum:g} to {maximum:g}, got {value!r:.80}")
        return float(value)

    def text(self, value, where: str, pattern: re.Pattern | None = None, limit: int = 2000) -> str:
        if not isinstance(value, str) or len(value) > limit or (pattern and not pattern.fullmatch(value)):
            rule = f"matching {pattern.pattern}" if pattern else f"of at most {limit} characters"
            self.fail(where, f"expected a string {rule}, got {value!r:.80}")
        return value


def _expect(c: _Checker, raw, where: str, action: str, bins: tuple[str, ...]) -> Expect:
    keys = {"predict": {"decision", "keygen", "eval_key_upload"},
            "explain": {"outcome", "bin", "max_runs"}}[action] | {"message", "error", "error_mentions"}
    raw = c.mapping({} if raw is None else raw, where, set(), keys)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key == "decision":
            out[key] = c.choice(value, here, ("approved", "denied"))
        elif key == "outcome":
            out[key] = c.choice(value, here, OUTCOMES)
        elif key == "bin":
            out[key] = c.choice(value, here, bins)
        elif key == "error":
            out[key] = c.choice(value, here, [code.value for code in ErrorCode])
        elif key in ("keygen", "eval_key_upload"):
            if not isinstance(value, bool):
                c.fail(here, f"expected true or false, got {value!r:.80}")
            out[key] = value
        elif key == "max_runs":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                c.fail(here, f"expected an integer from 0 to 100, got {value!r:.80}")
            out[key] = value
        else:
            out[key] = c.text(value, here)
    return Expect(**out)


def _step(c: _Checker, raw, where: str, bins: tuple[str, ...]) -> Step:
    raw = c.mapping(raw, where, {"action"}, {"strategy", "withhold", "expect"})
    action = c.choice(raw["action"], f"{where}.action", ACTIONS)
    strategy = raw.get("strategy")
    if strategy is not None:
        if action != "explain":
            c.fail(f"{where}.strategy", "only an explain step takes a strategy")
        c.choice(strategy, f"{where}.strategy", STRATEGIES)
    withhold = raw.get("withhold", [])
    if not isinstance(withhold, list) or len(withhold) > 2 or (withhold and action != "predict"):
        c.fail(f"{where}.withhold", "expected a list of parties, on a predict step")
    for i, party in enumerate(withhold):
        c.choice(party, f"{where}.withhold[{i}]", ("bank", "agency"))
    return Step(action, strategy, tuple(withhold), _expect(c, raw.get("expect"), f"{where}.expect", action, bins))


def _deployment(c: _Checker, raw, path: Path | str, override: str | Path | None) -> tuple[str, Schema]:
    """The deployment to check against: the one given (e.g. --deployment), else the file's, else the default.
    A name is a committed deployment; a path is taken relative to the scenario file."""
    if override is not None:
        where, directory = "--deployment", resolve(override)
    elif "deployment" in raw:
        name = c.text(raw["deployment"], "deployment", limit=500)
        where = "deployment"
        directory = resolve(name) if name in COMMITTED else Path(path).parent / name
    else:
        where, directory = "deployment (default)", resolve(None)
    try:
        deployment = load_deployment(directory, check_versions=False)
    except DeploymentError as exc:
        c.fail(where, f"a deployment ({', '.join(COMMITTED)} or a directory): {exc}")
    return str(deployment.directory), deployment.schema


def parse_scenario(text: str | bytes, path: Path | str, deployment: str | Path | None = None) -> Scenario:
    c = _Checker(path)
    try:
        # Anchors and aliases are allowed (a shipped scenario repeats an applicant with &alice / <<: *alice); every
        # use of an alias counts all its values again against load_yaml's limits, so an alias bomb is refused.
        raw = load_yaml(text, str(path), max_bytes=MAX_FILE_BYTES, aliases=True)
    except UnsafeYamlError as exc:
        raise ScenarioError(path, exc.where or "file", exc.reason) from None
    raw = c.mapping(raw, "", {"name", "description", "applicants"},
                    {"deployment", "fhe", "transport", "strategy", "deadline_s", "command_timeout_s",
                     "request_timeout_s", "faults", "expect_failure", "network"})
    name = c.text(raw["name"], "name", NAME)
    description = c.text(raw["description"], "description", limit=300)
    deadline = c.seconds(raw.get("deadline_s", 900.0), "deadline_s")
    command_timeout = c.seconds(raw.get("command_timeout_s", 600.0), "command_timeout_s")
    request_timeout = c.seconds(raw["request_timeout_s"], "request_timeout_s") if "request_timeout_s" in raw else None
    directory, schema = _deployment(c, raw, path, deployment)
    applicants_raw = raw["applicants"]
    if not isinstance(applicants_raw, list) or not 1 <= len(applicants_raw) <= MAX_APPLICANTS:
        c.fail("applicants", f"expected a list of 1 to {MAX_APPLICANTS} applicants")
    applicants = []
    for i, entry in enumerate(applicants_raw):
        where = f"applicants[{i}]"
        entry = c.mapping(entry, where, {"name", "steps", *PARTIES}, set())
        data = {}
        for party in PARTIES:
            try:
                data[party] = schema.validate_record(party, entry[party])
            except InputValidationError as exc:
                c.fail(f"{where}.{party}" if exc.field == "-" else key_path(f"{where}.{party}", exc.field),
                       f"{exc.problem}" + (f" (allowed: {exc.allowed})" if exc.allowed else ""))
        steps_raw = entry["steps"]
        if not isinstance(steps_raw, list) or not 1 <= len(steps_raw) <= 20:
            c.fail(f"{where}.steps", "expected a list of 1 to 20 steps")
        steps = tuple(_step(c, s, f"{where}.steps[{j}]", schema.bins) for j, s in enumerate(steps_raw))
        applicants.append(Applicant(c.text(entry["name"], f"{where}.name", NAME), data, steps))
    return Scenario(
        path=str(path), name=name, description=description, applicants=tuple(applicants), deployment=directory,
        fhe=c.choice(raw.get("fhe", "execute"), "fhe", ("execute", "simulate")),
        transport=c.choice(raw.get("transport", "ipc"), "transport", ("ipc", "tcp")),
        strategy=c.choice(raw.get("strategy", "linear"), "strategy", STRATEGIES),
        deadline_s=deadline, command_timeout_s=command_timeout, request_timeout_s=request_timeout,
        faults=_faults(c, raw.get("faults", []), len(applicants)),
        expect_failure=_expect_failure(c, raw.get("expect_failure")),
        network=_network(c, raw.get("network")),
    )


def _network(c: _Checker, raw) -> Network | None:
    if raw is None:
        return None
    try:
        return parse_network(c.path, "network", raw)
    except NetworkError as exc:
        c.fail(exc.where, exc.expected)


def _faults(c: _Checker, raw, applicants: int) -> tuple[Fault, ...]:
    if not isinstance(raw, list) or len(raw) > 20:
        c.fail("faults", "expected a list of at most 20 faults")
    faults = []
    for i, entry in enumerate(raw):
        where = f"faults[{i}]"
        entry = c.mapping(entry, where, {"action", "role"}, {"before", "applicant", "message", "count", "seconds"})
        action = c.choice(entry["action"], f"{where}.action", PROCESS_FAULTS + MESSAGE_FAULTS)
        role = c.choice(entry["role"], f"{where}.role", ROLES)
        if action in PROCESS_FAULTS:
            before = c.choice(entry.get("before"), f"{where}.before", CALLS)
            if "message" in entry:
                c.fail(f"{where}.message", f"only message faults ({', '.join(MESSAGE_FAULTS)}) take a message type")
        else:
            before = None
            c.choice(entry.get("message"), f"{where}.message", [t for t in MESSAGE_TYPES])
        index = entry.get("applicant", 1)
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= applicants:
            c.fail(f"{where}.applicant", f"expected an applicant number from 1 to {applicants}")
        count = entry.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
            c.fail(f"{where}.count", "expected an integer from 1 to 100")
        seconds = c.seconds(entry.get("seconds", 0.0), f"{where}.seconds", minimum=0.0, maximum=600)
        faults.append(Fault(action, role, before, index, entry.get("message"), count, seconds))
    return tuple(faults)


def _expect_failure(c: _Checker, raw) -> dict | None:
    if raw is None:
        return None
    raw = c.mapping(raw, "expect_failure", {"role", "step"}, set())
    return {"role": c.choice(raw["role"], "expect_failure.role", ROLES),
            "step": c.choice(raw["step"], "expect_failure.step", CALLS)}


def load_scenario(path: Path | str, deployment: str | Path | None = None) -> Scenario:
    path = Path(path)
    try:
        if not path.is_file():
            raise ScenarioError(path, "file", "an existing scenario file")
        with path.open("rb") as handle:  # read at most one byte more than allowed, whatever the file claims
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(path, "file", f"a readable scenario file ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(path, "file", f"at most {MAX_FILE_BYTES} bytes")
    return parse_scenario(data, path, deployment)
