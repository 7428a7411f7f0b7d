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
    from credit_model.training.clear_model import ClearModel
    from bench.load import applicant_records

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


@pytest.mark.slow
def test_training_honours_the_monotone_constraint_on_data_that_fights_it(tmp_path):
    """Labels that fall as years employed rise (approved below 5 years, denied above, with noise): an unconstrained
    tree follows them down; with the constraint (the synthetic preset) the tree written out is never lower for a
    higher bin. Checked on the tree applied by hand (tests/tree_by_hand.py), over every bin, 200 applicants."""
    from dataclasses import replace

    from credit_model.training.data_schemas import SYNTHETIC_SCHEMA
    from credit_model.training.generator import LABEL, generate_applicants
    from credit_model.training.train import PRESETS, train_and_deploy
    from tests.tree_by_hand import TreeByHand

    df = generate_applicants(2000, 11)
    bins = list(SYNTHETIC_SCHEMA.bins)
    rng = random.Random(11)
    df[LABEL] = [int((bins.index(b) <= 1) != (rng.random() < 0.1)) for b in df[YEARS_FEATURE]]
    train, test = df.iloc[:1600].reset_index(drop=True), df.iloc[1600:].reset_index(drop=True)
    records = random_records(SYNTHETIC_SCHEMA, 200, 5)

    def curves(monotone):
        config = replace(PRESETS["synthetic"], fhe_check_samples=2, max_depth=3, monotone_years=monotone)
        train_and_deploy(tmp_path / str(monotone), config, log=lambda _: None, frames=(train, test, SYNTHETIC_SCHEMA))
        by_hand = TreeByHand(tmp_path / str(monotone))
        return [[by_hand.probability(by_hand.with_bin(r, b)) for b in by_hand.bins()] for r in records]

    assert PRESETS["synthetic"].monotone_years
    falling = [c for c in curves(False) if c != sorted(c)]
    assert falling, "the data must pull an unconstrained tree down as years rise, or this test proves nothing"
    assert all(c == sorted(c) for c in curves(True))
