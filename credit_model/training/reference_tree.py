"""The trained tree written out in the clear (quantizers, thresholds, leaves) as an independent reference for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REFERENCE_TREE = "reference_tree.json"
FORMAT = "fhe-credit-sim/reference-tree/1"


def export(model: Any, columns: list[str]) -> dict[str, Any]:
    """The fitted Concrete ML tree as plain numbers: no role reads this; tests apply it by hand.

    Concrete ML quantizes each input column on its own (uniform, `n_bits`) and fits the scikit-learn tree on the
    quantized integers, so the thresholds below compare quantized values."""
    tree = model.sklearn_model.tree_
    quantizers = []
    for quantizer in model.input_quantizers:
        quantizers.append({"scale": float(quantizer.scale), "zero_point": float(quantizer.zero_point),
                           "offset": int(quantizer.offset), "n_bits": int(quantizer.n_bits),
                           "narrow": bool(quantizer.is_narrow), "clip": not bool(quantizer.no_clipping)})
    values = tree.value[:, 0, :]
    return {
        "format": FORMAT,
        "columns": list(columns),
        "classes": [int(c) for c in model.sklearn_model.classes_],
        "input_quantizers": quantizers,
        "tree": {"feature": [int(f) for f in tree.feature],
                 "threshold": [float(t) for t in tree.threshold],
                 "left": [int(n) for n in tree.children_left],
                 "right": [int(n) for n in tree.children_right],
                 "value": [[float(v) for v in row] for row in values]},
    }


def write(directory: Path, model: Any, columns: list[str]) -> Path:
    path = Path(directory) / REFERENCE_TREE
    path.write_text(json.dumps(export(model, columns), indent=1) + "\n", encoding="utf-8")
    return path
