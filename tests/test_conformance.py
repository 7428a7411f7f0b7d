"""The conformance suite passes against the project's own roles and fails against a broken implementation."""

import subprocess
import sys

import pytest
import zmq
from click.testing import CliRunner

from protocol.messages import encode
from protocol.transport import make_socket
from run_scenario import cli
from simulation.processes import PROJECT_ROOT, ProcessSet
from tests.pinned_deployment import TREE


def conformance(*args, timeout=900):
    """`run_scenario.py conformance ARGS` in a process of its own, as a user runs it.

    The suite builds real Concrete key sets and compiles a circuit; done inside a test worker, a native crash there
    took the worker down under load (twice in CI). In its own process a crash is a return code and a stderr here."""
    args = args if "--deployment" in args else (*args, "--deployment", TREE)  # the roles here serve the tree
    result = subprocess.run([sys.executable, "run_scenario.py", "conformance", *args], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode in (0, 1), f"conformance crashed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    procs = ProcessSet(tmp_path_factory.mktemp("conf"), "tcp", "execute", TREE)
    procs.start(180, ("evaluator", "bank", "agency"))
    yield procs
    procs.stop()


@pytest.mark.fhe
@pytest.mark.parametrize("role", ["evaluator", "bank", "agency"])
def test_our_roles_pass_every_check(roles, role):
    result = conformance("--role", role, "--endpoint", roles.endpoints[role], "--keys-dir", str(roles.keys_dir))
    checks = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert result.returncode == 0, result.stdout
    assert all(line.startswith("PASS  ") for line in checks)
    assert f"{len(checks)} passed, 0 failed" in result.stdout.splitlines()
    assert len(checks) >= (20 if role == "evaluator" else 12)


ACK_EVERYTHING = """
import sys, zmq
from protocol.messages import Ack, decode, encode
from protocol.transport import make_socket, send_nowait
server = make_socket(zmq.Context(), zmq.ROUTER)
server.bind(f"tcp://127.0.0.1:{sys.argv[1]}")
while True:
    identity, *frames = server.recv_multipart()
    try:
        seq = decode(frames).seq
    except Exception:
        seq = 0
    send_nowait(server, [identity] + encode(Ack({}), seq))
"""


def test_a_broken_implementation_fails_and_is_told_why():
    """A ROUTER that answers every message with ACK (and never with the right error) must fail."""
    from simulation.processes import free_tcp_port

    port = free_tcp_port()
    # Both ends in processes of their own, as a user would run them (the suite builds real Concrete key sets in
    # the process that runs it; a test worker's own state must not be shared with either).
    fake = subprocess.Popen([sys.executable, "-c", ACK_EVERYTHING, str(port)], cwd=PROJECT_ROOT)
    try:
        result = conformance("--role", "bank", "--endpoint", f"tcp://127.0.0.1:{port}", "--timeout", "2")
    finally:
        fake.kill()
        fake.wait(10)
    output = result.stdout
    assert result.returncode == 1, (output + result.stderr)[-3000:]
    assert "FAIL  bank: handshake: PING answered by PONG naming the role: expected PONG" in output
    assert "FAIL  bank: version: an unknown version tag gets VERSION_MISMATCH" in output
    summary = [line for line in output.splitlines() if line.endswith(" failed")]
    assert len(summary) == 1 and not summary[0].endswith(" 0 failed")


# Each deliberately broken implementation (tests/broken_roles.py) and a check the suite must fail on it.
BROKEN = {
    "admits_any_key": ("evaluator", "admission: a client with an unknown CURVE key gets no answer"),
    "no_authorization": ("evaluator", "authorization: every type from every identity"),
    "parties_open_sessions": ("evaluator", "ownership: bank and agency cannot open a session"),
    "any_key_size": ("evaluator", "keys: an evaluation key of any other size"),
    "no_size_limits": ("evaluator", "limits: a message over its type's limit"),
    "never_evicts": ("evaluator", "quota: the user's sessions beyond 20 evict its own oldest"),
    "unsafe_ids": ("evaluator", "ids: a trailing newline"),
    "blocking_replies": ("evaluator", "slow reader"),
    "reuses_run_ids": ("evaluator", "runs: a run id is never reused"),
    "accepts_output_key": ("bank", "custody: a CLIENT_KEY carrying the output's secret key"),
    "contributors_run_sessions": ("evaluator", "ownership (live session): only its user may run it"),
    "parties_replace_inputs": ("evaluator", "ownership (live session): no party may send or replace an input"),
    "router_handover": ("bank", "identity: a second connection claiming a live one's routing identity"),
    "dies_when_flooded": ("agency", "alive: it still answers a PING after every check"),
}


def start_broken(flaw, role, tmp_path, fhe):
    import subprocess
    import sys
    import time

    from protocol.curve import Curve
    from protocol.messages import Ping
    from simulation.processes import PROJECT_ROOT, free_tcp_port
    from tests.conftest import ask

    keys = tmp_path / "keys"
    assert CliRunner().invoke(cli, ["keys", str(keys)]).exit_code == 0
    url = {n: f"tcp://127.0.0.1:{free_tcp_port()}" for n in ("evaluator", "bank", "agency")}
    proc = subprocess.Popen([sys.executable, "-m", "tests.broken_roles", flaw, role, "--evaluator", url["evaluator"],
                             "--bank", url["bank"], "--agency", url["agency"], "--keys-dir", str(keys),
                             "--fhe", fhe, "--deployment", TREE, "--workdir", str(tmp_path / "work")],
                            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "role.log", "wb"))
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, "user:1")
    Curve.load("user", keys).client(role)(sock)
    sock.connect(url[role])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # ready when it answers a PING
            assert proc.poll() is None, (tmp_path / "role.log").read_text()[-2000:]
            try:
                ask(sock, encode(Ping(), 1), timeout=2)
                break
            except AssertionError:
                continue
    finally:
        sock.close(linger=0)
        ctx.term()
    return proc, url[role], keys


@pytest.mark.slow
@pytest.mark.parametrize("flaw", sorted(BROKEN))
def test_the_suite_fails_each_deliberately_broken_implementation(flaw, tmp_path):
    role, check = BROKEN[flaw]
    fhe = "execute" if flaw == "any_key_size" else "simulate"
    proc, endpoint, keys = start_broken(flaw, role, tmp_path, fhe)
    try:
        result = conformance("--role", role, "--endpoint", endpoint, "--keys-dir", str(keys), "--fhe", fhe,
                             "--timeout", "10")
    finally:
        proc.kill()
        proc.wait(10)
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 1, result.stdout
    assert any(check in line for line in failed), f"{flaw}: expected a FAIL of {check!r}, got:\n" + "\n".join(failed)
