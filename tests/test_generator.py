"""The synthetic generator is deterministic, shaped like the public data, and follows its label rule."""

import numpy as np
import pytest

from credit_model.training.generator import APPROVAL_THRESHOLD, LABEL, approval_score, generate_applicants
from credit_model.training.data_schemas import SYNTHETIC_SCHEMA, YEARS_EMPLOYED_BINS


@pytest.fixture(scope="module")
def frame():
    return generate_applicants(20000, seed=3)


def test_same_seed_same_rows_other_seed_other_rows():
    a, b, c = generate_applicants(300, 7), generate_applicants(300, 7), generate_applicants(300, 8)
    assert a.equals(b)
    assert not a.equals(c)


def test_marginals_look_like_the_public_data(frame):
    share = lambda col, value: (frame[col] == value).mean()  # noqa: E731
    assert 145_000 <= frame["Total_income"].median() <= 170_000
    assert frame["Total_income"].between(27_000, 1_575_000).all()
    assert frame["Age"].between(21, 69).all()
    assert 0.66 <= share("Num_children", 0) <= 0.72
    assert 0.48 <= share("Income_type", "Working") <= 0.54
    assert 0.65 <= share("Education_type", "Secondary / secondary special") <= 0.71
    assert 0.65 <= share("Family_status", "Married") <= 0.72
    assert 0.85 <= share("Housing_type", "House / apartment") <= 0.91
    assert 0.33 <= frame["Own_car"].mean() <= 0.41
    assert 0.63 <= frame["Own_property"].mean() <= 0.71
    assert frame["Mobile_phone"].mean() > 0.99
    assert 0.27 <= frame["Occupation_type"].isna().mean() <= 0.35
    assert frame["Account_age"].between(0, 60).all()
    pensioners = frame[frame["Income_type"] == "Pensioner"]
    assert pensioners["Employed"].mean() < 0.2


def test_approval_rate_leaves_room_for_denials(frame):
    assert 0.60 <= frame[LABEL].mean() <= 0.75


def test_every_row_passes_the_schema(frame):
    assert len(frame) > 100
    for _, row in frame.iterrows():
        for party, features in SYNTHETIC_SCHEMA.features.items():
            record = {f.name: (None if f.nullable and row[f.name] is None else row[f.name]) for f in features}
            record = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
            SYNTHETIC_SCHEMA.validate_record(party, record)


def test_label_rule_is_monotone_in_years_employed(frame):
    rows = frame.head(500).copy()
    noise = np.zeros(len(rows))
    previous = None
    for label in YEARS_EMPLOYED_BINS:
        rows["Years_employed"] = label
        score = approval_score(rows, noise)
        if previous is not None:
            assert (score >= previous).all()
        previous = score
    assert (approval_score(frame, np.zeros(len(frame))) > APPROVAL_THRESHOLD).mean() > 0.5
