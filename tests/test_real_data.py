"""The real-data adapter derives the project's schema and label from the public files' own columns."""

import pandas as pd
import pytest

from credit_model.generator import LABEL
from credit_model.real_data import load_real_data
from credit_model.schema import FEATURES, validate_record


@pytest.fixture
def csv_files(tmp_path):
    app = pd.DataFrame({
        "ID": [1, 2, 3, 9],
        "CODE_GENDER": ["F", "M", "F", "M"],
        "FLAG_OWN_CAR": ["Y", "N", "N", "Y"],
        "FLAG_OWN_REALTY": ["Y", "Y", "N", "N"],
        "CNT_CHILDREN": [0, 2, 0, 1],
        "AMT_INCOME_TOTAL": [157500.0, 90000.0, 270000.0, 100000.0],
        "NAME_INCOME_TYPE": ["Working", "Pensioner", "Commercial associate", "Working"],
        "NAME_EDUCATION_TYPE": ["Higher education", "Secondary / secondary special",
                                "Incomplete higher", "Lower secondary"],
        "NAME_FAMILY_STATUS": ["Married", "Widow", "Single / not married", "Married"],
        "NAME_HOUSING_TYPE": ["House / apartment", "With parents", "Rented apartment", "House / apartment"],
        "DAYS_BIRTH": [-12005, -23000, -9000, -15000],
        "DAYS_EMPLOYED": [-4542, 365243, -500, -100],
        "FLAG_MOBIL": [1, 1, 1, 1],
        "FLAG_WORK_PHONE": [0, 0, 1, 0],
        "FLAG_PHONE": [0, 1, 0, 0],
        "FLAG_EMAIL": [0, 0, 0, 1],
        "OCCUPATION_TYPE": ["Managers", None, "Sales staff", "Drivers"],
        "CNT_FAM_MEMBERS": [2.0, 1.0, 1.0, 3.0],
    })
    credit = pd.DataFrame({
        "ID": [1, 1, 1, 2, 2, 3, 3, 3],
        "MONTHS_BALANCE": [0, -1, -20, 0, -5, 0, -2, -40],
        "STATUS": ["C", "0", "X", "0", "3", "1", "0", "C"],
    })
    app_path, credit_path = tmp_path / "application_record.csv", tmp_path / "credit_record.csv"
    app.to_csv(app_path, index=False)
    credit.to_csv(credit_path, index=False)
    return app_path, credit_path


def test_derivation(csv_files):
    df = load_real_data(*csv_files).set_index("Total_income")
    assert len(df) == 3  # ID 9 has no credit record
    first = df.loc[157500.0]
    assert first["Years_employed"] == "11-18" and first["Employed"]  # 4542 days = 12.4 years
    assert first["Account_age"] == 20 and first["Age"] == 32 and first[LABEL]
    pensioner = df.loc[90000.0]
    assert not pensioner["Employed"] and pensioner["Years_employed"] == "0-2"
    assert pensioner["Occupation_type"] is None
    assert not pensioner[LABEL]  # STATUS 3: 90-119 days past due
    assert df.loc[270000.0][LABEL]  # STATUS 1 (30-59 days) is not a denial
    for party, features in FEATURES.items():
        for _, row in df.reset_index().iterrows():
            record = {f.name: row[f.name] for f in features}
            validate_record(party, {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()})


def test_files_without_common_ids_are_refused(csv_files, tmp_path):
    app_path, _ = csv_files
    other = tmp_path / "other.csv"
    pd.DataFrame({"ID": [77], "MONTHS_BALANCE": [0], "STATUS": ["0"]}).to_csv(other, index=False)
    with pytest.raises(ValueError, match="no applicant ID"):
        load_real_data(app_path, other)
