"""Save as scenario: a tab's decided applications as a scenario file that `run_scenario.py run FILE` replays with
the same decision and explanation expectations, written 0600 in this `ui` run's own 0700 folder (it holds the three
parties' plaintext features)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from credit_model.schema import PARTIES

from scenarios.spec import parse_scenario


def scenario_of(name: str, applications: list, deployment: str, fhe: str) -> dict:
    """The scenario of decided applications (web/session.py's Application: key id, records sent, run, explanations)."""
    applicants = []
    for app in applications:
        steps = [{"action": "predict", "expect": {"decision": "approved" if app.run["approved"] else "denied"}}]
        for exp in app.explanations:
            expect = {"outcome": exp["outcome"], "message": exp["explanation"], "max_runs": exp["runs"]}
            if exp["bin"]:
                expect["bin"] = exp["bin"]
            steps.append({"action": "explain", "strategy": exp["strategy"], "expect": expect})
        applicants.append({"name": app.key_id, **{p: app.sent[p] for p in PARTIES}, "steps": steps})
    return {"name": name, "description": f"Saved from the web page ({len(applicants)} application(s) of "
                                         f"{', '.join(sorted({a['name'] for a in applicants}))}).",
            "deployment": deployment, "fhe": fhe, "applicants": applicants}


def private_folder(folder: Path) -> Path:
    """This run's folder, made readable by its owner only (0700), whatever the folder above it allows."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder.resolve()


def save_scenario(folder: Path, name: str, scenario: dict) -> Path:
    """Write a new file (never over another) readable by its owner only; refuse what `run` would not load."""
    path = private_folder(folder) / f"{name}.yaml"
    text = yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True, width=1000)
    parse_scenario(text, path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    return path
