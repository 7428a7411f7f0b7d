"""Reports of a run: the terminal summary table, the JSON report, and Markdown with a Mermaid sequence diagram."""

from __future__ import annotations

import json
from pathlib import Path

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
    out += ["", "## Steps", "", "```", summary_table(report), "```", "",
            "## Messages that passed", "", "```mermaid", mermaid(report), "```", ""]
    return "\n".join(out)


def write_markdown(reports: list[RunReport], path: Path) -> None:
    Path(path).write_text("\n\n".join(to_markdown(r) for r in reports), encoding="utf-8")
