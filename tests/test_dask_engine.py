"""The evaluator's Dask engine (issue 20): real worker processes, real FHE, real faults.

A local cluster of two workers gives the clear model's decisions; a worker SIGKILLed while its run is in flight
has that run retried on the other worker, with the clean run's decision; the scheduler killed makes the user's run
fail naming it, and the evaluator serves again once a scheduler and a worker are back. A scheduler off loopback
without TLS is refused at start with one line."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from credit_model.deployment import load_deployment
from credit_model.explainability import decision_message
from protocol.errors import RemoteError
from simulation.processes import PROJECT_ROOT, ProcessSet, free_tcp_port
from simulation.runner import ScenarioRunner
from tests.fault_timing import Capture, FaultOnMessage, ProcessTree
from tests.test_faults_midrun import shipped_applicant, write_scenario
from tests.pinned_deployment import TREE

APPROVED, DENIED = decision_message(True), decision_message(False)


def clear_decision(applicant: dict) -> str:
    from credit_model.training.clear_model import ClearModel
    clear = ClearModel(load_deployment("kaggle"))
    return decision_message(clear.approved({p: applicant[p] for p in ("user", "bank", "agency")}))


def pid_listening_on(address: str) -> int:
    """The pid of the process listening on a worker's tcp://HOST:PORT (psutil comes with distributed)."""
    import psutil
    port = int(address.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise LookupError(f"no process listens on {address}")


def test_a_scheduler_off_loopback_without_tls_is_refused_in_one_line(tmp_path):
    keys = tmp_path / "keys"
    from click.testing import CliRunner
    from run_scenario import cli
    assert CliRunner().invoke(cli, ["keys", str(keys)]).exit_code == 0
    for address, says in (("tcp://10.1.2.3:8786", "off loopback without TLS"),
                          ("tls://10.1.2.3:8786", "needs --cluster-tls")):
        done = subprocess.run([sys.executable, "-m", "evaluator", "--engine", "dask", "--scheduler", address,
                               "--keys-dir", str(keys / "evaluator"), "--workdir", str(tmp_path / "w")],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        lines = [line for line in done.stderr.splitlines() if says in line]
        assert len(lines) == 1 and address in lines[0], done.stderr
    # loopback without TLS is accepted by the check (nothing listens there: the evaluator would start and wait)
    from evaluator.cluster import ClusterRefused, check_scheduler
    check_scheduler("tcp://127.0.0.1:8786", None)
    with pytest.raises(ClusterRefused):
        check_scheduler("tcp://example.org:8786", None)


def test_a_workers_key_cache_is_bounded_in_bytes_and_drops_the_least_recently_used():
    from evaluator.dask_worker import ByteBoundedKeys
    cache = ByteBoundedKeys(100, load=lambda blob: ("key", blob[:1]))
    assert cache.get("a", b"a" * 40) == (("key", b"a"), False)
    assert cache.get("b", b"b" * 40)[1] is False
    assert cache.get("a", b"a" * 40)[1] is True          # a is now the most recently used
    cache.get("c", b"c" * 40)                             # 120 bytes > 100: b (least recently used) goes
    assert list(cache.entries) == ["a", "c"] and cache.bytes == 80 and cache.loads == 3
    cache.get("d", b"d" * 500)                            # larger than the bound alone: kept alone
    assert list(cache.entries) == ["d"] and cache.bytes == 500


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_local_dask_workers_give_the_clear_models_decisions_and_a_killed_worker_run_is_retried(tmp_path):
    """--engine dask --workers 2 with real FHE: ada's key is placed on one worker; that worker is SIGKILLed when
    the user's GET_OUTPUT arrives (its run in flight); the run is retried on the other worker and ada gets the
    clear model's decision, with no error; bruno (new keys) is then served too, explanation included."""
    ada, bruno = shipped_applicant("approved"), shipped_applicant("denied_bin_found")
    scenario = write_scenario(tmp_path, "dask_worker_killed", [
        {**ada, "steps": [{"action": "predict", "expect": {"decision": "approved"}}]},
        {**bruno, "steps": [
            {"action": "predict", "expect": {"decision": "denied", "keygen": True, "eval_key_upload": True}},
            {"action": "explain", "strategy": "bisect", "expect": {"outcome": "bin_found", "bin": "5-8"}}]},
    ])
    run_dir, capture, tree = tmp_path / "run", Capture(tmp_path / "evaluator-capture"), ProcessTree()
    faults: list[FaultOnMessage] = []

    def kill_the_busy_worker():
        # The evaluator logs where it sent ada's run (the worker holding her key) just after it answered RUN; the run
        # waits there for the key's warm-up (Concrete's set-up, seconds), then runs (about a second): the kill comes
        # as soon as the warm-up is logged, so it lands while the run itself executes.
        deadline = time.monotonic() + 120
        while True:
            log = (run_dir / "evaluator.log").read_text()
            sent = re.findall(r"run \S+ of ada-1 submitted to worker (\S+) \(attempt 1\)", log)
            if sent and "k000001.evk prepared on" in log or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        pid = pid_listening_on(sent[0])
        os.kill(pid, signal.SIGKILL)
        return sent[0], pid

    def arm(_procs):
        faults.append(FaultOnMessage(capture, "user", "GET_OUTPUT", kill_the_busy_worker))
        faults[0].start()

    try:
        report = ScenarioRunner(scenario, fhe="execute", run_dir=run_dir, on_start=arm, extra_args={
            "evaluator": ["--engine", "dask", "--workers", "2", "--capture-dir", str(capture.dir)]}).run()
    finally:
        if faults:
            faults[0].stop()
    fault = faults[0]
    assert fault.error is None and fault.fired_at is not None, fault.error
    killed_address, _ = fault.outcome
    log = (run_dir / "evaluator.log").read_text()
    assert report.passed, (report.fatal, [a.failures for a in report.applicants], log[-4000:])
    # The kill landed while ada's run was in flight: the evaluator saw that run lost, and ran it again elsewhere.
    lost = re.findall(r"run (\S+) of ada-1 lost on worker (\S+) \(.*\); attempt 2 on another worker", log)
    assert lost and lost[0][1] == killed_address, log[-4000:]
    ran = re.findall(r"run \S+ of ada-1 ran on worker (\S+) \(pid (\d+)", log)
    assert len(ran) == 1 and ran[0][0] != killed_address, log[-4000:]
    assert report.applicants[0].errors == []
    assert report.applicants[0].decision == clear_decision(ada) == APPROVED
    assert report.applicants[1].decision == clear_decision(bruno) == DENIED
    assert "5-8" in report.applicants[1].explanation
    # bruno's explanation runs reuse his key on the worker holding it: deserialized once there, then cached.
    assert re.findall(r"of bruno-1 ran on worker \S+ \(pid \d+, key cached", log), log[-4000:]
    assert tree.leftovers() == {}


def _start_scheduler(port: int, log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", str(port), "--no-dashboard"], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT, start_new_session=True)


def _start_worker(port: int, log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                             "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"], stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT, env=env,
                            start_new_session=True)


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def session_on_a_cluster_of_its_own(tmp_path):
    """A scheduler and one worker of their own on a loopback port (no TLS needed there), the four roles with the
    evaluator on them (`--scheduler`, simulated FHE), and ada's session s1 with its three inputs. Yields the roles,
    the cluster (a test may replace its scheduler and worker: whatever is there at the end is stopped) and ada."""
    port = free_tcp_port()
    cluster = {"port": port, "address": f"tcp://127.0.0.1:{port}",
               "scheduler": _start_scheduler(port, tmp_path / "scheduler.log"),
               "worker": _start_worker(port, tmp_path / "worker.log")}
    procs = ProcessSet(tmp_path / "run", "ipc", "simulate", TREE,
                       {"evaluator": ["--engine", "dask", "--scheduler", cluster["address"]]})
    ada = shipped_applicant("approved")
    try:
        time.sleep(1.0)
        procs.start(120)
        procs.command("user", "prepare", {"session_id": "s1", "key_id": "k1", "features": ada["user"]}, 60)
        for party in ("bank", "agency"):
            procs.command(party, "encrypt", {"session_id": "s1", "key_id": "k1", "features": ada[party]}, 60)
        yield procs, cluster, ada
    finally:
        procs.stop()
        for proc in (cluster["scheduler"], cluster["worker"]):
            try:
                os.killpg(proc.pid, signal.SIGCONT)  # a test may have stopped them
            except ProcessLookupError:
                pass
        _stop(cluster["scheduler"], cluster["worker"])


@pytest.mark.timeout(300)
def test_the_scheduler_lost_fails_the_run_naming_it_and_the_evaluator_serves_again_when_it_is_back(tmp_path):
    """--engine dask --scheduler tcp://127.0.0.1:P (loopback: no TLS needed), simulated FHE. The scheduler is
    SIGKILLed: the user's predict fails at once with an error naming that scheduler; the evaluator process keeps
    answering; a new scheduler and worker on the same port, and the same user's next predict is the right decision."""
    with session_on_a_cluster_of_its_own(tmp_path) as (procs, cluster, ada):
        address, port = cluster["address"], cluster["port"]
        _stop(cluster["scheduler"], cluster["worker"])
        started = time.monotonic()
        with pytest.raises(RemoteError) as lost:
            procs.command("user", "predict", {"session_id": "s1"}, 60)
        assert time.monotonic() - started < 15
        assert f"the Dask scheduler {address}" in str(lost.value), str(lost.value)
        assert procs.command("evaluator", "status", {}, 10)["sessions"] == 1  # still serving
        cluster["scheduler"] = _start_scheduler(port, tmp_path / "scheduler.log")
        cluster["worker"] = _start_worker(port, tmp_path / "worker.log")
        deadline, result = time.monotonic() + 90, None
        while result is None:
            try:
                result = procs.command("user", "predict", {"session_id": "s1"}, 60)
            except RemoteError as exc:
                assert "Dask scheduler" in str(exc) and time.monotonic() < deadline, str(exc)
                time.sleep(1.0)
        assert result["decision"] == clear_decision(ada)


@pytest.mark.timeout(200)
def test_a_hung_scheduler_fails_the_run_in_flight_within_seconds_naming_it(tmp_path):
    """The worker is SIGSTOPped (the run stays in flight on it), then the scheduler too: the evaluator's watch of the
    scheduler (a 5 s deadline, every 2 s while runs are in flight) fails the run naming it, well before the user's
    90 s deadline, and the evaluator still answers."""
    import psutil
    with session_on_a_cluster_of_its_own(tmp_path) as (procs, cluster, _ada):
        worker = psutil.Process(cluster["worker"].pid)
        for proc in [worker] + worker.children(recursive=True):
            proc.suspend()
        log_path = procs.run_dir / "evaluator.log"
        stopped_at = []

        def stop_the_scheduler_once_the_run_is_submitted():
            # Not at a fixed time: on a loaded machine the run may not be submitted yet, and a scheduler that hangs
            # before the submission fails the run before it starts (also named, but not what this test checks).
            deadline = time.monotonic() + 60
            while "submitted to worker" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.killpg(cluster["scheduler"].pid, signal.SIGSTOP)
            stopped_at.append(time.monotonic())

        stopper = __import__("threading").Thread(target=stop_the_scheduler_once_the_run_is_submitted, daemon=True)
        stopper.start()
        with pytest.raises(RemoteError) as lost:
            procs.command("user", "predict", {"session_id": "s1"}, 90)
        stopper.join(5)
        assert stopped_at, log_path.read_text()[-2000:]
        took = time.monotonic() - stopped_at[0]
        assert f"the Dask scheduler {cluster['address']} did not answer within 5 s" in str(lost.value), str(lost.value)
        assert "during the run" in str(lost.value) and 4 < took < 20, (took, str(lost.value))
        assert procs.command("evaluator", "status", {}, 10)["sessions"] == 1


def test_the_circuit_plugin_stops_each_workers_statistical_profiler(tmp_path):
    """A real local cluster (worker processes): before the plugin a worker runs Dask's profiler callbacks, after
    it none (they cost a run ~15 % more CPU, BENCHMARKS.md "Engines")."""
    from distributed import Client, LocalCluster

    from evaluator.dask_worker import PROFILER_CALLBACKS, CircuitPlugin

    def callbacks(dask_worker):
        return sorted(dask_worker.periodic_callbacks)

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      local_directory=str(tmp_path)) as cluster, Client(cluster) as client:
        before = next(iter(client.run(callbacks).values()))
        assert set(PROFILER_CALLBACKS) <= set(before) and "heartbeat" in before  # it saw the worker's callbacks
        client.register_plugin(CircuitPlugin("kaggle", True, 1 << 20))
        after = next(iter(client.run(callbacks).values()))
        assert not set(PROFILER_CALLBACKS) & set(after) and "heartbeat" in after


def real_ciphertexts(applicant: dict) -> dict[str, bytes]:
    """The applicant's three inputs as real FHE ciphertexts (fresh keys), as parties running --fhe execute send them."""
    from credit_model.training.fhe_model import ml_client
    deployment = load_deployment("kaggle")
    client = ml_client(deployment)
    client.generate_private_and_evaluation_keys(force=True)
    return {p: client.quantize_encrypt_serialize_party(p, deployment.preprocessor(p).transform_records([applicant[p]]))
            for p in ("user", "bank", "agency")}


@pytest.mark.timeout(400)
def test_a_run_that_kills_every_worker_it_lands_on_fails_cleanly_and_the_evaluator_serves_on(start_roles,
                                                                                              client_socket):
    """--engine dask --workers 2 --fhe simulate. Mallory's three inputs are real ciphertexts (her parties ran --fhe
    execute): the evaluator accepts them (they deserialize), and a simulating circuit aborts its process on them (an
    assertion inside Concrete: SIGABRT, SPEC §2), so every worker her run lands on dies. Each of the MAX_ATTEMPTS
    attempts costs one worker process, on a live worker; then her GET_OUTPUT is an ERROR saying the run was lost on
    the cluster. The evaluator process never dies, the cluster gets its workers back, and the next applicants, through
    the four roles, get the clear model's decisions."""
    from evaluator.dask_runner import MAX_ATTEMPTS
    from protocol.messages import Error, GetOutput, Input, Run, encode
    from tests.conftest import ask

    ada, bruno = shipped_applicant("approved"), shipped_applicant("denied_bin_found")
    poison = real_ciphertexts(ada)
    procs = start_roles(("evaluator", "user", "bank", "agency"),
                        extra_args={"evaluator": ["--engine", "dask", "--workers", "2"]})
    socks = {p: client_socket(procs.endpoints["evaluator"], f"{p}:mallory", procs.keys_dir)
             for p in ("user", "bank", "agency")}
    for party, sock in socks.items():
        assert ask(sock, encode(Input("m-1", "mallory", party, "base", poison[party]), 1)).message.TYPE.value == "ACK"
    assert ask(socks["user"], encode(Run("m-1", "r1", {}), 2)).message.TYPE.value == "ACK"
    started = time.monotonic()
    reply = ask(socks["user"], encode(GetOutput("m-1", "r1", 240_000), 3), timeout=260).message
    took = time.monotonic() - started
    log_path = procs.run_dir / "evaluator.log"
    log = log_path.read_text()
    assert isinstance(reply, Error), (reply, log[-3000:])
    print(f"\nmallory's run failed after {took:.1f} s: {reply.code} {reply.reason}")
    assert reply.code == "BAD_CIPHERTEXT" and f"lost {MAX_ATTEMPTS} times on the cluster" in reply.reason, reply
    assert "its worker died each time" in reply.reason, reply.reason
    # Each attempt went to a live worker and was lost with it; each worker process died and its nanny started it
    # again (a restarted worker may get its old port back: the count of restarts, not of addresses, says it).
    attempts = re.findall(r"run r1 of m-1 submitted to worker (\S+) \(attempt (\d)\)", log)
    assert [int(a) for _, a in attempts] == list(range(1, MAX_ATTEMPTS + 1)), log[-3000:]
    lost = re.findall(r"run r1 of m-1 lost on worker (\S+) \(", log)
    assert lost == [address for address, _ in attempts], (lost, attempts)  # each attempt lost with its worker
    deadline = time.monotonic() + 15  # the nanny logs the last restart just after the run was failed
    while log_path.read_text().count("Restarting worker") < MAX_ATTEMPTS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert log_path.read_text().count("Restarting worker") == MAX_ATTEMPTS, log_path.read_text()[-3000:]
    assert procs.procs["evaluator"].exit_code() is None
    # The next applicants are served, by the workers the cluster started again.
    for name, applicant in (("ada-1", ada), ("bruno-1", bruno)):
        procs.command("user", "prepare", {"session_id": name, "key_id": name, "features": applicant["user"]}, 60)
        for party in ("bank", "agency"):
            procs.command(party, "encrypt", {"session_id": name, "key_id": name, "features": applicant[party]}, 60)
        result = procs.command("user", "predict", {"session_id": name}, 120)
        assert result["decision"] == clear_decision(applicant), (name, result)
    log = log_path.read_text()
    assert re.findall(r"run \S+ of bruno-1 ran on worker (\S+)", log), log[-3000:]
    assert procs.procs["evaluator"].exit_code() is None
