"""Scenario files validate before any process starts; errors name the file, the field and what was expected."""

import pytest
import yaml

from scenarios import SCENARIO_DIR
from simulation.runner import check
from scenarios.spec import ScenarioError, Step, Expect, load_scenario, parse_scenario
from protocol.errors import ErrorCode, ProtocolError

SHIPPED = sorted(SCENARIO_DIR.glob("*.yaml"))


def test_at_least_the_required_scenarios_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"approved", "denied_bin_found", "denied_no_bin_helps", "denied_last_bin", "explain_when_approved",
            "missing_party_input", "several_applicants", "repeat_applicant"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenarios_validate(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem and scenario.description


def _base():
    return yaml.safe_load((SCENARIO_DIR / "approved.yaml").read_text())


def _error(mutate) -> ScenarioError:
    data = _base()
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(yaml.safe_dump(data), "my.yaml")
    assert str(err.value).startswith("my.yaml: ")
    return err.value


@pytest.mark.parametrize("mutate, where, expected", [
    (lambda d: d.update(colour="red"), "colour", "unknown field"),
    (lambda d: d.pop("description"), "description", "required"),
    (lambda d: d.update(fhe="maybe"), "fhe", "one of"),
    (lambda d: d.update(deadline_s=10**9), "deadline_s", "seconds"),
    (lambda d: d.update(applicants=[]), "applicants", "list of 1"),
    (lambda d: d["applicants"][0]["user"].update(Income_type="Pirate"), "applicants[0].user.Income_type", "unknown value"),
    (lambda d: d["applicants"][0]["bank"].update(Account_age="old"), "applicants[0].bank.Account_age", "number"),
    (lambda d: d["applicants"][0]["agency"].pop("Employed"), "applicants[0].agency.Employed", "missing"),
    (lambda d: d["applicants"][0].update(name="../../etc"), "applicants[0].name", "matching"),
    (lambda d: d["applicants"][0]["steps"][0].update(action="hack"), "steps[0].action", "one of"),
    (lambda d: d["applicants"][0]["steps"][0]["expect"].update(decision="maybe"), "expect.decision", "one of"),
    (lambda d: d["applicants"][0]["steps"][0]["expect"].update(bin="5-8"), "expect.bin", "unknown field"),
    (lambda d: d["applicants"][0]["steps"][0].update(withhold=["user"]), "withhold[0]", "one of"),
    (lambda d: d["applicants"][0]["steps"][0].update(strategy="bisect"), "strategy", "explain step"),
])
def test_errors_name_the_field(mutate, where, expected):
    err = _error(mutate)
    assert where in err.where and expected in err.expected


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="valid YAML"):
        parse_scenario("name: [unclosed", "bad.yaml")
    with pytest.raises(ScenarioError, match="existing scenario file"):
        load_scenario(tmp_path / "absent.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (2 * 1024 * 1024))
    with pytest.raises(ScenarioError, match="at most"):
        load_scenario(big)


def test_check_compares_outcomes_with_expectations():
    predict = Step("predict", expect=Expect(decision="approved", keygen=False))
    ok = {"decision": "Credit card is likely to be approved ✅", "keygen": False}
    assert check(predict, ok, None) == []
    assert "expected decision 'approved'" in check(predict, {**ok, "decision": "Credit card is likely to be denied ❌"}, None)[0]
    assert "keygen=False" in check(predict, {**ok, "keygen": True}, None)[0]
    assert check(predict, {**ok, "keygen": True}, None, simulate=True) == []
    missing = ProtocolError("inputs missing from: bank", ErrorCode.MISSING_INPUTS)
    assert "unexpected error MISSING_INPUTS" in check(predict, {}, missing)[0]
    wants_error = Step("predict", expect=Expect(error="MISSING_INPUTS", error_mentions="agency"))
    assert check(wants_error, {}, missing) == ["expected the error to mention 'agency', got 'inputs missing from: bank'"]
    assert "succeeded" in check(wants_error, ok, None)[0]
    explain = Step("explain", expect=Expect(outcome="bin_found", bin="5-8", max_runs=3))
    good = {"outcome": "bin_found", "bin": "5-8", "runs": 3, "explanation": "x"}
    assert check(explain, good, None) == []
    assert len(check(explain, {**good, "bin": "8-11", "runs": 4}, None)) == 2
