"""Nothing in the project loads pickle (or a pickle-based format) from disk or wire."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("credit_model", "protocol", "parties", "evaluator", "scenarios")
           for p in (ROOT / d).rglob("*.py")] + [ROOT / "run_scenario.py"]
FORBIDDEN = re.compile(r"\b(import\s+(c?pickle|dill|cloudpickle|shelve|marshal)|from\s+(c?pickle|dill|cloudpickle|shelve)"
                       r"\s+import|joblib\.load|torch\.load|allow_pickle\s*=\s*True|pickle\.loads?|"
                       r"yaml\.load\(|yaml\.unsafe_load|UnsafeLoader|FullLoader)")


def test_the_scan_covers_the_project_and_would_catch_pickle():
    assert len(SOURCES) > 25
    for line in ("import pickle", "from cloudpickle import loads", "np.load(f, allow_pickle=True)",
                 "yaml.load(text)", "x = pickle.loads(b)"):
        assert FORBIDDEN.search(line), line


def test_no_source_file_uses_pickle():
    offenders = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in SOURCES
                 for i, line in enumerate(p.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert offenders == []


def test_concrete_ml_loads_its_processing_file_with_skops_not_pickle():
    """client.zip's serialized_processing.json names a class; Concrete ML reads it with skops and a
    trusted-types list when skops is available (else it would fall back to pickle)."""
    from concrete.ml.common.serialization import USE_SKOPS, decoder
    assert USE_SKOPS and decoder.USE_SKOPS
    assert decoder.pickle_or_skops_loads.__module__.startswith("skops")
