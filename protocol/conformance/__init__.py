"""Protocol conformance checks against any implementation of a serving role (evaluator, bank, agency)."""

from __future__ import annotations

from functools import cached_property
from typing import Callable

from .basic import common_checks, evaluator_checks, party_checks
from .hostile import (
    admission_checks, authorization_checks, evaluator_hostile_checks, flood_check, limit_checks,
    party_hostile_checks, slow_reader_check,
)
from .target import CheckResult, Target

SERVING_ROLES = ("evaluator", "bank", "agency")
PARTIES = ("user", "bank", "agency")


class Materials:
    """What the checks send that must be genuine: a key set of the deployment's circuit, its evaluation key,
    one applicant's ciphertexts (simulated or real), a key of another circuit. Built once, when first needed."""

    def __init__(self, deployment: str | None, fhe: str):
        self.deployment_dir, self.fhe = deployment, fhe

    @cached_property
    def deployment(self):
        from credit_model.deployment import load_deployment
        return load_deployment(self.deployment_dir)

    @cached_property
    def record(self) -> dict:
        """One valid applicant of the deployment's schema; the expected answer comes from the clear model."""
        return self.deployment.schema.example()

    @cached_property
    def client(self):
        from credit_model.training.fhe_model import ml_client
        client = ml_client(self.deployment)
        if self.fhe == "simulate":
            from credit_model.training.fhe_model import SimulatedPartyClient
            return SimulatedPartyClient(client)
        client.generate_private_and_evaluation_keys()
        return client

    @cached_property
    def blobs(self) -> dict[str, bytes]:
        return {p: self.client.quantize_encrypt_serialize_party(
            p, self.deployment.preprocessor(p).transform_records([self.record[p]])) for p in PARTIES}

    @cached_property
    def evaluation_key(self) -> bytes | None:
        return None if self.fhe == "simulate" else self.client.get_serialized_evaluation_keys()

    @cached_property
    def second_evaluation_key(self) -> bytes:
        """The evaluation key of another key set of the same circuit (the user made new keys)."""
        from credit_model.training.fhe_model import ml_client
        client = ml_client(self.deployment)
        client.generate_private_and_evaluation_keys()
        return client.get_serialized_evaluation_keys()

    @cached_property
    def output_secret_key(self) -> tuple[int, bytes]:
        """(key id, blob) of the secret key the circuit's output is encrypted under (the user keeps it)."""
        from credit_model.training.fhe_model import ml_client
        client = ml_client(self.deployment)
        client.generate_private_and_evaluation_keys()
        keys = client.client.keys._keyset.get_client_keys().get_secret_keys()  # pylint: disable=protected-access
        output_id = self.deployment.spec().output_key_ids[0]
        return output_id, keys[output_id].serialize()

    @cached_property
    def other_circuit_key(self) -> bytes:
        """A genuine evaluation key of another (tiny) circuit: it deserializes, but has another size."""
        import numpy as np
        from concrete import fhe

        @fhe.compiler({"x": "encrypted"})
        def plus_one(x):
            return x + 1
        circuit = plus_one.compile([np.array([[i, i]]) for i in range(8)])
        circuit.keygen()
        return circuit.client.evaluation_keys.serialize()

    def eval_key_limit(self) -> int:
        size = self.deployment.manifest.get("fhe", {}).get("eval_key_bytes")
        return size + 64 * 1024 if size else 512 * 1024 * 1024


def checks_for(role: str, target: Target, fhe: str, materials: Materials, max_sessions: int):
    checks = list(common_checks(target))
    if target.secure:
        checks += admission_checks(target) + authorization_checks(target)
    limit = materials.eval_key_limit() if role == "evaluator" else 0
    checks += limit_checks(target, limit)
    if role == "evaluator":
        checks += evaluator_checks(target, fhe, materials)
        checks += evaluator_hostile_checks(target, materials, max_sessions)
    else:
        checks += party_checks(target, target.secure, materials)
        checks += party_hostile_checks(target, materials)
    # last: an implementation that blocks, or dies, spoils no other check
    return checks + slow_reader_check(target) + flood_check(target)


def run_conformance(role: str, endpoint: str, keys_dir: str | None = None, server_key: bytes | None = None,
                    fhe: str = "execute", timeout: float = 30.0,
                    report: Callable[[CheckResult], None] = lambda r: None, deployment: str | None = None,
                    max_sessions: int = 20) -> list[CheckResult]:
    """Run every check for `role` at `endpoint`; each check is reported as it finishes."""
    if role not in SERVING_ROLES:
        raise ValueError(f"role must be one of {SERVING_ROLES}")
    target = Target(role, endpoint, keys_dir, server_key, timeout)
    materials = Materials(deployment, fhe)
    results, died = [], None
    try:
        for name, check in checks_for(role, target, fhe, materials, max_sessions):
            if died is not None:
                results.append(CheckResult(f"{role}: {name}", False, f"not run: the implementation {died}"))
                report(results[-1])
                continue
            try:
                ok, detail = check()
            except Exception as exc:  # noqa: BLE001 - a check that blows up has failed
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results.append(CheckResult(f"{role}: {name}", bool(ok), "" if ok else detail))
            report(results[-1])
            if not target.alive():  # a check that kills the implementation fails, and so does the run
                died = f"stopped answering during: {name}"
                results.append(CheckResult(f"{role}: alive: it still answers a PING after every check", False,
                                           f"the implementation {died}"))
                report(results[-1])
        if died is None:
            results.append(CheckResult(f"{role}: alive: it still answers a PING after every check", True))
            report(results[-1])
    finally:
        target.close()
    return results


__all__ = ["CheckResult", "SERVING_ROLES", "run_conformance"]
