"""Settings of a role process, from command-line options or a YAML/JSON config file (options win)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import yaml


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
    max_sessions: int = 20
    max_keys: int = 20
    max_store_mb: int = 4096
    workers: int = 0
    worker_threads: int = 0
    capture_dir: str | None = None
    keys_dir: str | None = None
    insecure: bool = False
    exit_with_parent: bool = False
    fault: str | None = None
    log_level: str = "INFO"


FIELDS = {f.name: f for f in dataclasses.fields(RoleSettings)}
HELP = {
    "keys_dir": "Directory with <role>.key public keys of every trusted role and this role's "
                "<role>.key_secret (CurveZMQ; see `run_scenario.py keys`).",
    "insecure": "Run without CurveZMQ authentication and encryption (refused otherwise without --keys-dir).",
    "exit_with_parent": "Shut down when the process that started this one exits (the runner sets it).",
    "fault": "Inject message faults, comma-separated KIND:TYPE:COUNT[:SECONDS] (drop, delay, duplicate, "
             "corrupt), e.g. corrupt:INPUT:1. For tests and fault scenarios only.",
}


def load_settings(config: str | None, overrides: dict) -> RoleSettings:
    """Merge a config file (optional) with explicit options; unknown keys are an error."""
    values: dict = {}
    if config:
        data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise click.BadParameter(f"{config}: expected a mapping of settings")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise click.BadParameter(f"{config}: unknown settings {unknown}; known: {sorted(FIELDS)}")
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None and v is not False})
    if values.get("fhe", "execute") not in ("execute", "simulate"):
        raise click.BadParameter("fhe must be 'execute' or 'simulate'")
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
        return Curve.load(role, settings.keys_dir)
    except CurveError as exc:
        raise click.UsageError(str(exc)) from None


def role_command(role: str, run: Callable[[RoleSettings], None]) -> click.Command:
    """A click command taking every RoleSettings option plus --config, then calling run(settings)."""

    def callback(config, **options):
        settings = load_settings(config, options)
        logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                            format=f"%(asctime)s {role} %(levelname)s %(message)s")
        run(settings)

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
