"""Hostile-peer figures for `bench --hostile`: a peer that stops reading, unauthenticated floods, hostile files."""

from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import zmq

from credit_model.deployment import Deployment
from protocol.curve import Curve
from protocol.messages import GetOutput, Input, Output, Ping, Run, decode, encode
from protocol.transport import make_socket

from simulation.processes import ProcessSet

PARTIES = ("user", "bank", "agency")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def flood(port: int, declared: int, send: int, sent: list) -> None:
    """An unauthenticated TCP client: a ZMTP 3.0 greeting for CURVE, then one frame announcing `declared`
    bytes, of which it sends up to `send` (until the other side hangs up); appends what it sent."""
    done, quiet = 0, socket.MSG_NOSIGNAL  # a hang-up is an EPIPE, never a SIGPIPE (fatal where Concrete runs)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\x00") + b"\x00" * 32,
                        quiet)
            raw.sendall(b"\x06" + declared.to_bytes(8, "big"), quiet)  # a long command frame
            chunk = b"\x00" * (1 << 20)
            while done < send:
                raw.sendall(chunk, quiet)
                done += len(chunk)
    except OSError:
        pass
    sent.append(done)


def peer(ctx: zmq.Context, procs: ProcessSet, role: str, **options) -> zmq.Socket:
    sock = make_socket(ctx, zmq.DEALER, f"{role}:{id(options)}")
    for option, value in options.items():
        sock.setsockopt(getattr(zmq, option), value)
    Curve.load(role, procs.keys_dir).client("evaluator")(sock)
    sock.connect(procs.endpoints["evaluator"])
    return sock


def ask(sock: zmq.Socket, message, seq: int, timeout: float = 30.0):
    sock.send_multipart(encode(message, seq))
    if not sock.poll(int(timeout * 1000)):
        raise TimeoutError(f"no answer to {message.TYPE.value} within {timeout} s")
    return decode(sock.recv_multipart()).message


def one_application(ctx: zmq.Context, procs: ProcessSet, blobs: dict, session: str) -> bool:
    """A legitimate application (simulated ciphertexts) through the evaluator; True when its OUTPUT came."""
    socks = {p: peer(ctx, procs, p) for p in PARTIES}
    try:
        for party in PARTIES:
            ask(socks[party], Input(session, "bench", party, "base", blobs[party]), 1)
        ask(socks["user"], Run(session, "r1", {}), 2)
        return isinstance(ask(socks["user"], GetOutput(session, "r1", 20_000), 3), Output)
    finally:
        for sock in socks.values():
            sock.close(linger=0)


def slow_reader(procs: ProcessSet, seconds: float = 4.0, pings: int = 200) -> dict:
    """Another party's PING latency while one peer sends requests for `seconds` and reads no reply."""
    ctx = zmq.Context()
    reader = peer(ctx, procs, "user", RCVHWM=1, RCVBUF=4096)
    bank = peer(ctx, procs, "bank")
    try:
        deadline, sent, latencies = time.monotonic() + seconds, 0, []
        while time.monotonic() < deadline or len(latencies) < pings:
            for _ in range(200 if time.monotonic() < deadline else 0):
                try:
                    reader.send_multipart(encode(Ping(), sent), zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    break
            t0 = time.perf_counter()
            ask(bank, Ping(), len(latencies), timeout=60)
            latencies.append(time.perf_counter() - t0)
        latencies.sort()
        return {"unread_requests": sent, "pings": len(latencies),
                "p50_ms": round(statistics.median(latencies) * 1000, 2),
                "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
                "max_ms": round(latencies[-1] * 1000, 2)}
    finally:
        reader.close(linger=0)
        bank.close(linger=0)
        ctx.term()


def unauthenticated_floods(procs: ProcessSet, blobs: dict, connections: int = 8) -> dict:
    """Evaluator memory while `connections` unauthenticated clients announce 400 MiB frames and push bytes,
    and whether a real application completes meanwhile."""
    pid = procs.procs["evaluator"].popen.pid
    port = int(procs.endpoints["evaluator"].rsplit(":", 1)[1])
    before, peak, sent = rss_mb(pid), 0.0, []
    threads = [threading.Thread(target=flood, args=(port, 400 << 20, 150 << 20, sent)) for _ in range(connections)]
    for thread in threads:
        thread.start()
    ctx = zmq.Context()
    try:
        completed = one_application(ctx, procs, blobs, "flood-1")
    finally:
        ctx.term()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.02)
    peak = max(peak, rss_mb(pid))
    return {"connections": connections, "bytes_sent": sum(sent), "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(peak, 1), "growth_mb": round(peak - before, 1),
            "application_completed": completed}


HOSTILE_FILES: dict[str, Callable[[], bytes]] = {
    "billion laughs (alias bomb)": lambda: (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n" % ((bytes([98 + i]),) * 2 + (bytes([97 + i]),) * 10)
        for i in range(9))),
    "10,000-deep nesting": lambda: b"[" * 10_000 + b"]" * 10_000,
    "1 MiB flow list of floats": lambda: (b"[" + b"1.5," * (262_143) + b"1.5]")[:1 << 20],
    "1 MiB of list items": lambda: (b"- \n" * 349_525)[:1 << 20],
    "60,000 anchors": lambda: b"".join(b"a%d: &a%d [1]\n" % (i, i) for i in range(60_000))[:1 << 20],
    "bytes that are not UTF-8": lambda: b"name: \xff\xfe\xfd\n",
    "a number of 400 digits": lambda: b"name: x\ndescription: y\napplicants: [{bank: {Account_age: 1" + b"0" * 400 + b"}}]\n",
}


def many_frames(procs: ProcessSet, frames: int, frame_bytes: int, as_role: str = "bank") -> dict:
    """One multipart message of `frames` frames of `frame_bytes` from an authenticated peer: libzmq delivers no frame
    of a message before its last, so it holds all of them; then the evaluator refuses the message (TOO_LARGE).
    Measured: the evaluator's memory before, at its peak and 3 s after; another peer's PING latency meanwhile."""
    pid = procs.procs["evaluator"].popen.pid
    ctx = zmq.Context()
    hostile, other = peer(ctx, procs, as_role), peer(ctx, procs, "user")
    try:
        before = rss_mb(pid)
        header = encode(Ping(), 5)
        message = header + [b"x" * frame_bytes] * frames
        done = threading.Event()
        peak = [before]

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                time.sleep(0.02)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        hostile.send_multipart(message, copy=False)
        del message
        pings, answered = [], 0
        reply = None
        deadline = time.monotonic() + 120
        while reply is None and time.monotonic() < deadline:
            t1 = time.perf_counter()
            other.send_multipart(encode(Ping(), 6))
            if other.poll(10_000):
                other.recv_multipart()
                answered += 1
            pings.append(time.perf_counter() - t1)
            if hostile.poll(50):
                reply = decode(hostile.recv_multipart()).message
        refused_after = time.perf_counter() - t0
        time.sleep(3.0)
        done.set()
        watcher.join()
        return {"frames": frames, "frame_bytes": frame_bytes, "rss_before_mb": round(before, 1),
                "rss_peak_mb": round(peak[0], 1), "rss_growth_mb": round(peak[0] - before, 1),
                "rss_3s_after_mb": round(rss_mb(pid), 1), "refused_with": getattr(reply, "code", None),
                "refused_after_s": round(refused_after, 2), "other_ping_max_ms": round(1000 * max(pings), 1),
                "other_pings_answered": f"{answered}/{len(pings)}"}
    finally:
        hostile.close(linger=0)
        other.close(linger=0)
        ctx.term()


def hostile_files() -> dict:
    """`validate` on each hostile file: seconds, peak Python memory, and the one line it answers."""
    from scenarios.spec import ScenarioError, load_scenario

    def validate(path: Path) -> str:
        try:
            load_scenario(path)
            return "accepted"
        except ScenarioError as exc:
            return str(exc).split(": ", 1)[1][:100]

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in HOSTILE_FILES.items():
            path = Path(tmp) / "hostile.yaml"
            path.write_bytes(make())
            times = []
            for _ in range(3):  # the median of three, without tracemalloc (it slows every allocation)
                t0 = time.perf_counter()
                answer = validate(path)
                times.append(time.perf_counter() - t0)
            tracemalloc.start()
            validate(path)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            results[name] = {"seconds": round(statistics.median(times), 3), "peak_mb": round(peak / 2**20, 1),
                             "answer": answer}
    return results


def run_hostile_bench(deployment: Deployment, record: dict, log: Callable[[str], None] = print,
                      repeats: int = 20) -> dict:
    from credit_model.training.fhe_model import SimulatedPartyClient, ml_client

    sim = SimulatedPartyClient(ml_client(deployment))
    blobs = {p: sim.quantize_encrypt_serialize_party(p, deployment.preprocessor(p).transform_records([record[p]]))
             for p in PARTIES}
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="fcs-hostile-") as tmp:
        procs = ProcessSet(Path(tmp), "tcp", "simulate", str(deployment.directory))
        try:
            procs.start(180, ("evaluator",))
            figures["slow_reader"] = slow_reader(procs)
            log(f"slow reader: {figures['slow_reader']}")
            figures["unauthenticated_floods"] = unauthenticated_floods(procs, blobs)
            log(f"unauthenticated floods: {figures['unauthenticated_floods']}")
            for frames, size in ((2_000_000, 1), (320, 1 << 20)):
                figures[f"many_frames_{frames}x{size}B"] = many_frames(procs, frames, size)
                log(f"one message of {frames:,} frames of {size:,} B: {figures[f'many_frames_{frames}x{size}B']}")
        finally:
            procs.stop()
    from bench.floods import every_role
    from bench.kills import kill_runs

    figures["flood_then_disconnect"] = every_role(repeats, log=log)
    figures["killed_runner"] = kill_runs(max(1, repeats // 2), log)
    log(f"flood then disconnect: {figures['flood_then_disconnect']}")
    log(f"killed runner: {figures['killed_runner']}")
    figures["hostile_files"] = hostile_files()
    worst = max(figures["hostile_files"].items(), key=lambda item: item[1]["seconds"])
    figures["validate_worst_s"] = worst[1]["seconds"]
    log(f"hostile files: the slowest is {worst[0]!r} at {worst[1]['seconds']} s")
    return figures
