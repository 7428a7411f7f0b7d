"""Readers of the real credit-card data: the raw application/credit pair, the merged Kaggle files, the demo table.

The merged files and the demo table are committed, compacted, in `credit_model/training/data/` (see DATA.md there;
`write_compact_data` / `python -m credit_model.training.real_data SHARED_DIR` regenerates them). Every reader returns
one row per applicant with the project's raw features by party and the label `Approved` (generator.LABEL),
so the frame plugs into the preprocessors and the trainer as it is; extra columns are ignored by them.

1. `load_real_data(application_csv, credit_csv)`: the public application_record.csv + credit_record.csv pair.
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

2. `load_kaggle("train" | "test")` (or `read_kaggle_csv(path)`, which also reads the original merged CSVs):
   the Kaggle data merged per applicant (columns of the merged files, one row per applicant ID).
   - user:  Own_car / Own_property: "Has a car" / "Has a property" == "Y";
            Mobile_phone: "Has a phone" == 1 (the demo's Mobile_phone; "Has a mobile phone" is 1 for everyone);
            Num_children: "Children count"; Household_size: "Family member count"; Total_income: "Income";
            Age: floor(-"Age" / 365.25) ("Age" is a negative day count, like DAYS_BIRTH);
            Income_type: "Employment status"; Education_type: "Education level"; Family_status: "Marital status";
            Occupation_type: "Job title", None when empty; Housing_type: "Dwelling" (values as they are).
   - bank:  Account_age: -"Account age" (months, 0..60).
   - agency: Employed: "Employment length" < 0 (365243 = not employed); Employment_years: -"Employment length" /
            365.25 as a float, 0.0 when not employed; Years_employed: data_schemas.bin_of_years(Employment_years).
   - not owned by any party (kept for analysis, unused by the pipeline): Gender ("F"/"M"),
            Work_phone: "Has a work phone" == 1, Email: "Has an email" == 1.
   - Approved: "Is high risk" == 0.

3. `load_demo()` (or `read_demo_csv(path)`): the 56-row table the reference (Zama) demo was trained on, its columns
   and categories kept as they are: 0/1 columns (Own_car, Own_property, Mobile_phone, Employed) become booleans,
   Years_employed (the demo's bin index 0..5) becomes its label YEARS_EMPLOYED_BINS[index]
   (index 0 = "0-2" ... 5 = "18+", the demo's YEARS_EMPLOYED_BINS order), Approved: Target == 1.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from credit_model.training.generator import LABEL
from credit_model.training.data_schemas import YEARS_EMPLOYED_BINS, bin_of_years

BAD_STATUSES = {"2", "3", "4", "5"}

DATA_DIR = Path(__file__).with_name("data")
NOT_EMPLOYED_DAYS = 365243  # what the Kaggle data stores as "Employment length" / DAYS_EMPLOYED when not employed
DAYS_PER_YEAR = 365.25


# Columns of the committed compact Kaggle files, in file order: the merged files' columns without "ID"
# (unique per row and disjoint between train and test, so not needed to de-duplicate) and without
# "Has a mobile phone" (1 in every row; the writer checks it).
KAGGLE_COLUMNS = (
    "Gender", "Has a car", "Has a property", "Children count", "Income", "Employment status",
    "Education level", "Marital status", "Dwelling", "Age", "Employment length", "Has a work phone",
    "Has a phone", "Has an email", "Job title", "Family member count", "Account age", "Is high risk",
)
DEMO_COLUMNS = (
    "Own_car", "Own_property", "Mobile_phone", "Num_children", "Household_size", "Total_income", "Age",
    "Income_type", "Education_type", "Family_status", "Occupation_type", "Housing_type", "Account_age",
    "Employed", "Years_employed", "Target",
)
# Output columns of the readers (schema features in schema order, extras, then the label).
KAGGLE_FRAME_COLUMNS = (
    "Own_car", "Own_property", "Mobile_phone", "Num_children", "Household_size", "Total_income", "Age",
    "Income_type", "Education_type", "Family_status", "Occupation_type", "Housing_type", "Account_age",
    "Years_employed", "Employed", "Employment_years", "Gender", "Work_phone", "Email", LABEL,
)
DEMO_FRAME_COLUMNS = (
    "Own_car", "Own_property", "Mobile_phone", "Num_children", "Household_size", "Total_income", "Age",
    "Income_type", "Education_type", "Family_status", "Occupation_type", "Housing_type", "Account_age",
    "Years_employed", "Employed", LABEL,
)

# The originals the compact files are written from (file names in ../shared/data/credit-card-approval/).
SOURCES = {
    "kaggle_train.csv.gz": ("kaggle_merged_train.csv",
                            "116a2982520d906c40256ad88bc6a094fbb0ada64bf4674a0c0b4c3d594a5ce0"),
    "kaggle_test.csv.gz": ("kaggle_merged_test.csv",
                           "9b68e024d90f2bf49195f289bd29c3127a474aeaf6fda6fca47be8c9c2d0af0e"),
    "demo.csv.gz": ("zama_hf_demo_data.csv",
                    "f38bae690d5c9c7a1c6cddcc432ff6a3b518fed91d4acb6e26e4af4b9391ad2a"),
}
APPLICATION_COLUMNS = (
    "ID", "FLAG_OWN_CAR", "FLAG_OWN_REALTY", "FLAG_MOBIL", "CNT_CHILDREN", "CNT_FAM_MEMBERS", "AMT_INCOME_TOTAL",
    "DAYS_BIRTH", "NAME_INCOME_TYPE", "NAME_EDUCATION_TYPE", "NAME_FAMILY_STATUS", "OCCUPATION_TYPE",
    "NAME_HOUSING_TYPE", "DAYS_EMPLOYED",
)
KAGGLE_SPLITS = {"train": "kaggle_train.csv.gz", "test": "kaggle_test.csv.gz"}
DEMO_FILE = "demo.csv.gz"


def load_real_data(application_csv: Path, credit_csv: Path) -> pd.DataFrame:
    """Read both CSV files and return one row per applicant with the project's schema and label."""
    app = pd.read_csv(application_csv)
    _require_columns(application_csv, app.columns, APPLICATION_COLUMNS)
    app = app.drop_duplicates("ID", keep="last").set_index("ID")
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
        "Years_employed": [bin_of_years(y) for y in years],
        "Employed": employed,
    })
    out[LABEL] = ~df["bad"]
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- readers of the merged Kaggle data and the demo


def _require_columns(source: object, columns: Iterable[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in set(columns)]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}")


def _bad(source: object, column: str, values: pd.Series, ok: pd.Series, expected: str) -> None:
    if not ok.all():
        row = int(np.flatnonzero(~ok.to_numpy())[0])
        raise ValueError(f"{source}: column {column!r}, row {row + 1}: {values.iloc[row]!r} is not {expected}")


def _choice(source: object, df: pd.DataFrame, column: str, yes: str, no: str) -> pd.Series:
    values = df[column]
    _bad(source, column, values, values.isin([yes, no]), f"{yes!r} or {no!r}")
    return values.eq(yes)


def _number(source: object, df: pd.DataFrame, column: str, integer: bool = False,
            minimum: float = -math.inf, maximum: float = math.inf) -> pd.Series:
    values = df[column]
    numbers = pd.to_numeric(values, errors="coerce")
    ok = numbers.notna() & np.isfinite(numbers) & numbers.between(minimum, maximum)
    if integer:
        ok &= numbers.mod(1).eq(0)
    kind = "an integer" if integer else "a number"
    _bad(source, column, values, ok, f"{kind} in [{minimum:g}, {maximum:g}]")
    return numbers.astype(int) if integer else numbers.astype(float)


def _text(source: object, df: pd.DataFrame, column: str, nullable: bool = False) -> pd.Series:
    values = df[column].astype(str).str.strip()
    if nullable:
        return values.astype(object).where(values.ne(""), None)
    _bad(source, column, values, values.ne(""), "a non-empty text")
    return values.astype(object)


def _read_text_csv(path: Path) -> pd.DataFrame:
    """Every cell as text ('' for empty), a .gz file decompressed."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, compression="infer")


def read_kaggle_csv(path: Path) -> pd.DataFrame:
    """One merged Kaggle file (the committed .csv.gz or the original merged CSV) as applicant records + label."""
    src = Path(path)
    df = _read_text_csv(src)
    _require_columns(src, df.columns, KAGGLE_COLUMNS)
    days_employed = _number(src, df, "Employment length", integer=True, maximum=NOT_EMPLOYED_DAYS)
    _bad(src, "Employment length", df["Employment length"],
         days_employed.lt(0) | days_employed.eq(NOT_EMPLOYED_DAYS), f"negative or {NOT_EMPLOYED_DAYS}")
    employed = days_employed.lt(0)
    years = np.where(employed, -days_employed.to_numpy(float) / DAYS_PER_YEAR, 0.0)
    age_days = _number(src, df, "Age", integer=True, maximum=-1)
    out = pd.DataFrame({
        "Own_car": _choice(src, df, "Has a car", "Y", "N"),
        "Own_property": _choice(src, df, "Has a property", "Y", "N"),
        "Mobile_phone": _choice(src, df, "Has a phone", "1", "0"),
        "Num_children": _number(src, df, "Children count", integer=True, minimum=0),
        "Household_size": _number(src, df, "Family member count", integer=True, minimum=1),
        "Total_income": _number(src, df, "Income", minimum=0),
        "Age": np.floor(-age_days.to_numpy(float) / DAYS_PER_YEAR).astype(int),
        "Income_type": _text(src, df, "Employment status"),
        "Education_type": _text(src, df, "Education level"),
        "Family_status": _text(src, df, "Marital status"),
        "Occupation_type": _text(src, df, "Job title", nullable=True),
        "Housing_type": _text(src, df, "Dwelling"),
        "Account_age": -_number(src, df, "Account age", integer=True, maximum=0),
        "Years_employed": [bin_of_years(y) for y in years],
        "Employed": employed,
        "Employment_years": years,
        "Gender": _text(src, df, "Gender"),
        "Work_phone": _choice(src, df, "Has a work phone", "1", "0"),
        "Email": _choice(src, df, "Has an email", "1", "0"),
        LABEL: ~_choice(src, df, "Is high risk", "1", "0"),
    })
    _bad(src, "Gender", df["Gender"], out["Gender"].isin(["F", "M"]), "'F' or 'M'")
    return out[list(KAGGLE_FRAME_COLUMNS)].reset_index(drop=True)


def load_kaggle(split: str, data_dir: Path | None = None) -> pd.DataFrame:
    """The committed merged Kaggle data, split "train" (29,165 applicants) or "test" (7,292)."""
    if split not in KAGGLE_SPLITS:
        raise ValueError(f"unknown split {split!r} (allowed: {', '.join(KAGGLE_SPLITS)})")
    return read_kaggle_csv(Path(data_dir or DATA_DIR) / KAGGLE_SPLITS[split])


def read_demo_csv(path: Path) -> pd.DataFrame:
    """The reference demo's table (committed .csv.gz or its original data.csv), its categories as they are."""
    src = Path(path)
    df = _read_text_csv(src)
    _require_columns(src, df.columns, DEMO_COLUMNS)
    bins = _number(src, df, "Years_employed", integer=True, minimum=0, maximum=len(YEARS_EMPLOYED_BINS) - 1)
    out = pd.DataFrame({
        "Own_car": _choice(src, df, "Own_car", "1", "0"),
        "Own_property": _choice(src, df, "Own_property", "1", "0"),
        "Mobile_phone": _choice(src, df, "Mobile_phone", "1", "0"),
        "Num_children": _number(src, df, "Num_children", integer=True, minimum=0),
        "Household_size": _number(src, df, "Household_size", integer=True, minimum=1),
        "Total_income": _number(src, df, "Total_income", minimum=0),
        "Age": _number(src, df, "Age", integer=True, minimum=0),
        "Income_type": _text(src, df, "Income_type"),
        "Education_type": _text(src, df, "Education_type"),
        "Family_status": _text(src, df, "Family_status"),
        "Occupation_type": _text(src, df, "Occupation_type", nullable=True),
        "Housing_type": _text(src, df, "Housing_type"),
        "Account_age": _number(src, df, "Account_age", integer=True, minimum=0),
        "Years_employed": [YEARS_EMPLOYED_BINS[i] for i in bins],
        "Employed": _choice(src, df, "Employed", "1", "0"),
        LABEL: _choice(src, df, "Target", "1", "0"),
    })
    return out[list(DEMO_FRAME_COLUMNS)].reset_index(drop=True)


def load_demo(data_dir: Path | None = None) -> pd.DataFrame:
    """The committed 56-row reference demo table (39 approved)."""
    return read_demo_csv(Path(data_dir or DATA_DIR) / DEMO_FILE)


# ---------------------------------------------------------------- writing the committed compact files


def _fmt_int(value: str) -> str:
    number = float(value)
    if not (math.isfinite(number) and number.is_integer()):
        raise ValueError(f"{value!r} is not an integer")
    return str(int(number))


def _fmt_float(value: str) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return repr(number)  # shortest text that reads back as the same double: fixed, deterministic


def _fmt_text(value: str) -> str:
    return value.strip()


_KAGGLE_FORMAT: dict[str, Callable[[str], str]] = {
    **{c: _fmt_text for c in KAGGLE_COLUMNS},
    **{c: _fmt_int for c in ("Children count", "Age", "Employment length", "Has a work phone", "Has a phone",
                             "Has an email", "Family member count", "Account age", "Is high risk")},
    "Income": _fmt_float,
}
_DEMO_FORMAT: dict[str, Callable[[str], str]] = {
    **{c: _fmt_int for c in DEMO_COLUMNS},
    **{c: _fmt_text for c in ("Income_type", "Education_type", "Family_status", "Occupation_type",
                              "Housing_type")},
    "Total_income": _fmt_float,
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _compact_rows(source: Path, columns: Sequence[str], formats: dict[str, Callable[[str], str]],
                  constant: dict[str, str]) -> list[list[str]]:
    with open(source, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        _require_columns(source, reader.fieldnames or (), [*columns, *constant])
        rows = []
        for number, record in enumerate(reader, start=2):
            for column, value in constant.items():
                if record[column] is None or _fmt_int(record[column]) != value:
                    raise ValueError(f"{source}, line {number}: {column!r} is {record[column]!r}, "
                                     f"expected {value} in every row (the column is dropped)")
            try:
                rows.append([formats[c](record[c]) for c in columns])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}, line {number}: {exc}") from None
    return rows


def compact_csv_bytes(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> bytes:
    """The gzip bytes of a CSV (header + rows, '\n' line ends): level 9, mtime 0, no file name: reproducible."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    return buffer.getvalue()


def write_compact_data(shared_dir: Path, out_dir: Path = DATA_DIR, check_sources: bool = True) -> dict[str, str]:
    """Write kaggle_train.csv.gz, kaggle_test.csv.gz and demo.csv.gz from the originals in shared_dir.

    The originals' sha256 must be the recorded ones (SOURCES) unless check_sources is False. Returns
    {file name: sha256 of the written .gz}; re-running on the same originals gives the same bytes.
    """
    shared_dir, out_dir = Path(shared_dir), Path(out_dir)
    sources = {name: shared_dir / original for name, (original, _) in SOURCES.items()}
    for name, source in sources.items():
        if not source.is_file():
            raise FileNotFoundError(f"{source}: not found")
        if check_sources and sha256_of(source) != SOURCES[name][1]:
            raise ValueError(f"{source}: sha256 {sha256_of(source)} is not the recorded {SOURCES[name][1]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, source in sources.items():
        if name == DEMO_FILE:
            rows, columns = _compact_rows(source, DEMO_COLUMNS, _DEMO_FORMAT, {}), DEMO_COLUMNS
        else:
            rows = _compact_rows(source, KAGGLE_COLUMNS, _KAGGLE_FORMAT, {"Has a mobile phone": "1"})
            columns = KAGGLE_COLUMNS
        data = compact_csv_bytes(rows, columns)
        target = out_dir / name
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        written[name] = hashlib.sha256(data).hexdigest()
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m credit_model.training.real_data",
        description="Regenerate the committed compact data files from the original CSV files.")
    parser.add_argument("shared_dir", type=Path, help="folder holding the original CSV files")
    parser.add_argument("out_dir", type=Path, nargs="?", default=DATA_DIR,
                        help=f"where to write the .csv.gz files (default: {DATA_DIR})")
    args = parser.parse_args(argv)
    for name, digest in write_compact_data(args.shared_dir, args.out_dir).items():
        path = args.out_dir / name
        print(f"{digest}  {path}  ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
