"""The evaluator process: accepts evaluation keys and party ciphertexts, runs the circuit, serves outputs."""

from __future__ import annotations

import hashlib
import logging
import signal
import time
from pathlib import Path

from credit_model.runtime.circuit_server import CircuitServer
from credit_model.deployment import Deployment
from credit_model.schema import PARTIES
from protocol.errors import ErrorCode, Forbidden, IllegalState, OverQuota, ProtocolError
from protocol.messages import (
    Ack, Error, EvalKey, GetOutput, Input, KeyQuery, KeyStatus, MessageType, Output, Run,
)
from protocol.node import Node

from .runners import Job, ThreadRunner
from .store import Session, SessionStore, check_fingerprint, check_id

log = logging.getLogger("fhe_credit_sim.evaluator")


class Evaluator(Node):
    """Never holds a client key or a plaintext feature: only evaluation keys and ciphertexts."""

    def __init__(self, deployment: Deployment, endpoint: str, workdir: Path, control: str | None = None,
                 simulate: bool = False, max_sessions: int = 20, max_keys: int = 20, max_store_mb: int = 4096,
                 workers: int = 0,
                 worker_threads: int = 0, capture_dir: Path | None = None, curve=None,
                 exit_with_parent: bool = False, faults: str | None = None, liveness: float = 4.0,
                 run_dir: str | None = None, engine: str = "local", scheduler: str | None = None,
                 cluster_tls: str | None = None, worker_cache_mb: int = 512):
        super().__init__("evaluator", control, capture_dir=capture_dir, poll_ms=5, curve=curve,
                         exit_with_parent=exit_with_parent, faults=faults, liveness=liveness, run_dir=run_dir,
                         workdir=workdir)
        self.simulate = simulate
        # A compressed evaluation key of this circuit always has this size; Concrete aborts the process
        # when it runs with a key of another circuit, so a key of any other size is refused up front.
        self.eval_key_bytes = deployment.manifest.get("fhe", {}).get("eval_key_bytes")
        self.store = SessionStore(workdir, PARTIES, max_sessions, max_keys, max_store_mb * 2**20)
        if self.store.recovered:
            log.info("evaluator: recovered %d session(s) and %d key(s) from %s",
                     self.store.recovered, len(self.store.keys), workdir)
        self.waiters: list[tuple[bytes, int, str, str, str, float]] = []  # parked GET_OUTPUT requests
        # One parked GET_OUTPUT per run is enough; more are refused so that waiting costs no memory.
        self.max_waiters = 4 * max_sessions
        if engine == "dask":  # a Dask cluster (remote scheduler, or --workers N local worker processes)
            from .dask_runner import DaskRunner
            self.runner = DaskRunner(deployment=str(deployment.directory), simulate=simulate,
                                     cache_bytes=worker_cache_mb * 2**20, warmup_inputs=deployment.warmup_inputs(),
                                     scheduler=scheduler, tls_dir=cluster_tls, workers=workers,
                                     worker_threads=worker_threads, workdir=Path(workdir))
        elif workers > 0:  # refused by the command line already; worker processes are the Dask engine's
            raise ValueError("--workers N runs on a local Dask cluster: use --engine dask --workers N")
        else:
            self.runner = ThreadRunner(deployment.circuit_server(simulate, Path(workdir) / "circuit"),
                                       warmup_inputs=deployment.warmup_inputs())
        # The largest legal message is the circuit's evaluation key: its type's limit is lowered to it.
        limits = {MessageType.EVAL_KEY: self.eval_key_bytes + 64 * 1024} if self.eval_key_bytes else {}
        self.socket = self.serve_router(endpoint, self.handle, limits=limits)

    # --- message handlers (the sender is already authorized for the type: protocol/authorization.py) ----
    def handle(self, sender: str, packet):
        message = packet.message
        if isinstance(message, KeyQuery):
            check_id("key id", message.key_id)
            check_fingerprint(message.fingerprint)
            present = self.simulate or self.store.key_fingerprint(message.key_id) == message.fingerprint
            return KeyStatus(message.key_id, present)
        if isinstance(message, EvalKey):
            return self.on_eval_key(sender, message)
        if isinstance(message, Input):
            return self.on_input(sender, message)
        if isinstance(message, Run):
            return self.on_run(sender, message)
        if isinstance(message, GetOutput):
            return self.on_get_output(sender, message)
        raise IllegalState(f"the evaluator has no handler for {message.TYPE.value}")

    def on_eval_key(self, sender: str, message: EvalKey):
        check_id("key id", message.key_id)
        size = len(message.evaluation_key)
        if self.eval_key_bytes and size != self.eval_key_bytes:
            raise ProtocolError(f"evaluation key of the wrong shape: {size} bytes, this circuit's key has "
                                f"{self.eval_key_bytes}", ErrorCode.BAD_CIPHERTEXT)
        fingerprint = hashlib.sha256(message.evaluation_key).hexdigest()
        held = self.store.key_fingerprint(message.key_id)
        busy = {s.key_id for s in self.store.sessions.values() if s.running is not None}
        if held == fingerprint:
            raise IllegalState(f"key id {message.key_id!r} already has this evaluation key")
        if held is not None and self.store.key_owner[message.key_id] != sender:
            raise Forbidden(f"key id {message.key_id!r} belongs to another owner (a key is never replaced by "
                            "another owner)")
        if held is not None and message.key_id in busy:
            raise IllegalState(f"a run is using key id {message.key_id!r}: its key cannot be replaced now")
        try:
            keys = CircuitServer.load_keys(message.evaluation_key)
        except ValueError as exc:
            raise ProtocolError(str(exc), ErrorCode.BAD_CIPHERTEXT) from None
        if held is not None:  # the owner made new keys for this key id: the old key and its sessions go
            dropped = self.store.replace_key(message.key_id)
            log.info("evaluator: key id %s has new keys; its old key and %d session(s) under it are dropped",
                     message.key_id, len(dropped))
        self.store.put_key(message.key_id, message.evaluation_key, owner=sender, busy=busy)
        self.runner.prime(self.store.key_path(message.key_id), keys)
        return Ack({"key_id": message.key_id, "bytes": size})

    def on_input(self, sender: str, message: Input):
        if message.party not in PARTIES:
            raise ProtocolError(f"unknown party {message.party!r}", ErrorCode.MALFORMED)
        for kind, value in (("session id", message.session_id), ("key id", message.key_id),
                            ("variant", message.variant)):
            check_id(kind, value)
        try:
            CircuitServer.load_value(message.ciphertext)
        except ValueError as exc:
            raise ProtocolError(f"{message.party} {exc}", ErrorCode.BAD_CIPHERTEXT) from None
        if message.party == "user":  # the applicant's own input opens its session
            session = self.store.open(message.session_id, message.key_id, owner=sender)
        else:  # bank and agency add to a session its user opened, under its key id
            session = self.store.get(message.session_id)
        self.store.add_input(session, message.party, message.variant, message.key_id, message.ciphertext)
        return Ack({"session_id": session.session_id, "state": session.machine.state.value,
                    "missing": session.missing()})

    def owned_session(self, sender: str, session_id: str):
        session = self.store.get(session_id)
        if session.owner != sender:
            raise Forbidden(f"session {session_id!r} belongs to another owner")
        return session

    def on_run(self, sender: str, message: Run):
        session = self.owned_session(sender, message.session_id)
        chosen = self.store.plan_run(session, message.run_id, message.variants)
        key_path = None if self.simulate else self.store.key_path(session.key_id)
        if key_path is None and not self.simulate:
            raise ProtocolError(f"keys not generated yet: no evaluation key for key id {session.key_id!r}; "
                                "the user must upload it first", ErrorCode.KEYS_NOT_GENERATED)
        inputs = self.store.start_run(session, message.run_id, chosen)
        output = self.store.output_path(session)
        self.runner.submit(Job(session.session_id, message.run_id, key_path, tuple(inputs), output))
        return Ack({"session_id": session.session_id, "run_id": message.run_id})

    def on_get_output(self, sender: str, message: GetOutput):
        session = self.owned_session(sender, message.session_id)
        check_id("run id", message.run_id)
        if message.run_id in session.failures:
            raise session.failures[message.run_id]
        record = session.outputs.get(message.run_id)
        if record is None:
            running = session.running == message.run_id
            if running and message.wait_ms > 0:
                if len(self.waiters) >= self.max_waiters:
                    raise OverQuota(f"{len(self.waiters)} output requests are already waiting; ask again later")
                deadline = time.monotonic() + min(message.wait_ms, 600_000) / 1000
                self.waiters.append((self.current_identity, self.current_seq, sender, session.session_id,
                                     message.run_id, deadline))
                return None  # answered from tick() when the run ends or the wait expires
            state = ("is still running" if running else "is no longer kept" if message.run_id in session.runs
                     else "was never started")
            raise ProtocolError(f"output not ready: run {message.run_id!r} {state}",
                                ErrorCode.OUTPUT_NOT_READY)
        return Output(session.session_id, message.run_id, record.seconds, dict(record.inputs),
                      record.path.read_bytes())

    # --- background runs ------------------------------------------------------------------
    def tick(self) -> None:
        finished = self.runner.finished()
        if finished:  # Concrete's runtime makes SIGPIPE fatal when it first runs: keep it ignored, as Python does
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for done in finished:
            job = done.job
            session: Session | None = self.store.sessions.get(job.session_id)
            if session is None or session.running != job.run_id:
                continue
            if done.error is not None:
                self.store.fail_run(session, job.run_id, ProtocolError(
                    f"run {job.run_id!r} failed: {done.error}", ErrorCode(done.code)))
                continue
            self.store.finish_run(session, job.run_id, job.output, done.seconds)
            log.info("evaluator: run %s of %s took %.2f s", job.run_id, job.session_id, done.seconds)
        self._answer_waiters()

    def _answer_waiters(self) -> None:
        """Reply to parked GET_OUTPUT requests whose run ended or whose wait expired."""
        now, still = time.monotonic(), []
        for identity, seq, sender, session_id, run_id, deadline in self.waiters:
            session = self.store.sessions.get(session_id)
            if session is not None and session.running == run_id and now < deadline:
                still.append((identity, seq, sender, session_id, run_id, deadline))
                continue
            try:
                reply = self.on_get_output(sender, GetOutput(session_id, run_id))
            except ProtocolError as exc:
                reply = Error(exc.code.value, exc.reason)
            self.send_reply(self.socket, identity, reply, seq)
        self.waiters = still

    def on_command(self, action: str, params: dict) -> dict:
        if action == "status":
            return {"sessions": len(self.store.sessions), "keys": len(self.store.keys),
                    "bytes_on_disk": self.store.bytes_on_disk(), "bytes_by_owner": dict(self.store.bytes_by),
                    "simulate": self.simulate}
        return super().on_command(action, params)

    def close(self) -> None:
        self.runner.close()
        super().close()
