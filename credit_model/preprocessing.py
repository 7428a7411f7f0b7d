"""One preprocessor per party: validates raw records against the deployment's schema, one-hot encodes categories,
scales numbers; JSON-saved (the scaling only: the features come from the schema)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # pandas is for training only: the roles never import it (start-up time)
    import pandas as pd

from .schema import MISSING, Feature, Schema

FORMAT = "fhe-credit-sim/preprocessor/1"


def _columns(feature: Feature) -> list[str]:
    if feature.kind == "category":
        values = list(feature.categories) + ([MISSING] if feature.nullable else [])
        return [f"{feature.name}={v}" for v in values]
    return [feature.name]


@dataclass
class PartyPreprocessor:
    """Turns one party's validated raw records into the float feature matrix the model was trained on.

    Booleans become 0/1, ordinals (the years-employed bin) their index, categories one-hot columns
    (a nullable category gets a "Missing" column), numbers are standardised with the training mean/std.
    """

    party: str
    schema: Schema
    scaling: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def features(self) -> tuple[Feature, ...]:
        return self.schema.features[self.party]

    @property
    def output_columns(self) -> list[str]:
        return [c for f in self.features for c in _columns(f)]

    def fit(self, df: "pd.DataFrame") -> "PartyPreprocessor":
        self.scaling = {}
        for f in self.features:
            if f.kind in ("int", "float"):
                values = df[f.name].to_numpy(dtype=float)
                std = float(values.std()) or 1.0
                self.scaling[f.name] = (float(values.mean()), std)
        return self

    def _row(self, record: Mapping[str, Any]) -> list[float]:
        row: list[float] = []
        for f in self.features:
            value = record[f.name]
            if f.kind == "bool":
                row.append(float(value))
            elif f.kind == "ordinal":
                row.append(float(f.categories.index(value)))
            elif f.kind == "category":
                key = MISSING if value is None else value
                row.extend(1.0 if c == f"{f.name}={key}" else 0.0 for c in _columns(f))
            else:
                mean, std = self.scaling[f.name]
                row.append((float(value) - mean) / std)
        return row

    def transform_records(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Validate then encode raw records (dicts); raises InputValidationError naming the field."""
        if not self.scaling and any(f.kind in ("int", "float") for f in self.features):
            raise RuntimeError(f"the {self.party} preprocessor is not fitted")
        rows = [self._row(self.schema.validate_record(self.party, r)) for r in records]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.output_columns))

    def transform_frame(self, df: "pd.DataFrame") -> np.ndarray:
        """Encode the party's columns of a data frame (rows are validated like any raw record)."""
        names = [f.name for f in self.features]
        records = df[names].astype(object).where(df[names].notna(), None).to_dict("records")
        return self.transform_records(_to_python(r) for r in records)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "party": self.party, "columns": self.output_columns,
                "scaling": {k: list(v) for k, v in self.scaling.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], schema: Schema) -> "PartyPreprocessor":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a preprocessor file of format {FORMAT}: {data.get('format')!r}")
        pre = cls(data["party"], schema, {k: (float(v[0]), float(v[1])) for k, v in data["scaling"].items()})
        if list(data["columns"]) != pre.output_columns:
            raise ValueError(f"{pre.party} preprocessor columns do not match the deployment's schema")
        numbers = {f.name for f in pre.features if f.kind in ("int", "float")}
        if set(pre.scaling) != numbers:
            raise ValueError(f"{pre.party} preprocessor scales {sorted(pre.scaling)}, the schema's numbers are "
                             f"{sorted(numbers)}")
        return pre

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, schema: Schema) -> "PartyPreprocessor":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), schema)


def _to_python(record: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars from a data frame to plain Python values, so validation sees bool/int/float."""
    out = {}
    for key, value in record.items():
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out
