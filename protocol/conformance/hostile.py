"""Conformance checks as a hostile peer would test an implementation: who it admits, who may send what, whose
state a peer can touch, size limits, unsafe ids, a peer that stops reading, run ids and key replacement."""

from __future__ import annotations

import hashlib
import os
import time

import zmq
import zmq.auth

from .. import PROTOCOL_VERSION
from ..authorization import AUTHORIZATION, EVERY_ROLE, size_limits
from ..messages import (
    BLOB_CHUNK, MESSAGE_CLASSES, Ack, Candidate, ClientKey, Command, Error, EvalKey, GetOutput, Input, KeyQuery,
    KeyStatus, MessageType, Output, Ping, Pong, Ready, Result, Run, Shutdown, encode,
)
from .target import Check, Target, code_of, is_error, show

PARTIES = ("user", "bank", "agency")
# Another peer's PING while one peer stops reading: an implementation that waits for that peer delays it by its send
# timeout (seconds to forever); ours answers in milliseconds (BENCHMARKS "Hostile peers"); 1 s leaves room for a
# loaded machine.
SLOW_READER_BOUND_S = 1.0


def sample(type_: MessageType, sender: str, session: str) -> object:
    """A well-formed message of each type, naming the sender where a field must (an INPUT's party)."""
    party = sender if sender in PARTIES else "user"
    return {
        MessageType.READY: Ready(sender, 1), MessageType.COMMAND: Command("status"),
        MessageType.RESULT: Result("status"), MessageType.SHUTDOWN: Shutdown(), MessageType.PING: Ping(),
        MessageType.PONG: Pong(sender), MessageType.ACK: Ack({}), MessageType.ERROR: Error("MALFORMED", "x"),
        MessageType.KEY_QUERY: KeyQuery("conf-authz", "0" * 64), MessageType.KEY_STATUS: KeyStatus("conf-authz", True),
        MessageType.EVAL_KEY: EvalKey("conf-authz", b"not a key"),
        MessageType.CLIENT_KEY: ClientKey("conf-authz", [0], (b"x",)),
        MessageType.INPUT: Input(session, "conf-authz", party, "base", b"not a ciphertext"),
        MessageType.RUN: Run(session, "r1", {}), MessageType.GET_OUTPUT: GetOutput(session, "r1", 0),
        MessageType.OUTPUT: Output(session, "r1", 0.1, {}, b"x"),
        MessageType.CANDIDATE: Candidate(session, "conf-authz", 1, "v1"),
    }[type_]


def admission_checks(t: Target) -> list[Check]:
    """With CURVE, only the deployment's roles get any answer."""
    def nothing(sock) -> tuple[bool, str]:
        reply = t.raw(encode(Ping(), 1), sock=sock, timeout=min(3.0, t.timeout))
        return reply is None, f"expected no answer at all, got {show(getattr(reply, 'message', reply))}"

    def unknown_key():
        public, secret = zmq.curve_keypair()
        return nothing(t.connect("user", curve_keys=(public, secret)))

    def no_takeover():
        """A peer's routing identity routes replies only: a second connection claiming a live one's identity (the
        bank's valid key, the user's identity) takes nothing over (ROUTER_HANDOVER off)."""
        identity = f"user:{os.getpid()}:conformance-takeover"
        legit = t.connect("user", identity=identity)
        thief = None
        try:
            # The first connection is live (its PING answered) before the second one connects: two that connect at
            # once race for the identity, and on a loaded machine the later socket may finish its handshake first.
            first = t.raw(encode(Ping(), 1), sock=legit)
            thief = t.connect("bank" if t.has_identity("bank") and t.role != "bank" else "agency", identity=identity)
            time.sleep(0.3)
            stolen = t.raw(encode(Ping(), 2), sock=thief, timeout=min(3.0, t.timeout))
            after = t.raw(encode(Ping(), 3), sock=legit)
        finally:
            if thief is not None:
                thief.close(linger=0)
            legit.close(linger=0)
        ok = all(isinstance(getattr(r, "message", None), Pong) for r in (first, after)) and stolen is None
        return ok, f"the first connection's PINGs got {show(getattr(first, 'message', first))}, " \
                   f"{show(getattr(after, 'message', after))}; the second's, under the same identity, got " \
                   f"{show(getattr(stolen, 'message', stolen))} (nothing expected)"

    return [("admission: a client without CURVE gets no answer", lambda: nothing(t.connect("user", plain=True))),
            ("admission: a client with an unknown CURVE key gets no answer", unknown_key),
            ("identity: a second connection claiming a live one's routing identity takes nothing over", no_takeover)]


def authorization_checks(t: Target) -> list[Check]:
    """Every message type from every proven identity: FORBIDDEN exactly where the table says so."""
    def every_row():
        table = AUTHORIZATION[t.role]
        identities = [who for who in sorted(EVERY_ROLE) if t.has_identity(who)]
        wrong = []
        for type_ in MessageType:
            rule = table.get(type_)
            for who in identities:
                code = code_of(t.ask(sample(type_, who, "conf-authz-1"), who))
                allowed = rule is not None and who in rule.senders
                if (code == "FORBIDDEN") == allowed or code in ("no reply before the deadline", "undecodable"):
                    wrong.append(f"{type_.value} from {who}: {code}")
        return not wrong and len(identities) >= 3, f"{len(wrong)} wrong: {'; '.join(wrong[:4])}" if wrong else \
            f"only {identities} could be tried: the keys directory needs at least three roles' secret keys"

    return [("authorization: every type from every identity is refused (FORBIDDEN) unless the table allows it",
             every_row)]


def limit_checks(t: Target, eval_key_limit: int) -> list[Check]:
    """A message over its type's limit gets TOO_LARGE however it is cut into frames; a frame over the largest
    legal frame is not accepted at all."""
    limits = size_limits(t.role, {MessageType.EVAL_KEY: eval_key_limit} if t.role == "evaluator" else {})

    def over_limit(type_: MessageType) -> list[bytes]:
        limit = limits.get(type_, MESSAGE_CLASSES[type_].MAX_BYTES)
        chunks = [b"\0" * BLOB_CHUNK] * (limit // BLOB_CHUNK) + [b"\0" * (limit % BLOB_CHUNK + 1)]
        return [PROTOCOL_VERSION, type_.value.encode(), b'{"seq": 9}'] + chunks

    def every_type():
        wrong = []
        for type_ in MessageType:
            reply = t.raw(over_limit(type_), "user", timeout=max(t.timeout, 30.0))
            code = code_of(getattr(reply, "message", reply))
            if code != "TOO_LARGE":
                wrong.append(f"{type_.value}: {code}")
        return not wrong, "; ".join(wrong[:5])

    def one_huge_frame():
        sock = t.connect("user")
        reply = t.raw([PROTOCOL_VERSION, b"INPUT", b'{"seq": 3}', b"\0" * (4 * BLOB_CHUNK)], sock=sock,
                      timeout=min(3.0, t.timeout))
        sock.close(linger=0)
        return reply is None, f"a 4 MiB frame was answered: {show(getattr(reply, 'message', reply))}"

    return [("limits: a message over its type's limit, in frames of at most 1 MiB, gets TOO_LARGE (every type)",
             every_type),
            ("limits: a single frame over the largest legal frame (1 MiB + header) is not accepted", one_huge_frame)]


def slow_reader_check(t: Target, seconds: float = 3.0) -> list[Check]:
    """A peer that stops reading its replies must not delay the others (its replies are dropped instead):
    one peer sends requests for `seconds` and never reads, while another peer's PINGs are timed. Its
    requests have an unknown header field with a long name, so that every refusal is a ~2 KB error and
    the implementation's send buffers to it fill within a fraction of a second."""
    request = [PROTOCOL_VERSION, b"PING", b'{"seq": 1, "' + b"x" * 1900 + b'": 0}']

    def check():
        reader = t.connect("user", options={zmq.RCVHWM: 1, zmq.RCVBUF: 4096})
        other = t.connect("bank" if t.has_identity("bank") else "user")
        deadline, sent, slowest, lost = time.monotonic() + seconds, 0, 0.0, 0
        try:
            while time.monotonic() < deadline and slowest < SLOW_READER_BOUND_S:
                for _ in range(200):
                    try:
                        reader.send_multipart(request, zmq.NOBLOCK)
                        sent += 1
                    except zmq.Again:
                        break
                t0 = time.perf_counter()
                if t.raw(encode(Ping(), 10**9 + sent), sock=other, timeout=2.0) is None:
                    lost += 1
                    slowest = float("inf")
                slowest = max(slowest, time.perf_counter() - t0)
        finally:
            reader.close(linger=0)
            other.close(linger=0)
        return slowest < SLOW_READER_BOUND_S, \
            f"while one peer sent {sent} requests and read no reply, another peer's PING took up to {slowest:.2f} s " \
            f"({lost} unanswered; at most {SLOW_READER_BOUND_S:g} s expected)"
    return [("slow reader: a peer that stops reading does not delay another peer's PING", check)]


def flood_check(t: Target, floods: int = 2, seconds: float = 1.5, connections: int = 16) -> list[Check]:
    """Peers that send faster than the implementation reads, then hang up abruptly (libzmq's `!_io_error` abort
    kills an unpatched role); afterwards a legitimate peer is still answered (the run then checks it is alive)."""
    from .flood import flood_then_disconnect

    def check():
        attacker = "bank" if t.role != "bank" else "agency"
        if t.secure and not t.has_identity(attacker):
            attacker = "user"
        keys, server = (t.keys_dir, t.server_public_key()) if t.secure else (None, None)
        sent = sum(flood_then_disconnect(t.endpoint, keys, attacker, server, connections, seconds)
                   for _ in range(floods))
        time.sleep(0.5)
        reply = t.ask(Ping(), "user", timeout=10.0)
        return isinstance(reply, Pong), f"after {floods} floods of {connections} connections ({sent} messages, " \
                                        f"then hung up), a PING got {show(reply)}"
    return [("flood then hang up: peers that flood faster than it reads and then vanish neither kill it nor keep "
             "it from answering", check)]


def evaluator_hostile_checks(t: Target, materials, max_sessions: int) -> list[Check]:
    """Ownership, quotas, ids, run ids and key replacement at an evaluator (materials: genuine keys and
    ciphertexts of the deployment's circuit)."""
    sid = f"conf-own-{os.getpid()}"
    key = f"confown{os.getpid()}"
    uploaded: list[bool] = []

    def inputs(session: str, parties=PARTIES, key_id: str = key) -> list[str]:
        if materials.evaluation_key is not None and not uploaded:  # runs under `key` need its evaluation key
            uploaded.append(code_of(t.ask(EvalKey(key, materials.evaluation_key), "user", timeout=60)) == "ACK")
        return [code_of(t.ask(Input(session, key_id, p, "base", materials.blobs[p]), p)) for p in parties]

    def parties_cannot_open_sessions():
        codes = [code_of(t.ask(Input(f"{sid}-b{i}", key, p, "base", materials.blobs[p]), p))
                 for i in range(3) for p in ("bank", "agency")]
        return codes == ["UNKNOWN_SESSION"] * 6, f"a bank or agency INPUT for a session no user opened got {codes}"

    def other_key_id_refused():
        got = inputs(f"{sid}-k", ("user",)) + [code_of(t.ask(Input(f"{sid}-k", key + "x", "bank", "base",
                                                                    materials.blobs["bank"]), "bank"))]
        return got == ["ACK", "FORBIDDEN"], f"user INPUT then a bank INPUT under another key id got {got}"

    def own_sessions_evicted_only():
        first = f"{sid}-e0"
        codes = inputs(first)
        for i in range(1, max_sessions + 1):
            codes += inputs(f"{sid}-e{i}", ("user",))
        gone = code_of(t.ask(Run(first, "r1", {}), "user"))
        last = code_of(t.ask(Input(f"{sid}-e{max_sessions}", key, "bank", "base", materials.blobs["bank"]), "bank"))
        ok = set(codes) == {"ACK"} and gone == "UNKNOWN_SESSION" and last == "ACK"
        return ok, f"after {max_sessions + 1} sessions of the user, its oldest answered {gone} (UNKNOWN_SESSION " \
                   f"expected) and its newest took a bank input: {last}"

    def variant_quota_is_own():
        session = f"{sid}-v"
        codes = inputs(session) + [code_of(t.ask(Input(session, key, "agency", f"v{i}", materials.blobs["agency"]),
                                                 "agency")) for i in range(40)]
        oldest = code_of(t.ask(Run(session, "r0", {"agency": "v0"}), "user"))
        base = code_of(t.ask(Run(session, "r1", {}), "user"))
        ok = set(codes) == {"ACK"} and oldest == "MISSING_INPUTS" and base == "ACK"
        return ok, f"after 40 agency variants: a run on the first variant got {oldest} (MISSING_INPUTS expected: " \
                   f"only the agency's own oldest go), a run on the base inputs got {base}"

    def unsafe_ids():
        codes = [code_of(t.ask(Input(bad, key, "user", "base", materials.blobs["user"]), "user"))
                 for bad in ("n-1\n", "../x", "a/b", ".x", "x" * 65)]
        return codes == ["MALFORMED"] * 5, f"unsafe session ids got {codes}"

    def run_ids_unique_and_outputs_bound():
        session = f"{sid}-r"
        inputs(session)
        first = code_of(t.ask(Run(session, "r1", {}), "user"))
        out = t.ask(GetOutput(session, "r1", int(t.timeout * 900)), "user", timeout=t.timeout * 2)
        digests = {p: hashlib.sha256(materials.blobs[p]).hexdigest() for p in PARTIES}
        bound = getattr(out, "inputs", None) == digests
        again = code_of(t.ask(Run(session, "r1", {}), "user"))
        return first == "ACK" and bound and again == "ILLEGAL_STATE", \
            f"first RUN {first}; OUTPUT names its inputs' sha256: {bound}; the same run id again got {again} " \
            "(ILLEGAL_STATE expected)"

    def live_session_runs_and_outputs_are_the_users():
        """On a session a real user opened, with every party's input in it: neither bank nor agency may run it
        (with its own variant or not) or read its output."""
        session = f"{sid}-live"
        opened = inputs(session)
        user_run = code_of(t.ask(Run(session, "r1", {}), "user"))
        output = t.ask(GetOutput(session, "r1", int(t.timeout * 900)), "user", timeout=t.timeout * 2)
        got = {}
        for party in ("bank", "agency"):
            got[f"{party} INPUT of its own variant"] = code_of(t.ask(Input(session, key, party, "probe",
                                                                           materials.blobs[party]), party))
            got[f"{party} RUN with its variant"] = code_of(t.ask(Run(session, f"r-{party}", {party: "probe"}), party))
            got[f"{party} RUN"] = code_of(t.ask(Run(session, f"r-{party}2", {}), party))
            got[f"{party} GET_OUTPUT of the user's run"] = code_of(t.ask(GetOutput(session, "r1", 0), party))
        forbidden = {k: v for k, v in got.items() if "INPUT" not in k}
        ok = set(opened) == {"ACK"} and user_run == "ACK" and isinstance(output, Output) \
            and set(forbidden.values()) == {"FORBIDDEN"} \
            and {got["bank INPUT of its own variant"], got["agency INPUT of its own variant"]} == {"ACK"}
        return ok, f"the user's session (inputs {opened}, its RUN {user_run}, its OUTPUT {show(output)[:40]}): {got}"

    def live_session_inputs_are_each_partys_own():
        """On a session a real user opened: no party may put or replace an input as another party; the user's next
        OUTPUT is computed from the three inputs their own parties sent."""
        session = f"{sid}-own"
        opened = inputs(session)
        got = {}
        for sender, party in (("bank", "agency"), ("agency", "bank"), ("bank", "user"), ("agency", "user")):
            blob = materials.blobs[party]
            got[f"{sender} as {party}"] = code_of(t.ask(Input(session, key, party, "base", blob), sender))
        out = t.ask(GetOutput(session, "r1", int(t.timeout * 900)), "user", timeout=t.timeout * 2) \
            if code_of(t.ask(Run(session, "r1", {}), "user")) == "ACK" else None
        digests = {p: hashlib.sha256(materials.blobs[p]).hexdigest() for p in PARTIES}
        ok = set(opened) == {"ACK"} and set(got.values()) == {"FORBIDDEN"} and getattr(out, "inputs", None) == digests
        return ok, f"inputs {opened}; another party's INPUT got {got}; the user's OUTPUT names " \
                   f"{getattr(out, 'inputs', show(out))}"

    checks = [("ownership (live session): only its user may run it or read its output, whoever added inputs",
               live_session_runs_and_outputs_are_the_users),
              ("ownership (live session): no party may send or replace an input as another party",
               live_session_inputs_are_each_partys_own),
              ("ownership: bank and agency cannot open a session (UNKNOWN_SESSION)", parties_cannot_open_sessions),
              ("ownership: an INPUT under another key id than its session's gets FORBIDDEN", other_key_id_refused),
              (f"quota: the user's sessions beyond {max_sessions} evict its own oldest", own_sessions_evicted_only),
              ("quota: an agency flooding variants loses only its own oldest ones", variant_quota_is_own),
              ("ids: a trailing newline, a path or an over-long id gets MALFORMED", unsafe_ids)]
    if materials.fhe != "simulate":
        def key_size_exact():
            real = materials.evaluation_key
            codes = [code_of(t.ask(EvalKey(f"{key}-s{i}", blob), "user", timeout=60))
                     for i, blob in enumerate((real + b"\0", real[:-1], materials.other_circuit_key))]
            return codes == ["BAD_CIPHERTEXT"] * 3, \
                f"an evaluation key one byte longer, one byte shorter, and one of another circuit got {codes}"

        def key_never_replaced():
            first = code_of(t.ask(EvalKey(f"{key}-once", materials.evaluation_key), "user", timeout=60))
            again = code_of(t.ask(EvalKey(f"{key}-once", materials.evaluation_key), "user", timeout=60))
            return (first, again) == ("ACK", "ILLEGAL_STATE"), f"upload then re-upload got {first}, {again}"

        def key_bound_to_fingerprint():
            key_id, first, second = f"{key}-fp", materials.evaluation_key, materials.second_evaluation_key
            fp1, fp2 = (hashlib.sha256(k).hexdigest() for k in (first, second))

            def present(fp):
                reply = t.ask(KeyQuery(key_id, fp), "user")
                return getattr(reply, "present", show(reply))
            got = [code_of(t.ask(EvalKey(key_id, first), "user", timeout=60)), present(fp1), present(fp2),
                   code_of(t.ask(EvalKey(key_id, second), "bank", timeout=60)),
                   code_of(t.ask(EvalKey(key_id, second), "user", timeout=60)), present(fp2), present(fp1)]
            return got == ["ACK", True, False, "FORBIDDEN", "ACK", True, False], \
                "upload, KEY_QUERY with its fingerprint and another, the bank's upload of another key, the user's, " \
                f"then both KEY_QUERYs again got {got} (expected ACK, True, False, FORBIDDEN, ACK, True, False)"

        checks += [("keys: an evaluation key of any other size than the circuit's gets BAD_CIPHERTEXT",
                    key_size_exact),
                   ("keys: the same evaluation key is never uploaded twice (ILLEGAL_STATE)", key_never_replaced),
                   ("keys: a key id is bound to its key's fingerprint; only its owner's new keys replace it",
                    key_bound_to_fingerprint)]
    checks.append(("runs: a run id is never reused, and an OUTPUT names the sha256 of the inputs it used",
                   run_ids_unique_and_outputs_bound))
    return checks


def party_hostile_checks(t: Target, materials) -> list[Check]:
    """A bank or agency accepts from the user only the inputs' secret keys, never the output's."""
    def output_key_refused():
        key_id, blob = materials.output_secret_key
        reply = t.ask(ClientKey("conf-outkey", [key_id], (blob,)), "user")
        return is_error(reply, "MALFORMED")
    return [("custody: a CLIENT_KEY carrying the output's secret key (not an input key) gets MALFORMED",
             output_key_refused)]


