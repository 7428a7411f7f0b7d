"""Train the monotone decision tree, compile the three-input circuit, measure it, write deployment files."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier as FloatTree

from .deployment import ARTIFACTS, MANIFEST, write_manifest, write_warmup_inputs
from .explainability import is_approved
from .generator import LABEL, generate_applicants
from .preprocessing import PartyPreprocessor
from .real_data import load_real_data
from .schema import PARTIES, YEARS_EMPLOYED_BINS


@dataclass(frozen=True)
class TrainingConfig:
    """What `run_scenario.py train` can set."""

    samples: int = 8000
    max_depth: int = 4
    n_bits: int = 3
    seed: int = 0
    min_samples_leaf: int = 20
    test_size: float = 0.25
    fhe_check_samples: int = 50
    application_csv: str | None = None
    credit_csv: str | None = None


def load_training_frame(config: TrainingConfig) -> pd.DataFrame:
    if config.application_csv or config.credit_csv:
        if not (config.application_csv and config.credit_csv):
            raise ValueError("real data needs both application_record.csv and credit_record.csv")
        return load_real_data(Path(config.application_csv), Path(config.credit_csv))
    return generate_applicants(config.samples, config.seed)


def _party_matrix(preprocessors: dict[str, PartyPreprocessor], df: pd.DataFrame) -> np.ndarray:
    return np.hstack([preprocessors[p].transform_frame(df) for p in PARTIES])


def train_and_deploy(output_dir: Path, config: TrainingConfig,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole pipeline; replace output_dir's artifacts only once everything succeeded."""
    from concrete.ml.deployment import FHEModelServer
    from concrete.ml.sklearn import DecisionTreeClassifier as ConcreteTree

    from .fhe_model import MultiInputFHEModelClient, MultiInputFHEModelDev, compile_multi_input

    df = load_training_frame(config)
    train, test = train_test_split(df, test_size=config.test_size, random_state=config.seed,
                                   stratify=df[LABEL])
    preprocessors = {p: PartyPreprocessor(p).fit(train) for p in PARTIES}
    x_train, x_test = _party_matrix(preprocessors, train), _party_matrix(preprocessors, test)
    y_train, y_test = train[LABEL].to_numpy(int), test[LABEL].to_numpy(int)

    widths = [len(preprocessors[p].output_columns) for p in PARTIES]
    bounds = np.cumsum([0] + widths)
    slices = {p: (int(bounds[i]), int(bounds[i + 1])) for i, p in enumerate(PARTIES)}
    years_column = slices["agency"][0] + preprocessors["agency"].output_columns.index("Years_employed")
    monotonic = [0] * x_train.shape[1]
    monotonic[years_column] = 1
    params = dict(max_depth=config.max_depth, min_samples_leaf=config.min_samples_leaf,
                  random_state=config.seed, monotonic_cst=monotonic)

    log(f"training on {len(train)} rows, testing on {len(test)} ({'real' if config.credit_csv else 'synthetic'} data)")
    float_tree = FloatTree(**params).fit(x_train, y_train)
    model = ConcreteTree(n_bits=config.n_bits, **params).fit(x_train, y_train)
    metrics: dict[str, Any] = {
        "accuracy_float": float((float_tree.predict(x_test) == y_test).mean()),
        "accuracy_quantized": float((model.predict(x_test) == y_test).mean()),
        "approval_rate": float(df[LABEL].mean()),
        "test_rows": int(len(test)),
        "node_count": int(model.sklearn_model.tree_.node_count),
    }
    log(f"accuracy float {metrics['accuracy_float']:.4f}, quantized {metrics['accuracy_quantized']:.4f}")

    t0 = time.perf_counter()
    q_train = model.quantize_input(x_train)
    circuit = compile_multi_input(model, q_train, [slices[p] for p in PARTIES])
    metrics["compile_s"] = round(time.perf_counter() - t0, 3)
    metrics["programmable_bootstraps"] = int(circuit.statistics.get("programmable_bootstrap_count", -1))
    log(f"compiled in {metrics['compile_s']} s, {metrics['programmable_bootstraps']} PBS")

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent) as tmp:
        staging = Path(tmp) / "deploy"
        MultiInputFHEModelDev(str(staging), model, circuit).save()
        circuit.simulator.save(staging / "server_simulate.zip", via_mlir=True)
        for party, pre in preprocessors.items():
            pre.save(staging / f"preprocessor_{party}.json")
        write_warmup_inputs(staging)
        fhe_facts = measure_fhe(staging, slices, preprocessors, test, model,
                                config.fhe_check_samples, MultiInputFHEModelClient, FHEModelServer)
        metrics["accuracy_fhe"] = fhe_facts.pop("accuracy_fhe")
        metrics["accuracy_quantized_fhe_rows"] = fhe_facts.pop("accuracy_quantized_same_rows")
        metrics["fhe_rows"] = fhe_facts["fhe_checked"]
        log(f"FHE check: {fhe_facts['fhe_agreement']} agree, run {fhe_facts['run_s_median']} s")
        content = {
            "parties": {p: {"slice": list(slices[p]), "columns": preprocessors[p].output_columns}
                        for p in PARTIES},
            "years_employed_bins": list(YEARS_EMPLOYED_BINS),
            "years_employed_column": years_column,
            "monotonic_cst": {"Years_employed": 1},
            "decision_threshold": 0.5,
            "training": {**asdict(config), "data": "real" if config.credit_csv else "synthetic"},
            "metrics": metrics,
            "fhe": fhe_facts,
        }
        manifest = write_manifest(staging, content)
        output_dir.mkdir(exist_ok=True)
        for name in ARTIFACTS + (MANIFEST,):
            os.replace(staging / name, output_dir / name)
    return manifest


def measure_fhe(directory: Path, slices, preprocessors, test: pd.DataFrame, model, samples: int,
                client_cls, server_cls) -> dict[str, Any]:
    """Keygen, sizes and run times with real encryption, through the saved artifacts, on held-out rows."""
    from concrete import fhe

    client = client_cls(str(directory), slices)
    t0 = time.perf_counter()
    client.generate_private_and_evaluation_keys()
    keygen_s = time.perf_counter() - t0
    eval_key = client.get_serialized_evaluation_keys()
    server = server_cls(str(directory))
    keys = fhe.EvaluationKeys.deserialize(eval_key)
    rows = test.head(samples)
    clear = model.predict(_party_matrix(preprocessors, rows))
    sizes: dict[str, int] = {}
    runs, predictions, output_bytes = [], [], 0
    for i in range(len(rows)):
        row = rows.iloc[i:i + 1]
        blobs = []
        for party in PARTIES:
            blob = client.quantize_encrypt_serialize_party(party, preprocessors[party].transform_frame(row))
            sizes[party] = len(blob)
            blobs.append(blob)
        t0 = time.perf_counter()
        output = server.run(tuple(blobs), keys)
        runs.append(time.perf_counter() - t0)
        output_bytes = len(output)
        predictions.append(int(is_approved(client.decrypt_probabilities(output)[0])))
    predictions = np.asarray(predictions)
    return {
        "keygen_s": round(keygen_s, 3),
        "eval_key_bytes": len(eval_key),
        "ciphertext_bytes": sizes,
        "output_bytes": output_bytes,
        "run_s_first": round(runs[0], 3),
        "run_s_median": round(float(np.median(runs[1:] or runs)), 3),
        "fhe_checked": len(rows),
        "fhe_agreement": f"{int((predictions == clear).sum())}/{len(rows)}",
        "accuracy_fhe": float((predictions == rows[LABEL].to_numpy(int)).mean()),
        "accuracy_quantized_same_rows": float((clear == rows[LABEL].to_numpy(int)).mean()),
    }
