"""Train an xgboost or logistic deployment: grouped-CV search, held-out figures with bootstrap intervals, the circuit."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from credit_model.deployment import ARTIFACTS, MANIFEST, write_manifest
from credit_model.schema import EMPLOYED_FEATURE, PARTIES, YEARS_FEATURE, Schema
from credit_model.training import reference_model
from credit_model.training.evaluation import classification_figures, novel_rows
from credit_model.training.families import (
    MODEL_CLASSES, SEARCH_SPACES, clear_probabilities, concrete_model, is_monotone_in, prepare_for_circuit)
from credit_model.training.selection import applicant_groups, bootstrap_intervals, grid, grouped_cv
from credit_model.training.train import (
    TrainingConfig, baseline_figures, fhe_rows, measure_fhe, party_data, stage_circuit)

FAMILY_PARAMS = {"xgboost": ("n_estimators", "max_depth", "learning_rate", "high_risk_weight"),
                 "logistic": ("C", "high_risk_weight")}


class ClearCircuit:
    """The compiled circuit's own decisions in the clear (for logistic regression: the rounded score)."""

    def __init__(self, model, family: str):
        self.model, self.family = model, family

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return clear_probabilities(self.model, self.family, x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        p = self.predict_proba(x)
        return (p[:, 1] > p[:, 0]).astype(int)  # the one decision rule: argmax, a tie is denied


def configured_params(config: TrainingConfig) -> dict[str, Any]:
    values = {"n_estimators": config.n_estimators, "max_depth": config.max_depth,
              "learning_rate": config.learning_rate, "C": config.C, "high_risk_weight": config.high_risk_weight}
    return {k: values[k] for k in FAMILY_PARAMS[config.model] if values[k] is not None}


def held_out(y: np.ndarray, p: np.ndarray, seed: int) -> dict[str, Any]:
    pred = (p[:, 1] > p[:, 0]).astype(int)
    figures = classification_figures(y, pred, p[:, 1])
    figures["ci95"] = bootstrap_intervals(y, pred, p[:, 1], seed=seed)
    return figures


def explanation_facts(train: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Whether the explanation may propose only "employed, with at least X years" to an applicant who is not
    employed: when the training data holds no non-employed applicant above the first bin (kaggle: all 4,908
    non-employed rows are in 0-2), a higher bin without employment is a combination the model never saw."""
    if EMPLOYED_FEATURE not in train.columns:
        return {"not_employed_candidates_are_employed": False}
    above = train.loc[~train[EMPLOYED_FEATURE].astype(bool), YEARS_FEATURE] != schema.bins[0]
    return {"not_employed_candidates_are_employed": bool(not above.any()),
            "not_employed_training_rows": int((~train[EMPLOYED_FEATURE].astype(bool)).sum()),
            "not_employed_above_first_bin": int(above.sum())}


def train_family_and_deploy(output_dir: Path, config: TrainingConfig, log: Callable[[str], None] = print,
                            frames: tuple[pd.DataFrame, pd.DataFrame, Schema] | None = None) -> dict[str, Any]:
    """As train.train_and_deploy, for config.model in xgboost | logistic."""
    from concrete.ml.deployment import FHEModelServer

    from credit_model.training.fhe_model import MultiInputFHEModelClient, compile_multi_input

    family = config.model
    if family not in FAMILY_PARAMS:
        raise ValueError(f"unknown model family {family!r} (tree, {', '.join(FAMILY_PARAMS)})")
    d = party_data(config, frames)
    train, test, schema, test_rows, preprocessors = d.train, d.test, d.schema, d.test_rows, d.preprocessors
    x_train, x_test, y_train, y_test = d.x_train, d.x_test, d.y_train, d.y_test
    slices, columns, years_column = d.slices, d.columns, d.years_column
    width = x_train.shape[1]

    def make(params):
        return concrete_model(family, params, config.n_bits, years_column, width, config.monotone_years, config.seed)

    names = [f.name for p in PARTIES for f in schema.features[p]]
    metrics: dict[str, Any] = {"test_rows": test_rows, "family": family}
    params = configured_params(config)
    if config.search:
        groups = applicant_groups(train, names)
        log(f"grouped 5-fold CV on the training file: {len(train)} rows, {groups.max() + 1} distinct applicants")
        space = SEARCH_SPACES[family]
        candidates = [dict(params, **c) for c in (grid(space) if isinstance(space, dict) else space)]
        ranked = grouped_cv(make, candidates, x_train, y_train, groups, seed=config.seed, log=log)
        params = ranked[0]["params"]
        metrics["search"] = {"folds": 5, "grouped_by": "applicant (equal in every feature)",
                             "distinct_applicants": int(groups.max() + 1), "rule": "max CV AUC + CV balanced accuracy",
                             "chosen": params, "candidates": ranked}
    log(f"training {family} {params} on {len(train)} rows, testing on {len(test)}: {test_rows}")
    model = make(params).fit(x_train, y_train)
    metrics["params"] = params
    metrics["monotone_in_years"] = is_monotone_in(model, family, years_column, config.monotone_years)
    inference, inputset = prepare_for_circuit(model, family, width, model.quantize_input(x_train))
    clear = ClearCircuit(model, family)
    p_test = clear.predict_proba(x_test)
    metrics["quantized"] = held_out(y_test, p_test, config.seed)
    metrics["baseline_logistic_regression"] = baseline_figures(x_train, y_train, x_test, y_test)
    metrics["approval_rate_train"] = round(float(y_train.mean()), 4)
    if config.data == "kaggle":
        novel = novel_rows(train[names].itertuples(index=False, name=None),
                           list(test[names].itertuples(index=False, name=None)))
        metrics["quantized_novel_test_rows"] = classification_figures(
            y_test[novel], clear.predict(x_test[novel]), p_test[novel, 1])
    q = metrics["quantized"]
    log(f"held out: AUC {q['auc']} {q['ci95']['auc']}, balanced {q['balanced_accuracy']} "
        f"{q['ci95']['balanced_accuracy']}, monotone in years: {metrics['monotone_in_years']}")

    t0 = time.perf_counter()
    circuit = compile_multi_input(model, inputset, [slices[p] for p in PARTIES], inference)
    timings: dict[str, Any] = {"compile_s": round(time.perf_counter() - t0, 3)}
    metrics["programmable_bootstraps"] = int(circuit.statistics.get("programmable_bootstrap_count", -1))
    log(f"compiled in {timings['compile_s']} s, {metrics['programmable_bootstraps']} PBS")
    gates = json.loads(circuit.client.specs.program_info.serialize())["circuits"][0]
    keys = {kind: {g["typeInfo"]["lweCiphertext"]["encryption"]["keyId"] for g in gates[kind]}
            for kind in ("inputs", "outputs")}
    if keys["inputs"] & keys["outputs"]:
        raise RuntimeError(f"the output is under an input key {sorted(keys['inputs'])}: bank and agency could read it")

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent) as tmp:
        staging = Path(tmp) / "deploy"
        stage_circuit(staging, model, circuit, preprocessors)
        reference = reference_model.write(staging, model, family, columns)
        fhe_facts = measure_fhe(staging, slices, preprocessors, fhe_rows(test, config), clear,
                                MultiInputFHEModelClient, FHEModelServer, log)
        timings.update(fhe_facts.pop("timings"))
        content = {
            "name": output_dir.name,
            "data": config.data,
            "model": {"family": family, "class": MODEL_CLASSES[family], "params": params,
                      "reference": reference.name},
            "schema": schema.to_dict(),
            "parties": {p: {"slice": list(slices[p]), "columns": preprocessors[p].output_columns}
                        for p in PARTIES},
            "years_employed_bins": list(schema.bins),
            "years_employed_column": years_column,
            "monotonic_cst": {YEARS_FEATURE: 1} if metrics["monotone_in_years"] else {},
            "explanation": explanation_facts(train, schema),
            "decision_rule": ("the user decrypts the rounded score s and approves when sigmoid(s) = p(approved) > 0.5"
                              if family == "logistic" else
                              "argmax: approved when p(approved) = sigmoid(sum of the trees) > 0.5; a tie is denied"),
            "training": {k: v for k, v in asdict(config).items()
                         if v is not None and not (k == "samples" and config.data != "synthetic")},
            "metrics": metrics,
            "fhe": fhe_facts,
            "timings": timings,
        }
        manifest = write_manifest(staging, content)
        output_dir.mkdir(exist_ok=True)
        for name in ARTIFACTS + (reference.name, MANIFEST):
            os.replace(staging / name, output_dir / name)
    return manifest
