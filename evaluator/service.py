"""The evaluator process: accepts evaluation keys and party ciphertexts, runs the circuit, serves outputs."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from credit_model.deployment import Deployment
from credit_model.schema import PARTIES
from protocol.errors import ErrorCode, IllegalState, ProtocolError
from protocol.messages import (
    Ack, EvalKey, GetOutput, Input, KeyQuery, KeyStatus, Output, Run,
)
from protocol.node import Node
from protocol.states import Event, SessionState

from .store import BASE_VARIANT, Session, SessionStore, check_id

log = logging.getLogger("fhe_credit_sim.evaluator")


class Evaluator(Node):
    """Never holds a client key or a plaintext feature: only evaluation keys and ciphertexts."""

    def __init__(self, deployment: Deployment, endpoint: str, workdir: Path, control: str | None = None,
                 simulate: bool = False, max_sessions: int = 20, max_keys: int = 20, warm_keys: int = 4,
                 capture_dir: Path | None = None):
        super().__init__("evaluator", control, capture_dir=capture_dir)
        self.simulate = simulate
        self.server = deployment.server(simulate=simulate)
        self.store = SessionStore(workdir, PARTIES, max_sessions, max_keys)
        self.warm: OrderedDict[str, object] = OrderedDict()
        self.warm_keys = warm_keys
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhe-run")
        self.pending: dict[tuple[str, str], Future] = {}
        self.serve_router(endpoint, self.handle)

    # --- key objects ----------------------------------------------------------------------
    def key_object(self, key_id: str):
        """The deserialized evaluation key, kept warm (bounded LRU) so runs skip key set-up."""
        if self.simulate:
            return None
        if key_id in self.warm:
            self.warm.move_to_end(key_id)
            return self.warm[key_id]
        path = self.store.key_path(key_id)
        if path is None:
            raise ProtocolError(f"keys not generated yet: no evaluation key for key id {key_id!r}; "
                                "the user must upload it first", ErrorCode.KEYS_NOT_GENERATED)
        from concrete import fhe
        self.warm[key_id] = fhe.EvaluationKeys.deserialize(path.read_bytes())
        while len(self.warm) > self.warm_keys:
            self.warm.popitem(last=False)
        return self.warm[key_id]

    # --- message handlers -----------------------------------------------------------------
    def handle(self, sender: str, packet):
        message = packet.message
        if isinstance(message, KeyQuery):
            check_id("key id", message.key_id)
            present = self.simulate or self.store.key_path(message.key_id) is not None
            return KeyStatus(message.key_id, present)
        if isinstance(message, EvalKey):
            return self.on_eval_key(message)
        if isinstance(message, Input):
            return self.on_input(sender, message)
        if isinstance(message, Run):
            return self.on_run(message)
        if isinstance(message, GetOutput):
            return self.on_get_output(message)
        raise IllegalState(f"the evaluator does not accept {message.TYPE.value} messages")

    def on_eval_key(self, message: EvalKey):
        from concrete import fhe
        check_id("key id", message.key_id)
        try:
            keys = fhe.EvaluationKeys.deserialize(message.evaluation_key)
        except Exception as exc:  # noqa: BLE001 - any failure means the key is not usable
            raise ProtocolError(f"evaluation key does not deserialize: {exc}", ErrorCode.BAD_CIPHERTEXT) from None
        for old in self.store.put_key(message.key_id, message.evaluation_key):
            self.warm.pop(old, None)
        self.warm[message.key_id] = keys
        self.warm.move_to_end(message.key_id)
        while len(self.warm) > self.warm_keys:
            self.warm.popitem(last=False)
        return Ack({"key_id": message.key_id, "bytes": len(message.evaluation_key)})

    def on_input(self, sender: str, message: Input):
        if message.party not in PARTIES:
            raise ProtocolError(f"unknown party {message.party!r}", ErrorCode.MALFORMED)
        if sender != message.party:
            raise ProtocolError(f"{sender} may not send the {message.party} input", ErrorCode.ILLEGAL_STATE)
        for kind, value in (("session id", message.session_id), ("key id", message.key_id),
                            ("variant", message.variant)):
            check_id(kind, value)
        from concrete import fhe
        try:
            fhe.Value.deserialize(message.ciphertext)
        except Exception as exc:  # noqa: BLE001
            raise ProtocolError(f"{message.party} ciphertext does not deserialize: {exc}",
                                ErrorCode.BAD_CIPHERTEXT) from None
        session = self.store.open(message.session_id, message.key_id)
        self.store.add_input(session, message.party, message.variant, message.ciphertext)
        return Ack({"session_id": session.session_id, "state": session.machine.state.value,
                    "missing": session.missing()})

    def on_run(self, message: Run):
        session = self.store.get(message.session_id)
        check_id("run id", message.run_id)
        if session.machine.state is SessionState.COLLECTING:
            raise ProtocolError(f"inputs missing from: {', '.join(session.missing())}",
                                ErrorCode.MISSING_INPUTS)
        paths = []
        for party in PARTIES:
            variant = message.variants.get(party, BASE_VARIANT)
            if (party, variant) not in session.inputs:
                raise ProtocolError(f"inputs missing from: {party} (variant {variant!r})",
                                    ErrorCode.MISSING_INPUTS)
            paths.append(session.inputs[(party, variant)])
        keys = self.key_object(session.key_id)
        session.machine.fire(Event.RUN)
        session.running = message.run_id
        session.failures.pop(message.run_id, None)
        self.pending[(session.session_id, message.run_id)] = self.executor.submit(
            self._run, [p.read_bytes() for p in paths], keys)
        return Ack({"session_id": session.session_id, "run_id": message.run_id})

    def _run(self, inputs, keys) -> tuple[bytes, float]:
        start = time.perf_counter()
        output = self.server.run_parties(inputs, keys)
        return output, time.perf_counter() - start

    def on_get_output(self, message: GetOutput):
        session = self.store.get(message.session_id)
        if message.run_id in session.failures:
            raise session.failures[message.run_id]
        if message.run_id not in session.outputs:
            state = "is still running" if session.running == message.run_id else "was never started"
            raise ProtocolError(f"output not ready: run {message.run_id!r} {state}",
                                ErrorCode.OUTPUT_NOT_READY)
        path = session.outputs[message.run_id]
        return Output(session.session_id, message.run_id, session.seconds.get(message.run_id, 0.0),
                      path.read_bytes())

    # --- background runs ------------------------------------------------------------------
    def tick(self) -> None:
        for (session_id, run_id), future in list(self.pending.items()):
            if not future.done():
                continue
            del self.pending[(session_id, run_id)]
            session: Session | None = self.store.sessions.get(session_id)
            if session is None:
                continue
            session.running = None
            try:
                output, seconds = future.result()
            except Exception as exc:  # noqa: BLE001 - a failed run is reported, not fatal
                session.failures[run_id] = ProtocolError(
                    f"the circuit refused the inputs of run {run_id!r}: {exc}", ErrorCode.BAD_CIPHERTEXT)
                session.machine.fire(Event.RUN_FAILED)
                continue
            self.store.add_output(session, run_id, output)
            session.seconds[run_id] = seconds
            session.machine.fire(Event.RUN_DONE)
            log.info("evaluator: run %s of %s took %.2f s", run_id, session_id, seconds)

    def on_command(self, action: str, params: dict) -> dict:
        if action == "status":
            return {"sessions": len(self.store.sessions), "keys": len(self.store.keys),
                    "warm_keys": len(self.warm), "bytes_on_disk": self.store.bytes_on_disk(),
                    "simulate": self.simulate}
        return super().on_command(action, params)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        super().close()
