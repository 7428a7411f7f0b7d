"""What each phase cost each role: bytes sent and received, messages, round trips, wall and CPU seconds.

Phases (keygen, key upload, encrypt, run, decrypt, explain) are time windows: the user reports the boundaries
inside its prepare and predict steps, the other steps are one phase each. A message belongs to the window in which
it was sent (bytes sent) or arrived whole (bytes received); a round trip is a request the role sent and waited
for. CPU seconds come from /proc, sampled while the run lasts, for the roles started here and their children
(the user's keygen child); roles started elsewhere have none.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from pathlib import Path

PHASES = ("keygen", "key upload", "encrypt", "run", "decrypt", "explain")
REQUESTS = {"PING", "KEY_QUERY", "EVAL_KEY", "CLIENT_KEY", "INPUT", "RUN", "GET_OUTPUT", "CANDIDATE"}
ROLES = ("user", "bank", "agency", "evaluator")
TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out += [int(c) for c in text.split()]
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """CPU (user + system) of a process, its reaped children and its live descendants, in seconds."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            stat = Path(f"/proc/{current}/stat").read_bytes()
        except OSError:
            if current == pid:
                return None
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICK
        todo += _children(current)
    return total


class CpuSampler:
    """Samples each role's CPU every `interval` s on a thread: role -> [(wall time, cumulative CPU s)]."""

    def __init__(self, pids, interval: float = 0.05):
        self.pids, self.interval = pids, interval  # pids: a callable giving role -> pid (roles can be restarted)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self._pids: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> "CpuSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                self.sample()
                return

    def sample(self) -> None:
        now = time.time()
        for role, pid in dict(self.pids()).items():
            seconds = cpu_seconds(pid) if pid else None
            if seconds is None:
                continue
            series = self.series.setdefault(role, [])
            last = series[-1][1] if series else 0.0
            known_pid, offset = self._pids.get(role, (pid, 0.0))
            if pid != known_pid:  # a restarted role: its new process counts on from the old one's total
                offset = last
            self._pids[role] = (pid, offset)
            # never down: a child that exited unreaped leaves the tree before its time reaches the parent's
            series.append((round(now, 4), round(max(last, offset + seconds), 4)))

    def stop(self) -> dict:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        return self.series


def cpu_between(series: list, start: float, end: float) -> float | None:
    """CPU seconds spent between two wall times, linearly interpolated between samples."""
    if not series:
        return None
    times = [t for t, _ in series]

    def at(moment: float) -> float:
        i = bisect_left(times, moment)
        if i <= 0:
            return series[0][1]
        if i >= len(series):
            return series[-1][1]
        (t0, c0), (t1, c1) = series[i - 1], series[i]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c1
    return max(0.0, at(end) - at(start))


def phase_windows(steps) -> list[dict]:
    """The run's phase windows, in order: {applicant, phase, start, end}, from the runner's step records."""
    windows = []
    for step in steps:
        who = getattr(step, "session", "") or step.applicant  # the application: alice-1, alice-2
        marks = step.detail.get("phases") if isinstance(step.detail, dict) else None
        if marks:
            windows += [{"applicant": who, "step": step.name, "phase": name, "role": step.role, "start": a, "end": b}
                        for name, a, b in marks]
            continue
        name = step.name.split(" ")[0]
        phase = {"prepare+encrypt": "encrypt", "run+decrypt": "run", "explain": "explain"}.get(name, "encrypt")
        windows.append({"applicant": who, "step": step.name, "phase": phase, "role": step.role,
                        "start": step.started, "end": step.ended})
    return windows


def _between_roles(record: dict) -> bool:
    return record["sender"] != "runner" and record["receiver"] != "runner"


def phase_costs(report) -> list[dict]:
    """Per applicant, phase and role: sent/received bytes and messages, round trips, wall and CPU seconds.
    Roles idle in a phase (no message, CPU under 50 ms and under 5 % of it) are left out of it."""
    sent = [m for m in report.messages if _between_roles(m)]
    received = [m for m in report.received if _between_roles(m)]
    rows = []
    for window in phase_windows(report.steps):
        start, end = window["start"], window["end"]
        for role in ROLES:
            out = [m for m in sent if m["sender"] == role and start <= m["t"] <= end]
            came = [m for m in received if m["receiver"] == role and start <= m["t"] <= end]
            cpu = cpu_between(report.cpu.get(role, []), start, end)
            if not out and not came and (cpu or 0.0) < max(0.05, 0.05 * (end - start)):
                continue  # idle in this phase (its poll loop and heartbeats only)
            rows.append({"applicant": window["applicant"], "step": window["step"], "phase": window["phase"],
                         "role": role,
                         "sent_bytes": sum(m["bytes"] for m in out), "received_bytes": sum(m["bytes"] for m in came),
                         "messages_sent": len(out), "messages_received": len(came),
                         "round_trips": sum(m["type"] in REQUESTS for m in out),
                         "wall_s": round(end - start, 4), "cpu_s": None if cpu is None else round(cpu, 3)})
    return rows


def totals_by_phase(rows: list[dict]) -> list[dict]:
    """The rows summed over applicants, per phase and role, in PHASES order."""
    out: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["phase"], row["role"])
        total = out.setdefault(key, {"phase": row["phase"], "role": row["role"], "sent_bytes": 0,
                                     "received_bytes": 0, "messages_sent": 0, "messages_received": 0,
                                     "round_trips": 0, "wall_s": 0.0, "cpu_s": None})
        for field in ("sent_bytes", "received_bytes", "messages_sent", "messages_received", "round_trips"):
            total[field] += row[field]
        total["wall_s"] = round(total["wall_s"] + row["wall_s"], 4)
        if row["cpu_s"] is not None:
            total["cpu_s"] = round((total["cpu_s"] or 0.0) + row["cpu_s"], 3)
    order = {p: i for i, p in enumerate(PHASES)}
    return sorted(out.values(), key=lambda r: (order.get(r["phase"], 99), ROLES.index(r["role"])))


def bytes_per_link(report) -> dict[str, int]:
    """Bytes sent between roles, per direction ("user -> evaluator")."""
    out: dict[str, int] = {}
    for m in report.messages:
        if _between_roles(m):
            key = f"{m['sender']} -> {m['receiver']}"
            out[key] = out.get(key, 0) + m["bytes"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def arrows(report, limit: int = 2000) -> list[dict]:
    """Each message between roles with its send and arrival times: the k-th message of a type from A to B is
    matched with the k-th that B received (each link is one ordered stream)."""
    arrived: dict[tuple, list[float]] = {}
    for m in sorted(report.received, key=lambda m: m["t"]):
        if _between_roles(m):
            arrived.setdefault((m["sender"], m["receiver"], m["type"]), []).append(m["t"])
    used: dict[tuple, int] = {}
    out = []
    for m in sorted(report.messages, key=lambda m: m["t"]):
        if not _between_roles(m):
            continue
        key = (m["sender"], m["receiver"], m["type"])
        index = used.get(key, 0)
        times = arrived.get(key, [])
        used[key] = index + 1
        out.append({**m, "arrived": times[index] if index < len(times) else None})
    return out[:limit]
