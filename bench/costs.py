"""Benchmarks that print numbers: step costs, bytes, protocol overhead, explanation loop, worker scaling."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from credit_model.deployment import Deployment
from credit_model.schema import PARTIES
from credit_model.training.fhe_model import ml_client, ml_server

from simulation.processes import ProcessSet
from simulation.progress import Progress
from simulation.runner import ScenarioRunner
from scenarios.spec import Applicant, Expect, Scenario, Step

Log = Callable[[str], None]


def _scenario(name: str, applicants: list[Applicant], fhe: str, deployment: Deployment) -> Scenario:
    return Scenario(path=f"(bench {name})", name=name, description=f"benchmark: {name}",
                    applicants=tuple(applicants), fhe=fhe, deadline_s=3600, deployment=str(deployment.directory))


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4) if values else float("nan")


def in_process_baseline(deployment: Deployment, records: dict, repeats: int) -> dict:
    """The same Concrete ML work as one application, in one Python process: no messages, no hops."""
    client = ml_client(deployment)
    server = ml_server(deployment)
    pres = {p: deployment.preprocessor(p) for p in PARTIES}
    from concrete import fhe

    def application(keys) -> float:
        t0 = time.perf_counter()
        blobs = [client.quantize_encrypt_serialize_party(p, pres[p].transform_records([records[p]])) for p in PARTIES]
        client.decrypt_probabilities(server.run_parties(blobs, keys))
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    client.generate_private_and_evaluation_keys(force=True)
    keys = fhe.EvaluationKeys.deserialize(client.get_serialized_evaluation_keys())
    first = time.perf_counter() - t0 + application(keys)
    warm = [application(keys) for _ in range(repeats)]
    return {"first_s": round(first, 4), "warm_s": _median(warm), "warm_all_s": [round(w, 4) for w in warm]}


def multi_process(deployment: Deployment, records: dict, repeats: int, fhe: str, log: Log) -> dict:
    """One applicant applying 1 + repeats times through the four processes; per-step costs and bytes."""
    steps = (Step("predict", expect=Expect()),)
    applicants = [Applicant("bench", records, steps) for _ in range(repeats + 1)]
    report = ScenarioRunner(_scenario("repeat", applicants, fhe, deployment), progress=log).run()
    if not report.passed:
        raise RuntimeError(f"benchmark run failed: {report.fatal or report.applicants}")
    per_app: dict[int, dict] = defaultdict(dict)
    index = -1
    for step in report.steps:
        if step.name == "prepare+encrypt":
            index += 1
        per_app[index][f"{step.role}:{step.name}"] = step
    apps = [per_app[i] for i in range(index + 1)]
    e2e = [sum(s.seconds for s in app.values()) for app in apps]
    first = apps[0]
    prep, run = first["user:prepare+encrypt"].detail, first["user:run+decrypt"].detail
    warm_runs = [app["user:run+decrypt"].detail["run_s"] for app in apps[1:]]

    def bytes_by_type(app) -> dict[str, int]:
        start = min(s.started for s in app.values())
        end = max(s.ended for s in app.values())
        counts: dict[str, int] = defaultdict(int)
        for m in report.messages:
            if start <= m["t"] <= end and "runner" not in (m["sender"], m["receiver"]):
                counts[m["type"]] += m["bytes"]
        return dict(sorted(counts.items()))

    return {
        "e2e_per_application_s": [round(x, 4) for x in e2e],
        "first_e2e_s": round(e2e[0], 4),
        "warm_e2e_s": _median(e2e[1:]),
        "steps_first": {
            "keygen_s": prep.get("keygen_s"), "eval_key_upload_s": prep.get("eval_key_upload_s"),
            "client_key_share_s": prep.get("client_key_share_s"), "user_encrypt_s": prep.get("encrypt_s"),
            "bank_encrypt_s": first["bank:encrypt"].detail["encrypt_s"],
            "agency_encrypt_s": first["agency:encrypt"].detail["encrypt_s"],
            "fhe_run_s": run["run_s"], "fhe_run_wait_s": run["wait_s"], "decrypt_s": run["decrypt_s"]},
        "fhe_run_first_s": run["run_s"],
        "fhe_run_first_wait_s": run["wait_s"],
        "client_key_import_s": prep.get("client_key_setup_s"),
        "fhe_run_warm_s": _median(warm_runs),
        "bytes_first": bytes_by_type(apps[0]),
        "bytes_repeat": bytes_by_type(apps[1]) if len(apps) > 1 else {},
        "eval_key_bytes": prep.get("eval_key_bytes"),
    }


def explanation_costs(cases: dict[str, tuple[dict, tuple[str, ...]]], fhe: str, log: Log,
                      deployment: Deployment) -> list[dict]:
    """linear against bisect (monotone models only) from each given starting bin, per applicant
    (name -> (records, bins))."""
    strategies = ("linear", "bisect") if deployment.is_monotone_in_years else ("linear",)
    applicants, starts = [], []
    for name, (records, bins) in cases.items():
        for label in bins:
            data = {**records, "agency": {**records["agency"], "Years_employed": label}}
            steps = (Step("predict", expect=Expect(decision="denied")),
                     *(Step("explain", strategy) for strategy in strategies))
            applicants.append(Applicant(name, data, steps))
            starts.append((name, label))
    report = ScenarioRunner(_scenario("explain", applicants, fhe, deployment), progress=log).run()
    if not report.passed:
        raise RuntimeError(f"explanation benchmark failed: {report.fatal or [a.failures for a in report.applicants]}")
    rows, current = [], {}
    for step in report.steps:
        if step.name.startswith("explain"):
            current[step.detail["strategy"]] = step
            if len(current) == len(strategies):
                lin = current["linear"]
                bis = current.get("bisect", lin)
                name, label = starts[len(rows)]
                rows.append({"applicant": name, "start_bin": label, "outcome": lin.detail["outcome"],
                             "linear_runs": lin.detail["runs"],
                             "linear_s": lin.seconds, "bisect_runs": bis.detail["runs"], "bisect_s": bis.seconds,
                             "same_answer": lin.detail["explanation"] == bis.detail["explanation"],
                             "bisect_measured": "bisect" in current})
                current = {}
    return rows


def startup(deployment: Deployment, scenario_dir: Path, repeats: int, log: Log) -> dict:
    """What a person waits for around the FHE work: roles ready, and whole CLI runs from process start to exit."""
    import subprocess
    import sys

    from simulation.processes import PROJECT_ROOT

    ready = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="fcs-bench-") as tmp:
            procs = ProcessSet(Path(tmp), "ipc", "execute", str(deployment.directory))
            t0 = time.perf_counter()
            try:
                procs.start(300)
                ready.append(time.perf_counter() - t0)
            finally:
                procs.stop()

    def wall(*args: str) -> float:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "run_scenario.py", "run", *args, "--deployment",
                               str(deployment.directory)], cwd=PROJECT_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"run {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return time.perf_counter() - t0

    figures = {"roles_ready_s": _median(ready), "roles_ready_all_s": [round(r, 3) for r in ready],
               "scenario_wall_s": _median([wall(str(scenario_dir / "approved.yaml")) for _ in range(repeats)]),
               "scenario_wall_simulate_s": _median([wall(str(scenario_dir / "denied_bin_found.yaml"), "--fhe", "simulate")
                                                    for _ in range(repeats)])}
    log(f"   {figures}")
    return figures


def cost_growth(depths: tuple[int, ...], bit_widths: tuple[int, ...], log: Log) -> list[dict]:
    """FHE cost against tree depth and input bit width: each is trained, compiled and run for real."""
    from credit_model.training.train import TrainingConfig, train_and_deploy

    rows = []
    for depth, bits in ((d, b) for b in bit_widths for d in depths):
        with tempfile.TemporaryDirectory(prefix="fcs-growth-") as tmp:
            manifest = train_and_deploy(Path(tmp) / "d", TrainingConfig(max_depth=depth, n_bits=bits,
                                                                        fhe_check_samples=3), log=lambda _: None)
        m, f, t = manifest["metrics"], manifest["fhe"], manifest["timings"]
        rows.append({"depth": depth, "bits": bits, "nodes": m["node_count"], "pbs": m["programmable_bootstraps"],
                     "accuracy_float": m["float"]["accuracy"], "accuracy_quantized": m["quantized"]["accuracy"],
                     "keygen_s": t["keygen_s"], "eval_key_bytes": f["eval_key_bytes"],
                     "run_s": t["run_s_median"]})
        log(f"   {rows[-1]}")
    return rows


def cost_vs_features(widths: tuple[int, ...], depth: int, bits: int, log: Log) -> list[dict]:
    """FHE cost against the number of user columns (bank and agency unchanged), same data and depth."""
    import numpy as np
    from concrete.ml.sklearn import DecisionTreeClassifier

    from credit_model.training.fhe_model import compile_multi_input
    from credit_model.training.generator import LABEL, generate_applicants
    from credit_model.training.data_schemas import SYNTHETIC_SCHEMA
    from credit_model.preprocessing import PartyPreprocessor

    df = generate_applicants(6000, seed=0)
    x = {p: PartyPreprocessor(p, SYNTHETIC_SCHEMA).fit(df).transform_frame(df) for p in PARTIES}
    y = df[LABEL].to_numpy(int)
    rows = []
    for width in widths:
        data = np.hstack([x["user"][:, :width], x["bank"], x["agency"]])
        slices = [(0, width), (width, width + 1), (width + 1, width + 3)]
        monotonic = [0] * data.shape[1]
        monotonic[width + 1] = 1
        model = DecisionTreeClassifier(n_bits=bits, max_depth=depth, min_samples_leaf=20, random_state=0,
                                       monotonic_cst=monotonic).fit(data, y)
        q = model.quantize_input(data)
        circuit = compile_multi_input(model, q, slices)
        circuit.keygen()
        keys = circuit.client.evaluation_keys
        args = circuit.encrypt(*(q[:1, a:b] for a, b in slices))
        circuit.run(*args)  # the first run pays key set-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            circuit.run(*args)
            times.append(time.perf_counter() - t0)
        rows.append({"user_columns": width, "features": width + 3, "depth": depth, "bits": bits,
                     "run_s": _median(times), "eval_key_bytes": len(keys.serialize()),
                     "user_ciphertext_bytes": len(args[0].serialize())})
        log(f"   {rows[-1]}")
    return rows


def run_benchmarks(deployment: Deployment, scenario_dir: Path, approved: dict, explain_cases: dict, quick: bool,
                   log: Log) -> dict:
    """Everything `run_scenario.py bench` prints; returns the figures (headline keys first)."""
    repeats = 2 if quick else 5
    bar = Progress(5 if quick else 7, "bench", log, unit="section")  # one step per "== " section
    try:
        return _benchmarks(deployment, scenario_dir, approved, explain_cases, quick, bar, repeats)
    finally:
        bar.close()


def _benchmarks(deployment, scenario_dir, approved, explain_cases, quick, bar: Progress, repeats: int) -> dict:
    begun = []

    def log(line: str) -> None:
        if line.startswith("== "):  # a section begins: the one before it is done
            if begun:
                bar.update(status=begun[-1])
            begun.append(line[3:].split(":")[0])
        bar.log(line)
    log("== start-up: roles ready, whole runs of the CLI")
    starting = startup(deployment, scenario_dir, 1 if quick else 3, log)
    log("== in-process baseline (same keygen, encrypt, run, decrypt; one process)")
    baseline = in_process_baseline(deployment, approved, repeats)
    log(f"   {baseline}")
    log("== four processes, one applicant applying repeatedly (keys reused)")
    multi = multi_process(deployment, approved, repeats, "execute", log=lambda _: None)
    log(f"   {multi}")
    log("== explainability loop from every starting bin (linear vs bisect)")
    explain = explanation_costs(explain_cases, "execute", lambda _: None, deployment)
    for row in explain:
        log(f"   {row}")
    from .engines import dask_throughput  # the evaluator's worker processes are a local Dask cluster's
    scaling = dask_throughput(deployment, approved, log, jobs=4 if quick else 8, rounds=1 if quick else 3)
    if not quick:
        log("== cost against depth and bit width")
    growth = [] if quick else cost_growth((2, 3, 4, 5, 6), (2, 3, 4), log)
    if not quick:
        log("== cost against the number of features")
    features = [] if quick else cost_vs_features((5, 15, 30, 47), 4, 3, log)
    bar.update()
    metrics = deployment.manifest["metrics"]
    headline = {
        "overhead_ratio": round(multi["warm_e2e_s"] / baseline["warm_s"], 3),
        "overhead_ratio_first": round(multi["first_e2e_s"] / baseline["first_s"], 3),
        "fhe_run_warm_s": multi["fhe_run_warm_s"],
        "fhe_run_first_s": multi["fhe_run_first_s"],
        "fhe_run_first_wait_s": multi["fhe_run_first_wait_s"],
        "first_to_warm_ratio": round(multi["fhe_run_first_s"] / multi["fhe_run_warm_s"], 3),
        "client_key_import_s": multi["client_key_import_s"],
        **{k: v for k, v in starting.items() if not k.endswith("_all_s")},
        "eval_key_bytes": multi["eval_key_bytes"],
        "accuracy_float": metrics.get("float", {}).get("accuracy"),  # the families record the quantized model's only
        "accuracy_quantized": metrics["quantized"]["accuracy"],
        "balanced_accuracy_quantized": metrics["quantized"]["balanced_accuracy"],
        "bisect_max_runs": max(r["bisect_runs"] for r in explain),
        "linear_max_runs": max(r["linear_runs"] for r in explain),
        "repeat_speedup": round(multi["first_e2e_s"] / multi["warm_e2e_s"], 2),
        "worker_scaling": round(scaling[1]["per_minute"] / scaling[0]["per_minute"], 3),
    }
    return {**headline, "quick": quick, "startup": starting, "baseline": baseline, "multi_process": multi,
            "explanation": explain, "workers": scaling, "cost_growth": growth, "cost_vs_features": features,
            "e2e_vs_applications": [round(sum(multi["e2e_per_application_s"][:n + 1]), 3)
                                    for n in range(repeats + 1)]}
