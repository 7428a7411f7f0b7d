"""The web page's per-tab logic (web/session.py, web/form.py, web/capacity.py) against a fake driver that answers
as the roles do: the demo's wording for every out-of-order click, which COMMANDs reach which role, one key id per
tab, a new application after a run, statuses that describe the current application only, every bad value refused
naming its field before anything is sent, the page's bounds per tab, and "save as scenario" writing a private file
the scenario loader accepts with the session's expectations. Fast: no process, no Gradio (tests/test_web_ui.py
drives the real page on the real roles)."""

from __future__ import annotations

import stat

import pytest

from credit_model.explainability import APPROVED, DENIED, EXPLAIN_WHEN_APPROVED
from protocol.errors import ErrorCode, RemoteError
from scenarios import SCENARIO_DIR
from scenarios.spec import load_scenario
from web.capacity import Capacity, Limits
from web.driver import StepOutcome
from web.form import NO_VALUE, FormError, check_record, label
from web.session import (ALL_INPUTS_FIRST, ALREADY_RUN, APPLICANT_FIRST, DECRYPT_FIRST, EXPLAINED, KEYS_DONE,
                         KEYS_FIRST, NOTHING_SENT, OUTPUT_DONE, RUN_DONE, RUN_FIRST, SENT, SIM_KEYS, SIM_SENT,
                         PageContext, WebSession)

FOUND = ("Credit card is likely to be denied ❌ However, having at least 5-8 years of employment would increase "
         "your chance of having your credit card approved.")


class FakeRoles:
    """Answers keygen / prepare / encrypt / predict / explain as the roles would (sessions opened by the user's INPUT,
    MISSING_INPUTS naming parties, NOT_DENIED when approved); records every call."""

    pids = {"evaluator": 11, "user": 12, "bank": 13, "agency": 14}

    def __init__(self, approved: bool = False, fhe: str = "execute"):
        self.approved, self.fhe, self.calls, self.sessions = approved, fhe, [], {}
        self.generation, self.notice = 0, None

    def call(self, role, action, params, generation=None):
        self.calls.append((role, action, dict(params)))
        sid, result, messages, error = params.get("session_id"), {}, [], None
        t = float(len(self.calls))
        if action == "keygen":
            result = {"keygen_s": 2.0, "eval_key_uploaded": True, "eval_key_bytes": 37_000_000,
                      "eval_key_preview": "ab" * 16, "eval_key_preview_at": 1024,
                      "client_key_shared_with": ["bank", "agency"]}
        elif action == "prepare":
            self.sessions.setdefault(sid, set()).add("user")
            result = {"keygen_s": 2.0, "eval_key_uploaded": True, "eval_key_bytes": 37_000_000,
                      "client_key_shared_with": ["bank", "agency"], "bytes": 1392, "preview": "01" * 16,
                      "preview_at": 64, "encrypt_s": 0.03}
            messages = [{"t": t, "sender": "user", "receiver": "evaluator", "type": "EVAL_KEY", "bytes": 37_000_100,
                         "preview": "ab" * 16}]
        elif action == "encrypt":
            if sid not in self.sessions:
                error = RemoteError(f"evaluator: no session {sid!r}", ErrorCode.UNKNOWN_SESSION, role)
            else:
                self.sessions[sid].add(role)
                result = {"bytes": 288, "preview": "02" * 16, "preview_at": 64, "encrypt_s": 0.001}
        elif action == "predict":
            missing = [p for p in ("bank", "agency") if p not in self.sessions[sid]]
            if missing:
                error = RemoteError(f"evaluator: inputs missing from: {', '.join(missing)}", ErrorCode.MISSING_INPUTS,
                                    "user")
            else:
                result = {"approved": self.approved, "decision": APPROVED if self.approved else DENIED,
                          "run_s": 1.2, "wait_s": 2.7, "decrypt_s": 0.0006, "output_bytes": 33056,
                          "output_preview": "03" * 16, "output_preview_at": 1024}
        elif action == "explain":
            if self.approved:
                error = RemoteError(EXPLAIN_WHEN_APPROVED, ErrorCode.NOT_DENIED, "user")
            else:
                result = {"explanation": FOUND, "outcome": "bin_found", "bin": "5-8", "runs": 3,
                          "candidates": [{"bin": b, "approved": b == "5-8"} for b in ("0-2", "2-5", "5-8")]}
        return StepOutcome(role, self.pids[role], 0.01, 100, messages, result, error, len(self.calls),
                           self.generation)


@pytest.fixture
def bruno():
    return load_scenario(SCENARIO_DIR / "denied_bin_found.yaml").applicants[0].data


@pytest.fixture
def page(schema, tmp_path):
    """page(roles, **limits) -> the PageContext every tab of one page shares."""
    def make(roles=None, **limits):
        roles = roles or FakeRoles()
        return PageContext(roles, schema, Capacity(Limits(**limits), roles.fhe == "execute"), tmp_path / "run1")
    return make


def status(session, name):
    return session.texts[f"{name}_status"]


def apply(tab, record):
    for party in ("user", "bank", "agency"):
        tab.encrypt(party, record[party])
    tab.run(), tab.get_output()


def test_every_out_of_order_click_gets_the_demos_words(bruno, page):
    roles = FakeRoles()
    tab = WebSession(page(roles))
    for party in ("user", "bank", "agency"):
        tab.encrypt(party, bruno[party])
        assert status(tab, party).endswith(f"❌ {KEYS_FIRST}")
    tab.run(), tab.get_output(), tab.explain("linear")
    for name in ("run", "decrypt", "explain"):
        assert status(tab, name).endswith(f"❌ {KEYS_FIRST}")
    assert roles.calls == []  # nothing reached a role before the keys
    tab.generate_keys()
    assert KEYS_DONE in status(tab, "keygen") and "user (pid 12)" in status(tab, "keygen")
    assert tab.texts["evaluation_key"] == f"{'ab' * 16}… (bytes 1,024-1,039 of 37,000,000)"
    tab.encrypt("bank", bruno["bank"])  # the evaluator refuses: the user's INPUT opens the application
    assert APPLICANT_FIRST in status(tab, "bank") and "UNKNOWN_SESSION" in status(tab, "bank")
    tab.run()
    assert f"❌ {ALL_INPUTS_FIRST} Inputs missing from: applicant, bank, credit agency." == status(tab, "run")[4:]
    tab.encrypt("user", bruno["user"])
    assert SENT in status(tab, "user") and tab.texts["user_ciphertext"] == f"{'01' * 16}… (bytes 64-79 of 1,392)"
    tab.run()  # the evaluator's MISSING_INPUTS, relayed by the user, names the parties
    assert f"{ALL_INPUTS_FIRST} Inputs missing from: bank, credit agency." in status(tab, "run")
    tab.get_output()
    assert status(tab, "decrypt").endswith(f"❌ {RUN_FIRST}")
    tab.explain("linear")
    assert status(tab, "explain").endswith(f"❌ {RUN_FIRST}")
    tab.encrypt("bank", bruno["bank"]), tab.encrypt("agency", bruno["agency"])
    tab.run()
    assert RUN_DONE in status(tab, "run") and "evaluator (pid 11)" in status(tab, "run")
    assert "fetched its output (33,056 B) and decrypted it in this same command" in status(tab, "run")
    assert "decision" not in tab.texts  # shown by "Get and decrypt the output", not before
    tab.explain("linear")
    assert status(tab, "explain").endswith(f"❌ {DECRYPT_FIRST}")
    tab.run()
    assert status(tab, "run").endswith(f"❌ {ALREADY_RUN}")
    calls = len(roles.calls)
    tab.get_output()
    assert OUTPUT_DONE in status(tab, "decrypt") and tab.texts["decision"] == DENIED
    assert "no message now" in status(tab, "decrypt") and len(roles.calls) == calls  # 22.9: said, not pretended
    tab.explain("bisect")
    assert EXPLAINED in status(tab, "explain") and tab.texts["explanation"] == FOUND


def test_explaining_an_approval_is_refused_in_the_demos_words(bruno, page):
    tab = WebSession(page(FakeRoles(approved=True)))
    tab.generate_keys()
    apply(tab, bruno)
    tab.explain("linear")
    assert tab.texts["decision"] == APPROVED
    assert f"❌ {EXPLAIN_WHEN_APPROVED}" in status(tab, "explain")


def test_the_commands_each_role_gets_and_one_key_id_per_tab(bruno, page):
    roles = FakeRoles()
    shared = page(roles)
    first, second = WebSession(shared), WebSession(shared)
    first.generate_keys(), second.generate_keys()
    assert first.key_id != second.key_id and first.app.session_id != second.app.session_id
    for party in ("user", "bank", "agency"):
        first.encrypt(party, bruno[party])
    first.run()
    key, sid = first.key_id, first.app.session_id
    assert roles.calls[0] == ("user", "keygen", {"key_id": key})  # keys only: no application, no features
    assert [c[:2] for c in roles.calls[2:]] == [("user", "prepare"), ("bank", "encrypt"), ("agency", "encrypt"),
                                                ("user", "predict")]
    assert all(c[2]["session_id"] == sid for c in roles.calls[2:])
    assert roles.calls[3][2] == {"session_id": sid, "key_id": key, "features": bruno["bank"]}
    first.get_output()
    first.encrypt("user", bruno["user"])  # after a run: a new application with the same keys
    assert first.app.session_id == f"{key}-2" and roles.calls[-1][2]["key_id"] == key
    assert "decision" not in first.texts and "output_ciphertext" not in first.texts


def test_a_status_describes_the_tabs_current_application(bruno, page):
    """22.1: after a second "Generate keys", or a new application once a decision is shown, no panel still says its
    input was sent (it was, for an application the tab no longer has)."""
    tab = WebSession(page())
    tab.generate_keys()
    tab.encrypt("user", bruno["user"]), tab.encrypt("agency", bruno["agency"])
    assert SENT in status(tab, "user") and SENT in status(tab, "agency")
    tab.generate_keys()
    for party in ("user", "bank", "agency"):
        assert SENT not in status(tab, party) and f"not sent yet for application {tab.key_id}-1" in status(tab, party)
        assert f"{party}_ciphertext" not in tab.texts
    apply(tab, bruno)
    assert tab.texts["decision"] == DENIED
    tab.encrypt("user", bruno["user"])  # a new application of the same applicant
    assert SENT in status(tab, "user") and tab.app.session_id.endswith("-2")
    for party in ("bank", "agency"):
        assert status(tab, party) == f"not sent yet for application {tab.app.session_id}"
    assert "decision" not in tab.texts and "run_status" not in tab.texts


@pytest.mark.parametrize("party, field, value, words", [
    ("bank", "Account_age", 999, "Account age: value 999 is out of range (a whole number from 0 to 60)"),
    ("bank", "Account_age", -5, "Account age: value -5 is out of range (a whole number from 0 to 60)"),
    ("bank", "Account_age", 1e12, "Account age: value 1000000000000 is out of range"),
    ("bank", "Account_age", None, "Account age: a value is needed (a whole number from 0 to 60)"),
    ("bank", "Account_age", "abc", "Account age: expected a number, got str 'abc'"),
    ("user", "Age", 0, "Age: value 0 is out of range (a whole number from 18 to 120)"),
    ("user", "Num_children", 2.5, "Num children: 2.5 is not a whole number (a whole number from 0 to 20)"),
    ("user", "Total_income", float("inf"), "Total income: value inf is out of range (a number from 0 to 100,000,000)"),
    ("user", "Own_car", "x" * 2_000_000, "Own car: expected a boolean, got str 'xxx"),
    ("user", "Income_type", "Salaried", "Income type: unknown value 'Salaried' (one of the listed values)"),
    ("agency", "Employed", "true", "Employed: expected a boolean, got str 'true' (true or false)"),
    ("agency", "Years_employed", ["0-2"], "Years employed: unknown value ['0-2']"),
])
def test_a_bad_value_is_refused_naming_its_field_and_nothing_is_sent(bruno, page, party, field, value, words):
    """22.2, 22.3, 23.2: the schema bounds every value before a COMMAND; a 2 MB string is quoted in 80 characters."""
    roles, sent_at = FakeRoles(), None
    tab = WebSession(page(roles))
    tab.generate_keys()
    for sender in ("user", "bank", "agency"):
        tab.encrypt(sender, bruno[sender])
        sent_at = tab.clicks if sender == party else sent_at
    calls = len(roles.calls)
    values = [value if f.name == field else bruno[party][f.name] for f in tab.page.schema.features[party]]
    tab.encrypt(party, values)
    text = status(tab, party)
    assert words in text and NOTHING_SENT in text and len(text) < 600, text
    assert f"input sent at click {sent_at} is still the one the evaluator holds" in text
    assert len(roles.calls) == calls  # nothing reached a role


def test_form_values_become_the_records_roles_validate(schema):
    values = {"Num_children": 1.0, "Total_income": 202500, "Occupation_type": NO_VALUE, "Own_car": True}
    defaults = schema.example()["user"]
    record = check_record(schema, "user", [values.get(f.name, defaults[f.name]) for f in schema.features["user"]])
    assert record["Num_children"] == 1 and type(record["Num_children"]) is int
    assert record["Total_income"] == 202500.0 and type(record["Total_income"]) is float
    assert record["Occupation_type"] is None and record["Own_car"] is True
    assert list(record) == [f.name for f in schema.features["user"]]
    with pytest.raises(FormError, match="expected 1 values"):
        check_record(schema, "bank", [1, 2])
    assert label(schema.feature("Total_income")) == "Total income (0 to 100,000,000)"  # 22.8: not 1e+08
    assert label(schema.feature("Years_employed")) == "Years employed"


def test_simulation_says_what_it_does(bruno, page):
    """22.6: no "keys are generated" beside "no keys made"; nothing called encrypted."""
    tab = WebSession(page(FakeRoles(fhe="simulate")))
    tab.generate_keys()
    assert SIM_KEYS in status(tab, "keygen") and KEYS_DONE not in status(tab, "keygen")
    tab.encrypt("bank", bruno["bank"]), tab.encrypt("user", bruno["user"])
    assert SIM_SENT in status(tab, "user") and "encrypted" not in status(tab, "user").replace("not encrypted", "")


def test_a_tab_keeps_its_latest_applications_and_says_which_it_dropped(bruno, page):
    tab = WebSession(page(applications=2))
    tab.generate_keys()
    for _ in range(3):
        apply(tab, bruno)
    assert [a.session_id for a in tab.history] == [f"{tab.key_id}-2", f"{tab.key_id}-3"]
    assert f"keeps its latest 2 decided applications (what Save as scenario writes): {tab.key_id}-1 was dropped" \
        in status(tab, "decrypt")


def test_no_tab_can_push_another_tabs_application_or_keys_out(bruno, page):
    """23.4 against the evaluator's rule (per owner, every tab is "user": beyond max_sessions its oldest session
    goes): tab B may not make the one application that would push out A's decided one; B's own older ones go."""
    shared = page(tabs=2, applications=2)
    assert (shared.capacity.limits.sessions, shared.capacity.limits.keys) == (4, 20)
    a, b = WebSession(shared), WebSession(shared)
    a.generate_keys(), b.generate_keys()
    apply(a, bruno)
    for _ in range(3):  # with A's: the evaluator's 4
        apply(b, bruno)
    b.encrypt("user", bruno["user"])
    assert "The evaluator keeps 4 applications, and one more would push out another open tab's application" \
        in status(b, "user") and NOTHING_SENT in status(b, "user")
    a.explain("linear")
    assert EXPLAINED in status(a, "explain")
    a.encrypt("user", bruno["user"])  # A's new application: its decided one is no longer its current one
    b.encrypt("user", bruno["user"])
    assert SENT in status(b, "user")
    third = WebSession(shared)
    third.generate_keys()  # two tabs hold keys already
    assert "This page serves at most 2 applicants (tabs with keys) at once" in status(third, "keygen")
    shared.capacity.release(a.tab)  # A's tab closed
    third.generate_keys()
    assert KEYS_DONE in status(third, "keygen")


def test_keys_made_before_the_roles_restarted_are_gone(bruno, page):
    roles = FakeRoles()
    tab = WebSession(page(roles))
    tab.generate_keys()
    apply(tab, bruno)
    roles.generation, roles.notice = 1, "The roles were restarted at 12:00:00 (new processes) after the user was lost."
    tab.explain("linear")
    assert status(tab, "explain").startswith(f"{tab.clicks} · ❌ {KEYS_FIRST}\n⚠ The roles were restarted at 12:00")
    assert tab.key_id is None and tab.app is None and "decision" not in tab.texts
    tab.generate_keys()
    assert KEYS_DONE in status(tab, "keygen") and tab.generation == 1 and tab.notice is None


def test_saved_scenario_replays_the_tab_and_only_its_owner_reads_it(bruno, page):
    shared = page()
    tab = WebSession(shared)
    tab.save()
    assert "Nothing to save yet" in status(tab, "save") and not shared.save_dir.exists()
    tab.generate_keys()
    apply(tab, bruno)
    tab.explain("linear"), tab.explain("bisect")
    apply(tab, bruno)  # a second application of the same applicant, not explained
    path = tab.save()
    assert path is not None and f"Saved as scenario {path}" in status(tab, "save") and path.parent == shared.save_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # 23.5
    scenario = load_scenario(path)
    assert scenario.fhe == "execute" and [a.name for a in scenario.applicants] == [tab.key_id] * 2
    first, second = scenario.applicants
    assert first.data == bruno and second.data == bruno
    assert [(s.action, s.strategy) for s in first.steps] == [("predict", None), ("explain", "linear"),
                                                             ("explain", "bisect")]
    assert first.steps[0].expect.decision == "denied"
    assert {(s.expect.outcome, s.expect.bin, s.expect.message, s.expect.max_runs) for s in first.steps[1:]} \
        == {("bin_found", "5-8", FOUND, 3)}
    assert [s.action for s in second.steps] == ["predict"]
    assert tab.save() != path  # a second save is a new file, never an overwrite
