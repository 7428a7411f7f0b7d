"""The page's form: each field's label and first value from the deployment's schema, and every value a tab sends
checked against that schema (booleans, whole numbers, ranges, categories) before anything reaches a COMMAND."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from credit_model.schema import MISSING, Feature, InputValidationError, Schema

from scenarios import shipped_scenarios
from scenarios.spec import ScenarioError, load_scenario

NO_VALUE = "(none)"  # the dropdown choice standing for a nullable category's missing value
PROBLEM_CHARS = 200  # a refusal quotes at most this much of what was sent
_ABSENT = object()  # a field a record did not hold


class FormError(ValueError):
    """A value of the form the schema refuses: names the party, the field (as the page labels it) and the rule."""

    def __init__(self, party: str, field: str, text: str):
        self.party, self.field, self.text = party, field, text
        super().__init__(text)


def number(value: float) -> str:
    """1e8 -> '100,000,000'; 0.5 -> '0.5' (the page never shows a number in exponent notation)."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.6g}"


def label(feature: Feature) -> str:
    name = feature.name.replace("_", " ")
    if feature.kind == "int":
        return f"{name} (a whole number, {number(feature.minimum)} to {number(feature.maximum)})"
    if feature.kind == "float":
        return f"{name} ({number(feature.minimum)} to {number(feature.maximum)})"
    return name


def allowed(feature: Feature) -> str:
    if feature.kind == "int":
        return f"a whole number from {number(feature.minimum)} to {number(feature.maximum)}"
    if feature.kind == "float":
        return f"a number from {number(feature.minimum)} to {number(feature.maximum)}"
    if feature.kind == "bool":
        return "true or false"
    return "one of the listed values" + (f" or {NO_VALUE}" if feature.nullable else "")


def shown(feature: Feature, value: Any) -> Any:
    """A first value as the form shows it: floats without binary noise (27500.000000000004 -> 27500.0)."""
    if feature.kind == "float" and isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.10g}")
    if feature.kind in ("category", "ordinal") and value is None:
        return NO_VALUE
    return value


def default_records(deployment) -> dict[str, dict]:
    """The form's first values: the deployment's shipped approved applicant, else its schema's example."""
    try:
        scenario = load_scenario(shipped_scenarios(deployment.name) / "approved.yaml", deployment.directory)
        records = scenario.applicants[0].data
    except (ScenarioError, OSError):
        records = deployment.schema.example()
    return {party: {f.name: shown(f, records[party].get(f.name)) for f in features}
            for party, features in deployment.schema.features.items()}


def check_record(schema: Schema, party: str, values: Sequence | Mapping) -> dict:
    """The widget values of a party's panel (in schema order, or a record) -> the record its role validates.

    Whole-number floats become ints, NO_VALUE None; anything else the schema does not allow — a fraction in a
    whole-number field, a value out of range, an empty field, text in a number or a checkbox, a category not in
    the list, however long — raises FormError naming the field, so nothing is sent."""
    features = schema.features[party]
    if isinstance(values, Mapping):
        unknown = [k for k in values if k not in {f.name for f in features}]
        if unknown:
            raise FormError(party, "-", f"unknown field {str(unknown[0])[:80]!r}")
        values = [values.get(f.name, _ABSENT) for f in features]
    if not isinstance(values, (list, tuple)) or len(values) != len(features):
        raise FormError(party, "-", f"expected {len(features)} values, one per field of the {party}'s panel")
    record = {}
    for feature, value in zip(features, values):
        if value is _ABSENT:
            raise FormError(party, feature.name, f"{feature.name.replace('_', ' ')}: a value is needed "
                                                 f"({allowed(feature)})")
        if feature.kind == "int" and isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        elif feature.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif feature.kind in ("category", "ordinal") and isinstance(value, str) and value in (NO_VALUE, MISSING):
            value = None
        record[feature.name] = value
    try:
        return schema.validate_record(party, record)
    except InputValidationError as exc:
        feature = schema.feature(exc.field) if exc.field in record else None
        name = exc.field.replace("_", " ")
        if feature is None:
            raise FormError(party, exc.field, f"{name}: {exc.problem}"[:PROBLEM_CHARS]) from None
        problem = "a value is needed" if record[exc.field] is None else exc.problem
        if feature.kind == "int" and "expected an integer" in exc.problem:
            problem = f"{exc.problem.split('got ', 1)[-1]} is not a whole number"
        raise FormError(party, exc.field, f"{name}: {problem[:PROBLEM_CHARS]} ({allowed(feature)})") from None
