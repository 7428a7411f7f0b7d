"""A runner killed in the middle of a run (SIGKILL or SIGTERM): how long its roles outlive it, and what it leaves."""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from simulation.processes import PROJECT_ROOT

READY = re.compile(r"all roles ready: (.*)")


def _alive(pid: int) -> bool:
    """A process that still exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return False


def left_behind(tmpdir: Path) -> list[str]:
    return sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))


def kill_one_run(sig: int, fhe: str, scenario: Path, after: str = "prepare+encrypt", delay: float = 0.0,
                 timeout: float = 120.0) -> dict:
    """Start `run_scenario.py run SCENARIO` with its own TMPDIR, send `sig` to the runner `delay` s after the line
    `after` appears, then measure when the last role is gone and what is left under that TMPDIR."""
    with tempfile.TemporaryDirectory(prefix="fcs-kill-") as tmp:
        tmpdir = Path(tmp)
        env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
        runner = subprocess.Popen([sys.executable, "run_scenario.py", "run", str(scenario), "--fhe", fhe],
                                  cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        pids, lines, deadline = {}, [], time.monotonic() + timeout
        for line in runner.stdout:
            lines.append(line)
            found = READY.search(line)
            if found:
                pids = {role: int(pid) for role, pid in (p.split("=") for p in found.group(1).split(", "))}
            if after in line and pids:
                break
            if time.monotonic() > deadline:
                break
        time.sleep(delay)
        killed_at = time.monotonic()
        runner.send_signal(sig)
        gone_at = {}
        while time.monotonic() - killed_at < 30 and len(gone_at) < len(pids):
            for role, pid in pids.items():
                if role not in gone_at and not _alive(pid):
                    gone_at[role] = time.monotonic() - killed_at
            time.sleep(0.01)
        rest = runner.stdout.read()
        code = runner.wait(30)
        files_gone_s = None
        while time.monotonic() - killed_at < 30:
            if not left_behind(tmpdir):
                files_gone_s = time.monotonic() - killed_at
                break
            time.sleep(0.01)
        return {"signal": signal.Signals(sig).name, "fhe": fhe, "roles": pids, "exit_code": code,
                "roles_gone_s": round(max(gone_at.values()), 3) if len(gone_at) == len(pids) else None,
                "files_gone_s": round(files_gone_s, 3) if files_gone_s is not None else None,
                "left_behind": left_behind(tmpdir)[:20], "output": "".join(lines) + rest}


def kill_runs(count: int, log: Callable[[str], None] = print,
              scenario: Path = PROJECT_ROOT / "scenarios" / "denied_bin_found.yaml") -> dict:
    """`count` kills per (signal, fhe mode), each at a different moment of the run; the distribution per pair."""
    figures = {}
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for fhe in ("simulate", "execute"):
            runs = []
            for i in range(count):
                run = kill_one_run(sig, fhe, scenario, delay=(0.02 if fhe == "simulate" else 0.4) * i)
                runs.append(run)
                log(f"{run['signal']:7} fhe={fhe:8} kill {i + 1}/{count}: roles gone in {run['roles_gone_s']} s, "
                    f"files gone in {run['files_gone_s']} s, exit {run['exit_code']}, left {len(run['left_behind'])}")
            gone = [r["roles_gone_s"] for r in runs if r["roles_gone_s"] is not None]
            figures[f"{signal.Signals(sig).name}_{fhe}"] = {
                "kills": count, "roles_gone_max_s": max(gone) if gone else None,
                "roles_gone_median_s": round(statistics.median(gone), 3) if gone else None,
                "roles_outlived_the_kill": count - len(gone),
                "runs_leaving_files": sum(1 for r in runs if r["left_behind"]),
                "stopped_line": sum(1 for r in runs if "stopped by SIGTERM" in r["output"]) if sig == signal.SIGTERM
                else None}
    return figures
