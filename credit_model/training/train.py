"""Train a deployment's decision tree on its data set, compile the three-input circuit, measure it, write the files.

`train_and_deploy(output_dir, PRESETS[data])` rebuilds a committed deployment; same seed, same data -> the same
tree, preprocessors, circuit files and manifest figures (only the FHE keys, the warm-up ciphertexts and the
timings differ between two builds).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm
import pandas as pd

from credit_model.training import reference_tree
from credit_model.training.data_schemas import DATA_SETS, SCHEMAS
from credit_model.deployment import ARTIFACTS, MANIFEST, write_manifest, write_warmup_inputs
from credit_model.training.evaluation import classification_figures, columns_read, novel_rows, raw_features_read
from credit_model.explainability import is_approved
from credit_model.training.generator import LABEL, generate_applicants
from credit_model.preprocessing import PartyPreprocessor
from credit_model.schema import PARTIES, YEARS_FEATURE, Schema


@dataclass(frozen=True)
class TrainingConfig:
    """What `run_scenario.py train` can set; PRESETS holds the committed deployments' settings."""

    data: str = "synthetic"
    samples: int = 8000                # synthetic only
    max_depth: int | None = 4
    n_bits: int = 3
    seed: int = 0
    min_samples_leaf: int = 20
    high_risk_weight: float = 1.0      # class weight of label 0 (denied / high risk); 1.0 = unweighted
    monotone_years: bool = True        # years employed never lowers the approval (bisect relies on it)
    test_size: float = 0.25            # synthetic and the raw CSV pair; kaggle has its own test file, demo none
    fhe_check_samples: int = 50
    application_csv: str | None = None
    credit_csv: str | None = None
    # Model family (credit_model/training/families.py); None is the tree, and the tree's manifest stays as it was.
    model: str | None = None
    n_estimators: int | None = None    # xgboost
    learning_rate: float | None = None  # xgboost
    C: float | None = None             # logistic: inverse regularisation strength
    search: bool | None = None         # choose the family's hyper-parameters by grouped CV (families.SEARCH_SPACES)


PRESETS: dict[str, TrainingConfig] = {
    # Real data, 1.7 % high risk: a shallow monotone tree with the high-risk class weighted 50x (found by a search
    # on the training file's folds, see BENCHMARKS.md); 4-bit inputs.
    "kaggle": TrainingConfig(data="kaggle", max_depth=3, n_bits=4, min_samples_leaf=100, high_risk_weight=50.0,
                             fhe_check_samples=200),
    # The reference demo: Concrete ML's DecisionTreeClassifier with its default hyper-parameters (n_bits 6, no
    # depth limit) on the demo's 56 rows; no monotone constraint (the demo has none), so bisect is refused.
    "demo": TrainingConfig(data="demo", max_depth=None, n_bits=6, min_samples_leaf=1, monotone_years=False,
                           test_size=0.0, fhe_check_samples=56),
    "synthetic": TrainingConfig(),
    # Beside the tree, on the same kaggle columns: hyper-parameters chosen by 5-fold cross-validation grouped by
    # applicant on the training file (the search is re-run by every build and recorded in the manifest).
    "kaggle_xgboost": TrainingConfig(data="kaggle", model="xgboost", n_bits=3, search=True, fhe_check_samples=20),
    "kaggle_logistic": TrainingConfig(data="kaggle", model="logistic", n_bits=6, search=True, fhe_check_samples=50),
}


def load_split(config: TrainingConfig) -> tuple[pd.DataFrame, pd.DataFrame, Schema, str]:
    """(train, test, schema, description of the test rows) for the configured data set."""
    from credit_model.training.real_data import load_demo, load_kaggle, load_real_data

    if config.application_csv or config.credit_csv:
        if not (config.application_csv and config.credit_csv):
            raise ValueError("real data needs both application_record.csv and credit_record.csv")
        df = load_real_data(Path(config.application_csv), Path(config.credit_csv))
        return *_split(df, config), SCHEMAS["kaggle"], "a stratified hold-out of the application/credit pair"
    if config.data == "kaggle":
        return load_kaggle("train"), load_kaggle("test"), SCHEMAS["kaggle"], "the Kaggle test file (held out)"
    if config.data == "demo":
        df = load_demo()
        return df, df, SCHEMAS["demo"], "the 56 training rows themselves (the demo trains on all of its table)"
    if config.data == "synthetic":
        df = generate_applicants(config.samples, config.seed)
        return *_split(df, config), SCHEMAS["synthetic"], "a stratified hold-out of the generated applicants"
    raise ValueError(f"unknown data set {config.data!r} (one of {', '.join(DATA_SETS)})")


def _split(df: pd.DataFrame, config: TrainingConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split
    train, test = train_test_split(df, test_size=config.test_size, random_state=config.seed, stratify=df[LABEL])
    return train, test


def _party_matrix(preprocessors: dict[str, PartyPreprocessor], df: pd.DataFrame) -> np.ndarray:
    return np.hstack([preprocessors[p].transform_frame(df) for p in PARTIES])


@dataclass
class PartyData:
    """The training and held-out rows as each party's preprocessed columns side by side, and where each party's
    slice and the years-employed column sit in them."""
    train: pd.DataFrame
    test: pd.DataFrame
    schema: Schema
    test_rows: str
    preprocessors: dict[str, PartyPreprocessor]
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    slices: dict[str, tuple[int, int]]
    columns: list[str]
    years_column: int


def party_data(config: TrainingConfig, frames: tuple[pd.DataFrame, pd.DataFrame, Schema] | None = None) -> PartyData:
    """The configured data set split (or the frames given), each party's preprocessor fitted on the training rows."""
    if frames is not None:
        (train, test, schema), test_rows = frames, "the test frame given"
    else:
        train, test, schema, test_rows = load_split(config)
    preprocessors = {p: PartyPreprocessor(p, schema).fit(train) for p in PARTIES}
    bounds = np.cumsum([0] + [len(preprocessors[p].output_columns) for p in PARTIES])
    slices = {p: (int(bounds[i]), int(bounds[i + 1])) for i, p in enumerate(PARTIES)}
    return PartyData(train, test, schema, test_rows, preprocessors,
                     _party_matrix(preprocessors, train), _party_matrix(preprocessors, test),
                     train[LABEL].to_numpy(int), test[LABEL].to_numpy(int), slices,
                     [c for p in PARTIES for c in preprocessors[p].output_columns],
                     slices["agency"][0] + preprocessors["agency"].output_columns.index(YEARS_FEATURE))


def tree_params(config: TrainingConfig, years_column: int, width: int) -> dict[str, Any]:
    params: dict[str, Any] = dict(max_depth=config.max_depth, min_samples_leaf=config.min_samples_leaf,
                                  random_state=config.seed)
    if config.monotone_years:
        monotonic = [0] * width
        monotonic[years_column] = 1
        params["monotonic_cst"] = monotonic
    if config.high_risk_weight != 1.0:
        params["class_weight"] = {0: config.high_risk_weight, 1: 1.0}
    return params


def fhe_rows(test: pd.DataFrame, config: TrainingConfig) -> pd.DataFrame:
    """The held-out applicants run in FHE: half high risk where the data has enough, drawn with the seed."""
    n = min(config.fhe_check_samples, len(test))
    if config.data == "demo" or n == len(test):
        return test.head(n)
    rng = np.random.default_rng(config.seed)
    risky = np.flatnonzero(test[LABEL].to_numpy() == 0)
    take_risky = rng.choice(risky, min(len(risky), n // 2), replace=False)
    rest = np.setdiff1d(np.arange(len(test)), take_risky)
    take = np.sort(np.concatenate([take_risky, rng.choice(rest, n - len(take_risky), replace=False)]))
    return test.iloc[take]


def baseline_figures(x_train, y_train, x_test, y_test) -> dict[str, Any]:
    """A clear-text baseline on the same split: logistic regression with balanced class weights."""
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(class_weight="balanced", max_iter=2000).fit(x_train, y_train)
    return classification_figures(y_test, model.predict(x_test), model.predict_proba(x_test)[:, 1])


def train_and_deploy(output_dir: Path, config: TrainingConfig, log: Callable[[str], None] = print,
                     frames: tuple[pd.DataFrame, pd.DataFrame, Schema] | None = None) -> dict[str, Any]:
    """Run the whole pipeline; replace output_dir's artifacts only once everything succeeded.

    `frames` = (train, test, schema) trains on a data set of one's own (any schema with the three parties and a
    years-employed ordinal) instead of the configured one."""
    from concrete.ml.deployment import FHEModelServer
    from concrete.ml.sklearn import DecisionTreeClassifier as ConcreteTree
    from sklearn.tree import DecisionTreeClassifier as FloatTree

    from credit_model.training.fhe_model import MultiInputFHEModelClient, compile_multi_input

    if config.model not in (None, "tree"):
        from credit_model.training.train_family import train_family_and_deploy
        return train_family_and_deploy(output_dir, config, log, frames)
    d = party_data(config, frames)
    train, test, schema, test_rows, preprocessors = d.train, d.test, d.schema, d.test_rows, d.preprocessors
    x_train, x_test, y_train, y_test = d.x_train, d.x_test, d.y_train, d.y_test
    slices, columns, years_column = d.slices, d.columns, d.years_column
    params = tree_params(config, years_column, x_train.shape[1])

    log(f"training on {len(train)} rows of {config.data} data, testing on {len(test)}: {test_rows}")
    float_tree = FloatTree(**params).fit(x_train, y_train)
    model = ConcreteTree(n_bits=config.n_bits, **params).fit(x_train, y_train)
    quantized_p = model.predict_proba(x_test)[:, 1]
    read = columns_read(model.sklearn_model, columns)
    metrics: dict[str, Any] = {
        "test_rows": test_rows,
        "float": classification_figures(y_test, float_tree.predict(x_test), float_tree.predict_proba(x_test)[:, 1]),
        "quantized": classification_figures(y_test, model.predict(x_test), quantized_p),
        "baseline_logistic_regression": baseline_figures(x_train, y_train, x_test, y_test),
        "approval_rate_train": round(float(y_train.mean()), 4),
        "node_count": int(model.sklearn_model.tree_.node_count),
        "depth": int(model.sklearn_model.get_depth()),
        "columns_read": read,
        "features_read": raw_features_read(read),
    }
    if config.data == "kaggle":
        names = [f.name for p in PARTIES for f in schema.features[p]]
        novel = novel_rows(train[names].itertuples(index=False, name=None),
                           list(test[names].itertuples(index=False, name=None)))
        metrics["quantized_novel_test_rows"] = classification_figures(
            y_test[novel], model.predict(x_test[novel]), quantized_p[novel])
    if config.data == "demo":
        metrics["cross_validation"] = cross_validated(config, params, x_train, y_train)
    q = metrics["quantized"]
    log(f"quantized tree: accuracy {q['accuracy']}, balanced {q['balanced_accuracy']}, AUC {q['auc']}; "
        f"reads {', '.join(metrics['features_read'])}")

    t0 = time.perf_counter()
    circuit = compile_multi_input(model, model.quantize_input(x_train), [slices[p] for p in PARTIES])
    timings: dict[str, Any] = {"compile_s": round(time.perf_counter() - t0, 3)}
    metrics["programmable_bootstraps"] = int(circuit.statistics.get("programmable_bootstrap_count", -1))
    log(f"compiled in {timings['compile_s']} s, {metrics['programmable_bootstraps']} PBS")

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent) as tmp:
        staging = Path(tmp) / "deploy"
        stage_circuit(staging, model, circuit, preprocessors)
        reference_tree.write(staging, model, columns)
        rows = fhe_rows(test, config)
        fhe_facts = measure_fhe(staging, slices, preprocessors, rows, model,
                                MultiInputFHEModelClient, FHEModelServer, log)
        timings.update(fhe_facts.pop("timings"))
        content = {
            "name": output_dir.name,
            "data": config.data,
            "schema": schema.to_dict(),
            "parties": {p: {"slice": list(slices[p]), "columns": preprocessors[p].output_columns}
                        for p in PARTIES},
            "years_employed_bins": list(schema.bins),
            "years_employed_column": years_column,
            "monotonic_cst": {YEARS_FEATURE: 1} if config.monotone_years else {},
            "decision_rule": "argmax: approved when p(approved) > p(denied); a tie is denied",
            **({"explanation": _explanation_facts(train, schema)} if config.data == "kaggle" else {}),
            "training": {k: v for k, v in asdict(config).items() if (v is not None or k == "max_depth")
                         and not (k == "samples" and config.data != "synthetic")},  # kaggle/demo: every row
            "metrics": metrics,
            "fhe": fhe_facts,
            "timings": timings,
        }
        manifest = write_manifest(staging, content)
        output_dir.mkdir(exist_ok=True)
        for name in ARTIFACTS + (reference_tree.REFERENCE_TREE, MANIFEST):
            os.replace(staging / name, output_dir / name)
    return manifest


def _explanation_facts(train: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    from credit_model.training.train_family import explanation_facts
    return explanation_facts(train, schema)


def cross_validated(config: TrainingConfig, params: dict, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """5-fold stratified accuracy of the same (quantized) tree: the honest figure for a 56-row table."""
    from concrete.ml.sklearn import DecisionTreeClassifier as ConcreteTree
    from sklearn.model_selection import StratifiedKFold

    scores = []
    for train_idx, test_idx in StratifiedKFold(5, shuffle=True, random_state=config.seed).split(x, y):
        model = ConcreteTree(n_bits=config.n_bits, **params).fit(x[train_idx], y[train_idx])
        scores.append(float((model.predict(x[test_idx]) == y[test_idx]).mean()))
    return {"folds": 5, "accuracy_mean": round(float(np.mean(scores)), 4),
            "accuracy_std": round(float(np.std(scores)), 4)}


def _zip_bytes(entries: list[tuple[str, bytes]], compression: int) -> bytes:
    """A zip of (name, data) entries, sorted, with a fixed timestamp and mode: same content, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as target:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = compression, 0o644 << 16
            target.writestr(info, data)
    return buffer.getvalue()


def _canonical_processing(data: bytes) -> bytes:
    """Concrete ML's serialized_processing.json holds a skops dump of the model's type: a zip (with the
    time of the build) whose schema.json carries the Python object id; both are fixed here."""
    processing = json.loads(data)
    model_type = processing.get("model_type", {})
    with zipfile.ZipFile(io.BytesIO(bytes.fromhex(model_type["serialized_value"]))) as inner:
        entries = [(i.filename, inner.read(i)) for i in inner.infolist()]
    fixed = []
    for name, content in entries:
        if name == "schema.json":
            schema = json.loads(content)
            schema["__id__"] = 0
            content = json.dumps(schema, indent=2).encode()
        fixed.append((name, content))
    model_type["serialized_value"] = _zip_bytes(fixed, zipfile.ZIP_STORED).hex()
    return json.dumps(processing).encode()


def stage_circuit(staging: Path, model, circuit, preprocessors: dict[str, PartyPreprocessor]) -> None:
    """A deployment's circuit files into `staging`, for any family: client.zip and server.zip (Concrete ML's own
    writer), the simulator's server, each written reproducibly, the parties' preprocessors and the warm-up inputs."""
    from credit_model.training.fhe_model import MultiInputFHEModelDev

    MultiInputFHEModelDev(str(staging), model, circuit).save()
    circuit.simulator.save(staging / "server_simulate.zip", via_mlir=True)
    for name in ("client.zip", "server.zip", "server_simulate.zip"):
        normalize_zip(staging / name)
    for party, pre in preprocessors.items():
        pre.save(staging / f"preprocessor_{party}.json")
    write_warmup_inputs(staging)


def normalize_zip(path: Path) -> None:
    """Rewrite a deployment zip reproducibly: sorted entries, fixed timestamps, no object ids."""
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    entries = [(n, _canonical_processing(d) if n == "serialized_processing.json" else d) for n, d in entries]
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(_zip_bytes(entries, zipfile.ZIP_DEFLATED))
    os.replace(tmp, path)


def measure_fhe(directory: Path, slices, preprocessors, rows: pd.DataFrame, model, client_cls, server_cls,
                log: Callable[[str], None]) -> dict[str, Any]:
    """Real encryption through the saved artifacts on held-out rows; every FHE decision must equal the
    quantized model's (raises otherwise). Returns sizes and figures, with the timings apart."""
    from concrete import fhe

    client = client_cls(str(directory), slices)
    t0 = time.perf_counter()
    client.generate_private_and_evaluation_keys()
    keygen_s = time.perf_counter() - t0
    eval_key = client.get_serialized_evaluation_keys()
    server = server_cls(str(directory))
    keys = fhe.EvaluationKeys.deserialize(eval_key)
    clear = model.predict(_party_matrix(preprocessors, rows)).astype(int)
    sizes: dict[str, int] = {}
    runs, predictions, p_approved, output_bytes = [], [], [], 0
    # a progress bar on a terminal (tqdm: quiet when stderr is not one), for the held-out applicants run in FHE
    for i in tqdm(range(len(rows)), desc="FHE check", unit="applicant", disable=None, leave=False):
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
        probabilities = client.decrypt_probabilities(output)[0]
        predictions.append(int(is_approved(probabilities)))
        p_approved.append(float(probabilities[1]))
    predictions = np.asarray(predictions)
    agree = int((predictions == clear).sum())
    log(f"FHE on {len(rows)} held-out applicants: {agree}/{len(rows)} equal the quantized model, "
        f"run {np.median(runs):.3f} s")
    if agree != len(rows):
        raise RuntimeError(f"FHE disagrees with the quantized model on {len(rows) - agree} of {len(rows)} rows")
    y = rows[LABEL].to_numpy(int)
    return {
        "eval_key_bytes": len(eval_key),
        "ciphertext_bytes": sizes,
        "output_bytes": output_bytes,
        "fhe_checked": len(rows),
        "fhe_agreement": f"{agree}/{len(rows)}",
        "figures_fhe_rows": classification_figures(y, predictions, p_approved),
        "figures_quantized_same_rows": classification_figures(y, clear, model.predict_proba(
            _party_matrix(preprocessors, rows))[:, 1]),
        "timings": {"keygen_s": round(keygen_s, 3), "run_s_first": round(runs[0], 3),
                    "run_s_median": round(float(np.median(runs[1:] or runs)), 3)},
    }


def with_overrides(data: str, **overrides: Any) -> TrainingConfig:
    """The preset of a data set with some settings replaced (None leaves a setting as the preset has it)."""
    return replace(PRESETS[data], **{k: v for k, v in overrides.items() if v is not None})
