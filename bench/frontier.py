"""The accuracy/cost frontier of the kaggle deployments (one per model family), as a Markdown table from their manifests.

`python -m bench.frontier` prints it; every figure comes from the committed manifest of each deployment (written by
`run_scenario.py train`), except the tree's bootstrap intervals, computed here from its quantized predictions on the
held-out file (the tree's manifest predates them).

`python -m bench.frontier --sweep [--measure] [--json FILE]` adds the sweep of larger monotone ensembles (SWEEP_*):
per point the quantized model's held-out figures with 95 % intervals and the compiled circuit's PBS count; with
--measure, real-FHE keygen, evaluation-key bytes, first and warm in-process runs (wall and CPU seconds, load average)
for the MEASURE points, and warm runs of the others *estimated* as PBS x the measured seconds per PBS at the same
input width (labelled "est."). `--from-json FILE` prints the table of a sweep already run (bench/frontier_sweep.json
is the one in BENCHMARKS.md). The sweep is descriptive: the held-out file reports many points, it chooses none.
`--remeasure FILE [T,D,B ...]` measures a sweep's measured points again (and the points named).
`--tree-cv` runs the tree family's grouped 5-fold CV (TREE_SPACE) on the training file; `--logistic-lookup [--measure]`
the logistic circuit's rounded-score bits (LOOKUP_CHOICES) by grouped CV, with their FHE costs."""

from __future__ import annotations

import sys
from typing import Any

from credit_model.deployment import DEPLOYMENTS_DIR, load_deployment

FRONTIER = ("kaggle", "kaggle_logistic", "kaggle_xgboost")
WARM_RUN_TARGET_S = 2.0


def tree_intervals(deployment) -> dict[str, list[float]]:
    """95 % bootstrap intervals of the committed tree on the held-out file: the tree is refit with its preset (same
    seed, same data: the same tree, as the rebuild test checks) and must reproduce the manifest's held-out AUC."""
    import numpy as np
    from concrete.ml.sklearn import DecisionTreeClassifier

    from credit_model.schema import PARTIES
    from credit_model.training.generator import LABEL
    from credit_model.training.real_data import load_kaggle
    from credit_model.training.selection import bootstrap_intervals
    from credit_model.training.train import PRESETS, tree_params
    from credit_model.training.evaluation import classification_figures

    train, test = load_kaggle("train"), load_kaggle("test")
    pre = {p: deployment.preprocessor(p) for p in PARTIES}
    x_train, x_test = (np.hstack([pre[p].transform_frame(df) for p in PARTIES]) for df in (train, test))
    config = PRESETS[deployment.name]
    params = tree_params(config, deployment.manifest["years_employed_column"], x_train.shape[1])
    model = DecisionTreeClassifier(n_bits=config.n_bits, **params).fit(x_train, train[LABEL].to_numpy(int))
    p = model.predict_proba(x_test)
    y, pred = test[LABEL].to_numpy(int), (p[:, 1] > p[:, 0]).astype(int)
    if classification_figures(y, pred, p[:, 1])["auc"] != deployment.manifest["metrics"]["quantized"]["auc"]:
        raise RuntimeError("the refit tree does not reproduce the committed one's held-out AUC")
    return bootstrap_intervals(y, pred, p[:, 1])


def row(name: str) -> dict[str, Any]:
    deployment = load_deployment(DEPLOYMENTS_DIR / name)
    m = deployment.manifest
    q, fhe, timings = m["metrics"]["quantized"], m["fhe"], m["timings"]
    ci = q.get("ci95") or tree_intervals(deployment)
    params = m.get("model", {}).get("params") or {k: m["training"].get(k) for k in
                                                  ("max_depth", "min_samples_leaf", "high_risk_weight")}
    search = m["metrics"].get("search", {})
    return {"name": name, "family": deployment.family, "params": params, "bits": m["training"]["n_bits"],
            "monotone": deployment.is_monotone_in_years, "q": q, "ci": ci,
            "cv_auc": search.get("candidates", [{}])[0].get("cv_auc") if search else None,
            "pbs": m["metrics"]["programmable_bootstraps"], "eval_key": fhe["eval_key_bytes"],
            "warm": timings["run_s_median"], "first": timings["run_s_first"], "keygen": timings["keygen_s"]}


def _fig(value: float, interval: list[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| deployment | model | monotone | held-out AUC | balanced acc. | high-risk recall | high-risk precision "
             "| grouped-CV AUC | PBS | eval key | warm run | first run | keygen | explanation (≤ runs) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q, ci = r["q"], r["ci"]
        params = ", ".join(f"{k} {v}" for k, v in r["params"].items())
        runs = "bisect 3, linear 6" if r["monotone"] else "linear 6"
        lines.append(
            f"| `{r['name']}` | {r['family']} ({params}; {r['bits']}-bit inputs) | {'yes' if r['monotone'] else 'no'} "
            f"| {_fig(q['auc'], ci['auc'])} | {_fig(q['balanced_accuracy'], ci['balanced_accuracy'])} "
            f"| {_fig(q['high_risk_recall'], ci['high_risk_recall'])} "
            f"| {_fig(q['high_risk_precision'], ci['high_risk_precision'])} "
            f"| {r['cv_auc'] if r['cv_auc'] is not None else 'n/a'} | {r['pbs']} | {r['eval_key'] / 1e6:.1f} MB "
            f"| {r['warm']:.2f} s | {r['first']:.2f} s | {r['keygen']:.1f} s | {runs} × warm run |")
    return "\n".join(lines)


def best_default(rows: list[dict[str, Any]]) -> str:
    """The issue's rule: the best (AUC + balanced accuracy) monotone point whose warm run is within 2 s."""
    fit = [r for r in rows if r["monotone"] and r["warm"] <= WARM_RUN_TARGET_S]
    best = max(fit, key=lambda r: r["q"]["auc"] + r["q"]["balanced_accuracy"])
    target = best["q"]["auc"] >= 0.70 and best["q"]["balanced_accuracy"] >= 0.62
    return (f"best monotone point within {WARM_RUN_TARGET_S} s: `{best['name']}` (AUC {best['q']['auc']}, balanced "
            f"{best['q']['balanced_accuracy']}); target AUC ≥ 0.70 and balanced ≥ 0.62 {'met' if target else 'NOT met'}")


# The sweep: larger monotone ensembles than the 2-s budget allows (issue 19's "why not"), from the committed 14-tree
# point towards the issue's float ensemble. Learning rate adapted to the number of trees; high-risk weight 58 (the
# committed ensemble's, about the class ratio, so that argmax decides near balance).
SWEEP_TREES = (20, 50, 100)
SWEEP_DEPTHS = (2, 3, 4, 5)
SWEEP_BITS = (3, 4, 6)
SWEEP_RATE = {14: 0.3, 20: 0.3, 50: 0.15, 100: 0.1}
HIGH_RISK_WEIGHT = 58.0
COMMITTED = (14, 3, 3)  # the kaggle_xgboost deployment's shape (trees, depth, bits)
# Points measured in real FHE with --measure (keygen and runs in-process, one child process each): one per input
# width, the cheapest of the sweep and the cheapest reaching AUC >= 0.70 when one does (added at run time).
MEASURE = ((14, 3, 3), (50, 3, 3), (20, 2, 4))
POINT_TIMEOUT_S = 600  # a point whose compile (or keygen and runs) would take longer is stopped and said so
# The quiet in-process warm run of kaggle_xgboost (bench --quick, BENCHMARKS.md): 2.30 s for 211 PBS at 3 bits,
# the calibration used for 3-bit points when nothing is measured.
QUIET_3BIT_S_PER_PBS = 2.30 / 211


def _sweep_data():
    import numpy as np

    from credit_model.schema import PARTIES
    from credit_model.training.generator import LABEL
    from credit_model.training.real_data import load_kaggle

    deployment = load_deployment(DEPLOYMENTS_DIR / "kaggle_xgboost")
    train, test = load_kaggle("train"), load_kaggle("test")
    pre = {p: deployment.preprocessor(p) for p in PARTIES}
    x_train = np.hstack([pre[p].transform_frame(train) for p in PARTIES])
    x_test = np.hstack([pre[p].transform_frame(test) for p in PARTIES])
    return (x_train, train[LABEL].to_numpy(int), x_test, test[LABEL].to_numpy(int),
            deployment.manifest["years_employed_column"], [deployment.slices[p] for p in PARTIES])


_DATA = None


def _fit(trees: int, depth: int, bits: int):
    from credit_model.training.families import concrete_model

    x_train, y_train, _, _, years, _ = _DATA
    params = dict(n_estimators=trees, max_depth=depth, learning_rate=SWEEP_RATE[trees], high_risk_weight=HIGH_RISK_WEIGHT)
    return concrete_model("xgboost", params, bits, years, x_train.shape[1], True, 0).fit(x_train, y_train)


def _compile(model, full: bool):
    import numpy as np

    from credit_model.training.families import prepare_for_circuit
    from credit_model.training.fhe_model import compile_multi_input

    x_train, _, _, _, _, slices = _DATA
    # for a run: every distinct quantized training row (the value ranges of the whole training file, as the
    # deployment's compile sees them: the same key bytes for the committed point); for the PBS count alone, which
    # depends on the circuit's shape only, the first 3,000 rows (a compile of seconds, not tens)
    q_train = np.unique(model.quantize_input(x_train), axis=0) if full else model.quantize_input(x_train[:3000])
    inference, inputset = prepare_for_circuit(model, "xgboost", x_train.shape[1], q_train)
    return compile_multi_input(model, inputset, slices, inference)


def _init_worker() -> None:
    global _DATA  # pylint: disable=global-statement
    _DATA = _sweep_data()


def _point(point, compile_it: bool, measure: bool, runs: int) -> dict[str, Any]:
    """In the worker process: fit one point, its quantized held-out figures with 95 % intervals, compile it (PBS
    count); with `measure`, keygen and `runs` in-process FHE runs on held-out applicants (half high risk), each
    decision checked against the quantized model's."""
    import os
    import time

    import numpy as np

    from credit_model.training.evaluation import classification_figures
    from credit_model.training.selection import bootstrap_intervals

    trees, depth, bits = point
    _, _, x_test, y_test, _, slices = _DATA
    model = _fit(trees, depth, bits)
    p = model.predict_proba(x_test)
    pred = (p[:, 1] > p[:, 0]).astype(int)
    out: dict[str, Any] = {"trees": trees, "depth": depth, "bits": bits, "learning_rate": SWEEP_RATE[trees],
                           "figures": classification_figures(y_test, pred, p[:, 1]),
                           "ci95": bootstrap_intervals(y_test, pred, p[:, 1])}
    if not compile_it:
        return out
    t0, c0 = time.perf_counter(), time.process_time()
    circuit = _compile(model, measure)
    out.update({"pbs": int(circuit.statistics["programmable_bootstrap_count"]),
                "compile_s": round(time.perf_counter() - t0, 1), "compile_cpu_s": round(time.process_time() - c0, 1)})
    if not measure:
        return out
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    circuit.keygen()
    m: dict[str, Any] = {"keygen_s": round(time.perf_counter() - t0, 2), "keygen_cpu_s": round(time.process_time() - c0, 2),
                         "eval_key_bytes": len(circuit.client.keys.evaluation.serialize())}
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(np.flatnonzero(y_test == 0), runs // 2, replace=False),
                           rng.choice(np.flatnonzero(y_test == 1), runs - runs // 2, replace=False)])
    walls, cpus, agree = [], [], 0
    for i in rows:
        q = model.quantize_input(x_test[i:i + 1])
        args = circuit.encrypt(*(q[:, a:b] for a, b in slices))
        t0, c0 = time.perf_counter(), time.process_time()
        result = circuit.run(*args)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        fhe_p = np.asarray(model.post_processing(model.dequantize_output(circuit.decrypt(result)))).reshape(-1, 2)
        agree += int((fhe_p[0, 1] > fhe_p[0, 0]) == (p[i, 1] > p[i, 0]))
    m.update({"first_s": round(walls[0], 2), "first_cpu_s": round(cpus[0], 2),
              "warm_s": round(float(np.median(walls[1:])), 2), "warm_cpu_s": round(float(np.median(cpus[1:])), 2),
              "warm_runs": len(walls) - 1, "agreement": f"{agree}/{len(rows)}",
              "load_avg_before_after": [round(v, 2) for v in load0 + os.getloadavg()]})
    out["measured"] = m
    return out


class _Worker:
    """One spawned process holding the data (a forked child of a process that ran xgboost's OpenMP threads can
    hang); a point that does not answer within its timeout is stopped with its process, and a new one started."""

    def __init__(self):
        self.pool = None

    def run(self, point, measure: bool, runs: int = 4, timeout: float = POINT_TIMEOUT_S,
            compile_it: bool = True) -> dict[str, Any]:
        import concurrent.futures
        import multiprocessing

        if self.pool is None:
            self.pool = concurrent.futures.ProcessPoolExecutor(1, multiprocessing.get_context("spawn"),
                                                               initializer=_init_worker)
        future = self.pool.submit(_point, point, compile_it, measure, runs)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            self.close()
            return {"error": f"stopped after {timeout:.0f} s"}
        except Exception as exc:  # pylint: disable=broad-except
            self.close()
            return {"error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        if self.pool is not None:
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.kill()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def sweep_points(measure: bool = False, log=print) -> list[dict[str, Any]]:
    """Every sweep point: quantized held-out figures (the circuit's arithmetic in the clear) with 95 % intervals,
    compiled PBS; with `measure`, real-FHE keygen, key bytes, first and warm runs for the MEASURE points, the
    cheapest point and the cheapest reaching held-out AUC 0.70 (if one does)."""
    import os

    points = [COMMITTED] + [(t, d, b) for t in SWEEP_TREES for d in SWEEP_DEPTHS for b in SWEEP_BITS]
    worker, results = _Worker(), []
    try:
        for point in points:
            r = worker.run(point, False)
            if "error" in r:  # the clear part alone, so that the row still has its figures
                r = dict(worker.run(point, False, compile_it=False), error=f"compile {r['error']}")
            r.setdefault("trees", point[0])
            r.setdefault("depth", point[1])
            r.setdefault("bits", point[2])
            r.setdefault("learning_rate", SWEEP_RATE[point[0]])
            f = r.get("figures", {})
            log(f"  {point}: AUC {f.get('auc')}, balanced {f.get('balanced_accuracy')}, PBS {r.get('pbs', r.get('error'))}"
                f", compile {r.get('compile_s')} s (load {os.getloadavg()[0]:.1f})")
            results.append(r)
        if measure:
            compiled = [r for r in results if "pbs" in r]
            reach = sorted((r for r in compiled if r["figures"]["auc"] >= 0.70), key=lambda r: r["pbs"])
            cheapest = min(compiled, key=lambda r: r["pbs"])
            chosen = list(MEASURE) + [(cheapest["trees"], cheapest["depth"], cheapest["bits"])]
            chosen += [(r["trees"], r["depth"], r["bits"]) for r in reach[:1]]
            for r in results:
                point = (r["trees"], r["depth"], r["bits"])
                if point in chosen and "pbs" in r:
                    m = worker.run(point, True)
                    r["measured"] = m.get("measured", {"error": m.get("error")})
                    log(f"  measured {point}: {r['measured']}")
    finally:
        worker.close()
    return results


def remeasure(path: str, extra=(), log=print) -> list[dict[str, Any]]:
    """Measure again, in real FHE, the measured points of a sweep already run (and `extra` points of it), e.g. when
    the machine is quieter; the earlier measurement is kept as `measured_earlier`. Rewrites the file."""
    import json

    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    worker = _Worker()
    try:
        for r in results:
            point = (r["trees"], r["depth"], r["bits"])
            if "pbs" in r and ("measured" in r or point in extra):
                m = worker.run(point, True)
                if "measured" in r:
                    r["measured_earlier"] = r["measured"]
                r["measured"] = m.get("measured", {"error": m.get("error")})
                log(f"  measured {point}: {r['measured']}")
    finally:
        worker.close()
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return results


def calibration(results: list[dict[str, Any]]) -> dict[int, tuple[float, str]]:
    """Seconds per PBS by input width: the lowest over the measured points of that width (warm run / PBS), else
    the quiet bench --quick figure of the committed ensemble for 3 bits."""
    import numpy as np

    out: dict[int, tuple[float, str]] = {}
    if not any("warm_s" in r.get("measured", {}) for r in results if r["bits"] == 3):
        out[3] = (QUIET_3BIT_S_PER_PBS, "kaggle_xgboost bench --quick, quiet")
    for bits in sorted({r["bits"] for r in results}):
        measured = [r[key]["warm_s"] / r["pbs"] for r in results for key in ("measured", "measured_earlier")
                    if r["bits"] == bits and "warm_s" in r.get(key, {})]
        if measured:  # the lowest: larger circuits measured cheaper per PBS (more of both cores busy), so the
            # estimates are optimistic, which is the side that matters for "why not within 2 s"
            out[bits] = (float(np.min(measured)), f"the lowest of {len(measured)} measurement(s) here")
    return out


def sweep_table(results: list[dict[str, Any]]) -> str:
    per_pbs = calibration(results)
    lines = ["| trees, depth, input bits (learning rate) | held-out AUC (quantized) | balanced acc. | high-risk recall "
             "| high-risk precision | PBS | warm run | first run | eval key | keygen |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f, ci, m = r["figures"], r["ci95"], r.get("measured", {})
        name = f"{r['trees']}, {r['depth']}, {r['bits']} ({r['learning_rate']})"
        if (r["trees"], r["depth"], r["bits"]) == COMMITTED:
            name += " = `kaggle_xgboost`"
        if "pbs" not in r:
            lines.append(f"| {name} | {_fig(f['auc'], ci['auc'])} | {_fig(f['balanced_accuracy'], ci['balanced_accuracy'])} "
                         f"| {_fig(f['high_risk_recall'], ci['high_risk_recall'])} "
                         f"| {_fig(f['high_risk_precision'], ci['high_risk_precision'])} "
                         f"| not compiled: {r.get('error')} | | | | |")
            continue
        if "warm_s" in m:
            warm = f"**{m['warm_s']:.2f} s** measured (CPU {m['warm_cpu_s']:.2f} s, load {m['load_avg_before_after'][0]:.1f})"
            e = r.get("measured_earlier", {})
            if "warm_s" in e:
                warm += f"; earlier {e['warm_s']:.2f} s (CPU {e['warm_cpu_s']:.2f} s, load {e['load_avg_before_after'][0]:.1f})"
            first = f"{m['first_s']:.2f} s (CPU {m['first_cpu_s']:.2f} s)"
            key, keygen = f"{m['eval_key_bytes'] / 1e6:.1f} MB", f"{m['keygen_s']:.1f} s"
        else:
            rate = per_pbs.get(r["bits"])
            narrower = [b for b in per_pbs if b < r["bits"]]
            if rate:
                warm = f"est. {r['pbs'] * rate[0]:.1f} s"
            elif narrower:  # a wider lookup costs more: the narrower width's rate gives a lower bound
                warm = f"est. > {r['pbs'] * per_pbs[max(narrower)][0]:.1f} s (at the {max(narrower)}-bit rate)"
            else:
                warm = "not estimated"
            first = key = keygen = ""
            if "error" in m:
                first = f"measure: {m['error']}"
        lines.append(f"| {name} | {_fig(f['auc'], ci['auc'])} | {_fig(f['balanced_accuracy'], ci['balanced_accuracy'])} "
                     f"| {_fig(f['high_risk_recall'], ci['high_risk_recall'])} "
                     f"| {_fig(f['high_risk_precision'], ci['high_risk_precision'])} "
                     f"| {r['pbs']} | {warm} | {first} | {key} | {keygen} |")
    lines.append("")
    lines.append("Estimated warm runs (optimistic) = PBS × the lowest seconds per PBS measured at the same input width: " + "; ".join(
        f"{bits} bits {s * 1e3:.1f} ms ({how})" for bits, (s, how) in sorted(per_pbs.items())) + ".")
    return "\n".join(lines)


# The tree family's hyper-parameters by the same grouped 5-fold CV as xgboost and logistic (training file only), the
# committed kaggle preset (depth 3, min_samples_leaf 100, weight 50) among them; 4-bit inputs as committed.
TREE_SPACE = {"max_depth": [2, 3, 4, 5], "min_samples_leaf": [20, 100, 300], "high_risk_weight": [30.0, 50.0, 58.0]}


def tree_cv(log=print) -> str:
    """Every tree candidate's grouped-CV AUC / balanced accuracy (best first, the families' rule: AUC + balanced);
    then the held-out figures of the CV winner and of the committed preset, reported, not used to choose."""
    from credit_model.schema import PARTIES
    from credit_model.training.families import concrete_model
    from credit_model.training.selection import applicant_groups, grid, grouped_cv
    from credit_model.training.train import PRESETS, party_data
    from credit_model.training.train_family import held_out

    config = PRESETS["kaggle"]
    d = party_data(config)
    names = [f.name for p in PARTIES for f in d.schema.features[p]]
    groups = applicant_groups(d.train, names)
    width = d.x_train.shape[1]

    def make(params):
        return concrete_model("tree", params, config.n_bits, d.years_column, width, True, config.seed)

    ranked = grouped_cv(make, grid(TREE_SPACE), d.x_train, d.y_train, groups, seed=config.seed, log=log)
    committed = {"max_depth": config.max_depth, "min_samples_leaf": config.min_samples_leaf,
                 "high_risk_weight": config.high_risk_weight}
    lines = [f"grouped 5-fold CV, {len(d.train)} training rows, {groups.max() + 1} applicants, {config.n_bits}-bit "
             "inputs, monotone in years; best first (CV AUC + CV balanced accuracy)", "",
             "| rank | max_depth | min_samples_leaf | high-risk weight | CV AUC (± std over folds) | CV balanced acc. |",
             "|---|---|---|---|---|---|"]
    for i, r in enumerate(ranked, 1):
        p = r["params"]
        mark = " (committed)" if p == committed else ""
        lines.append(f"| {i}{mark} | {p['max_depth']} | {p['min_samples_leaf']} | {p['high_risk_weight']} "
                     f"| {r['cv_auc']} ± {r['cv_auc_std']} | {r['cv_balanced_accuracy']} |")
    lines.append("")
    for label, params in (("CV winner", ranked[0]["params"]), ("committed", committed)):
        model = make(params).fit(d.x_train, d.y_train)
        h = held_out(d.y_test, model.predict_proba(d.x_test), config.seed)
        lines.append(f"held out, {label} {params}: AUC {_fig(h['auc'], h['ci95']['auc'])}, balanced "
                     f"{_fig(h['balanced_accuracy'], h['ci95']['balanced_accuracy'])}, high-risk recall "
                     f"{_fig(h['high_risk_recall'], h['ci95']['high_risk_recall'])}, precision "
                     f"{_fig(h['high_risk_precision'], h['ci95']['high_risk_precision'])}")
    return "\n".join(lines)


LOOKUP_CHOICES = (5, 6, 7)  # the logistic circuit's rounded-score bits (families.LOOKUP_BITS; committed: 7)


def logistic_lookup(measure: bool, log=print) -> str:
    """The committed logistic regression (its preset's C and weight) with its score rounded to each of
    LOOKUP_CHOICES bits: grouped 5-fold CV of the rounded circuit's own decisions on the training file (what would
    choose), held-out figures (reported only) and, with `measure`, the circuit's PBS, key bytes, keygen, first and
    warm in-process runs (4 held-out applicants; each rounded score checked equal to the clear one)."""
    import os
    import time

    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    from credit_model.schema import PARTIES
    from credit_model.training import families
    from credit_model.training.evaluation import classification_figures
    from credit_model.training.fhe_model import compile_multi_input
    from credit_model.training.selection import applicant_groups
    from credit_model.training.train import PRESETS, party_data

    committed = load_deployment(DEPLOYMENTS_DIR / "kaggle_logistic").manifest["model"]["params"]
    d = party_data(PRESETS["kaggle_logistic"])
    width, n_bits = d.x_train.shape[1], PRESETS["kaggle_logistic"].n_bits
    names = [f.name for p in PARTIES for f in d.schema.features[p]]
    groups = applicant_groups(d.train, names)
    splits = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(d.x_train, d.y_train, groups))

    def fit(x, y):
        model = families.concrete_model("logistic", committed, n_bits, d.years_column, width, True, 0).fit(x, y)
        circuit, inputset = families.prepare_for_circuit(model, "logistic", width, model.quantize_input(x))
        return model, circuit, inputset

    lines = [f"logistic regression {committed}, {n_bits}-bit inputs and weights; grouped 5-fold CV on the training "
             "file of the rounded circuit's decisions; held out reported only", "",
             "| lookup bits | grouped-CV AUC | grouped-CV balanced | held-out AUC | held-out balanced | PBS | eval key "
             "| keygen | first run | warm run | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    saved = families.LOOKUP_BITS
    try:
        for bits in LOOKUP_CHOICES:
            families.LOOKUP_BITS = bits
            aucs, balanced = [], []
            for tr, va in splits:
                model, _, _ = fit(d.x_train[tr], d.y_train[tr])
                p = families.clear_probabilities(model, "logistic", d.x_train[va])
                aucs.append(roc_auc_score(d.y_train[va], p[:, 1]))
                balanced.append(balanced_accuracy_score(d.y_train[va], (p[:, 1] > p[:, 0]).astype(int)))
            model, circuit_fn, inputset = fit(d.x_train, d.y_train)
            p = families.clear_probabilities(model, "logistic", d.x_test)
            h = classification_figures(d.y_test, (p[:, 1] > p[:, 0]).astype(int), p[:, 1])
            cells = [f"{np.mean(aucs):.4f} ± {np.std(aucs):.4f}", f"{np.mean(balanced):.4f} ± {np.std(balanced):.4f}",
                     str(h["auc"]), str(h["balanced_accuracy"])]
            if measure:
                slices = [d.slices[p] for p in PARTIES]
                circuit = compile_multi_input(model, inputset, slices, circuit_fn)
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                circuit.keygen()
                keygen = time.perf_counter() - t0
                walls, exact = [], 0
                for i in range(4):
                    q = model.quantize_input(d.x_test[i:i + 1])
                    args = circuit.encrypt(*(q[:, a:b] for a, b in slices))
                    t0 = time.perf_counter()
                    result = circuit.run(*args)
                    walls.append(time.perf_counter() - t0)
                    exact += int(np.array_equal(np.asarray(circuit.decrypt(result)).ravel(),
                                                model.logistic_circuit_.clear(q).ravel()))
                cells += [str(circuit.statistics["programmable_bootstrap_count"]),
                          f"{len(circuit.client.keys.evaluation.serialize()) / 1e6:.1f} MB", f"{keygen:.1f} s",
                          f"{walls[0]:.2f} s", f"{np.median(walls[1:]):.2f} s (exact {exact}/4)",
                          f"{load0:.1f} → {os.getloadavg()[0]:.1f}"]
            else:
                cells += [""] * 6
            line = f"| {bits}{' (committed)' if bits == saved else ''} | " + " | ".join(cells) + " |"
            log(line)
            lines.append(line)
    finally:
        families.LOOKUP_BITS = saved
    return "\n".join(lines)


def main(names=FRONTIER, with_sweep: bool = False, measure: bool = False, json_path: str | None = None) -> None:
    rows = [row(n) for n in names]
    print(table(rows))
    print()
    print(best_default(rows))
    if with_sweep:
        import json

        if json_path and measure is None:  # --from-json: the table of a sweep already run
            with open(json_path, encoding="utf-8") as f:
                print()
                print(sweep_table(json.load(f)))
            return
        results = sweep_points(measure, log=lambda m: print(m, file=sys.stderr, flush=True))
        if json_path:
            with open(json_path, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
        print()
        print(sweep_table(results))


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--remeasure" in argv:  # --remeasure FILE [T,D,B ...]: the measured points again, and these
        at = argv.index("--remeasure")
        more = tuple(tuple(int(v) for v in a.split(",")) for a in argv[at + 2:])
        print(sweep_table(remeasure(argv[at + 1], more, log=lambda m: print(m, file=sys.stderr, flush=True))))
        sys.exit(0)
    if "--logistic-lookup" in argv:
        print(logistic_lookup("--measure" in argv, log=lambda m: print(m, file=sys.stderr, flush=True)))
        sys.exit(0)
    if "--tree-cv" in argv:
        print(tree_cv(log=lambda m: print(m, file=sys.stderr, flush=True)))
        sys.exit(0)
    flag = "--from-json" if "--from-json" in argv else "--json"
    path = argv[argv.index(flag) + 1] if flag in argv else None
    args = [a for a in argv if a not in ("--sweep", "--measure", "--json", "--from-json", path)]
    main(tuple(args) or FRONTIER, "--sweep" in argv or "--measure" in argv or flag == "--from-json",
         None if flag == "--from-json" else "--measure" in argv, path)
