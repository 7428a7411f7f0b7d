"""How faithful the network emulation is (`run_scenario.py bench --network`): the evaluation-key upload at a given
bandwidth, the round trip a request/reply gains at a given latency, and how long a dead or stopped evaluator takes
to be named across a shaped link; each through the real roles and the shaping forwarder, CurveZMQ on."""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import zmq

from protocol.curve import Curve
from protocol.errors import PeerLost, ProtocolError
from protocol.messages import Ping
from protocol.transport import PeerClient, TrafficLog, routing_identity
from scenarios.network import Link, Network

from simulation.processes import ProcessSet

Log = Callable[[str], None]


def _network(**links: Link) -> Network:
    return Network({name.replace("_", "-"): link for name, link in links.items()}, "bench")


def upload(deployment: str, mbit: float, latency_ms: float = 0.0, repeats: int = 1, log: Log = print) -> dict:
    """The user's `keygen` command (real keys, real FHE) over a user-evaluator link of `mbit` Mbit/s up: the
    EVAL_KEY request until its ACK (`eval_key_upload_s`), against what the bytes take at that rate."""
    link = Link("user-evaluator", latency_ms, 0.0, mbit, mbit)
    out = []
    with tempfile.TemporaryDirectory(prefix="fcs-netbench-") as tmp:
        procs = ProcessSet(Path(tmp), "ipc", "execute", deployment, network=_network(user_evaluator=link))
        try:
            procs.start(120)
            for i in range(repeats):
                result = procs.command("user", "keygen", {"key_id": f"upload{i}"}, 600)
                out.append({"seconds": result["eval_key_upload_s"], "bytes": result["eval_key_bytes"]})
                log(f"upload at {mbit:g} Mbit/s, {latency_ms:g} ms: {result['eval_key_bytes']:,} B in "
                    f"{result['eval_key_upload_s']:.2f} s")
        finally:
            procs.stop()
    size = out[0]["bytes"]
    ideal = size * 8 / (mbit * 1e6) + 2 * latency_ms / 1000
    measured = statistics.median(o["seconds"] for o in out)
    return {"mbit": mbit, "latency_ms": latency_ms, "bytes": size, "ideal_s": round(ideal, 3),
            "measured_s": round(measured, 3), "all_s": [o["seconds"] for o in out],
            "error": round(measured / ideal - 1, 4)}


def _client(procs: ProcessSet, ctx: zmq.Context, endpoint: str, liveness: float) -> PeerClient:
    curve = Curve.load("user", procs.keys_dir)
    return PeerClient(ctx, "evaluator", endpoint, routing_identity("user"), TrafficLog("user"),
                      setup=curve.client("evaluator"), liveness=liveness)


def _rtts(client: PeerClient, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.request(Ping(), 30)
        out.append(time.perf_counter() - t0)
    return out


def round_trips(latencies_ms: tuple[float, ...] = (10, 25, 50, 100), count: int = 40, log: Log = print) -> list[dict]:
    """PING → PONG between a user-keyed client and a real evaluator, direct and through a link of each one-way
    latency (no bandwidth limit, no jitter): what each request/reply gains, against twice the latency."""
    rows = []
    for latency in latencies_ms:
        link = Link("user-evaluator", latency, 0.0, None, None)
        with tempfile.TemporaryDirectory(prefix="fcs-netbench-") as tmp:
            procs = ProcessSet(Path(tmp), "ipc", "simulate", None, network=_network(user_evaluator=link))
            ctx = zmq.Context()
            try:
                procs.start(120, ("evaluator",))
                direct = _client(procs, ctx, procs.endpoints["evaluator"], procs.liveness)
                shaped = _client(procs, ctx, procs.shaper.peer_endpoints("user")["evaluator"], procs.liveness)
                _rtts(direct, 3), _rtts(shaped, 3)  # connections made, handshakes done
                base, through = _rtts(direct, count), _rtts(shaped, count)
                direct.close(), shaped.close()
            finally:
                procs.stop()
                ctx.term()
        added = sorted(t - statistics.median(base) for t in through)
        row = {"latency_ms": latency, "configured_rtt_ms": 2 * latency,
               "direct_median_ms": round(statistics.median(base) * 1000, 2),
               "added_median_ms": round(statistics.median(added) * 1000, 2),
               "added_p95_ms": round(added[int(0.95 * (len(added) - 1))] * 1000, 2),
               "added_max_ms": round(added[-1] * 1000, 2), "count": count,
               "added_all_s": [round(a, 5) for a in added]}
        row["error_ms"] = round(row["added_median_ms"] - row["configured_rtt_ms"], 2)
        rows.append(row)
        log(f"round trip at {latency:g} ms one way: +{row['added_median_ms']:.1f} ms median (configured "
            f"{2 * latency:g}), p95 +{row['added_p95_ms']:.1f}, direct {row['direct_median_ms']:.2f} ms")
    return rows


def detection(profile: Network, liveness: float = 4.0, repeats: int = 3, log: Log = print) -> list[dict]:
    """The evaluator killed or stopped while a request from a user-keyed client waits on it, directly and across the
    profile's user-evaluator link: seconds from the signal until the wait ends with PEER_LOST. libzmq starts its
    heartbeat timeout with the first PING left unanswered, up to one heartbeat interval (liveness / 4, at most 1 s)
    after the last message from the peer: a stopped peer is named within liveness + that interval, plus one RTT
    across a shaped link."""
    rtt = profile.link("user-evaluator").rtt_ms / 1000
    interval = max(0.1, min(1.0, liveness / 4))
    rows = []
    for fault, shaped in (("kill", False), ("kill", True), ("stop", False), ("stop", True)):
        for i in range(repeats):
            with tempfile.TemporaryDirectory(prefix="fcs-netbench-") as tmp:
                procs = ProcessSet(Path(tmp), "ipc", "simulate", None, network=profile, liveness=liveness)
                ctx = zmq.Context()
                pid = None
                try:
                    procs.start(120, ("evaluator",))
                    pid = procs.procs["evaluator"].popen.pid
                    endpoint = (procs.shaper.peer_endpoints("user") if shaped else procs.endpoints)["evaluator"]
                    client = _client(procs, ctx, endpoint, liveness)
                    _rtts(client, 3)
                    time.sleep(1.5)  # heartbeats flowing on an idle connection, as between two steps
                    os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
                    t0 = time.monotonic()
                    try:
                        client.request(Ping(), 60)
                        outcome = "answered"
                    except PeerLost:
                        outcome = "PEER_LOST"
                    except ProtocolError as exc:
                        outcome = exc.code.value
                    seconds = time.monotonic() - t0
                    client.close()
                finally:
                    if pid is not None and fault == "stop":
                        os.kill(pid, signal.SIGKILL)
                    procs.stop()
                    ctx.term()
            bound = (0.0 if fault == "kill" else liveness + interval) + (rtt if shaped else 0.0) + 0.3  # + polls
            rows.append({"fault": fault, "link": profile.label() if shaped else "direct", "outcome": outcome,
                         "seconds": round(seconds, 3), "bound_s": round(bound, 3),
                         "within": outcome == "PEER_LOST" and seconds <= bound})
            log(f"evaluator {fault}, {'across ' + profile.label() if shaped else 'direct'}: {outcome} after "
                f"{seconds:.2f} s (bound {bound:.2f} s)")
    return rows


def run_network_bench(deployment: str, log: Log = print, quick: bool = False) -> dict:
    from scenarios.network import load_profiles

    figures = {"upload": [upload(deployment, 20.0, 0.0, 1 if quick else 3, log)]}
    if not quick:
        figures["upload"].append(upload(deployment, 11.0, 25.0, 1, log))  # mobile's user uplink
    figures["round_trips"] = round_trips(count=20 if quick else 40, log=log)
    figures["detection"] = detection(load_profiles()["mobile"], repeats=1 if quick else 3, log=log)
    return figures
