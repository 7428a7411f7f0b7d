"""The click CLI: list, validate, run (real processes) with reports, train, and the role commands."""

import json

import pytest
import yaml
from click.testing import CliRunner

from run_scenario import cli
from scenarios import SCENARIO_DIR


@pytest.fixture
def runner():
    return CliRunner()


def test_list_shows_every_shipped_scenario(runner):
    result = runner.invoke(cli, ["list"])
    assert result.exit_code == 0
    for path in SCENARIO_DIR.glob("*.yaml"):
        assert f"scenarios/{path.name}" in result.output


def test_validate_good_and_bad_files(runner, tmp_path):
    good = runner.invoke(cli, ["validate", str(SCENARIO_DIR / "approved.yaml")])
    assert good.exit_code == 0 and "ok" in good.output
    data = yaml.safe_load((SCENARIO_DIR / "approved.yaml").read_text())
    data["applicants"][0]["bank"]["Account_age"] = -5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml: applicants[0].bank.Account_age: value -5 is out of range" in result.output


def test_a_directory_stands_for_its_scenarios(runner, tmp_path):
    result = runner.invoke(cli, ["validate", str(SCENARIO_DIR / "kaggle_xgboost")])
    assert result.exit_code == 0, result.output
    for path in (SCENARIO_DIR / "kaggle_xgboost").glob("*.yaml"):
        assert path.name in result.output
    empty = runner.invoke(cli, ["validate", str(tmp_path)])
    assert empty.exit_code == 1 and "a directory with no *.yaml scenario" in empty.output


def test_bench_names_an_explanation_case_as_a_valid_key_id():
    import re

    from run_scenario import bench_case_name

    for flip in ("5-8", "18+", "11-18", "20 and more"):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", bench_case_name(flip)), flip
    assert bench_case_name("18+") == "bin_found_18plus"


def test_run_refuses_an_invalid_file_before_starting_anything(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    result = runner.invoke(cli, ["run", str(bad)])
    assert result.exit_code == 1 and "bad.yaml: applicants: required field is missing" in result.output
    assert "starting" not in result.output


def test_run_in_simulation_writes_reports_and_labels_them_insecure(runner, tmp_path):
    report_json, report_md = tmp_path / "r.json", tmp_path / "r.md"
    result = runner.invoke(cli, ["run", str(SCENARIO_DIR / "missing_party_input.yaml"), "--fhe", "simulate",
                                 "--transport", "tcp", "--report-json", str(report_json),
                                 "--report-md", str(report_md)])
    assert result.exit_code == 0, result.output
    assert "INSECURE" in result.output and "PASSED" in result.output
    data = json.loads(report_json.read_text())
    assert data["scenario"] == "missing_party_input" and data["insecure"] is True
    assert set(data["processes"]) == {"evaluator", "user", "bank", "agency"}
    assert data["applicants"][0]["expectations_held"] is True
    assert data["applicants"][0]["errors"][0]["code"] == "MISSING_INPUTS"
    assert {"name", "role", "seconds"} <= set(data["steps"][0])
    assert {"sender", "receiver", "type", "bytes"} <= set(data["messages"][0])
    assert not any(m["sender"] == "bank" and m["type"] == "INPUT" for m in data["messages"])
    markdown = report_md.read_text()
    assert "```mermaid" in markdown and "sequenceDiagram" in markdown and "INSECURE" in markdown
    assert "user->>evaluator: INPUT" in markdown and "agency->>evaluator: INPUT" in markdown


def test_run_exits_non_zero_naming_applicant_step_and_party(runner, tmp_path):
    data = yaml.safe_load((SCENARIO_DIR / "approved.yaml").read_text())
    data["applicants"][0]["steps"][0]["expect"] = {"decision": "denied"}
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(data))
    result = runner.invoke(cli, ["run", str(wrong), "--fhe", "simulate"])
    assert result.exit_code == 1
    assert "applicant 'ada' (ada-1), step 1 (predict), party user: expected decision 'denied'" in result.output


@pytest.mark.parametrize("module", ["parties.user", "parties.bank", "parties.agency", "evaluator.__main__"])
def test_role_commands_document_their_settings(runner, module):
    import importlib
    result = runner.invoke(importlib.import_module(module).main, ["--help"])
    assert result.exit_code == 0
    for option in ("--config", "--evaluator", "--control", "--fhe", "--request-timeout"):
        assert option in result.output


def test_workers_without_the_dask_engine_are_refused_in_one_line_before_anything_starts(tmp_path):
    """--workers N means a local Dask cluster: with --engine local (the default) the evaluator refuses at start,
    saying what to write instead, and starts no process and no socket (nothing in its work directory)."""
    import subprocess
    import sys
    from simulation.processes import PROJECT_ROOT
    for args, named in ((["--workers", "2"], "--workers 2"), (["--engine", "local", "--worker-threads", "1"],
                                                              "--worker-threads 1")):
        workdir = tmp_path / f"w{len(args)}"
        done = subprocess.run([sys.executable, "-m", "evaluator", *args, "--insecure", "--workdir", str(workdir),
                               "--evaluator", f"ipc://{tmp_path}/ev.ipc"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and named in lines[0] and f"use --engine dask {named}" in lines[0], done.stderr
        assert not workdir.exists() or not any(workdir.iterdir())
    result = CliRunner().invoke(cli, ["load", "--population", "1", "--fhe", "simulate", "--workers", "2"])
    assert result.exit_code == 2 and "use --engine dask --workers N" in result.output, result.output


def test_role_config_file_is_validated(runner, tmp_path):
    from protocol.settings import load_settings
    config = tmp_path / "bank.yaml"
    config.write_text("evaluator: tcp://10.0.0.5:5555\nrequest_timeout: 5\n")
    settings = load_settings(str(config), {"request_timeout": 9.0})
    assert settings.evaluator == "tcp://10.0.0.5:5555" and settings.request_timeout == 9.0
    config.write_text("evaluatr: tcp://x\n")
    with pytest.raises(Exception, match="unknown settings"):
        load_settings(str(config), {})


@pytest.mark.fhe
@pytest.mark.slow
def test_train_writes_a_verified_deployment_reproducibly(runner, tmp_path):
    """Two builds with the same seed: the same tree, preprocessors, circuit files and figures; only the FHE keys
    (not stored), the warm-up ciphertexts and the timings differ."""
    from credit_model.deployment import load_deployment

    builds = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = runner.invoke(cli, ["train", "--data", "synthetic", "--output", str(out), "--samples", "1500",
                                     "--depth", "4", "--bits", "3", "--seed", "5", "--fhe-check", "20"])
        assert result.exit_code == 0, result.output
        builds.append(load_deployment(out))
    manifest = builds[0].manifest
    assert manifest["fhe"]["fhe_agreement"] == "20/20"
    assert manifest["training"]["samples"] == 1500 and manifest["training"]["max_depth"] == 4
    assert manifest["metrics"]["quantized"]["accuracy"] > 0.7
    differs = {k for k in manifest if k != "name" and manifest[k] != builds[1].manifest[k]}
    assert differs == {"timings", "files"}
    files = {f for f in manifest["files"] if manifest["files"][f] != builds[1].manifest["files"][f]}
    assert files == {"warmup_inputs.json"}
    for name in ("client.zip", "server.zip", "preprocessor_user.json"):
        assert (builds[0].directory / name).read_bytes() == (builds[1].directory / name).read_bytes()


EXIT_AFTER_A_CIRCUIT_RUN = """
import sys
from credit_model.deployment import load_deployment
from credit_model.training.clear_model import ClearModel
from bench.load import applicant_records
deployment = load_deployment("kaggle")
ClearModel(deployment).probability(applicant_records(deployment, 1, 1)[0])
from protocol.settings import end_process_with
end_process_with(lambda: sys.exit(3))
"""


def test_the_exit_status_survives_a_circuit_run_in_the_process():
    """Concrete's exit hook ends a process with status 0 once a circuit ran in it (a failing `conformance` exited 0):
    end_process_with, which run_scenario.py and every role end through, keeps the status."""
    import subprocess
    import sys

    from simulation.processes import PROJECT_ROOT

    result = subprocess.run([sys.executable, "-c", EXIT_AFTER_A_CIRCUIT_RUN], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 3, result.stderr[-2000:]
