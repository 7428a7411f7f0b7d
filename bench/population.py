"""A whole population through the four roles: every encrypted decision against the clear model, then the costs."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

from credit_model.deployment import Deployment
from credit_model.schema import PARTIES

from simulation.processes import ProcessSet
from simulation.progress import Progress

DRAIN_EVERY = 200  # applicants between drains of the roles' traffic logs (each keeps its latest 5,000 records)


def population_records(deployment: Deployment, count: int) -> list[tuple[dict, bool | None]]:
    """The first `count` applicants of the deployment's held-out file (kaggle: 7,292) with their labels."""
    from credit_model.training.real_data import load_demo, load_kaggle
    data = deployment.manifest.get("data")
    df = load_kaggle("test") if data == "kaggle" else load_demo() if data == "demo" else None
    if df is None:
        raise ValueError(f"deployment {deployment.directory.name} has no held-out file (kaggle and demo have)")
    if count > len(df):
        raise ValueError(f"the held-out file has {len(df)} applicants, fewer than {count}")

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and value != value else value

    rows = df.head(count)
    return [({p: {f.name: plain(row[f.name]) for f in deployment.schema.features[p]} for p in PARTIES},
             bool(row["Approved"]) if "Approved" in row else None) for _, row in rows.iterrows()]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its live descendants (the evaluator and its workers)."""
    import psutil
    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def traffic_bytes(procs: ProcessSet) -> int:
    """Bytes the roles sent each other (the runner's control traffic left out) since the last drain."""
    total = 0
    for role in ("user", "bank", "agency", "evaluator"):
        stats = procs.command(role, "stats", {}, 30)
        total += sum(m["bytes"] for m in stats["messages"] if m["receiver"] != "runner")
    return total


def population(deployment: Deployment, count: int, fhe: str, engine: str, workers: int, keys: str,
               log: Callable[[str], None] = print, timeout: float = 600.0, worker_threads: int = 0) -> dict:
    """Drive `count` applicants one after another through user, bank, agency and evaluator processes."""
    from credit_model.explainability import decision_message
    from credit_model.training.clear_model import ClearModel

    clear = ClearModel(deployment)
    people = population_records(deployment, count)
    extra = ["--engine", engine] + (["--workers", str(workers)] if workers else []) + \
        (["--worker-threads", str(worker_threads)] if worker_threads else [])
    rows, mismatches, failures = [], [], []
    with tempfile.TemporaryDirectory(prefix="fcs-population-") as tmp:
        procs = ProcessSet(Path(tmp), "ipc", fhe, str(deployment.directory), {"evaluator": extra})
        try:
            procs.start(300)
            evaluator_pid = procs.procs["evaluator"].popen.pid
            traffic_bytes(procs)  # start-up traffic is not an application's
            cpu0, t0 = tree_cpu_seconds(evaluator_pid), time.perf_counter()
            first_bytes, sent = None, 0
            bar = Progress(count, "applicants", log, unit="applicant")
            for i, (record, label) in enumerate(people):
                sid, kid = f"p{i}", ("pop" if keys == "reused" else f"pop{i}")
                try:
                    procs.command("user", "prepare", {"session_id": sid, "key_id": kid, "features": record["user"]},
                                  timeout)
                    for party in ("bank", "agency"):
                        procs.command(party, "encrypt", {"session_id": sid, "key_id": kid, "features": record[party]},
                                      timeout)
                    result = procs.command("user", "predict", {"session_id": sid}, timeout)
                except Exception as exc:  # noqa: BLE001 - counted and shown: the run must have none
                    failures.append({"applicant": i, "error": f"{type(exc).__name__}: {exc}"[:300]})
                    bar.update(status=f"{len(failures)} failed")
                    continue
                expected = clear.approved(record)
                rows.append((result["approved"], expected, label, result.get("run_s", 0.0)))
                if result["approved"] != expected or result["decision"] != decision_message(expected):
                    mismatches.append(i)
                if i == 0:
                    first_bytes = traffic_bytes(procs)
                elif i % DRAIN_EVERY == 0 or i == count - 1:
                    sent += traffic_bytes(procs)
                bar.update(status=f"{len(mismatches)} disagree, {len(failures)} failed")
            wall = time.perf_counter() - t0
            cpu = tree_cpu_seconds(evaluator_pid) - cpu0
            bar.close()
        finally:
            procs.stop()
    done = len(rows)
    matrix = {"approved_and_labelled_approved": sum(1 for a, _, y, _ in rows if a and y),
              "approved_but_labelled_denied": sum(1 for a, _, y, _ in rows if a and y is False),
              "denied_but_labelled_approved": sum(1 for a, _, y, _ in rows if not a and y),
              "denied_and_labelled_denied": sum(1 for a, _, y, _ in rows if not a and y is False)}
    per_app_cpu = cpu / done if done else float("nan")
    runs = sorted(r for *_, r in rows)
    summary = {
        "applicants": count, "decided": done, "failed": failures[:20], "failed_count": len(failures),
        "agree_with_clear_model": done - len(mismatches), "disagree": mismatches[:50],
        "fhe": fhe, "engine": engine, "workers": workers, "worker_threads": worker_threads or "default",
        "keys": "one key set reused by every applicant (keygen and the key upload once)" if keys == "reused"
                else "new keys per applicant (keygen and a key upload each)",
        "driving": "one applicant at a time through the four role processes (the runner's commands)",
        "confusion_matrix_vs_labels": matrix,
        "accuracy_vs_labels": round((matrix["approved_and_labelled_approved"] + matrix["denied_and_labelled_denied"])
                                    / done, 4) if done else None,
        "wall_s": round(wall, 2), "applications_per_minute": round(60 * done / wall, 1) if wall else None,
        "bytes_first_application": first_bytes,
        "bytes_per_application_after_first": round(sent / max(done - 1, 1)) if done > 1 else None,
        "evaluator_cpu_s_per_application": round(per_app_cpu, 4),
        "fhe_run_s_median": runs[len(runs) // 2] if runs else None,
        "projection": {f"{k}_cores": round(60 * k / per_app_cpu, 1) for k in (2, 8, 32, 128)} if done else {},
        "projection_note": "PROJECTION, not measured: applications per minute if K cores each spent the measured "
                           "evaluator CPU seconds per application and nothing else limited (no driver, network, "
                           "or scheduler cost counted)",
    }
    log(f"{done}/{count} applicants decided ({len(failures)} failed); {summary['agree_with_clear_model']} agree with "
        f"the clear model; keys: {summary['keys']}")
    log(f"confusion matrix against the held-out labels: {matrix} (accuracy {summary['accuracy_vs_labels']})")
    log(f"{summary['applications_per_minute']} applications/min measured ({summary['driving']}, {engine} engine, "
        f"--fhe {fhe}); bytes: first application {first_bytes}, then {summary['bytes_per_application_after_first']} "
        f"per application; evaluator CPU {per_app_cpu:.3f} s per application")
    log(f"PROJECTION (not measured) of applications/min for K cores: {summary['projection']}")
    return summary
