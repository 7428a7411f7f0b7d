"""The conformance suite passes against the project's own roles and fails against a broken implementation."""

import threading

import pytest
import zmq
from click.testing import CliRunner

from protocol.messages import Ack, decode, encode
from protocol.transport import make_socket
from run_scenario import cli
from scenarios.processes import ProcessSet


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    procs = ProcessSet(tmp_path_factory.mktemp("conf"), "tcp", "execute", None)
    procs.start(180, ("evaluator", "bank", "agency"))
    yield procs
    procs.stop()


@pytest.mark.fhe
@pytest.mark.parametrize("role", ["evaluator", "bank", "agency"])
def test_our_roles_pass_every_check(roles, role):
    result = CliRunner().invoke(cli, ["conformance", "--role", role, "--endpoint", roles.endpoints[role],
                                      "--keys-dir", str(roles.keys_dir)])
    checks = [line for line in result.output.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert result.exit_code == 0, result.output
    assert all(line.startswith("PASS  ") for line in checks)
    assert f"{len(checks)} passed, 0 failed" in result.output.splitlines()
    assert len(checks) >= (20 if role == "evaluator" else 12)


def test_a_broken_implementation_fails_and_is_told_why():
    """A ROUTER that answers every message with ACK (and never with the right error) must fail."""
    ctx = zmq.Context()
    server = make_socket(ctx, zmq.ROUTER)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if server.poll(50):
                identity, *frames = server.recv_multipart()
                try:
                    seq = decode(frames).seq
                except Exception:  # noqa: BLE001
                    seq = 0
                server.send_multipart([identity] + encode(Ack({}), seq))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        result = CliRunner().invoke(cli, ["conformance", "--role", "bank", "--endpoint",
                                          f"tcp://127.0.0.1:{port}", "--timeout", "2"])
    finally:
        stop.set()
        thread.join()
        server.close(linger=0)
        ctx.term()
    assert result.exit_code == 1
    assert "FAIL  bank: handshake: PING answered by PONG naming the role: expected PONG" in result.output
    assert "FAIL  bank: version: an unknown version tag gets VERSION_MISMATCH" in result.output
    summary = [line for line in result.output.splitlines() if line.endswith(" failed")]
    assert len(summary) == 1 and not summary[0].endswith(" 0 failed")
