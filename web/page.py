"""The reference demo's web page on the four real role processes (Gradio): three panels (applicant, bank, credit
agency) with the deployment schema's fields, the demo's buttons in its order, and for every button the role and
pid that did the work, the seconds and the bytes on the wire; the messages that passed; save as scenario.

The per-tab logic is in `web/session.py` (no Gradio there); `run_scenario.py ui` starts it.
"""

from __future__ import annotations

import html
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page never calls home

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from credit_model.deployment import COMMITTED, Deployment  # noqa: E402
from credit_model.explainability import STRATEGIES  # noqa: E402
from credit_model.schema import PARTIES, YEARS_FEATURE, Feature  # noqa: E402

from simulation.report import INSECURE  # noqa: E402
from web.capacity import Capacity, Limits  # noqa: E402
from web.driver import RoleDriver  # noqa: E402
from web.form import NO_VALUE, default_records, label  # noqa: E402
from web.session import LABELS, PageContext, WebSession  # noqa: E402

log = logging.getLogger("fhe_credit_sim.page")
TEXTS = ("evaluation_key", "keygen_status", "user_ciphertext", "user_status", "bank_ciphertext", "bank_status",
         "agency_ciphertext", "agency_status", "output_ciphertext", "run_status", "decision", "decrypt_status",
         "explanation", "explain_status", "save_status")
STEP_COLUMNS = ["step", "role (pid)", "seconds", "bytes on the wire"]
MESSAGE_COLUMNS = ["time", "sender", "receiver", "type", "bytes", "preview (hex)"]
PANEL_TITLES = {"user": "Applicant (user)", "bank": "Bank", "agency": "Credit agency"}
USER_COLUMNS = 4  # the applicant's fields side by side, so that its panel is not three times the others' height
CSS = """
#insecure-banner {background:#b91c1c; color:white; padding:10px; font-weight:bold; border-radius:6px}
.out {border:1px solid var(--border-color-primary); border-radius:8px; padding:6px 10px;
      background:var(--input-background-fill); min-height:3.2em}
.out .label {font-size:12px; color:var(--body-text-color-subdued); margin-bottom:2px}
.out pre {white-space:pre-wrap; overflow-wrap:anywhere; margin:0; font-family:inherit; font-size:14px}
.out.hex pre {font-family:ui-monospace, "DejaVu Sans Mono", monospace; font-size:12px}
"""
# System fonts only: the page loads nothing from the internet (no Google Fonts); emoji from Noto Color Emoji.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "DejaVu Sans", "Noto Color Emoji", "sans-serif"],
                          font_mono=["ui-monospace", "DejaVu Sans Mono", "Noto Color Emoji", "monospace"])


def widget(party: str, feature: Feature, value) -> gr.components.Component:
    """A field; its value is checked by web/form.py on the server (the events skip Gradio's own preprocessing,
    whose range check named no field and put an Error badge on every box of the page)."""
    elem_id = f"{party}-{feature.name}"
    if feature.kind == "bool":
        return gr.Checkbox(value=bool(value), label=label(feature), elem_id=elem_id)
    if feature.name == YEARS_FEATURE:  # the ordinal the explanation walks: its bins
        return gr.Radio(list(feature.categories), value=value, label=label(feature), elem_id=elem_id)
    if feature.kind in ("category", "ordinal"):
        choices = list(feature.categories) + ([NO_VALUE] if feature.nullable else [])
        return gr.Dropdown(choices, value=value, label=label(feature), elem_id=elem_id)
    return gr.Number(value=value, label=label(feature), elem_id=elem_id)


def box(label_text: str, text: str, hex_: bool = False) -> str:
    """An output as text on the page (a person reads it; a test reads the same with selenium's .text)."""
    return (f'<div class="out{" hex" if hex_ else ""}"><div class="label">{html.escape(label_text)}</div>'
            f'<pre>{html.escape(text)}</pre></div>')


def box_labels(simulate: bool) -> dict[str, tuple[str, bool]]:
    """Each output box's label, and whether it shows hex."""
    sent = "Input sent in the clear (hex preview; simulation)" if simulate else "Encrypted input (hex preview)"
    labels = {"session_info": ("this tab", False), "evaluation_key": ("Evaluation key (hex preview)", True),
              "output_ciphertext": ("Encrypted output (hex preview)" if not simulate else
                                    "Output in the clear (hex preview; simulation)", True),
              "decision": ("Decision", False), "explanation": ("Explanation", False)}
    labels.update({f"{p}_ciphertext": (sent, True) for p in PARTIES})
    labels.update({name: ("result", False) for name in TEXTS if name.endswith("_status")})
    return labels


def _table(rows: list[list], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def page_header(driver: RoleDriver, deployment: Deployment, secure: bool, attach: str | None) -> str:
    roles = ", ".join(f"{role} pid {pid}" for role, pid in driver.pids.items())
    if driver.fhe == "execute":
        mode = ("real FHE (execute). Keys and ciphertexts travel between the roles; this page is the runner's "
                "control plane only")
    else:
        mode = ("**simulation (INSECURE)**: no keys are made and nothing is encrypted; the parties send their "
                "quantized inputs in the clear and the evaluator runs Concrete's simulation of the circuit. This "
                "page is the runner's control plane only")
    return (f"Four processes over ZeroMQ ({'CurveZMQ' if secure else 'INSECURE: no CurveZMQ'}"
            f"{', attached at ' + attach if attach else ''}): {roles}. Deployment `{deployment.name}`, {mode} "
            f"(it sees {', '.join(LABELS.values())} results, timings and sizes).")


def render(session: WebSession, header: str, waiting: tuple[str, str] | None = None) -> list:
    labels = box_labels(session.page.simulate)
    info = (f"key id {session.key_id or '(no keys yet)'} · application "
            f"{session.app.session_id if session.app else '-'} · decided applications {len(session.history)}")
    if session.notice:
        info += f"\n⚠ {session.notice}"
    texts = dict(session.texts)
    if waiting is not None:
        texts[f"{waiting[0]}_status"] = waiting[1]
    t0 = session.messages[0]["t"] if session.messages else 0.0
    rows = [[f"{m['t'] - t0:8.3f}", m["sender"], m["receiver"], m["type"], f"{m['bytes']:,}", m["preview"]]
            for m in reversed(session.messages)]  # newest first: what the last button did is on top
    steps = [[step, who, f"{seconds:.3f}", f"{size:,}"] for step, who, seconds, size in session.steps]
    boxes = [box(*labels["session_info"][:1], info)]
    boxes += [box(labels[name][0], texts.get(name, ""), labels[name][1]) for name in TEXTS]
    return [session, header, *boxes, _table(steps, STEP_COLUMNS), _table(rows, MESSAGE_COLUMNS)]


class Tabs:
    """The open tabs of the page by Gradio session: a tab closed or reloaded gives its place and keys back."""

    def __init__(self, page: PageContext):
        self.page, self._by_hash, self._lock = page, {}, threading.Lock()

    def seen(self, request: gr.Request | None, tab: WebSession) -> None:
        if request is not None and request.session_hash:
            with self._lock:
                self._by_hash[request.session_hash] = tab

    def closed(self, request: gr.Request) -> None:
        with self._lock:
            tab = self._by_hash.pop(getattr(request, "session_hash", None), None)
        if tab is not None:
            self.page.capacity.release(tab.tab)


def build_app(page: PageContext, deployment: Deployment, header: Callable[[], str]) -> gr.Blocks:
    schema, driver = page.schema, page.driver
    defaults = default_records(deployment)
    simulate = page.simulate
    labels = box_labels(simulate)
    tabs = Tabs(page)

    def out(name: str, elem_id: str) -> gr.HTML:
        return gr.HTML(box(labels[name][0], "", labels[name][1]), elem_id=elem_id)

    with gr.Blocks(title="fhe-credit-sim: encrypted credit-card approval") as demo:
        state = gr.State(None, delete_callback=lambda tab: tab is not None and page.capacity.release(tab.tab))
        gr.Markdown("# Encrypted credit-card approval")
        header_box = gr.Markdown(header(), elem_id="header")
        if simulate:
            gr.HTML(f'<div id="insecure-banner">{INSECURE}</div>')
        gr.Markdown(f"Each browser tab is one applicant with its own keys (at most {page.capacity.limits.tabs} tabs "
                    f"hold keys at once). A new tab, or reloading this one, starts a new applicant: the keys and "
                    f"applications of this tab are then given up.", elem_id="tab-note")
        info = out("session_info", "session-info")
        text = {}
        gr.Markdown("## 1. Generate the keys (the applicant)")
        keygen = gr.Button("Generate keys", variant="primary", elem_id="keygen-button")
        with gr.Row():
            text["evaluation_key"] = out("evaluation_key", "evaluation-key")
            text["keygen_status"] = out("keygen_status", "keygen-status")
        gr.Markdown("## 2. Fill in, encrypt and send each party's inputs")
        fields, encrypt = {}, {}

        def panel(party: str) -> None:
            gr.Markdown(f"### {PANEL_TITLES[party]}")
            features = schema.features[party]
            if party == "user":
                per = -(-len(features) // USER_COLUMNS)
                with gr.Row():
                    fields[party] = []
                    for i in range(0, len(features), per):
                        with gr.Column(min_width=160):
                            fields[party] += [widget(party, f, defaults[party][f.name]) for f in features[i:i + per]]
            else:
                fields[party] = [widget(party, f, defaults[party][f.name]) for f in features]
            encrypt[party] = gr.Button("Encrypt and send", elem_id=f"{party}-encrypt")
            with gr.Row() if party == "user" else gr.Column():  # side by side in the wide panel only
                text[f"{party}_ciphertext"] = out(f"{party}_ciphertext", f"{party}-ciphertext")
                text[f"{party}_status"] = out(f"{party}_status", f"{party}-status")

        with gr.Column(variant="panel", elem_id="user-panel"):
            panel("user")
        with gr.Row(equal_height=True):
            for party in ("bank", "agency"):
                with gr.Column(variant="panel", elem_id=f"{party}-panel"):
                    panel(party)
        gr.Markdown("## 3. Run the model on the encrypted inputs (the evaluator)")
        run = gr.Button("Run the model in FHE", variant="primary", elem_id="run-button")
        with gr.Row():
            text["output_ciphertext"] = out("output_ciphertext", "output-ciphertext")
            text["run_status"] = out("run_status", "run-status")
        gr.Markdown("## 4. Get and decrypt the output (the applicant)\nThe user fetched and decrypted the output "
                    "within the Run click's command (RUN, then GET_OUTPUT held until the run ends, then decryption): "
                    "this button shows its decision.")
        decrypt = gr.Button("Get and decrypt the output", variant="primary", elem_id="decrypt-button")
        with gr.Row():
            text["decision"] = out("decision", "decision")
            text["decrypt_status"] = out("decrypt_status", "decrypt-status")
        gr.Markdown("## 5. Explain the decision: which years-employed bin would change it")
        strategy = gr.Radio(list(STRATEGIES), value="linear", label="strategy (linear: the demo's loop; bisect: "
                            "at most ceil(log2(bins)) encrypted runs, needs a monotone model)",
                            elem_id="explain-strategy")
        explain = gr.Button("Explain (years employed)", variant="primary", elem_id="explain-button")
        with gr.Row():
            text["explanation"] = out("explanation", "explanation")
            text["explain_status"] = out("explain_status", "explain-status")
        gr.Markdown(f"## Save this tab's applications as a scenario\nFiles go to `{page.save_dir}` "
                    f"(this run's own folder, readable by its owner only).", elem_id="save-note")
        save = gr.Button("Save as scenario", elem_id="save-button")
        text["save_status"] = out("save_status", "save-status")
        gr.Markdown("## What happened")
        steps = gr.Dataframe(headers=STEP_COLUMNS, label="steps (the command's role and pid, seconds, bytes that "
                             "passed between roles meanwhile)", interactive=False, elem_id="steps")
        messages = gr.Dataframe(headers=MESSAGE_COLUMNS, label="messages that passed (sender, receiver, type, "
                                "bytes, hex preview of the first blob past its header; seconds since this tab's "
                                "first; newest first)", interactive=False, max_height=400, elem_id="messages")
        outputs = [state, header_box, info, *[text[name] for name in TEXTS], steps, messages]

        def handler(action: Callable[..., None], status: str | None):
            """The click's work runs on its own thread; meanwhile the click's status says how many clicks of
            other tabs the roles serve before it (they serve one COMMAND at a time)."""
            def handle(request: gr.Request, session, *values):
                tab = session if isinstance(session, WebSession) else WebSession(page)
                tabs.seen(request, tab)
                if status is None:
                    yield render(tab, header())
                    return
                done = threading.Event()

                def work() -> None:
                    try:
                        action(tab, *values)
                    except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback, said in the tab
                        log.exception("the %s click failed", status)
                        tab.texts[f"{status}_status"] = f"❌ INTERNAL: {type(exc).__name__}: {exc}"
                    finally:
                        done.set()

                worker = threading.Thread(target=work, name=f"click-{status}", daemon=True)
                worker.start()
                shown = 0
                while not done.wait(0.2):
                    ahead = driver.ahead(worker.ident)
                    if ahead and ahead != shown:
                        shown = ahead
                        yield render(tab, header(), (status, f"⏳ waiting for the roles ({ahead} ahead: they "
                                                             f"serve one command at a time)"))
                yield render(tab, header())
            return handle

        def on(button, action, status: str, inputs: list, api_name: str) -> None:
            button.click(handler(action, status), [state, *inputs], outputs, api_name=api_name, preprocess=False,
                         show_progress="minimal", show_progress_on=[text[f"{status}_status"]])

        on(keygen, lambda s: s.generate_keys(), "keygen", [], "keygen")
        for party in PARTIES:
            on(encrypt[party], lambda s, *v, p=party: s.encrypt(p, list(v)), party, fields[party], f"encrypt_{party}")
        on(run, lambda s: s.run(), "run", [], "run")
        on(decrypt, lambda s: s.get_output(), "decrypt", [], "decrypt")
        on(explain, lambda s, how: s.explain(how), "explain", [strategy], "explain")
        on(save, lambda s: s.save(), "save", [], "save")
        demo.load(handler(lambda s: None, None), [state], outputs, show_progress="hidden", api_visibility="private")
        demo.unload(tabs.closed)
    return demo


def make_page(driver: RoleDriver, deployment: Deployment, save_dir: Path, limits: Limits) -> PageContext:
    ref = deployment.name if deployment.name in COMMITTED else str(deployment.directory)
    return PageContext(driver, deployment.schema, Capacity(limits, track_keys=driver.fhe == "execute"), save_dir, ref)


def serve(driver: RoleDriver, deployment: Deployment, save_dir: Path, port: int, header: Callable[[], str],
          limits: Limits = Limits(), echo: Callable[[str], None] = print) -> None:
    """Serve the page on 127.0.0.1:port until SIGINT or SIGTERM, then close it (the caller stops the roles)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    demo = build_app(make_page(driver, deployment, save_dir, limits), deployment, header)
    demo.queue(default_concurrency_limit=8)
    try:
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    ssr_mode=False, footer_links=[], theme=THEME, css=CSS)
        echo(f"page: http://127.0.0.1:{port}  (Ctrl-C stops the page and the roles); saved scenarios go to {save_dir}")
        reported = 0
        while not stop.wait(0.5):
            for event in driver.events[reported:]:  # a role lost, the roles restarted
                echo(event)
            reported = len(driver.events)
        echo("stopping the page and the roles")
    finally:
        demo.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
