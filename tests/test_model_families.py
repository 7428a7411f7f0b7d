"""Each model family's deployment, through the roles' own runtime (credit_model/runtime: quantize, encrypt under
Concrete's simulation, the evaluator's compiled circuit, decrypt, dequantize), decides as the model applied by hand
(tests/tree_by_hand.py); and with real FHE, each family's explained scenario passes through the four processes."""

import random

import pytest

from bench.load import applicant_records
from credit_model.deployment import DEPLOYMENTS_DIR, load_deployment
from credit_model.schema import PARTIES
from scenarios import shipped_scenarios
from scenarios.spec import load_scenario
from simulation.runner import ScenarioRunner
from tests.tree_by_hand import TreeByHand

FAMILIES = {"kaggle_xgboost": "xgboost", "kaggle_logistic": "logistic"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_roles_runtime_decides_as_the_model_applied_by_hand(name):
    import credit_model.runtime.fhe_runtime as rt

    deployment = load_deployment(DEPLOYMENTS_DIR / name)
    assert deployment.family == FAMILIES[name] and deployment.is_monotone_in_years
    spec, by_hand = deployment.spec(), TreeByHand(deployment.directory)
    assert spec.family == FAMILIES[name] and by_hand.family == FAMILIES[name]
    simulator, server = rt.Simulator(spec), deployment.circuit_server(simulate=True)
    preprocessors = {p: deployment.preprocessor(p) for p in PARTIES}
    rows = applicant_records(deployment, 120, 11)
    rng = random.Random(name)
    rows += [by_hand.random_variant(row, rng) for row in rows]
    outcomes = {True: 0, False: 0}
    try:
        for records in rows:
            blobs = []
            for i, party in enumerate(PARTIES):
                start, stop = deployment.slices[party]
                x = preprocessors[party].transform_records([records[party]])
                blobs.append(simulator.encrypt(i, spec.quantize(start, stop, x)))
            p_denied, p_approved = spec.probabilities(simulator.decrypt(server.run_parties(blobs, None)))[0]
            expected = by_hand.approved(records)
            assert abs(p_approved - by_hand.probability(records)) < 1e-6, (name, records)
            assert (p_approved > p_denied) == expected, (name, records)
            outcomes[expected] += 1
    finally:
        server.close()
    assert outcomes[True] and outcomes[False], outcomes


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_shipped_scenarios_of_each_family_pass_in_simulation(name):
    paths = sorted(shipped_scenarios(name).glob("*.yaml"))
    assert len(paths) >= 4, paths
    for path in paths:
        scenario = load_scenario(path)
        report = ScenarioRunner(scenario, fhe="simulate", deployment=scenario.deployment).run()
        assert report.passed and report.fatal is None, (path.name, [a.failures for a in report.applicants])


def test_a_runner_given_no_deployment_runs_the_scenarios_own():
    """A scenario names its deployment; a runner built without one (as bench's explanation section was) started the
    default deployment's roles, which decided the xgboost applicant with the kaggle tree: carla, denied by the
    ensemble from every bin, was approved from 5-8 up."""
    scenario = load_scenario(shipped_scenarios("kaggle_xgboost") / "denied_no_bin_helps.yaml")
    assert scenario.deployment.endswith("kaggle_xgboost")
    report = ScenarioRunner(scenario, fhe="simulate").run()
    assert report.passed, [a.failures for a in report.applicants]
    assert [s.detail.get("outcome") for s in report.steps if s.name.startswith("explain")] == ["no_bin_helps"]


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_denies_and_explains_with_real_fhe(name):
    """A denied applicant explained with real FHE, linear and bisect agreeing: for xgboost one who is not employed
    (denied_not_employed: the agency's candidates are "employed, with at least X years", both features encrypted,
    and the message says so); the logistic regression approves no such applicant of the held-out rows searched,
    so its denied_bin_found is run."""
    folder = shipped_scenarios(name)
    path = folder / "denied_not_employed.yaml"
    path = path if path.exists() else folder / "denied_bin_found.yaml"
    scenario = load_scenario(path)
    report = ScenarioRunner(scenario, deployment=scenario.deployment).run()
    assert report.passed and report.fatal is None, [a.failures for a in report.applicants]
    explains = [s.detail for s in report.steps if s.name.startswith("explain")]
    assert [e["strategy"] for e in explains] == ["linear", "bisect"]
    assert explains[0]["bin"] == explains[1]["bin"]
    if path.stem == "denied_not_employed":
        assert "being employed" in explains[0]["explanation"]
