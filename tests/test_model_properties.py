"""Properties of the deployed circuits themselves: a deployment that records a monotone constraint on years employed
(which `bisect` relies on) never lowers p(approved) when the bin goes up, on held-out applicants and on random
applicants drawn from its schema."""

from __future__ import annotations

import random

import pytest

from credit_model.deployment import load_deployment
from credit_model.schema import PARTIES, YEARS_FEATURE


def random_records(schema, count: int, seed: int) -> list[dict]:
    """Valid applicants drawn uniformly over the schema: every category, the whole range of every number."""
    rng = random.Random(seed)

    def value(f):
        if f.kind == "bool":
            return rng.random() < 0.5
        if f.kind in ("category", "ordinal"):
            choices = list(f.categories) + ([None] if f.nullable else [])
            return rng.choice(choices)
        if f.kind == "int":
            return rng.randint(int(f.minimum), int(f.maximum))
        return round(rng.uniform(f.minimum, min(f.maximum, 2e6)), 2)

    return [{p: {f.name: value(f) for f in schema.features[p]} for p in PARTIES} for _ in range(count)]


@pytest.mark.parametrize("name", ["kaggle", "synthetic"])
def test_a_monotone_deployment_never_lowers_the_approval_as_years_employed_go_up(name):
    from credit_model.simulation import ClearModel
    from scenarios.load import applicant_records

    deployment = load_deployment(name)
    assert deployment.is_monotone_in_years  # what the manifest promises, and bisect trusts
    clear, bins = ClearModel(deployment), deployment.bins
    applicants = applicant_records(deployment, 150, 21) + random_records(deployment.schema, 150, 22)
    assert len(applicants) == 300
    violations, changes = [], 0
    for records in applicants:
        curve = [clear.probability({**records, "agency": {**records["agency"], YEARS_FEATURE: b}}) for b in bins]
        changes += curve[0] != curve[-1]
        if any(later < earlier for earlier, later in zip(curve, curve[1:])):
            violations.append((records, curve))
    assert changes > 0  # the years-employed bin does move the output for some applicants: the check can fail
    assert violations == [], violations[:3]
