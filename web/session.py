"""The web page's per-tab logic, without any web framework: one applicant per browser tab (its own key id and
session ids), driven through the four roles by the same control COMMANDs the scenario runner sends, with the
reference demo's wording for every answer and error. `web/page.py` lays it out with Gradio.

The roles are reached only through the protocol: a driver's `call(role, action, params)` sends one control COMMAND
and returns a StepOutcome (`web/driver.py`; the unit tests use a fake one). Every value of the form is checked
against the deployment's schema first (`web/form.py`), and every click that would make the roles keep one more key
or application is admitted by the page's `Capacity` first (`web/capacity.py`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from credit_model.explainability import EXPLAIN_WHEN_APPROVED, STRATEGIES
from credit_model.schema import PARTIES, Schema
from protocol.errors import ErrorCode

from web.capacity import Capacity, Refused
from web.driver import StepOutcome
from web.form import FormError, check_record
from web.saving import save_scenario, scenario_of

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
# --fhe simulate: what really happens (no key, nothing encrypted), never the words of real FHE.
SIM_KEYS = "Simulation (INSECURE): no keys to make, nothing will be encrypted; the application can start. ✅"
SIM_SENT = "Inputs are sent to the server in the clear (simulation, INSECURE: quantized, not encrypted). ✅"
SIM_RUN_DONE = "Simulated evaluation is done, on the inputs in the clear (INSECURE). ✅"
SIM_OUTPUT_DONE = "The output has been received from the server, in the clear (simulation, INSECURE). ✅"
NOT_SENT = "not sent yet for application {session_id}"
NOTHING_SENT = "Nothing was sent."
LABELS = {"user": "applicant", "bank": "bank", "agency": "credit agency"}
MAX_MESSAGES = 5000  # a tab keeps its latest messages only (as a role's own log does)
PARTY_TEXTS = [f"{p}_{kind}" for p in PARTIES for kind in ("ciphertext", "status")]
RESULT_TEXTS = ["output_ciphertext", "decision", "explanation", "run_status", "decrypt_status", "explain_status"]


def _missing_names(reason: str) -> str:
    """'evaluator: inputs missing from: bank, agency' -> 'bank, credit agency'."""
    names = reason.rsplit("missing from:", 1)[-1].replace(".", "").split(",")
    return ", ".join(LABELS.get(n.strip(), n.strip()) for n in names if n.strip())


def preview_text(preview: str, at: int | None, size: int) -> str:
    where = f"bytes {at:,}-{at + len(preview) // 2 - 1:,} of {size:,}" if at is not None else f"{size:,} bytes"
    return f"{preview}… ({where})"


@dataclass
class PageContext:
    """What every tab of one page shares: the roles, the schema, the capacity bookkeeping, where saves go."""

    driver: object
    schema: Schema
    capacity: Capacity
    save_dir: Path  # this run's own folder (0700), made at the first save
    deployment_ref: str = "kaggle"

    @property
    def simulate(self) -> bool:
        return self.driver.fhe == "simulate"


@dataclass
class Application:
    key_id: str
    session_id: str
    sent: dict[str, dict] = field(default_factory=dict)  # party -> the record it encrypted and sent last
    sent_at: dict[str, int] = field(default_factory=dict)  # party -> the click that sent it
    run: dict | None = None  # the user's `predict` RESULT
    decided: bool = False  # the decision was shown ("Get and decrypt the output")
    explanations: list[dict] = field(default_factory=list)


@dataclass
class WebSession:
    """One browser tab: one applicant, its key id, its applications (session ids) and what the page shows."""

    page: PageContext
    tab: str = field(default_factory=lambda: secrets.token_hex(4))
    key_id: str | None = None
    generation: int = 0  # the role set the keys were made on
    number: int = 0
    app: Application | None = None
    history: list[Application] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    steps: list[list] = field(default_factory=list)  # [step, role (pid), seconds, bytes on the wire]
    messages: list[dict] = field(default_factory=list)
    clicks: int = 0
    notice: str | None = None  # the roles were restarted since this tab's keys were made

    @property
    def driver(self):
        return self.page.driver

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

    def _sync(self) -> None:
        """Keys made on a role set that has since been restarted are gone: the tab starts again, and says why."""
        if self.key_id is not None and self.generation != self.driver.generation:
            self.page.capacity.release(self.tab)
            self.key_id, self.app, self.notice = None, None, self.driver.notice or "The roles were restarted."
            for name in [*PARTY_TEXTS, *RESULT_TEXTS, "evaluation_key", "keygen_status"]:
                self.texts.pop(name, None)

    def _down(self, name: str) -> bool:
        """The roles cannot be reached (started elsewhere and lost, or not started again): the click says why."""
        self._sync()
        down = getattr(self.driver, "down", None)
        if down:
            self._status(name, f"❌ {down}\n{NOTHING_SENT}")
        return bool(down)

    def _keys_first(self, name: str) -> None:
        self._status(name, f"❌ {KEYS_FIRST}" + (f"\n⚠ {self.notice}" if self.notice else ""))

    def _new_application(self) -> Application:
        """A new application of this tab: every status and preview of the previous one goes (22.1: a status
        describes the tab's current application only)."""
        self.number += 1
        self.app = Application(self.key_id, f"{self.key_id}-{self.number}")
        for name in [*PARTY_TEXTS, *RESULT_TEXTS]:
            self.texts.pop(name, None)
        for party in PARTIES:
            self.texts[f"{party}_status"] = NOT_SENT.format(session_id=self.app.session_id)
        return self.app

    # --- the buttons, in the demo's order ------------------------------------------------------------------
    def generate_keys(self) -> None:
        """The user's `keygen` command: fresh keys for a new key id, the evaluation key uploaded, the inputs'
        secret keys shared with bank and agency; the applicant's input is sent by its own "Encrypt and send"."""
        if self._down("keygen"):
            return
        generation = self.driver.generation
        try:
            ticket = self.page.capacity.reserve(self.tab, "key", generation)
        except Refused as exc:
            return self._status("keygen", f"❌ {exc}")
        key_id = f"web-{secrets.token_hex(4)}"
        outcome = self.driver.call("user", "keygen", {"key_id": key_id}, generation)
        self._record("generate keys", outcome)
        made = outcome.error is None or outcome.error.code is not ErrorCode.PEER_LOST
        self.page.capacity.done(ticket, key_id if made else None, outcome.seq, live=outcome.error is None)
        if outcome.error is not None:
            return self._error("keygen", outcome, {})
        self.key_id, self.generation, self.number, self.app, self.notice = key_id, generation, 0, None, None
        self._new_application()
        res = outcome.result
        if self.page.simulate:
            self.texts["evaluation_key"] = "(none: --fhe simulate makes no keys; INSECURE)"
            return self._status("keygen", f"{SIM_KEYS}\n{outcome.where()}\nkey id {key_id} names this applicant's "
                                          f"applications; no key was made or sent")
        self.texts["evaluation_key"] = preview_text(res.get("eval_key_preview", ""), res.get("eval_key_preview_at"),
                                                    res.get("eval_key_bytes", 0))
        self._status("keygen", f"{KEYS_DONE}\n{outcome.where()}\nkey id {key_id}: keygen "
                               f"{res.get('keygen_s', 0):.2f} s; evaluation key {res.get('eval_key_bytes', 0):,} B "
                               f"uploaded to the evaluator in {res.get('eval_key_upload_s', 0):.2f} s; the inputs' "
                               f"secret keys shared with "
                               f"{', '.join(res.get('client_key_shared_with', [])) or 'nobody'}")

    def encrypt(self, party: str, values) -> None:
        """A party's "Encrypt and send": its panel's values (schema order, or a record) checked, then sent."""
        if self._down(party):
            return
        try:
            record = check_record(self.page.schema, party, values)
        except FormError as exc:
            kept = ""
            if self.app is not None and party in self.app.sent and self.app.run is None:
                kept = (f" The {LABELS[party]}'s input sent at click {self.app.sent_at[party]} is still the one "
                        f"the evaluator holds for application {self.app.session_id}.")
            return self._status(party, f"❌ {exc.text}\n{NOTHING_SENT}{kept}")
        if self.key_id is None:
            return self._keys_first(party)
        opening = party == "user" and (self.app is None or self.app.run is not None or "user" not in self.app.sent)
        ticket = None
        if opening:  # the applicant's input opens an application at the evaluator: one more it keeps
            try:
                ticket = self.page.capacity.reserve(self.tab, "session", self.generation)
            except Refused as exc:
                return self._status(party, f"❌ {exc}\n{NOTHING_SENT}")
        app = self.app if self.app is not None and self.app.run is None else self._new_application()
        params = {"session_id": app.session_id, "key_id": self.key_id, "features": record}
        outcome = self.driver.call(party, "prepare" if party == "user" else "encrypt", params, self.generation)
        self._record(f"encrypt and send ({LABELS[party]})", outcome)
        if ticket is not None:
            maybe = outcome.error is not None and (outcome.error.reason.startswith("evaluator")
                                                   or outcome.error.code in (ErrorCode.TIMEOUT, ErrorCode.INTERNAL))
            opened = outcome.error is None or maybe
            self.page.capacity.done(ticket, app.session_id if opened else None, outcome.seq,
                                    live=outcome.error is None)
        if outcome.error is not None:
            return self._error(party, outcome, {ErrorCode.KEYS_NOT_GENERATED: KEYS_FIRST,
                                                ErrorCode.UNKNOWN_SESSION: APPLICANT_FIRST})
        if party == "user":
            self.page.capacity.key_used(self.key_id, outcome.seq, self.generation)
        app.sent[party], app.sent_at[party] = record, self.clicks + 1
        res = outcome.result
        self.texts[f"{party}_ciphertext"] = preview_text(res.get("preview", ""), res.get("preview_at"),
                                                         res.get("bytes", 0))
        what = "sent in the clear" if self.page.simulate else "ciphertext"
        self._status(party, f"{SIM_SENT if self.page.simulate else SENT}\n{outcome.where()}\nsession "
                            f"{app.session_id}: {what} {res.get('bytes', 0):,} B, made in "
                            f"{res.get('encrypt_s', 0):.3f} s")

    def run(self) -> None:
        if self._down("run"):
            return
        if self.key_id is None:
            return self._keys_first("run")
        app = self.app
        if app is not None and app.run is not None:
            return self._status("run", f"❌ {ALREADY_RUN}")
        if app is None or "user" not in app.sent:  # no application at the evaluator yet: nothing to ask
            missing = ", ".join(LABELS[p] for p in PARTIES if app is None or p not in app.sent)
            return self._status("run", f"❌ {ALL_INPUTS_FIRST} Inputs missing from: {missing}.")
        outcome = self.driver.call("user", "predict", {"session_id": app.session_id}, self.generation)
        self._record("run the model in FHE", outcome)
        if outcome.error is not None:
            missing = _missing_names(outcome.error.reason)
            return self._error("run", outcome, {
                ErrorCode.MISSING_INPUTS: f"{ALL_INPUTS_FIRST} Inputs missing from: {missing}."})
        app.run = res = outcome.result
        self.texts["output_ciphertext"] = preview_text(res.get("output_preview", ""), res.get("output_preview_at"),
                                                       res.get("output_bytes", 0))
        self._status("run", f"{SIM_RUN_DONE if self.page.simulate else RUN_DONE}\n{outcome.where()}\nthe evaluator "
                            f"(pid {self.driver.pids.get('evaluator')}) ran the circuit in "
                            f"{res.get('run_s', 0):.3f} s; "
                            f"the user fetched its output ({res.get('output_bytes', 0):,} B) and decrypted it in this "
                            f"same command: the next button shows it")

    def get_output(self) -> None:
        """In the protocol the user fetches the OUTPUT (long poll) and decrypts it within `predict`, the command
        the Run button sent; this button shows what that did, as the demo's second step, and says so."""
        if self._down("decrypt"):
            return
        if self.key_id is None:
            return self._keys_first("decrypt")
        app = self.app
        if app is None or app.run is None:
            return self._status("decrypt", f"❌ {RUN_FIRST}")
        res = app.run
        self.texts["decision"] = res["decision"]
        dropped = ""
        if not app.decided:
            app.decided = True
            self.history.append(app)
            limit = self.page.capacity.limits.applications
            if len(self.history) > limit:
                old = self.history.pop(0)
                dropped = (f"\nthis tab keeps its latest {limit} decided applications (what Save as scenario "
                           f"writes): {old.session_id} was dropped")
        self._status("decrypt", f"{SIM_OUTPUT_DONE if self.page.simulate else OUTPUT_DONE}\nno message now: user "
                                f"(pid {self.driver.pids.get('user')}) fetched this OUTPUT "
                                f"({res.get('output_bytes', 0):,} B) and decrypted it in "
                                f"{res.get('decrypt_s', 0):.4f} s "
                                f"within the Run click's command (waited {res.get('wait_s', 0):.2f} s for the run)"
                                f"{dropped}")

    def explain(self, strategy) -> None:
        if self._down("explain"):
            return
        if strategy not in STRATEGIES:
            return self._status("explain", f"❌ strategy: {str(strategy)[:40]!r} is not one of "
                                           f"{', '.join(STRATEGIES)}\n{NOTHING_SENT}")
        if self.key_id is None:
            return self._keys_first("explain")
        app = self.app
        if app is None or app.run is None:
            return self._status("explain", f"❌ {RUN_FIRST}")
        if not app.decided:
            return self._status("explain", f"❌ {DECRYPT_FIRST}")
        outcome = self.driver.call("user", "explain", {"session_id": app.session_id, "strategy": strategy},
                                   self.generation)
        self._record(f"explain ({strategy})", outcome)
        if outcome.error is not None:
            return self._error("explain", outcome, {ErrorCode.NOT_DENIED: EXPLAIN_WHEN_APPROVED})
        res = outcome.result
        app.explanations.append({"strategy": strategy, **{k: res.get(k) for k in ("outcome", "bin", "explanation",
                                                                                   "runs")}})
        self.texts["explanation"] = res["explanation"]
        tried = ", ".join(f"{c['bin']} {'approved' if c['approved'] else 'denied'}" for c in res.get("candidates", []))
        self._status("explain", f"{EXPLAINED}\n{outcome.where()}\n{strategy}: {res.get('runs', 0)} "
                                f"{'simulated' if self.page.simulate else 'encrypted'} run(s)"
                                f"{': ' + tried if tried else ''}")

    # --- save as scenario ------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Write the decided applications as a scenario `run_scenario.py run FILE` replays (web/saving.py)."""
        if not self.history:
            self._status("save", "❌ Nothing to save yet: get and decrypt an output first.")
            return None
        name = f"{self.history[-1].key_id}-{time.strftime('%Y%m%d-%H%M%S')}-{self.clicks + 1}"
        scenario = scenario_of(name, self.history, self.page.deployment_ref, self.driver.fhe)
        path = save_scenario(self.page.save_dir, name, scenario)
        self._status("save", f"Saved as scenario {path}\nreplay: .venv/bin/python run_scenario.py run {path}")
        return path
