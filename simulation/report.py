"""Reports of a run: the terminal tables (steps; per phase and role), the JSON report, and Markdown with a Mermaid
sequence diagram (the HTML report is html_report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from simulation.accounting import bytes_per_link, phase_costs, totals_by_phase
from simulation.runner import RunReport

INSECURE = "INSECURE: --fhe simulate runs Concrete's simulation; nothing is encrypted"


def summary_table(report: RunReport) -> str:
    rows = [("step", "party", "seconds", "bytes on wire")]
    for s in report.steps:
        rows.append((f"{s.applicant}: {s.name}", s.role, f"{s.seconds:.3f}", f"{s.bytes:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


PHASE_HEADER = ("phase", "role", "sent B", "received B", "msgs out/in", "round trips", "wall s", "CPU s")


def _table(rows: list[tuple], right_from: int) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def phase_rows(rows: list[dict], with_applicant: bool = False) -> list[tuple]:
    out = [(("applicant",) if with_applicant else ()) + PHASE_HEADER]
    for r in rows:
        cpu = "-" if r["cpu_s"] is None else f"{r['cpu_s']:.3f}"
        out.append(((r["applicant"],) if with_applicant else ()) + (
            r["phase"], r["role"], f"{r['sent_bytes']:,}", f"{r['received_bytes']:,}",
            f"{r['messages_sent']}/{r['messages_received']}", str(r["round_trips"]), f"{r['wall_s']:.3f}", cpu))
    return out


def phase_table(report: RunReport) -> str:
    """Per phase and role, summed over the applicants: what each phase cost each role."""
    rows = totals_by_phase(phase_costs(report))
    if not rows:
        return "(no phase completed)"
    return _table(phase_rows(rows), 2)


def network_line(report: RunReport) -> str:
    net = report.network
    if net is None or not net.shaped:
        return "network: none (loopback as it is)"
    parts = []
    for name, link in net.links.items():
        if link.shaped:
            rate = "/".join(f"{m:g}" if m else "unlimited" for m in (link.up_mbit, link.down_mbit))
            parts.append(f"{name} {link.latency_ms:g}±{link.jitter_ms:g} ms, {rate} Mbit/s")
    return f"network: {net.label()} (" + "; ".join(parts) + ")"


def to_json(report: RunReport) -> dict:
    return {
        "scenario": report.scenario.name,
        "file": report.scenario.path,
        "description": report.scenario.description,
        "fhe": report.fhe,
        "insecure": report.fhe == "simulate",
        "passed": report.passed,
        "fatal": report.fatal,
        "stopped": report.stopped,
        "failure": report.failure,
        "expected_failure": report.scenario.expect_failure,
        "faults_applied": report.faults_applied,
        "duration_s": report.duration_s,
        "processes": report.processes,
        "exit_codes": report.exit_codes,
        "ended_by": report.ended_by,
        "run_dir_kept": report.run_dir,
        "applicants": [{
            "name": a.name, "session_id": a.session_id, "decision": a.decision,
            "explanation": a.explanation, "expectations_held": a.expectations_held,
            "failures": a.failures, "errors": a.errors, "ciphertext_previews": a.previews,
        } for a in report.applicants],
        "steps": [{"applicant": s.applicant, "name": s.name, "role": s.role, "seconds": s.seconds,
                   "bytes": s.bytes, "ok": s.ok, "detail": s.detail} for s in report.steps],
        "messages": [{"sender": m["sender"], "receiver": m["receiver"], "type": m["type"],
                      "bytes": m["bytes"], "preview": m["preview"], "t": m["t"]} for m in report.messages],
        "received": [{"sender": m["sender"], "receiver": m["receiver"], "type": m["type"], "bytes": m["bytes"],
                      "t": m["t"]} for m in report.received],
        "network": report.network.as_dict() if report.network is not None else None,
        "phases": phase_costs(report),
        "phase_totals": totals_by_phase(phase_costs(report)),
        "bytes_per_link": bytes_per_link(report),
    }


def write_json(reports: list[RunReport], path: Path) -> None:
    data = to_json(reports[0]) if len(reports) == 1 else {"runs": [to_json(r) for r in reports]}
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def mermaid(report: RunReport) -> str:
    lines = ["sequenceDiagram"] + [f"    participant {p}" for p in ("runner", "user", "bank", "agency", "evaluator")]
    for m in report.messages:
        arrow = "-->>" if m["type"] in ("ACK", "RESULT", "KEY_STATUS", "OUTPUT", "ERROR", "PONG", "READY") else "->>"
        lines.append(f"    {m['sender']}{arrow}{m['receiver']}: {m['type']} ({m['bytes']:,} B)")
    return "\n".join(lines)


def to_markdown(report: RunReport) -> str:
    out = [f"# Scenario `{report.scenario.name}`: {'PASSED' if report.passed else 'FAILED'}", "",
           report.scenario.description, ""]
    if report.fhe == "simulate":
        out += [f"> **{INSECURE}**", ""]
    if report.fatal:
        out += [f"**Fatal:** {report.fatal}", ""]
    out += ["| applicant | decision | explanation | expectations |", "|---|---|---|---|"]
    for a in report.applicants:
        out.append(f"| {a.session_id} | {a.decision or '-'} | {a.explanation or '-'} | "
                   f"{'held' if a.expectations_held else '; '.join(a.failures)} |")
    rows = phase_costs(report)
    out += ["", network_line(report), "", "## Steps", "", "```", summary_table(report), "```", "",
            "## What each phase cost each role", "",
            "Per applicant; sent and received bytes between roles (the runner's commands excluded), messages, round "
            "trips (requests the role waited for), wall seconds of the phase, CPU seconds of the role in it.", ""]
    if rows:
        table = phase_rows(rows, with_applicant=True)
        out += ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
        out += ["| " + " | ".join(row) + " |" for row in table[1:]]
    out += ["",
            "## Messages that passed", "", "```mermaid", mermaid(report), "```", ""]
    return "\n".join(out)


def write_markdown(reports: list[RunReport], path: Path) -> None:
    Path(path).write_text("\n\n".join(to_markdown(r) for r in reports), encoding="utf-8")
