"""The user (applicant) role: owns the client key, encrypts its own features, and alone decrypts the decision."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from credit_model.explainability import (
    EXPLAIN_WHEN_APPROVED, STRATEGIES, decision_message, explain_bisect, explain_linear, is_approved,
)
from credit_model.deployment import load_deployment
from credit_model.runtime.fhe_runtime import KeyOwner
from credit_model.runtime.keygen import KeygenError, KeyGenerator
from protocol.errors import ErrorCode, ProtocolError, RemoteError
from protocol.messages import Candidate, ClientKey, EvalKey, GetOutput, Input, KeyQuery, Output, Run, check_id
from protocol.node import Node
from protocol.settings import RoleSettings, curve_for, role_command, run_as_process
from protocol.states import APPLICATION_TABLE, ApplicationState, Event, StateMachine
from protocol.transport import blob_preview, preview_offset

from .feature_party import PartyCipher, validated_matrix

log = logging.getLogger("fhe_credit_sim.user")
KEY_HOLDERS = ("bank", "agency")
# Key generation takes 1-3 s here (BENCHMARKS); the deadline is for a generator that hangs, not a loaded machine.
KEYGEN_TIMEOUT_S = 120.0


@dataclass
class Application:
    session_id: str
    key_id: str
    machine: StateMachine
    runs: int = 0
    approved: bool | None = None
    digests: dict[str, str] = field(default_factory=dict)  # party -> sha256 of its base ciphertext, if known


class User(Node):
    """Generates keys, uploads only the evaluation key, shares the client key with bank and agency only."""

    def __init__(self, settings: RoleSettings):
        super().__init__("user", settings.control, capture_dir=settings.capture_dir,
                         capture_client_key=settings.capture_client_key,
                         curve=curve_for("user", settings), exit_with_parent=settings.exit_with_parent,
                         run_dir=settings.run_dir, workdir=settings.workdir,
                         faults=settings.fault, liveness=settings.liveness)
        self.settings = settings
        self.simulate = settings.fhe == "simulate"
        self.deployment = load_deployment(settings.deployment)
        self.pre = self.deployment.preprocessor("user")
        self.cipher = PartyCipher(self.deployment, self.simulate)
        # Concrete holds the interpreter lock while it generates keys: a child process does it (kept ready).
        self.keygen = None if self.simulate else KeyGenerator(self.deployment.directory)
        self.keys: OrderedDict[str, KeyOwner] = OrderedDict()  # key id -> the applicant's keys
        self.fingerprints: dict[str, str] = {}  # key id -> sha256 of its evaluation key (KEY_QUERY)
        self.shared: dict[str, set[str]] = {peer: set() for peer in KEY_HOLDERS}
        self.apps: dict[str, Application] = {}
        self.evaluator = self.connect_peer("evaluator", settings.evaluator)
        for peer in KEY_HOLDERS:
            self.connect_peer(peer, getattr(settings, peer))

    # --- keys -----------------------------------------------------------------------------
    def use_keys(self, key_id: str) -> dict:
        """Make sure key_id has keys, generating fresh random ones on first use; returns what it cost.
        At most max_keys key ids are kept (the oldest goes, and is told to no one: its next application
        makes new keys, uploads and shares them again)."""
        steps = {}
        if self.simulate:
            return steps
        if key_id not in self.keys:
            t0 = time.perf_counter()
            try:
                # local work, not a wait on a peer: its own deadline, never shorter than a request's (a run that
                # sets short request deadlines on a loaded machine must not turn a slow keygen into a failure)
                evaluation_key, secret, seconds = self.keygen.generate(
                    self.should_stop, max(KEYGEN_TIMEOUT_S, self.settings.request_timeout))
            except KeygenError as exc:
                raise ProtocolError(str(exc), ErrorCode.INTERNAL) from None
            self.keys[key_id] = KeyOwner.restore(self.cipher.spec, secret, evaluation_key)
            self.fingerprints[key_id] = hashlib.sha256(evaluation_key).hexdigest()
            while len(self.keys) > self.settings.max_keys:
                old, _ = self.keys.popitem(last=False)
                self.fingerprints.pop(old, None)
                for holders in self.shared.values():
                    holders.discard(old)
            steps["keygen_s"] = round(time.perf_counter() - t0, 3)
            steps["keygen_inner_s"] = seconds
        self.keys.move_to_end(key_id)
        return steps

    def ensure_evaluation_key(self, key_id: str) -> dict:
        timeout = self.settings.request_timeout
        blob = self.keys[key_id].evaluation_key()
        if key_id not in self.fingerprints:
            self.fingerprints[key_id] = hashlib.sha256(blob).hexdigest()
        # present only if the evaluator holds *these* keys: a key id whose keys were made again is uploaded again
        status = self.evaluator.request(KeyQuery(key_id, self.fingerprints[key_id]), timeout).message
        if status.present:
            return {"eval_key_uploaded": False}
        t0 = time.perf_counter()
        self.evaluator.request(EvalKey(key_id, blob), timeout)
        return {"eval_key_uploaded": True, "eval_key_bytes": len(blob),
                "eval_key_upload_s": round(time.perf_counter() - t0, 3)}

    def share_client_key(self, key_id: str) -> dict:
        """Send the input secret keys to bank and agency (in parallel) unless they already have them.
        The output's secret key is never sent: only the user can decrypt a decision."""
        todo = [peer for peer in KEY_HOLDERS if key_id not in self.shared[peer]]
        if not todo or self.simulate:
            return {"client_key_shared_with": []}
        secret = self.keys[key_id].input_secret_keys()
        ids, blobs = sorted(secret), [secret[k] for k in sorted(secret)]
        t0 = time.perf_counter()
        pending = {peer: self.peers[peer].send(ClientKey(key_id, ids, tuple(blobs))) for peer in todo}
        setup = []
        for peer, seq in pending.items():
            ack = self.peers[peer].wait_reply(seq, self.settings.request_timeout, "CLIENT_KEY").message
            setup.append(float(ack.detail.get("key_setup_s", 0.0)) if isinstance(ack.detail, dict) else 0.0)
            self.shared[peer].add(key_id)
        return {"client_key_shared_with": todo, "client_key_ids": ids, "client_key_setup_s": max(setup),
                "client_key_bytes": sum(len(b) for b in blobs),
                "client_key_share_s": round(time.perf_counter() - t0, 3)}

    # --- commands -------------------------------------------------------------------------
    def application(self, session_id: str) -> Application:
        if session_id not in self.apps:
            raise ProtocolError(f"the user has no application {session_id!r}: prepare it first",
                                ErrorCode.UNKNOWN_SESSION)
        return self.apps[session_id]

    def prepare(self, session_id: str, key_id: str, features: dict) -> dict:
        matrix = validated_matrix(self.pre, features)
        app = self.apps.get(session_id) or Application(
            session_id, key_id, StateMachine(f"application {session_id}", ApplicationState.NEW, APPLICATION_TABLE))
        if app.key_id != key_id:
            raise ProtocolError(f"application {session_id!r} uses key id {app.key_id!r}", ErrorCode.ILLEGAL_STATE)
        if not app.machine.can(Event.PREPARE):
            app.machine.fire(Event.PREPARE)
        marks = [time.time()]  # the phases' boundaries (wall clock), for the reports: keygen, key upload, encrypt
        result = self.use_keys(key_id)
        marks.append(time.time())
        result.update(self.ensure_evaluation_key(key_id) if not self.simulate else {"eval_key_uploaded": False})
        result.update(self.share_client_key(key_id))
        marks.append(time.time())
        t0 = time.perf_counter()
        ciphertext = self.cipher.encrypt(self.keys.get(key_id), "user", matrix)
        result["encrypt_s"] = round(time.perf_counter() - t0, 4)
        self.evaluator.request(Input(session_id, key_id, "user", "base", ciphertext), self.settings.request_timeout)
        result.update({"bytes": len(ciphertext), "preview": blob_preview(ciphertext),
                       "preview_at": preview_offset(len(ciphertext))})
        app.digests["user"] = hashlib.sha256(ciphertext).hexdigest()
        marks.append(time.time())
        result["phases"] = [[name, round(a, 6), round(b, 6)]
                            for name, a, b in zip(("keygen", "key upload", "encrypt"), marks, marks[1:])]
        app.machine.fire(Event.PREPARE)
        self.apps[session_id] = app
        return result

    def run_and_decrypt(self, app: Application, variants: dict, expected: dict[str, str]) -> dict:
        """Ask the evaluator to run (a fresh run id every time), wait for the output until the run deadline,
        check that it is bound to the inputs this run was meant to use (`expected`: party -> sha256),
        decrypt it."""
        app.runs += 1
        run_id = f"r{app.runs}-{secrets.token_hex(4)}"
        t0, wall0 = time.perf_counter(), time.time()
        self.evaluator.request(Run(app.session_id, run_id, variants), self.settings.request_timeout)
        deadline = time.monotonic() + self.settings.run_timeout
        while True:
            wait = max(0.0, min(deadline - time.monotonic(), self.settings.request_timeout))
            try:  # long poll: the evaluator answers as soon as the run ends, or after `wait`
                output = self.evaluator.request(GetOutput(app.session_id, run_id, int(wait * 1000)),
                                                wait + self.settings.request_timeout).message
                break
            except RemoteError as exc:
                if exc.code is not ErrorCode.OUTPUT_NOT_READY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if not isinstance(output, Output) or output.run_id != run_id:
            raise ProtocolError(f"expected the OUTPUT of run {run_id}, got {output.TYPE.value}", ErrorCode.MALFORMED)
        wrong = [p for p, d in expected.items() if output.inputs.get(p) != d]
        if wrong:
            raise ProtocolError(f"the evaluator's output of run {run_id} is bound to other inputs than this run's "
                                f"(party {', '.join(wrong)}): refused", ErrorCode.BAD_CIPHERTEXT)
        wait_s = time.perf_counter() - t0
        t1, wall1 = time.perf_counter(), time.time()
        decryptor = self.cipher.simulator if self.simulate else self.keys.get(app.key_id)
        if decryptor is None:
            raise ProtocolError(f"the keys of {app.key_id!r} are no longer kept (more than max_keys applicants)",
                                ErrorCode.KEYS_NOT_GENERATED)
        try:
            probabilities = self.cipher.spec.probabilities(decryptor.decrypt(output.ciphertext))[0]
        except ValueError as exc:
            raise ProtocolError(f"the output does not decrypt: {exc}", ErrorCode.BAD_CIPHERTEXT) from None
        approved = is_approved(probabilities)
        return {"approved": approved, "probability": round(float(probabilities[1]), 4),
                "run_s": round(output.run_seconds, 4), "wait_s": round(wait_s, 4),
                "decrypt_s": round(time.perf_counter() - t1, 4), "output_bytes": len(output.ciphertext),
                "output_preview": blob_preview(output.ciphertext),
                "output_preview_at": preview_offset(len(output.ciphertext)),
                "phases": [["run", round(wall0, 6), round(wall1, 6)], ["decrypt", round(wall1, 6), round(time.time(), 6)]]}

    def predict(self, session_id: str) -> dict:
        app = self.application(session_id)
        result = self.run_and_decrypt(app, {}, app.digests)
        app.approved = result["approved"]
        app.machine.fire(Event.DECIDED_APPROVED if app.approved else Event.DECIDED_DENIED)
        result["decision"] = decision_message(app.approved)
        return result

    def explain(self, session_id: str, strategy: str) -> dict:
        app = self.application(session_id)
        if strategy not in STRATEGIES:
            raise ProtocolError(f"unknown strategy {strategy!r} (allowed: {', '.join(STRATEGIES)})",
                                ErrorCode.MALFORMED)
        if app.machine.state is ApplicationState.APPROVED:
            raise ProtocolError(EXPLAIN_WHEN_APPROVED, ErrorCode.NOT_DENIED)
        if not app.machine.can(Event.EXPLAIN):
            app.machine.fire(Event.EXPLAIN)
        if strategy == "bisect" and not self.deployment.is_monotone_in_years:
            raise ProtocolError("the bisect strategy needs a model trained with a monotone constraint on "
                                "Years_employed, and this deployment's manifest does not record one; "
                                "use --strategy linear", ErrorCode.ILLEGAL_STATE)
        agency, timeout = self.peers["agency"], self.settings.request_timeout
        info = agency.request(Candidate(session_id, app.key_id, 0, "info", encrypt=False), timeout).message.detail
        bins = self.deployment.bins
        runs = []

        def run(offset: int) -> bool:
            variant = f"{strategy}-{app.runs + 1}-y{offset}"
            candidate = agency.request(Candidate(session_id, app.key_id, offset, variant), timeout).message.detail
            expected = dict(app.digests, agency=candidate["sha256"])
            outcome = self.run_and_decrypt(app, {"agency": variant}, expected)
            runs.append({"bin": candidate["bin"], "approved": outcome["approved"], "run_s": outcome["run_s"],
                         "bytes": candidate["bytes"], "output_bytes": outcome["output_bytes"]})
            return outcome["approved"]

        t0 = time.perf_counter()
        adds_employment = bool(info.get("adds_employment"))
        if strategy == "linear":
            explanation = explain_linear(bins, info["own_index"], run, adds_employment)
        else:
            explanation = explain_bisect(bins, info["own_index"], run, adds_employment=adds_employment)
        app.machine.fire(Event.EXPLAIN)
        return {"explanation": explanation.message, "outcome": explanation.outcome, "bin": explanation.bin,
                "strategy": strategy, "runs": explanation.runs, "candidates": runs,
                "seconds": round(time.perf_counter() - t0, 3)}

    def make_keys(self, key_id: str) -> dict:
        """The demo's "generate keys" on its own: keys for key_id, the evaluation key uploaded, the inputs' secret
        keys shared with bank and agency; no application is opened and nothing is encrypted."""
        check_id("key id", key_id)
        result = self.use_keys(key_id)
        if self.simulate:
            return {**result, "eval_key_uploaded": False, "client_key_shared_with": []}
        result.update(self.ensure_evaluation_key(key_id))
        result.update(self.share_client_key(key_id))
        blob = self.keys[key_id].evaluation_key()
        result.update({"eval_key_bytes": len(blob), "eval_key_preview": blob_preview(blob),
                       "eval_key_preview_at": preview_offset(len(blob))})
        return result

    def on_command(self, action: str, params: dict) -> dict:
        if action == "keygen":
            return self.make_keys(params["key_id"])
        if action == "prepare":
            return self.prepare(params["session_id"], params["key_id"], params["features"])
        if action == "predict":
            return self.predict(params["session_id"])
        if action == "explain":
            return self.explain(params["session_id"], params.get("strategy", "linear"))
        if action == "status":
            return {"keys": sorted(self.keys), "applications": {k: a.machine.state.value for k, a in self.apps.items()}}
        return super().on_command(action, params)


    def close(self) -> None:
        if self.keygen is not None:
            self.keygen.close()
        super().close()


def _run(settings: RoleSettings) -> None:
    User(settings).serve_forever()


main = role_command("user", _run)

if __name__ == "__main__":
    run_as_process(main)
