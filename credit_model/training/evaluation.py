"""Figures of a trained model on held-out applicants: accuracy, balanced accuracy, AUC, high-risk recall/precision."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np


def _round(value: float) -> float:
    return round(float(value), 4)


def classification_figures(approved_true: Sequence[int], approved_pred: Sequence[int],
                           p_approved: Sequence[float] | None = None) -> dict[str, Any]:
    """Figures with "high risk" (label 0, denied) as the positive class of recall and precision.

    AUC ranks applicants by p(approved); it is left out when only one class is present or no scores are given.
    """
    from sklearn.metrics import balanced_accuracy_score, precision_score, recall_score, roc_auc_score

    y = np.asarray(approved_true, dtype=int)
    pred = np.asarray(approved_pred, dtype=int)
    if y.shape != pred.shape or y.size == 0:
        raise ValueError("classification_figures needs as many predictions as labels, at least one")
    figures: dict[str, Any] = {
        "rows": int(y.size),
        "high_risk_rows": int((y == 0).sum()),
        "accuracy": _round((pred == y).mean()),
        "balanced_accuracy": _round(balanced_accuracy_score(y, pred)) if len(set(y)) > 1 else None,
        "high_risk_recall": _round(recall_score(y, pred, pos_label=0, zero_division=0)),
        "high_risk_precision": _round(precision_score(y, pred, pos_label=0, zero_division=0)),
        "denial_rate": _round((pred == 0).mean()),
        "auc": None,
    }
    if p_approved is not None and len(set(y)) > 1:
        figures["auc"] = _round(roc_auc_score(y, np.asarray(p_approved, dtype=float)))
    return figures


def columns_read(tree, columns: Sequence[str]) -> list[str]:
    """The encoded columns a fitted scikit-learn tree splits on, in column order."""
    used = sorted({int(i) for i in tree.tree_.feature if i >= 0})
    return [columns[i] for i in used]


def raw_features_read(encoded: Iterable[str]) -> list[str]:
    """Raw feature names behind encoded columns ("Income_type=Working" -> "Income_type"), first-seen order."""
    out: list[str] = []
    for column in encoded:
        name = column.split("=", 1)[0]
        if name not in out:
            out.append(name)
    return out


def novel_rows(train_rows: Iterable[tuple], test_rows: Sequence[tuple]) -> np.ndarray:
    """Mask of the test rows whose features equal no training row (the data holds repeated applicants)."""
    seen = set(train_rows)
    return np.asarray([row not in seen for row in test_rows], dtype=bool)
