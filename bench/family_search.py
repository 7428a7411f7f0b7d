"""Grouped-CV searches beside the committed families: the tree's hyper-parameters, the logistic circuit's rounding bits."""

from __future__ import annotations

from credit_model.deployment import DEPLOYMENTS_DIR, load_deployment

from bench.frontier import _fig


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
