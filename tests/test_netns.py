"""Each role in its own Linux network namespace, joined by veth links to a bridge: the approved scenario
runs over tcp between them; with one link cut, the run fails cleanly naming the role behind it.

Faults on the network while a run is in flight (issue 12, item 3): a link cut the moment a message reaches a role,
and delay and loss (`tc netem`) put on a link between two applicants. Each fault is fired from a timing hook, not a
sleep (the technique of tests/test_faults_midrun.py, copied here): a role's `--capture-dir` receives every frame it
is sent (`NNNNN-<sender>.<frame>`, frame 1 the message type), so the test sees the message arrive and acts at once.

The addresses (10.231.x.y) exist only inside the namespaces this test creates and deletes itself."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from credit_model.explainability import decision_message
from run_scenario import cli
from scenarios import SCENARIO_DIR
from simulation.processes import MODULES, PROJECT_ROOT
from tests.netns_hosts import bridged_hosts, sh
from tests.fault_timing import Capture, FaultOnMessage, ProcessTree
from tests.pinned_deployment import TREE

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or
    subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0,
    reason="needs root and iproute2 network namespaces (CI runs as root and has them)")

NAMES = ("runner", "evaluator", "user", "bank", "agency")
LIVENESS = 4.0  # SPEC §9: the default liveness window (roles and runner run with the defaults here)
APPROVED = decision_message(True)


@pytest.fixture
def hosts():
    """Six namespaces (a hub with a bridge, one per role and one for the runner); address per host."""
    with bridged_hosts("fcs", "10.231", NAMES) as made:
        yield made


def start_roles(hosts, keys, tmp_path, fhe, extra=None):
    """The four roles, each in its namespace (`ip netns exec` execs them: each is this process's child); their
    logs go to tmp_path/<role>.log, `extra` adds arguments per role."""
    a = hosts["address"]
    url = {"control": f"tcp://{a['runner']}:5560", "evaluator": f"tcp://{a['evaluator']}:5555",
           "bank": f"tcp://{a['bank']}:5556", "agency": f"tcp://{a['agency']}:5557"}
    tmp_path.mkdir(parents=True, exist_ok=True)
    procs = []
    for role, module in MODULES.items():
        cmd = ["ip", "netns", "exec", hosts["ns"][role], sys.executable, "-m", module, "--control", url["control"],
               "--evaluator", url["evaluator"], "--bank", url["bank"], "--agency", url["agency"],
               "--keys-dir", str(keys), "--fhe", fhe, "--deployment", TREE, "--workdir", str(tmp_path / role),
               *(extra or {}).get(role, [])]
        with open(tmp_path / f"{role}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
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


# --- faults on the network while a run is in flight (issue 12, item 3) ---------------------------------------------
# Timing hooks and process bookkeeping: tests/fault_timing.py, shared with tests/test_faults_midrun.py.
def exit_code(proc: subprocess.Popen, timeout: float) -> int | None:
    """The process's exit code once it exits within `timeout` s, else None (it is still running)."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def make_keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    assert CliRunner().invoke(cli, ["keys", str(keys)]).exit_code == 0
    return keys


def start_runner(hosts, url, keys, scenario, fhe, tmp_path):
    """`run_scenario.py run --attach` in the runner's namespace, in the background; JSON report in tmp_path."""
    cmd = ["ip", "netns", "exec", hosts["ns"]["runner"], sys.executable, "run_scenario.py", "run", str(scenario),
           "--attach", url["control"], "--keys-dir", str(keys), "--fhe", fhe,
           "--report-json", str(tmp_path / "report.json")]
    with open(tmp_path / "runner.log", "wb") as log:
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.fixture
def links(hosts):
    """links(role) cuts a role's link (the hub end of its veth goes down: the role's end loses its carrier, every
    packet to or from it is dropped, no connection is reset); the finalizer brings every cut link up again."""
    cut = []

    def down(role):
        sh("ip", "-n", hosts["hub"], "link", "set", hosts["links"][role], "down")
        cut.append(role)

    yield down
    for role in cut:
        subprocess.run(["ip", "-n", hosts["hub"], "link", "set", hosts["links"][role], "up"], capture_output=True)


# The impairment of the second test: `tc qdisc add dev <veth> root netem delay 200ms loss 10%` on the hub end of the
# role's veth, so on everything sent to the role (one direction, as one qdisc on one device does).
DELAY_S, LOSS = 0.2, 0.10


def kernel_has_netem() -> bool:
    probe = f"fcsprobe{os.getpid() % 10000}"
    try:
        sh("ip", "netns", "add", probe)
        return subprocess.run(["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)


class TcNetem:
    """The qdisc itself; `counters()` reads it back from `tc -s qdisc show` (packets it sent and dropped)."""

    kind = "tc netem"

    def __init__(self, hosts, role, delay: float = DELAY_S, loss: float = LOSS):
        self.ns, self.dev, self.added, self.pid = hosts["hub"], hosts["links"][role], False, None
        self.netem = (f"delay {delay * 1000:.0f}ms", f"loss {loss:.0%}")  # as `tc qdisc show` prints them too

    def on(self) -> None:
        sh("tc", "-n", self.ns, "qdisc", "add", "dev", self.dev, "root", "netem", *" ".join(self.netem).split())
        self.added = True

    def counters(self) -> dict:
        shown = subprocess.run(["tc", "-n", self.ns, "-s", "qdisc", "show", "dev", self.dev], capture_output=True,
                               text=True, check=True).stdout
        found = re.search(r"qdisc netem ([^\n]*)\n\s*Sent (\d+) bytes (\d+) pkt \(dropped (\d+)", shown)
        assert found and all(f" {option}" in f" {found[1]} " for option in self.netem), shown
        return {"bytes": int(found[2]), "sent": int(found[3]), "dropped": int(found[4]), "shown": shown}

    def close(self) -> None:
        if self.added:
            subprocess.run(["tc", "-n", self.ns, "qdisc", "del", "dev", self.dev, "root"], capture_output=True)


# A kernel built without sch_netem (CONFIG_NET_SCH_NETEM unset, as on the machine these tests were written on, and on
# runners lacking linux-modules-extra) gets the same impairment from a small forwarder in the hub namespace: the role's
# veth leaves the bridge, and a packet socket on each side (with virtio-net headers, so that offloaded checksums and
# segmentation cross intact) copies frames between it and a new veth pair whose other end is in the bridge. Until
# "on" it forwards at once; then frames towards the role are dropped with probability LOSS, the rest sent DELAY_S
# later, in order. Commands on stdin ("on", "stats"; EOF ends it), each answered by a JSON line of counters.
FORWARDER = r"""
import heapq, json, random, select, socket, sys, time
role_side, bridge_side, delay, loss = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
socks = {}
for name in (role_side, bridge_side):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
    s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((name, 3))
    socks[name] = s
towards = {socks[role_side]: socks[bridge_side], socks[bridge_side]: socks[role_side]}
on, queue, seq = False, [], 0
stats = {"sent": 0, "dropped": 0, "bytes": 0, "errors": 0}
print("ready", flush=True)
while True:
    ready, _, _ = select.select([sys.stdin, *towards], [], [],
                                max(0.0, queue[0][0] - time.monotonic()) if queue else None)
    for s in ready:
        if s is sys.stdin:
            line = sys.stdin.readline()
            if not line:
                sys.exit(0)
            on = on or line.strip() == "on"
            print(json.dumps(stats), flush=True)
            continue
        try:
            data, addr = s.recvfrom(1 << 17)
        except OSError:
            stats["errors"] += 1
            continue
        if addr[2] == 4:  # PACKET_OUTGOING: a frame this forwarder sent itself
            continue
        impaired = on and s is socks[bridge_side]
        if impaired and random.random() < loss:
            stats["dropped"] += 1
            continue
        seq += 1
        heapq.heappush(queue, (time.monotonic() + (delay if impaired else 0.0), seq, impaired, data, towards[s]))
    while queue and queue[0][0] <= time.monotonic():
        _, _, impaired, data, out = heapq.heappop(queue)
        try:
            out.send(data)
        except OSError:
            stats["errors"] += 1
            continue
        if impaired:
            stats["sent"] += 1
            stats["bytes"] += len(data) - 10  # the virtio-net header
"""


class ForwarderNetem:
    kind = "userspace netem (this kernel has no sch_netem)"

    def __init__(self, hosts, role, delay: float = DELAY_S, loss: float = LOSS):
        self.hub, self.dev = hosts["hub"], hosts["links"][role]
        self.pair, self.proc, self.pid, self.detached = (self.dev + "b", self.dev + "f"), None, None, False
        try:
            sh("ip", "-n", self.hub, "link", "add", self.pair[0], "type", "veth", "peer", "name", self.pair[1])
            sh("ip", "-n", self.hub, "link", "set", self.pair[0], "master", "br0")
            for dev in self.pair:
                sh("ip", "-n", self.hub, "link", "set", dev, "up")
            sh("ip", "-n", self.hub, "link", "set", self.dev, "nomaster")
            self.detached = True
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.hub, sys.executable, "-c", FORWARDER, self.dev, self.pair[1],
                 str(delay), str(loss)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.pid = self.proc.pid
            assert self.proc.stdout.readline().strip() == "ready"
        except BaseException:
            self.close()
            raise

    def _ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def on(self) -> None:
        self._ask("on")

    def counters(self) -> dict:
        return self._ask("stats")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.detached:
            subprocess.run(["ip", "-n", self.hub, "link", "set", self.dev, "master", "br0"], capture_output=True)
        subprocess.run(["ip", "-n", self.hub, "link", "del", self.pair[0]], capture_output=True)


@pytest.fixture
def bank_netem(hosts):
    """Delay and loss ready to go on the bank's link (`.on()`); the finalizer removes the qdisc (or stops the
    forwarder and puts the bank's veth back in the bridge)."""
    impairment = TcNetem(hosts, "bank") if kernel_has_netem() else ForwarderNetem(hosts, "bank")
    try:
        yield impairment
    finally:
        impairment.close()


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_evaluators_link_cut_while_its_run_is_in_flight_is_named_within_the_liveness_window(
        hosts, links, tmp_path):
    """Real FHE, the full key protocol. The evaluator's veth goes down the moment the user's RUN reaches it: no
    process exits and no connection is reset, so only heartbeats can tell. The runner, in its own namespace and
    attached (it has no processes to watch), must end the run with a failure naming the evaluator at step predict
    within the liveness window (SPEC §9: 4 s) plus a margin, not at a request deadline (60 s), the run deadline
    (300 s) or the command deadline (600 s). The three roles it can still reach leave on its SHUTDOWN; the cut-off
    evaluator, whom nobody can reach, leaves on its operator's SIGTERM; no process is left behind."""
    keys, run_dir = make_keys(tmp_path), tmp_path / "run"
    evaluator_capture, user_capture = Capture(tmp_path / "evaluator-capture"), Capture(tmp_path / "user-capture")
    tree = ProcessTree()
    url, procs = start_roles(hosts, keys, run_dir, "execute", extra={
        "evaluator": ["--capture-dir", str(evaluator_capture.dir)], "user": ["--capture-dir", str(user_capture.dir)]})
    role = dict(zip(MODULES, procs))
    fault = FaultOnMessage(evaluator_capture, "user", "RUN", lambda: links("evaluator"))
    fault.start()
    try:
        runner = start_runner(hosts, url, keys, SCENARIO_DIR / "approved.yaml", "execute", tmp_path)
        code = runner.wait(240)
        ended = time.monotonic()
        left_by_shutdown = {name: exit_code(role[name], 30) for name in ("user", "bank", "agency")}
        cut_off_still_running = role["evaluator"].poll() is None
        role["evaluator"].terminate()  # its operator stops it (SIGTERM): it leaves cleanly, exit 0
        evaluator_code = exit_code(role["evaluator"], 30)
    finally:
        fault.stop()
        stop(procs)
    runner_log = (tmp_path / "runner.log").read_text(errors="replace")
    assert fault.error is None and fault.fired_at is not None, (fault.error, runner_log[-3000:])
    report = json.loads((tmp_path / "report.json").read_text())

    # In flight: the key protocol and the inputs were done and the run requested (the RUN is the trigger; the user's
    # GET_OUTPUT may have followed before the link went down), and no OUTPUT ever reached the user.
    from_user = [kind for sender, kind in evaluator_capture.messages() if sender == "user"]
    assert from_user in (["KEY_QUERY", "EVAL_KEY", "INPUT", "RUN"],
                         ["KEY_QUERY", "EVAL_KEY", "INPUT", "RUN", "GET_OUTPUT"]), from_user
    assert ("evaluator", "OUTPUT") not in user_capture.messages()
    assert report["applicants"][0]["decision"] is None
    assert [(s["name"], s["ok"]) for s in report["steps"]] == [
        ("prepare+encrypt", True), ("encrypt", True), ("encrypt", True), ("run+decrypt", False)]

    # A clean failure naming the evaluator at the step in flight, by its heartbeats, within the window + margin.
    # (the runner's timer runs from the last heartbeat it received, up to 1 s before the cut: 3-5 s after it)
    assert code == 1 and not report["passed"], runner_log[-3000:]
    assert LIVENESS - 1.5 < ended - fault.fired_at < LIVENESS + 8.0, (ended - fault.fired_at, report["failure"])
    failure = report["failure"]
    assert failure["role"] == "evaluator" and failure["step"] == "predict", failure
    assert f"answered no heartbeat for {LIVENESS:g} s" in failure["reason"], failure["reason"]
    assert "within" not in failure["reason"]  # not a deadline ("did not finish 'predict' within 600 s")

    # Nothing left behind: the reachable roles exited by themselves on SHUTDOWN, the cut-off one on SIGTERM.
    assert left_by_shutdown == {"user": 0, "bank": 0, "agency": 0}
    assert cut_off_still_running and evaluator_code == 0
    assert tree.leftovers() == {}


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_delay_and_loss_on_the_banks_link_mid_run_still_give_the_clean_runs_decision(hosts, bank_netem, tmp_path):
    """Real FHE, the full key protocol. Two applicants with the same data (approved.yaml's): the first runs on clean
    links; the moment its OUTPUT reaches the user, 200 ms of delay and 10 % loss go on everything sent to the bank
    (`tc netem`, or the same in user space where the kernel has no netem). The second applicant's keys are new, so
    the user's CLIENT_KEY, the runner's commands and the evaluator's ACKs cross the lossy link: TCP retransmits,
    the heartbeats (liveness 4 s) tolerate the stalls, and the decision is the first, clean one's.

    Measured with the forwarder (20 idle connections, 300 s, this impairment): one connection in about 6,000
    connection-seconds went 4 s without a heartbeat (a lost segment lost twice more on retransmission) and was
    closed; about four connections cross the bank's link here for 15-20 s, so roughly one run in a few hundred
    would name the bank instead of passing (10 % loss both ways was about 3× as bad)."""
    keys, run_dir = make_keys(tmp_path), tmp_path / "run"
    user_capture, bank_capture = Capture(tmp_path / "user-capture"), Capture(tmp_path / "bank-capture")
    data = yaml.safe_load((SCENARIO_DIR / "approved.yaml").read_text())
    data["applicants"].append({**data["applicants"][0], "name": "ada_netem"})
    scenario = tmp_path / "netem.yaml"
    scenario.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    tree = ProcessTree(exclude=(bank_netem.pid,) if bank_netem.pid else ())
    url, procs = start_roles(hosts, keys, run_dir, "execute", extra={
        "user": ["--capture-dir", str(user_capture.dir)], "bank": ["--capture-dir", str(bank_capture.dir)]})
    role = dict(zip(MODULES, procs))

    def impair():
        client_keys = bank_capture.count("user", "CLIENT_KEY")
        bank_netem.on()
        return client_keys

    fault = FaultOnMessage(user_capture, "evaluator", "OUTPUT", impair)
    fault.start()
    try:
        runner = start_runner(hosts, url, keys, scenario, "execute", tmp_path)
        code = runner.wait(240)
        codes = {name: exit_code(proc, 30) for name, proc in zip(MODULES, procs) if name != "bank"}
        codes["bank"] = exit_code(role["bank"], 20)
    finally:
        fault.stop()
        stop(procs)
    runner_log = (tmp_path / "runner.log").read_text(errors="replace")
    assert fault.error is None and fault.fired_at is not None, (fault.error, runner_log[-3000:])
    counters = bank_netem.counters()
    report = json.loads((tmp_path / "report.json").read_text())

    # The application completed: no error, no lost peer, the clean run's decision (approved.yaml's: approved).
    assert code == 0 and report["passed"] and report["failure"] is None, runner_log[-3000:]
    decisions = {a["name"]: a["decision"] for a in report["applicants"]}
    assert decisions["ada_netem"] == decisions["ada"] == APPROVED, decisions
    assert all(a["errors"] == [] for a in report["applicants"]), report["applicants"]
    logs = {name: (run_dir / f"{name}.log").read_text(errors="replace") for name in MODULES}
    assert not [name for name, log in logs.items() if "was lost" in log or "PEER_LOST" in log]

    # The impairment went on between the applicants: the bank had the first CLIENT_KEY only; it got the second
    # through the lossy link. In place: it sent and dropped packets, and each of the second applicant's bank steps
    # took at least the two crossings towards the bank (the runner's COMMAND, the evaluator's ACK to the INPUT).
    assert fault.outcome == 1 and bank_capture.count("user", "CLIENT_KEY") == 2
    assert counters["sent"] > 0 and counters["dropped"] > 0, (bank_netem.kind, counters)
    bank_steps = {s["applicant"]: s["seconds"] for s in report["steps"]
                  if s["name"] == "encrypt" and s["role"] == "bank"}
    assert bank_steps["ada_netem"] >= 2 * DELAY_S - 0.02, (bank_steps, bank_netem.kind)

    # Every role left on SHUTDOWN, the bank's over the lossy link too: in --attach mode the runner sends SHUTDOWN
    # again until each role's control connection closes (before, a SHUTDOWN lost on the way left the bank running,
    # about one run in eight here).
    assert codes == {"evaluator": 0, "user": 0, "bank": 0, "agency": 0}, codes
    assert ("runner", "SHUTDOWN") in bank_capture.messages()
    assert set(report["ended_by"].values()) == {"SHUTDOWN (attached: its connection closed)"}, report["ended_by"]
    assert tree.leftovers() == {}


# --- the kernel's shaping between namespaces (issue 21) ----------------------------------------------------------
UPLOAD_MBIT = 20.0


@pytest.mark.fhe
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_kernels_shaping_holds_the_evaluation_key_upload_to_its_rate(hosts, tmp_path):
    """Real FHE, the full key protocol, each role in its namespace: simulation/kernel_shaping.py puts an HTB class
    of 20 Mbit/s on the user's device towards the evaluator's address (and 20 Mbit/s back). The evaluation key's
    upload (EVAL_KEY until its ACK, the user's eval_key_upload_s) can be no faster than its bytes at that rate
    (15.1 s, less 10 % for the bucket's burst and clock); above, the bound is generous (the kernel counts TCP/IP
    headers too, about 4 % at this MSS, the ACK waits for the evaluator's check of the key, and other tests may load
    the cores). The target (15.1 s ± 10 %) is measured alone: the figure is printed (-s) and kept in BENCHMARKS.md,
    "Network emulation"."""
    from scenarios.network import Link, Network
    from simulation import kernel_shaping

    keys = make_keys(tmp_path)
    roles = {r: {"ns": hosts["ns"][r], "dev": hosts["inner"][r], "address": hosts["address"][r]}
             for r in ("evaluator", "user", "bank", "agency")}
    network = Network({"user-evaluator": Link("user-evaluator", 0.0, 0.0, UPLOAD_MBIT, UPLOAD_MBIT)}, "kernel")
    missing = kernel_shaping.apply(network, roles)
    assert missing == []  # no latency asked: nothing the kernel cannot do
    url, procs = start_roles(hosts, keys, tmp_path / "run", "execute")
    try:
        runner = start_runner(hosts, url, keys, SCENARIO_DIR / "approved.yaml", "execute", tmp_path)
        code = runner.wait(240)
    finally:
        stop(procs)
        shown = subprocess.run(["tc", "-n", roles["user"]["ns"], "-s", "class", "show", "dev", roles["user"]["dev"]],
                               capture_output=True, text=True).stdout
        kernel_shaping.remove(roles)
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0 and report["passed"], (tmp_path / "runner.log").read_text()[-3000:]
    detail = report["steps"][0]["detail"]
    ideal = detail["eval_key_bytes"] * 8 / (UPLOAD_MBIT * 1e6)
    print(f"kernel shaping: {detail['eval_key_bytes']:,} B at {UPLOAD_MBIT:g} Mbit/s in "
          f"{detail['eval_key_upload_s']:.2f} s (ideal {ideal:.2f} s)")
    assert 0.9 * ideal <= detail["eval_key_upload_s"] <= 1.5 * ideal, (detail["eval_key_upload_s"], ideal, shown)
    assert re.search(r"class htb 1:10 .*rate 20Mbit", shown), shown  # the class was there, and carried the key
    assert int(re.search(r"class htb 1:10 [^\n]*\n\s*Sent (\d+) bytes", shown)[1]) > detail["eval_key_bytes"]
