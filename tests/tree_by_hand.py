"""The deployed model applied by hand from the deployment's JSON files: an expected decision that shares no code with
the roles' preprocess / quantize / encrypt / run / decrypt path (nothing here imports credit_model or Concrete).

A tree is walked (reference_tree.json); an xgboost ensemble's trees are walked and their leaves quantized, summed and
put through the sigmoid (reference_ensemble.json); a logistic regression's integer score is computed, rounded and
put through the sigmoid (reference_linear.json)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

PARTIES = ("user", "bank", "agency")
REFERENCES = {"tree": "reference_tree.json", "xgboost": "reference_ensemble.json", "logistic": "reference_linear.json"}


class TreeByHand:
    """Reads manifest.json, preprocessor_*.json and reference_tree.json of one deployment directory."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        self.manifest = json.loads((directory / "manifest.json").read_text())
        self.family = self.manifest.get("model", {}).get("family", "tree")
        self.tree = json.loads((directory / REFERENCES[self.family]).read_text())
        self.scaling = {p: json.loads((directory / f"preprocessor_{p}.json").read_text())["scaling"]
                        for p in PARTIES}
        self.features = {p: self.manifest["schema"]["parties"][p] for p in PARTIES}
        self.years = next(f for f in self.features["agency"] if f["kind"] == "ordinal")

    def columns(self, records: dict[str, dict[str, Any]]) -> list[float]:
        """The model's input row, column by column in the order reference_tree.json names them."""
        by_name: dict[str, float] = {}
        for party in PARTIES:
            for feature in self.features[party]:
                name, kind, value = feature["name"], feature["kind"], records[party][feature["name"]]
                if kind == "bool":
                    by_name[name] = 1.0 if value else 0.0
                elif kind == "ordinal":
                    by_name[name] = float(feature["categories"].index(value))
                elif kind == "category":
                    options = feature["categories"] + (["Missing"] if feature.get("nullable") else [])
                    chosen = "Missing" if value is None else value
                    for option in options:
                        by_name[f"{name}={option}"] = 1.0 if option == chosen else 0.0
                else:
                    mean, std = self.scaling[party][name]
                    by_name[name] = (float(value) - mean) / std
        return [by_name[c] for c in self.tree["columns"]]

    @staticmethod
    def quantize(x: float, q: dict[str, Any]) -> float:
        """Uniform quantization as Concrete ML documents it: round(x / scale + zero_point), clipped to n_bits."""
        value = round(x / q["scale"] + q["zero_point"])  # Python rounds half to even, like numpy.rint
        if q["clip"]:
            low = -q["offset"] + (1 if q["narrow"] else 0)
            value = min(max(value, low), 2 ** q["n_bits"] - 1 - q["offset"])
        return float(value)

    def leaf(self, records: dict[str, dict[str, Any]]) -> int:
        row = [self.quantize(x, q) for x, q in zip(self.columns(records), self.tree["input_quantizers"])]
        t, node = self.tree["tree"], 0
        while t["left"][node] != -1:
            node = t["left"][node] if row[t["feature"][node]] <= t["threshold"][node] else t["right"][node]
        return node

    def quantized_row(self, records: dict[str, dict[str, Any]]) -> list[float]:
        return [self.quantize(x, q) for x, q in zip(self.columns(records), self.tree["input_quantizers"])]

    def score(self, records: dict[str, dict[str, Any]]) -> float:
        """xgboost and logistic: the score whose sigmoid is p(approved), as the user dequantizes it."""
        row = self.quantized_row(records)
        if self.family == "xgboost":
            q, total = self.tree["output_quantizer"], 0.0
            for tree in self.tree["trees"]:
                node = tree
                while "leaf" not in node:
                    value = row[int(node["split"][1:])]  # "f12": column 12; xgboost sends x < condition to "yes"
                    target = node["yes"] if value < node["split_condition"] else node["no"]
                    node = next(c for c in node["children"] if c["nodeid"] == target)
                total += q["scale"] * (self.quantize(node["leaf"], q) - q["zero_point"])
            return total
        t = self.tree
        raw = sum(int(x) * w for x, w in zip(row, t["weights"])) + t["bias"] - t["shift"]
        step = 2 ** t["lsbs_removed"]
        rounded = ((raw + step // 2) // step) * step  # round half up, to a multiple of 2**lsbs_removed
        return t["output_scale"] * (rounded - t["output_zero_point"])

    def probability(self, records: dict[str, dict[str, Any]]) -> float:
        """p(approved): a tree's at the leaf (class 1 is approved), before Concrete ML quantizes the leaves; an
        ensemble's or a linear model's, the sigmoid of its score."""
        if self.family != "tree":
            return 1.0 / (1.0 + math.exp(-self.score(records)))
        counts = self.tree["tree"]["value"][self.leaf(records)]
        return counts[self.tree["classes"].index(1)] / sum(counts)

    def approved(self, records: dict[str, dict[str, Any]]) -> bool:
        return self.probability(records) > 0.5  # the manifest's rule: argmax, a tie is denied

    def with_bin(self, records: dict[str, dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
        changed = {p: dict(records[p]) for p in PARTIES}
        changed["agency"][self.years["name"]] = label
        return changed

    def bins(self) -> list[str]:
        return list(self.years["categories"])

    def random_variant(self, records: dict[str, dict[str, Any]], rng: random.Random, changes: int = 3):
        """The applicant with `changes` features replaced by random values the schema allows."""
        variant = {p: dict(records[p]) for p in PARTIES}
        every = [(p, f) for p in PARTIES for f in self.features[p]]
        for party, feature in rng.sample(every, min(changes, len(every))):
            variant[party][feature["name"]] = random_value(feature, rng)
        return variant


def random_value(feature: dict[str, Any], rng: random.Random) -> Any:
    kind = feature["kind"]
    if kind == "bool":
        return rng.random() < 0.5
    if kind in ("ordinal", "category"):
        options = list(feature["categories"]) + ([None] if feature.get("nullable") else [])
        return rng.choice(options)
    low, high = feature.get("minimum", 0), feature.get("maximum", 10**6)
    if kind == "int":
        return rng.randint(int(low), int(min(high, max(low, 0) + 1000)))
    top = min(high, max(low, 1.0) * 1e6)  # incomes: log-uniform, so small and large values both come up
    return round(math.exp(rng.uniform(math.log(max(low, 1.0)), math.log(max(top, 2.0)))), 2)
