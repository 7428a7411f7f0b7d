"""The feature schema a deployment carries: each party's raw features (kind, range, categories), their validation,
and the ordinal feature the explainability loop moves (years employed, with its bins); read from a manifest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

PARTIES = ("user", "bank", "agency")
KINDS = ("bool", "int", "float", "category", "ordinal")
# The feature the explainability loop moves through its ordered bins; an ordinal of the agency in every schema.
YEARS_FEATURE = "Years_employed"
EMPLOYED_FEATURE = "Employed"  # the agency's other feature (kaggle, demo, synthetic schemas)
YEARS_PARTY = "agency"
# The encoded value standing for a missing (None) value of a nullable category.
MISSING = "Missing"
MAX_FEATURES_PER_PARTY = 64
MAX_CATEGORIES = 64


def years_employed_bin(years: float, edges: Sequence[float], bins: Sequence[str]) -> str:
    """Map a number of years employed to its half-open bin label ([edges[i], edges[i+1]) -> bins[i])."""
    if years < 0 or math.isnan(years):
        raise ValueError(f"years employed must be >= 0, got {years}")
    label = bins[0]
    for edge, name in zip(edges, bins):
        if years >= edge:
            label = name
    return label


class SchemaError(ValueError):
    """A schema (in a manifest) that is not well formed; names the place."""


class InputValidationError(ValueError):
    """Raw party input that does not fit the schema; names the field and what is allowed."""

    def __init__(self, party: str, field: str, problem: str, allowed: str = ""):
        self.party, self.field, self.problem, self.allowed = party, field, problem, allowed
        text = f"{party} input, field {field!r}: {problem}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)


@dataclass(frozen=True)
class Feature:
    """One raw feature: its kind (bool, int, float, category, ordinal) and what values it may take."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False

    def allowed(self) -> str:
        if self.kind in ("category", "ordinal"):
            values = ", ".join(repr(c) for c in self.categories)
            return values + (", None" if self.nullable else "")
        if self.kind == "bool":
            return "true or false"
        kind = "an integer" if self.kind == "int" else "a number"
        return f"{kind} in [{self.minimum:g}, {self.maximum:g}]"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind in ("category", "ordinal"):
            out["categories"] = list(self.categories)
        if self.kind in ("int", "float"):
            out["minimum"], out["maximum"] = self.minimum, self.maximum
        if self.nullable:
            out["nullable"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Feature":
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: expected a mapping with name and kind")
        unknown = set(data) - {"name", "kind", "categories", "minimum", "maximum", "nullable"}
        if unknown:
            raise SchemaError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}")
        name, kind = data.get("name"), data.get("kind")
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
            raise SchemaError(f"{where}.name: expected an identifier of at most 64 characters")
        if kind not in KINDS:
            raise SchemaError(f"{where}.kind: expected one of {', '.join(KINDS)}")
        nullable = data.get("nullable", False)
        if not isinstance(nullable, bool) or (nullable and kind != "category"):
            raise SchemaError(f"{where}.nullable: only a category may be nullable (true/false)")
        categories: tuple[str, ...] = ()
        minimum = maximum = None
        if kind in ("category", "ordinal"):
            raw = data.get("categories")
            if (not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CATEGORIES
                    or not all(isinstance(c, str) and 0 < len(c) <= 100 for c in raw) or len(set(raw)) != len(raw)
                    or MISSING in raw):
                raise SchemaError(f"{where}.categories: expected 1 to {MAX_CATEGORIES} distinct non-empty strings "
                                  f"(not {MISSING!r})")
            categories = tuple(raw)
        elif kind in ("int", "float"):
            minimum, maximum = data.get("minimum"), data.get("maximum")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in (minimum, maximum)) or minimum > maximum:
                raise SchemaError(f"{where}: expected finite numbers minimum <= maximum")
        return cls(name, kind, categories, minimum, maximum, nullable)


def _show(value: Any) -> str:
    """A short repr of a hostile value: huge ints (whose repr raises) by size, anything unprintable by type."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"{'-' if value < 0 else ''}<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # e.g. a list holding a huge int, or nested too deep to print
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_value(party: str, feature: Feature, value: Any) -> Any:
    if value is None:
        if feature.nullable:
            return None
        raise InputValidationError(party, feature.name, "is missing (None)", feature.allowed())
    if feature.kind == "bool":
        if not isinstance(value, bool):
            raise InputValidationError(
                party, feature.name, f"expected a boolean, got {type(value).__name__} {_show(value)}",
                feature.allowed())
        return value
    if feature.kind in ("category", "ordinal"):
        if not isinstance(value, str) or value not in feature.categories:
            raise InputValidationError(
                party, feature.name, f"unknown value {_show(value)}", feature.allowed())
        return value
    # Numbers: bool is an int subclass in Python, and is refused here on purpose.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputValidationError(
            party, feature.name, f"expected a number, got {type(value).__name__} {_show(value)}",
            feature.allowed())
    # Ints are compared exactly (float() and math.isfinite overflow on huge ones); floats may be nan or inf.
    if feature.kind == "int" and not (isinstance(value, int) or value.is_integer()):
        raise InputValidationError(
            party, feature.name, f"expected an integer, got {value!r}", feature.allowed())
    if (isinstance(value, float) and not math.isfinite(value)) or not feature.minimum <= value <= feature.maximum:
        raise InputValidationError(
            party, feature.name, f"value {_show(value)} is out of range", feature.allowed())
    return int(value) if feature.kind == "int" else float(value)


@dataclass(frozen=True)
class Schema:
    """Each party's raw features, in order; the bins of the years-employed ordinal come from it."""

    features: Mapping[str, tuple[Feature, ...]]

    def __post_init__(self):
        if set(self.features) != set(PARTIES):
            raise SchemaError(f"parties: expected exactly {', '.join(PARTIES)}")
        names = [f.name for p in PARTIES for f in self.features[p]]
        if len(set(names)) != len(names):
            raise SchemaError("parties: a feature name appears twice")
        years = [f for f in self.features[YEARS_PARTY] if f.name == YEARS_FEATURE]
        if not years or years[0].kind != "ordinal" or len(years[0].categories) < 2:
            raise SchemaError(f"parties.{YEARS_PARTY}: needs an ordinal {YEARS_FEATURE!r} with at least two bins")

    @property
    def bins(self) -> tuple[str, ...]:
        """The years-employed bins, lowest first: the values the explainability loop walks through."""
        return self.feature(YEARS_FEATURE).categories

    def feature(self, name: str) -> Feature:
        for party in PARTIES:
            for f in self.features[party]:
                if f.name == name:
                    return f
        raise KeyError(name)

    def party_of(self, feature_name: str) -> str:
        """Return the party that owns a raw feature."""
        for party in PARTIES:
            if any(f.name == feature_name for f in self.features[party]):
                return party
        raise KeyError(feature_name)

    def validate_record(self, party: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Check one party's raw record: every field present, no unknown field, right type and range."""
        if not isinstance(party, str) or party not in self.features:
            raise InputValidationError(party if isinstance(party, str) else _show(party), "-", "unknown party",
                                       ", ".join(PARTIES))
        if not isinstance(record, Mapping):
            raise InputValidationError(party, "-", f"expected a mapping, got {type(record).__name__}")
        features = self.features[party]
        expected = {f.name for f in features}
        # Keys of any type (1, None, "x" together) are sorted by their text; a non-string key is named by its repr.
        unknown = sorted(set(record) - expected, key=lambda k: (0, k) if isinstance(k, str) else (1, _show(k)))
        if unknown:
            field = unknown[0] if isinstance(unknown[0], str) else _show(unknown[0])
            raise InputValidationError(party, field, "unknown field", ", ".join(f.name for f in features))
        clean = {}
        for feature in features:
            if feature.name not in record:
                raise InputValidationError(party, feature.name, "is missing", feature.allowed())
            clean[feature.name] = _check_value(party, feature, record[feature.name])
        return clean

    def example(self) -> dict[str, dict[str, Any]]:
        """A valid record per party (each feature's middle category or the middle of its range), for checks
        that need any applicant of this schema; its decision comes from the model, never from here."""
        def value(f: Feature) -> Any:
            if f.kind == "bool":
                return True
            if f.kind in ("category", "ordinal"):
                return f.categories[len(f.categories) // 2]
            middle = (f.minimum + f.maximum) / 2
            return int(middle) if f.kind == "int" else float(middle)
        return {p: {f.name: value(f) for f in self.features[p]} for p in PARTIES}

    def to_dict(self) -> dict[str, Any]:
        return {"parties": {p: [f.to_dict() for f in self.features[p]] for p in PARTIES},
                "years_employed": {"party": YEARS_PARTY, "feature": YEARS_FEATURE, "bins": list(self.bins)}}

    @classmethod
    def from_dict(cls, data: Any) -> "Schema":
        """Read a manifest's schema, strictly: a malformed one raises SchemaError naming the place."""
        if not isinstance(data, Mapping) or not isinstance(data.get("parties"), Mapping):
            raise SchemaError("schema: expected a mapping with 'parties'")
        features = {}
        for party in PARTIES:
            raw = data["parties"].get(party)
            if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FEATURES_PER_PARTY:
                raise SchemaError(f"schema.parties.{party}: expected a list of 1 to {MAX_FEATURES_PER_PARTY} features")
            features[party] = tuple(Feature.from_dict(f, f"schema.parties.{party}[{i}]") for i, f in enumerate(raw))
        if set(data["parties"]) != set(PARTIES):
            raise SchemaError(f"schema.parties: expected exactly {', '.join(PARTIES)}")
        schema = cls(features)
        years = data.get("years_employed")
        if years is not None and years != schema.to_dict()["years_employed"]:
            raise SchemaError("schema.years_employed: does not match the agency's Years_employed categories")
        return schema
