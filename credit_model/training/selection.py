"""Hyper-parameters chosen by cross-validation grouped by applicant (training file only); bootstrap intervals."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from credit_model.training.evaluation import classification_figures


def applicant_groups(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One group id per row: rows equal in every given column are the same applicant (the Kaggle training file
    repeats 2,863 applicants under other IDs); a fold never splits an applicant between training and validation."""
    keys = frame[list(columns)].astype(str).agg("\x1f".join, axis=1)
    return pd.factorize(keys)[0]


def grid(space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a parameter space, in a stable order."""
    names = list(space)
    return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]


def grouped_cv(make: Callable[[dict[str, Any]], Any], candidates: Iterable[dict[str, Any]], x: np.ndarray,
               y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Mean out-of-fold AUC and balanced accuracy of each candidate (StratifiedGroupKFold); best first.

    `make(params)` returns an unfitted estimator with `fit` and `predict_proba` (Concrete ML's models predict in
    the clear, quantized: the figures are those of the circuit that would be compiled)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups))
    results = []
    for params in candidates:
        aucs, balanced = [], []
        for train_idx, valid_idx in splits:
            model = make(params).fit(x[train_idx], y[train_idx])
            p = np.asarray(model.predict_proba(x[valid_idx]))[:, 1]
            aucs.append(roc_auc_score(y[valid_idx], p))
            balanced.append(balanced_accuracy_score(y[valid_idx], (p > 0.5).astype(int)))
        result = {"params": params, "cv_auc": round(float(np.mean(aucs)), 4),
                  "cv_auc_std": round(float(np.std(aucs)), 4), "cv_balanced_accuracy": round(float(np.mean(balanced)), 4)}
        log(f"  {params}: CV AUC {result['cv_auc']} ± {result['cv_auc_std']}, balanced {result['cv_balanced_accuracy']}")
        results.append(result)
    # the selection rule: AUC and balanced accuracy weigh alike (the decision, not only the ranking, is deployed)
    return sorted(results, key=lambda r: -(r["cv_auc"] + r["cv_balanced_accuracy"]))


def bootstrap_intervals(y: np.ndarray, pred: np.ndarray, p_approved: np.ndarray, rounds: int = 1000,
                        seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile intervals of the held-out figures over `rounds` resamples of the applicants."""
    rng = np.random.default_rng(seed)
    names = ("auc", "balanced_accuracy", "high_risk_recall", "high_risk_precision")
    samples: dict[str, list[float]] = {n: [] for n in names}
    y, pred, p_approved = (np.asarray(a) for a in (y, pred, p_approved))
    for _ in range(rounds):
        take = rng.integers(0, len(y), len(y))
        if len(set(y[take])) < 2:
            continue
        figures = classification_figures(y[take], pred[take], p_approved[take])
        for n in names:
            samples[n].append(figures[n])
    return {n: [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)]
            for n, v in samples.items()}
