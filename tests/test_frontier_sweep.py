"""bench.frontier's sweep table from the committed sweep (bench/frontier_sweep.json): no model is trained here."""

import json
from pathlib import Path

from bench.sweep import COMMITTED, calibration, sweep_table

SWEEP = Path(__file__).resolve().parents[1] / "bench" / "frontier_sweep.json"


def test_the_committed_sweep_renders_every_point_with_measured_and_estimated_runs_labelled():
    results = json.loads(SWEEP.read_text())
    table = sweep_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "trees, depth" not in line]
    assert len(rows) == len(results)
    assert any("= `kaggle_xgboost`" in r for r in rows) and COMMITTED in {(r["trees"], r["depth"], r["bits"]) for r in results}
    measured = [r for r in results if "warm_s" in r.get("measured", {})]
    assert measured and table.count("measured (CPU") == len(measured)
    assert table.count("; earlier ") == sum("warm_s" in r.get("measured_earlier", {}) for r in measured)
    for r in results:  # every compiled point has a warm run, measured or labelled an estimate
        if "pbs" in r and "warm_s" not in r.get("measured", {}):
            assert r["bits"] in calibration(results) or any(b < r["bits"] for b in calibration(results))
    assert "est. " in table and "not compiled: " in table
    for r in measured:  # each measured run decided as the quantized model did
        ok, n = r["measured"]["agreement"].split("/")
        assert ok == n


def test_the_frontier_takes_a_deployments_timings_from_the_re_measurement_when_it_holds_them():
    """bench.frontier's rows: the timings of bench/frontier_timings.json when it names the deployment (and the table
    says so), else the manifest's; the rule's line then follows the timings it was given."""
    from bench.frontier import best_default, row, table

    manifest = json.loads((Path(__file__).resolve().parents[1] / "deployment_files" / "kaggle_logistic" /
                           "manifest.json").read_text())["timings"]
    measured = {"kaggle_logistic": {"run_s_median": 9.5, "run_s_first": 8.25, "keygen_s": 7.75}}
    again, stale = row("kaggle_logistic", measured), row("kaggle_logistic", {})
    assert (again["warm"], again["first"], again["keygen"], again["timed"]) == (9.5, 8.25, 7.75, "measured again")
    assert (stale["warm"], stale["timed"]) == (manifest["run_s_median"], "manifest")
    assert "| 9.50 s | 8.25 s | 7.8 s | measured again |" in table([again])
    quick = dict(again, warm=1.0)
    assert "`kaggle_logistic`" in best_default([quick]) and "NOT met" in best_default([quick])
