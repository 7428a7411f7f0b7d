"""Deliberately broken role implementations, one flaw each, to prove that `run_scenario.py conformance` catches them.

`python -m tests.broken_roles FLAW ROLE [the role's usual options]` patches one property of the project's own
role, then runs it exactly as `python -m evaluator` / `parties.bank` / `parties.agency` would. Test fixture only.
"""

from __future__ import annotations

import re
import sys

FLAWS: dict[str, str] = {
    "admits_any_key": "its ZAP handler admits every CURVE key",
    "no_authorization": "it never consults the authorization table",
    "parties_open_sessions": "a bank or agency INPUT opens a session (which the user then cannot have)",
    "any_key_size": "it accepts an evaluation key of any size",
    "no_size_limits": "it takes frames and messages of any size and copies them whole",
    "never_evicts": "it keeps every session a user opens",
    "unsafe_ids": "it matches ids with `$`, so a trailing newline slips through",
    "blocking_replies": "it waits for a peer that does not read its replies",
    "reuses_run_ids": "a run id can be used again (its old output is then served)",
    "accepts_output_key": "it accepts any of the user's secret keys, the output's too",
    "contributors_run_sessions": "a party that added an input to a session may run it and read its output (a "
                                 "session that does not exist is still refused with FORBIDDEN)",
    "parties_replace_inputs": "an INPUT's party is checked against its sender only when the session does not "
                              "exist yet: into a live session, a bank can send the agency's input",
    "router_handover": "its ROUTER lets a new connection take over a routing identity in use (ROUTER_HANDOVER)",
    "dies_when_flooded": "the process dies (exit 134, as libzmq's abort) once it has received 5,000 messages",
}


def break_it(flaw: str) -> None:
    import zmq
    import zmq.auth

    if flaw == "admits_any_key":
        from zmq.auth.thread import ThreadAuthenticator

        from protocol.curve import Curve

        def start_authenticator(self, ctx):
            self.auth = ThreadAuthenticator(ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        Curve.start_authenticator = start_authenticator
    elif flaw == "no_authorization":
        import protocol.node
        protocol.node.authorize = lambda *args, **kwargs: None
    elif flaw == "parties_open_sessions":
        from evaluator.service import Evaluator
        original = Evaluator.on_input

        def on_input(self, sender, message):
            if message.party != "user" and message.session_id not in self.store.sessions:
                self.store.open(message.session_id, message.key_id, owner="user")
            return original(self, sender, message)
        Evaluator.on_input = on_input
    elif flaw == "any_key_size":
        from evaluator.service import Evaluator
        original_init = Evaluator.__init__

        def __init__(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            self.eval_key_bytes = None
        Evaluator.__init__ = __init__
    elif flaw == "no_size_limits":
        import protocol.node
        import protocol.transport
        from protocol.messages import MESSAGE_CLASSES
        from protocol.transport import Received
        for cls in MESSAGE_CLASSES.values():
            cls.MAX_BYTES, cls.MAX_FRAMES, cls.MAX_HEADER = 2**40, 10**6, 2**40
        protocol.transport.MAX_FRAME_BYTES = 600 * 1024 * 1024
        protocol.node.size_limits = lambda channel, overrides=None: {}

        def receive(sock, router, overrides=None):
            identity, *frames = sock.recv_multipart(copy=False)
            return Received(identity.bytes, [f.bytes for f in frames], frames[0].get("User-Id") if frames else None)
        protocol.node.receive = receive
        original_serve = protocol.node.Node.serve_router

        def serve_router(self, endpoint, handler, channel=None, max_frame=0, limits=None, setup=None):
            return original_serve(self, endpoint, handler, channel, 600 * 1024 * 1024, limits, setup)
        protocol.node.Node.serve_router = serve_router
    elif flaw == "never_evicts":
        from evaluator.store import SessionStore
        SessionStore._evict_sessions = lambda self, owner, keep: None
    elif flaw == "unsafe_ids":
        import evaluator.service
        import evaluator.store
        from protocol.errors import MalformedMessage
        loose = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

        def check_id(kind, value):
            if not isinstance(value, str) or not loose.match(value):
                raise MalformedMessage(f"{kind} {value!r} must match {loose.pattern}")
            return value
        evaluator.store.check_id = evaluator.service.check_id = check_id
    elif flaw == "blocking_replies":
        import protocol.node

        def send_blocking(sock, frames):
            try:
                sock.send_multipart(frames)
                return True
            except zmq.ZMQError:
                return False
        protocol.node.send_nowait = send_blocking
    elif flaw == "reuses_run_ids":
        from evaluator.store import SessionStore
        original_plan = SessionStore.plan_run

        def plan_run(self, session, run_id, variants):
            if run_id in session.runs:
                session.runs.remove(run_id)
                session.outputs.pop(run_id, None)
            return original_plan(self, session, run_id, variants)
        SessionStore.plan_run = plan_run
    elif flaw == "accepts_output_key":
        from concrete.compiler import Keyset, LweSecretKey

        from credit_model.runtime import fhe_runtime
        from credit_model.runtime.fhe_runtime import InputEncryptor, check_secret_key_layout

        @classmethod
        def from_any_secret_keys(cls, spec, blobs):
            for key_id, blob in blobs.items():  # any key id is taken, the output's too
                check_secret_key_layout(bytes(blob), spec.secret_key_params[key_id].dimension(), key_id)
            initial = {k: LweSecretKey.deserialize(bytes(b), spec.secret_key_params[k]) for k, b in blobs.items()}
            encryptor = cls(spec, spec.client_only_program_info,
                            Keyset(spec.client_only_program_info, None, *fhe_runtime._random_seed_words(), initial))
            encryptor.seconds = 0.0
            return encryptor
        InputEncryptor.from_secret_keys = from_any_secret_keys
    elif flaw == "contributors_run_sessions":
        from evaluator.service import Evaluator
        from protocol.authorization import AUTHORIZATION, Rule
        from protocol.errors import Forbidden
        from protocol.messages import MessageType as T
        for type_ in (T.RUN, T.GET_OUTPUT):
            AUTHORIZATION["evaluator"][type_] = Rule(frozenset({"user", "bank", "agency"}))

        def owned_session(self, sender, session_id):
            session = self.store.sessions.get(session_id)
            if session is None and sender != "user":
                raise Forbidden(f"{sender} may not send this to the evaluator")
            session = self.store.get(session_id)
            if session.owner != sender and sender not in {party for party, _ in session.inputs}:
                raise Forbidden(f"session {session_id!r} belongs to another owner")
            return session
        Evaluator.owned_session = owned_session
    elif flaw == "parties_replace_inputs":
        from evaluator.service import Evaluator
        from protocol.authorization import AUTHORIZATION, Rule
        from protocol.errors import Forbidden
        from protocol.messages import MessageType as T
        AUTHORIZATION["evaluator"][T.INPUT] = Rule(frozenset({"user", "bank", "agency"}))
        original_input = Evaluator.on_input

        def on_input(self, sender, message):
            if message.party != sender and message.session_id not in self.store.sessions:
                raise Forbidden(f"{sender} may not send INPUT with party {message.party!r}: it may only speak "
                                "for itself")
            return original_input(self, sender, message)
        Evaluator.on_input = on_input
    elif flaw == "router_handover":
        import protocol.node
        original_make = protocol.node.make_socket

        def make_socket(ctx, kind, *args, **kwargs):
            sock = original_make(ctx, kind, *args, **kwargs)
            if kind == zmq.ROUTER:
                sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            return sock
        protocol.node.make_socket = make_socket
    elif flaw == "dies_when_flooded":
        import os

        import protocol.node
        original_receive = protocol.node.receive
        count = [0]

        def receive(sock, router, overrides=None):
            count[0] += 1
            if count[0] > 5_000:
                os._exit(134)
            return original_receive(sock, router, overrides)
        protocol.node.receive = receive
    else:
        raise SystemExit(f"unknown flaw {flaw!r}; known: {', '.join(FLAWS)}")


def main() -> None:
    flaw, role, *options = sys.argv[1:]
    break_it(flaw)
    sys.argv = [role] + options
    if role == "evaluator":
        from evaluator.__main__ import main as run
    elif role == "bank":
        from parties.bank import main as run
    else:
        from parties.agency import main as run
    from protocol.settings import run_as_process
    run_as_process(run)


if __name__ == "__main__":
    main()
