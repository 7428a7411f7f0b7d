"""Liveness: a peer that stops or dies is named within the liveness window, a busy one is not, and the chaos
command's randomized faults end cleanly."""

from __future__ import annotations

import os
import signal
import time

import pytest
import zmq
from click.testing import CliRunner

from protocol.errors import ErrorCode, PeerLost, RemoteError
from protocol.liveness import ConnectionWatch
from protocol.messages import Ping
from protocol.transport import PeerClient, TrafficLog, make_socket
from run_scenario import cli
from scenarios import SCENARIO_DIR
from simulation.processes import RoleFailure


def router_and_client(tmp_path, liveness: float = 1.0):
    """A ROUTER standing for the evaluator and the user's PeerClient to it, over ipc under tmp."""
    ctx = zmq.Context()
    server = make_socket(ctx, zmq.ROUTER, liveness=liveness)
    endpoint = f"ipc://{tmp_path}/s.ipc"
    server.bind(endpoint)
    return ctx, server, PeerClient(ctx, "evaluator", endpoint, "user:1", TrafficLog("user"), liveness=liveness)


def test_a_connection_watch_sees_the_peer_go_and_a_request_ends_at_once(tmp_path):
    ctx, server, client = router_and_client(tmp_path)
    try:
        seq = client.send(Ping())
        assert server.poll(5000)  # the request arrived: there is a connection
        server.recv_multipart()
        assert client.watch.lost() is None
        server.close(linger=0)  # the peer goes away while we wait for its answer
        t0 = time.monotonic()
        with pytest.raises(PeerLost, match="the evaluator was lost while it was to answer PING: its connection "
                                           "closed") as err:
            client.wait_reply(seq, 30, "PING")
        assert err.value.code is ErrorCode.PEER_LOST and time.monotonic() - t0 < 2.0
        t0 = time.monotonic()  # nobody there any more: a new request gives up after the liveness window
        with pytest.raises(PeerLost, match="no connection to it for 1 s"):
            client.request(Ping(), 30)
        assert time.monotonic() - t0 < 3.0
    finally:
        client.close()
        ctx.term()


def test_a_peer_that_is_alive_but_never_answers_times_out_at_the_request_deadline(tmp_path):
    """Heartbeats keep the connection alive (libzmq answers them), so only the request's own deadline can end the
    wait: it ends then, names the peer and the request, and well before the liveness window would matter."""
    from protocol.errors import PeerTimeout

    ctx, server, client = router_and_client(tmp_path)
    try:
        seq = client.send(Ping())
        assert server.poll(5000) and server.recv_multipart()  # it received the request, and will never answer
        from concurrent.futures import ThreadPoolExecutor

        t0 = time.monotonic()
        with ThreadPoolExecutor(1) as pool:  # a wait that ignores its deadline fails this test, it does not hang it
            waiting = pool.submit(client.wait_reply, seq, 3.0, "PING")
            try:
                with pytest.raises(PeerTimeout, match="evaluator did not answer PING within 3.0 s"):
                    waiting.result(timeout=15)
            finally:
                client.should_stop = lambda: True  # ends a wait still running (the deadline ignored)
        waited = time.monotonic() - t0
        assert 2.9 <= waited < 6.0, waited  # past three liveness windows: the heartbeats held the connection up
        assert client.watch.lost() is None
    finally:
        client.close()
        server.close(linger=0)
        ctx.term()


def test_a_watch_on_a_healthy_peer_stays_quiet(tmp_path):
    ctx = zmq.Context()
    server = make_socket(ctx, zmq.ROUTER)
    endpoint = f"ipc://{tmp_path}/s.ipc"
    server.bind(endpoint)
    sock = make_socket(ctx, zmq.DEALER, "user:2")
    watch = ConnectionWatch(sock, 0.5)
    sock.connect(endpoint)
    try:
        sock.send(b"x")
        assert server.poll(5000)
        watch.arm()
        time.sleep(1.5)  # three liveness windows of heartbeats
        assert watch.lost() is None and watch.up
    finally:
        watch.close()
        sock.close(linger=0)
        server.close(linger=0)
        ctx.term()


def test_a_stopped_evaluator_is_named_within_the_window_while_the_bank_waits_on_it(start_roles, alice):
    procs = start_roles(("evaluator", "user", "bank", "agency"))
    procs.command("user", "prepare", {"session_id": "l-1", "key_id": "l", "features": alice["user"]}, 60)
    evaluator = procs.procs["evaluator"].popen.pid
    os.kill(evaluator, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        with pytest.raises((RoleFailure, RemoteError)) as err:
            procs.command("bank", "encrypt", {"session_id": "l-1", "key_id": "l", "features": alice["bank"]}, 120)
        took = time.monotonic() - t0
    finally:
        os.kill(evaluator, signal.SIGCONT)
    assert "evaluator" in str(err.value) and err.value.code is ErrorCode.PEER_LOST
    assert took < procs.liveness + 2.0, took  # not the 120 s command deadline


@pytest.mark.fhe
def test_a_long_fhe_run_is_not_a_stalled_peer():
    """With a liveness window shorter than key generation (2-3 s) and than a first run with its key warm-up,
    real FHE still passes: heartbeats are answered by libzmq's own thread, and keygen is in a child."""
    result = CliRunner().invoke(cli, ["run", str(SCENARIO_DIR / "denied_bin_found.yaml"), "--liveness", "0.5"])
    assert result.exit_code == 0, result.output[-3000:]
    assert "PASSED" in result.output


def test_chaos_faults_end_passed_or_as_clean_failures_naming_the_role(tmp_path):
    import json

    import subprocess
    import sys

    from simulation.processes import PROJECT_ROOT

    out = tmp_path / "chaos.json"
    # Its own process: chaos makes itself a child subreaper (to see orphans), which a test worker must not become.
    result = subprocess.run([sys.executable, "run_scenario.py", "chaos", str(SCENARIO_DIR / "denied_bin_found.yaml"),
                             "--iterations", "4", "--seed", "11", "--fhe", "simulate", "--json", str(out)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "4 passed, 0 failed" in result.stdout
    data = json.loads(out.read_text())
    assert len(data["iterations"]) == 4 and all(i["outcome"] in ("passed", "clean failure") for i in data["iterations"])
    assert any(i["fired"] for i in data["iterations"])  # at least one fault really hit a role
    for item in data["iterations"]:
        if item["outcome"] == "clean failure":
            assert item["role"] in item["detail"] and item["detection_s"] < 10
            assert item["leftovers"] == []


@pytest.mark.fhe
def test_a_keygen_child_whose_parent_is_gone_leaves_quietly(deployment):
    """Found by `chaos` (a user stopped, then killed, during key generation): the keygen child then writes to a
    pipe nobody reads, and must leave without a traceback in the role's log."""
    import subprocess
    import sys

    from simulation.processes import PROJECT_ROOT

    proc = subprocess.Popen([sys.executable, "-m", "credit_model.runtime.keygen", str(deployment.directory), "--eager"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT_ROOT)
    proc.stdout.close()  # as if the parent had been killed: nobody will read the keys
    err = proc.stderr.read()
    assert proc.wait(120) == 0
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err[-2000:]
