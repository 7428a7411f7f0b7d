"""Ten applicant sessions in flight at once against one evaluator: every decision right, nothing crossed."""

from pathlib import Path

import pytest

from bench.load import concurrent_sessions
from credit_model.deployment import load_deployment


@pytest.mark.fhe
@pytest.mark.slow
def test_ten_concurrent_sessions_get_their_own_correct_decisions(deployment):
    summary = concurrent_sessions(deployment, 10, log=lambda _: None)
    assert summary["failed"] == []
    assert summary["correct"] == 10
    assert 0 < summary["approved"] < 10  # both decisions occur, so a crossed session would show
    assert summary["evaluator_status"]["sessions"] == 10 and summary["evaluator_status"]["keys"] == 10


def test_a_population_through_the_four_roles_on_dask_agrees_with_the_clear_model(tmp_path):
    """`load --population 6 --fhe simulate --engine dask --workers 1` on the default deployment: six held-out
    applicants through the four role processes, every decision checked against the clear model; the report's counts
    add up to what was run."""
    import json
    import subprocess
    import sys

    from credit_model.deployment import DEFAULT
    from credit_model.training.clear_model import ClearModel
    from bench.population import population_records

    out = tmp_path / "population.json"
    done = subprocess.run([sys.executable, "run_scenario.py", "load", "--population", "6", "--fhe", "simulate",
                           "--engine", "dask", "--workers", "1", "--deployment", DEFAULT, "--json", str(out)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["decided"] == data["agree_with_clear_model"] == 6 and data["failed_count"] == 0
    matrix = data["confusion_matrix_vs_labels"]
    assert sum(matrix.values()) == 6
    clear = ClearModel(load_deployment(DEFAULT))
    people = population_records(load_deployment(DEFAULT), 6)
    approved = sum(clear.approved(record) for record, _ in people)
    assert matrix["approved_and_labelled_approved"] + matrix["approved_but_labelled_denied"] == approved
    assert data["bytes_per_application_after_first"] > 0 and data["evaluator_cpu_s_per_application"] > 0
    assert "PROJECTION" in data["projection_note"] and "PROJECTION (not measured)" in done.stdout
