"""A peer's identity is its key (issue 17): an authenticated bank that claims the user's routing identity, before
the user connects or after, neither locks the applicant out nor takes over its replies."""

import os
import subprocess
import sys
import time

import pytest
import zmq

from credit_model.explainability import decision_message
from protocol.curve import Curve
from protocol.messages import Ping, Pong, Ready, decode, encode
from protocol.transport import PeerClient, TrafficLog, make_socket, routing_identity
from simulation.processes import PROJECT_ROOT, ProcessSet, RoleProcess
from tests.pinned_deployment import TREE

PAUSED = "import os, sys; sys.stdin.buffer.read(1); os.execv(sys.executable, [sys.executable] + sys.argv[1:])"


def spawn_paused(procs: ProcessSet, role: str) -> RoleProcess:
    """Start `role` as the runner would, but held before it runs: its pid (which `exec` keeps) is known before the
    role opens a single socket, as an attacker who reads the process table knows it."""
    args = procs.command_line(role)[1:]  # without sys.executable: the holder execs it
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    log_path = procs.run_dir / f"{role}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen([sys.executable, "-c", PAUSED] + args, cwd=PROJECT_ROOT, env=env, stdin=subprocess.PIPE,
                                 stdout=log, stderr=subprocess.STDOUT)
    return RoleProcess(role, popen, log_path)


def release(proc: RoleProcess) -> None:
    proc.popen.stdin.write(b"go")
    proc.popen.stdin.close()


def guesses(pid: int) -> list[str]:
    """Every identity of the user an attacker could derive from its pid: the old `role:pid` scheme and the new
    prefix with a few fixed tokens."""
    return [f"user:{pid}", f"user:{pid}:", f"user:{pid}:{'0' * 32}", f"user:{pid}:{'f' * 32}"]


def squat(ctx, procs: ProcessSet, endpoint: str, server: str, identities: list[str]) -> list[zmq.Socket]:
    """DEALERs speaking with the bank's own valid CURVE key, each claiming one of `identities`."""
    bank = Curve.load("bank", procs.keys_dir)
    socks = []
    for identity in identities:
        sock = make_socket(ctx, zmq.DEALER, identity)
        bank.client(server)(sock)
        sock.connect(endpoint)
        socks.append(sock)
    return socks


def holds(sock: zmq.Socket, timeout_ms: int = 5000) -> bool:
    """The squatter's identity is live at the ROUTER: its PING is answered."""
    sock.send_multipart(encode(Ping(), 1))
    return bool(sock.poll(timeout_ms)) and isinstance(decode(sock.recv_multipart()).message, Pong)


def one_application(procs: ProcessSet, record: dict, sid: str = "a-1") -> str:
    procs.command("user", "prepare", {"session_id": sid, "key_id": "alice", "features": record["user"]}, 30)
    for party in ("bank", "agency"):
        procs.command(party, "encrypt", {"session_id": sid, "key_id": "alice", "features": record[party]}, 30)
    return procs.command("user", "predict", {"session_id": sid}, 30)["decision"]


@pytest.fixture
def roles_but_user(tmp_path):
    procs = ProcessSet(tmp_path, "ipc", "simulate", TREE, extra_args={"user": ["--request-timeout", "5"]})
    ctx = zmq.Context()
    procs.start(60, ("evaluator", "bank", "agency"))
    yield procs, ctx
    procs.stop()
    ctx.destroy(linger=0)


def test_a_bank_claiming_the_users_identity_first_at_the_evaluator_does_not_lock_the_applicant_out(
        roles_but_user, alice, clear_model):
    procs, ctx = roles_but_user
    user = spawn_paused(procs, "user")
    squatters = squat(ctx, procs, procs.endpoints["evaluator"], "evaluator", guesses(user.popen.pid))
    assert all(holds(s) for s in squatters)  # each claimed identity is held at the evaluator before the user runs
    procs.procs["user"] = user
    release(user)
    procs.start(60, ())  # the user's READY
    expected = decision_message(clear_model.approved(alice))
    assert one_application(procs, alice) == expected
    for sock in squatters:  # still the applicant's after the squatters leave
        sock.close(linger=0)
    assert one_application(procs, alice, "a-2") == expected


def test_a_bank_claiming_the_users_control_identity_first_does_not_keep_the_user_from_ready(roles_but_user, alice,
                                                                                             clear_model):
    procs, ctx = roles_but_user
    user = spawn_paused(procs, "user")
    squatters = squat(ctx, procs, procs.endpoints["control"], "runner", guesses(user.popen.pid))
    for sock in squatters:  # a READY that claims to be the user's is refused: it is bound to the proven sender
        sock.send_multipart(encode(Ready("user", user.popen.pid), 0))
    procs.procs["user"] = user
    release(user)
    procs.start(20, ())
    assert procs.procs["user"].pid == user.popen.pid
    assert one_application(procs, alice) == decision_message(clear_model.approved(alice))


def test_a_connection_claiming_an_identity_in_use_never_takes_it_over(tmp_path):
    """ROUTER_HANDOVER off: even knowing the exact identity, a second connection gets nothing, the first keeps it."""
    procs = ProcessSet(tmp_path, "ipc", "simulate", TREE)
    ctx = zmq.Context()
    try:
        procs.start(60, ("evaluator",))
        identity = routing_identity("user")
        user = Curve.load("user", procs.keys_dir)
        legit = PeerClient(ctx, "evaluator", procs.endpoints["evaluator"], identity, TrafficLog("user"),
                           setup=user.client("evaluator"))
        assert isinstance(legit.request(Ping(), 10).message, Pong)
        thief = squat(ctx, procs, procs.endpoints["evaluator"], "evaluator", [identity])[0]
        time.sleep(0.5)
        assert not holds(thief, 2000)
        assert isinstance(legit.request(Ping(), 10).message, Pong)
        thief.close(linger=0)
        legit.close()
    finally:
        procs.stop()
        ctx.destroy(linger=0)


def test_routing_identities_cannot_be_guessed():
    ids = {routing_identity("user") for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith(f"user:{os.getpid()}:") and len(i.rsplit(":", 1)[1]) == 32
                                    for i in ids)


@pytest.mark.fhe
def test_a_key_id_whose_keys_were_made_again_is_never_stale_at_the_evaluator(tmp_path, alice, clear_model):
    """23.3: with --max-keys 2 the user forgets alice's keys when two other applicants make theirs; alice's next
    application makes new keys, and the evaluator, which still holds her old evaluation key, must not answer
    KEY_QUERY 'present' for it (the runs would then fail BAD_CIPHERTEXT for good): the key is bound to its
    fingerprint, so the new one is uploaded and replaces it."""
    procs = ProcessSet(tmp_path, "ipc", "execute", TREE, extra_args={"user": ["--max-keys", "2"]})
    try:
        procs.start(90)
        expected = decision_message(clear_model.approved(alice))

        def apply(sid):
            prep = procs.command("user", "prepare", {"session_id": sid, "key_id": "alice", "features": alice["user"]}, 120)
            for party in ("bank", "agency"):
                procs.command(party, "encrypt", {"session_id": sid, "key_id": "alice", "features": alice[party]}, 60)
            return prep, procs.command("user", "predict", {"session_id": sid}, 120)["decision"]
        first, decision = apply("alice-1")
        assert first["eval_key_uploaded"] is True and decision == expected
        for other in ("bob", "carol"):  # two other applicants: the user keeps 2 key ids, alice's go
            procs.command("user", "keygen", {"key_id": other}, 120)
        assert "alice" not in procs.command("user", "status", {}, 10)["keys"]
        again, decision = apply("alice-2")
        assert "keygen_s" in again and again["eval_key_uploaded"] is True, again  # new keys, uploaded
        assert decision == expected
    finally:
        procs.stop()
