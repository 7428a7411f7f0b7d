"""Whole scenarios through the four real processes: real FHE for the explained and repeated ones (the approved one
runs in test_custody_audit.py, which captures and searches what every role receives)."""

import pytest

from scenarios import SCENARIO_DIR
from simulation.runner import ScenarioRunner
from scenarios.spec import load_scenario


def run(name, **kwargs):
    return ScenarioRunner(load_scenario(SCENARIO_DIR / f"{name}.yaml"), **kwargs).run()


def assert_passed(report):
    assert report.fatal is None
    assert [a.failures for a in report.applicants] == [[] for _ in report.applicants]
    assert report.passed
    assert report.exit_codes == {"evaluator": 0, "user": 0, "bank": 0, "agency": 0}


@pytest.mark.fhe
@pytest.mark.slow
def test_denied_and_explained_with_real_fhe_linear_and_bisect_agree():
    report = run("denied_bin_found")
    assert_passed(report)
    explains = [s.detail for s in report.steps if s.name.startswith("explain")]
    assert [e["strategy"] for e in explains] == ["linear", "bisect"]
    assert explains[0]["explanation"] == explains[1]["explanation"]
    assert explains[0]["bin"] == explains[1]["bin"] == "5-8"
    assert explains[1]["runs"] <= 3
    kinds = {m["type"] for m in report.messages}
    assert {"CANDIDATE", "RUN", "OUTPUT", "INPUT"} <= kinds


@pytest.mark.parametrize("name", ["denied_no_bin_helps", "denied_last_bin", "explain_when_approved",
                                  "missing_party_input", "several_applicants"])
def test_other_shipped_scenarios_in_simulation(name):
    report = run(name, fhe="simulate")
    assert_passed(report)


@pytest.mark.fhe
@pytest.mark.slow
def test_repeat_applicant_reuses_keys_and_the_runner_never_carries_keys_or_ciphertexts():
    report = run("repeat_applicant")
    assert_passed(report)
    prepares = [s.detail for s in report.steps if s.name == "prepare+encrypt"]
    assert "keygen_s" in prepares[0] and prepares[0]["eval_key_uploaded"]
    assert "keygen_s" not in prepares[1] and not prepares[1]["eval_key_uploaded"]
    assert prepares[1]["client_key_shared_with"] == []
    eval_keys = [m for m in report.messages if m["type"] == "EVAL_KEY"]
    assert len(eval_keys) == 1 and eval_keys[0]["bytes"] > 10_000_000
    through_runner = [m for m in report.messages if "runner" in (m["sender"], m["receiver"])]
    assert {m["type"] for m in through_runner} <= {"READY", "COMMAND", "RESULT", "SHUTDOWN"}
    assert max(m["bytes"] for m in through_runner) < 8192
    peer_types = {m["type"] for m in report.messages if "runner" not in (m["sender"], m["receiver"])}
    assert "INPUT" in peer_types


def test_a_local_dask_cluster_of_two_workers_serves_a_scenario():
    report = run("denied_bin_found", fhe="simulate", extra_args={"evaluator": ["--engine", "dask", "--workers", "2"]})
    assert_passed(report)


def test_bisect_refuses_a_deployment_without_the_monotone_constraint(deployment, tmp_path):
    import json
    import shutil

    copy = tmp_path / "deploy"
    shutil.copytree(deployment.directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["monotonic_cst"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = run("denied_bin_found", fhe="simulate", deployment=str(copy))
    failures = report.applicants[0].failures
    assert len(failures) == 1 and "step 3 (explain)" in failures[0]
    assert "bisect strategy needs a model trained with a monotone constraint" in failures[0]
    assert report.applicants[0].errors[0]["code"] == "ILLEGAL_STATE"
