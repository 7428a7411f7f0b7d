"""Protocol conformance checks against any implementation of a serving role (evaluator, bank, agency)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import zmq

from . import PROTOCOL_VERSION
from .messages import (
    Candidate, ClientKey, EvalKey, GetOutput, Input, KeyQuery, Message, Ping, Run, decode, encode,
)
from .transport import make_socket

SERVING_ROLES = ("evaluator", "bank", "agency")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


class Target:
    """DEALER sockets to the role under test, one per identity it must see (user, bank, agency)."""

    def __init__(self, role: str, endpoint: str, keys_dir: str | None, server_key: bytes | None,
                 timeout: float):
        self.role, self.endpoint, self.timeout = role, endpoint, timeout
        self.ctx = zmq.Context()
        self.keys_dir, self.server_key = keys_dir, server_key
        self.socks: dict[str, zmq.Socket] = {}
        self.seq = 0

    def sock(self, as_role: str) -> zmq.Socket:
        if as_role not in self.socks:
            sock = make_socket(self.ctx, zmq.DEALER, f"{as_role}:{os.getpid()}")
            if self.keys_dir:
                from .curve import Curve
                curve = Curve.load(as_role, self.keys_dir)
                sock.curve_secretkey, sock.curve_publickey = curve.secret, curve.public
                sock.curve_serverkey = self.server_key or curve.peer_key(self.role)
            sock.connect(self.endpoint)
            self.socks[as_role] = sock
        return self.socks[as_role]

    def raw(self, frames: list[bytes], as_role: str = "user"):
        """Send frames; return the decoded reply (None on timeout). Replies to other seqs are skipped."""
        sock = self.sock(as_role)
        sock.send_multipart(frames)
        while sock.poll(int(self.timeout * 1000)):
            try:
                packet = decode(sock.recv_multipart())
            except Exception:  # noqa: BLE001 - an undecodable reply is no reply
                return "undecodable"
            return packet
        return None

    def message(self, frames: list[bytes], as_role: str = "user"):
        """Send raw frames; the reply's message, or what went wrong instead, as text."""
        packet = self.raw(frames, as_role)
        return packet if packet is None or isinstance(packet, str) else packet.message

    def ask(self, message: Message, as_role: str = "user"):
        self.seq += 1
        packet = self.raw(encode(message, self.seq), as_role)
        if packet is None or packet == "undecodable":
            return packet
        return packet.message if packet.seq == self.seq else f"reply carried seq {packet.seq}, not {self.seq}"

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.ctx.term()


def _is_error(reply, code: str, mention: str = "") -> tuple[bool, str]:
    ok = getattr(reply, "TYPE", None) is not None and reply.TYPE.value == "ERROR" and reply.code == code \
        and mention in reply.reason
    return ok, f"expected ERROR {code}{' mentioning ' + repr(mention) if mention else ''}, got {_show(reply)}"


def _is(reply, type_name: str, **fields) -> tuple[bool, str]:
    ok = getattr(reply, "TYPE", None) is not None and reply.TYPE.value == type_name and all(
        getattr(reply, k, None) == v for k, v in fields.items())
    return ok, f"expected {type_name} {fields or ''}, got {_show(reply)}"


def _show(reply) -> str:
    if reply is None:
        return "no reply before the deadline"
    if isinstance(reply, str):
        return reply
    text = json.dumps({k: v for k, v in reply.__dict__.items() if not isinstance(v, (bytes, tuple))})
    return f"{reply.TYPE.value} {text[:160]}"


def common_checks(t: Target) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    """What every serving role must do: handshake, version negotiation, and refusing garbage."""
    header = json.dumps({"seq": 5}).encode()
    return [
        ("handshake: PING answered by PONG naming the role", lambda: _is(t.ask(Ping()), "PONG", role=t.role)),
        ("version: an unknown version tag gets VERSION_MISMATCH",
         lambda: _is_error(t.message([b"FCS/99", b"PING", header]), "VERSION_MISMATCH")),
        ("version: the role still answers FCS/1 after a mismatch", lambda: _is(t.ask(Ping()), "PONG")),
        ("unknown message type gets UNKNOWN_TYPE",
         lambda: _is_error(t.message([PROTOCOL_VERSION, b"TELEPORT", header]), "UNKNOWN_TYPE")),
        ("header that is not JSON gets MALFORMED",
         lambda: _is_error(t.message([PROTOCOL_VERSION, b"PING", b"{oops"]), "MALFORMED")),
        ("too few frames get MALFORMED", lambda: _is_error(t.message([PROTOCOL_VERSION]), "MALFORMED")),
        ("a missing header field gets MALFORMED",
         lambda: _is_error(t.message([PROTOCOL_VERSION, b"KEY_QUERY", header]), "MALFORMED")),
        ("an oversized INPUT gets TOO_LARGE", lambda: _is_error(
            t.message(encode(Input("c-1", "c", "user", "base", b"\0" * (1024 * 1024 + 1)), 6)), "TOO_LARGE")),
        ("a reply carries the request's seq", lambda: (getattr(t.raw(encode(Ping(), 4242)), "seq", None) == 4242,
                                                       "PONG did not carry seq 4242")),
    ]


def evaluator_checks(t: Target, fhe: str) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    checks = [
        ("KEY_QUERY for an unknown key answers present=false",
         lambda: _is(t.ask(KeyQuery("conformance-nokey")), "KEY_STATUS", present=fhe == "simulate")),
        ("an EVAL_KEY that does not deserialize gets BAD_CIPHERTEXT",
         lambda: _is_error(t.ask(EvalKey("conf-bad", b"not a key")), "BAD_CIPHERTEXT")),
        ("GET_OUTPUT for an unknown session gets UNKNOWN_SESSION",
         lambda: _is_error(t.ask(GetOutput("conf-none", "r1")), "UNKNOWN_SESSION")),
        ("RUN for an unknown session gets UNKNOWN_SESSION",
         lambda: _is_error(t.ask(Run("conf-none", "r1", {})), "UNKNOWN_SESSION")),
        ("an INPUT that does not deserialize gets BAD_CIPHERTEXT",
         lambda: _is_error(t.ask(Input("conf-1", "conf", "user", "base", b"garbage")), "BAD_CIPHERTEXT")),
        ("an INPUT for another party than the sender gets ILLEGAL_STATE",
         lambda: _is_error(t.ask(Input("conf-1", "conf", "bank", "base", b"x"), "user"), "ILLEGAL_STATE")),
        ("an unsafe session id gets MALFORMED",
         lambda: _is_error(t.ask(Input("../etc", "conf", "user", "base", b"x")), "MALFORMED")),
        ("the evaluator refuses a CLIENT_KEY", lambda: _is_error(t.ask(ClientKey("conf", (b"k",))), "ILLEGAL_STATE")),
    ]
    return checks + [("legal sequence: " + name, check) for name, check in legal_evaluator_sequence(t, fhe)]


def legal_evaluator_sequence(t: Target, fhe: str):
    """KEY_QUERY, EVAL_KEY, INPUT x3 (errors in between), RUN, GET_OUTPUT; the output must decrypt right."""
    from credit_model.deployment import load_deployment
    from credit_model.simulation import ClearModel

    state: dict = {}
    record = {"user": {"Own_car": True, "Own_property": True, "Mobile_phone": True, "Num_children": 0,
                       "Household_size": 2, "Total_income": 95400.0, "Age": 34, "Income_type": "Working",
                       "Education_type": "Incomplete higher", "Family_status": "Married",
                       "Occupation_type": "Core staff", "Housing_type": "House / apartment"},
              "bank": {"Account_age": 41}, "agency": {"Years_employed": "5-8", "Employed": True}}
    sid, key = f"conf-{os.getpid()}", f"conf{os.getpid()}"

    def setup():
        dep = load_deployment()
        from credit_model.fhe_model import SimulatedPartyClient
        client = dep.client()
        if fhe == "simulate":
            client = SimulatedPartyClient(client)
        else:
            client.generate_private_and_evaluation_keys()
        state.update(client=client, blobs={p: client.quantize_encrypt_serialize_party(
            p, dep.preprocessor(p).transform_records([record[p]])) for p in record},
            clear=ClearModel(dep).probability(record))
        if fhe == "simulate":
            return True, ""
        return _is(t.ask(EvalKey(key, client.get_serialized_evaluation_keys())), "ACK")

    def inputs_then_missing():
        for party in ("user", "bank"):
            ok, why = _is(t.ask(Input(sid, key, party, "base", state["blobs"][party]), party), "ACK")
            if not ok:
                return ok, why
        return _is_error(t.ask(Run(sid, "r1", {})), "MISSING_INPUTS", "agency")

    def output_not_ready():
        return _is_error(t.ask(GetOutput(sid, "r1")), "OUTPUT_NOT_READY")

    def run_and_output():
        ok, why = _is(t.ask(Input(sid, key, "agency", "base", state["blobs"]["agency"]), "agency"), "ACK")
        if ok:
            ok, why = _is(t.ask(Run(sid, "r1", {})), "ACK")
        if not ok:
            return ok, why
        out = t.ask(GetOutput(sid, "r1", int(t.timeout * 900)))
        ok, why = _is(out, "OUTPUT")
        if not ok:
            return ok, why
        p = float(state["client"].decrypt_probabilities(out.ciphertext)[0][1])
        return abs(p - state["clear"]) < 1e-6, f"decrypted P(approved) {p}, the clear model says {state['clear']}"

    steps = [("keygen and EVAL_KEY upload acknowledged", setup),
             ("KEY_QUERY now answers present=true", lambda: _is(t.ask(KeyQuery(key)), "KEY_STATUS", present=True)),
             ("two inputs, then RUN gets MISSING_INPUTS naming the agency", inputs_then_missing),
             ("GET_OUTPUT before any RUN gets OUTPUT_NOT_READY", output_not_ready),
             ("third input, RUN, GET_OUTPUT: the output decrypts to the clear model's answer", run_and_output)]
    def keys_not_generated():
        for party in record:
            t.ask(Input(sid + "x", key + "x", party, "base", state["blobs"][party]), party)
        return _is_error(t.ask(Run(sid + "x", "r1", {})), "KEYS_NOT_GENERATED", "keys not generated yet")

    if fhe != "simulate":
        steps.append(("RUN with inputs under a key never uploaded gets KEYS_NOT_GENERATED", keys_not_generated))
    return steps


def party_checks(t: Target, secure: bool) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    other = "agency" if t.role == "bank" else "bank"
    checks = [
        ("a message meant for the evaluator (RUN) gets ILLEGAL_STATE",
         lambda: _is_error(t.ask(Run("conf-1", "r1", {})), "ILLEGAL_STATE")),
        ("a CLIENT_KEY whose blobs are not secret keys gets MALFORMED",
         lambda: _is_error(t.ask(ClientKey("conf", (b"", b"", b""))), "MALFORMED")),
    ]
    if secure:
        checks.append((f"a CLIENT_KEY from the {other} (not the user) gets ILLEGAL_STATE",
                       lambda: _is_error(t.ask(ClientKey("conf", (b"x",)), other), "ILLEGAL_STATE")))
    def legal_client_key():
        from credit_model.deployment import load_deployment
        client = load_deployment().client()
        client.generate_private_and_evaluation_keys()
        reply = t.ask(ClientKey(f"conf{os.getpid()}", tuple(client.export_secret_keys())), "user")
        ok, why = _is(reply, "ACK")
        if ok and "key_setup_s" not in reply.detail:
            return False, f"ACK without key_setup_s: {_show(reply)}"
        return ok, why

    checks.append(("legal sequence: the user's CLIENT_KEY (real secret keys) is acknowledged", legal_client_key))
    if t.role == "agency":
        checks.append(("CANDIDATE for a session it holds no record of gets UNKNOWN_SESSION",
                       lambda: _is_error(t.ask(Candidate("conf-none", "conf", 1, "v")), "UNKNOWN_SESSION")))
    else:
        checks.append(("the bank refuses CANDIDATE", lambda: _is_error(t.ask(Candidate("c", "c", 1, "v")), "ILLEGAL_STATE")))
    return checks


def run_conformance(role: str, endpoint: str, keys_dir: str | None = None, server_key: bytes | None = None,
                    fhe: str = "execute", timeout: float = 30.0,
                    report: Callable[[CheckResult], None] = lambda r: None) -> list[CheckResult]:
    """Run every check for `role` at `endpoint`; each check is reported as it finishes."""
    if role not in SERVING_ROLES:
        raise ValueError(f"role must be one of {SERVING_ROLES}")
    target = Target(role, endpoint, keys_dir, server_key, timeout)
    results = []
    try:
        checks = common_checks(target) + (evaluator_checks(target, fhe) if role == "evaluator"
                                          else party_checks(target, keys_dir is not None))
        for name, check in checks:
            try:
                ok, detail = check()
            except Exception as exc:  # noqa: BLE001 - a check that blows up has failed
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results.append(CheckResult(f"{role}: {name}", bool(ok), "" if ok else detail))
            report(results[-1])
    finally:
        target.close()
    return results
