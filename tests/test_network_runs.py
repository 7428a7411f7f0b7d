"""Runs over emulated links (issue 21): real role processes connect through the shaping forwarder; the reports
show what each message and phase cost; a dead or stopped evaluator is still named within the liveness window plus
one round trip."""

import json

import pytest
from click.testing import CliRunner

from run_scenario import cli
from scenarios import SCENARIO_DIR
from scenarios.network import load_profiles

NETWORK = """network:
  links:
    user-evaluator: {latency_ms: 100}
"""


def test_a_run_over_a_shaped_link_pays_its_latency_on_every_message_and_says_so(tmp_path):
    scenario = tmp_path / "slow_link.yaml"
    scenario.write_text((SCENARIO_DIR / "denied_bin_found.yaml").read_text() + NETWORK)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["run", str(scenario), "--fhe", "simulate", "--report-json", str(out),
                                      "--report-md", str(tmp_path / "report.md")])
    assert result.exit_code == 0, result.output
    assert "network: custom (user-evaluator 100±0 ms, unlimited/unlimited Mbit/s)" in result.output
    assert "phase    role" in result.output and "round trips" in result.output
    report = json.loads(out.read_text())
    assert report["network"]["links"]["user-evaluator"]["latency_ms"] == 100

    # every message on the shaped link took its 100 ms, both ways; the unshaped bank-evaluator link did not
    arrived = {}
    for m in report["received"]:
        arrived.setdefault((m["sender"], m["receiver"], m["type"]), []).append(m["t"])
    spans = {}
    for m in report["messages"]:
        key = (m["sender"], m["receiver"], m["type"])
        if "runner" in key[:2]:
            continue
        spans.setdefault(key[:2], []).append(arrived[key].pop(0) - m["t"])
    assert len(spans[("user", "evaluator")]) >= 8 and len(spans[("evaluator", "user")]) >= 8
    for pair in (("user", "evaluator"), ("evaluator", "user")):
        assert min(spans[pair]) >= 0.095, (pair, spans[pair])
    assert max(spans[("bank", "evaluator")] + spans[("evaluator", "bank")]) < 0.09, spans

    # per phase and role: the user's run (RUN, GET_OUTPUT) is two round trips of at least 200 ms; explain has more
    rows = {(r["phase"], r["role"]): r for r in report["phase_totals"]}
    assert rows[("run", "user")]["round_trips"] == 2 and rows[("run", "user")]["wall_s"] >= 0.4
    assert rows[("run", "evaluator")]["received_bytes"] == rows[("run", "user")]["sent_bytes"] > 0
    explain = rows[("explain", "user")]
    runs = sum(m["type"] == "RUN" for m in report["messages"]) - 1  # the explanations' (one RUN was predict's)
    assert runs >= 2 and explain["round_trips"] >= 3 * runs  # CANDIDATE (to the agency), RUN, GET_OUTPUT per run
    assert explain["wall_s"] >= 2 * 0.2 * runs  # RUN and GET_OUTPUT cross the shaped link
    assert all(r["cpu_s"] is not None for r in report["phase_totals"])
    # a round trip is a request the role waited for: the evaluator only answers, so it has none in any phase
    evaluator = [r for r in report["phase_totals"] if r["role"] == "evaluator"]
    assert evaluator and all(r["round_trips"] == 0 and r["messages_sent"] > 0 for r in evaluator), evaluator
    assert report["bytes_per_link"]["user -> evaluator"] > 0
    assert "## What each phase cost each role" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_a_dead_or_stopped_evaluator_is_named_within_the_window_plus_one_round_trip():
    """bench/network.py's measurement, once per case: a killed evaluator is named about one way's latency after
    it died; a stopped one within liveness + one heartbeat interval (when libzmq's timeout starts), plus one RTT
    across mobile's user-evaluator link, as directly."""
    from bench.network import detection

    rows = detection(load_profiles()["mobile"], liveness=2.0, repeats=1, log=lambda _: None)
    assert [(r["fault"], r["link"]) for r in rows] == [("kill", "direct"), ("kill", "mobile"), ("stop", "direct"),
                                                       ("stop", "mobile")]
    for row in rows:
        assert row["outcome"] == "PEER_LOST" and row["within"], row
    stopped = [r["seconds"] for r in rows if r["fault"] == "stop"]
    assert min(stopped) >= 2.0 - 0.5 - 0.05  # the heartbeats, not something faster and wrong (at most 1 interval early)
