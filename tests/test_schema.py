"""The deployment's schema: raw-input validation names the field and the allowed values and coerces nothing;
a schema round-trips through a manifest and a malformed one is refused naming the place."""

import copy

import pytest

from credit_model.training.data_schemas import DEMO_SCHEMA, KAGGLE_SCHEMA, SCHEMAS, bin_of_years
from credit_model.schema import PARTIES, InputValidationError, Schema, SchemaError


@pytest.fixture
def validate_record(schema):
    return schema.validate_record


def test_valid_records_pass_unchanged(alice, validate_record):
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
def test_bad_user_values_name_the_field(validate_record, alice, field, value, problem):
    record = dict(alice["user"], **{field: value})
    with pytest.raises(InputValidationError) as err:
        validate_record("user", record)
    assert err.value.field == field
    assert problem in str(err.value)


def test_unknown_category_lists_allowed_values(validate_record, alice):
    with pytest.raises(InputValidationError) as err:
        validate_record("agency", dict(alice["agency"], Years_employed="40+"))
    assert "'18+'" in err.value.allowed and "'0-2'" in err.value.allowed


def test_missing_and_unknown_fields(validate_record, alice):
    record = dict(alice["bank"])
    del record["Account_age"]
    with pytest.raises(InputValidationError, match="Account_age.*is missing"):
        validate_record("bank", record)
    with pytest.raises(InputValidationError, match="unknown field"):
        validate_record("bank", dict(alice["bank"], Salary=3))


def test_occupation_may_be_missing(validate_record, alice):
    assert validate_record("user", dict(alice["user"], Occupation_type=None))["Occupation_type"] is None


def test_years_employed_bins_are_half_open():
    assert [bin_of_years(y) for y in (0, 1.99, 2, 4.99, 5, 8, 11, 17.9, 18, 40)] == [
        "0-2", "0-2", "2-5", "2-5", "5-8", "8-11", "11-18", "11-18", "18+", "18+"]
    with pytest.raises(ValueError):
        bin_of_years(-0.5)


def test_every_feature_has_one_owner(schema):
    names = [f.name for party in schema.features.values() for f in party]
    assert len(names) == len(set(names)) == 15
    assert schema.party_of("Account_age") == "bank" and schema.party_of("Employed") == "agency"
    assert schema.bins == ("0-2", "2-5", "5-8", "8-11", "11-18", "18+")


def test_the_default_deployment_carries_the_kaggle_schema(deployment, schema):
    assert deployment.manifest["schema"] == KAGGLE_SCHEMA.to_dict() and schema == KAGGLE_SCHEMA
    assert schema.feature("Account_age").maximum == 60  # months of a 60-month window, not a module constant


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schemas_round_trip_and_give_a_valid_example(name):
    schema = SCHEMAS[name]
    assert Schema.from_dict(schema.to_dict()) == schema
    example = schema.example()
    assert {p: schema.validate_record(p, example[p]) for p in PARTIES} == example


def test_a_record_of_one_schema_is_refused_by_another_naming_the_field(alice):
    with pytest.raises(InputValidationError) as err:
        DEMO_SCHEMA.validate_record("user", alice["user"])  # "Working" is a Kaggle income type, not the demo's
    assert err.value.field == "Income_type" and "'Salaried'" in err.value.allowed


@pytest.mark.parametrize("mutate, place", [
    (lambda d: d["parties"].pop("bank"), "schema.parties.bank"),
    (lambda d: d["parties"]["agency"].pop(0), "Years_employed"),
    (lambda d: d["parties"]["user"][0].update(kind="complex"), "schema.parties.user[0].kind"),
    (lambda d: d["parties"]["user"][7].update(categories=[]), "schema.parties.user[7].categories"),
    (lambda d: d["parties"]["bank"][0].update(minimum=10, maximum=1), "schema.parties.bank[0]"),
    (lambda d: d["parties"]["bank"][0].update(name="Account age"), "schema.parties.bank[0].name"),
    (lambda d: d["parties"]["user"][0].update(nullable=True), "schema.parties.user[0].nullable"),
    (lambda d: d["parties"]["bank"].append(dict(d["parties"]["user"][0])), "appears twice"),
    (lambda d: d["years_employed"].update(bins=["0-2"]), "schema.years_employed"),
])
def test_a_malformed_schema_is_refused_naming_the_place(mutate, place):
    data = copy.deepcopy(KAGGLE_SCHEMA.to_dict())
    mutate(data)
    with pytest.raises(SchemaError, match=place.replace("[", r"\[").replace("]", r"\]")):
        Schema.from_dict(data)
