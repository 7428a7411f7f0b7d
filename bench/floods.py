"""Flood-then-disconnect against every role (issue 23): does it survive, and does a legitimate peer still get answered?

The floods themselves are `protocol/conformance/flood.py`'s (processes with a role's valid CURVE key, ZMTP
heartbeats at 1 ms, never reading, ending abruptly). Evaluator, bank and agency are flooded on their ROUTER; the user
by a hostile bank ROUTER that floods the user's DEALER once the user speaks to it; the runner on its control ROUTER.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import zmq

from protocol.curve import Curve, create_keys
from protocol.conformance.flood import flood_then_disconnect, hostile_server
from protocol.messages import Ping, Pong, decode, encode
from protocol.transport import make_socket, routing_identity
from simulation.processes import MODULES, PROJECT_ROOT, ProcessSet, free_tcp_port

Log = Callable[[str], None]


def answers_ping(endpoint: str, keys_dir: Path | str, as_role: str, server_role: str,
                 timeout: float = 5.0) -> float | None:
    """Seconds a fresh, legitimate peer waits for a PONG (None: no answer within `timeout`)."""
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, routing_identity(as_role))
    try:
        Curve.load(as_role, keys_dir).client(server_role)(sock)
        sock.connect(endpoint)
        t0 = time.perf_counter()
        sock.send_multipart(encode(Ping(), 7))
        if not sock.poll(int(timeout * 1000)):
            return None
        return time.perf_counter() - t0 if isinstance(decode(sock.recv_multipart()).message, Pong) else None
    finally:
        sock.close(linger=0)
        ctx.term()


def _summary(role: str, rounds: list[dict]) -> dict:
    pings = [r["ping_s"] for r in rounds if r["ping_s"] is not None]
    return {"role": role, "floods": len(rounds), "survived": sum(r["alive"] for r in rounds),
            "answered_after": len(pings), "messages_sent": sum(r["sent"] for r in rounds),
            "ping_after_max_ms": round(1000 * max(pings), 1) if pings else None}


def serving_role(role: str, repeats: int, seconds: float = 2.0, connections: int = 16, log: Log = print,
                 transport: str = "ipc") -> dict:
    """Flood the ROUTER of the evaluator, bank or agency `repeats` times, each time as a peer it admits."""
    attacker = "bank" if role != "bank" else "agency"
    with tempfile.TemporaryDirectory(prefix="fcs-flood-") as tmp:
        procs = ProcessSet(Path(tmp), transport, "simulate", None)
        rounds = []
        try:
            procs.start(60, (role,))
            endpoint, keys = procs.endpoints[role], procs.keys_dir
            server_key = Curve.load(attacker, keys).peer_key(role)
            for i in range(repeats):
                sent = flood_then_disconnect(endpoint, keys, attacker, server_key, connections, seconds)
                time.sleep(0.5)  # the role reads what is queued, and its engines see the hang-ups
                alive = procs.procs[role].popen.poll() is None
                ping = answers_ping(endpoint, keys, "user", role) if alive else None
                rounds.append({"sent": sent, "alive": alive, "ping_s": ping})
                log(f"{role}: flood {i + 1}/{repeats}: {sent:,} messages from {connections} {attacker} connections, "
                    f"then gone; {'alive' if alive else 'DIED (exit %s)' % procs.procs[role].popen.poll()}"
                    + (f", PING answered in {1000 * ping:.1f} ms" if ping is not None else ""))
                if not alive:
                    break
        finally:
            procs.stop()
    return _summary(role, rounds)


def user_role(repeats: int, seconds: float = 2.0, log: Log = print) -> dict:
    """A hostile bank never answers the user's CLIENT_KEY; once the user has given up on it (its request deadline,
    4 s, keygen included) and no longer reads that socket, the bank floods the user's DEALER, then hangs up."""
    bank_endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with tempfile.TemporaryDirectory(prefix="fcs-flood-") as tmp:
        # On the tree deployment: its keygen (~3 s) fits the user's 4 s request deadline; the default's (~1 min) not.
        procs = ProcessSet(Path(tmp), "ipc", "execute", "kaggle",
                           extra_args={"user": ["--bank", bank_endpoint, "--request-timeout", "4"]})
        rounds = []
        try:
            procs.start(90, ("evaluator", "agency", "user"))
            for i in range(repeats):
                bank = hostile_server(bank_endpoint, procs.keys_dir, "bank", seconds, delay=4.5)
                error = None
                try:
                    procs.command("user", "keygen", {"key_id": f"flood{i}"}, 60)
                except Exception as exc:  # noqa: BLE001 - the hostile bank never acknowledges: expected
                    error = type(exc).__name__
                sent = int((bank.communicate(timeout=60)[0] or "0").strip() or 0)
                time.sleep(2.0)  # a heartbeat interval (1 s) on the user's side of the dead connection, and more
                alive = procs.procs["user"].popen.poll() is None
                t0 = time.perf_counter()
                ping = None
                if alive:
                    try:
                        procs.command("user", "status", {}, 10)
                        ping = time.perf_counter() - t0
                    except Exception:  # noqa: BLE001 - alive but deaf: counted as not answered
                        ping = None
                rounds.append({"sent": sent, "alive": alive, "ping_s": ping})
                log(f"user: flood {i + 1}/{repeats}: {sent:,} messages from a hostile bank, then gone (keygen "
                    f"ended {error or 'ok'}); {'alive' if alive else 'DIED'}"
                    + (f", status answered in {1000 * ping:.1f} ms" if ping is not None else ""))
                if not alive:
                    break
        finally:
            procs.stop()
    return _summary("user", rounds)


def runner_role(repeats: int, seconds: float = 2.0, connections: int = 16, log: Log = print) -> dict:
    """Flood a runner's control ROUTER (`run --attach`) as the bank, then let the real roles attach: the scenario must
    still pass."""
    rounds = []
    for i in range(repeats):
        with tempfile.TemporaryDirectory(prefix="fcs-flood-") as tmp:
            keys = create_keys(Path(tmp) / "keys")
            url = {n: f"tcp://127.0.0.1:{free_tcp_port()}" for n in ("control", "evaluator", "bank", "agency")}
            runner = subprocess.Popen([sys.executable, "run_scenario.py", "run", "scenarios/approved.yaml", "--fhe",
                                       "simulate", "--attach", url["control"], "--keys-dir", str(keys)],
                                      cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            roles = []
            try:
                time.sleep(1.0)
                server_key = Curve.load("bank", keys).peer_key("runner")
                sent = flood_then_disconnect(url["control"], keys, "bank", server_key, connections, seconds)
                time.sleep(0.5)
                alive = runner.poll() is None
                t0 = time.perf_counter()
                for role, module in MODULES.items():
                    roles.append(subprocess.Popen(
                        [sys.executable, "-m", module, "--control", url["control"], "--evaluator", url["evaluator"],
                         "--bank", url["bank"], "--agency", url["agency"], "--keys-dir", str(keys), "--fhe",
                         "simulate", "--workdir", str(Path(tmp) / role)], cwd=PROJECT_ROOT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                out = runner.communicate(timeout=120)[0] if alive else runner.communicate()[0]
                passed = alive and runner.returncode == 0 and "PASSED" in out
                why = "" if passed else " (" + " | ".join(
                    line.strip()[:200] for line in out.splitlines() if "FAIL" in line or "error" in line.lower())[-600:] + ")"
                rounds.append({"sent": sent, "alive": alive, "ping_s": time.perf_counter() - t0 if passed else None,
                               "output_lines": len(out.splitlines()), "failure": why.strip(" ()") or None})
                log(f"runner: flood {i + 1}/{repeats}: {sent:,} messages on its control socket, then gone; "
                    f"{'alive' if alive else 'DIED (exit %s)' % runner.returncode}; "
                    f"the scenario then {'PASSED' if passed else 'did not pass' + why}")
            finally:
                for proc in roles + [runner]:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
        if not rounds[-1]["alive"]:
            break
    summary = _summary("runner", rounds)
    summary["output_lines_max"] = max((r["output_lines"] for r in rounds), default=0)  # refusals are rate-limited
    return summary


def every_role(repeats: int, seconds: float = 2.0, log: Log = print) -> list[dict]:
    return [serving_role(r, repeats, seconds, log=log) for r in ("evaluator", "bank", "agency")] + \
        [user_role(repeats, seconds, log=log), runner_role(repeats, seconds, log=log)]
