"""The accuracy/cost frontier of the kaggle deployments (one per model family), as a Markdown table from their manifests.

`python -m bench.frontier` prints it; every figure comes from the committed manifest of each deployment (written by
`run_scenario.py train`), except the tree's bootstrap intervals, computed here from its quantized predictions on the
held-out file (the tree's manifest predates them), and the FHE timings: when bench/frontier_timings.json holds a
deployment (`--time [--json FILE]`, bench/deployment_timing.py: keygen and runs measured again on a quiet machine),
its timings come from there, else from the manifest (taken while training, under whatever load there was).

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


def row(name: str, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    deployment = load_deployment(DEPLOYMENTS_DIR / name)
    m = deployment.manifest
    q, fhe = m["metrics"]["quantized"], m["fhe"]
    timings = (measured or {}).get(name) or m["timings"]
    ci = q.get("ci95") or tree_intervals(deployment)
    params = m.get("model", {}).get("params") or {k: m["training"].get(k) for k in
                                                  ("max_depth", "min_samples_leaf", "high_risk_weight")}
    search = m["metrics"].get("search", {})
    return {"name": name, "family": deployment.family, "params": params, "bits": m["training"]["n_bits"],
            "monotone": deployment.is_monotone_in_years, "q": q, "ci": ci,
            "cv_auc": search.get("candidates", [{}])[0].get("cv_auc") if search else None,
            "pbs": m["metrics"]["programmable_bootstraps"], "eval_key": fhe["eval_key_bytes"],
            "warm": timings["run_s_median"], "first": timings["run_s_first"], "keygen": timings["keygen_s"],
            "timed": "measured again" if timings is not m["timings"] else "manifest"}


def _fig(value: float, interval: list[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| deployment | model | monotone | held-out AUC | balanced acc. | high-risk recall | high-risk precision "
             "| grouped-CV AUC | PBS | eval key | warm run | first run | keygen | timings from | explanation (≤ runs) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
            f"| {r['warm']:.2f} s | {r['first']:.2f} s | {r['keygen']:.1f} s | {r['timed']} | {runs} × warm run |")
    return "\n".join(lines)


def best_default(rows: list[dict[str, Any]]) -> str:
    """The issue's rule: the best (AUC + balanced accuracy) monotone point whose warm run is within 2 s."""
    fit = [r for r in rows if r["monotone"] and r["warm"] <= WARM_RUN_TARGET_S]
    best = max(fit, key=lambda r: r["q"]["auc"] + r["q"]["balanced_accuracy"])
    target = best["q"]["auc"] >= 0.70 and best["q"]["balanced_accuracy"] >= 0.62
    return (f"best monotone point within {WARM_RUN_TARGET_S} s: `{best['name']}` (AUC {best['q']['auc']}, balanced "
            f"{best['q']['balanced_accuracy']}); target AUC ≥ 0.70 and balanced ≥ 0.62 {'met' if target else 'NOT met'}")


def main(names=FRONTIER, with_sweep: bool = False, measure: bool = False, json_path: str | None = None) -> None:
    from bench.deployment_timing import measured_timings
    from bench.sweep import sweep_points, sweep_table
    measured = measured_timings()
    rows = [row(n, measured) for n in names]
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
    from bench.family_search import logistic_lookup, tree_cv
    from bench.sweep import remeasure, sweep_table

    argv = sys.argv[1:]
    if "--remeasure" in argv:  # --remeasure FILE [T,D,B ...]: the measured points again, and these
        at = argv.index("--remeasure")
        more = tuple(tuple(int(v) for v in a.split(",")) for a in argv[at + 2:])
        print(sweep_table(remeasure(argv[at + 1], more, log=lambda m: print(m, file=sys.stderr, flush=True))))
        sys.exit(0)
    if "--logistic-lookup" in argv:
        print(logistic_lookup("--measure" in argv, log=lambda m: print(m, file=sys.stderr, flush=True)))
        sys.exit(0)
    if "--time" in argv:  # --time [--json FILE]: each frontier deployment's keygen and runs measured again
        from bench.deployment_timing import measure_all
        out = argv[argv.index("--json") + 1] if "--json" in argv else None
        measure_all(FRONTIER, json_path=out, log=lambda m: print(m, file=sys.stderr, flush=True))
        sys.exit(0)
    if "--tree-cv" in argv:
        print(tree_cv(log=lambda m: print(m, file=sys.stderr, flush=True)))
        sys.exit(0)
    flag = "--from-json" if "--from-json" in argv else "--json"
    path = argv[argv.index(flag) + 1] if flag in argv else None
    args = [a for a in argv if a not in ("--sweep", "--measure", "--json", "--from-json", path)]
    main(tuple(args) or FRONTIER, "--sweep" in argv or "--measure" in argv or flag == "--from-json",
         None if flag == "--from-json" else "--measure" in argv, path)
