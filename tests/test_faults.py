"""Faults declared in scenarios: the run recovers, or fails cleanly within its deadline naming role and step."""

import pytest

from scenarios import SCENARIO_DIR
from simulation.runner import ScenarioRunner
from scenarios.spec import load_scenario
from protocol.transport import FaultPlan


def run(name, fhe="simulate", **kwargs):
    return ScenarioRunner(load_scenario(SCENARIO_DIR / f"{name}.yaml"), fhe=fhe, **kwargs).run()


def every_process_ended(report, faulted=()):
    """Every role's process ended, and every role no fault touched exited by itself when told (SHUTDOWN), not
    because the runner had to signal it; a faulted role may have needed it."""
    assert set(report.ended_by) == set(report.exit_codes) == {"evaluator", "user", "bank", "agency"}
    return all(code is not None for code in report.exit_codes.values()) and all(
        how == "SHUTDOWN" for role, how in report.ended_by.items() if role not in faulted)


@pytest.mark.fhe
@pytest.mark.slow
def test_evaluator_killed_and_restarted_recovers_its_session_with_real_fhe(tmp_path):
    report = run("fault_evaluator_restart", fhe="execute", run_dir=tmp_path)
    assert report.passed and report.fatal is None
    assert report.applicants[0].decision == "Credit card is likely to be approved ✅"
    assert report.faults_applied == ["restart evaluator before predict of applicant 1"]
    assert "recovered 1 session(s) and 1 key(s)" in (tmp_path / "evaluator.log").read_text()
    assert every_process_ended(report)


def test_bank_that_never_answers_fails_cleanly_naming_it():
    """Cut off (stopped) for 60 s: named by the liveness rule (4 s), before the 8 s command deadline."""
    report = run("fault_bank_never_answers")
    assert report.passed  # because the scenario expects exactly this failure
    assert report.failure["role"] == "bank" and report.failure["step"] == "encrypt:bank"
    reason = report.failure["reason"]  # whichever check saw it first: the stopped process, or the heartbeats
    assert "the bank was lost while running encrypt" in reason
    assert "answered nothing for 4 s" in reason or "answered no heartbeat for 4 s" in reason
    assert report.duration_s < 30 and every_process_ended(report, faulted=("bank",))
    assert report.ended_by["bank"] == "SIGKILL"  # stopped: killed at once, no grace


def test_a_bank_alive_but_hung_is_named_when_the_command_deadline_passes(tmp_path):
    """Alive and answering heartbeats (libzmq's thread) but never finishing: the deadline names it."""
    import yaml
    data = yaml.safe_load((SCENARIO_DIR / "fault_bank_never_answers.yaml").read_text())
    data["faults"] = [{"action": "delay", "role": "bank", "message": "INPUT", "count": 1, "seconds": 60}]
    path = tmp_path / "hung.yaml"
    path.write_text(yaml.safe_dump(data))
    report = ScenarioRunner(load_scenario(path), fhe="simulate").run()
    assert report.passed and report.failure["role"] == "bank" and report.failure["step"] == "encrypt:bank"
    assert "did not finish 'encrypt' within 8 s" in report.failure["reason"]
    assert every_process_ended(report, faulted=("bank",))  # asleep in its delay: SIGTERM ends it


def test_a_duplicated_ciphertext_is_answered_each_time_stored_once_and_the_decision_is_right(tmp_path):
    report = run("fault_duplicate_ciphertext", run_dir=tmp_path)
    assert report.passed and report.applicants[0].decision.endswith("approved ✅")
    bank_inputs = [m for m in report.messages if m["sender"] == "bank" and m["type"] == "INPUT"]
    assert len(bank_inputs) == 2 and bank_inputs[0]["bytes"] == bank_inputs[1]["bytes"]
    to_bank = [m["type"] for m in report.messages if m["sender"] == "evaluator" and m["receiver"] == "bank"]
    assert to_bank == ["ACK", "ACK"]
    assert [m["type"] for m in report.messages if m["sender"] == "user" and m["type"] == "RUN"] == ["RUN"]
    stored = [p.name for p in (tmp_path / "evaluator" / "sessions").rglob("*.bin") if p.name.startswith("i")]
    assert len(stored) == 3, stored  # one ciphertext per party: the duplicate replaced, not added


def test_corrupted_ciphertext_gets_an_error_and_the_session_goes_on_after_a_resend():
    report = run("fault_corrupt_ciphertext")
    assert report.passed and report.applicants[0].decision.endswith("approved ✅")
    to_agency = [m["type"] for m in report.messages if m["sender"] == "evaluator" and m["receiver"] == "agency"]
    assert to_agency == ["ERROR", "ACK"]
    assert [m["type"] for m in report.messages if m["sender"] == "agency" and m["receiver"] == "evaluator"] == ["INPUT", "INPUT"]


def test_agency_killed_during_the_explanation_fails_cleanly_naming_it():
    report = run("fault_agency_killed_during_explain")
    assert report.passed
    assert report.failure["role"] == "agency" and report.failure["step"] == "explain"
    assert "exited with code -9" in report.failure["reason"]
    assert report.applicants[0].decision.endswith("denied ❌")
    assert every_process_ended(report, faulted=("agency",)) and report.ended_by["agency"] == "before stop"


def test_an_expected_failure_that_does_not_happen_fails_the_scenario(tmp_path):
    text = (SCENARIO_DIR / "fault_duplicate_ciphertext.yaml").read_text()
    path = tmp_path / "wrong.yaml"
    path.write_text(text + 'expect_failure: {role: bank, step: "encrypt:bank"}\n')
    report = ScenarioRunner(load_scenario(path), fhe="simulate").run()
    assert report.failure is None and not report.passed


def test_fault_plan_parsing_and_effects():
    import time
    delayed = FaultPlan(["delay:ACK:1:0.3"])
    t0 = time.monotonic()
    assert delayed.apply("ACK", [b"x"]) == [[b"x"]] and time.monotonic() - t0 >= 0.3
    plan = FaultPlan(["drop:RUN:1", "duplicate:INPUT:2", "corrupt:OUTPUT:1"])
    frames = [b"v", b"t", b"{}", b"\x00\x01"]
    assert plan.apply("RUN", frames) == [] and plan.apply("RUN", frames) == [frames]
    assert plan.apply("INPUT", frames) == [frames, frames]
    assert plan.apply("OUTPUT", frames) == [[b"v", b"t", b"{}", b"\xff\xfe"]]
    with pytest.raises(ValueError, match="KIND:TYPE:COUNT"):
        FaultPlan(["explode:RUN:1"])
