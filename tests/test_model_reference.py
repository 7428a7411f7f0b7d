"""The committed circuits (every family) decide as the trained model applied by hand (tests/tree_by_hand.py), on a few hundred
applicants per deployment; the shipped scenarios' expectations agree with that independent reference too."""

import random
from pathlib import Path

import pytest

from credit_model.deployment import COMMITTED, DEPLOYMENTS_DIR, load_deployment
from scenarios import shipped_scenarios
from bench.load import applicant_records
from scenarios.spec import load_scenario
from tests.tree_by_hand import TreeByHand

APPLICANTS = {"kaggle": 150, "demo": 56, "synthetic": 150, "kaggle_xgboost": 150, "kaggle_logistic": 150}  # real rows; as many random variants again


def applicants(name, by_hand):
    rows = applicant_records(load_deployment(DEPLOYMENTS_DIR / name), APPLICANTS[name], 2024)
    rng = random.Random(name)
    return rows + [by_hand.random_variant(row, rng) for row in rows for _ in range(2)]


@pytest.fixture(scope="module", params=COMMITTED)
def deployment_pair(request):
    from credit_model.training.clear_model import ClearModel
    return request.param, TreeByHand(DEPLOYMENTS_DIR / request.param), ClearModel(
        load_deployment(DEPLOYMENTS_DIR / request.param))


def test_the_circuit_decides_as_the_tree_applied_by_hand(deployment_pair):
    """Every decision of the committed circuit (Concrete's simulation of it, through the roles' per-party
    quantize/encrypt path) equals the tree walked by hand; p(approved) differs by at most the leaves' quantization."""
    name, by_hand, clear = deployment_pair
    people = applicants(name, by_hand)
    assert len(people) >= 150
    decisions = {True: 0, False: 0}
    wrong, worst = [], 0.0
    leaf_bits = by_hand.tree["input_quantizers"][0]["n_bits"]
    for records in people:
        expected, p_circuit = by_hand.approved(records), clear.probability(records)
        decisions[expected] += 1
        if (p_circuit > 0.5) != expected:
            wrong.append((records, by_hand.probability(records), p_circuit))
        worst = max(worst, abs(p_circuit - by_hand.probability(records)))
    assert decisions[True] and decisions[False], f"{name}: the applicants must include both outcomes: {decisions}"
    assert not wrong, f"{name}: {len(wrong)}/{len(people)} decisions differ, first: {wrong[0]}"
    # a tree's reference is the leaf's float probability; an ensemble's or a linear model's applies the quantization
    tolerance = 1.0 / (2 ** leaf_bits - 1) + 1e-9 if by_hand.family == "tree" else 1e-6
    assert worst <= tolerance, f"{name}: p(approved) off by {worst}"


def test_the_monotone_deployments_never_lower_p_approved_as_years_employed_goes_up(deployment_pair):
    """Checked on the hand-applied tree over every bin: bisect's correctness rests on it."""
    name, by_hand, _ = deployment_pair
    if not load_deployment(DEPLOYMENTS_DIR / name).manifest.get("monotonic_cst"):
        pytest.skip(f"{name} is trained without the monotone constraint (bisect refuses it)")
    people = applicants(name, by_hand)
    rises = 0
    for records in people:
        curve = [by_hand.probability(by_hand.with_bin(records, b)) for b in by_hand.bins()]
        assert curve == sorted(curve), (name, records, curve)
        rises += curve[-1] > curve[0]
    assert rises, f"{name}: years employed never changes p(approved) in {len(people)} applicants"


def shipped_cases():
    for name in COMMITTED:
        for path in sorted(shipped_scenarios(name).glob("*.yaml")):
            scenario = load_scenario(path)
            checks = any(s.expect.decision or s.expect.outcome for a in scenario.applicants for s in a.steps)
            if Path(scenario.deployment).name == name and not scenario.faults and checks:
                yield pytest.param(name, path, id=f"{name}/{path.stem}")


@pytest.mark.parametrize(("name", "path"), list(shipped_cases()))
def test_each_shipped_scenario_expects_what_the_hand_applied_tree_decides(name, path):
    """The YAML expectations the real-FHE end-to-end runs are checked against come from this reference."""
    by_hand = TreeByHand(DEPLOYMENTS_DIR / name)
    checked = 0
    for applicant in load_scenario(path).applicants:
        records, bins = applicant.data, by_hand.bins()
        own = bins.index(records["agency"][by_hand.years["name"]])
        flips = [b for b in bins[own + 1:] if by_hand.approved(by_hand.with_bin(records, b))]
        for step in applicant.steps:
            expect = step.expect
            if expect.decision:
                assert expect.decision == ("approved" if by_hand.approved(records) else "denied"), applicant.name
                checked += 1
            if step.action == "explain" and expect.outcome:
                outcome = ("approved_at_own_bin" if by_hand.approved(records)
                           else "at_last_bin" if own == len(bins) - 1 else "bin_found" if flips else "no_bin_helps")
                assert expect.outcome == outcome, (applicant.name, step)
                if outcome == "bin_found" and expect.bin:
                    assert expect.bin == flips[0], (applicant.name, flips)
                checked += 1
    assert checked, f"{path} has no decision or explanation to check"
