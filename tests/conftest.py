"""Shared fixtures: the committed deployment, its clear (simulated) model, sample records, a scratch dir."""

from __future__ import annotations

import copy

import pytest

from credit_model.deployment import load_deployment
from scenarios import SCENARIO_DIR
from scenarios.spec import load_scenario


@pytest.fixture(scope="session")
def deployment():
    return load_deployment()


@pytest.fixture(scope="session")
def clear_model(deployment):
    from credit_model.simulation import ClearModel
    return ClearModel(deployment)


@pytest.fixture(scope="session")
def shipped():
    """Applicant data from the shipped scenarios, by scenario name."""
    return {p.stem: load_scenario(p) for p in SCENARIO_DIR.glob("*.yaml")}


@pytest.fixture
def alice(shipped):
    return copy.deepcopy(shipped["approved"].applicants[0].data)
