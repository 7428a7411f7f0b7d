"""The committed deployment files load, and the loader refuses altered files and other library versions."""

import json
import shutil

import pytest

from credit_model.deployment import ARTIFACTS, DeploymentError, load_deployment
from credit_model.schema import YEARS_EMPLOYED_BINS


def test_committed_manifest(deployment):
    m = deployment.manifest
    assert deployment.slices == {"user": (0, 47), "bank": (47, 48), "agency": (48, 50)}
    assert tuple(m["years_employed_bins"]) == YEARS_EMPLOYED_BINS
    assert deployment.is_monotone_in_years
    assert set(m["files"]) == set(ARTIFACTS)
    metrics = m["metrics"]
    assert metrics["accuracy_float"] - metrics["accuracy_quantized"] <= 0.01
    assert m["fhe"]["fhe_agreement"] == f"{m['fhe']['fhe_checked']}/{m['fhe']['fhe_checked']}"


@pytest.fixture
def copy_of(deployment, tmp_path):
    target = tmp_path / "deploy"
    shutil.copytree(deployment.directory, target)
    return target


def test_altered_file_is_refused(copy_of):
    path = copy_of / "preprocessor_bank.json"
    path.write_text(path.read_text().replace("Account_age", "Account_age ", 1))
    with pytest.raises(DeploymentError, match="preprocessor_bank.json: sha256"):
        load_deployment(copy_of)


def test_missing_file_and_manifest_are_refused(copy_of, tmp_path):
    (copy_of / "server.zip").unlink()
    with pytest.raises(DeploymentError, match="server.zip is missing"):
        load_deployment(copy_of)
    with pytest.raises(DeploymentError, match="run_scenario.py train"):
        load_deployment(tmp_path / "nowhere")


def test_other_library_versions_are_refused(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["versions"]["concrete-ml"] = "0.0.1"
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeploymentError, match="built with concrete-ml 0.0.1"):
        load_deployment(copy_of)
    assert load_deployment(copy_of, check_versions=False).manifest["versions"]["concrete-ml"] == "0.0.1"
