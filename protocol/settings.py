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
    workers: int = 0
    worker_threads: int = 0
    capture_dir: str | None = None
    log_level: str = "INFO"


FIELDS = {f.name: f for f in dataclasses.fields(RoleSettings)}


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
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("fhe", "execute") not in ("execute", "simulate"):
        raise click.BadParameter("fhe must be 'execute' or 'simulate'")
    return RoleSettings(**values)


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
        kind = {float: float, int: int}.get(type(f.default), str)
        params.append(click.Option([f"--{name.replace('_', '-')}", name], type=kind, default=None,
                                   help=f"default: {f.default}"))
    return click.Command(role, callback=callback, params=params,
                         help=f"Run the {role} role as its own process.")
