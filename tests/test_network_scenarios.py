"""The shipped network scenarios with real FHE (issue 21): over wan and mobile the first application's cost is the
evaluation-key upload, and the repeat (keys reused) pays none of it; over mobile the explanation loop's cost is
counted in round trips, linear's more than bisect's. Bounds are generous (the machine is shared): the figures are
in BENCHMARKS.md, "Network emulation"."""

import json

import pytest
from click.testing import CliRunner

from run_scenario import cli
from scenarios import SCENARIO_DIR
from scenarios.network import load_profiles

FILES = ("network_wan_first_vs_repeat", "network_mobile_first_vs_repeat", "network_mobile_explain")


def by(rows, **match):
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_shipped_network_scenarios_pass_and_show_what_costs(tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["run", *(str(SCENARIO_DIR / f"{n}.yaml") for n in FILES),
                                      "--report-json", str(out)])
    assert result.exit_code == 0, result.output[-4000:]
    runs = {r["scenario"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == set(FILES) and all(r["passed"] for r in runs.values())
    profiles = load_profiles()

    for name, profile in (("network_wan_first_vs_repeat", "wan"), ("network_mobile_first_vs_repeat", "mobile")):
        run = runs[name]
        assert run["network"]["profile"] == profile
        rows = run["phases"]
        first, repeat = by(rows, applicant="alice-1", role="user"), by(rows, applicant="alice-2", role="user")
        upload = by(first, phase="key upload")[0]
        # the whole evaluation key crossed the applicant's uplink: at least its bytes at the profile's rate
        up = profiles[profile].link("user-evaluator").up_mbit
        assert upload["sent_bytes"] > 37_000_000
        assert upload["wall_s"] >= 0.95 * upload["sent_bytes"] * 8 / (up * 1e6), (profile, upload)
        # ... it moves the most bytes of the first application (its wall time is the largest phase on a quiet
        # machine, BENCHMARKS.md, but not under the suite's load: the first run, CPU-bound, once took 12.9 s against
        # a 7.8 s WAN upload); the repeat has no key upload and costs a fraction of it (a tenth on a quiet machine; a
        # third here, where other tests may load the cores)
        assert upload["sent_bytes"] == max(r["sent_bytes"] for r in first) > 100 * sum(r["sent_bytes"] for r in repeat)
        assert not by(repeat, phase="key upload") or by(repeat, phase="key upload")[0]["sent_bytes"] < 10_000
        assert sum(r["wall_s"] for r in repeat) < upload["wall_s"] / 3, (repeat, upload)
        assert sum(m["type"] == "EVAL_KEY" for m in run["messages"]) == 1

    explain = runs["network_mobile_explain"]
    steps = {s["name"]: s for s in explain["steps"] if s["name"].startswith("explain")}
    assert steps["explain (linear)"]["detail"]["runs"] == 4 and steps["explain (bisect)"]["detail"]["runs"] == 2
    user = {r["step"]: r for r in by(explain["phases"], phase="explain", role="user")}
    linear, bisect = user["explain (linear)"], user["explain (bisect)"]
    assert linear["round_trips"] > bisect["round_trips"] >= 6, (linear, bisect)
    rtt = profiles["mobile"].link("user-evaluator").rtt_ms / 1000
    for row in (linear, bisect):  # every round trip crossed the phone's link (to the evaluator or the agency)
        assert row["wall_s"] >= row["round_trips"] * (rtt - 0.01), row
    assert linear["wall_s"] > bisect["wall_s"]
