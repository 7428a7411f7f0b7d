"""Scenario files (YAML, beside this module) and the machinery that validates, runs and reports them."""

from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent


def shipped_scenarios(deployment_name: str) -> Path:
    """The folder of a committed deployment's shipped scenarios: kaggle's (the tree, which the protocol tests run
    on) are at the top level, every other one's in its own folder (the default's: scenarios/kaggle_logistic)."""
    folder = SCENARIO_DIR / deployment_name
    return folder if deployment_name != "kaggle" and folder.is_dir() else SCENARIO_DIR
