"""The model families a deployment can hold (tree, xgboost, logistic): their Concrete ML models, circuits and spaces."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

FAMILIES = ("tree", "xgboost", "logistic")
# The Concrete ML class each family deploys (client.zip names it; the roles' runtime reads it, see fhe_runtime.py).
MODEL_CLASSES = {"tree": "concrete.ml.sklearn.tree.DecisionTreeClassifier",
                 "xgboost": "concrete.ml.sklearn.xgb.XGBClassifier",
                 "logistic": "concrete.ml.sklearn.linear_model.LogisticRegression"}
# Hyper-parameters searched by cross-validation grouped by applicant on the training file (train.py). The xgboost
# space is bounded by the encrypted run's cost: ~9.5 ms per PBS on 2 cores, 3-bit inputs cost one PBS per node and
# 4-bit ones ~3.4 (BENCHMARKS.md), so 2 s hold about 200 PBS: 10-14 trees of depth 3 or ~28 of depth 2 at 3 bits.
SEARCH_SPACES: dict[str, Any] = {  # a grid (name -> values) or a list of candidates
    "tree": {"max_depth": [3, 4], "min_samples_leaf": [100, 300], "high_risk_weight": [30.0, 50.0]},
    "xgboost": [dict(n_estimators=n, max_depth=d, learning_rate=0.3, high_risk_weight=w)
                for n, d in ((10, 3), (14, 3), (20, 2), (28, 2)) for w in (30.0, 58.0)],
    "logistic": {"C": [0.01, 0.1, 1.0], "high_risk_weight": [30.0, 58.0]},
}
# Logistic regression: the bits of the rounded score the circuit's one table lookup reads (see LogisticCircuit).
LOOKUP_BITS = 7


def concrete_model(family: str, params: dict[str, Any], n_bits: int, years_column: int, width: int,
                   monotone_years: bool, seed: int):
    """An unfitted Concrete ML model of the family; `high_risk_weight` weighs label 0 (denied)."""
    params = dict(params)
    weight = float(params.pop("high_risk_weight", 1.0))
    if family == "tree":
        from concrete.ml.sklearn import DecisionTreeClassifier
        extra: dict[str, Any] = {"random_state": seed}
        if monotone_years:
            extra["monotonic_cst"] = [1 if i == years_column else 0 for i in range(width)]
        if weight != 1.0:
            extra["class_weight"] = {0: weight, 1: 1.0}
        return DecisionTreeClassifier(n_bits=n_bits, **params, **extra)
    if family == "xgboost":
        from concrete.ml.sklearn import XGBClassifier
        extra = {"random_state": seed, "n_jobs": 2, "scale_pos_weight": 1.0 / weight}  # label 1 = approved
        if monotone_years:
            extra["monotone_constraints"] = "(" + ",".join("1" if i == years_column else "0" for i in range(width)) + ")"
        return XGBClassifier(n_bits=n_bits, **params, **extra)
    if family == "logistic":
        from concrete.ml.sklearn import LogisticRegression
        return LogisticRegression(n_bits={"op_inputs": n_bits, "op_weights": n_bits}, max_iter=2000,
                                  class_weight={0: weight, 1: 1.0}, random_state=seed, **params)
    raise ValueError(f"unknown model family {family!r} (one of {', '.join(FAMILIES)})")


def is_monotone_in(model, family: str, column: int, constrained: bool) -> bool:
    """Trees and ensembles are monotone when trained under the constraint; a linear model when the quantized
    weight of the column (what the circuit multiplies by) is not negative."""
    if family == "logistic":
        return bool(model._q_weights[column, 0] - model._weight_quantizer.zero_point >= 0)  # pylint: disable=protected-access
    return constrained


class LogisticCircuit:
    """What the logistic regression circuit computes: Concrete ML's integer score (q_x . w + bias), moved by a
    constant and rounded with one table lookup of LOOKUP_BITS bits.

    The rounding is what puts the output under a key of its own: a circuit without a lookup returns a ciphertext
    under the inputs' key, which bank and agency hold. The user decrypts the rounded score, dequantizes it (the
    output quantizer's zero point takes the constant back) and applies the threshold: approved when the score's
    sigmoid, p(approved), exceeds 0.5. The integers are sized for every input the quantizer lets through (Concrete
    ML's own linear circuits size them on the training rows alone, and wrap beyond)."""

    def __init__(self, model, q_train: np.ndarray):
        # Concrete ML's score is q_x @ q_w - zp_w * sum(q_x) + q_bias; written as q_x @ (q_w - zp_w) + q_bias (the
        # same integers) it has no large intermediate value, so the circuit's integers stay as narrow as the score
        self.weights = model._q_weights[:, 0].astype(np.int64) - int(model._weight_quantizer.zero_point)  # pylint: disable=protected-access
        self.bias = int(np.asarray(model._q_bias).ravel()[0])  # pylint: disable=protected-access
        # every column's reachable quantized values: a one-hot, boolean or ordinal column's (few) values as the
        # training file holds them, a numeric column's whole clipped range; the two rows reaching the score's least
        # and greatest value join the inputset, so that no applicant's score can overflow the circuit's integers
        quantizer = model.input_quantizers[0]
        clip = (-int(quantizer.offset) + int(bool(quantizer.is_narrow)), 2 ** int(quantizer.n_bits) - 1 - int(quantizer.offset))
        bottom, top = [], []
        for j, w in enumerate(self.weights):
            values = np.unique(q_train[:, j])
            values = values if len(values) <= 6 else np.array(clip)
            bottom.append(int(values[np.argmin(values * w)]))
            top.append(int(values[np.argmax(values * w)]))
        self.extreme_rows = np.array([bottom, top], dtype=np.int64)
        products = self.extreme_rows @ self.weights
        scores = products + self.bias
        self.center = int((scores.min() + scores.max()) // 2)
        # Concrete gives the dot product and the shifted score one integer width; the lookup reads the score
        # rounded to LOOKUP_BITS of it (wider lookups cost keys of hundreds of MB and runs of seconds)
        largest = max(abs(int(products.min())), abs(int(products.max())), abs(int(scores.min()) - self.center),
                      abs(int(scores.max()) - self.center), 1)
        width = math.ceil(math.log2(largest + 1)) + 1
        self.lsbs = max(1, width - LOOKUP_BITS)

    def score(self, q_x) -> np.ndarray:
        return np.asarray(q_x, dtype=np.int64) @ self.weights.reshape(-1, 1) + self.bias

    def __call__(self, x):
        from concrete import fhe
        return fhe.round_bit_pattern(x @ self.weights.reshape(-1, 1) + (self.bias - self.center),
                                     lsbs_to_remove=self.lsbs)

    def clear(self, q_x: np.ndarray) -> np.ndarray:
        """The same computation on clear integers (round half up, as round_bit_pattern does)."""
        y = self.score(q_x) - self.center
        step = 1 << self.lsbs
        return ((y + (step >> 1)) // step) * step


def prepare_for_circuit(model, family: str, width: int, q_train: np.ndarray) -> tuple[Callable, np.ndarray]:
    """(the function compiled over the concatenated quantized row, the quantized inputset).

    Logistic regression has one input quantizer for every column; it is repeated per column so that each party
    quantizes its own slice as with the other families, and the output quantizer's zero point absorbs the
    circuit's constant shift, so that Concrete ML's own dequantization and sigmoid read the rounded score."""
    inference = getattr(model, "_tree_inference", None)
    if family == "tree":
        return (lambda x: inference(x)[0]), q_train
    if family == "xgboost":
        if float(np.asarray(model.output_quantizers[0].zero_point).ravel()[0]) != 0.0:
            raise ValueError("the leaves' quantizer must have a zero point of 0 (their sum is dequantized once)")

        def ensemble(x):
            # The trees' leaves summed in the circuit, then one lookup (the identity) at the sum's width: a circuit
            # whose lookups all share the inputs' width returns its output under the inputs' key, which bank and
            # agency hold; this lookup gives the output a key of its own. The user decrypts the score alone.
            from concrete import fhe
            return fhe.univariate(lambda v: v)(np.sum(inference(x)[0], axis=-1, keepdims=True))
        return ensemble, q_train
    circuit = LogisticCircuit(model, q_train)
    model.input_quantizers = [model.input_quantizers[0]] * width
    output = model.output_quantizers[0]
    output.zero_point = np.int64(int(np.asarray(output.zero_point).ravel()[0]) - circuit.center)
    # the score's quantizer has no bit width of its own in Concrete ML (it is never used to quantize); the
    # deployment's runtime reads one like every quantizer's: the circuit's, unclipped
    output.n_bits, output.is_signed, output.is_narrow = 32, True, False
    model.logistic_circuit_ = circuit
    return circuit, np.vstack([q_train, circuit.extreme_rows])


def clear_probabilities(model, family: str, x: np.ndarray) -> np.ndarray:
    """[p(denied), p(approved)] per row as the compiled circuit computes them, in the clear."""
    if family != "logistic" or not hasattr(model, "logistic_circuit_"):
        return np.asarray(model.predict_proba(x))
    rounded = model.logistic_circuit_.clear(model.quantize_input(x))
    return np.asarray(model.post_processing(model.dequantize_output(rounded)))
