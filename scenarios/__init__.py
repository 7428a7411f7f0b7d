"""Scenario files (YAML, beside this module) and the machinery that validates, runs and reports them."""

from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent
