"""The deployment directory: its manifest (schema, slices, figures), file hashes, version checks, a verified loader."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .preprocessing import PartyPreprocessor
from .schema import PARTIES, Schema, SchemaError

MANIFEST = "manifest.json"
FORMAT = "fhe-credit-sim/deployment/1"
# The committed deployments, one directory each; a deployment is named by its directory here, or given as a path.
DEPLOYMENTS_DIR = Path(__file__).resolve().parent.parent / "deployment_files"
COMMITTED = ("kaggle", "demo", "synthetic", "kaggle_xgboost", "kaggle_logistic")
# The default: the best point of the frontier (bench/frontier.py) that is monotone in years employed and whose warm
# encrypted run is within 2 s on 2 cores (issue 19's rule; BENCHMARKS.md "The accuracy/cost frontier").
DEFAULT = "kaggle_logistic"
DEFAULT_DIR = DEPLOYMENTS_DIR / DEFAULT
# Files every deployment holds besides the manifest.
WARMUP = "warmup_inputs.json"
ARTIFACTS = ("client.zip", "server.zip", "server_simulate.zip", WARMUP) + tuple(
    f"preprocessor_{p}.json" for p in PARTIES)


class DeploymentError(RuntimeError):
    """A deployment directory that is missing, altered or built with other library versions."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    names = ("concrete-ml", "concrete-python", "scikit-learn", "numpy")
    found = {name: version(name) for name in names}
    found["python"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    return found


def write_warmup_inputs(directory: Path) -> None:
    """Encrypt zeros for every party under a fresh key set, write them (WARMUP), forget the keys."""
    import numpy as np

    from credit_model.runtime.fhe_runtime import CircuitSpec, KeyOwner

    spec = CircuitSpec.load(directory)
    owner = KeyOwner(spec)
    inputs = [owner.encrypt(i, np.zeros(t.shape, dtype=np.int64)) for i, t in enumerate(spec.inputs)]
    del owner
    text = json.dumps({"format": "fhe-credit-sim/warmup/1", "inputs": [blob.hex() for blob in inputs]})
    (Path(directory) / WARMUP).write_text(text + "\n", encoding="utf-8")


def write_manifest(directory: Path, content: dict[str, Any]) -> dict[str, Any]:
    """Add format, versions and the sha256 of every artifact, then write manifest.json."""
    directory = Path(directory)
    manifest = {"format": FORMAT, **content, "versions": library_versions(),
                "files": {name: sha256_file(directory / name) for name in ARTIFACTS}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


@dataclass(frozen=True)
class Deployment:
    """A verified deployment directory: manifest and paths, nothing loaded that a role does not need."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def slices(self) -> dict[str, tuple[int, int]]:
        return {p: tuple(self.manifest["parties"][p]["slice"]) for p in PARTIES}

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.directory.name)

    @cached_property
    def schema(self) -> Schema:
        return Schema.from_dict(self.manifest["schema"])

    @property
    def bins(self) -> tuple[str, ...]:
        return self.schema.bins

    @property
    def family(self) -> str:
        """tree | xgboost | logistic (credit_model/training/families.py); a manifest without one holds a tree."""
        return str(self.manifest.get("model", {}).get("family", "tree"))

    @property
    def employed_candidates(self) -> bool:
        """True when the explanation proposes "employed, with at least X years" to an applicant who is not
        employed (the training data holds no non-employed applicant above the first bin; train.py checks)."""
        return bool(self.manifest.get("explanation", {}).get("not_employed_candidates_are_employed"))

    @property
    def is_monotone_in_years(self) -> bool:
        return self.manifest.get("monotonic_cst", {}).get("Years_employed") == 1

    def preprocessor(self, party: str) -> PartyPreprocessor:
        return PartyPreprocessor.load(self.directory / f"preprocessor_{party}.json", self.schema)

    def warmup_inputs(self) -> list[bytes]:
        """Ciphertexts of zeros, one per party, under a key set that was discarded at once: public, they
        let the evaluator prepare an uploaded evaluation key (Concrete's set-up on its first use)."""
        data = json.loads((self.directory / WARMUP).read_text(encoding="utf-8"))
        return [bytes.fromhex(blob) for blob in data["inputs"]]

    def spec(self):
        """The circuit's spec and quantizers from client.zip, for the roles (numpy + concrete.compiler only)."""
        from credit_model.runtime.fhe_runtime import CircuitSpec
        return CircuitSpec.load(self.directory)

    def circuit_server(self, simulate: bool = False, build_dir: Path | None = None):
        """The circuit compiled for the evaluator (concrete.compiler only; build_dir private to it)."""
        from credit_model.runtime.circuit_server import CircuitServer
        return CircuitServer(self.directory, simulate, build_dir)


def resolve(name_or_path: Path | str | None) -> Path:
    """A committed deployment's name (COMMITTED) or a deployment directory; None is the default."""
    if name_or_path is None or name_or_path == "":
        return DEFAULT_DIR
    text = str(name_or_path)
    if text in COMMITTED:
        return DEPLOYMENTS_DIR / text
    return Path(text)


def load_deployment(directory: Path | str | None = None, check_versions: bool = True) -> Deployment:
    """Read and verify a deployment (name or directory); raises DeploymentError with what is wrong and how to fix it."""
    directory = resolve(directory)
    path = directory / MANIFEST
    hint = "regenerate it with `run_scenario.py train`"
    if not path.is_file():
        raise DeploymentError(f"{path} does not exist; {hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeploymentError(f"{path} is not valid JSON ({exc}); {hint}") from exc
    if manifest.get("format") != FORMAT:
        raise DeploymentError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for name in ARTIFACTS:
        expected = manifest.get("files", {}).get(name)
        if not (directory / name).is_file():
            raise DeploymentError(f"{directory / name} is missing; {hint}")
        actual = sha256_file(directory / name)
        if actual != expected:
            raise DeploymentError(
                f"{directory / name}: sha256 {actual[:16]}… does not match the manifest's "
                f"{str(expected)[:16]}…; the file was altered or belongs to another build; {hint}")
    if check_versions:
        current = library_versions()
        for name in ("concrete-ml", "concrete-python", "python"):
            built = manifest.get("versions", {}).get(name)
            if built != current[name]:
                raise DeploymentError(
                    f"{directory} was built with {name} {built}, this environment has "
                    f"{current[name]}; install the pinned versions (setup.cfg) or {hint}")
    try:
        schema = Schema.from_dict(manifest.get("schema"))
    except SchemaError as exc:
        raise DeploymentError(f"{path}: {exc}; {hint}") from None
    if tuple(manifest.get("years_employed_bins", ())) != schema.bins:
        raise DeploymentError(f"{path}: years_employed_bins differ from the schema's Years_employed categories")
    return Deployment(directory, manifest)
