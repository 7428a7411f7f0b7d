"""An xgboost ensemble or a logistic regression written out in the clear, an independent reference for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILES = {"xgboost": "reference_ensemble.json", "logistic": "reference_linear.json"}
FORMATS = {"xgboost": "fhe-credit-sim/reference-ensemble/1", "logistic": "fhe-credit-sim/reference-linear/1"}


def _quantizer(quantizer) -> dict[str, Any]:
    return {"scale": float(np.asarray(quantizer.scale).ravel()[0]),
            "zero_point": float(np.asarray(quantizer.zero_point).ravel()[0]),
            "offset": int(quantizer.offset), "n_bits": int(quantizer.n_bits),
            "narrow": bool(quantizer.is_narrow), "clip": not bool(quantizer.no_clipping)}


def export(model: Any, family: str, columns: list[str]) -> dict[str, Any]:
    """No role reads this; tests/tree_by_hand.py applies it by hand.

    xgboost: the booster's trees as xgboost dumps them (fitted on Concrete ML's quantized inputs: a row goes to
    `yes` when its quantized value is < `split_condition`), their leaves in the clear; Concrete ML quantizes every
    leaf with `output_quantizer`, the user sums the dequantized leaves and takes the sigmoid.
    logistic: the integer weights and bias of the score, the circuit's shift and rounding, and the output scale."""
    out: dict[str, Any] = {"format": FORMATS[family], "columns": list(columns),
                           "input_quantizers": [_quantizer(q) for q in model.input_quantizers]}
    if family == "xgboost":
        booster = model.sklearn_model.get_booster()
        out["trees"] = [json.loads(tree) for tree in booster.get_dump(dump_format="json")]
        out["output_quantizer"] = _quantizer(model.output_quantizers[0])
        out["link"] = "sigmoid of the sum of the quantized leaves = p(approved)"
        return out
    circuit = model.logistic_circuit_
    out.update({"weights": [int(w) for w in circuit.weights],
                "bias": int(circuit.bias),
                "shift": int(circuit.center), "lsbs_removed": int(circuit.lsbs),
                "output_scale": float(np.asarray(model.output_quantizers[0].scale).ravel()[0]),
                "output_zero_point": float(np.asarray(model.output_quantizers[0].zero_point).ravel()[0]),
                "link": "score = sum(q_x * weights) + bias - shift, rounded half up to a multiple of "
                        "2**lsbs_removed; p(approved) = sigmoid(output_scale * (score - output_zero_point))"})
    return out


def write(directory: Path, model: Any, family: str, columns: list[str]) -> Path:
    path = Path(directory) / REFERENCE_FILES[family]
    path.write_text(json.dumps(export(model, family, columns), indent=1) + "\n", encoding="utf-8")
    return path
