"""Authenticated but hostile peers (a bank or agency with its own proven CURVE key, the runner's key, a rogue
worker), slow readers and floods: each test reproduces one finding of issue 8 against live roles."""

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
import zmq

from credit_model.deployment import load_deployment
from credit_model.training.fhe_model import SimulatedPartyClient, ml_client
from protocol import PROTOCOL_VERSION
from protocol.messages import EvalKey, GetOutput, Input, KeyQuery, Output, Ping, Ready, Run, encode
from bench.hostile import flood, rss_mb
from simulation.processes import MODULES, PROJECT_ROOT, free_tcp_port
from tests.conftest import ask
from tests.pinned_deployment import TREE

PARTIES = ("user", "bank", "agency")


def sim_blobs(records):
    dep = load_deployment(TREE)
    sim = SimulatedPartyClient(ml_client(dep))
    return {p: sim.quantize_encrypt_serialize_party(p, dep.preprocessor(p).transform_records([records[p]]))
            for p in PARTIES}


def code_of(packet):
    return packet.message.code if packet.message.TYPE.value == "ERROR" else packet.message.TYPE.value


@pytest.fixture
def evaluator(start_roles, client_socket):
    """A live evaluator (simulation, CURVE on) and a DEALER per identity, each with that role's own key."""
    procs = start_roles(("evaluator",))

    def peer(role, transport_endpoint=None):
        return client_socket(transport_endpoint or procs.endpoints["evaluator"], f"{role}:1", procs.keys_dir)
    return procs, {role: peer(role) for role in ("user", "bank", "agency", "runner")}


def open_complete_session(socks, blobs, sid="a-1", key="alice"):
    for party in PARTIES:  # the user's input opens the session; bank and agency add theirs
        assert code_of(ask(socks[party], encode(Input(sid, key, party, "base", blobs[party]), 1))) == "ACK"


def run_to_output(user, sid, run_id):
    assert code_of(ask(user, encode(Run(sid, run_id, {}), 2))) == "ACK"
    return ask(user, encode(GetOutput(sid, run_id, 20_000), 3)).message


def test_only_the_applicants_user_can_read_its_output_or_run_its_session(evaluator, alice):
    procs, socks = evaluator
    blobs = sim_blobs(alice)
    open_complete_session(socks, blobs)
    output = run_to_output(socks["user"], "a-1", "r1")
    assert isinstance(output, Output) and len(output.ciphertext) > 100
    for role in ("bank", "agency", "runner"):  # the finding: the bank got the 33 KB OUTPUT
        assert code_of(ask(socks[role], encode(GetOutput("a-1", "r1", 0), 4))) == "FORBIDDEN"
        assert code_of(ask(socks[role], encode(KeyQuery("alice", "0" * 64), 5))) == "FORBIDDEN"
    # the bank adds its own variant and tries to run it over the applicant's hidden features
    assert code_of(ask(socks["bank"], encode(Input("a-1", "alice", "bank", "probe", blobs["bank"]), 6))) == "ACK"
    assert code_of(ask(socks["bank"], encode(Run("a-1", "rb", {"bank": "probe"}), 7))) == "FORBIDDEN"
    never = ask(socks["user"], encode(GetOutput("a-1", "rb", 0), 8)).message
    assert never.code == "OUTPUT_NOT_READY" and "never started" in never.reason
    assert ask(socks["user"], encode(GetOutput("a-1", "r1", 0), 9)).message == output


@pytest.mark.fhe
def test_the_bank_cannot_replace_the_applicants_evaluation_key(start_roles, client_socket, alice, clear_model):
    procs = start_roles(("evaluator",), fhe="execute")
    socks = {r: client_socket(procs.endpoints["evaluator"], f"{r}:1", procs.keys_dir) for r in PARTIES}
    dep = load_deployment(TREE)
    user_client, bank_client = ml_client(dep), ml_client(dep)
    for client in (user_client, bank_client):
        client.generate_private_and_evaluation_keys()
    user_key = user_client.get_serialized_evaluation_keys()
    assert code_of(ask(socks["user"], encode(EvalKey("alice", user_key), 1), 60)) == "ACK"
    forged = bank_client.get_serialized_evaluation_keys()
    assert code_of(ask(socks["bank"], encode(EvalKey("alice", forged), 2), 60)) == "FORBIDDEN"
    assert code_of(ask(socks["user"], encode(EvalKey("alice", user_key), 3), 60)) == "ILLEGAL_STATE"  # twice: no
    stored = [p.read_bytes() for p in (procs.run_dir / "evaluator").rglob("*.evk")]
    assert stored == [user_key]
    blobs = {p: user_client.quantize_encrypt_serialize_party(p, dep.preprocessor(p).transform_records([alice[p]]))
             for p in PARTIES}
    open_complete_session(socks, blobs)
    output = run_to_output(socks["user"], "a-1", "r1")
    assert float(user_client.decrypt_probabilities(output.ciphertext)[0][1]) == pytest.approx(
        clear_model.probability(alice))


def test_a_bank_flooding_fresh_sessions_evicts_nothing_and_opens_nothing(evaluator, alice):
    procs, socks = evaluator
    blobs = sim_blobs(alice)
    assert code_of(ask(socks["user"], encode(Input("a-1", "alice", "user", "base", blobs["user"]), 1))) == "ACK"
    for i in range(25):  # more than max_sessions (20)
        reply = ask(socks["bank"], encode(Input(f"flood-{i}", "alice", "bank", "base", blobs["bank"]), 2))
        assert code_of(reply) == "UNKNOWN_SESSION"
    for party in ("bank", "agency"):
        assert code_of(ask(socks[party], encode(Input("a-1", "alice", party, "base", blobs[party]), 3))) == "ACK"
    assert isinstance(run_to_output(socks["user"], "a-1", "r1"), Output)
    assert procs.command("evaluator", "status", {}, 10)["sessions"] == 1


def test_a_session_id_taken_first_by_the_bank_does_not_lock_the_applicant_out(evaluator, alice):
    procs, socks = evaluator
    blobs = sim_blobs(alice)
    assert code_of(ask(socks["bank"], encode(Input("b-1", "mallory", "bank", "base", blobs["bank"]), 1))) == \
        "UNKNOWN_SESSION"
    assert code_of(ask(socks["user"], encode(Input("b-1", "alice", "user", "base", blobs["user"]), 2))) == "ACK"
    assert code_of(ask(socks["bank"], encode(Input("b-1", "mallory", "bank", "base", blobs["bank"]), 3))) == \
        "FORBIDDEN"  # under another key id than the session's


def test_an_agency_flooding_variants_reaches_only_its_own_quota(evaluator, alice):
    procs, socks = evaluator
    blobs = sim_blobs(alice)
    open_complete_session(socks, blobs)
    for i in range(40):
        assert code_of(ask(socks["agency"], encode(Input("a-1", "alice", "agency", f"v{i}", blobs["agency"]), 1))) \
            == "ACK"
    assert code_of(ask(socks["user"], encode(Run("a-1", "r0", {"agency": "v0"}), 2))) == "MISSING_INPUTS"
    assert isinstance(run_to_output(socks["user"], "a-1", "r1"), Output)  # every base input is still there
    assert code_of(ask(socks["user"], encode(Run("a-1", "r2", {"agency": "v39"}), 3))) == "ACK"


def test_a_run_id_is_never_reused_and_an_output_names_the_inputs_it_was_computed_from(evaluator, alice, shipped):
    procs, socks = evaluator
    blobs = sim_blobs(alice)
    open_complete_session(socks, blobs)
    first = run_to_output(socks["user"], "a-1", "r1")
    assert first.inputs == {p: hashlib.sha256(blobs[p]).hexdigest() for p in PARTIES}
    other = sim_blobs(shipped["denied_bin_found"].applicants[0].data)["agency"]
    assert code_of(ask(socks["agency"], encode(Input("a-1", "alice", "agency", "base", other), 4))) == "ACK"
    reused = ask(socks["user"], encode(Run("a-1", "r1", {}), 5)).message
    assert reused.code == "ILLEGAL_STATE" and "already used" in reused.reason  # no stale decision for r1
    second = run_to_output(socks["user"], "a-1", "r2")
    assert second.inputs["agency"] == hashlib.sha256(other).hexdigest() != first.inputs["agency"]


def test_a_peer_that_stops_reading_is_dropped_not_waited_for(start_roles, client_socket):
    """The finding: another party's PING took 57 s and SIGTERM waited for SIGKILL."""
    procs = start_roles(("evaluator",), transport="tcp")
    ctx = zmq.Context()
    reader = ctx.socket(zmq.DEALER)
    reader.setsockopt(zmq.LINGER, 0)
    reader.setsockopt(zmq.RCVHWM, 1)
    reader.setsockopt(zmq.RCVBUF, 4096)
    from protocol.curve import Curve
    Curve.load("user", procs.keys_dir).client("evaluator")(reader)
    reader.connect(procs.endpoints["evaluator"])
    bank = client_socket(procs.endpoints["evaluator"], "bank:1", procs.keys_dir)
    try:
        ask(bank, encode(Ping(), 0))
        stop = time.monotonic() + 4
        sent = 0
        while time.monotonic() < stop:  # requests it will never read the answers to
            try:
                reader.send_multipart(encode(Ping(), sent), zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
        latencies = []
        for i in range(50):
            t0 = time.perf_counter()
            assert ask(bank, encode(Ping(), 1000 + i), timeout=10).seq == 1000 + i
            latencies.append(time.perf_counter() - t0)
        latencies.sort()
        print(f"\n{sent} unread PINGs; the bank's PING latency p50 {latencies[25] * 1000:.1f} ms, "
              f"p99 {latencies[-1] * 1000:.1f} ms")
        assert sent > 20_000 and latencies[-1] < 2.0
        pid = procs.procs["evaluator"].popen.pid
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        assert procs.procs["evaluator"].popen.wait(10) == 0
        print(f"SIGTERM to exit with a non-reading peer connected: {time.monotonic() - t0:.2f} s")
        assert time.monotonic() - t0 < 3.0
    finally:
        reader.close(linger=0)
        ctx.term()


def test_unauthenticated_floods_of_oversized_frames_cost_bounded_memory(start_roles, client_socket, alice):
    procs = start_roles(("evaluator",), transport="tcp")
    pid = procs.procs["evaluator"].popen.pid
    port = int(procs.endpoints["evaluator"].rsplit(":", 1)[1])
    before, peak, results = rss_mb(pid), 0.0, []
    threads = [threading.Thread(target=flood, args=(port, 400 << 20, 150 << 20, results)) for _ in range(8)]
    for thread in threads:
        thread.start()
    socks = {r: client_socket(procs.endpoints["evaluator"], f"{r}:1", procs.keys_dir) for r in PARTIES}
    open_complete_session(socks, sim_blobs(alice))  # a real application goes on meanwhile
    assert isinstance(run_to_output(socks["user"], "a-1", "r1"), Output)
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.05)
    peak = max(peak, rss_mb(pid))
    print(f"\n8 unauthenticated connections announcing 400 MiB frames sent {sum(results) >> 20} MiB in all; "
          f"evaluator RSS {before:.0f} -> peak {peak:.0f} MB (+{peak - before:.0f} MB)")
    assert len(results) == 8 and peak - before < 200
    assert ask(socks["user"], encode(Ping(), 9)).message.role == "evaluator"


def test_an_authenticated_peer_sending_huge_frames_is_cut_off_at_the_first_one(evaluator):
    """The finding: a 640 MiB message in two frames was received and copied whole before TOO_LARGE. Now no
    frame larger than the largest legal one (a 1 MiB blob chunk plus its header) is ever accepted: the
    connection is dropped when the frame's length is announced."""
    procs, socks = evaluator
    pid = procs.procs["evaluator"].popen.pid
    before = rss_mb(pid)
    half = b"\x01" * (320 << 20)
    header = b'{"seq": 77, "key_id": "big", "evaluation_key_count": 2}'
    socks["user"].send_multipart([PROTOCOL_VERSION, b"EVAL_KEY", header, half, half], copy=False)
    del half
    assert not socks["user"].poll(3000), "a 320 MiB frame was answered"
    # The sender's DEALER keeps the message queued and sends it again on every reconnection, encrypting 640 MiB on
    # this process's one I/O thread each time, which the bank's socket shares: it is closed before the bank asks.
    socks["user"].close(linger=0)
    assert ask(socks["bank"], encode(Ping(), 1)).message.role == "evaluator"
    growth = rss_mb(pid) - before
    print(f"\n640 MiB in two frames: no answer, the evaluator RSS +{growth:.0f} MB")
    assert growth < 50


def test_a_message_over_its_limit_in_small_frames_is_refused_without_being_copied(evaluator):
    """libzmq hands a multipart message over only once its last frame arrived, so what it buffered cannot
    be bounded by the receiver; the receiver refuses the message as soon as it is over its type's limit
    and lets go of every frame beyond it uncopied (SPEC, threat model)."""
    procs, socks = evaluator
    pid = procs.procs["evaluator"].popen.pid
    before = rss_mb(pid)
    header = b'{"seq": 78, "key_id": "big", "evaluation_key_count": 60}'
    socks["user"].send_multipart([PROTOCOL_VERSION, b"EVAL_KEY", header] + [b"\x01" * (1 << 20)] * 60, copy=False)
    assert socks["user"].poll(60_000)
    from protocol.messages import decode
    reply = decode(socks["user"].recv_multipart())
    growth = rss_mb(pid) - before
    print(f"\nEVAL_KEY of 60 x 1 MiB frames: {reply.message.code}: {reply.message.reason}; RSS +{growth:.0f} MB")
    assert reply.seq == 78 and reply.message.code == "TOO_LARGE" and "frames" in reply.message.reason
    assert growth < 150
    assert ask(socks["bank"], encode(Ping(), 1)).message.role == "evaluator"


@pytest.mark.parametrize("session_id", ["a__b.1", "x__y__z"])
def test_ids_that_were_accepted_survive_a_restart_and_a_trailing_newline_is_refused(start_roles, client_socket,
                                                                                       alice, session_id):
    procs = start_roles(("evaluator",))
    socks = {r: client_socket(procs.endpoints["evaluator"], f"{r}:1", procs.keys_dir) for r in PARTIES}
    blobs = sim_blobs(alice)
    assert code_of(ask(socks["user"], encode(Input("n-1\n", "alice", "user", "base", blobs["user"]), 1))) == \
        "MALFORMED"
    open_complete_session(socks, blobs, sid=session_id, key="k__1")
    assert code_of(ask(socks["agency"], encode(Input(session_id, "k__1", "agency", "v__1", blobs["agency"]), 2))) \
        == "ACK"
    procs.restart("evaluator", 120)  # the finding: the evaluator crashed on every restart after this
    assert "recovered 1 session(s)" in (procs.run_dir / "evaluator.log").read_text()
    socks = {r: client_socket(procs.endpoints["evaluator"], f"{r}:2", procs.keys_dir) for r in PARTIES}
    assert code_of(ask(socks["user"], encode(Run(session_id, "r__1", {"agency": "v__1"}), 3))) == "ACK"
    assert isinstance(ask(socks["user"], encode(GetOutput(session_id, "r__1", 20_000), 4)).message, Output)


@pytest.mark.timeout(300)
def test_a_hostile_process_cannot_join_the_evaluators_local_dask_cluster(start_roles, tmp_path, alice):
    """--engine dask --workers 1: a process on the same host (a bank or agency could be one) reads the scheduler's
    address from the evaluator's log and tries, with its own `distributed`, to connect as a client (which could run
    code where evaluation keys live) and to register as a worker (which would be handed tasks: ciphertexts and keys),
    over tcp:// and over tls:// with certificates of a CA of its own, and asks every port the cluster listens on for
    Dask's HTTP pages (workers, task keys naming sessions and runs, logs, metrics). Every attempt is refused and no
    page answers; real applicants are served all the while, every run on the evaluator's own worker."""
    procs = start_roles(("evaluator", "user", "bank", "agency"),
                        extra_args={"evaluator": ["--engine", "dask", "--workers", "1"]})
    tls = procs.run_dir / "evaluator" / "cluster-tls"  # the evaluator's own certificate: 0600 files in a 0700 dir
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700 and sorted(p.name for p in tls.iterdir()) == \
        ["ca.pem", "cert.pem", "key.pem"] and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tls.iterdir())
    log_path = procs.run_dir / "evaluator.log"
    found = re.findall(r"runs go to the Dask scheduler \w+://(127\.0\.0\.1:\d+) \(1 worker", log_path.read_text())
    assert found, log_path.read_text()[-2000:]
    import psutil  # every port the evaluator and its Dask processes listen on, as a port scan of loopback finds them
    evaluator = psutil.Process(procs.procs["evaluator"].popen.pid)
    ports = sorted({c.laddr.port for p in [evaluator] + evaluator.children(recursive=True)
                    for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN})
    intruder = subprocess.Popen([sys.executable, "-m", "tests.dask_intruder", found[0], str(tmp_path / "intruder"),
                                 *map(str, ports)],
                                cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        decisions = []
        while intruder.poll() is None or len(decisions) < 2:  # applicants served while the intruder tries
            sid = f"s{len(decisions)}"
            procs.command("user", "prepare", {"session_id": sid, "key_id": "k1", "features": alice["user"]}, 60)
            for party in ("bank", "agency"):
                procs.command(party, "encrypt", {"session_id": sid, "key_id": "k1", "features": alice[party]}, 60)
            decisions.append(procs.command("user", "predict", {"session_id": sid}, 60)["decision"])
        out, err = intruder.communicate(timeout=60)
    finally:
        if intruder.poll() is None:
            intruder.kill()
    assert intruder.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    print(f"\nthe intruder got: {got}")
    assert got["client_tcp"].startswith("refused") and got["client_tls_own_ca"].startswith("refused"), got
    assert got["worker_tcp"] == "not registered" and got["worker_tls_own_ca"] == "not registered", got
    assert len(ports) >= 4 and got["http_pages"] == [], (ports, got["http_pages"])  # no page about the runs
    from credit_model.explainability import decision_message
    assert set(decisions) == {decision_message(True)}, decisions
    log = log_path.read_text()
    ran_on = set(re.findall(r"ran on worker (\S+) \(pid (\d+)", log))
    assert len({pid for _, pid in ran_on}) == 1, ran_on   # one worker, the evaluator's own
    assert procs.procs["evaluator"].exit_code() is None


def test_hostile_requests_leave_bounded_logs_and_a_bounded_traffic_log(evaluator):
    procs, socks = evaluator
    log_path = procs.run_dir / "evaluator.log"
    size_before = log_path.stat().st_size
    junk = b'{"seq": 1, "key_id": "k", "' + b"x" * 60_000 + b'": 1}'
    got = 0
    for sock, frames, count in ((socks["bank"], [PROTOCOL_VERSION, b"KEY_QUERY", junk], 300),
                                (socks["user"], encode(Ping(), 5), 6000)):
        for i in range(count):
            sock.send_multipart(frames)
            if i % 10 == 9:  # read as we go: a peer that stops reading loses its replies (tested above)
                for _ in range(10):
                    assert sock.poll(5000)
                    sock.recv_multipart()
                    got += 1
    grown = log_path.stat().st_size - size_before
    stats = procs.command("evaluator", "stats", {}, 30)
    print(f"\n6,300 requests: log +{grown} bytes; traffic log kept {len(stats['messages'])}, "
          f"dropped {stats.get('dropped')}")
    assert got == 6300 and grown < 64 * 1024
    assert len(stats["messages"]) <= 5000 and stats["dropped"] >= 1300


def test_in_attach_mode_ready_is_bound_to_the_senders_key(tmp_path, alice):
    """The finding: a READY claiming "user" but signed with the bank's key got the applicant's features."""
    from click.testing import CliRunner

    from run_scenario import cli
    from scenarios import SCENARIO_DIR

    keys = tmp_path / "keys"
    assert CliRunner().invoke(cli, ["keys", str(keys)]).exit_code == 0
    url = {n: f"tcp://127.0.0.1:{free_tcp_port()}" for n in ("control", "evaluator", "bank", "agency")}
    runner = subprocess.Popen([sys.executable, "run_scenario.py", "run", str(SCENARIO_DIR / "approved.yaml"),
                               "--fhe", "simulate", "--attach", url["control"], "--keys-dir", str(keys)],
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = zmq.Context()
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.setsockopt(zmq.IDENTITY, b"user:4242")
    from protocol.curve import Curve
    Curve.load("bank", keys).client("runner")(rogue)
    rogue.connect(url["control"])
    procs = []
    try:
        time.sleep(2)
        rogue.send_multipart(encode(Ready("user", 4242, {}), 0))
        for role in ("evaluator", "bank", "agency", "user"):
            args = [sys.executable, "-m", MODULES[role], "--control", url["control"], "--evaluator",
                    url["evaluator"], "--bank", url["bank"], "--agency", url["agency"], "--keys-dir", str(keys),
                    "--fhe", "simulate", "--deployment", TREE, "--workdir", str(tmp_path / role)]
            procs.append(subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            if role == "agency":
                time.sleep(3)  # the real user announces itself last
        output, _ = runner.communicate(timeout=180)
        assert runner.returncode == 0, output
        assert "scenario approved: PASSED" in output
        assert not rogue.poll(200), "the runner sent something to the rogue"
    finally:
        rogue.close(linger=0)
        ctx.term()
        for proc in procs + [runner]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
