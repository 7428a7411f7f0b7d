"""Per-party preprocessors: JSON round trip, encoding, and refusal of bad input before encryption."""

import json

import numpy as np
import pytest

from credit_model.training.data_schemas import KAGGLE_SCHEMA
from credit_model.preprocessing import PartyPreprocessor
from credit_model.training.real_data import load_kaggle
from credit_model.schema import InputValidationError


@pytest.fixture(scope="module")
def fitted():
    df = load_kaggle("train").head(2000)
    return {p: PartyPreprocessor(p, KAGGLE_SCHEMA).fit(df) for p in ("user", "bank", "agency")}, df


def test_json_round_trip_gives_identical_output(fitted, tmp_path, alice):
    pres, _ = fitted
    for party, pre in pres.items():
        path = tmp_path / f"{party}.json"
        pre.save(path)
        assert json.loads(path.read_text())["format"].startswith("fhe-credit-sim/preprocessor")
        again = PartyPreprocessor.load(path, KAGGLE_SCHEMA)
        np.testing.assert_array_equal(again.transform_records([alice[party]]),
                                      pre.transform_records([alice[party]]))


def test_encoding(fitted, alice):
    pres, df = fitted
    user = pres["user"]
    row = user.transform_records([alice["user"]])[0]
    columns = user.output_columns
    assert row[columns.index("Income_type=Working")] == 1.0
    assert row[columns.index("Income_type=Pensioner")] == 0.0
    assert row[columns.index("Own_car")] == 1.0
    mean, std = user.scaling["Total_income"]
    assert row[columns.index("Total_income")] == pytest.approx((alice["user"]["Total_income"] - mean) / std)
    assert mean == pytest.approx(df["Total_income"].mean())
    missing = user.transform_records([dict(alice["user"], Occupation_type=None)])[0]
    assert missing[columns.index("Occupation_type=Missing")] == 1.0
    agency = pres["agency"].transform_records([{"Years_employed": "11-18", "Employed": False}])
    np.testing.assert_array_equal(agency, [[4.0, 0.0]])


def test_bad_input_is_refused_with_the_field(fitted, alice):
    pres, _ = fitted
    with pytest.raises(InputValidationError, match="Housing_type"):
        pres["user"].transform_records([dict(alice["user"], Housing_type="Castle")])


def test_unfitted_and_mismatched_files_are_refused(fitted, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        PartyPreprocessor("bank", KAGGLE_SCHEMA).transform_records([{"Account_age": 3}])
    data = fitted[0]["bank"].to_dict()
    data["columns"] = ["Something_else"]
    with pytest.raises(ValueError, match="columns"):
        PartyPreprocessor.from_dict(data, KAGGLE_SCHEMA)
    with pytest.raises(ValueError, match="format"):
        PartyPreprocessor.from_dict({**data, "format": "pickle"}, KAGGLE_SCHEMA)
