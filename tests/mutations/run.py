"""Mutation check: break the code on purpose, one mutant at a time, and name the test that catches each.

    .venv/bin/python tests/mutations/run.py [--only NAME ...] [--workers N]

Each mutant is applied to a fresh copy of the committed tree (`git worktree`, so the working copy is never touched),
then the tests that guard that promise run against it; a mutant is *killed* when at least one of them fails. The script
prints one line per mutant with the killing tests and ends with `N killed, N survived` (exit 1 if any survived)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("swap_party_columns", "each party quantizes its columns with its quantizers in reverse order (a slicing bug "
           "the clear model shares)", "credit_model/training/fhe_model.py",
           "enumerate(self.model.input_quantizers[start:stop])",
           "enumerate(self.model.input_quantizers[start:stop][::-1])",
           ("tests/test_model_reference.py",)),
    Mutant("drop_monotone_constraint", "training no longer constrains the tree to be monotone in years employed "
           "(the manifest still says it is)", "credit_model/training/train.py",
           "    if config.monotone_years:\n        monotonic", "    if False:\n        monotonic",
           ("tests/test_model_properties.py::test_training_honours_the_monotone_constraint_on_data_that_fights_it",)),
    Mutant("stop_writing_captures", "a role's capture directory stays empty", "protocol/node.py",
           "        if self._captured >= MAX_CAPTURED:\n                return",
           "        if True:\n                return",
           ("tests/test_custody_audit.py",)),
    Mutant("return_previous_output", "GET_OUTPUT answers with the session's previous output when the asked run has "
           "none yet", "evaluator/service.py",
           "        record = session.outputs.get(message.run_id)\n",
           "        record = session.outputs.get(message.run_id) or next(reversed(session.outputs.values()), None)\n",
           ("tests/test_hostile_peers.py", "tests/test_conformance.py::test_our_roles_pass_every_check")),
    Mutant("ignore_peer_deadline", "a request to a peer waits past its deadline (only liveness can end it)",
           "protocol/transport.py",
           "                if time.monotonic() >= deadline:\n                    raise PeerTimeout(f\"{self.name} did not",
           "                if False:\n                    raise PeerTimeout(f\"{self.name} did not",
           ("tests/test_faults.py", "tests/test_liveness.py")),
    Mutant("skip_input_party_check", "an INPUT's party field is no longer bound to its sender",
           "protocol/authorization.py",
           'INPUT=Rule(frozenset({"user", "bank", "agency"}), bound_field="party")',
           'INPUT=Rule(frozenset({"user", "bank", "agency"}))',
           ("tests/test_authorization.py::test_live_roles_enforce_every_row_and_a_refusal_changes_nothing",)),
)


def apply(mutant: Mutant, tree: Path) -> None:
    path = tree / mutant.path
    text = path.read_text(encoding="utf-8")
    if text.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the code to mutate is not found once in {mutant.path}; update the mutant")
    path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")


def failed_tests(output: str) -> list[str]:
    return sorted({line.split()[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))})


def run_mutant(mutant: Mutant, workers: str) -> tuple[bool, list[str], float]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), "HEAD"], cwd=ROOT, check=True)
        try:
            apply(mutant, tree)
            env = {**os.environ, "PYTHONPATH": str(tree)}  # the mutated copy, not the editable install's tree
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-n", workers, "-p", "no:cacheprovider",
                                     "-o", "addopts=", "-rfE", *mutant.tests], cwd=tree, env=env,
                                    capture_output=True, text=True, timeout=1800, check=False)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    killers = failed_tests(result.stdout)
    return result.returncode != 0 and bool(killers), killers, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="mutant names (default: all)")
    parser.add_argument("--workers", default="2", help="pytest-xdist workers per mutant run")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    killed = 0
    for mutant in chosen:
        dead, killers, seconds = run_mutant(mutant, args.workers)
        killed += dead
        verdict = f"killed by {killers[0]}" + (f" (+{len(killers) - 1} more)" if len(killers) > 1 else "") \
            if dead else "SURVIVED"
        print(f"{mutant.name:26} {verdict}  [{seconds:.0f} s] - {mutant.what}", flush=True)
    print(f"{killed} killed, {len(chosen) - killed} survived")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
