"""`run_scenario.py bench --quick` measures with real FHE and writes every headline figure (no timing asserts)."""

import json

import pytest
from click.testing import CliRunner

from run_scenario import cli
from tests.pinned_deployment import TREE

HEADLINE = ("overhead_ratio", "fhe_run_warm_s", "fhe_run_first_s", "eval_key_bytes", "accuracy_float",
            "accuracy_quantized", "bisect_max_runs", "linear_max_runs", "repeat_speedup", "worker_scaling")


@pytest.mark.fhe
@pytest.mark.slow
def test_quick_bench_writes_the_headline_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--deployment", TREE, "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in HEADLINE:
        assert isinstance(data[key], (int, float)) and data[key] > 0, key
        assert key in result.output
    assert data["quick"] is True and data["machine"]["cores"] >= 1
    assert data["linear_max_runs"] == 6 and data["bisect_max_runs"] <= 3
    assert all(row["same_answer"] for row in data["explanation"])
    assert {row["start_bin"] for row in data["explanation"]} == {"0-2", "2-5", "5-8", "8-11", "11-18", "18+"}
    first, repeat = data["multi_process"]["bytes_first"], data["multi_process"]["bytes_repeat"]
    chunks = -(-data["eval_key_bytes"] // (1 << 20))  # frames of at most 1 MiB (SPEC §3)
    framing = len(b"FCS/1" + b"EVAL_KEY") + len(json.dumps({"seq": 1, "key_id": "alice",
                                                            "evaluation_key_count": chunks}))
    assert 0 <= first["EVAL_KEY"] - data["eval_key_bytes"] - framing <= 16 and "CLIENT_KEY" in first
    assert "EVAL_KEY" not in repeat and "CLIENT_KEY" not in repeat
    assert [w["workers"] for w in data["workers"]] == [1, 2]  # single-threaded Dask workers
