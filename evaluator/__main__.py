"""`python -m evaluator`: run the evaluator role as its own process."""

from __future__ import annotations

from pathlib import Path

import click

from credit_model.deployment import load_deployment
from protocol.settings import RoleSettings, curve_for, role_command, run_as_process

from .cluster import ClusterRefused, check_scheduler
from .service import Evaluator


def _run(settings: RoleSettings) -> None:
    if settings.engine == "dask" and settings.scheduler:
        try:  # refused at once, in one line, before anything starts
            check_scheduler(settings.scheduler, settings.cluster_tls)
        except ClusterRefused as exc:
            raise click.UsageError(str(exc)) from None
    elif settings.engine != "dask" and (settings.scheduler or settings.cluster_tls):
        raise click.UsageError("--scheduler and --cluster-tls need --engine dask")
    if settings.engine != "dask" and (settings.workers or settings.worker_threads):
        option = f"--workers {settings.workers}" if settings.workers else f"--worker-threads {settings.worker_threads}"
        raise click.UsageError(f"{option} is the Dask engine's: --engine local runs on a thread of the evaluator "
                               f"itself; use --engine dask {option} (a local Dask cluster of worker processes)")
    Evaluator(load_deployment(settings.deployment), settings.evaluator, Path(settings.workdir),
              control=settings.control, simulate=settings.fhe == "simulate",
              max_sessions=settings.max_sessions, max_keys=settings.max_keys,
              max_store_mb=settings.max_store_mb, workers=settings.workers,
              worker_threads=settings.worker_threads, curve=curve_for("evaluator", settings),
              exit_with_parent=settings.exit_with_parent, faults=settings.fault, liveness=settings.liveness,
              run_dir=settings.run_dir, engine=settings.engine, scheduler=settings.scheduler,
              cluster_tls=settings.cluster_tls, worker_cache_mb=settings.worker_cache_mb,
              capture_dir=Path(settings.capture_dir) if settings.capture_dir else None).serve_forever()


main = role_command("evaluator", _run)

if __name__ == "__main__":
    run_as_process(main)
