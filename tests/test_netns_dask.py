"""Several hosts (issue 20): the Dask scheduler, two workers, the evaluator, the three parties and the runner each in
their own network namespace over veth links to a bridge, the cluster under mutual TLS; the worker running ada's run
is SIGKILLed while that run executes, and ada still gets the clear model's decision.

The addresses (10.232.x.y) exist only inside the namespaces this test creates and deletes itself."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from credit_model.explainability import decision_message
from run_scenario import cli
from scenarios import SCENARIO_DIR
from simulation.processes import MODULES, PROJECT_ROOT
from tests.netns_hosts import bridged_hosts
from tests.test_dask_engine import clear_decision
from tests.test_faults_midrun import shipped_applicant
from tests.pinned_deployment import TREE

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("openssl") is None or
    subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0,
    reason="needs root, openssl and iproute2 network namespaces (CI runs as root and has them)")

NAMES = ("runner", "evaluator", "user", "bank", "agency", "scheduler", "worker1", "worker2")


@pytest.fixture
def hosts():
    with bridged_hosts("fcd", "10.232", NAMES) as made:
        yield made


def in_ns(hosts, name, args, log, env=None):
    out = open(log, "ab")
    return subprocess.Popen(["ip", "netns", "exec", hosts["ns"][name], *args], cwd=PROJECT_ROOT, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.timeout(500)
def test_a_tls_cluster_on_other_hosts_survives_a_worker_killed_mid_run(hosts, tmp_path):
    a = hosts["address"]
    keys, tls = tmp_path / "keys", tmp_path / "tls"
    assert CliRunner().invoke(cli, ["keys", str(keys)]).exit_code == 0
    done = CliRunner().invoke(cli, ["cluster-certs", str(tls), "--name", "evaluator", "--name", "scheduler",
                                    "--name", "worker"])
    assert done.exit_code == 0, done.output
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    sched_tls = ["--tls-ca-file", str(tls / "scheduler/ca.pem"), "--tls-cert", str(tls / "scheduler/cert.pem"),
                 "--tls-key", str(tls / "scheduler/key.pem")]
    worker_tls = ["--tls-ca-file", str(tls / "worker/ca.pem"), "--tls-cert", str(tls / "worker/cert.pem"),
                  "--tls-key", str(tls / "worker/key.pem")]
    scheduler_url = f"tls://{a['scheduler']}:8786"
    procs = {"scheduler": in_ns(hosts, "scheduler", [
        sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", a["scheduler"],
        "--port", "8786", "--no-dashboard", *sched_tls], tmp_path / "scheduler.log",
        dict(env, DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING="False"))}  # runs go where the evaluator sends them
    time.sleep(2)
    for name in ("worker1", "worker2"):
        procs[name] = in_ns(hosts, name, [
            sys.executable, "-m", "distributed.cli.dask_worker", scheduler_url, "--nthreads", "1", "--no-dashboard",
            "--host", a[name], *worker_tls], tmp_path / f"{name}.log", env)
    url = {"control": f"tcp://{a['runner']}:5560", "evaluator": f"tcp://{a['evaluator']}:5555",
           "bank": f"tcp://{a['bank']}:5556", "agency": f"tcp://{a['agency']}:5557"}
    for role, module in MODULES.items():
        extra = ["--engine", "dask", "--scheduler", scheduler_url, "--cluster-tls", str(tls / "evaluator")] \
            if role == "evaluator" else []
        procs[role] = in_ns(hosts, role, [
            sys.executable, "-m", module, "--control", url["control"], "--evaluator", url["evaluator"],
            "--bank", url["bank"], "--agency", url["agency"], "--keys-dir", str(keys), "--fhe", "execute",
            "--deployment", TREE, "--workdir", str(tmp_path / role), *extra], tmp_path / f"{role}.log")
    evaluator_log = tmp_path / "evaluator.log"
    killed = {}
    try:
        runner = in_ns(hosts, "runner", [sys.executable, "run_scenario.py", "run", str(SCENARIO_DIR / "approved.yaml"),
                                         "--attach", url["control"], "--keys-dir", str(keys), "--fhe", "execute"],
                       tmp_path / "runner.log")
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline and runner.poll() is None:
            log = evaluator_log.read_text()
            sent = re.findall(r"run \S+ of ada-1 submitted to worker tls://([\d.]+):\d+ \(attempt 1\)", log)
            if sent and "prepared on" in log:  # the key's warm-up is over: ada's run executes on that worker now
                name = next(n for n in ("worker1", "worker2") if a[n] == sent[0])
                import psutil
                for child in psutil.Process(procs[name].pid).children(recursive=True):
                    if "resource_tracker" in " ".join(child.cmdline()):
                        continue
                    os.kill(child.pid, signal.SIGKILL)  # the worker process (its nanny starts another)
                    killed[name] = child.pid
            time.sleep(0.005)
        assert runner.wait(300) == 0, (tmp_path / "runner.log").read_text()[-3000:] + evaluator_log.read_text()[-3000:]
        out = (tmp_path / "runner.log").read_text()
        assert "scenario approved: PASSED" in out
        assert decision_message(True) in out and clear_decision(shipped_applicant("approved")) == decision_message(True)
        log = evaluator_log.read_text()
        assert killed, log[-3000:]
        lost = re.findall(r"run \S+ of ada-1 lost on worker tls://([\d.]+):\d+", log)
        ran = re.findall(r"run \S+ of ada-1 ran on worker tls://([\d.]+):\d+", log)
        (killed_name,) = killed
        assert lost == [a[killed_name]] and len(ran) == 1 and ran[0] != a[killed_name], log[-3000:]
        assert "tls://" in log and "tcp://" + a["scheduler"] not in log
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
