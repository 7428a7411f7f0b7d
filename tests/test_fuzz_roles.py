"""Hypothesis throws malformed and hostile multipart messages at live roles, as every proven identity (the user,
and the bank and agency as authenticated but malicious peers): every one gets a well-formed answer before its
deadline that is never INTERNAL (a bug, in SPEC's words), and no role crashes or hangs. FUZZ_EXAMPLES sets the
count per role and identity (default 400)."""

import json
import os

import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from protocol import PROTOCOL_VERSION
from protocol.curve import Curve
from protocol.messages import MessageType, Ping, decode, encode
from protocol.transport import make_socket
from scenarios.processes import ProcessSet

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
FIELDS = ["seq", "key_id", "session_id", "party", "variant", "run_id", "offset", "encrypt", "wait_ms",
          "secret_keys_count", "variants", "action", "params", "code", "reason", "inputs", "output",
          "key_path", "seconds", "ok"]
values = st.one_of(st.integers(-5, 2**62), st.text(max_size=70), st.booleans(), st.none(),
                   st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
                   st.sampled_from(["user", "bank", "agency", "base", "s-1", "../x", "a" * 80]))
headers = st.one_of(st.binary(max_size=80),
                    st.dictionaries(st.sampled_from(FIELDS), values, max_size=8).map(lambda d: json.dumps(d).encode()))
types = st.sampled_from([t.value.encode() for t in MessageType] + [b"", b"NOPE", b"\xff\xfe"])
raw_messages = st.tuples(st.one_of(st.just(PROTOCOL_VERSION), st.binary(max_size=8)), types, headers,
                         st.lists(st.binary(max_size=300), max_size=4))


@st.composite
def structured_messages(draw):
    """A message of a real type with its own header fields (random values) and blob counts: most of these
    decode, so they reach the authorization table and the handlers."""
    import dataclasses
    from protocol.messages import MESSAGE_CLASSES
    cls = draw(st.sampled_from(sorted(MESSAGE_CLASSES.values(), key=lambda c: c.TYPE.value)))
    header = {"seq": draw(st.integers(0, 2**40))}
    blobs = []
    for f in dataclasses.fields(cls):
        if f.name in cls.BLOBS:
            count = draw(st.integers(1, 2))
            if f.name in cls.CHUNKED or f.type in ("tuple", tuple):
                header[f"{f.name}_count"] = count
            else:
                count = 1
            blobs += [draw(st.binary(max_size=300)) for _ in range(count)]
        elif draw(st.integers(0, 9)) > 0:  # now and then a field is missing
            header[f.name] = draw(values)
    return PROTOCOL_VERSION, cls.TYPE.value.encode(), json.dumps(header).encode(), blobs


messages = st.one_of(raw_messages, structured_messages())


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    procs = ProcessSet(tmp_path_factory.mktemp("fuzz"), "ipc", "execute", None)
    procs.start(180, ("evaluator", "user", "bank", "agency"))
    yield procs
    procs.stop()


@pytest.mark.parametrize("identity", ["user", "bank", "agency"])
@pytest.mark.parametrize("target", ["evaluator", "bank", "agency"])
def test_live_roles_survive_fuzzing(roles, target, identity):
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, f"{identity}:42")
    Curve.load(identity, roles.keys_dir).client(target)(sock)
    sock.connect(roles.endpoints[target])
    outcome = {"sent": 0, "hangs": 0, "internal": [], "codes": set()}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(message=messages)
    def one(message):
        version, type_name, header, blobs = message
        sock.send_multipart([version, type_name, header, *blobs])
        outcome["sent"] += 1
        if not sock.poll(10_000):
            outcome["hangs"] += 1
            return
        reply = decode(sock.recv_multipart()).message  # a well-formed answer, never an internal error
        code = reply.code if reply.TYPE.value == "ERROR" else reply.TYPE.value
        outcome["codes"].add(code)
        if code == "INTERNAL":
            outcome["internal"].append((type_name, header[:120], reply.reason))

    try:
        one()
        assert outcome["sent"] >= EXAMPLES // 2
        assert outcome["hangs"] == 0 and outcome["internal"] == []
        assert {"MALFORMED", "FORBIDDEN"} <= outcome["codes"]
        assert roles.procs[target].exit_code() is None, roles.procs[target].log_tail()
        sock.send_multipart(encode(Ping(), 10**9))
        assert sock.poll(10_000)
        while True:  # drain answers to earlier messages, then the PONG
            packet = decode(sock.recv_multipart())
            if packet.seq == 10**9:
                break
        assert packet.message.role == target
    finally:
        sock.close(linger=0)
        ctx.term()


def test_the_user_survives_fuzzing_on_its_control_channel(roles):
    """The user listens to no one but the runner: fuzz it through the runner's own control socket."""
    identity = roles.procs["user"].identity
    outcome = {"sent": 0, "hangs": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(message=messages)
    def one(message):
        version, type_name, header, blobs = message
        if type_name == b"SHUTDOWN":
            return  # a legal way to end the role, not an attack
        roles.control.send_multipart([identity, version, type_name, header, *blobs])
        outcome["sent"] += 1
        if not roles.control.poll(10_000):
            outcome["hangs"] += 1
            return
        reply = decode(roles.control.recv_multipart()[1:]).message
        if reply.TYPE.value == "ERROR" and reply.code == "INTERNAL":
            outcome["internal"].append((type_name, header[:120], reply.reason))

    outcome["internal"] = []
    one()
    assert outcome["sent"] >= EXAMPLES // 3 and outcome["hangs"] == 0 and outcome["internal"] == []
    assert roles.procs["user"].exit_code() is None
    assert roles.command("user", "status", {}, 10)["keys"] == []


def test_garbage_client_keys_are_refused_without_crashing_the_party(roles):
    """Concrete aborts the process on a malformed secret key: the party checks the layout first."""
    from protocol.messages import ClientKey
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, "user:43")
    Curve.load("user", roles.keys_dir).client("bank")(sock)
    sock.connect(roles.endpoints["bank"])
    try:
        for ids, blobs in (([0], (b"",)), ([0], (b"\x00" * 16455,)), ([0, 1, 2], (os.urandom(99),) * 3),
                           ([2], (b"\x02" * 16455,))):
            sock.send_multipart(encode(ClientKey("k", ids, blobs), 1))
            assert sock.poll(10_000)
            reply = decode(sock.recv_multipart()).message
            assert reply.code == "MALFORMED" and "secret key" in reply.reason
        assert roles.procs["bank"].exit_code() is None
    finally:
        sock.close(linger=0)
        ctx.term()


def test_an_evaluation_key_of_another_circuit_is_refused_and_the_evaluator_lives_on(roles):
    """Running with another circuit's key aborts Concrete; the evaluator refuses such a key at upload."""
    import numpy as np
    from concrete import fhe
    from protocol.messages import EvalKey

    @fhe.compiler({"x": "encrypted"})
    def plus_one(x):
        return x + 1

    other = plus_one.compile([np.array([[i, i]]) for i in range(8)])
    other.keygen()
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, "user:44")
    Curve.load("user", roles.keys_dir).client("evaluator")(sock)
    sock.connect(roles.endpoints["evaluator"])
    try:
        sock.send_multipart(encode(EvalKey("foreign", other.client.evaluation_keys.serialize()), 1))
        assert sock.poll(30_000)
        reply = decode(sock.recv_multipart()).message
        assert reply.code == "BAD_CIPHERTEXT" and "wrong shape" in reply.reason
        sock.send_multipart(encode(Ping(), 2))
        assert sock.poll(10_000) and decode(sock.recv_multipart()).message.role == "evaluator"
    finally:
        sock.close(linger=0)
        ctx.term()
