"""Adapter from the public data set's application_record.csv + credit_record.csv to this project's schema.

Derivation (per applicant ID present in both files):
- Own_car / Own_property: FLAG_OWN_CAR / FLAG_OWN_REALTY == "Y"; Mobile_phone: FLAG_MOBIL == 1.
- Num_children: CNT_CHILDREN; Household_size: CNT_FAM_MEMBERS; Total_income: AMT_INCOME_TOTAL.
- Age: floor(-DAYS_BIRTH / 365.25).
- Income_type, Education_type, Family_status, Housing_type, Occupation_type: the NAME_* / OCCUPATION_TYPE
  columns as they are (an empty occupation is missing).
- Employed: DAYS_EMPLOYED < 0 (the data set stores 365243 for people not employed);
  Years_employed: the bin of -DAYS_EMPLOYED / 365.25 years, "0-2" when not employed.
- Account_age: -min(MONTHS_BALANCE), the months since the oldest credit record.
- Approved: False when any STATUS is 2, 3, 4 or 5 (60 days or more past due), True otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .generator import LABEL
from .schema import years_employed_bin

BAD_STATUSES = {"2", "3", "4", "5"}


def load_real_data(application_csv: Path, credit_csv: Path) -> pd.DataFrame:
    """Read both CSV files and return one row per applicant with the project's schema and label."""
    app = pd.read_csv(application_csv).drop_duplicates("ID", keep="last").set_index("ID")
    credit = pd.read_csv(credit_csv, dtype={"STATUS": str})
    missing = {"ID", "MONTHS_BALANCE", "STATUS"} - set(credit.columns)
    if missing:
        raise ValueError(f"{credit_csv}: missing columns {sorted(missing)}")
    grouped = credit.groupby("ID")
    account_age = (-grouped["MONTHS_BALANCE"].min()).rename("Account_age")
    bad = grouped["STATUS"].agg(lambda s: bool(set(s.astype(str)) & BAD_STATUSES)).rename("bad")
    df = app.join(account_age, how="inner").join(bad, how="inner")
    if df.empty:
        raise ValueError("no applicant ID is present in both files")
    days_employed = df["DAYS_EMPLOYED"].astype(float)
    employed = days_employed < 0
    years = np.where(employed, -days_employed / 365.25, 0.0)
    occupation = df["OCCUPATION_TYPE"].astype(object).where(df["OCCUPATION_TYPE"].notna(), None)
    out = pd.DataFrame({
        "Own_car": df["FLAG_OWN_CAR"].eq("Y"),
        "Own_property": df["FLAG_OWN_REALTY"].eq("Y"),
        "Mobile_phone": df["FLAG_MOBIL"].eq(1),
        "Num_children": df["CNT_CHILDREN"].astype(int),
        "Household_size": df["CNT_FAM_MEMBERS"].astype(int),
        "Total_income": df["AMT_INCOME_TOTAL"].astype(float),
        "Age": np.floor(-df["DAYS_BIRTH"].astype(float) / 365.25).astype(int),
        "Income_type": df["NAME_INCOME_TYPE"],
        "Education_type": df["NAME_EDUCATION_TYPE"],
        "Family_status": df["NAME_FAMILY_STATUS"],
        "Occupation_type": occupation,
        "Housing_type": df["NAME_HOUSING_TYPE"],
        "Account_age": df["Account_age"].astype(int),
        "Years_employed": [years_employed_bin(y) for y in years],
        "Employed": employed,
    })
    out[LABEL] = ~df["bad"]
    return out.reset_index(drop=True)
