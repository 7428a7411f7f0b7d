"""Deployments carry their schema: a scenario names its deployment, is checked against that schema, and a deployment
trained on a schema of one's own (other categories, another bin list) runs end to end through the four roles."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from credit_model.deployment import load_deployment
from credit_model.schema import PARTIES, Feature, Schema
from run_scenario import cli
from scenarios import SCENARIO_DIR

RUNNER = CliRunner()
# A schema that shares no category and no bin list with the committed ones.
BINS = ("new", "settled", "veteran", "lifer")
SCHEMA = Schema({
    "user": (Feature("Income", "float", minimum=0, maximum=1e7),
             Feature("Contract", "category", ("Permanent", "Fixed term", "Freelance"))),
    "bank": (Feature("Months_as_client", "int", minimum=0, maximum=600),),
    "agency": (Feature("Years_employed", "ordinal", BINS), Feature("Employed", "bool")),
})


def tiny_frames(n: int = 1200, seed: int = 4):
    """Applicants of SCHEMA with a label that rises with the years-employed bin and the months as a client."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    years = rng.integers(0, len(BINS), n)
    months = rng.integers(0, 240, n)
    score = years * 1.0 + months / 60 + rng.normal(0, 0.8, n)
    df = pd.DataFrame({
        "Income": rng.uniform(10_000, 200_000, n).round(0),
        "Contract": rng.choice(["Permanent", "Fixed term", "Freelance"], n),
        "Months_as_client": months, "Years_employed": [BINS[i] for i in years], "Employed": years > 0,
        "Approved": score > 3.0,
    })
    return df.iloc[: n * 3 // 4], df.iloc[n * 3 // 4:], SCHEMA


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from credit_model.training.train import TrainingConfig, train_and_deploy

    out = tmp_path_factory.mktemp("tiny") / "tiny"
    train_and_deploy(out, TrainingConfig(data="tiny", max_depth=3, n_bits=3, fhe_check_samples=3),
                     log=lambda _: None, frames=tiny_frames())
    return load_deployment(out)


def scenario_for(deployment, tmp_path, records, steps) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "description": "A deployment with a schema of its own.",
                                    "deployment": str(deployment.directory), "fhe": "simulate",
                                    "applicants": [{"name": "zoe", **records, "steps": steps}]}, sort_keys=False))
    return str(path)


@pytest.mark.fhe  # training checks 3 applicants with real FHE
def test_a_deployment_with_its_own_schema_runs_end_to_end(tiny, tmp_path):
    from credit_model.training.clear_model import ClearModel

    assert tiny.schema == SCHEMA and tiny.bins == BINS  # read back from its manifest
    clear = ClearModel(tiny)
    records = {"user": {"Income": 50_000.0, "Contract": "Freelance"}, "bank": {"Months_as_client": 12},
               "agency": {"Years_employed": "new", "Employed": False}}
    outcomes = [clear.approved({**records, "agency": {**records["agency"], "Years_employed": b}}) for b in BINS]
    assert outcomes[0] is False and any(outcomes), outcomes  # a denied applicant whom some bin would approve
    first = BINS[outcomes.index(True)]
    path = scenario_for(tiny, tmp_path, records, [
        {"action": "predict", "expect": {"decision": "denied"}},
        {"action": "explain", "strategy": "linear", "expect": {"outcome": "bin_found", "bin": first}},
        {"action": "explain", "strategy": "bisect", "expect": {"outcome": "bin_found", "bin": first}}])
    result = RUNNER.invoke(cli, ["run", path])
    assert result.exit_code == 0, result.output
    assert f"having at least {first} years of employment" in result.output and "PASSED" in result.output


def test_a_scenario_checked_against_another_deployment_names_the_field(tmp_path):
    demo = SCENARIO_DIR / "demo" / "approved.yaml"
    assert RUNNER.invoke(cli, ["validate", str(demo)]).exit_code == 0  # against its own deployment: fine
    result = RUNNER.invoke(cli, ["validate", str(demo), "--deployment", "kaggle"])
    assert result.exit_code != 0
    assert "applicants[0].user.Income_type: unknown value" in result.output and "'Working'" in result.output
    kaggle = SCENARIO_DIR / "denied_bin_found.yaml"
    result = RUNNER.invoke(cli, ["validate", str(kaggle), "--deployment", "demo"])
    assert result.exit_code != 0 and "applicants[0].user.Income_type" in result.output


def test_a_scenario_naming_a_missing_deployment_is_refused(tmp_path):
    data = yaml.safe_load((SCENARIO_DIR / "approved.yaml").read_text())
    data["deployment"] = "no-such-deployment"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    result = RUNNER.invoke(cli, ["validate", str(path)])
    assert result.exit_code != 0 and f"{path}: deployment: a deployment" in result.output


def test_every_role_and_command_takes_a_deployment():
    for command in (["run"], ["validate"], ["bench"], ["load"], ["conformance"]):
        assert "--deployment" in RUNNER.invoke(cli, [*command, "--help"]).output, command
    import subprocess
    import sys
    for module in ("evaluator", "parties.user", "parties.bank", "parties.agency"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
        assert "--deployment" in out.stdout, module


@pytest.mark.parametrize("name", ["kaggle", "demo", "synthetic"])
def test_shipped_scenarios_cover_every_outcome_and_hold_on_the_clear_model(name):
    """Each deployment ships approved, bin found, no bin helps, last bin and explain-when-approved; each
    expectation holds on the deployment's clear model, bin by bin."""
    from credit_model.training.clear_model import ClearModel
    from scenarios import shipped_scenarios
    from scenarios.spec import load_scenario

    deployment = load_deployment(name)
    clear = ClearModel(deployment)
    folder = shipped_scenarios(name)
    seen = set()
    for stem in ("approved", "denied_bin_found", "denied_no_bin_helps", "denied_last_bin", "explain_when_approved"):
        scenario = load_scenario(folder / f"{stem}.yaml")
        assert scenario.deployment == str(deployment.directory)
        records = scenario.applicants[0].data
        bins = deployment.bins
        own = bins.index(records["agency"]["Years_employed"])
        outcomes = [clear.approved({**records, "agency": {**records["agency"], "Years_employed": b}}) for b in bins]
        for step in scenario.applicants[0].steps:
            expect = step.expect
            if expect.decision:
                assert outcomes[own] == (expect.decision == "approved"), (stem, outcomes)
            if expect.outcome:
                seen.add(expect.outcome)
                first = next((i for i in range(own, len(bins)) if outcomes[i]), None)
                truth = ("at_last_bin" if own == len(bins) - 1 else "no_bin_helps" if first is None
                         else "bin_found")
                assert expect.outcome == truth and expect.bin in (None, bins[first] if first is not None else None)
            if expect.error:
                seen.add(expect.error)
    assert seen == {"bin_found", "no_bin_helps", "at_last_bin", "NOT_DENIED"}


def test_the_manifest_names_what_the_kaggle_tree_reads():
    m = load_deployment("kaggle").manifest["metrics"]
    assert "Account_age" in m["features_read"] and "Years_employed" in m["features_read"]
    assert all(c.split("=")[0] in m["features_read"] for c in m["columns_read"])
    assert set(m["features_read"]) < {f["name"] for p in PARTIES
                                      for f in load_deployment("kaggle").manifest["schema"]["parties"][p]}


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.parametrize("name", ["kaggle", "demo", "synthetic"])
def test_each_deployments_shipped_scenarios_pass_with_real_fhe(name):
    from scenarios import shipped_scenarios

    stems = ("approved", "denied_bin_found", "denied_no_bin_helps", "denied_last_bin", "explain_when_approved")
    paths = [str(shipped_scenarios(name) / f"{stem}.yaml") for stem in stems]
    result = RUNNER.invoke(cli, ["run", *paths])
    assert result.exit_code == 0, result.output[-3000:]
    assert result.output.count("PASSED") == 5 and "INSECURE" not in result.output


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.parametrize("name", ["kaggle_xgboost", "kaggle_logistic"])
def test_each_family_deployments_shipped_scenarios_pass_with_real_fhe(name):
    """Every shipped scenario of the model-family deployments, the directory given as the CLI takes it (≈ 4-6 min
    each on 2 cores: each scenario pays its own keygen)."""
    from scenarios import shipped_scenarios

    folder = shipped_scenarios(name)
    result = RUNNER.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output[-3000:]
    assert result.output.count("PASSED") == len(list(folder.glob("*.yaml"))) and "INSECURE" not in result.output
