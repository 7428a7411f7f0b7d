"""Raw-input validation names the field and the allowed values, and coerces nothing."""

import pytest

from credit_model.schema import (
    FEATURES, InputValidationError, YEARS_EMPLOYED_BINS, party_of, validate_record, years_employed_bin,
)


def test_valid_records_pass_unchanged(alice):
    for party, record in alice.items():
        assert validate_record(party, record) == record


@pytest.mark.parametrize("field, value, problem", [
    ("Income_type", "Astronaut", "unknown value"),
    ("Total_income", -1.0, "out of range"),
    ("Num_children", 1.5, "expected an integer"),
    ("Own_car", 1, "expected a boolean"),
    ("Num_children", True, "expected a number"),
    ("Total_income", "95400", "expected a number"),
    ("Family_status", None, "missing"),
    ("Total_income", float("nan"), "out of range"),
])
def test_bad_user_values_name_the_field(alice, field, value, problem):
    record = dict(alice["user"], **{field: value})
    with pytest.raises(InputValidationError) as err:
        validate_record("user", record)
    assert err.value.field == field
    assert problem in str(err.value)


def test_unknown_category_lists_allowed_values(alice):
    with pytest.raises(InputValidationError) as err:
        validate_record("agency", dict(alice["agency"], Years_employed="40+"))
    assert "'18+'" in err.value.allowed and "'0-2'" in err.value.allowed


def test_missing_and_unknown_fields(alice):
    record = dict(alice["bank"])
    del record["Account_age"]
    with pytest.raises(InputValidationError, match="Account_age.*is missing"):
        validate_record("bank", record)
    with pytest.raises(InputValidationError, match="unknown field"):
        validate_record("bank", dict(alice["bank"], Salary=3))


def test_occupation_may_be_missing(alice):
    assert validate_record("user", dict(alice["user"], Occupation_type=None))["Occupation_type"] is None


def test_years_employed_bins_are_half_open():
    assert [years_employed_bin(y) for y in (0, 1.99, 2, 4.99, 5, 8, 11, 17.9, 18, 40)] == [
        "0-2", "0-2", "2-5", "2-5", "5-8", "8-11", "11-18", "11-18", "18+", "18+"]
    with pytest.raises(ValueError):
        years_employed_bin(-0.5)


def test_every_feature_has_one_owner():
    names = [f.name for party in FEATURES.values() for f in party]
    assert len(names) == len(set(names)) == 15
    assert party_of("Account_age") == "bank" and party_of("Employed") == "agency"
    assert len(YEARS_EMPLOYED_BINS) == 6
