"""The real-data readers derive the project's schema and label from the files' own columns; the committed
compact files match DATA.md, hold the documented counts, and are reproduced by the writer."""

import csv
import gzip
import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest

from credit_model.training.generator import LABEL
from credit_model.preprocessing import PartyPreprocessor
from credit_model.training.real_data import (
    DATA_DIR, KAGGLE_COLUMNS, load_demo, load_kaggle, load_real_data,
    read_demo_csv, read_kaggle_csv, write_compact_data,
)
from credit_model.training.data_schemas import KAGGLE_SCHEMA, YEARS_EMPLOYED_BINS, bin_of_years
from credit_model.schema import PARTIES


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
    for party, features in KAGGLE_SCHEMA.features.items():
        for _, row in df.reset_index().iterrows():
            record = {f.name: row[f.name] for f in features}
            KAGGLE_SCHEMA.validate_record(party, {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()})


def test_application_file_without_a_column_is_refused(csv_files, tmp_path):
    app_path, credit_path = csv_files
    short = tmp_path / "short.csv"
    pd.read_csv(app_path).drop(columns=["DAYS_EMPLOYED", "FLAG_OWN_CAR"]).to_csv(short, index=False)
    with pytest.raises(ValueError, match=r"missing columns \['FLAG_OWN_CAR', 'DAYS_EMPLOYED'\]"):
        load_real_data(short, credit_path)


def test_files_without_common_ids_are_refused(csv_files, tmp_path):
    app_path, _ = csv_files
    other = tmp_path / "other.csv"
    pd.DataFrame({"ID": [77], "MONTHS_BALANCE": [0], "STATUS": ["0"]}).to_csv(other, index=False)
    with pytest.raises(ValueError, match="no applicant ID"):
        load_real_data(app_path, other)


# ---------------------------------------------------------------- the committed merged Kaggle files and demo table

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "credit-card-approval"
COMMITTED = ("kaggle_train.csv.gz", "kaggle_test.csv.gz", "demo.csv.gz")
DEMO_ORIGINAL_SHA256 = "f38bae690d5c9c7a1c6cddcc432ff6a3b518fed91d4acb6e26e4af4b9391ad2a"


def _recorded_sha256(name):
    lines = [line for line in (DATA_DIR / "DATA.md").read_text(encoding="utf-8").splitlines()
             if line.startswith(f"| {name} |")]
    assert len(lines) == 1, f"DATA.md should have one table row for {name}"
    return re.search(r"\b[0-9a-f]{64}\b", lines[0]).group(0)


def _csv_rows(name):
    """The committed file's rows, read independently of the loader (csv module + gzip)."""
    with gzip.open(DATA_DIR / name, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def kaggle():
    return {split: load_kaggle(split) for split in ("train", "test")}


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_files_match_data_md(name):
    assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == _recorded_sha256(name)


def test_demo_file_is_the_original_table():
    assert hashlib.sha256(gzip.decompress((DATA_DIR / "demo.csv.gz").read_bytes())).hexdigest() \
        == DEMO_ORIGINAL_SHA256


@pytest.mark.parametrize("split,rows,high_risk", [("train", 29165, 499), ("test", 7292, 117)])
def test_kaggle_counts(kaggle, split, rows, high_risk):
    records = _csv_rows(f"kaggle_{split}.csv.gz")
    assert list(records[0]) == list(KAGGLE_COLUMNS)
    assert len(records) == rows
    assert sum(r["Is high risk"] == "1" for r in records) == high_risk
    assert {r["Is high risk"] for r in records} == {"0", "1"}
    df = kaggle[split]
    assert len(df) == rows and int((~df[LABEL]).sum()) == high_risk
    assert df[LABEL].dtype == bool


def test_kaggle_high_risk_share_is_1_69_percent():
    counts = [(len(rows), sum(r["Is high risk"] == "1" for r in rows))
              for rows in (_csv_rows("kaggle_train.csv.gz"), _csv_rows("kaggle_test.csv.gz"))]
    total, high = map(sum, zip(*counts))
    assert (total, high) == (36457, 616)
    assert round(100 * high / total, 2) == 1.69


@pytest.mark.parametrize("split", ["train", "test"])
def test_kaggle_derived_values_are_plausible(kaggle, split):
    df = kaggle[split]
    raw = pd.DataFrame(_csv_rows(f"kaggle_{split}.csv.gz"))
    assert df["Age"].between(18, 75).all()
    assert df["Num_children"].between(0, 20).all()
    assert df["Household_size"].between(1, 25).all()
    assert df["Total_income"].between(20_000, 2_000_000).all()
    assert df["Account_age"].between(0, 60).all()
    assert df["Employment_years"].between(0, 50).all()
    assert (df["Employment_years"] <= df["Age"] - 14).all()
    not_employed = ~df["Employed"]
    assert (raw["Employment length"][not_employed] == "365243").all()
    assert (df["Employment_years"][not_employed] == 0).all()
    assert (df["Years_employed"][not_employed] == "0-2").all()
    assert (df["Years_employed"] == [bin_of_years(y) for y in df["Employment_years"]]).all()
    assert set(df["Years_employed"]) == set(YEARS_EMPLOYED_BINS)
    assert (df["Mobile_phone"] == raw["Has a phone"].eq("1")).all()
    assert (df["Occupation_type"].isna() == raw["Job title"].eq("")).all()
    assert df["Occupation_type"].isna().sum() == {"train": 9027, "test": 2296}[split]
    assert set(df["Gender"]) == {"F", "M"}
    # Every row passes the project's input validation for each party, and the frame fits the preprocessors.
    for party in PARTIES:
        names = [f.name for f in KAGGLE_SCHEMA.features[party]]
        for record in df[names].astype(object).where(df[names].notna(), None).to_dict("records"):
            KAGGLE_SCHEMA.validate_record(party, {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()})
    sample = df.iloc[::97]
    for party in PARTIES:
        matrix = PartyPreprocessor(party, KAGGLE_SCHEMA).fit(sample).transform_frame(sample)
        assert matrix.shape[0] == len(sample)


def test_kaggle_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        load_kaggle("validation")


def test_demo_table():
    records = _csv_rows("demo.csv.gz")
    assert len(records) == 56 and sum(r["Target"] == "1" for r in records) == 39
    df = load_demo()
    assert len(df) == 56 and int(df[LABEL].sum()) == 39
    assert (df["Years_employed"] == [YEARS_EMPLOYED_BINS[int(r["Years_employed"])] for r in records]).all()
    assert YEARS_EMPLOYED_BINS[0] == "0-2" and YEARS_EMPLOYED_BINS[5] == "18+"
    assert set(df["Income_type"]) == {"Salaried", "Self-employed", "Pensioner", "Student"}
    assert {"Engineer", "Retired"} <= set(df["Occupation_type"])
    assert df["Employed"].sum() == 44 and df["Mobile_phone"].sum() == 34
    assert df["Total_income"].iloc[0] == 27500.000000000004  # values kept exactly


def test_missing_columns_are_named(tmp_path):
    kaggle_csv = tmp_path / "kaggle.csv"
    kaggle_csv.write_text(",".join(c for c in KAGGLE_COLUMNS if c not in ("Income", "Dwelling")) + "\n")
    with pytest.raises(ValueError, match=r"missing columns \['Income', 'Dwelling'\]"):
        read_kaggle_csv(kaggle_csv)
    demo_csv = tmp_path / "demo.csv"
    demo_csv.write_text("Own_car,Target\n1,1\n")
    with pytest.raises(ValueError, match="missing columns .*'Years_employed'"):
        read_demo_csv(demo_csv)


def test_bad_values_are_named(tmp_path):
    text = gzip.decompress((DATA_DIR / "kaggle_test.csv.gz").read_bytes()).decode()
    header, first, rest = text.split("\n", 2)
    bad = first.split(",")
    bad[KAGGLE_COLUMNS.index("Employment length")] = "12"
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, ",".join(bad), rest]))
    with pytest.raises(ValueError, match="'Employment length', row 1"):
        read_kaggle_csv(path)


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")


@needs_shared
def test_writer_reproduces_the_committed_bytes(tmp_path):
    written = write_compact_data(SHARED, tmp_path)
    assert sorted(written) == sorted(COMMITTED)
    for name in COMMITTED:
        ours, committed = (tmp_path / name).read_bytes(), (DATA_DIR / name).read_bytes()
        assert gzip.decompress(ours) == gzip.decompress(committed), name
        assert ours == committed, f"{name}: same CSV, different gzip bytes (another zlib build?)"
        assert written[name] == _recorded_sha256(name)


@needs_shared
def test_originals_read_like_the_compact_files(kaggle):
    pd.testing.assert_frame_equal(read_kaggle_csv(SHARED / "kaggle_merged_test.csv"), kaggle["test"])
    pd.testing.assert_frame_equal(read_demo_csv(SHARED / "zama_hf_demo_data.csv"), load_demo())


@needs_shared
def test_writer_refuses_a_changed_original(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("kaggle_merged_train.csv", "kaggle_merged_test.csv", "zama_hf_demo_data.csv"):
        (shared / name).write_bytes((SHARED / name).read_bytes())
    with open(shared / "zama_hf_demo_data.csv", "a") as f:
        f.write("1,1,1,0,1,10000.0,30,Salaried,Secondary,Single,Teacher,With parents,12,1,1,1\n")
    with pytest.raises(ValueError, match="sha256"):
        write_compact_data(shared, tmp_path / "out")
    assert not (tmp_path / "out").exists()
