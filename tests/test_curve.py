"""CurveZMQ: roles refuse to run without keys, rogue clients get nothing, senders are proven by their keys."""

import stat
from pathlib import Path

import click
import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from protocol.curve import Curve, create_keys
from protocol.messages import Input, Ping, decode, encode
from protocol.settings import RoleSettings, curve_for
from protocol.transport import make_socket
from simulation.processes import ProcessSet
from tests.pinned_deployment import TREE


def test_a_role_without_keys_refuses_to_run():
    from parties.bank import main
    result = CliRunner().invoke(main, ["--evaluator", "ipc:///nonexistent"])
    assert result.exit_code == 2
    assert "refuses to run without CURVE keys" in result.output


def test_insecure_is_said_loudly(capsys):
    assert curve_for("bank", RoleSettings(insecure=True)) is None
    assert "INSECURE: the bank runs WITHOUT CurveZMQ" in capsys.readouterr().err


def test_missing_secret_key_is_named(tmp_path):
    create_keys(tmp_path / "k", roles=("user",))
    with pytest.raises(click.UsageError, match="no CURVE secret key for bank"):
        curve_for("bank", RoleSettings(keys_dir=str(tmp_path / "k")))


def test_key_files_are_private_and_each_role_gets_only_its_own_secret(tmp_path):
    keys = create_keys(tmp_path / "keys")
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    dirs = sorted(keys.iterdir())
    assert [d.name for d in dirs] == sorted(("runner", "evaluator", "user", "bank", "agency"))
    for own in dirs:
        assert stat.S_IMODE(own.stat().st_mode) == 0o700
        files = sorted(f.name for f in own.iterdir())
        assert [f for f in files if f.endswith(".key_secret")] == [f"{own.name}.key_secret"]
        assert len([f for f in files if f.endswith(".key")]) == 5
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in own.iterdir())


def test_a_role_refuses_a_keys_directory_holding_another_roles_secret(tmp_path):
    """23.6: a compromised bank process must not hold the user's key; a directory with it is refused."""
    keys = create_keys(tmp_path / "keys")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    for own in keys.iterdir():
        for f in own.iterdir():
            (shared / f.name).write_bytes(f.read_bytes())
            (shared / f.name).chmod(0o600)
    assert curve_for("bank", RoleSettings(keys_dir=str(keys))).role == "bank"  # keys/bank/ resolved
    with pytest.raises(click.UsageError, match=r"holds the secret keys of others \(agency.key_secret, evaluator"):
        curve_for("bank", RoleSettings(keys_dir=str(shared)))


def test_the_runner_hands_each_role_only_its_own_keys_directory(tmp_path):
    procs = ProcessSet(tmp_path, "ipc", "simulate", TREE)
    try:
        for role in ("evaluator", "user", "bank", "agency"):
            line = procs.command_line(role)
            given = Path(line[line.index("--keys-dir") + 1])
            secrets = sorted(p.name for p in given.glob("*.key_secret"))
            assert secrets == [f"{role}.key_secret"], (role, secrets)
    finally:
        procs.stop()


@pytest.fixture
def evaluator(tmp_path):
    procs = ProcessSet(tmp_path, "tcp", "simulate", TREE)
    procs.start(180, ("evaluator",))
    ctx = zmq.Context()
    yield procs, ctx
    procs.stop()
    ctx.term()


def _dealer(ctx, procs, identity, keys=None):
    sock = make_socket(ctx, zmq.DEALER, identity)
    if keys is not None:
        public, secret = keys
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = Curve.load("evaluator", procs.keys_dir).public
    sock.connect(procs.endpoints["evaluator"])
    return sock


def _answer(sock, message, timeout_ms):
    """The reply, or None when nothing came back (or the message could not even be queued)."""
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)  # a refused handshake can leave no pipe to queue on
    try:
        sock.send_multipart(encode(message, 7))
    except zmq.Again:
        return None
    return decode(sock.recv_multipart()).message if sock.poll(timeout_ms) else None


def test_rogue_clients_get_nothing_through_and_real_parties_are_unaffected(evaluator, tmp_path):
    procs, ctx = evaluator
    rogue_keys = zmq.auth.load_certificate(zmq.auth.create_certificates(tmp_path, "rogue")[1])
    rogue = _dealer(ctx, procs, "user:666", rogue_keys)
    plain = _dealer(ctx, procs, "user:667")
    user = Curve.load("user", procs.keys_dir)
    real = _dealer(ctx, procs, "user:1", (user.public, user.secret))
    try:
        assert _answer(rogue, Ping(), 3000) is None
        assert _answer(plain, Ping(), 3000) is None
        assert _answer(real, Ping(), 10000).role == "evaluator"
        assert procs.procs["evaluator"].popen.poll() is None
    finally:
        for sock in (rogue, plain, real):
            sock.close(linger=0)


def test_the_sender_is_the_key_owner_not_the_claimed_identity(evaluator):
    procs, ctx = evaluator
    user = Curve.load("user", procs.keys_dir)
    spoof = _dealer(ctx, procs, "bank:1", (user.public, user.secret))  # user's key, bank's name
    try:
        reply = _answer(spoof, Input("s-1", "k", "bank", "base", b"x"), 10000)
        assert reply.code == "FORBIDDEN"
        assert reply.reason == "user may not send INPUT with party 'bank': it may only speak for itself"
    finally:
        spoof.close(linger=0)
