"""The raw-feature schema of each data set a deployment can be trained on: kaggle, demo and synthetic.

Training writes the chosen one into the deployment's manifest; from then on every role, check and tool reads the
schema from the deployment (`Deployment.schema`), never from here. Categories are the data's own values;
ranges are what an input may hold (the data's definition where it has one, e.g. Kaggle's 60-month window).
"""

from __future__ import annotations

from credit_model.schema import Feature, Schema, years_employed_bin

DATA_SETS = ("kaggle", "demo", "synthetic")

# The reference demo's bins (its settings.py YEARS_EMPLOYED_BINS), used by all three data sets.
YEARS_EMPLOYED_BINS = ("0-2", "2-5", "5-8", "8-11", "11-18", "18+")
# Lower edges of the half-open bins [0, 2), [2, 5), ..., [18, inf), to bin a number of years.
YEARS_EMPLOYED_EDGES = (0, 2, 5, 8, 11, 18)

# The public Kaggle data's categories (the synthetic generator draws from the same).
INCOME_TYPES = ("Working", "Commercial associate", "Pensioner", "State servant", "Student")
EDUCATION_TYPES = (
    "Secondary / secondary special", "Higher education", "Incomplete higher", "Lower secondary", "Academic degree",
)
FAMILY_STATUSES = ("Married", "Single / not married", "Civil marriage", "Separated", "Widow")
OCCUPATION_TYPES = (
    "Laborers", "Core staff", "Sales staff", "Managers", "Drivers", "High skill tech staff",
    "Accountants", "Medicine staff", "Cooking staff", "Security staff", "Cleaning staff",
    "Private service staff", "Low-skill Laborers", "Waiters/barmen staff", "Secretaries",
    "Realty agents", "HR staff", "IT staff",
)
HOUSING_TYPES = (
    "House / apartment", "With parents", "Municipal apartment", "Rented apartment",
    "Office apartment", "Co-op apartment",
)

# The reference demo's table: its own categories (data/data.csv of the demo; see credit_model/training/data/DATA.md).
DEMO_INCOME_TYPES = ("Salaried", "Self-employed", "Pensioner", "Student")
DEMO_EDUCATION_TYPES = ("Higher education", "Secondary", "Incomplete higher", "Lower secondary")
DEMO_FAMILY_STATUSES = ("Married", "Single", "Divorced", "Widow")
DEMO_OCCUPATION_TYPES = (
    "Accountant", "Architect", "Artist", "Bus Driver", "Business Owner", "Carpenter", "Consultant",
    "Cooking Staff", "Designer", "Doctor", "Engineer", "Entrepreneur", "Factory Worker", "Lawyer", "Manager",
    "Nurse", "Office Worker", "Plumber", "Retired", "Salesperson", "Scientist", "Software Developer", "Student",
    "Teacher",
)
DEMO_HOUSING_TYPES = ("House / apartment", "Rented apartment", "With parents")


def _applicant(income, education, family, occupation, housing, occupation_nullable: bool) -> tuple[Feature, ...]:
    return (
        Feature("Own_car", "bool"),
        Feature("Own_property", "bool"),
        Feature("Mobile_phone", "bool"),
        Feature("Num_children", "int", minimum=0, maximum=20),
        Feature("Household_size", "int", minimum=1, maximum=25),
        Feature("Total_income", "float", minimum=0, maximum=1e8),
        Feature("Age", "int", minimum=18, maximum=120),
        Feature("Income_type", "category", income),
        Feature("Education_type", "category", education),
        Feature("Family_status", "category", family),
        Feature("Occupation_type", "category", occupation, nullable=occupation_nullable),
        Feature("Housing_type", "category", housing),
    )


def _agency(bins: tuple[str, ...]) -> tuple[Feature, ...]:
    return (Feature("Years_employed", "ordinal", bins), Feature("Employed", "bool"))


# Account_age: the Kaggle data counts months back to the oldest record of a 60-month window.
KAGGLE_SCHEMA = Schema({
    "user": _applicant(INCOME_TYPES, EDUCATION_TYPES, FAMILY_STATUSES, OCCUPATION_TYPES, HOUSING_TYPES, True),
    "bank": (Feature("Account_age", "int", minimum=0, maximum=60),),
    "agency": _agency(YEARS_EMPLOYED_BINS),
})
DEMO_SCHEMA = Schema({
    "user": _applicant(DEMO_INCOME_TYPES, DEMO_EDUCATION_TYPES, DEMO_FAMILY_STATUSES, DEMO_OCCUPATION_TYPES,
                       DEMO_HOUSING_TYPES, False),
    "bank": (Feature("Account_age", "int", minimum=0, maximum=1200),),
    "agency": _agency(YEARS_EMPLOYED_BINS),
})
SYNTHETIC_SCHEMA = Schema({
    "user": _applicant(INCOME_TYPES, EDUCATION_TYPES, FAMILY_STATUSES, OCCUPATION_TYPES, HOUSING_TYPES, True),
    "bank": (Feature("Account_age", "int", minimum=0, maximum=1200),),
    "agency": _agency(YEARS_EMPLOYED_BINS),
})
SCHEMAS = {"kaggle": KAGGLE_SCHEMA, "demo": DEMO_SCHEMA, "synthetic": SYNTHETIC_SCHEMA}


def bin_of_years(years: float) -> str:
    """The bin label of a number of years employed, with the data sets' edges."""
    return years_employed_bin(years, YEARS_EMPLOYED_EDGES, YEARS_EMPLOYED_BINS)
