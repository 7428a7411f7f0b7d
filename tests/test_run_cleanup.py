"""A run leaves no secret behind (issue 17): its directory is private and removed whenever the run ends — normal end,
failure, SIGTERM, and SIGKILL of the runner (then the roles remove what is theirs) — and a signal ends a run as a
clean failure with its reports written."""

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from bench.kills import kill_one_run, left_behind
from scenarios import SCENARIO_DIR
from simulation.processes import PROJECT_ROOT, ProcessSet, RoleProcess
from simulation.runner import ScenarioRunner
from scenarios.spec import load_scenario
from tests.pinned_deployment import TREE

DENIED = SCENARIO_DIR / "denied_bin_found.yaml"


def run_cli(tmp_path, *args, timeout=120):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir))
    out = subprocess.run([sys.executable, "run_scenario.py", "run", *args], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    return out, tmpdir


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_runner_killed_mid_run_leaves_no_role_and_no_file(sig):
    run = kill_one_run(sig, "simulate", DENIED)
    assert len(run["roles"]) == 4, run["output"]  # it saw the roles start, and the kill came after a step began
    assert "prepare+encrypt" in run["output"]
    assert run["roles_gone_s"] is not None and run["roles_gone_s"] < 5.0, run
    assert run["left_behind"] == [], run["left_behind"]  # keys, logs, ipc files, work directories: all gone
    if sig == signal.SIGTERM:
        assert run["exit_code"] == 1 and "stopped by SIGTERM" in run["output"], run["output"][-1500:]
    else:
        assert run["exit_code"] == -9


@pytest.mark.fhe
def test_a_runner_killed_during_real_fhe_leaves_no_evaluation_key_behind():
    run = kill_one_run(signal.SIGKILL, "execute", DENIED, after="encrypt ", delay=0.2)
    assert "prepare+encrypt" in run["output"] and len(run["roles"]) == 4, run["output"]
    assert run["roles_gone_s"] is not None and run["roles_gone_s"] < 5.0, run
    assert run["left_behind"] == [], run["left_behind"]


def test_sigterm_ends_the_run_as_a_clean_failure_and_writes_the_reports(tmp_path):
    report = tmp_path / "report.json"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
    runner = subprocess.Popen([sys.executable, "run_scenario.py", "run", str(DENIED), "--fhe", "simulate",
                               "--report-json", str(report)], cwd=PROJECT_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in runner.stdout:
        lines.append(line)
        if "all roles ready" in line:
            runner.send_signal(signal.SIGTERM)
            break
    lines.append(runner.stdout.read())
    assert runner.wait(60) == 1, "".join(lines)
    data = json.loads(report.read_text())
    assert data["stopped"] == "stopped by SIGTERM" and data["passed"] is False
    assert data["failure"]["role"] == "runner" and data["failure"]["reason"] == "stopped by SIGTERM"
    assert set(data["ended_by"]) == {"evaluator", "user", "bank", "agency"}
    assert all(code is not None for code in data["exit_codes"].values())
    assert left_behind(tmpdir) == []


def test_a_normal_end_and_a_failed_run_leave_nothing_and_keep_run_dir_keeps_it_private(tmp_path):
    out, tmpdir = run_cli(tmp_path, str(DENIED), "--fhe", "simulate")
    assert out.returncode == 0, out.stdout[-2000:]
    assert left_behind(tmpdir) == []
    failing = tmp_path / "failing.yaml"  # a decision the model does not make: the run fails, and still cleans up
    failing.write_text(DENIED.read_text().replace("decision: denied", "decision: approved"))
    out, tmpdir = run_cli(tmp_path, str(failing), "--fhe", "simulate")
    assert out.returncode == 1 and "expected decision 'approved'" in out.stdout
    assert left_behind(tmpdir) == []
    out, tmpdir = run_cli(tmp_path, str(DENIED), "--fhe", "simulate", "--keep-run-dir")
    assert out.returncode == 0
    kept = [line.split("run directory kept: ")[1].strip() for line in out.stdout.splitlines()
            if "run directory kept: " in line]
    assert len(kept) == 1
    paths = [p for p in __import__("pathlib").Path(kept[0]).rglob("*") if not p.is_socket()]
    assert any(p.name.endswith(".key_secret") for p in paths)  # it kept what it says it kept
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is mode {mode:o}"


def test_a_failure_after_the_last_step_names_the_phase_not_start(tmp_path):
    """A role stopped once the last step is done fails the run in `stats`, not in `start`."""
    scenario = load_scenario(SCENARIO_DIR / "approved.yaml")
    holder = {}

    def on_start(procs):
        holder["procs"] = procs

    def progress(line):
        if "run+decrypt" in line and "procs" in holder:
            os.kill(holder["procs"].procs["bank"].popen.pid, signal.SIGSTOP)
    report = ScenarioRunner(scenario, fhe="simulate", liveness=1.0, progress=progress, on_start=on_start,
                            run_dir=tmp_path / "run").run()
    assert report.failure is not None and report.failure["role"] == "bank", report.fatal
    assert report.failure["step"] == "stats", report.failure


def test_a_role_killed_by_someone_else_while_stopping_is_not_recorded_as_shutdown(tmp_path):
    procs = ProcessSet(tmp_path, "ipc", "simulate", TREE)
    sleeper = subprocess.Popen(["sleep", "30"])
    procs.procs["bank"] = RoleProcess("bank", sleeper, None, identity=b"bank:x", pid=sleeper.pid)
    killer = threading.Timer(0.3, sleeper.kill)
    killer.start()
    codes = procs.stop(grace=2.0)
    assert codes["bank"] == -9
    assert procs.ended_by["bank"] == "SIGKILL (not from the runner)"
