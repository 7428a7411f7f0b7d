"""Model-based tests of the three serving roles (evaluator, bank, agency), against live role processes.

A hypothesis `RuleBasedStateMachine` per role sends legal and illegal messages as the proven identities user,
bank, agency and runner (each with its own CURVE key): INPUTs from the right and the wrong party, RUN before the
inputs are complete, during a run and with a reused run id, GET_OUTPUT before and after a run, KEY_QUERY,
EVAL_KEY, CLIENT_KEY, CANDIDATE, the control action `encrypt`, PING, types a channel does not accept and
messages that do not decode. Its model is SPEC's text, written out here by hand and NOT imported from
protocol/states.py or protocol/authorization.py (the code under test):

- `MAY_SEND` is §5's table for the three serving channels;
- `SESSION_MODEL` / `KEY_MODEL` are §8's state tables with §5's ownership rules and §7's error codes:
  (state, message, sender) -> (reply type or error code, next state).

Invariants checked on every reply: it carries the request's `seq`; its type (or ERROR code) is exactly the
model's; it is never INTERNAL (a bug, SPEC §7); the role process is still alive (and bank and agency hold exactly
the key ids the model says are KEY_READY).

Per role, two tests drive the same machine: a fixed walk through its rules that must reach every row of the model
(so no row goes unchecked whatever hypothesis draws), then hypothesis' own sequences (derandomized, so CI is
repeatable; no shrinking, which takes minutes against live roles), which must reach most rows.

The roles are started once for the module: the evaluator with `--fhe simulate` (no key protocol there: RUN
needs no EVAL_KEY and KEY_QUERY answers present=true), bank and agency with `--fhe execute` (cheap: they get
hand-made binary secret keys, no key generation, and encrypt in milliseconds) so that SPEC §8's KEY_TABLE
(`encrypt` in NO_KEY is KEYS_NOT_GENERATED) is observable. Every hypothesis example uses session and key ids of
its own, so examples do not see each other's state although the roles keep it.

A session is RUNNING only for the moment its run takes (milliseconds in simulation): to observe RUNNING
deterministically, the RUN and the message probing the RUNNING state are sent while the evaluator process is
stopped (SIGSTOP), so that it receives both at once and answers both before it looks at finished runs.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import secrets
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test,
)

from credit_model.deployment import load_deployment
from credit_model.training.fhe_model import SimulatedPartyClient, ml_client
from credit_model.runtime.fhe_runtime import SECRET_KEY_HEADER
from protocol import PROTOCOL_VERSION
from protocol.curve import Curve
from protocol.errors import RemoteError
from protocol.messages import (
    Ack, Candidate, ClientKey, Command, Error, EvalKey, GetOutput, Input, KeyQuery, KeyStatus, Output, Ping, Pong,
    Ready, Result, Run, Shutdown, decode, encode,
)
from protocol.transport import make_socket
from simulation.processes import ProcessSet
from tests.pinned_deployment import TREE

PARTIES = ("user", "bank", "agency")
SENDERS = ("user", "bank", "agency", "runner")          # proven identities the tests speak as
EVERYONE = frozenset({"agency", "bank", "evaluator", "runner", "user"})

# --- the model: SPEC's text, written out by hand ------------------------------------------------------------------
# SPEC §5: on each serving channel, who may send which type; anything else is FORBIDDEN before any handler runs.
MAY_SEND = {
    "evaluator": {"PING": EVERYONE, "KEY_QUERY": {"user"}, "EVAL_KEY": {"user"}, "INPUT": {"agency", "bank", "user"},
                  "RUN": {"user"}, "GET_OUTPUT": {"user"}},
    "bank": {"PING": EVERYONE, "CLIENT_KEY": {"user"}},
    "agency": {"PING": EVERYONE, "CLIENT_KEY": {"user"}, "CANDIDATE": {"user"}},
}
BOUND_FIELD = {("evaluator", "INPUT"): "party"}    # §5: that header field must name the sender itself

# SPEC §8 (evaluator, per session) with §5's ownership rules and §7's codes. "ABSENT": no such session. "*": any
# sender §5 admits. Message names follow §8's events: an INPUT after which some party's base input is still
# missing, or one after which user, bank and agency are all present.
PARTIAL, COMPLETE = "INPUT, some party still missing", "INPUT completing user+bank+agency"
OTHER_KEY = "INPUT under another key id than the session's"
RUN_NEW, RUN_REUSED, RUN_VARIANT_MISSING = "RUN (new run id)", "RUN (run id already used)", "RUN (variant absent)"
GET_FINISHED, GET_OTHER = "GET_OUTPUT (run finished)", "GET_OUTPUT (run going or never started)"
SESSION_MODEL = {
    ("ABSENT", PARTIAL, "user"): ("ACK", "COLLECTING"),                 # §5: the user's INPUT opens the session
    ("ABSENT", PARTIAL, "bank"): ("UNKNOWN_SESSION", "ABSENT"),         # §5: bank and agency cannot open one
    ("ABSENT", PARTIAL, "agency"): ("UNKNOWN_SESSION", "ABSENT"),
    ("ABSENT", RUN_NEW, "*"): ("UNKNOWN_SESSION", "ABSENT"),
    ("ABSENT", GET_OTHER, "*"): ("UNKNOWN_SESSION", "ABSENT"),
    ("COLLECTING", PARTIAL, "*"): ("ACK", "COLLECTING"),
    ("COLLECTING", COMPLETE, "*"): ("ACK", "READY"),
    ("COLLECTING", OTHER_KEY, "*"): ("FORBIDDEN", "COLLECTING"),        # §5: only under the session's key id
    ("COLLECTING", RUN_NEW, "*"): ("MISSING_INPUTS", "COLLECTING"),     # §8: RUN in COLLECTING
    ("COLLECTING", GET_OTHER, "*"): ("OUTPUT_NOT_READY", "COLLECTING"),
    ("READY", COMPLETE, "*"): ("ACK", "READY"),                         # another variant, or a resend
    ("READY", OTHER_KEY, "*"): ("FORBIDDEN", "READY"),
    ("READY", RUN_NEW, "*"): ("ACK", "RUNNING"),
    ("READY", RUN_REUSED, "*"): ("ILLEGAL_STATE", "READY"),             # §8: a used run id, in any state
    ("READY", RUN_VARIANT_MISSING, "*"): ("MISSING_INPUTS", "READY"),   # §7: that input has not arrived
    ("READY", GET_FINISHED, "*"): ("OUTPUT", "READY"),                  # §8: GET_OUTPUT by run id, in any state
    ("READY", GET_OTHER, "*"): ("OUTPUT_NOT_READY", "READY"),
    ("RUNNING", COMPLETE, "*"): ("ILLEGAL_STATE", "RUNNING"),           # §8: INPUT or RUN in RUNNING
    ("RUNNING", RUN_NEW, "*"): ("ILLEGAL_STATE", "RUNNING"),
    ("RUNNING", RUN_REUSED, "*"): ("ILLEGAL_STATE", "RUNNING"),
    ("RUNNING", GET_OTHER, "*"): ("OUTPUT_NOT_READY", "RUNNING"),
    ("RUNNING", "run finished", "*"): ("OUTPUT", "DONE"),               # the long-polled GET_OUTPUT answers it
    ("DONE", COMPLETE, "*"): ("ACK", "READY"),
    ("DONE", OTHER_KEY, "*"): ("FORBIDDEN", "DONE"),
    ("DONE", RUN_NEW, "*"): ("ACK", "RUNNING"),
    ("DONE", RUN_REUSED, "*"): ("ILLEGAL_STATE", "DONE"),
    ("DONE", RUN_VARIANT_MISSING, "*"): ("MISSING_INPUTS", "DONE"),
    ("DONE", GET_FINISHED, "*"): ("OUTPUT", "DONE"),
    ("DONE", GET_OTHER, "*"): ("OUTPUT_NOT_READY", "DONE"),
}

# SPEC §8 (bank and agency, per key id) with §2's custody rule and §7's codes.
VALID_KEY, NOT_INPUT_KEYS = "CLIENT_KEY (the inputs' secret keys)", "CLIENT_KEY (anything else)"
KEY_MODEL = {
    ("NO_KEY", VALID_KEY): ("ACK", "KEY_READY"),
    ("KEY_READY", VALID_KEY): ("ACK", "KEY_READY"),
    ("NO_KEY", NOT_INPUT_KEYS): ("MALFORMED", "NO_KEY"),        # §2: any other id, or not an LWE secret key
    ("KEY_READY", NOT_INPUT_KEYS): ("MALFORMED", "KEY_READY"),
    ("NO_KEY", "encrypt"): ("KEYS_NOT_GENERATED", "NO_KEY"),    # §8
    ("KEY_READY", "encrypt"): ("INPUT to the evaluator", "KEY_READY"),
}

# SPEC §3: a refusal of a message that does not decode (VERSION_MISMATCH, UNKNOWN_TYPE, MALFORMED) carries the
# header's seq whenever the header can be read (it carried 0 until 8c27940; also pinned by
# test_refusals_before_decoding_echo_the_request_seq).
DECODE_REFUSALS_ECHO_SEQ = True

# A well-formed message of every type, for the channels that do not take it from some sender.
OTHER_TYPES = {m.TYPE.value: m for m in (
    Ack({}), Error("MALFORMED", "x"), KeyStatus("k", True), Pong("user"), Ready("user", 1, {}), Result("status", {}),
    Command("status", {}), Shutdown(),
    ClientKey("k", [0], (b"x",)), Candidate("s", "k", 0, "v"), KeyQuery("k", "0" * 64), EvalKey("k", b"x"),
    Input("s", "k", "user", "base", b"x"), Run("s", "r", {}), GetOutput("s", "r", 0), Output("s", "r", 0.0, {}, b"x"))}
# Frames that do not decode (SEQ stands for the request's seq): the code SPEC §7 gives, and whether the header's seq
# can be read.
UNDECODABLE = {
    "a wrong version tag": ("VERSION_MISMATCH", [b"FCS/0", b"PING", b'{"seq": SEQ}'], True),
    "an unknown type": ("UNKNOWN_TYPE", [PROTOCOL_VERSION, b"PLEASE", b'{"seq": SEQ}'], True),
    "a missing field": ("MALFORMED", [PROTOCOL_VERSION, b"CLIENT_KEY", b'{"seq": SEQ}'], True),
    "an unknown field": ("MALFORMED", [PROTOCOL_VERSION, b"PING", b'{"seq": SEQ, "hello": 1}'], True),
    "a header not JSON": ("MALFORMED", [PROTOCOL_VERSION, b"PING", b"{seq: SEQ"], False),
    "a header not an object": ("MALFORMED", [PROTOCOL_VERSION, b"PING", b"[SEQ]"], False),
    "too few frames": ("MALFORMED", [PROTOCOL_VERSION, b"PING"], False),
}
SEQ = st.integers(0, 2**53)
WAIT_S = 15.0


# How often each row of the models was consulted for a reply the live role gave: the walks must reach every row,
# the hypothesis examples most of them, so that no test passes by never reaching a state.
EXERCISED: collections.Counter = collections.Counter()


def session_reply(state: str, message: str, sender: str) -> tuple[str, str]:
    key = (state, message, sender) if (state, message, sender) in SESSION_MODEL else (state, message, "*")
    assert key in SESSION_MODEL, f"the model has no row for {(state, message, sender)}"
    EXERCISED[("evaluator", key)] += 1
    return SESSION_MODEL[key]


def key_reply(role: str, state: str, message: str) -> tuple[str, str]:
    EXERCISED[(role, (state, message))] += 1
    return KEY_MODEL[(state, message)]


def authorized(channel: str, type_name: str, sender: str) -> bool:
    return sender in MAY_SEND[channel].get(type_name, ())


def kind(message) -> str:
    return message.code if isinstance(message, Error) else message.TYPE.value


# --- live roles --------------------------------------------------------------------------------------------------
def input_secret_key(spec, key_id: int) -> bytes:
    """A serialized binary LWE secret key of that key id's dimension (SPEC §9's layout), made by hand."""
    dimension = spec.secret_key_params[key_id].dimension()
    coefficients = np.random.default_rng(key_id).integers(0, 2, dimension).astype("<u8")
    return SECRET_KEY_HEADER + dimension.to_bytes(8, "little") + coefficients.tobytes()


@dataclass
class Env:
    procs: ProcessSet
    blobs: list[dict[str, bytes]]          # per applicant: party -> simulated ciphertext
    bins: tuple[str, ...]
    client_keys: dict[str, tuple[list, tuple]]
    ctx: zmq.Context = field(default_factory=zmq.Context)
    counter: itertools.count = field(default_factory=itertools.count)

    def connect(self, who: str, target: str) -> zmq.Socket:
        sock = make_socket(self.ctx, zmq.DEALER, f"{who}:{next(self.counter)}")
        Curve.load(who, self.procs.keys_dir).client(target)(sock)
        sock.connect(self.procs.endpoints[target])
        return sock

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}-{secrets.token_hex(3)}"

    def alive(self, role: str) -> None:
        proc = self.procs.procs[role]
        assert proc.exit_code() is None, f"the {role} exited ({proc.exit_code()}):\n{proc.log_tail(30)}"

    @contextmanager
    def frozen(self, role: str):
        """Hold a role process (this module started it) still while messages reach it: it then receives them
        together and answers them in one batch."""
        pid = self.procs.procs[role].popen.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
            time.sleep(0.03)  # what was sent is in the stopped process's socket buffer by now
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def env(tmp_path_factory, shipped):
    deployment = load_deployment(TREE)
    simulator = SimulatedPartyClient(ml_client(deployment))
    applicants = [shipped["approved"].applicants[0].data, shipped["denied_bin_found"].applicants[0].data]
    blobs = [{p: simulator.quantize_encrypt_serialize_party(p, deployment.preprocessor(p).transform_records([a[p]]))
              for p in PARTIES} for a in applicants]
    assert len({b["agency"] for b in blobs}) == 2, "the two applicants' ciphertexts must differ"
    spec = deployment.spec()
    inputs = list(spec.input_key_ids)
    output = spec.output_key_ids[0]
    client_keys = {
        "valid": (inputs, tuple(input_secret_key(spec, k) for k in inputs)),
        "output key": ([output], (input_secret_key(spec, output),)),            # §2: never an output key
        "garbage": (inputs, tuple(b"\x01" * 99 for _ in inputs)),
        "other dimension": (inputs, tuple(input_secret_key(spec, output) for _ in inputs)),
        "an input key twice": (inputs * 2, tuple(input_secret_key(spec, k) for k in inputs * 2)),
        "no key": ([], ()),
    }
    procs = ProcessSet(tmp_path_factory.mktemp("machines"), "ipc", "simulate", TREE,
                       {"bank": ["--fhe", "execute"], "agency": ["--fhe", "execute"]})
    try:
        procs.start(180, ("evaluator", "bank", "agency"))
        environment = Env(procs, blobs, tuple(deployment.schema.bins), client_keys)
        yield environment
        environment.ctx.destroy(linger=0)
    finally:
        procs.stop()


class LiveRole(RuleBasedStateMachine):
    """Sockets to one serving role as every identity, and the checked request/reply step."""

    TARGET = ""

    def __init__(self, environment: Env):
        super().__init__()
        self.env = environment
        self.socks = {who: environment.connect(who, self.TARGET) for who in SENDERS}

    def teardown(self):
        for sock in self.socks.values():
            sock.close(linger=0)

    def receive(self, sock: zmq.Socket, seq: int | None, what: str):
        assert sock.poll(int(WAIT_S * 1000), zmq.POLLIN), f"the {self.TARGET} did not answer {what} in {WAIT_S} s"
        packet = decode(sock.recv_multipart())
        reply = packet.message
        assert not (isinstance(reply, Error) and reply.code == "INTERNAL"), f"{what} -> INTERNAL: {reply.reason}"
        if seq is not None:
            assert packet.seq == seq, f"{what}: the reply ({kind(reply)}) carries seq {packet.seq}, not {seq}"
        return reply

    def ask(self, who: str, message, seq: int, expected: str, what: str = ""):
        sock = self.socks[who]
        sock.send_multipart(encode(message, seq))
        reply = self.receive(sock, seq, what or f"{message.TYPE.value} from {who}")
        assert kind(reply) == expected, (f"{what or message.TYPE.value} from {who}: expected {expected}, got "
                                         f"{kind(reply)} {getattr(reply, 'reason', '')}")
        return reply

    @invariant()
    def the_role_lives(self):
        self.env.alive(self.TARGET)

    # --- what every serving role answers the same way -----------------------------------------------------------
    @rule(who=st.sampled_from(SENDERS), seq=SEQ, case=st.sampled_from(["PING"] * 4 + list(OTHER_TYPES) * 2 +
                                                                     list(UNDECODABLE)))
    def a_message_every_role_answers_alike(self, who, seq, case):
        """PING -> PONG naming the role, from anyone (§5); a type the channel does not take from this sender ->
        FORBIDDEN before any handler runs, whatever it names (§5); frames that do not decode -> the first four
        codes of §7 by what is wrong with them."""
        if case == "PING":
            assert self.ask(who, Ping(), seq, "PONG").role == self.TARGET
        elif case in OTHER_TYPES:
            if not authorized(self.TARGET, case, who):   # (what a sender may send, its own rules test)
                self.ask(who, OTHER_TYPES[case], seq, "FORBIDDEN", f"{case} from the {who}")
        else:
            expected, frames, readable = UNDECODABLE[case]
            frames = [f.replace(b"SEQ", str(seq).encode()) for f in frames]
            sock = self.socks[who]
            sock.send_multipart(frames)
            reply = self.receive(sock, seq if readable and DECODE_REFUSALS_ECHO_SEQ else None, f"{case} from {who}")
            assert kind(reply) == expected, f"{case}: expected {expected}, got {kind(reply)} " \
                                            f"{getattr(reply, 'reason', '')}"


# --- the evaluator ------------------------------------------------------------------------------------------------
@dataclass
class SessionModel:
    key: str
    state: str = "COLLECTING"
    inputs: dict = field(default_factory=dict)     # (party, variant) -> ciphertext
    outputs: dict = field(default_factory=dict)    # run id -> {party: sha256} of the inputs it used
    runs: list = field(default_factory=list)       # every run id the session accepted

    def missing_after(self, party: str | None = None, variant: str | None = None) -> set[str]:
        present = {p for (p, v) in self.inputs if v == "base"} | ({party} if variant == "base" else set())
        return set(PARTIES) - present


class EvaluatorMachine(LiveRole):
    """Rules aim at a session in a given state (each example starts with one in COLLECTING, READY, DONE and READY
    after a run), so that every row of SESSION_MODEL is reached; each rule may add a twist that SPEC refuses."""

    TARGET = "evaluator"

    def __init__(self, environment: Env):
        super().__init__(environment)
        self.sessions: dict[str, SessionModel] = {}
        self.keys = [environment.fresh("key"), environment.fresh("key")]

    def pick(self, state: str, ran: bool = False) -> str | None:
        """The latest session in `state` (one that has run, if asked and there is one), else the latest session;
        None for ABSENT (a session id never opened)."""
        if state == "ABSENT":
            return None
        fitting = [sid for sid, s in self.sessions.items() if s.state == state]
        ran_too = [sid for sid in fitting if self.sessions[sid].outputs]
        return (ran_too if ran and ran_too else fitting or list(self.sessions))[-1]

    # --- INPUT --------------------------------------------------------------------------------------------------
    def send_input(self, who: str, sid: str, party: str, variant: str, blob: bytes, key: str | None = None,
                   seq: int = 1):
        """One INPUT, its reply predicted from §5 and the session table, and the model moved on."""
        session = self.sessions.get(sid)
        key = key or (session.key if session else self.keys[0])
        message = Input(sid, key, party, variant, blob)
        bound = BOUND_FIELD[("evaluator", "INPUT")]
        if not authorized("evaluator", "INPUT", who) or getattr(message, bound) != who:   # §5
            self.ask(who, message, seq, "FORBIDDEN", f"INPUT for the {party} from the {who}")
            return
        state = session.state if session else "ABSENT"
        if session is not None and key != session.key:
            event = OTHER_KEY
        else:
            event = PARTIAL if (session or SessionModel(key)).missing_after(party, variant) else COMPLETE
        expected, next_state = session_reply(state, event, who)
        reply = self.ask(who, message, seq, expected, f"{event} ({state}, {party} {variant})")
        if expected != "ACK":
            return
        if session is None:
            session = self.sessions[sid] = SessionModel(key)
        session.inputs[(party, variant)] = blob
        session.state = next_state
        assert reply.detail.get("session_id") == sid and reply.detail.get("state") == next_state, reply.detail
        assert set(reply.detail.get("missing", ())) == session.missing_after(), reply.detail

    def complete(self, sid: str, applicant: int, seq: int) -> None:
        for party in PARTIES:
            if party in self.sessions.get(sid, SessionModel("")).missing_after() or sid not in self.sessions:
                self.send_input(party, sid, party, "base", self.env.blobs[applicant][party], seq=seq)

    @initialize(applicant=st.integers(0, 1), seq=SEQ)
    def a_session_collecting(self, applicant, seq):
        self.send_input("user", self.env.fresh("s"), "user", "base", self.env.blobs[applicant]["user"], seq=seq)

    @initialize(applicant=st.integers(0, 1), seq=SEQ)
    def a_session_ready(self, applicant, seq):
        self.complete(self.env.fresh("s"), applicant, seq)

    @initialize(applicant=st.integers(0, 1), seq=SEQ, probe=st.sampled_from([None, "INPUT", "RUN", "RUN again",
                                                                             "GET_OUTPUT"]))
    def a_session_that_ran(self, applicant, seq, probe):
        """COLLECTING -> READY -> RUNNING -> DONE, each step checked."""
        sid = self.env.fresh("s")
        self.complete(sid, applicant, seq)
        self.run_and_probe(sid, self.sessions[sid], Run(sid, self.env.fresh("r"), {}), seq, probe)

    @initialize(applicant=st.integers(0, 1), seq=SEQ)
    def a_session_ready_again_after_a_run(self, applicant, seq):
        sid = self.env.fresh("s")
        self.complete(sid, applicant, seq)
        self.run_and_probe(sid, self.sessions[sid], Run(sid, self.env.fresh("r"), {}), seq, None)
        self.send_input("bank", sid, "bank", "base", self.env.blobs[1 - applicant]["bank"], seq=seq)

    @rule(state=st.sampled_from(["ABSENT", "COLLECTING", "READY", "DONE"]), party=st.sampled_from(PARTIES),
          variant=st.sampled_from(["base", "base", "v1", "v2"]), applicant=st.integers(0, 1), seq=SEQ,
          twist=st.sampled_from([None, None, None, "another key id", "another identity", "no ciphertext",
                                 "unsafe session id"]))
    def input(self, state, party, variant, applicant, seq, twist):
        sid = self.pick(state) or self.env.fresh("s")
        session = self.sessions.get(sid)
        blob = self.env.blobs[applicant][party]
        if twist is None:
            self.send_input(party, sid, party, variant, blob, seq=seq)
        elif twist == "another key id":  # §5 (SPEC names no answer to the user's own INPUT under another key id)
            who = "bank" if party == "user" else party
            self.send_input(who, sid, who, variant, self.env.blobs[applicant][who], self.keys[1], seq)
        elif twist == "another identity":
            who = SENDERS[(SENDERS.index(party) + 1 + applicant) % len(SENDERS)]
            self.send_input(who, sid, party, variant, blob, seq=seq)
        elif twist == "no ciphertext":
            # §7 BAD_CIPHERTEXT, only where the same INPUT with a real ciphertext would be acknowledged
            if session is None and party != "user":
                return
            key = session.key if session else self.keys[0]
            self.ask(party, Input(sid, key, party, variant, b"not a ciphertext"[:applicant * 16]), seq,
                     "BAD_CIPHERTEXT", f"INPUT without a ciphertext ({state})")
        else:  # §4: ids match [A-Za-z0-9][A-Za-z0-9._-]{0,63} as a whole, else MALFORMED
            unsafe = ["../etc", "a" * 65, "s-1\n", "", "-lead", "sp ace"][(len(self.sessions) + applicant) % 6]
            self.ask("user", Input(unsafe, self.keys[0], "user", "base", self.env.blobs[0]["user"]), seq,
                     "MALFORMED", f"INPUT with session id {unsafe!r}")

    @rule(applicant=st.integers(0, 1), seq=SEQ, fresh=st.booleans())
    def the_missing_parties_send_their_inputs(self, applicant, seq, fresh):
        self.complete(self.env.fresh("s") if fresh else self.pick("COLLECTING"), applicant, seq)

    # --- RUN ----------------------------------------------------------------------------------------------------
    @rule(state=st.sampled_from(["ABSENT", "COLLECTING", "READY", "DONE"]), seq=SEQ,
          twist=st.sampled_from([None, None, "run id used", "run id used", "variant absent", "variant present",
                                 "another sender"]),
          probe=st.sampled_from([None, "INPUT", "RUN", "RUN again", "GET_OUTPUT"]))
    def run(self, state, seq, twist, probe):
        sid = self.pick(state, ran=twist == "run id used") or self.env.fresh("s")
        session = self.sessions.get(sid)
        run_id = session.runs[-1] if twist == "run id used" and session and session.runs else self.env.fresh("r")
        variants = {}
        if twist in ("variant absent", "variant present") and session is not None:
            present = [v for (p, v) in session.inputs if p == "agency" and v != "base"]
            variants = {"agency": present[-1] if twist == "variant present" and present else self.env.fresh("v")}
        message = Run(sid, run_id, variants)
        who = SENDERS[1 + seq % 3] if twist == "another sender" else "user"
        if not authorized("evaluator", "RUN", who):
            self.ask(who, message, seq, "FORBIDDEN", f"RUN from the {who}")
            return
        if session is None:
            self.ask(who, message, seq, session_reply("ABSENT", RUN_NEW, who)[0], "RUN of a session never opened")
            return
        if run_id in session.runs:
            event = RUN_REUSED
        elif any((p, v) not in session.inputs for p, v in variants.items()) and session.state != "COLLECTING":
            event = RUN_VARIANT_MISSING
        else:
            event = RUN_NEW
        expected, next_state = session_reply(session.state, event, who)
        if expected != "ACK":
            reply = self.ask(who, message, seq, expected, f"{event} in {session.state}")
            if expected == "MISSING_INPUTS" and session.state == "COLLECTING":  # §7: it names them
                assert all(p in reply.reason for p in session.missing_after()), reply.reason
            return
        assert next_state == "RUNNING"
        self.run_and_probe(sid, session, message, seq, probe)

    def run_and_probe(self, sid, session, message, seq, probe):
        """RUN (-> RUNNING) and a message probing RUNNING in the same breath, then the long-polled OUTPUT
        (-> DONE)."""
        sock = self.socks["user"]
        probes = {
            "INPUT": (Input(sid, session.key, "user", "base", session.inputs[("user", "base")]), COMPLETE),
            "RUN": (Run(sid, self.env.fresh("r"), {}), RUN_NEW),
            "RUN again": (Run(sid, message.run_id, {}), RUN_REUSED),
            "GET_OUTPUT": (GetOutput(sid, message.run_id, 0), GET_OTHER),
        }
        with self.env.frozen("evaluator"):
            sock.send_multipart(encode(message, seq))
            if probe is not None:
                sock.send_multipart(encode(probes[probe][0], seq + 1))
        reply = self.receive(sock, seq, "RUN")
        assert kind(reply) == "ACK", f"RUN in {session.state}: expected ACK, got {kind(reply)} {reply}"
        assert reply.detail == {"session_id": sid, "run_id": message.run_id}, reply.detail
        session.state = "RUNNING"
        session.runs.append(message.run_id)
        used = {p: hashlib.sha256(session.inputs[(p, message.variants.get(p, "base"))]).hexdigest() for p in PARTIES}
        if probe is not None:
            expected, _ = session_reply("RUNNING", probes[probe][1], "user")
            got = self.receive(sock, seq + 1, f"{probe} while RUNNING")
            assert kind(got) == expected, f"{probe} in RUNNING: expected {expected}, got {kind(got)} {got}"
        expected, session.state = session_reply("RUNNING", "run finished", "user")
        output = self.ask("user", GetOutput(sid, message.run_id, int(WAIT_S * 1000)), seq + 2, expected,
                          "GET_OUTPUT (long poll) of the run")
        assert (output.session_id, output.run_id, output.inputs) == (sid, message.run_id, used)
        assert len(output.ciphertext) > 0
        session.outputs[message.run_id] = used

    # --- GET_OUTPUT ---------------------------------------------------------------------------------------------
    @rule(state=st.sampled_from(["ABSENT", "COLLECTING", "READY", "DONE"]), seq=SEQ,
          twist=st.sampled_from(["a finished run", "a finished run", "a run never started", "another sender"]))
    def get_output(self, state, seq, twist):
        sid = self.pick(state, ran=twist != "a run never started") or self.env.fresh("s")
        session = self.sessions.get(sid)
        done = list(session.outputs) if session else []
        run_id = done[-1] if twist != "a run never started" and done else self.env.fresh("r")
        message = GetOutput(sid, run_id, 0)
        who = SENDERS[1 + seq % 3] if twist == "another sender" else "user"
        if not authorized("evaluator", "GET_OUTPUT", who):
            self.ask(who, message, seq, "FORBIDDEN", f"GET_OUTPUT from the {who}")
            return
        state = session.state if session else "ABSENT"
        event = GET_FINISHED if session and run_id in session.outputs else GET_OTHER
        reply = self.ask(who, message, seq, session_reply(state, event, who)[0], f"{event} in {state}")
        if isinstance(reply, Output):
            assert (reply.session_id, reply.run_id, reply.inputs) == (sid, run_id, session.outputs[run_id])

    # --- keys ---------------------------------------------------------------------------------------------------
    @rule(who=st.sampled_from(SENDERS), seq=SEQ, what=st.sampled_from(["KEY_QUERY", "EVAL_KEY", "EVAL_KEY empty"]))
    def keys_in_simulation(self, who, seq, what):
        """KEY_QUERY: present (simulation has no key protocol); §9: an EVAL_KEY of any other size than the
        circuit's is BAD_CIPHERTEXT."""
        if what == "KEY_QUERY":
            message = KeyQuery(self.keys[0], "0" * 64)
        else:
            message = EvalKey(self.env.fresh("key"), b"" if what == "EVAL_KEY empty" else b"\0" * 1000)
        if not authorized("evaluator", message.TYPE.value, who):
            self.ask(who, message, seq, "FORBIDDEN", f"{what} from the {who}")
        elif what == "KEY_QUERY":
            reply = self.ask(who, message, seq, "KEY_STATUS")
            assert reply.key_id == self.keys[0] and reply.present is True
        else:
            self.ask(who, message, seq, "BAD_CIPHERTEXT", f"{what} of the wrong size")


# --- bank and agency ----------------------------------------------------------------------------------------------
class PartyMachine(LiveRole):
    """SPEC §8's KEY_TABLE per key id, §2's custody rule for CLIENT_KEY, §5's table, and (agency) CANDIDATE."""

    def __init__(self, environment: Env):
        super().__init__(environment)
        self.keys = {environment.fresh("pk"): "NO_KEY" for _ in range(2)}
        self.evaluator = environment.connect("user", "evaluator")
        self.opened: dict[str, str] = {}        # session id -> key id, opened at the evaluator by the user
        self.records: dict[str, tuple[str, str]] = {}  # session id -> (key id, own Years_employed bin)

    def teardown(self):
        self.evaluator.close(linger=0)
        super().teardown()

    def key(self, index: int) -> str:
        return list(self.keys)[index % len(self.keys)]

    @invariant()
    def the_role_holds_exactly_the_keys_it_was_given(self):
        held = set(self.env.procs.command(self.TARGET, "status", {}, WAIT_S)["keys"])
        for key, state in self.keys.items():
            assert (key in held) == (state == "KEY_READY"), f"{key} is {state} in the model; the role holds {held}"

    def send_client_key(self, who: str, key: str, blobs: str, seq: int):
        ids, secret_keys = self.env.client_keys[blobs]
        message = ClientKey(key, ids, secret_keys)
        if not authorized(self.TARGET, "CLIENT_KEY", who):
            self.ask(who, message, seq, "FORBIDDEN", f"CLIENT_KEY from the {who}")
            return
        event = VALID_KEY if blobs == "valid" else NOT_INPUT_KEYS
        expected, self.keys[key] = key_reply(self.TARGET, self.keys[key], event)
        reply = self.ask(who, message, seq, expected, f"CLIENT_KEY ({blobs})")
        if isinstance(reply, Ack):
            assert reply.detail.get("key_id") == key and isinstance(reply.detail.get("key_setup_s"), (int, float))

    def open_session(self, key: str, seq: int) -> str:
        """The user opens a session at the evaluator (where the role's INPUTs go)."""
        sid = self.env.fresh("ps")
        self.evaluator.send_multipart(encode(Input(sid, key, "user", "base", self.env.blobs[0]["user"]), seq))
        assert self.evaluator.poll(int(WAIT_S * 1000)), "the evaluator did not answer"
        packet = decode(self.evaluator.recv_multipart())
        assert packet.seq == seq and kind(packet.message) == "ACK", packet
        self.opened[sid] = key
        return sid

    @initialize(seq=SEQ, bin_index=st.integers(0, 5), again=st.booleans())
    def a_key_a_session_and_an_input(self, seq, bin_index, again):
        key = self.key(0)
        for _ in range(1 + again):
            self.send_client_key("user", key, "valid", seq)
        self.encrypt_for(self.open_session(key, seq), key, bin_index, True)

    @rule(index=st.integers(0, 1), seq=SEQ, blobs=st.sampled_from(
        ["valid", "valid", "valid", "output key", "garbage", "other dimension", "an input key twice", "no key"]))
    def client_key(self, index, seq, blobs):
        self.send_client_key("user", self.key(index), blobs, seq)

    @rule(who=st.sampled_from([s for s in SENDERS if s != "user"]), seq=SEQ)
    def client_key_from_another_party(self, who, seq):
        self.send_client_key(who, self.key(0), "valid", seq)

    @rule(index=st.integers(0, 1), seq=SEQ)
    def the_user_opens_a_session_at_the_evaluator(self, index, seq):
        self.open_session(self.key(index), seq)

    @rule(session=st.integers(0, 15), other_key=st.sampled_from([False, False, True]), bin_index=st.integers(0, 5),
          valid=st.sampled_from([True, True, True, False]))
    def encrypt(self, session, other_key, bin_index, valid):
        sid = list(self.opened)[session % len(self.opened)]
        key = next(k for k in self.keys if k != self.opened[sid]) if other_key else self.opened[sid]
        self.encrypt_for(sid, key, bin_index, valid)

    @rule(index=st.integers(0, 1), bin_index=st.integers(0, 5))
    def encrypt_for_a_session_never_opened(self, index, bin_index):
        self.encrypt_for(self.env.fresh("ps"), self.key(index), bin_index, True)

    def encrypt_for(self, sid: str, key: str, bin_index: int, valid: bool):
        """The runner's `encrypt` action: the role encrypts its own features and sends INPUT to the evaluator
        (for an open session or one never opened; under the session's key id or another)."""
        bin_name = self.env.bins[bin_index % len(self.env.bins)]
        features = {"bank": {"Account_age": 7}, "agency": {"Years_employed": bin_name, "Employed": True}}[self.TARGET]
        if not valid and self.keys[key] == "NO_KEY":
            return  # SPEC orders no two refusals: invalid features are only sent with the key at hand
        expected, _ = key_reply(self.TARGET, self.keys[key], "encrypt")
        if not valid:
            features = {"bank": {"Account_age": "old"}, "agency": {"Years_employed": "99+", "Employed": True}}[
                self.TARGET]
            expected = "INVALID_INPUT"
        elif expected != "KEYS_NOT_GENERATED":   # the evaluator's answer, relayed (§7: prefixed with its role)
            expected = ("UNKNOWN_SESSION" if sid not in self.opened else
                        "FORBIDDEN" if self.opened[sid] != key else "ACK")
        params = {"session_id": sid, "key_id": key, "features": features}
        try:
            result = self.env.procs.command(self.TARGET, "encrypt", params, WAIT_S)
            got = "ACK"
        except RemoteError as exc:
            assert exc.code.value != "INTERNAL", exc.reason
            got, result = exc.code.value, exc.reason
            if expected in ("UNKNOWN_SESSION", "FORBIDDEN"):
                assert exc.reason.startswith("evaluator: "), exc.reason
        assert got == expected, f"encrypt ({self.keys[key]}, session {'open' if sid in self.opened else 'unknown'}" \
                                f"): expected {expected}, got {got} {result}"
        if got == "ACK":
            assert result["evaluator_state"] == "COLLECTING" and len(result["sha256"]) == 64, result
            self.records[sid] = (key, bin_name)


class BankMachine(PartyMachine):
    TARGET = "bank"


class AgencyMachine(PartyMachine):
    TARGET = "agency"

    @rule(who=st.sampled_from([s for s in SENDERS if s != "user"]), seq=SEQ)
    def candidate_from_another_party(self, who, seq):
        self.candidate(who, 0, False, 0, False, seq)

    @rule(seq=SEQ)
    def candidate_for_a_session_never_encrypted(self, seq):
        self.candidate("user", None, False, 0, False, seq)

    @rule(session=st.integers(0, 15), other_key=st.sampled_from([False, False, True]),
          offset=st.integers(-1, 6), encrypt=st.booleans(), seq=SEQ)
    def candidate_from_the_user(self, session, other_key, offset, encrypt, seq):
        self.candidate("user", session, other_key, offset, encrypt, seq)

    def candidate(self, who, session, other_key, offset, encrypt, seq):
        """SPEC §4, §6: the bin `offset` above the applicant's own, for a session the agency encrypted."""
        sid = list(self.records)[session % len(self.records)] if session is not None and self.records \
            else self.env.fresh("ps")
        key, own_bin = self.records.get(sid, (self.key(0), None))
        if other_key:
            key = next(k for k in self.keys if k != key)
        message = Candidate(sid, key, offset, self.env.fresh("v"), encrypt)
        if not authorized("agency", "CANDIDATE", who):
            self.ask(who, message, seq, "FORBIDDEN", f"CANDIDATE from the {who}")
            return
        if own_bin is None:
            self.ask(who, message, seq, "UNKNOWN_SESSION", "CANDIDATE for a session the agency holds no record of")
            return
        if other_key:
            self.ask(who, message, seq, "FORBIDDEN", "CANDIDATE under another key id")   # §5
            return
        bins, own = self.env.bins, self.env.bins.index(own_bin)
        if offset < 0 or own + offset >= len(bins):  # not a bin above its own: SPEC names no code, an ERROR
            sock = self.socks[who]
            sock.send_multipart(encode(message, seq))
            assert isinstance(self.receive(sock, seq, f"CANDIDATE offset {offset} from bin {own}"), Error)
            return
        reply = self.ask(who, message, seq, "ACK", f"CANDIDATE offset {offset} encrypt {encrypt}")
        assert (reply.detail["bin"], reply.detail["own_index"], reply.detail["bins_above"]) == \
            (bins[own + offset], own, len(bins) - 1 - own), reply.detail
        assert ("sha256" in reply.detail) is encrypt, reply.detail
        if encrypt:  # the agency sent that INPUT to the evaluator, which still misses the bank's
            assert reply.detail["evaluator_state"] == "COLLECTING", reply.detail


# --- the tests ----------------------------------------------------------------------------------------------------
# No shrinking: against live roles it takes minutes; a failure shows the example's steps as drawn (at most 20).
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None,
                phases=(Phase.explicit, Phase.reuse, Phase.generate))
ALIKE = [("a_message_every_role_answers_alike", dict(who=who, case=case)) for who in SENDERS
         for case in ["PING", *OTHER_TYPES, *UNDECODABLE]]
# A fixed walk through the machines' own rules that reaches every row of the model (the state each step finds is
# noted), so that each row is checked against the live role at least once whatever hypothesis draws.
EVALUATOR_TOUR = [
    ("input", dict(state="ABSENT", party="user")),                         # a new session N: COLLECTING
    ("input", dict(state="ABSENT", party="bank")), ("input", dict(state="ABSENT", party="agency")),
    ("input", dict(state="COLLECTING", party="bank", twist="another key id")),
    ("input", dict(state="COLLECTING", party="bank")),
    ("get_output", dict(state="COLLECTING", twist="a run never started")),
    ("run", dict(state="COLLECTING")),
    ("input", dict(state="COLLECTING", party="agency")),                   # N: READY
    ("input", dict(state="READY", party="bank", twist="another key id")),
    ("input", dict(state="READY", party="agency", variant="v1")),
    ("run", dict(state="READY", twist="run id used")),                     # the session ready again after a run
    ("get_output", dict(state="READY", twist="a finished run")),
    ("get_output", dict(state="READY", twist="a run never started")),
    ("run", dict(state="READY", twist="variant absent")),
    ("run", dict(state="READY", probe="INPUT")),                           # N: RUNNING, DONE
    ("run", dict(state="DONE", probe="RUN")),
    ("run", dict(state="DONE", twist="run id used")),
    ("run", dict(state="DONE", twist="variant present", probe="RUN again")),
    ("run", dict(state="DONE", twist="variant absent")),
    ("run", dict(state="DONE", probe="GET_OUTPUT")),
    ("get_output", dict(state="DONE", twist="a finished run")),
    ("get_output", dict(state="DONE", twist="a run never started")),
    ("input", dict(state="DONE", party="agency", twist="another key id")),
    ("input", dict(state="DONE", party="user")),                           # N: READY
    ("run", dict(state="ABSENT")), ("get_output", dict(state="ABSENT", twist="a finished run")),
    ("input", dict(state="READY", party="user", twist="no ciphertext", applicant=1)),
    ("input", dict(state="ABSENT", party="user", twist="unsafe session id")),
    *[("input", dict(state=state, party=party, twist="another identity", applicant=applicant))
      for state in ("ABSENT", "READY") for party in PARTIES for applicant in (0, 1)],   # §5: the bound field
    ("run", dict(state="READY", twist="another sender", seq=2)),
    ("get_output", dict(state="DONE", twist="another sender", seq=3)),
    ("the_missing_parties_send_their_inputs", dict(fresh=True)),
    *[("keys_in_simulation", dict(who=who, what=what)) for who in SENDERS
      for what in ("KEY_QUERY", "EVAL_KEY", "EVAL_KEY empty")],
    *ALIKE,
]
PARTY_TOUR = [                                                             # key 0: KEY_READY; key 1: NO_KEY
    ("client_key", dict(index=1, blobs="garbage")),
    ("encrypt_for_a_session_never_opened", dict(index=1)),
    ("the_user_opens_a_session_at_the_evaluator", dict(index=1)),
    ("encrypt", dict(session=1)),                                          # KEYS_NOT_GENERATED
    *[("client_key", dict(index=1, blobs=blobs)) for blobs in ("valid", "valid", "output key", "other dimension",
                                                               "an input key twice", "no key")],
    ("encrypt", dict(session=1)), ("encrypt", dict(session=1, other_key=True)),
    ("encrypt", dict(session=0, valid=False)), ("encrypt_for_a_session_never_opened", dict(index=0)),
    *[("client_key_from_another_party", dict(who=who)) for who in SENDERS[1:]],
    *ALIKE,
]
AGENCY_TOUR = PARTY_TOUR + [
    ("candidate_for_a_session_never_encrypted", {}),
    *[("candidate_from_another_party", dict(who=who)) for who in SENDERS[1:]],
    *[("candidate_from_the_user", dict(session=0, offset=offset, encrypt=encrypt)) for offset in (-1, 0, 1, 6)
      for encrypt in (False, True)],
    ("candidate_from_the_user", dict(session=1, other_key=True)),
]


def tour(machine: LiveRole, steps: list) -> None:
    """Run the machine's initializers, then the steps (each rule with its arguments, defaults for the others),
    checking the invariants after each, as hypothesis would."""
    rules = {r.function.__name__: r for r in machine.setup_state().rules}
    try:
        for init in machine.setup_state().initializers:
            init.function(machine, **{k: DEFAULTS.get(k, 0) for k in init.arguments})
        for name, given in steps:
            unknown = set(given) - set(rules[name].arguments)
            assert not unknown, f"the rule {name} takes no {unknown}"
            arguments = {k: given.get(k, DEFAULTS.get(k, 0)) for k in rules[name].arguments}
            rules[name].function(machine, **arguments)
            for check in machine.setup_state().invariants:
                check.function(machine)
    finally:
        machine.teardown()


DEFAULTS = dict(seq=2**53, applicant=0, variant="base", twist=None, probe=None, session=0, other_key=False,
                bin_index=2, valid=True, index=0, again=True, offset=0, encrypt=False, fresh=False)


def assert_every_row(table: dict, role: str, since: collections.Counter) -> None:
    missed = [row for row in table if EXERCISED[(role, row)] == since[(role, row)]]
    assert not missed, f"rows of the model the {role} was never asked about: {missed}"


def test_a_walk_through_every_row_of_specs_session_table(env):
    before = collections.Counter(EXERCISED)
    tour(EvaluatorMachine(env), EVALUATOR_TOUR)
    assert_every_row(SESSION_MODEL, "evaluator", before)


@pytest.mark.parametrize("machine, steps", [(BankMachine, PARTY_TOUR), (AgencyMachine, AGENCY_TOUR)],
                         ids=["bank", "agency"])
def test_a_walk_through_every_row_of_specs_key_table(env, machine, steps):
    before = collections.Counter(EXERCISED)
    tour(machine(env), steps)
    assert_every_row(KEY_MODEL, machine.TARGET, before)


def test_the_evaluator_follows_specs_session_table(env):
    before = collections.Counter(EXERCISED)
    run_state_machine_as_test(lambda: EvaluatorMachine(env),
                              settings=settings(max_examples=60, stateful_step_count=20, **SETTINGS))
    reached = {row for row in SESSION_MODEL if EXERCISED[("evaluator", row)] > before[("evaluator", row)]}
    assert len(reached) >= len(SESSION_MODEL) * 2 // 3, f"the examples reached only {len(reached)} rows"


@pytest.mark.parametrize("machine", [BankMachine, AgencyMachine], ids=["bank", "agency"])
def test_bank_and_agency_follow_specs_key_table(env, machine):
    before = collections.Counter(EXERCISED)
    run_state_machine_as_test(lambda: machine(env),
                              settings=settings(max_examples=40, stateful_step_count=15, **SETTINGS))
    reached = {row for row in KEY_MODEL if EXERCISED[(machine.TARGET, row)] > before[(machine.TARGET, row)]}
    assert len(reached) >= len(KEY_MODEL) * 2 // 3, f"the examples reached only {len(reached)} rows"


@pytest.mark.parametrize("target", ["evaluator", "bank", "agency"])
def test_refusals_before_decoding_echo_the_request_seq(env, target):
    """SPEC §3: a reply carries the seq of the request it answers, read from the header when it can be."""
    sock = env.connect("user", target)
    try:
        for frames in ([b"FCS/0", b"PING", b'{"seq": 4242}'], [PROTOCOL_VERSION, b"PLEASE", b'{"seq": 4242}'],
                       [PROTOCOL_VERSION, b"PING", b'{"seq": 4242, "hello": 1}']):
            sock.send_multipart(frames)
            assert sock.poll(int(WAIT_S * 1000))
            packet = decode(sock.recv_multipart())
            assert packet.seq == 4242, f"{frames[:2]} -> {kind(packet.message)} with seq {packet.seq}"
    finally:
        sock.close(linger=0)
