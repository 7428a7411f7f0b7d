"""What bank and agency share: hold the user's client key, validate, preprocess and encrypt only their own features."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict

import numpy as np

from credit_model.deployment import Deployment, load_deployment
from credit_model.runtime.fhe_runtime import InputEncryptor, Simulator
from credit_model.schema import PARTIES, InputValidationError
from protocol.errors import ErrorCode, IllegalState, ProtocolError, RemoteError
from protocol.messages import Ack, ClientKey, Input, check_id
from protocol.node import Node
from protocol.settings import RoleSettings, curve_for
from protocol.states import KEY_TABLE, Event, KeyState, StateMachine
from protocol.transport import blob_preview, preview_offset

log = logging.getLogger("fhe_credit_sim.party")


class PartyCipher:
    """Quantize and encrypt one party's preprocessed record into its argument of the circuit."""

    def __init__(self, deployment: Deployment, simulate: bool):
        self.spec = deployment.spec()
        self.slices = deployment.slices
        self.simulator = Simulator(self.spec) if simulate else None

    def encrypt(self, encryptor, party: str, matrix: np.ndarray) -> bytes:
        start, stop = self.slices[party]
        return (encryptor or self.simulator).encrypt(PARTIES.index(party), self.spec.quantize(start, stop, matrix))


def validated_matrix(pre, features) -> np.ndarray:
    """Validate and preprocess one raw record; schema errors become INVALID_INPUT protocol errors."""
    try:
        return pre.transform_records([features])
    except InputValidationError as exc:
        raise ProtocolError(str(exc), ErrorCode.INVALID_INPUT) from None


class FeatureParty(Node):
    """A party that owns some features, receives the client key from the user, and sends ciphertexts
    straight to the evaluator. It never sees the other parties' features or any result."""

    def __init__(self, party: str, settings: RoleSettings):
        super().__init__(party, settings.control, capture_dir=settings.capture_dir,
                         capture_client_key=settings.capture_client_key,
                         curve=curve_for(party, settings), exit_with_parent=settings.exit_with_parent,
                         run_dir=settings.run_dir, workdir=settings.workdir,
                         faults=settings.fault, liveness=settings.liveness)
        self.party = party
        self.settings = settings
        self.simulate = settings.fhe == "simulate"
        deployment = load_deployment(settings.deployment)
        self.schema = deployment.schema
        self.deployment = deployment
        self.pre = deployment.preprocessor(party)
        self.cipher = PartyCipher(deployment, self.simulate)
        self.keys: OrderedDict[str, InputEncryptor] = OrderedDict()  # key id -> input-only key set
        self.max_keys = settings.max_keys
        self.key_states: dict[str, StateMachine] = {}
        self.records: dict[str, tuple[str, dict]] = {}
        self.evaluator = self.connect_peer("evaluator", settings.evaluator)
        self.serve_router(getattr(settings, party), self.handle)

    def key_state(self, key_id: str) -> StateMachine:
        if key_id not in self.key_states:
            self.key_states[key_id] = StateMachine(f"{self.party} key {key_id}", KeyState.NO_KEY, KEY_TABLE)
        return self.key_states[key_id]

    def handle(self, sender: str, packet):
        message = packet.message
        if isinstance(message, ClientKey):  # only the user may send it: protocol/authorization.py
            check_id("key id", message.key_id)
            ids = message.key_ids
            if len(ids) != len(message.secret_keys) or len(set(map(repr, ids))) != len(ids):
                raise ProtocolError("client key refused: key_ids must name each secret key once",
                                    ErrorCode.MALFORMED)
            try:
                encryptor = InputEncryptor.from_secret_keys(self.cipher.spec, dict(zip(ids, message.secret_keys)))
            except ValueError as exc:
                raise ProtocolError(f"client key refused: {exc}", ErrorCode.MALFORMED) from None
            self.keys[message.key_id] = encryptor
            self.keys.move_to_end(message.key_id)
            while len(self.keys) > self.max_keys:  # the oldest key id goes: its user shares it again if needed
                old, _ = self.keys.popitem(last=False)
                self.key_states.pop(old, None)
            self.key_state(message.key_id).fire(Event.KEY_RECEIVED)
            return Ack({"key_id": message.key_id, "key_setup_s": round(encryptor.seconds, 4)})
        return self.handle_other(sender, message)

    def handle_other(self, sender: str, message):
        raise IllegalState(f"the {self.party} has no handler for {message.TYPE.value}")

    def encrypt(self, key_id: str, features: dict) -> bytes:
        matrix = validated_matrix(self.pre, features)
        encryptor = None
        if not self.simulate:
            if self.key_states.get(key_id) is None or self.key_states[key_id].state is not KeyState.KEY_READY:
                raise ProtocolError(f"keys not generated yet: the {self.party} has no client key for "
                                    f"key id {key_id!r} (the user shares it first)",
                                    ErrorCode.KEYS_NOT_GENERATED)
            encryptor = self.keys[key_id]
        return self.cipher.encrypt(encryptor, self.party, matrix)

    def send_input(self, session_id: str, key_id: str, variant: str, features: dict) -> dict:
        t0 = time.perf_counter()
        ciphertext = self.encrypt(key_id, features)
        t1 = time.perf_counter()
        message = Input(session_id, key_id, self.party, variant, ciphertext)
        try:
            ack = self.evaluator.request(message, self.settings.request_timeout)
        except RemoteError as exc:  # damaged on the way: the evaluator refused it, send it once more
            if exc.code is not ErrorCode.BAD_CIPHERTEXT:
                raise
            log.warning("%s: the evaluator refused our ciphertext (%s); resending once", self.party, exc.reason)
            ack = self.evaluator.request(message, self.settings.request_timeout)
        return {"bytes": len(ciphertext), "sha256": hashlib.sha256(ciphertext).hexdigest(),
                "encrypt_s": round(t1 - t0, 4),
                "send_s": round(time.perf_counter() - t1, 4), "preview": blob_preview(ciphertext),
                "preview_at": preview_offset(len(ciphertext)),
                "evaluator_state": ack.message.detail.get("state")}

    def on_command(self, action: str, params: dict) -> dict:
        if action == "encrypt":
            session_id, key_id = params["session_id"], params["key_id"]
            features = params["features"]
            result = self.send_input(session_id, key_id, "base", features)
            self.records[session_id] = (key_id, features)
            return result
        if action == "status":
            return {"keys": sorted(self.keys), "sessions": len(self.records)}
        return super().on_command(action, params)


def run_party(cls, settings: RoleSettings) -> None:
    node = cls(settings)
    log.info("%s ready", node.role)
    node.serve_forever()
