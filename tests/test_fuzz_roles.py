"""Hypothesis throws malformed and hostile multipart messages at live roles, as every proven identity (the user,
and the bank and agency as authenticated but malicious peers): every one gets a well-formed answer before its
deadline that is never INTERNAL (a bug, in SPEC's words), and no role crashes or hangs. FUZZ_EXAMPLES sets the
count per role and identity (default 400)."""

import collections
import json
import os

import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from protocol import PROTOCOL_VERSION
from protocol.curve import Curve
from protocol.messages import MessageType, Ping, decode, encode
from protocol.transport import make_socket
from simulation.processes import ProcessSet
from tests.pinned_deployment import TREE

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
# Made here, so that a FUZZ_EXAMPLES hypothesis refuses (0) fails the collection, not a test holding open sockets.
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                         derandomize=True)
FIELDS = ["seq", "key_id", "session_id", "party", "variant", "run_id", "offset", "encrypt", "wait_ms",
          "secret_keys_count", "variants", "action", "params", "code", "reason", "inputs", "output",
          "key_path", "seconds", "ok"]
values = st.one_of(st.integers(-5, 2**62), st.text(max_size=70), st.booleans(), st.none(),
                   st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
                   st.sampled_from(["user", "bank", "agency", "base", "s-1", "../x", "a" * 80]))
# Values of the field's own type, ids of the safe alphabet and the names the roles know, so that a message gets
# past decoding and the id checks into the handlers (a mistyped value only ever meets MALFORMED).
NAMES = st.sampled_from(["user", "bank", "agency", "runner", "base", "status", "stats", "prepare", "predict",
                         "explain", "encrypt", "linear", "bisect", "session_id", "key_id", "features", "strategy"])
SAFE_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
WELL_TYPED = {
    "str": st.one_of(NAMES, SAFE_IDS),
    "int": st.integers(-3, 2**31),
    "float": st.floats(-1, 1e6, allow_nan=False),
    "bool": st.booleans(),
    "dict": st.dictionaries(st.one_of(NAMES, SAFE_IDS),
                            st.one_of(NAMES, SAFE_IDS, st.integers(-3, 100), st.booleans(), st.none()), max_size=4),
    "list": st.lists(st.integers(-1, 8), max_size=4),
}
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
        elif draw(st.integers(0, 9)) > 0:  # now and then a field is missing, or of another type
            typed = WELL_TYPED.get(str(f.type))
            header[f.name] = draw(typed if typed is not None and draw(st.integers(0, 3)) > 0 else values)
    return PROTOCOL_VERSION, cls.TYPE.value.encode(), json.dumps(header).encode(), blobs


messages = st.one_of(raw_messages, structured_messages())


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    procs = ProcessSet(tmp_path_factory.mktemp("fuzz"), "ipc", "execute", TREE)
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
    outcome = {"sent": 0, "replies": 0, "hangs": 0, "codes": collections.Counter()}

    @FUZZ_SETTINGS
    @given(message=messages)
    def one(message):
        version, type_name, header, blobs = message
        sock.send_multipart([version, type_name, header, *blobs])
        outcome["sent"] += 1
        if not sock.poll(10_000):
            outcome["hangs"] += 1
            return
        reply = decode(sock.recv_multipart()).message  # a well-formed answer, never an internal error
        outcome["replies"] += 1
        code = reply.code if reply.TYPE.value == "ERROR" else reply.TYPE.value
        outcome["codes"][code] += 1
        assert code != "INTERNAL", (f"the {target} answered INTERNAL (a bug, SPEC §7) to {type_name[:32]!r} "
                                    f"{header[:120]!r} from the {identity}: {reply.reason}")

    try:
        one()
        # first that the fuzzing happened at all: messages went out and every one was answered ...
        assert outcome["sent"] >= EXAMPLES // 2, outcome
        assert outcome["replies"] == outcome["sent"] > 0 and outcome["hangs"] == 0, outcome
        assert sum(outcome["codes"].values()) == outcome["replies"], outcome
        # ... then what the answers were: never INTERNAL, and the refusals a hostile peer must meet
        assert "INTERNAL" not in outcome["codes"], outcome
        assert {"MALFORMED", "FORBIDDEN"} <= set(outcome["codes"]), outcome
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
    outcome = {"sent": 0, "replies": 0, "hangs": 0, "codes": collections.Counter()}

    @FUZZ_SETTINGS
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
        frames = roles.control.recv_multipart()
        assert frames[0] == identity, f"an answer from {frames[0]!r}, not the user"
        reply = decode(frames[1:]).message
        outcome["replies"] += 1
        code = reply.code if reply.TYPE.value == "ERROR" else reply.TYPE.value
        outcome["codes"][code] += 1
        assert code != "INTERNAL", (f"the user answered INTERNAL (a bug, SPEC §7) to {type_name[:32]!r} "
                                    f"{header[:120]!r} on its control channel: {reply.reason}")

    one()
    assert outcome["sent"] >= EXAMPLES // 3, outcome
    assert outcome["replies"] == outcome["sent"] > 0 and outcome["hangs"] == 0, outcome
    assert sum(outcome["codes"].values()) == outcome["replies"] and "INTERNAL" not in outcome["codes"], outcome
    assert "MALFORMED" in outcome["codes"], outcome
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
