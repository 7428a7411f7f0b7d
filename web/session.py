"""The web page's per-tab logic, without any web framework: one applicant per browser tab (its own key id and
session ids), driven through the four roles by the same control COMMANDs the scenario runner sends, with the
reference demo's wording for every answer and error. `web/page.py` lays it out with Gradio.

The roles are reached only through the protocol: a driver's `call(role, action, params)` sends one control COMMAND
and returns a StepOutcome (`web/driver.py`; the unit tests use a fake one).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from credit_model.explainability import EXPLAIN_WHEN_APPROVED
from credit_model.schema import MISSING, PARTIES, Schema
from protocol.errors import ErrorCode

from scenarios.spec import parse_scenario
from web.driver import StepOutcome

# The reference demo's messages (its backend.py), and ours where it has none.
KEYS_FIRST = "Please generate the keys first."
ALL_INPUTS_FIRST = "Please send the inputs from all three parties to the server first."
RUN_FIRST = "Please run the FHE execution first and wait for it to be completed."
DECRYPT_FIRST = "Please get and decrypt the output first."
APPLICANT_FIRST = ("Please encrypt and send the applicant's inputs first: the applicant's input opens the "
                   "application at the evaluator.")
ALREADY_RUN = ("This application has already been run: get and decrypt its output, or encrypt and send again "
               "to start a new application with the same keys.")
KEYS_DONE = "Keys are generated and evaluation key is sent ✅"
SENT = "Inputs are encrypted and sent to server. ✅"
RUN_DONE = "FHE evaluation is done. ✅"
OUTPUT_DONE = "Encrypted outputs have been received from the server. ✅"
EXPLAINED = "Prediction has been explained. ✅"
LABELS = {"user": "applicant", "bank": "bank", "agency": "credit agency"}
NO_VALUE = "(none)"  # the dropdown choice standing for a nullable category's missing value
MAX_MESSAGES = 5000  # a tab keeps its latest messages only (as a role's own log does)


def coerce_record(schema: Schema, party: str, values: list) -> dict:
    """The page's widget values in schema order -> the record a role validates (ints as ints, NO_VALUE as None)."""
    record = {}
    for feature, value in zip(schema.features[party], values):
        if feature.kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif feature.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif feature.kind == "category" and value in (NO_VALUE, MISSING):
            value = None
        record[feature.name] = value
    return record


def _missing_names(reason: str) -> str:
    """'evaluator: inputs missing from: bank, agency' -> 'bank, credit agency'."""
    names = reason.rsplit("missing from:", 1)[-1].replace(".", "").split(",")
    return ", ".join(LABELS.get(n.strip(), n.strip()) for n in names if n.strip())


@dataclass
class Application:
    key_id: str
    session_id: str
    sent: dict[str, dict] = field(default_factory=dict)  # party -> the record it encrypted and sent last
    run: dict | None = None  # the user's `predict` RESULT
    decided: bool = False  # the decision was shown ("Get and decrypt the output")
    explanations: list[dict] = field(default_factory=list)


@dataclass
class WebSession:
    """One browser tab: one applicant, its key id, its applications (session ids) and what the page shows."""

    key_id: str | None = None
    number: int = 0
    app: Application | None = None
    history: list[Application] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    steps: list[list] = field(default_factory=list)  # [step, role (pid), seconds, bytes on the wire]
    messages: list[dict] = field(default_factory=list)
    clicks: int = 0

    def _status(self, name: str, text: str) -> None:
        self.clicks += 1
        self.texts[f"{name}_status"] = f"{self.clicks} · {text}"

    def _record(self, step: str, outcome: StepOutcome) -> None:
        self.steps.append([step, f"{outcome.role} (pid {outcome.pid})", outcome.seconds, outcome.bytes])
        self.messages = (self.messages + outcome.messages)[-MAX_MESSAGES:]

    def _error(self, name: str, outcome: StepOutcome, known: dict[ErrorCode, str]) -> None:
        exc = outcome.error
        text = known.get(exc.code) or f"{exc.code.value}: {exc.reason}"
        self._status(name, f"❌ {text}\n({outcome.where()}; {exc.code.value}: {exc.reason})")

    def _new_application(self) -> Application:
        self.number += 1
        self.app = Application(self.key_id, f"{self.key_id}-{self.number}")
        for name in ("user_ciphertext", "bank_ciphertext", "agency_ciphertext", "output_ciphertext", "decision",
                     "explanation", "run_status", "decrypt_status", "explain_status"):
            self.texts.pop(name, None)
        return self.app

    # --- the buttons, in the demo's order ------------------------------------------------------------------
    def generate_keys(self, driver) -> None:
        """The user's `keygen` command: fresh keys for a new key id, the evaluation key uploaded, the inputs'
        secret keys shared with bank and agency; the applicant's input is sent by its own "Encrypt and send"."""
        key_id = f"web-{secrets.token_hex(4)}"
        outcome = driver.call("user", "keygen", {"key_id": key_id})
        self._record("generate keys", outcome)
        if outcome.error is not None:
            return self._error("keygen", outcome, {})
        self.key_id, self.number, self.app = key_id, 0, None
        self._new_application()
        res = outcome.result
        if driver.fhe == "simulate":
            self.texts["evaluation_key"] = "(none: --fhe simulate makes no keys; INSECURE)"
            detail = "simulation: no keys made, nothing encrypted"
        else:
            key_preview = res.get("eval_key_preview", "")
            self.texts["evaluation_key"] = f"{key_preview}… ({res.get('eval_key_bytes', 0):,} bytes)"
            detail = (f"key id {key_id}: keygen {res.get('keygen_s', 0):.2f} s; evaluation key "
                      f"{res.get('eval_key_bytes', 0):,} B uploaded to the evaluator in "
                      f"{res.get('eval_key_upload_s', 0):.2f} s; the inputs' secret keys shared with "
                      f"{', '.join(res.get('client_key_shared_with', [])) or 'nobody'}")
        self._status("keygen", f"{KEYS_DONE}\n{outcome.where()}\n{detail}")

    def encrypt(self, driver, party: str, record: dict) -> None:
        if self.key_id is None:
            return self._status(party, f"❌ {KEYS_FIRST}")
        app = self.app if self.app is not None and self.app.run is None else self._new_application()
        params = {"session_id": app.session_id, "key_id": self.key_id, "features": record}
        outcome = driver.call(party, "prepare" if party == "user" else "encrypt", params)
        self._record(f"encrypt and send ({LABELS[party]})", outcome)
        if outcome.error is not None:
            return self._error(party, outcome, {ErrorCode.KEYS_NOT_GENERATED: KEYS_FIRST,
                                                ErrorCode.UNKNOWN_SESSION: APPLICANT_FIRST})
        app.sent[party] = record
        res = outcome.result
        self.texts[f"{party}_ciphertext"] = f"{res.get('preview', '')}… ({res.get('bytes', 0):,} bytes)"
        self._status(party, f"{SENT}\n{outcome.where()}\nsession {app.session_id}: ciphertext "
                            f"{res.get('bytes', 0):,} B, encrypted in {res.get('encrypt_s', 0):.3f} s")

    def run(self, driver) -> None:
        if self.key_id is None:
            return self._status("run", f"❌ {KEYS_FIRST}")
        app = self.app
        if app is not None and app.run is not None:
            return self._status("run", f"❌ {ALREADY_RUN}")
        if app is None or "user" not in app.sent:  # no application at the evaluator yet: nothing to ask
            missing = ", ".join(LABELS[p] for p in PARTIES if app is None or p not in app.sent)
            return self._status("run", f"❌ {ALL_INPUTS_FIRST} Inputs missing from: {missing}.")
        outcome = driver.call("user", "predict", {"session_id": app.session_id})
        self._record("run the model in FHE", outcome)
        if outcome.error is not None:
            missing = _missing_names(outcome.error.reason)
            return self._error("run", outcome, {
                ErrorCode.MISSING_INPUTS: f"{ALL_INPUTS_FIRST} Inputs missing from: {missing}."})
        app.run = res = outcome.result
        self.texts["output_ciphertext"] = f"{res.get('output_preview', '')}… ({res.get('output_bytes', 0):,} bytes)"
        self._status("run", f"{RUN_DONE}\n{outcome.where()}\nthe evaluator (pid {driver.pids.get('evaluator')}) "
                            f"ran the circuit in {res.get('run_s', 0):.3f} s; encrypted output "
                            f"{res.get('output_bytes', 0):,} B")

    def get_output(self, driver) -> None:
        """In the protocol the user fetches the OUTPUT (long poll) and decrypts it within `predict`; this button
        shows what that did, as the demo's second step."""
        if self.key_id is None:
            return self._status("decrypt", f"❌ {KEYS_FIRST}")
        app = self.app
        if app is None or app.run is None:
            return self._status("decrypt", f"❌ {RUN_FIRST}")
        res = app.run
        self.texts["decision"] = res["decision"]
        if not app.decided:
            app.decided = True
            self.history.append(app)
        self._status("decrypt", f"{OUTPUT_DONE}\nuser (pid {driver.pids.get('user')}) fetched the OUTPUT "
                                f"({res.get('output_bytes', 0):,} B) and decrypted it in "
                                f"{res.get('decrypt_s', 0):.4f} s (waited {res.get('wait_s', 0):.2f} s for the run)")

    def explain(self, driver, strategy: str) -> None:
        if self.key_id is None:
            return self._status("explain", f"❌ {KEYS_FIRST}")
        app = self.app
        if app is None or app.run is None:
            return self._status("explain", f"❌ {RUN_FIRST}")
        if not app.decided:
            return self._status("explain", f"❌ {DECRYPT_FIRST}")
        outcome = driver.call("user", "explain", {"session_id": app.session_id, "strategy": strategy})
        self._record(f"explain ({strategy})", outcome)
        if outcome.error is not None:
            return self._error("explain", outcome, {ErrorCode.NOT_DENIED: EXPLAIN_WHEN_APPROVED})
        res = outcome.result
        app.explanations.append({"strategy": strategy, **{k: res.get(k) for k in ("outcome", "bin", "explanation",
                                                                                   "runs")}})
        self.texts["explanation"] = res["explanation"]
        tried = ", ".join(f"{c['bin']} {'approved' if c['approved'] else 'denied'}" for c in res.get("candidates", []))
        self._status("explain", f"{EXPLAINED}\n{outcome.where()}\n{strategy}: {res.get('runs', 0)} encrypted "
                                f"run(s){': ' + tried if tried else ''}")

    # --- save as scenario ------------------------------------------------------------------------------------
    def scenario(self, name: str, deployment: str, fhe: str) -> dict:
        applicants = []
        for app in self.history:
            steps = [{"action": "predict", "expect": {"decision": "approved" if app.run["approved"] else "denied"}}]
            for exp in app.explanations:
                expect = {"outcome": exp["outcome"], "message": exp["explanation"], "max_runs": exp["runs"]}
                if exp["bin"]:
                    expect["bin"] = exp["bin"]
                steps.append({"action": "explain", "strategy": exp["strategy"], "expect": expect})
            applicants.append({"name": app.key_id, **{p: app.sent[p] for p in PARTIES},
                               "steps": steps})
        return {"name": name, "description": f"Saved from the web page ({len(applicants)} application(s) of "
                                             f"{', '.join(sorted({a['name'] for a in applicants}))}).",
                "deployment": deployment, "fhe": fhe, "applicants": applicants}

    def save(self, directory: Path, deployment: str, fhe: str) -> Path | None:
        """Write the decided applications as a scenario `run_scenario.py run FILE` replays (checked first)."""
        if not self.history:
            self._status("save", "❌ Nothing to save yet: get and decrypt an output first.")
            return None
        name = f"{self.key_id}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = Path(directory).resolve() / f"{name}.yaml"
        text = yaml.safe_dump(self.scenario(name, deployment, fhe), sort_keys=False, allow_unicode=True, width=1000)
        parse_scenario(text, path)  # refuse to write what `run` would not load
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self._status("save", f"Saved as scenario {path}\nreplay: .venv/bin/python run_scenario.py run {path}")
        return path

