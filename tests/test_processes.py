"""Real OS processes over real ZeroMQ sockets: protocol errors, deadlines, signals, death detection."""

import os
import signal
import time

import pytest

from protocol import PROTOCOL_VERSION
from protocol.messages import ClientKey, GetOutput, Input, KeyQuery, Ping, Run, encode
from simulation.processes import RoleFailure
from tests.conftest import ask
from tests.pinned_deployment import TREE


def error_code(packet):
    assert packet.message.TYPE.value == "ERROR", packet
    return packet.message.code


def test_evaluator_answers_every_bad_message_with_an_error_and_keeps_serving(start_roles, client_socket):
    procs = start_roles(("evaluator",), fhe="execute")
    bank = client_socket(procs.endpoints["evaluator"], "bank:1", procs.keys_dir)
    cases = [
        ([b"FCS/9", b"PING", b'{"seq": 1}'], "VERSION_MISMATCH"),
        ([PROTOCOL_VERSION, b"TELEPORT", b'{"seq": 2}'], "UNKNOWN_TYPE"),
        ([PROTOCOL_VERSION, b"PING", b"{bad json"], "MALFORMED"),
        ([PROTOCOL_VERSION], "MALFORMED"),
        (encode(GetOutput("nobody-1", "r1"), 3), "FORBIDDEN"),  # only the user may ask for outputs
        (encode(Run("nobody-1", "r1", {}), 4), "FORBIDDEN"),        # ... or runs
        (encode(Input("s-1", "k", "bank", "base", b"not a ciphertext"), 5), "BAD_CIPHERTEXT"),
        (encode(Input("s-1", "k", "user", "base", b"x"), 6), "FORBIDDEN"),  # bank posing as the user
        (encode(Input("../../etc", "k", "bank", "base", b"x"), 7), "MALFORMED"),
        (encode(ClientKey("k", [0], (b"secret",)), 8), "FORBIDDEN"),  # the evaluator refuses client keys
        (encode(KeyQuery("k", "0" * 64), 9), "FORBIDDEN"),  # only the user may ask about keys
    ]
    for frames, code in cases:
        assert error_code(ask(bank, frames)) == code, frames[:2]
    pong = ask(bank, encode(Ping(), 99))
    assert pong.seq == 99 and pong.message.role == "evaluator"
    assert procs.procs["evaluator"].popen.poll() is None


def test_errors_of_the_reference_demo(start_roles, client_socket, alice):
    """Keys not generated yet; inputs missing (naming the party); output not ready."""
    from credit_model.deployment import load_deployment
    from credit_model.training.fhe_model import SimulatedPartyClient, ml_client

    procs = start_roles(("evaluator", "bank"), fhe="execute")
    ev_port = procs.endpoints["evaluator"]
    deployment = load_deployment(TREE)
    sim = SimulatedPartyClient(ml_client(deployment))  # well-formed values; no real keys involved
    blobs = {p: sim.quantize_encrypt_serialize_party(p, deployment.preprocessor(p).transform_records([alice[p]]))
             for p in ("user", "bank", "agency")}
    user = client_socket(ev_port, "user:1", procs.keys_dir)
    assert ask(user, encode(Input("a-1", "alice", "user", "base", blobs["user"]), 1)).message.detail["missing"] == ["bank", "agency"]
    missing = ask(user, encode(Run("a-1", "r1", {}), 2))
    assert error_code(missing) == "MISSING_INPUTS" and "bank, agency" in missing.message.reason
    assert error_code(ask(user, encode(GetOutput("a-1", "r1"), 3))) == "OUTPUT_NOT_READY"
    for party in ("bank", "agency"):
        sock = client_socket(ev_port, f"{party}:1", procs.keys_dir)
        ask(sock, encode(Input("a-1", "alice", party, "base", blobs[party]), 4))
    no_keys = ask(user, encode(Run("a-1", "r1", {}), 5))
    assert error_code(no_keys) == "KEYS_NOT_GENERATED" and "keys not generated yet" in no_keys.message.reason
    with pytest.raises(Exception) as err:
        procs.command("bank", "encrypt", {"session_id": "a-1", "key_id": "alice", "features": alice["bank"]}, 30)
    assert err.value.code.value == "KEYS_NOT_GENERATED" and err.value.peer == "bank"
    with pytest.raises(Exception) as err:
        procs.command("bank", "encrypt", {"session_id": "a-1", "key_id": "alice",
                                          "features": {"Account_age": -3}}, 30)
    assert err.value.code.value == "INVALID_INPUT" and "Account_age" in err.value.reason


def test_sigterm_and_sigint_shut_roles_down_cleanly(start_roles):
    procs = start_roles(("evaluator", "user", "bank", "agency"), fhe="simulate", transport="tcp")
    for role, sig in (("evaluator", signal.SIGTERM), ("user", signal.SIGINT),
                      ("bank", signal.SIGTERM), ("agency", signal.SIGINT)):
        procs.procs[role].popen.send_signal(sig)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(p.popen.poll() is None for p in procs.procs.values()):
        time.sleep(0.1)
    assert {r: p.popen.poll() for r, p in procs.procs.items()} == dict.fromkeys(procs.procs, 0)


def test_a_dead_role_is_detected_and_named(start_roles, alice):
    procs = start_roles(("evaluator", "bank"), fhe="simulate")
    os.kill(procs.procs["bank"].popen.pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(RoleFailure) as err:
        procs.command("bank", "encrypt", {"session_id": "a-1", "key_id": "alice", "features": alice["bank"]}, 60)
    assert err.value.role == "bank" and "exited" in err.value.reason
    assert time.monotonic() - started < 10


def test_a_hung_role_hits_the_deadline(start_roles, alice):
    procs = start_roles(("evaluator", "bank"), fhe="simulate")
    os.kill(procs.procs["bank"].popen.pid, signal.SIGSTOP)
    try:
        with pytest.raises(RoleFailure) as err:
            procs.command("bank", "encrypt", {"session_id": "a-1", "key_id": "alice", "features": alice["bank"]}, 2)
        assert err.value.role == "bank" and "within 2 s" in err.value.reason
    finally:
        os.kill(procs.procs["bank"].popen.pid, signal.SIGCONT)


@pytest.mark.timeout(240)
def test_roles_and_dask_workers_do_not_outlive_a_killed_runner(tmp_path):
    """The runner is SIGKILLed (no clean-up at all) while the evaluator runs a local Dask cluster (`--engine dask
    --workers 1`): every role and every process the evaluator started (the Dask worker and whatever else Dask
    spawned: its scheduler and nanny live in the evaluator process) exits within 20 s."""
    import subprocess
    import sys

    import psutil
    code = (
        "import sys, time; from pathlib import Path; from simulation.processes import ProcessSet\n"
        "p = ProcessSet(Path(sys.argv[1]), 'ipc', 'simulate', 'kaggle', {'evaluator': ['--engine', 'dask', '--workers', "
        "'1']})\n"
        "pids = p.start(180); print(' '.join(f'{r}={n}' for r, n in pids.items()), flush=True); time.sleep(600)\n")
    runner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        roles = dict(pair.split("=") for pair in runner.stdout.readline().split())
        pids = [int(pid) for pid in roles.values()]
        assert len(pids) == 4
        evaluator = psutil.Process(int(roles["evaluator"]))
        assert "evaluator" in " ".join(evaluator.cmdline())
        dask = evaluator.children(recursive=True)
        workers = [p for p in dask if "multiprocessing" in " ".join(p.cmdline()) and
                   "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 1, [(p.pid, p.cmdline()) for p in dask]  # the one Dask worker process
        watched = {p: psutil.Process(p) for p in pids + [d.pid for d in dask]}
        runner.kill()
        runner.wait(10)
        killed, exited = time.monotonic(), {}
        while len(exited) < len(watched) and time.monotonic() < killed + 20:
            for pid, proc in watched.items():
                if pid not in exited and (not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE):
                    exited[pid] = round(time.monotonic() - killed, 2)
            time.sleep(0.1)
        names = {pid: " ".join(proc.cmdline())[-60:] if pid not in exited else "" for pid, proc in watched.items()}
        print(f"\nexited after the runner's SIGKILL (s): {exited}")
        assert set(exited) == set(watched), {pid: names[pid] for pid in watched if pid not in exited}
    finally:
        if runner.poll() is None:
            runner.kill()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stopped_worker", [False, True], ids=["workers-running", "a-worker-sigstopped"])
@pytest.mark.parametrize("end", [signal.SIGKILL, signal.SIGTERM], ids=["evaluator-sigkilled", "evaluator-sigtermed"])
def test_no_dask_process_outlives_its_evaluator(start_roles, end, stopped_worker):
    """The evaluator SIGKILLed (it cannot close its cluster) or SIGTERMed, with its workers running or one of them
    SIGSTOPped (chaos's `stop` on a worker: a stopped process cannot act on a SIGTERM, nor close the pipe that keeps
    multiprocessing's tracker alive): its local Dask cluster's processes (two workers, and what multiprocessing
    started for them) exit within 20 s."""
    import psutil
    procs = start_roles(("evaluator",), extra_args={"evaluator": ["--engine", "dask", "--workers", "2"]})
    evaluator = psutil.Process(procs.procs["evaluator"].popen.pid)
    started = evaluator.children(recursive=True)
    workers = [p for p in started if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, [(p.pid, p.cmdline()) for p in started]
    if stopped_worker:
        workers[0].suspend()
        deadline = time.monotonic() + 5  # the signal is delivered asynchronously
        while workers[0].status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers[0].status() == psutil.STATUS_STOPPED
    os.kill(evaluator.pid, end)
    killed, exited = time.monotonic(), {}
    while len(exited) < len(started) and time.monotonic() < killed + 20:
        for proc in started:
            if proc.pid not in exited and (not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE):
                exited[proc.pid] = round(time.monotonic() - killed, 2)
        time.sleep(0.1)
    print(f"\nexited after the evaluator's {signal.Signals(end).name} (s): {exited}")
    survivors = [(p.pid, p.cmdline()[-1:]) for p in started if p.pid not in exited]
    for proc in started:
        if proc.pid not in exited:
            proc.kill()
    assert survivors == []


def _sigterm_and_time(proc) -> float:
    t0 = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    code = proc.popen.wait(10)
    assert code == 0, f"{proc.role} exited with {code}: {proc.log_tail()}"
    return time.monotonic() - t0


def _send_command(procs, role, action, params):
    """Send a COMMAND without waiting for its RESULT (the role is about to be stopped mid-way)."""
    from protocol.messages import Command
    from protocol.transport import send_nowait
    assert send_nowait(procs.control, [procs.procs[role].identity] + encode(Command(action, params), 999))


@pytest.mark.fhe
def test_sigterm_ends_the_user_within_two_seconds_even_during_key_generation(start_roles, alice):
    procs = start_roles(("evaluator", "user", "bank", "agency"), fhe="execute")
    _send_command(procs, "user", "prepare", {"session_id": "a-1", "key_id": "alice", "features": alice["user"]})
    time.sleep(0.4)  # key generation takes about 2 s
    seconds = _sigterm_and_time(procs.procs["user"])
    print(f"\nSIGTERM during keygen: the user exited in {seconds:.2f} s")
    assert seconds < 2.0


@pytest.mark.parametrize("role, action", [("user", "prepare"), ("bank", "encrypt"), ("agency", "encrypt")])
def test_sigterm_ends_a_role_within_two_seconds_while_it_waits_on_a_frozen_peer(start_roles, alice, role, action):
    procs = start_roles(("evaluator", "user", "bank", "agency"))
    os.kill(procs.procs["evaluator"].popen.pid, signal.SIGSTOP)
    try:
        features = alice[role]
        _send_command(procs, role, action, {"session_id": "a-1", "key_id": "alice", "features": features})
        time.sleep(0.5)  # now waiting for the evaluator's answer
        seconds = _sigterm_and_time(procs.procs[role])
        print(f"\nSIGTERM while waiting on a frozen evaluator: the {role} exited in {seconds:.2f} s")
        assert seconds < 2.0
    finally:
        os.kill(procs.procs["evaluator"].popen.pid, signal.SIGCONT)


def stop_the_first_worker_when_spawned(procs):
    """A thread that SIGSTOPs the evaluator's first Dask worker the moment multiprocessing has spawned it (before any
    code of ours runs in it: nothing there can tie it to its evaluator); returns the thread and the list it fills."""
    import threading

    import psutil
    stopped: list = []

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stopped:
            evaluator = procs.procs.get("evaluator")
            try:
                for child in psutil.Process(evaluator.popen.pid).children() if evaluator else []:
                    if "spawn_main" in " ".join(child.cmdline()):
                        child.suspend()
                        stopped.append(child)
                        break
            except psutil.Error:
                pass
            time.sleep(0.005)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, stopped


def gone_within(proc, seconds: float) -> bool:
    import psutil
    deadline = time.monotonic() + seconds
    while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    if alive:
        proc.kill()
    return not alive


@pytest.mark.timeout(180)
def test_a_lone_dask_worker_stopped_while_its_cluster_starts_is_not_left_behind(tmp_path):
    """The evaluator's only worker SIGSTOPped the moment it is spawned: the evaluator does not report READY within
    the runner's deadline (the cluster has no worker; it starts it again), the runner says so, and when the runner
    stops the roles nothing they started is left: the stopped worker is SIGKILLed (by the evaluator when it starts
    the cluster again, or by the runner after the roles, which names what it killed)."""
    from simulation.processes import ProcessSet
    procs = ProcessSet(tmp_path / "run", "ipc", "simulate", TREE, {"evaluator": ["--engine", "dask", "--workers", "1"]})
    watcher, stopped = stop_the_first_worker_when_spawned(procs)
    try:
        with pytest.raises(RoleFailure) as failed:
            procs.start(15, ("evaluator",))
        assert failed.value.role == "evaluator" and "READY" in failed.value.reason
    finally:
        watcher.join(5)
        procs.stop()
    assert len(stopped) == 1, "the worker was never seen"
    assert gone_within(stopped[0], 10), "the stopped worker outlived the run"


@pytest.mark.timeout(180)
def test_a_dask_worker_stopped_while_its_cluster_starts_does_not_keep_the_evaluator_from_serving(tmp_path, alice):
    """Two workers, one SIGSTOPped the moment it is spawned: the evaluator waits for both at most 20 s, then serves
    with the one that came up (an applicant gets the clear model's decision), and the stopped one is gone after
    the run (chaos's `stop` aimed at a worker during start-up failed the run and left it behind)."""
    from simulation.processes import ProcessSet
    from tests.test_dask_engine import clear_decision
    procs = ProcessSet(tmp_path / "run", "ipc", "simulate", TREE, {"evaluator": ["--engine", "dask", "--workers", "2"]})
    watcher, stopped = stop_the_first_worker_when_spawned(procs)
    try:
        procs.start(60)
        watcher.join(5)
        assert len(stopped) == 1, "the worker was never seen"
        procs.command("user", "prepare", {"session_id": "s1", "key_id": "k1", "features": alice["user"]}, 60)
        for party in ("bank", "agency"):
            procs.command(party, "encrypt", {"session_id": "s1", "key_id": "k1", "features": alice[party]}, 60)
        assert procs.command("user", "predict", {"session_id": "s1"}, 60)["decision"] == clear_decision(alice)
        log = (procs.run_dir / "evaluator.log").read_text()
        assert "1 of 2 local Dask worker(s) up after" in log, log[-2000:]
    finally:
        procs.stop()
    assert gone_within(stopped[0], 10), "the stopped worker outlived the run"
