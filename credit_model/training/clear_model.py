"""The committed circuit run under Concrete's simulation: the clear quantized model, fast and keyless."""

from __future__ import annotations

from typing import Any, Mapping

from credit_model.deployment import Deployment
from credit_model.explainability import is_approved
from credit_model.training.fhe_model import SimulatedPartyClient, ml_client, ml_server
from credit_model.schema import PARTIES


class ClearModel:
    """Predicts exactly what the encrypted circuit computes, in the clear (for tests and scenario search)."""

    def __init__(self, deployment: Deployment):
        self.client = SimulatedPartyClient(ml_client(deployment))
        self.server = ml_server(deployment, simulate=True)
        self.preprocessors = {p: deployment.preprocessor(p) for p in PARTIES}

    def probabilities(self, records: Mapping[str, Mapping[str, Any]]):
        """[p(denied), p(approved)] for one applicant given each party's raw record."""
        blobs = [self.client.quantize_encrypt_serialize_party(p, self.preprocessors[p].transform_records([records[p]]))
                 for p in PARTIES]
        return self.client.decrypt_probabilities(self.server.run_parties(blobs, None))[0]

    def probability(self, records: Mapping[str, Mapping[str, Any]]) -> float:
        """P(approved) for one applicant given each party's raw record."""
        return float(self.probabilities(records)[1])

    def approved(self, records: Mapping[str, Mapping[str, Any]]) -> bool:
        return is_approved(self.probabilities(records))
