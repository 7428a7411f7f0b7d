"""The reference demo's web page on the four real role processes (Gradio): three panels (applicant, bank, credit
agency) with the deployment schema's fields, the demo's buttons in its order, and for every button the role and
pid that did the work, the seconds and the bytes on the wire; the messages that passed; save as scenario.

The per-tab logic is in `web/session.py` (no Gradio there); `run_scenario.py ui` starts it.
"""

from __future__ import annotations

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

from scenarios import shipped_scenarios  # noqa: E402
from simulation.report import INSECURE  # noqa: E402
from scenarios.spec import ScenarioError, load_scenario  # noqa: E402
from web.driver import RoleDriver  # noqa: E402
from web.session import LABELS, NO_VALUE, WebSession, coerce_record  # noqa: E402

TEXTS = ("evaluation_key", "keygen_status", "user_ciphertext", "user_status", "bank_ciphertext", "bank_status",
         "agency_ciphertext", "agency_status", "output_ciphertext", "run_status", "decision", "decrypt_status",
         "explanation", "explain_status", "save_status")
STEP_COLUMNS = ["step", "role (pid)", "seconds", "bytes on the wire"]
MESSAGE_COLUMNS = ["time", "sender", "receiver", "type", "bytes", "preview (hex)"]
PANEL_TITLES = {"user": "Applicant (user)", "bank": "Bank", "agency": "Credit agency"}
CSS = """
#insecure-banner {background:#b91c1c; color:white; padding:10px; font-weight:bold; border-radius:6px}
.hex textarea {font-family: ui-monospace, monospace; font-size: 12px}
"""
# System fonts only: the page loads nothing from the internet (no Google Fonts).
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif"],
                          font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"])


def default_records(deployment: Deployment) -> dict[str, dict]:
    """The form's first values: the deployment's shipped approved applicant, else its schema's example."""
    try:
        scenario = load_scenario(shipped_scenarios(deployment.name) / "approved.yaml", deployment.directory)
        return scenario.applicants[0].data
    except (ScenarioError, OSError):
        return deployment.schema.example()


def widget(party: str, feature: Feature, value) -> gr.components.Component:
    elem_id, label = f"{party}-{feature.name}", feature.name.replace("_", " ")
    if feature.kind == "bool":
        return gr.Checkbox(value=bool(value), label=label, elem_id=elem_id)
    if feature.name == YEARS_FEATURE:  # the ordinal the explanation walks: its bins
        return gr.Radio(list(feature.categories), value=value, label=f"{label} (years)", elem_id=elem_id)
    if feature.kind in ("category", "ordinal"):
        choices = list(feature.categories) + ([NO_VALUE] if feature.nullable else [])
        return gr.Dropdown(choices, value=NO_VALUE if value is None else value, label=label, elem_id=elem_id)
    return gr.Number(value=value, label=f"{label} ({feature.minimum:g} to {feature.maximum:g})",
                     minimum=feature.minimum, maximum=feature.maximum,
                     precision=0 if feature.kind == "int" else None, elem_id=elem_id)


def render(session: WebSession) -> list:
    info = (f"key id {session.key_id or '(no keys yet)'} · application "
            f"{session.app.session_id if session.app else '-'} · decided applications {len(session.history)}")
    t0 = session.messages[0]["t"] if session.messages else 0.0
    rows = [[f"{m['t'] - t0:8.3f}", m["sender"], m["receiver"], m["type"], m["bytes"], m["preview"]]
            for m in reversed(session.messages)]  # newest first: what the last button did is on top
    return [session, info, *[session.texts.get(name, "") for name in TEXTS],
            pd.DataFrame(session.steps, columns=STEP_COLUMNS), pd.DataFrame(rows, columns=MESSAGE_COLUMNS)]


def build_app(driver: RoleDriver, deployment: Deployment, save_dir: Path, header: str) -> gr.Blocks:
    schema = deployment.schema
    defaults = default_records(deployment)
    deployment_ref = deployment.name if deployment.name in COMMITTED else str(deployment.directory)

    with gr.Blocks(title="fhe-credit-sim: encrypted credit-card approval") as demo:
        state = gr.State(None)  # one WebSession per browser tab
        gr.Markdown("# Encrypted credit-card approval\n" + header, elem_id="header")
        if driver.fhe == "simulate":
            gr.HTML(f'<div id="insecure-banner">{INSECURE}</div>')
        info = gr.Textbox(label="this tab", interactive=False, elem_id="session-info")
        text = {}
        gr.Markdown("## 1. Generate the keys (the applicant)")
        keygen = gr.Button("Generate keys", variant="primary", elem_id="keygen-button")
        text["evaluation_key"] = gr.Textbox(label="Evaluation key (hex preview)", interactive=False,
                                            elem_id="evaluation-key", elem_classes="hex")
        text["keygen_status"] = gr.Textbox(label="result", interactive=False, lines=3, elem_id="keygen-status")
        gr.Markdown("## 2. Fill in, encrypt and send each party's inputs")
        fields, encrypt = {}, {}
        with gr.Row():
            for party in PARTIES:
                with gr.Column(variant="panel"):
                    gr.Markdown(f"### {PANEL_TITLES[party]}")
                    fields[party] = [widget(party, f, defaults[party].get(f.name)) for f in schema.features[party]]
                    encrypt[party] = gr.Button("Encrypt and send", elem_id=f"{party}-encrypt")
                    text[f"{party}_ciphertext"] = gr.Textbox(label="Encrypted input (hex preview)", interactive=False,
                                                             elem_id=f"{party}-ciphertext", elem_classes="hex")
                    text[f"{party}_status"] = gr.Textbox(label="result", interactive=False, lines=3,
                                                         elem_id=f"{party}-status")
        gr.Markdown("## 3. Run the model on the encrypted inputs (the evaluator)")
        run = gr.Button("Run the model in FHE", variant="primary", elem_id="run-button")
        text["output_ciphertext"] = gr.Textbox(label="Encrypted output (hex preview)", interactive=False,
                                               elem_id="output-ciphertext", elem_classes="hex")
        text["run_status"] = gr.Textbox(label="result", interactive=False, lines=3, elem_id="run-status")
        gr.Markdown("## 4. Get and decrypt the output (the applicant)")
        decrypt = gr.Button("Get and decrypt the output", variant="primary", elem_id="decrypt-button")
        text["decision"] = gr.Textbox(label="Decision", interactive=False, elem_id="decision")
        text["decrypt_status"] = gr.Textbox(label="result", interactive=False, lines=2, elem_id="decrypt-status")
        gr.Markdown("## 5. Explain the decision: which years-employed bin would change it")
        strategy = gr.Radio(list(STRATEGIES), value="linear", label="strategy (linear: the demo's loop; bisect: "
                            "at most ceil(log2(bins)) encrypted runs, needs a monotone model)",
                            elem_id="explain-strategy")
        explain = gr.Button("Explain (years employed)", variant="primary", elem_id="explain-button")
        text["explanation"] = gr.Textbox(label="Explanation", interactive=False, lines=2, elem_id="explanation")
        text["explain_status"] = gr.Textbox(label="result", interactive=False, lines=3, elem_id="explain-status")
        gr.Markdown("## Save this tab's applications as a scenario")
        save = gr.Button("Save as scenario", elem_id="save-button")
        text["save_status"] = gr.Textbox(label="result", interactive=False, lines=2, elem_id="save-status")
        gr.Markdown("## What happened")
        steps = gr.Dataframe(headers=STEP_COLUMNS, label="steps (the command's role and pid, seconds, bytes that "
                             "passed between roles meanwhile)", interactive=False, elem_id="steps")
        messages = gr.Dataframe(headers=MESSAGE_COLUMNS, label="messages that passed (sender, receiver, type, "
                                "bytes, hex preview of the first blob; seconds since this tab's first; newest first)",
                                interactive=False, max_height=400, elem_id="messages")
        outputs = [state, info, *[text[name] for name in TEXTS], steps, messages]

        def handler(action: Callable[..., None]):
            def handle(session, *values):
                session = session if isinstance(session, WebSession) else WebSession()
                action(session, *values)
                return render(session)
            return handle

        keygen.click(handler(lambda s: s.generate_keys(driver)), [state], outputs)
        for party in PARTIES:
            encrypt[party].click(
                handler(lambda s, *v, p=party: s.encrypt(driver, p, coerce_record(schema, p, list(v)))),
                [state, *fields[party]], outputs)
        run.click(handler(lambda s: s.run(driver)), [state], outputs)
        decrypt.click(handler(lambda s: s.get_output(driver)), [state], outputs)
        explain.click(handler(lambda s, how: s.explain(driver, how)), [state, strategy], outputs)
        save.click(handler(lambda s: s.save(save_dir, deployment_ref, driver.fhe)), [state], outputs)
        demo.load(handler(lambda s: None), [state], outputs)
    return demo


def page_header(driver: RoleDriver, deployment: Deployment, secure: bool, attach: str | None) -> str:
    roles = ", ".join(f"{role} pid {pid}" for role, pid in driver.pids.items())
    mode = "real FHE (execute)" if driver.fhe == "execute" else "**simulation (INSECURE)**"
    return (f"Four processes over ZeroMQ ({'CurveZMQ' if secure else 'INSECURE: no CurveZMQ'}"
            f"{', attached at ' + attach if attach else ''}): {roles}. Deployment `{deployment.name}`, {mode}. "
            f"Keys and ciphertexts travel between the roles; this page is the runner's control plane only "
            f"(it sees {', '.join(LABELS.values())} results, timings and sizes).")


def serve(driver: RoleDriver, deployment: Deployment, save_dir: Path, port: int, header: str,
          echo: Callable[[str], None] = print) -> None:
    """Serve the page on 127.0.0.1:port until SIGINT or SIGTERM, then close it (the caller stops the roles)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    demo = build_app(driver, deployment, save_dir, header)
    demo.queue(default_concurrency_limit=8)
    try:
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    ssr_mode=False, footer_links=[], theme=THEME, css=CSS)
        echo(f"page: http://127.0.0.1:{port}  (Ctrl-C stops the page and the roles)")
        reported = None
        while not stop.wait(0.5):
            if driver.failure and driver.failure != reported:  # a role lost while the page was idle
                reported = driver.failure
                echo(f"!! {reported}")
        echo("stopping the page and the roles")
    finally:
        demo.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
