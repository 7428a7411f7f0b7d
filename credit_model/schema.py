"""Feature schema of one applicant, split by the party that owns each feature, and raw-input validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

PARTIES = ("user", "bank", "agency")

YEARS_EMPLOYED_BINS = ("0-2", "2-5", "5-8", "8-11", "11-18", "18+")
# Lower edges of the half-open bins [0, 2), [2, 5), ..., [18, inf).
YEARS_EMPLOYED_EDGES = (0, 2, 5, 8, 11, 18)

INCOME_TYPES = ("Working", "Commercial associate", "Pensioner", "State servant", "Student")
EDUCATION_TYPES = (
    "Secondary / secondary special",
    "Higher education",
    "Incomplete higher",
    "Lower secondary",
    "Academic degree",
)
FAMILY_STATUSES = ("Married", "Single / not married", "Civil marriage", "Separated", "Widow")
OCCUPATION_TYPES = (
    "Laborers", "Core staff", "Sales staff", "Managers", "Drivers", "High skill tech staff",
    "Accountants", "Medicine staff", "Cooking staff", "Security staff", "Cleaning staff",
    "Private service staff", "Low-skill Laborers", "Waiters/barmen staff", "Secretaries",
    "Realty agents", "HR staff", "IT staff",
)
HOUSING_TYPES = (
    "House / apartment", "With parents", "Municipal apartment", "Rented apartment",
    "Office apartment", "Co-op apartment",
)
# The encoded value standing for a missing (None) occupation.
MISSING_OCCUPATION = "Missing"


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


FEATURES: dict[str, tuple[Feature, ...]] = {
    "user": (
        Feature("Own_car", "bool"),
        Feature("Own_property", "bool"),
        Feature("Mobile_phone", "bool"),
        Feature("Num_children", "int", minimum=0, maximum=20),
        Feature("Household_size", "int", minimum=1, maximum=25),
        Feature("Total_income", "float", minimum=0, maximum=1e8),
        Feature("Age", "int", minimum=18, maximum=120),
        Feature("Income_type", "category", INCOME_TYPES),
        Feature("Education_type", "category", EDUCATION_TYPES),
        Feature("Family_status", "category", FAMILY_STATUSES),
        Feature("Occupation_type", "category", OCCUPATION_TYPES, nullable=True),
        Feature("Housing_type", "category", HOUSING_TYPES),
    ),
    "bank": (Feature("Account_age", "int", minimum=0, maximum=1200),),
    "agency": (
        Feature("Years_employed", "ordinal", YEARS_EMPLOYED_BINS),
        Feature("Employed", "bool"),
    ),
}

ALL_FEATURES: tuple[Feature, ...] = tuple(f for p in PARTIES for f in FEATURES[p])


def party_of(feature_name: str) -> str:
    """Return the party that owns a raw feature."""
    for party in PARTIES:
        if any(f.name == feature_name for f in FEATURES[party]):
            return party
    raise KeyError(feature_name)


def years_employed_bin(years: float) -> str:
    """Map a number of years employed to its half-open bin label."""
    if years < 0 or math.isnan(years):
        raise ValueError(f"years employed must be >= 0, got {years}")
    label = YEARS_EMPLOYED_BINS[0]
    for edge, name in zip(YEARS_EMPLOYED_EDGES, YEARS_EMPLOYED_BINS):
        if years >= edge:
            label = name
    return label


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


def validate_record(party: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """Check one party's raw record: every field present, no unknown field, right type and range."""
    if not isinstance(party, str) or party not in FEATURES:
        raise InputValidationError(party if isinstance(party, str) else _show(party), "-", "unknown party",
                                   ", ".join(PARTIES))
    if not isinstance(record, Mapping):
        raise InputValidationError(party, "-", f"expected a mapping, got {type(record).__name__}")
    expected = {f.name for f in FEATURES[party]}
    # Keys of any type (1, None, "x" together) are sorted by their text; a non-string key is named by its repr.
    unknown = sorted(set(record) - expected, key=lambda k: (0, k) if isinstance(k, str) else (1, _show(k)))
    if unknown:
        field = unknown[0] if isinstance(unknown[0], str) else _show(unknown[0])
        raise InputValidationError(
            party, field, "unknown field", ", ".join(f.name for f in FEATURES[party]))
    clean = {}
    for feature in FEATURES[party]:
        if feature.name not in record:
            raise InputValidationError(party, feature.name, "is missing", feature.allowed())
        clean[feature.name] = _check_value(party, feature, record[feature.name])
    return clean
