"""The latency distributions a bench run measured (every repeat, not only medians), for its HTML report."""

from __future__ import annotations


def latency_series(figures: dict) -> dict[str, list[float]]:
    """name -> seconds of every repeat found in `bench` or `bench --network` figures."""
    out: dict[str, list[float]] = {}

    def put(name: str, values) -> None:
        values = [float(v) for v in values or [] if isinstance(v, (int, float))]
        if values:
            out[name] = values
    startup = figures.get("startup") or {}
    put("roles ready", startup.get("roles_ready_all_s"))
    put("in-process application, warm", (figures.get("baseline") or {}).get("warm_all_s"))
    e2e = (figures.get("multi_process") or {}).get("e2e_per_application_s") or []
    put("four processes, repeat applications", e2e[1:])
    for strategy in ("linear", "bisect"):
        put(f"explanation, {strategy} (every start bin)", [r[f"{strategy}_s"] for r in figures.get("explanation", [])])
    for row in figures.get("upload", []):
        put(f"evaluation-key upload at {row['mbit']:g} Mbit/s, {row['latency_ms']:g} ms", row.get("all_s"))
    for row in figures.get("round_trips", []):
        put(f"round trip added at {row['latency_ms']:g} ms one way", row.get("added_all_s"))
    for fault in ("kill", "stop"):
        for link in sorted({r["link"] for r in figures.get("detection", [])}):
            put(f"evaluator {fault} named, {link}",
                [r["seconds"] for r in figures.get("detection", []) if r["fault"] == fault and r["link"] == link])
    return out
