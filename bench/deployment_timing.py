"""Each committed deployment's FHE cost measured again on this machine: keygen, key bytes, first and warm runs.

A manifest's `timings` are taken by `run_scenario.py train`, on whatever load the machine had while it trained; the
frontier's rule (warm run ≤ 2 s) needs the warm run of a machine doing nothing else. `measure(name)` times, in a
child process of its own (nothing else of ours on the cores), keygen and 1 + `repeats` in-process runs on the
deployment's shipped approved applicant, with wall and CPU seconds and the load average before and after.
`python -m bench.frontier --time [--json bench/frontier_timings.json]` runs it for every frontier deployment; the
frontier table then takes its timings from that file and says so."""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path
from typing import Any

TIMINGS_FILE = Path(__file__).resolve().parent / "frontier_timings.json"


def _measure(name: str, repeats: int) -> dict[str, Any]:
    from concrete import fhe

    from credit_model.deployment import load_deployment
    from credit_model.schema import PARTIES
    from credit_model.training.fhe_model import ml_client, ml_server
    from scenarios import shipped_scenarios
    from scenarios.spec import load_scenario

    deployment = load_deployment(name)
    records = load_scenario(shipped_scenarios(name) / "approved.yaml", deployment.directory).applicants[0].data
    client, server = ml_client(deployment), ml_server(deployment)
    pres = {p: deployment.preprocessor(p) for p in PARTIES}
    blobs = [client.quantize_encrypt_serialize_party(p, pres[p].transform_records([records[p]])) for p in PARTIES]

    def run(keys) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        server.run_parties(blobs, keys)
        return time.perf_counter() - wall, time.process_time() - cpu

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    client.generate_private_and_evaluation_keys(force=True)
    serialized = client.get_serialized_evaluation_keys()
    keygen = time.perf_counter() - t0
    keys = fhe.EvaluationKeys.deserialize(serialized)
    first, _ = run(keys)
    warm = [run(keys) for _ in range(repeats)]
    return {"keygen_s": round(keygen, 3), "eval_key_bytes": len(serialized), "run_s_first": round(first, 3),
            "run_s_median": round(statistics.median(w for w, _ in warm), 3),
            "run_cpu_s_median": round(statistics.median(c for _, c in warm), 3),
            "runs_s": [round(w, 3) for w, _ in warm], "repeats": repeats,
            "load_avg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cores": os.cpu_count(), "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def measure(name: str, repeats: int = 10) -> dict[str, Any]:
    """One deployment's keygen and runs in a fresh child process (spawned: no state of the caller's)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (name, repeats))


def measure_all(names, repeats: int = 10, json_path: str | Path | None = None, log=print) -> dict[str, Any]:
    out = {}
    for name in names:
        out[name] = measure(name, repeats)
        log(f"  {name}: {out[name]}")
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return out


def measured_timings(path: Path = TIMINGS_FILE) -> dict[str, Any]:
    """The committed re-measurement (empty when there is none)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
