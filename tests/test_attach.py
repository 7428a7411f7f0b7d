"""Roles started on their own (as on other hosts) with shared CURVE keys, driven by `run --attach`."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from run_scenario import cli
from scenarios import SCENARIO_DIR
from simulation.processes import MODULES, PROJECT_ROOT, free_tcp_port
from tests.pinned_deployment import TREE


@pytest.fixture
def started_elsewhere(tmp_path):
    keys = tmp_path / "keys"
    assert CliRunner().invoke(cli, ["keys", str(keys)]).exit_code == 0
    ports = {name: free_tcp_port() for name in ("control", "evaluator", "bank", "agency")}
    url = {name: f"tcp://127.0.0.1:{port}" for name, port in ports.items()}
    procs = []
    for role, module in MODULES.items():
        args = [sys.executable, "-m", module, "--control", url["control"], "--evaluator", url["evaluator"],
                "--bank", url["bank"], "--agency", url["agency"], "--keys-dir", str(keys), "--fhe", "simulate",
                "--deployment", TREE, "--workdir", str(tmp_path / role)]
        procs.append(subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    yield url["control"], keys, procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_run_attach_drives_roles_it_did_not_start(started_elsewhere, tmp_path):
    control, keys, procs = started_elsewhere
    report = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", str(SCENARIO_DIR / "denied_bin_found.yaml"), "--fhe", "simulate",
                                      "--attach", control,
                                      "--keys-dir", str(keys), "--report-json", str(report)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    data = json.loads(report.read_text())
    assert sorted(data["processes"].values()) == sorted(p.pid for p in procs)
    for proc in procs:  # the run ends with SHUTDOWN: every role exits 0 by itself
        assert proc.wait(30) == 0
    # the runner saw each control connection close before it ended (it resends SHUTDOWN until then)
    assert set(data["ended_by"].values()) == {"SHUTDOWN (attached: its connection closed)"}, data["ended_by"]


def test_attach_without_keys_is_refused():
    result = CliRunner().invoke(cli, ["run", "--attach", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "--keys-dir" in result.output


def test_in_attach_mode_a_stopped_role_is_named_by_heartbeats_alone(started_elsewhere):
    """The runner cannot watch processes it did not start: the bank, stopped once every role is READY, is
    named within the liveness window by its control connection's heartbeats."""
    import os
    import signal
    import time

    from simulation.processes import ROLES
    from simulation.runner import ScenarioRunner
    from scenarios.spec import load_scenario

    control, keys, procs = started_elsewhere
    bank = procs[list(ROLES).index("bank")]
    stopped = {}

    def progress(line):
        if line.startswith("all roles ready") and not stopped:
            os.kill(bank.pid, signal.SIGSTOP)
            stopped["at"] = time.monotonic()

    try:
        report = ScenarioRunner(load_scenario(SCENARIO_DIR / "denied_bin_found.yaml"), fhe="simulate",
                                attach=control, keys_dir=str(keys), liveness=2.0, progress=progress).run()
        ended = time.monotonic()
    finally:
        os.kill(bank.pid, signal.SIGCONT)
    assert stopped and report.failure is not None, report.fatal
    assert report.failure["role"] == "bank" and "heartbeat for 2 s" in report.failure["reason"]
    assert report.failure["step"] == "encrypt:bank"
    assert ended - stopped["at"] < 2.0 + 4.0  # the liveness window, the poll interval and the shutdown


def test_the_page_says_roles_started_elsewhere_must_be_restarted(started_elsewhere, schema, tmp_path):
    """23.2 in --attach mode: the page cannot start roles it did not start; once one is lost, every later click
    says they must be restarted (the roles the page starts itself are started again: tests/test_web_ui.py)."""
    import time

    from simulation.processes import ROLES
    from web.capacity import Capacity, Limits
    from web.driver import RoleDriver
    from web.session import KEYS_FIRST, SIM_KEYS, PageContext, WebSession

    control, keys, procs = started_elsewhere
    driver = RoleDriver("simulate", attach=control, keys_dir=str(keys), liveness=2.0)
    driver.start()
    try:
        tab = WebSession(PageContext(driver, schema, Capacity(Limits(), False), tmp_path / "saved"))
        tab.generate_keys()
        assert SIM_KEYS in tab.texts["keygen_status"]
        procs[list(ROLES).index("bank")].kill()
        deadline = time.monotonic() + 20
        while driver.down is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert driver.down and "the bank was lost" in driver.down and "restart the roles, then `ui`" in driver.down
        for _ in range(2):  # every later click, not only the first
            tab.generate_keys()
            assert "started elsewhere (--attach)" in tab.texts["keygen_status"], tab.texts["keygen_status"]
        tab.run()
        assert "started elsewhere (--attach)" in tab.texts["run_status"] and KEYS_FIRST not in tab.texts["run_status"]
    finally:
        driver.stop()
