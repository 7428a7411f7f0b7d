"""Seeded, deterministic generator of synthetic applicant records shaped like the public credit-card data.

Label rule (documented in the README): an applicant is approved when

    score = 1.0 * (ln(Total_income) - ln(157500)) / 0.5
          + 1.2 * (Account_age - 30) / 17
          + 0.6 * index(Years_employed bin)        # 0 for "0-2" ... 5 for "18+"
          + 0.6 * Employed + 0.3 * Own_property + 0.2 * Own_car
          + 0.25 * (Education_type in {Higher education, Academic degree})
          - 0.4 * (Num_children >= 3)
          + Normal(0, 0.7) noise
    > APPROVAL_THRESHOLD

Every term but the noise is non-decreasing in years employed, so a better bin never hurts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from credit_model.training.data_schemas import (
    EDUCATION_TYPES, FAMILY_STATUSES, HOUSING_TYPES, INCOME_TYPES, OCCUPATION_TYPES,
    YEARS_EMPLOYED_BINS, bin_of_years,
)

LABEL = "Approved"
APPROVAL_THRESHOLD = 0.8
MEDIAN_INCOME = 157_500.0

_INCOME_P = (0.51, 0.23, 0.17, 0.08, 0.01)
_EDUCATION_P = (0.68, 0.27, 0.03, 0.011, 0.009)
_FAMILY_P = (0.69, 0.13, 0.08, 0.06, 0.04)
_HOUSING_P = (0.89, 0.05, 0.03, 0.015, 0.01, 0.005)
_OCCUPATION_W = (
    0.17, 0.10, 0.095, 0.08, 0.06, 0.04, 0.034, 0.033, 0.018, 0.016, 0.015, 0.009, 0.005,
    0.004, 0.004, 0.0024, 0.0018, 0.0016,
)
_CHILDREN_P = (0.645, 0.225, 0.105, 0.018, 0.005, 0.002)


def _normalised(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


def approval_score(df: pd.DataFrame, noise: np.ndarray) -> np.ndarray:
    """The documented label rule's score (approved when it exceeds APPROVAL_THRESHOLD)."""
    bin_index = df["Years_employed"].map(YEARS_EMPLOYED_BINS.index).to_numpy()
    higher = df["Education_type"].isin(["Higher education", "Academic degree"]).to_numpy()
    return (
        1.0 * (np.log(df["Total_income"].to_numpy()) - np.log(MEDIAN_INCOME)) / 0.5
        + 1.2 * (df["Account_age"].to_numpy() - 30) / 17
        + 0.6 * bin_index
        + 0.6 * df["Employed"].to_numpy()
        + 0.3 * df["Own_property"].to_numpy()
        + 0.2 * df["Own_car"].to_numpy()
        + 0.25 * higher
        - 0.4 * (df["Num_children"].to_numpy() >= 3)
        + noise
    )


def generate_applicants(n: int, seed: int = 0) -> pd.DataFrame:
    """Return n applicants (all three parties' raw features) plus the Approved label, deterministically."""
    if n <= 0:
        raise ValueError("n must be positive")
    rng = np.random.default_rng(seed)
    income_type = rng.choice(INCOME_TYPES, n, p=_normalised(_INCOME_P))
    pensioner = income_type == "Pensioner"
    student = income_type == "Student"

    age = np.where(pensioner, rng.integers(55, 70, n), np.clip(rng.normal(41, 10, n), 21, 66))
    age = np.where(student, rng.integers(21, 30, n), age).astype(int)

    family = rng.choice(FAMILY_STATUSES, n, p=_normalised(_FAMILY_P))
    family = np.where((age > 60) & (rng.random(n) < 0.15), "Widow", family)
    children = rng.choice(len(_CHILDREN_P), n, p=_normalised(_CHILDREN_P))
    children = np.where(pensioner & (rng.random(n) < 0.9), 0, children)
    couple = np.isin(family, ["Married", "Civil marriage"])
    household = 1 + couple + children + (rng.random(n) < 0.03)

    education = rng.choice(EDUCATION_TYPES, n, p=_normalised(_EDUCATION_P))
    occupation = rng.choice(OCCUPATION_TYPES, n, p=_normalised(_OCCUPATION_W)).astype(object)
    missing_occupation = np.where(pensioner, rng.random(n) < 0.97, rng.random(n) < 0.15)
    occupation[missing_occupation] = None

    housing = rng.choice(HOUSING_TYPES, n, p=_normalised(_HOUSING_P))
    housing = np.where((age < 30) & (rng.random(n) < 0.12), "With parents", housing)

    factor = np.ones(n)
    factor *= np.where(np.isin(education, ["Higher education", "Academic degree"]), 1.25, 1.0)
    factor *= np.where(occupation == "Managers", 1.3, 1.0)
    factor *= np.where(pensioner, 0.75, 1.0) * np.where(student, 0.6, 1.0)
    factor *= np.where(income_type == "Commercial associate", 1.1, 1.0)
    income = MEDIAN_INCOME * factor * np.exp(rng.normal(0.0, 0.45, n)) / 1.03
    income = np.round(np.clip(income, 27_000, 1_575_000) / 450.0) * 450.0

    employed = np.where(pensioner, rng.random(n) < 0.1, rng.random(n) < 0.98)
    years = np.minimum(rng.gamma(1.3, 5.0, n), np.maximum(age - 18, 0))
    years = np.where(employed, years, 0.0)

    df = pd.DataFrame({
        "Own_car": rng.random(n) < 0.37,
        "Own_property": rng.random(n) < 0.67,
        "Mobile_phone": rng.random(n) < 0.998,
        "Num_children": children.astype(int),
        "Household_size": household.astype(int),
        "Total_income": income.astype(float),
        "Age": age,
        "Income_type": income_type,
        "Education_type": education,
        "Family_status": family,
        "Occupation_type": occupation,
        "Housing_type": housing,
        "Account_age": rng.integers(0, 61, n),
        "Years_employed": [bin_of_years(y) for y in years],
        "Employed": employed,
    })
    score = approval_score(df, rng.normal(0.0, 0.7, n))
    df[LABEL] = score > APPROVAL_THRESHOLD
    return df
