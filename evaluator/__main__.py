"""`python -m evaluator`: run the evaluator role as its own process."""

from __future__ import annotations

from pathlib import Path

from credit_model.deployment import load_deployment
from protocol.settings import RoleSettings, curve_for, role_command, run_as_process

from .service import Evaluator


def _run(settings: RoleSettings) -> None:
    Evaluator(load_deployment(settings.deployment), settings.evaluator, Path(settings.workdir),
              control=settings.control, simulate=settings.fhe == "simulate",
              max_sessions=settings.max_sessions, max_keys=settings.max_keys,
              max_store_mb=settings.max_store_mb, workers=settings.workers,
              worker_threads=settings.worker_threads, curve=curve_for("evaluator", settings),
              exit_with_parent=settings.exit_with_parent, faults=settings.fault, liveness=settings.liveness,
              run_dir=settings.run_dir,
              capture_dir=Path(settings.capture_dir) if settings.capture_dir else None).serve_forever()


main = role_command("evaluator", _run)

if __name__ == "__main__":
    run_as_process(main)
