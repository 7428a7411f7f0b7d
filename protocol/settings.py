"""Settings of a role process, from command-line options or a YAML/JSON config file (options win)."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import click

from .safe_yaml import UnsafeYamlError, load_yaml


@dataclass(frozen=True)
class RoleSettings:
    """Where a role listens and connects, and its deadlines. Endpoints are ZeroMQ URLs (tcp:// or ipc://)."""

    evaluator: str = "tcp://127.0.0.1:5555"
    bank: str = "tcp://127.0.0.1:5556"
    agency: str = "tcp://127.0.0.1:5557"
    control: str | None = None
    deployment: str | None = None
    workdir: str = "./work"
    fhe: str = "execute"
    request_timeout: float = 60.0
    run_timeout: float = 300.0
    liveness: float = 4.0
    max_sessions: int = 20
    max_keys: int = 20
    max_store_mb: int = 4096
    workers: int = 0
    worker_threads: int = 0
    engine: str = "local"
    scheduler: str | None = None
    cluster_tls: str | None = None
    worker_cache_mb: int = 512
    capture_dir: str | None = None
    capture_client_key: bool = False
    keys_dir: str | None = None
    insecure: bool = False
    exit_with_parent: bool = False
    run_dir: str | None = None
    fault: str | None = None
    log_level: str = "INFO"


FIELDS = {f.name: f for f in dataclasses.fields(RoleSettings)}
HELP = {
    "keys_dir": "This role's CURVE keys directory: its own <role>.key_secret and the <name>.key public keys of "
                "every trusted role, no other secret key (`run_scenario.py keys DIR` writes DIR/<role>/; given DIR, "
                "the role uses DIR/<role>/).",
    "insecure": "Run without CurveZMQ authentication and encryption (refused otherwise without --keys-dir).",
    "exit_with_parent": "Shut down when the process that started this one exits (the runner sets it).",
    "run_dir": "The run directory shared with the runner that started this role: held while the role runs; if the "
               "runner dies, the role removes its own files there and the last role out removes the directory.",
    "capture_dir": "Write every frame received to this directory (files 0600), for audits; the secret keys "
                   "a CLIENT_KEY carries are never written unless --capture-client-key is given too.",
    "capture_client_key": "TEST ONLY, INSECURE: also write the secret keys a CLIENT_KEY carries to the "
                          "capture directory (custody audits search the other roles' traffic for them).",
    "liveness": "Seconds without a heartbeat (or with no connection) after which a peer is lost: a request "
                "to it fails at once with PEER_LOST instead of waiting for --request-timeout.",
    "engine": "Where the evaluator runs circuits: 'local' (the default: one thread of the evaluator process, no "
              "other process) or 'dask' (a Dask cluster: --scheduler ADDRESS, or --workers N local Dask workers).",
    "workers": "With --engine dask: start a local Dask cluster of N worker processes (scheduler and workers on "
               "loopback, under mutual TLS with a certificate the evaluator makes in its work directory unless "
               "--cluster-tls is given). Refused with --engine local, which never starts processes: worker "
               "processes are the Dask engine's, so the engine is never switched behind the operator's back.",
    "worker_threads": "With --engine dask and --workers N: the cores Concrete uses for one run on each local worker "
                      "(default 1). Refused with --engine local.",
    "scheduler": "With --engine dask: the Dask scheduler to use, tls://HOST:PORT (tcp:// only on loopback).",
    "cluster_tls": "With --engine dask: a directory with ca.pem, cert.pem and key.pem (`run_scenario.py cluster-certs "
                   "DIR`): mutual TLS between the evaluator, the scheduler and the workers.",
    "worker_cache_mb": "With --engine dask: MB of deserialized evaluation keys each worker keeps (LRU).",
    "fault": "Inject message faults, comma-separated KIND:TYPE:COUNT[:SECONDS] (drop, delay, duplicate, "
             "corrupt), e.g. corrupt:INPUT:1. For tests and fault scenarios only.",
}


MAX_CONFIG_BYTES = 64 * 1024
LOG_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET")
# Range checks beyond the type: (test, what is expected).
RANGES: dict[str, tuple[Callable[[object], bool], str]] = {
    "fhe": (lambda v: v in ("execute", "simulate"), "'execute' or 'simulate'"),
    "log_level": (lambda v: v in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
    "request_timeout": (lambda v: 0 < v <= 1e6, "seconds, more than 0 and at most 1e6"),
    "run_timeout": (lambda v: 0 < v <= 1e6, "seconds, more than 0 and at most 1e6"),
    "liveness": (lambda v: 0.5 <= v <= 3600, "seconds from 0.5 to 3600"),
    "max_sessions": (lambda v: v >= 1, "an integer of at least 1"),
    "max_keys": (lambda v: v >= 1, "an integer of at least 1"),
    "max_store_mb": (lambda v: v >= 1, "an integer of at least 1"),
    "workers": (lambda v: 0 <= v <= 1024, "an integer from 0 to 1024"),
    "worker_threads": (lambda v: 0 <= v <= 1024, "an integer from 0 to 1024"),
    "engine": (lambda v: v in ("local", "dask"), "'local' or 'dask'"),
    "worker_cache_mb": (lambda v: v >= 1, "an integer of at least 1"),
}


def check_setting(name: str, value: object) -> str | None:
    """Why `value` does not fit the RoleSettings field `name` (its type, then its range), or None if it does."""
    kind = str(FIELDS[name].type)
    if value is None:
        return None if "None" in kind else "expected a value, got null"
    base = kind.replace("| None", "").strip()
    if base == "bool":
        ok, expected = isinstance(value, bool), "true or false (a boolean, not a string or number)"
    elif base == "int":
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        expected = "a number"
    else:
        ok, expected = isinstance(value, str), "a string"
    if ok and name in RANGES:
        ok, expected = RANGES[name][0](value), RANGES[name][1]
    if ok:
        return None
    shown = repr(value) if not isinstance(value, (str, list, dict)) or len(value) <= 40 else "(long)"
    return f"expected {expected}, got {type(value).__name__} {shown[:60]}"


def load_settings(config: str | None, overrides: dict) -> RoleSettings:
    """Merge a config file (optional) with explicit options; unknown keys and values of the wrong type or
    range are an error naming the file (or option) and the key."""
    values: dict = {}
    if config:
        try:
            with open(config, "rb") as handle:
                raw = handle.read(MAX_CONFIG_BYTES + 1)
            data = load_yaml(raw, str(config), max_bytes=MAX_CONFIG_BYTES)
        except OSError as exc:
            raise click.BadParameter(f"{config}: cannot be read ({exc.strerror or type(exc).__name__})") from None
        except UnsafeYamlError as exc:
            raise click.BadParameter(f"{config}: {exc}") from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise click.BadParameter(f"{config}: expected a mapping of settings, got {type(data).__name__}")
        unknown = [name if len(name) <= 40 else name[:37] + "..." for name in sorted(set(data) - set(FIELDS))]
        if unknown:
            raise click.BadParameter(f"{config}: unknown settings {unknown[:5]}; known: {sorted(FIELDS)}")
        for name, value in data.items():
            problem = check_setting(name, value)
            if problem:
                raise click.BadParameter(f"{config}: {name}: {problem}")
        values.update(data)
    given = {k: v for k, v in overrides.items() if v is not None and v is not False}
    for name, value in given.items():
        problem = check_setting(name, value) if name in FIELDS else "unknown setting"
        if problem:
            raise click.BadParameter(f"--{name.replace('_', '-')}: {problem}")
    values.update(given)
    return RoleSettings(**values)


def curve_for(role: str, settings: RoleSettings):
    """The role's CURVE identity, or None with --insecure; no keys and no --insecure is refused."""
    from .curve import Curve, CurveError
    if settings.insecure:
        message = (f"INSECURE: the {role} runs WITHOUT CurveZMQ: no authentication, no encryption "
                   "of the links; anyone who reaches its endpoints can talk to it")
        logging.getLogger("fhe_credit_sim").warning(message)
        click.secho(message, fg="red", bold=True, err=True)
        return None
    if not settings.keys_dir:
        raise click.UsageError(f"the {role} refuses to run without CURVE keys: pass --keys-dir DIR "
                               "(create them with `run_scenario.py keys DIR`) or, knowingly, --insecure")
    try:
        return Curve.load(role, settings.keys_dir, own_only=True)
    except CurveError as exc:
        raise click.UsageError(str(exc)) from None


_as_process = False


def run_as_process(command: click.Command) -> None:
    """Run a role command as the whole process (`python -m ...`): once the role has shut down cleanly,
    the process ends at once. In-process callers (tests, CliRunner) call the command itself instead."""
    global _as_process
    _as_process = True
    end_process_with(command)


def end_process_with(command: Callable[[], Any]) -> None:
    """Run `command` (a standalone click command) and end the process with its exit status, whatever happens.

    Concrete's native exit hook turns a non-zero exit status into 0 once its runtime has run a circuit in the
    process (measured: `sys.exit(1)` after a simulated run exits 0), so the status is passed to `os._exit`
    after flushing, never left to the interpreter's teardown."""
    try:
        command()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - printed as Python would, then the status Python would give
        traceback.print_exc()
        status = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def role_command(role: str, run: Callable[[RoleSettings], None]) -> click.Command:
    """A click command taking every RoleSettings option plus --config, then calling run(settings)."""

    def callback(config, **options):
        settings = load_settings(config, options)
        logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                            format=f"%(asctime)s {role} %(levelname)s %(message)s")
        run(settings)
        if _as_process:
            # The role closed every socket and wrote everything atomically: skip the interpreter's teardown
            # of Concrete's runtime (about a second), so that SIGTERM ends the process within its deadline.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    params = [click.Option(["--config"], type=click.Path(exists=True, dir_okay=False),
                           help="YAML or JSON file with any of the settings below.")]
    for name, f in FIELDS.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(f.default, bool):
            params.append(click.Option([flag, name], is_flag=True, default=False, help=HELP.get(name, "")))
            continue
        kind = {float: float, int: int}.get(type(f.default), str)
        params.append(click.Option([flag, name], type=kind, default=None,
                                   help=HELP.get(name, f"default: {f.default}")))
    return click.Command(role, callback=callback, params=params,
                         help=f"Run the {role} role as its own process.")
