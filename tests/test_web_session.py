"""The web page's per-tab logic (web/session.py) against a fake driver that answers as the roles do:
the demo's wording for every out-of-order click, which COMMANDs reach which role, one key id per tab, a new
application after a run, and "save as scenario" writing a file the scenario loader accepts with the session's
expectations. Fast: no process, no Gradio (tests/test_web_ui.py drives the real page)."""

from __future__ import annotations

import pytest

from credit_model.explainability import APPROVED, DENIED, EXPLAIN_WHEN_APPROVED
from protocol.errors import ErrorCode, RemoteError
from scenarios import SCENARIO_DIR
from scenarios.spec import load_scenario
from web.driver import StepOutcome
from web.session import (ALL_INPUTS_FIRST, ALREADY_RUN, APPLICANT_FIRST, DECRYPT_FIRST, EXPLAINED,
                                   KEYS_DONE, KEYS_FIRST, NO_VALUE, OUTPUT_DONE, RUN_DONE, RUN_FIRST, SENT,
                                   WebSession, coerce_record)

FOUND = ("Credit card is likely to be denied ❌ However, having at least 5-8 years of employment would increase "
         "your chance of having your credit card approved.")


class FakeRoles:
    """Answers keygen / prepare / encrypt / predict / explain as the roles would (sessions opened by the user's INPUT,
    MISSING_INPUTS naming parties, NOT_DENIED when approved); records every call."""

    fhe = "execute"
    pids = {"evaluator": 11, "user": 12, "bank": 13, "agency": 14}

    def __init__(self, approved: bool = False):
        self.approved, self.calls, self.sessions = approved, [], {}

    def call(self, role, action, params):
        self.calls.append((role, action, dict(params)))
        sid, result, messages, error = params.get("session_id"), {}, [], None
        t = float(len(self.calls))
        if action == "keygen":
            result = {"keygen_s": 2.0, "eval_key_uploaded": True, "eval_key_bytes": 37_000_000,
                      "eval_key_preview": "ab" * 16, "client_key_shared_with": ["bank", "agency"]}
        elif action == "prepare":
            self.sessions.setdefault(sid, set()).add("user")
            result = {"keygen_s": 2.0, "eval_key_uploaded": True, "eval_key_bytes": 37_000_000,
                      "client_key_shared_with": ["bank", "agency"], "bytes": 1392, "preview": "01" * 16,
                      "encrypt_s": 0.03}
            messages = [{"t": t, "sender": "user", "receiver": "evaluator", "type": "EVAL_KEY", "bytes": 37_000_100,
                         "preview": "ab" * 16}]
        elif action == "encrypt":
            if sid not in self.sessions:
                error = RemoteError(f"evaluator: no session {sid!r}", ErrorCode.UNKNOWN_SESSION, role)
            else:
                self.sessions[sid].add(role)
                result = {"bytes": 288, "preview": "02" * 16, "encrypt_s": 0.001}
        elif action == "predict":
            missing = [p for p in ("bank", "agency") if p not in self.sessions[sid]]
            if missing:
                error = RemoteError(f"evaluator: inputs missing from: {', '.join(missing)}", ErrorCode.MISSING_INPUTS,
                                    "user")
            else:
                result = {"approved": self.approved, "decision": APPROVED if self.approved else DENIED,
                          "run_s": 1.2, "wait_s": 2.7, "decrypt_s": 0.0006, "output_bytes": 33056,
                          "output_preview": "03" * 16}
        elif action == "explain":
            if self.approved:
                error = RemoteError(EXPLAIN_WHEN_APPROVED, ErrorCode.NOT_DENIED, "user")
            else:
                result = {"explanation": FOUND, "outcome": "bin_found", "bin": "5-8", "runs": 3,
                          "candidates": [{"bin": b, "approved": b == "5-8"} for b in ("0-2", "2-5", "5-8")]}
        return StepOutcome(role, self.pids[role], 0.01, 100, messages, result, error)


@pytest.fixture
def bruno():
    return load_scenario(SCENARIO_DIR / "denied_bin_found.yaml").applicants[0].data


def status(session, name):
    return session.texts[f"{name}_status"]


def test_every_out_of_order_click_gets_the_demos_words(bruno):
    roles, tab = FakeRoles(), WebSession()
    for party in ("user", "bank", "agency"):
        tab.encrypt(roles, party, bruno[party])
        assert status(tab, party).endswith(f"❌ {KEYS_FIRST}")
    tab.run(roles), tab.get_output(roles), tab.explain(roles, "linear")
    for name in ("run", "decrypt", "explain"):
        assert status(tab, name).endswith(f"❌ {KEYS_FIRST}")
    assert roles.calls == []  # nothing reached a role before the keys
    tab.generate_keys(roles)
    assert KEYS_DONE in status(tab, "keygen") and "user (pid 12)" in status(tab, "keygen")
    assert tab.texts["evaluation_key"] == f"{'ab' * 16}… (37,000,000 bytes)"
    tab.encrypt(roles, "bank", bruno["bank"])  # the evaluator refuses: the user's INPUT opens the application
    assert APPLICANT_FIRST in status(tab, "bank") and "UNKNOWN_SESSION" in status(tab, "bank")
    tab.run(roles)
    assert f"❌ {ALL_INPUTS_FIRST} Inputs missing from: applicant, bank, credit agency." == status(tab, "run")[4:]
    tab.encrypt(roles, "user", bruno["user"])
    assert SENT in status(tab, "user")
    tab.run(roles)  # the evaluator's MISSING_INPUTS, relayed by the user, names the parties
    assert f"{ALL_INPUTS_FIRST} Inputs missing from: bank, credit agency." in status(tab, "run")
    tab.get_output(roles)
    assert status(tab, "decrypt").endswith(f"❌ {RUN_FIRST}")
    tab.explain(roles, "linear")
    assert status(tab, "explain").endswith(f"❌ {RUN_FIRST}")
    tab.encrypt(roles, "bank", bruno["bank"]), tab.encrypt(roles, "agency", bruno["agency"])
    tab.run(roles)
    assert RUN_DONE in status(tab, "run") and "evaluator (pid 11)" in status(tab, "run")
    assert "decision" not in tab.texts  # shown by "Get and decrypt the output", not before
    tab.explain(roles, "linear")
    assert status(tab, "explain").endswith(f"❌ {DECRYPT_FIRST}")
    tab.run(roles)
    assert status(tab, "run").endswith(f"❌ {ALREADY_RUN}")
    tab.get_output(roles)
    assert OUTPUT_DONE in status(tab, "decrypt") and tab.texts["decision"] == DENIED
    tab.explain(roles, "bisect")
    assert EXPLAINED in status(tab, "explain") and tab.texts["explanation"] == FOUND


def test_explaining_an_approval_is_refused_in_the_demos_words(bruno):
    roles, tab = FakeRoles(approved=True), WebSession()
    tab.generate_keys(roles)
    for party in ("user", "bank", "agency"):
        tab.encrypt(roles, party, bruno[party])
    tab.run(roles), tab.get_output(roles), tab.explain(roles, "linear")
    assert tab.texts["decision"] == APPROVED
    assert f"❌ {EXPLAIN_WHEN_APPROVED}" in status(tab, "explain")


def test_the_commands_each_role_gets_and_one_key_id_per_tab(bruno):
    roles, first, second = FakeRoles(), WebSession(), WebSession()
    first.generate_keys(roles), second.generate_keys(roles)
    assert first.key_id != second.key_id and first.app.session_id != second.app.session_id
    for party in ("user", "bank", "agency"):
        first.encrypt(roles, party, bruno[party])
    first.run(roles)
    key, sid = first.key_id, first.app.session_id
    assert roles.calls[0] == ("user", "keygen", {"key_id": key})  # keys only: no application, no features
    assert [c[:2] for c in roles.calls[2:]] == [("user", "prepare"), ("bank", "encrypt"), ("agency", "encrypt"),
                                                ("user", "predict")]
    assert all(c[2]["session_id"] == sid for c in roles.calls[2:])
    assert roles.calls[3][2] == {"session_id": sid, "key_id": key, "features": bruno["bank"]}
    first.get_output(roles)
    first.encrypt(roles, "user", bruno["user"])  # after a run: a new application with the same keys
    assert first.app.session_id == f"{key}-2" and roles.calls[-1][2]["key_id"] == key
    assert "decision" not in first.texts and "output_ciphertext" not in first.texts


def test_saved_scenario_replays_the_tab(bruno, tmp_path):
    roles, tab = FakeRoles(), WebSession()
    tab.save(tmp_path, "kaggle", "execute")
    assert "Nothing to save yet" in status(tab, "save") and not list(tmp_path.iterdir())
    tab.generate_keys(roles)
    for party in ("user", "bank", "agency"):
        tab.encrypt(roles, party, bruno[party])
    tab.run(roles), tab.get_output(roles), tab.explain(roles, "linear"), tab.explain(roles, "bisect")
    for party in ("user", "bank", "agency"):  # a second application of the same applicant, not explained
        tab.encrypt(roles, party, bruno[party])
    tab.run(roles), tab.get_output(roles)
    path = tab.save(tmp_path / "saved", "kaggle", "simulate")
    assert path is not None and f"Saved as scenario {path}" in status(tab, "save")
    scenario = load_scenario(path)
    assert scenario.fhe == "simulate" and [a.name for a in scenario.applicants] == [tab.key_id] * 2
    first, second = scenario.applicants
    assert first.data == bruno and second.data == bruno
    assert [(s.action, s.strategy) for s in first.steps] == [("predict", None), ("explain", "linear"),
                                                             ("explain", "bisect")]
    assert first.steps[0].expect.decision == "denied"
    assert {(s.expect.outcome, s.expect.bin, s.expect.message, s.expect.max_runs) for s in first.steps[1:]} \
        == {("bin_found", "5-8", FOUND, 3)}
    assert [s.action for s in second.steps] == ["predict"]


def test_widget_values_become_the_records_roles_validate(schema):
    values = {"Num_children": 1.0, "Total_income": 202500, "Occupation_type": NO_VALUE, "Own_car": True}
    record = coerce_record(schema, "user", [values.get(f.name, "x") for f in schema.features["user"]])
    assert record["Num_children"] == 1 and type(record["Num_children"]) is int
    assert record["Total_income"] == 202500.0 and type(record["Total_income"]) is float
    assert record["Occupation_type"] is None and record["Own_car"] is True
    assert list(record) == [f.name for f in schema.features["user"]]
