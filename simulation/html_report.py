"""The HTML report, drawn with plotly and readable offline (plotly.js is inlined once per file): per run a timeline
per role (phases as bars, messages as arrows between the lanes), bytes per link and the phase costs; for load and
bench, latency distributions."""

from __future__ import annotations

import html
import statistics
from pathlib import Path

import plotly.graph_objects as go

from simulation.accounting import PHASES, arrows, bytes_per_link, phase_costs, phase_windows, totals_by_phase

LANES = ("user", "bank", "agency", "evaluator")
COLOURS = {"keygen": "#8e6cc1", "key upload": "#d9534f", "encrypt": "#5bc0de", "run": "#f0ad4e",
           "decrypt": "#5cb85c", "explain": "#337ab7"}
ARROW_LIMIT = 1500
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:nth-child(-n+2),th{text-align:left}
.insecure{color:#b00;font-weight:bold}.fail{color:#b00}.pass{color:#070}"""


def _phase_bars(report, t0: float) -> list[go.Bar]:
    """One horizontal bar per phase window, in the lane of the role that did it (bank and agency encrypt in
    their own lanes); the evaluator's lane shows each FHE run's own seconds (an explanation's too), ending when
    its OUTPUT left."""
    bars: dict[str, dict] = {}

    def add(phase, lane, start, end, text):
        bar = bars.setdefault(phase, {"x": [], "y": [], "base": [], "text": []})
        bar["x"].append(max(end - start, 0.001))
        bar["y"].append(lane)
        bar["base"].append(start - t0)
        bar["text"].append(text)
    for w in phase_windows(report.steps):
        add(w["phase"], w["role"], w["start"], w["end"], f"{w['applicant']}: {w['phase']} {w['end'] - w['start']:.3f} s")
    for step in report.steps:
        detail = step.detail if isinstance(step.detail, dict) else {}
        out = [m for m in report.messages if m["sender"] == "evaluator" and m["type"] == "OUTPUT"
               and step.started <= m["t"] <= step.ended]
        runs = [detail["run_s"]] if "run_s" in detail else [c["run_s"] for c in detail.get("candidates", [])]
        for seconds, output in zip(runs, out[-len(runs):] if runs else []):  # each run's OUTPUT, in order
            end = output["t"]
            add("run", "evaluator", end - seconds, end, f"{step.applicant}: FHE run {seconds:.3f} s")
    return [go.Bar(name=phase, orientation="h", x=b["x"], y=b["y"], base=b["base"], text=b["text"],
                   hoverinfo="text", textposition="none", marker_color=COLOURS.get(phase, "#999"),
                   legendgroup=phase) for phase, b in bars.items()]


def timeline(report) -> go.Figure:
    times = [m["t"] for m in report.messages] + [s.started for s in report.steps]
    t0 = min(times) if times else 0.0
    fig = go.Figure(_phase_bars(report, t0))
    shown = arrows(report, ARROW_LIMIT)
    xs, ys, texts = [], [], []
    for m in shown:
        end = m["arrived"] if m["arrived"] is not None else m["t"]
        fig.add_annotation(x=end - t0, y=m["receiver"], ax=m["t"] - t0, ay=m["sender"], xref="x", yref="y",
                           axref="x", ayref="y", showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1,
                           arrowcolor="rgba(60,60,60,0.55)", text="")
        xs.append((m["t"] + end) / 2 - t0)
        ys.append(m["receiver"])
        texts.append(f"{m['sender']} → {m['receiver']}: {m['type']} {m['bytes']:,} B, "
                     f"{'in %.3f s' % (end - m['t']) if m['arrived'] is not None else 'arrival not recorded'}")
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker={"size": 5, "color": "rgba(60,60,60,0.6)"},
                             text=texts, hoverinfo="text", name="messages"))
    fig.update_layout(barmode="overlay", title=f"Timeline: {report.scenario.name} ({len(shown)} messages)",
                      xaxis_title="seconds since the first step", height=420,
                      yaxis={"categoryorder": "array", "categoryarray": list(reversed(LANES))})
    return fig


def link_bytes(report) -> go.Figure:
    data = bytes_per_link(report)
    fig = go.Figure(go.Bar(x=list(data.values()), y=list(data.keys()), orientation="h",
                           text=[f"{v:,} B" for v in data.values()], textposition="auto"))
    fig.update_layout(title="Bytes per link and direction", xaxis_title="bytes", height=120 + 28 * len(data),
                      yaxis={"autorange": "reversed"})
    return fig


def phase_seconds(report) -> go.Figure:
    rows = phase_costs(report)
    walls: dict[tuple[str, str], float] = {}
    for row in rows:  # a phase's wall time once per applicant (every role in it shares the window)
        walls.setdefault((row["applicant"], row["phase"]), row["wall_s"])
    applicants = list(dict.fromkeys(a for a, _ in walls))
    fig = go.Figure([go.Bar(name=phase, x=applicants, y=[walls.get((a, phase), 0.0) for a in applicants],
                            marker_color=COLOURS.get(phase)) for phase in PHASES])
    fig.update_layout(barmode="stack", title="Wall seconds per phase and applicant", yaxis_title="seconds",
                      height=360)
    return fig


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(rows: list[dict]) -> str:
    head = ["phase", "role", "sent B", "received B", "messages out/in", "round trips", "wall s", "CPU s"]
    body = "".join(
        f"<tr><td>{html.escape(r['phase'])}</td><td>{r['role']}</td><td>{r['sent_bytes']:,}</td>"
        f"<td>{r['received_bytes']:,}</td><td>{r['messages_sent']}/{r['messages_received']}</td>"
        f"<td>{r['round_trips']}</td><td>{r['wall_s']:.3f}</td><td>{_cell(r['cpu_s'], '.3f')}</td></tr>"
        for r in rows)
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + body + "</table>"


def page(title: str, sections: list[tuple[str, list]]) -> str:
    """A whole page: sections of (heading HTML, [plotly figure or HTML string]); plotly.js inlined once."""
    parts, inlined = [], False
    for heading, items in sections:
        parts.append(heading)
        for item in items:
            if isinstance(item, go.Figure):
                parts.append(item.to_html(full_html=False, include_plotlyjs=not inlined,
                                          config={"displaylogo": False}))
                inlined = True
            else:
                parts.append(item)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>")


def run_sections(report) -> list[tuple[str, list]]:
    from simulation.report import INSECURE, network_line

    verdict = "PASSED" if report.passed else "FAILED"
    heading = (f"<h1 id='run-{html.escape(report.scenario.name)}'>Scenario {html.escape(report.scenario.name)}: "
               f"<span class='{'pass' if report.passed else 'fail'}'>{verdict}</span></h1>"
               f"<p>{html.escape(report.scenario.description)}</p><p>{html.escape(network_line(report))}</p>")
    if report.fhe == "simulate":
        heading += f"<p class='insecure'>{INSECURE}</p>"
    if report.fatal:
        heading += f"<p class='fail'>Fatal: {html.escape(report.fatal)}</p>"
    decisions = "".join(f"<li>{html.escape(a.session_id)}: {html.escape(a.explanation or a.decision or '-')}</li>"
                        for a in report.applicants)
    return [(heading + f"<ul>{decisions}</ul>", [timeline(report), phase_seconds(report), link_bytes(report)]),
            ("<h2>What each phase cost each role</h2>", [_table(totals_by_phase(phase_costs(report)))])]


def write_html(reports, path: Path) -> None:
    sections = [s for report in reports for s in run_sections(report)]
    Path(path).write_text(page("fhe-credit-sim report", sections), encoding="utf-8")


def distributions(title: str, series: dict[str, list[float]], unit: str = "seconds") -> go.Figure:
    """Box plots with every point, one per named series (latencies of load sessions, bench repeats)."""
    fig = go.Figure([go.Box(y=values, name=name, boxpoints="all", jitter=0.4, pointpos=0)
                     for name, values in series.items() if values])
    fig.update_layout(title=title, yaxis_title=unit, height=440, showlegend=False)
    return fig


def write_distributions(path: Path, title: str, series: dict[str, list[float]], notes: str = "") -> None:
    summary = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{len(v)}</td><td>{min(v):.3f}</td>"
        f"<td>{statistics.median(v):.3f}</td><td>{max(v):.3f}</td></tr>" for name, v in series.items() if v)
    table = ("<table><tr><th>series</th><th>n</th><th>min</th><th>median</th><th>max</th></tr>" + summary
             + "</table>")
    Path(path).write_text(page(title, [(f"<h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>",
                                        [distributions(title, series), table])]), encoding="utf-8")
