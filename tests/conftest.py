"""Shared fixtures: the committed deployment, its clear (simulated) model, sample records, live roles and
peers that speak to them with a role's own CURVE key."""

from __future__ import annotations

import copy

import pytest
import zmq

from protocol.curve import Curve
from protocol.messages import decode
from protocol.transport import make_socket
from simulation.processes import ProcessSet

from credit_model.deployment import load_deployment
from scenarios import SCENARIO_DIR
from scenarios.spec import load_scenario
from tests.pinned_deployment import TREE

XDIST_WORKERS = 3  # on two cores: most tests wait on real processes and sockets, not on the CPU


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`pytest` runs on XDIST_WORKERS pytest-xdist workers when no -n was given; `-n 0` and `-p no:xdist` run the
    tests one by one (setup.cfg cannot say it: an addopts `-n` is an unknown option once xdist is not loaded)."""
    if (config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput")
            and getattr(config.option, "numprocesses", 0) is None and not config.getoption("usepdb", False)):
        config.option.numprocesses = XDIST_WORKERS


@pytest.fixture(scope="session")
def deployment():
    return load_deployment(TREE)


@pytest.fixture(scope="session")
def clear_model(deployment):
    from credit_model.training.clear_model import ClearModel
    return ClearModel(deployment)


@pytest.fixture(scope="session")
def schema(deployment):
    """The tree deployment's schema (read from its manifest)."""
    return deployment.schema


@pytest.fixture(scope="session")
def held_out(deployment):
    """held_out(n, seed): n applicants of the tree deployment's data set (its held-out test file)."""
    from bench.load import applicant_records
    return lambda n, seed: applicant_records(deployment, n, seed)


@pytest.fixture(scope="session")
def shipped():
    """Applicant data from the shipped scenarios, by scenario name."""
    return {p.stem: load_scenario(p) for p in SCENARIO_DIR.glob("*.yaml")}


@pytest.fixture
def alice(shipped):
    return copy.deepcopy(shipped["approved"].applicants[0].data)


@pytest.fixture
def start_roles(tmp_path):
    """Start a subset of roles as real processes (CURVE on) under tmp; every one is stopped afterwards."""
    started = []

    def start(roles, fhe="simulate", transport="ipc", extra_args=None, deployment=TREE):
        run_dir = tmp_path / f"run{len(started)}"
        run_dir.mkdir()
        procs = ProcessSet(run_dir, transport, fhe, deployment, extra_args or {})
        started.append(procs)
        procs.start(180, roles)
        return procs

    yield start
    for procs in started:
        procs.stop()


@pytest.fixture
def client_socket():
    """A DEALER speaking as `identity`'s role with that role's CURVE key from the run's keys (or none)."""
    ctx = zmq.Context()
    sockets = []

    def connect(endpoint, identity, keys_dir=None, server="evaluator", as_role=None):
        sock = make_socket(ctx, zmq.DEALER, identity)
        if keys_dir is not None:
            Curve.load(as_role or identity.split(":")[0], keys_dir).client(server)(sock)
        sock.connect(endpoint)
        sockets.append(sock)
        return sock

    yield connect
    for sock in sockets:
        sock.close(linger=0)
    ctx.term()


def ask(sock, frames, timeout=20.0):
    """Send frames and return the decoded reply; fails the test when none comes before the deadline."""
    sock.send_multipart(frames)
    assert sock.poll(int(timeout * 1000), zmq.POLLIN), "no reply before the deadline"
    return decode(sock.recv_multipart())


@pytest.fixture(autouse=True)
def python_ignores_sigpipe():
    """Concrete's runtime (HPX), once a circuit ran in this process, leaves SIGPIPE fatal; Python's own setting
    (ignored: a broken pipe is an exception) is put back around every test, as the evaluator does after runs,
    so one test's in-process FHE cannot kill the test worker on another test's closed socket."""
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
