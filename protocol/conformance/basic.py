"""The conformance checks of a well-behaved peer: handshake, versions, errors, and each role's legal sequence."""

from __future__ import annotations

import hashlib
import json
import os

from .. import PROTOCOL_VERSION
from ..messages import Candidate, ClientKey, EvalKey, GetOutput, Input, KeyQuery, Ping, Run, encode
from .target import Check, Target, is_error as _is_error, is_type as _is, show as _show



def common_checks(t: Target) -> list[Check]:
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


def evaluator_checks(t: Target, fhe: str, materials) -> list[Check]:
    checks = [
        ("KEY_QUERY for an unknown key answers present=false",
         lambda: _is(t.ask(KeyQuery("conformance-nokey", "0" * 64)), "KEY_STATUS", present=fhe == "simulate")),
        ("an EVAL_KEY that does not deserialize gets BAD_CIPHERTEXT",
         lambda: _is_error(t.ask(EvalKey("conf-bad", b"not a key")), "BAD_CIPHERTEXT")),
        ("GET_OUTPUT for an unknown session gets UNKNOWN_SESSION",
         lambda: _is_error(t.ask(GetOutput("conf-none", "r1")), "UNKNOWN_SESSION")),
        ("RUN for an unknown session gets UNKNOWN_SESSION",
         lambda: _is_error(t.ask(Run("conf-none", "r1", {})), "UNKNOWN_SESSION")),
        ("an INPUT that does not deserialize gets BAD_CIPHERTEXT",
         lambda: _is_error(t.ask(Input("conf-1", "conf", "user", "base", b"garbage")), "BAD_CIPHERTEXT")),
        ("an INPUT for another party than the sender gets FORBIDDEN",
         lambda: _is_error(t.ask(Input("conf-1", "conf", "bank", "base", b"x"), "user"), "FORBIDDEN")),
        ("an unsafe session id gets MALFORMED",
         lambda: _is_error(t.ask(Input("../etc", "conf", "user", "base", b"x")), "MALFORMED")),
        ("the evaluator refuses a CLIENT_KEY (FORBIDDEN)",
         lambda: _is_error(t.ask(ClientKey("conf", [0], (b"k",))), "FORBIDDEN")),
    ]
    return checks + [("legal sequence: " + name, check) for name, check in legal_evaluator_sequence(t, fhe, materials)]


def fingerprint_of(evaluation_key: bytes | None) -> str:
    """KEY_QUERY's fingerprint: the sha256 of the serialized evaluation key (any valid one under simulation)."""
    return hashlib.sha256(evaluation_key or b"").hexdigest()


def legal_evaluator_sequence(t: Target, fhe: str, materials):
    """KEY_QUERY, EVAL_KEY, INPUT x3 (errors in between), RUN, GET_OUTPUT; the output must decrypt right."""
    from credit_model.training.clear_model import ClearModel

    state: dict = {}
    record = materials.record
    sid, key = f"conf-{os.getpid()}", f"conf{os.getpid()}"

    def setup():
        state.update(client=materials.client, blobs=materials.blobs,
                     clear=ClearModel(materials.deployment).probability(record))
        if fhe == "simulate":
            return True, ""
        return _is(t.ask(EvalKey(key, materials.evaluation_key), timeout=60), "ACK")

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
             ("KEY_QUERY with the uploaded key's fingerprint now answers present=true",
              lambda: _is(t.ask(KeyQuery(key, fingerprint_of(materials.evaluation_key))), "KEY_STATUS", present=True)),
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


def party_checks(t: Target, secure: bool, materials) -> list[Check]:
    other = "agency" if t.role == "bank" else "bank"
    checks = [
        ("a message meant for the evaluator (RUN) gets FORBIDDEN",
         lambda: _is_error(t.ask(Run("conf-1", "r1", {})), "FORBIDDEN")),
        ("a CLIENT_KEY whose blobs are not secret keys gets MALFORMED",
         lambda: _is_error(t.ask(ClientKey("conf", [0], (b"",))), "MALFORMED")),
    ]
    if secure:
        checks.append((f"a CLIENT_KEY from the {other} (not the user) gets FORBIDDEN",
                       lambda: _is_error(t.ask(ClientKey("conf", [0], (b"x",)), other), "FORBIDDEN")))
    def legal_client_key():
        from credit_model.training.fhe_model import ml_client
        client = ml_client(materials.deployment)
        client.generate_private_and_evaluation_keys()
        ids, blobs = client.export_input_secret_keys()
        reply = t.ask(ClientKey(f"conf{os.getpid()}", ids, tuple(blobs)), "user")
        ok, why = _is(reply, "ACK")
        if ok and "key_setup_s" not in reply.detail:
            return False, f"ACK without key_setup_s: {_show(reply)}"
        return ok, why

    checks.append(("legal sequence: the user's CLIENT_KEY (real secret keys) is acknowledged", legal_client_key))
    if t.role == "agency":
        checks.append(("CANDIDATE for a session it holds no record of gets UNKNOWN_SESSION",
                       lambda: _is_error(t.ask(Candidate("conf-none", "conf", 1, "v")), "UNKNOWN_SESSION")))
    else:
        checks.append(("the bank refuses CANDIDATE (FORBIDDEN)",
                       lambda: _is_error(t.ask(Candidate("c", "c", 1, "v")), "FORBIDDEN")))
    return checks
