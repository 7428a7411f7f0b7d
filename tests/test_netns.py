"""Each role in its own Linux network namespace, joined by veth links to a bridge: the approved scenario
runs over tcp between them; with one link cut, the run fails cleanly naming the role behind it.

The addresses (10.231.x.y) exist only inside the namespaces this test creates and deletes itself."""

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from run_scenario import cli
from scenarios import SCENARIO_DIR
from scenarios.processes import MODULES, PROJECT_ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or
    subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0,
    reason="needs root and iproute2 network namespaces (CI runs as root and has them)")

NAMES = ("runner", "evaluator", "user", "bank", "agency")


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def hosts():
    """Six namespaces (a hub with a bridge, one per role and one for the runner); address per host."""
    tag = f"fcs{os.getpid() % 10000}"
    hub, subnet = f"{tag}-hub", f"10.231.{os.getpid() % 200}"
    made, links = [hub], {}
    try:
        sh("ip", "netns", "add", hub)
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        address = {}
        for i, name in enumerate(NAMES, start=1):
            ns, inner, outer = f"{tag}-{name}", f"{tag}i{i}", f"{tag}o{i}"
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", outer, "netns", hub)
            sh("ip", "-n", ns, "addr", "add", f"{subnet}.{i}/24", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", hub, "link", "set", outer, "master", "br0")
            sh("ip", "-n", hub, "link", "set", outer, "up")
            address[name] = f"{subnet}.{i}"
            links[name] = outer
        yield {"ns": {n: f"{tag}-{n}" for n in NAMES}, "address": address, "hub": hub, "links": links}
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start_roles(hosts, keys, tmp_path, fhe):
    a = hosts["address"]
    url = {"control": f"tcp://{a['runner']}:5560", "evaluator": f"tcp://{a['evaluator']}:5555",
           "bank": f"tcp://{a['bank']}:5556", "agency": f"tcp://{a['agency']}:5557"}
    procs = []
    for role, module in MODULES.items():
        cmd = ["ip", "netns", "exec", hosts["ns"][role], sys.executable, "-m", module, "--control", url["control"],
               "--evaluator", url["evaluator"], "--bank", url["bank"], "--agency", url["agency"],
               "--keys-dir", str(keys), "--fhe", fhe, "--workdir", str(tmp_path / role)]
        procs.append(subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return url, procs


def runner(hosts, url, keys, scenario, fhe):
    cmd = ["ip", "netns", "exec", hosts["ns"]["runner"], sys.executable, "run_scenario.py", "run", str(scenario),
           "--attach", url["control"], "--keys-dir", str(keys), "--fhe", fhe]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


def stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.fhe
@pytest.mark.slow
def test_approved_across_namespaces_then_a_cut_link_fails_cleanly(hosts, tmp_path):
    keys = tmp_path / "keys"
    assert CliRunner().invoke(cli, ["keys", str(keys)]).exit_code == 0

    url, procs = start_roles(hosts, keys, tmp_path / "run1", "execute")
    try:
        done = runner(hosts, url, keys, SCENARIO_DIR / "approved.yaml", "execute")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "scenario approved: PASSED" in done.stdout
        assert all(p.wait(30) == 0 for p in procs)  # SHUTDOWN reached every host
    finally:
        stop(procs)

    scenario = tmp_path / "short.yaml"
    scenario.write_text((SCENARIO_DIR / "approved.yaml").read_text() + "deadline_s: 25\n")
    url, procs = start_roles(hosts, keys, tmp_path / "run2", "simulate")
    try:
        sh("ip", "-n", hosts["hub"], "link", "set", hosts["links"]["bank"], "down")  # the bank's host is cut off
        failed = runner(hosts, url, keys, scenario, "simulate")
        assert failed.returncode == 1
        assert "bank did not announce READY" in failed.stdout
    finally:
        stop(procs)
