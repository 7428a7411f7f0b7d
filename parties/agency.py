"""The credit-scoring agency role: owns Years_employed and Employed; re-encrypts candidate bins on request
(the bins are the deployment's, from its schema; "employed, with at least a bin" where the deployment says so)."""

from __future__ import annotations

from credit_model.schema import EMPLOYED_FEATURE, YEARS_FEATURE
from protocol.errors import ErrorCode, Forbidden, ProtocolError
from protocol.messages import Ack, Candidate
from protocol.settings import RoleSettings, role_command, run_as_process

from .feature_party import FeatureParty, run_party


class Agency(FeatureParty):
    def __init__(self, settings: RoleSettings):
        super().__init__("agency", settings)

    def handle_other(self, sender: str, message):
        if not isinstance(message, Candidate):  # only the user may send it: protocol/authorization.py
            return super().handle_other(sender, message)
        if message.session_id not in self.records:
            raise ProtocolError(f"the agency holds no record for session {message.session_id!r}",
                                ErrorCode.UNKNOWN_SESSION)
        key_id, features = self.records[message.session_id]
        if key_id != message.key_id:
            raise Forbidden(f"session {message.session_id!r} was encrypted under another key id")
        bins = self.schema.bins
        own = bins.index(features[YEARS_FEATURE])
        target = own + message.offset
        if message.offset < 0 or target >= len(bins):
            raise ProtocolError(f"offset {message.offset} leaves the bins (own bin is "
                                f"{features[YEARS_FEATURE]})", ErrorCode.MALFORMED)
        # a deployment whose data has every non-employed applicant in the first bin proposes, to one who is not
        # employed, being employed with at least a higher bin: the agency encrypts both features
        employed = bool(features.get(EMPLOYED_FEATURE, True))
        adds_employment = self.deployment.employed_candidates and not employed
        detail = {"bin": bins[target], "own_index": own, "bins_above": len(bins) - 1 - own,
                  "adds_employment": adds_employment}
        if message.encrypt:
            candidate = dict(features, **{YEARS_FEATURE: bins[target]})
            if adds_employment and message.offset > 0:
                candidate[EMPLOYED_FEATURE] = True
            detail.update(self.send_input(message.session_id, key_id, message.variant, candidate))
        return Ack(detail)


main = role_command("agency", lambda settings: run_party(Agency, settings))

if __name__ == "__main__":
    run_as_process(main)
