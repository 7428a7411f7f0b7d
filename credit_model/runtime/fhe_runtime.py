"""Encrypt, decrypt and (de)quantize for the deployed circuit with only numpy and concrete.compiler."""

from __future__ import annotations

import io
import json
import secrets
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from concrete.compiler import ClientProgram, Keyset, LweSecretKey, ProgramInfo, TransportValue, Value

# The files this module reads in client.zip are a few tens of kB; refuse anything much larger.
MAX_CLIENT_ZIP_BYTES = 16 << 20
MAX_MEMBER_BYTES = 4 << 20
# Layout of a serialized LWE secret key (concrete-python 2.10, pinned; same constant as fhe_model.py):
# this header, the dimension as a little-endian u64, then one u64 per coefficient. Concrete aborts the
# whole process (a Rust panic) on a blob that does not fit, so peer blobs are checked before use.
SECRET_KEY_HEADER = bytes.fromhex(
    "0300000000000000302e35000000000300000000000000302e311900000000000000"
    "636f72655f63727970746f3a3a4c77655365637265744b657900000000")
# The Concrete ML classes a deployment may hold, by family (credit_model/training/families.py, same names).
MODEL_FAMILIES = {"concrete.ml.sklearn.tree.DecisionTreeClassifier": "tree",
                  "concrete.ml.sklearn.xgb.XGBClassifier": "xgboost",
                  "concrete.ml.sklearn.linear_model.LogisticRegression": "logistic"}
EVALUATION_KEY_LISTS = ("lweBootstrapKeys", "lweKeyswitchKeys", "packingKeyswitchKeys")
_NUMPY_SCALAR_DTYPES = {"numpy_float": ("float16", "float32", "float64"),
                        "numpy_integer": ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}


def check_secret_key_layout(blob: bytes, dimension: int, key_id: int) -> None:
    """Raise ValueError unless `blob` is exactly a serialized binary LWE secret key of this dimension."""
    expected = SECRET_KEY_HEADER + dimension.to_bytes(8, "little")
    if len(blob) != len(expected) + 8 * dimension or not blob.startswith(expected):
        raise ValueError(f"secret key {key_id} is not a serialized LWE secret key of dimension {dimension} "
                         f"({len(blob)} bytes, expected {len(expected) + 8 * dimension})")
    if np.frombuffer(blob, dtype="<u8", offset=len(expected)).max(initial=0) > 1:
        raise ValueError(f"secret key {key_id} has coefficients other than 0 and 1 (expected a binary key)")


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ValueError(f"client.zip has no {name}") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise ValueError(f"client.zip: {name} is {info.file_size} bytes, more than {MAX_MEMBER_BYTES}")
    with archive.open(info) as handle:
        data = handle.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise ValueError(f"client.zip: {name} is larger than {MAX_MEMBER_BYTES} bytes")
    return data


def _number(entry: Any, what: str):
    """A number from Concrete ML's JSON dump: plain, or a typed numpy scalar decoded as Concrete ML does."""
    typed = isinstance(entry, dict) and entry.get("dtype") in _NUMPY_SCALAR_DTYPES.get(entry.get("type_name"), ())
    value = entry.get("serialized_value") if typed else entry
    if type(value) not in (int, float):
        raise ValueError(f"{what}: unsupported value {json.dumps(entry)[:80]}")
    if not typed:
        return value
    return (np.int64(value) if entry["type_name"] == "numpy_integer" else np.float64(value)).astype(entry["dtype"])


@dataclass(frozen=True)
class UniformQuantizer:
    """The numpy half of Concrete ML's UniformQuantizer: quant / dequant with its JSON parameters."""

    n_bits: int
    is_signed: bool
    is_narrow: bool
    no_clipping: bool
    scale: Any
    zero_point: Any
    offset: int

    @classmethod
    def from_json(cls, entry: Any, what: str) -> UniformQuantizer:
        if not isinstance(entry, dict) or entry.get("type_name") != "UniformQuantizer":
            raise ValueError(f"{what} is not a UniformQuantizer")
        p = entry.get("serialized_value")
        try:
            flags = {k: p[k] for k in ("is_signed", "is_narrow", "no_clipping")}
            if not all(isinstance(v, bool) for v in flags.values()) or type(p["n_bits"]) is not int:
                raise ValueError(f"{what}: n_bits must be an int and flags booleans")
            return cls(n_bits=p["n_bits"], scale=_number(p["scale"], f"{what}.scale"),
                       zero_point=_number(p["zero_point"], f"{what}.zero_point"),
                       offset=int(_number(p["offset"], f"{what}.offset")), **flags)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{what}: missing or malformed field ({exc})") from None

    def quant(self, values: np.ndarray) -> np.ndarray:
        q = np.rint(values / self.scale + self.zero_point)
        if not self.no_clipping:
            q = q.clip(-self.offset + int(self.is_narrow), 2 ** self.n_bits - 1 - self.offset)
        return q.astype(np.int64)

    def dequant(self, q: np.ndarray) -> np.ndarray:
        return self.scale * (q - np.asarray(self.zero_point, dtype=np.float64))


@dataclass(frozen=True)
class TensorInfo:
    """One encrypted circuit argument or result: its shape, integer encoding and secret key id."""

    shape: tuple[int, ...]
    width: int
    is_signed: bool
    key_id: int

    @classmethod
    def from_gate(cls, gate: dict, what: str) -> TensorInfo:
        try:
            lwe = gate["typeInfo"]["lweCiphertext"]
            integer = lwe["encoding"]["integer"]
            return cls(tuple(int(d) for d in lwe["abstractShape"]["dimensions"]), int(integer["width"]),
                       bool(integer["isSigned"]), int(lwe["encryption"]["keyId"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{what} is not an encrypted integer tensor ({exc})") from None

    @property
    def bounds(self) -> tuple[int, int]:
        return (-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1) if self.is_signed else (0, (1 << self.width) - 1)

    def check(self, q: Any, what: str) -> np.ndarray:
        """q as a contiguous int64 array, or ValueError if its type, shape or range does not fit."""
        if not isinstance(q, np.ndarray) or not np.issubdtype(q.dtype, np.integer):
            raise ValueError(f"{what} must be a numpy integer array, not {type(q).__name__} "
                             f"{getattr(q, 'dtype', '')}".rstrip())
        if q.shape != self.shape:
            raise ValueError(f"{what} has shape {q.shape}, the circuit expects {self.shape}")
        low, high = self.bounds
        if q.size and (q.min() < low or q.max() > high):
            raise ValueError(f"{what} has values in [{q.min()}, {q.max()}], the circuit expects [{low}, {high}]")
        return np.ascontiguousarray(q, dtype=np.int64)


class CircuitSpec:
    """What a role needs from client.zip: the ProgramInfo, the circuit's inputs/outputs and the quantizers."""

    def __init__(self, specs_json: bytes, processing_json: bytes):
        specs = json.loads(specs_json)
        tfhers = specs.pop("tfhers_specs", None) or {}
        if any(t is not None for kind in tfhers.values() for types in kind.values() for t in types):
            raise ValueError("TFHE-rs inputs or outputs are not supported")
        if len(specs.get("circuits", ())) != 1:
            raise ValueError("client.specs.json must describe exactly one circuit")
        circuit = specs["circuits"][0]
        self.function_name: str = circuit["name"]
        self.inputs = tuple(TensorInfo.from_gate(g, f"input {i}") for i, g in enumerate(circuit["inputs"]))
        self.outputs = tuple(TensorInfo.from_gate(g, f"output {i}") for i, g in enumerate(circuit["outputs"]))
        if len(self.outputs) != 1:
            raise ValueError(f"expected one circuit output, found {len(self.outputs)}")
        self.input_key_ids = tuple(sorted({t.key_id for t in self.inputs}))
        self.output_key_ids = tuple(sorted({t.key_id for t in self.outputs}))
        self.program_info = ProgramInfo.deserialize(json.dumps(specs).encode())
        params = self.program_info.get_keyset_info().secret_keys()
        key_ids = [k["id"] for k in specs["keyset"]["lweSecretKeys"]]
        if key_ids != list(range(len(params))) or any(k["params"]["keyType"] != "binary"
                                                      for k in specs["keyset"]["lweSecretKeys"]):
            raise ValueError(f"expected binary secret keys numbered 0..{len(params) - 1}, found ids {key_ids}")
        self.secret_key_params = dict(enumerate(params))
        unknown = {t.key_id for t in self.inputs + self.outputs} - set(self.secret_key_params)
        if unknown:
            raise ValueError(f"the circuit uses undeclared secret key ids {sorted(unknown)}")
        client_only = json.loads(json.dumps(specs))
        client_only["keyset"].update({name: [] for name in EVALUATION_KEY_LISTS})
        # The same program without evaluation keys: a key set for it holds only secret keys (cheap).
        self.client_only_program_info = ProgramInfo.deserialize(json.dumps(client_only).encode())
        self._load_processing(json.loads(processing_json))

    def _load_processing(self, processing: dict) -> None:
        # model_type is a skops dump: hex of a zip whose schema.json names the class; read as JSON only.
        schema = json.loads(_read_member(zipfile.ZipFile(io.BytesIO(bytes.fromhex(
            processing["model_type"]["serialized_value"]))), "schema.json"))
        model = f"{schema.get('__module__')}.{schema.get('__class__')}"
        if model not in MODEL_FAMILIES:
            raise ValueError(f"the deployed model is a {model}; supported: {', '.join(MODEL_FAMILIES)}")
        self.family: str = MODEL_FAMILIES[model]
        if processing.get("ciphertext_format") is not None or processing.get("model_post_processing_params"):
            raise ValueError("unsupported ciphertext format or post-processing parameters")
        self.input_quantizers = tuple(UniformQuantizer.from_json(q, f"input quantizer {i}")
                                      for i, q in enumerate(processing["input_quantizers"]))
        if len(processing["output_quantizers"]) != 1:
            raise ValueError("expected exactly one output quantizer")
        self.output_quantizer = UniformQuantizer.from_json(processing["output_quantizers"][0], "output quantizer")
        columns = sum(t.shape[-1] for t in self.inputs)
        if len(self.input_quantizers) != columns:
            raise ValueError(f"{len(self.input_quantizers)} input quantizers for {columns} circuit input columns")

    @classmethod
    def load(cls, deployment_dir: Path | str) -> CircuitSpec:
        """Read client.zip of a deployment directory (JSON only, size-limited, version-checked)."""
        path = Path(deployment_dir) / "client.zip"
        if path.stat().st_size > MAX_CLIENT_ZIP_BYTES:
            raise ValueError(f"{path} is larger than {MAX_CLIENT_ZIP_BYTES} bytes")
        try:
            with zipfile.ZipFile(path) as archive:
                members = [_read_member(archive, name) for name in
                           ("client.specs.json", "serialized_processing.json", "versions.json")]
            built = json.loads(members[2]).get("concrete-python")
            if built != version("concrete-python"):
                raise ValueError(f"{path} was built with concrete-python {built}, "
                                 f"this environment has {version('concrete-python')}")
            return cls(members[0], members[1])
        except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError,
                AttributeError) as exc:
            raise ValueError(f"{path} is not a usable client.zip ({type(exc).__name__}: {exc})") from None

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(t.shape for t in self.inputs)

    def quantize(self, start: int, stop: int, x: Any) -> np.ndarray:
        """Quantize columns [start, stop) of the preprocessed feature vector (x: float rows of those columns)."""
        if not 0 <= start < stop <= len(self.input_quantizers):
            raise ValueError(f"columns [{start}, {stop}) are outside the model's {len(self.input_quantizers)}")
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != stop - start:
            raise ValueError(f"x has shape {x.shape}, expected (rows, {stop - start})")
        if not np.isfinite(x).all():
            raise ValueError("x has NaN or infinite values")
        q = np.zeros(x.shape, dtype=np.int64)
        for i, quantizer in enumerate(self.input_quantizers[start:stop]):
            q[:, i] = quantizer.quant(x[:, i])
        return q

    def probabilities(self, q_output: Any) -> np.ndarray:
        """Dequantize a decrypted output into rows [p(denied), p(approved)], as Concrete ML's post-processing does:
        a tree's output is its leaf's probabilities; an xgboost ensemble's, one leaf value per tree, summed into the
        score; a logistic regression's, the (rounded) score itself. A score s gives p(approved) = sigmoid(s)."""
        q = self.outputs[0].check(np.asarray(q_output), "the decrypted output")
        y = self.output_quantizer.dequant(q)
        if self.family == "tree":
            y = y.sum(axis=-1)
            return y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
        score = (y.sum(axis=-1) if self.family == "xgboost" else y).reshape(-1)
        p = 1.0 / (1.0 + np.exp(-score))
        return np.stack([1.0 - p, p], axis=1)

    def check_input(self, position: Any, q: Any) -> np.ndarray:
        if type(position) is not int or not 0 <= position < len(self.inputs):
            raise ValueError(f"input position must be an int in [0, {len(self.inputs)}), not {position!r}")
        return self.inputs[position].check(q, f"input {position}")

    def check_output(self, value: Value) -> np.ndarray:
        raw = value.to_py_val()
        return self.outputs[0].check(np.asarray(raw).astype(np.int64), "the decrypted output")


def _deserialize(blob: Any) -> TransportValue:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"a ciphertext must be bytes, not {type(blob).__name__}")
    try:
        return TransportValue.deserialize(bytes(blob))
    except RuntimeError as exc:
        raise ValueError(f"not a serialized Concrete value ({exc})") from None


def _random_seed_words() -> tuple[int, int, int, int]:
    """Secret and encryption seeds (msb, lsb each) from the OS CSPRNG; never all-zero."""
    words = [0, 0, 0, 0]
    while not (words[0] or words[1]) or not (words[2] or words[3]):
        words = [secrets.randbits(64) for _ in range(4)]
    return tuple(words)


class _Client:
    """One ClientCircuit (encrypted or simulated) with the checks Concrete does not do itself."""

    def __init__(self, spec: CircuitSpec, program_info: ProgramInfo, keyset: Keyset | None):
        self.spec = spec
        program = (ClientProgram.create_simulated(program_info) if keyset is None
                   else ClientProgram.create_encrypted(program_info, keyset))
        self._circuit = program.get_client_circuit(spec.function_name)
        self._simulated = keyset is None

    def encrypt(self, position: int, q: np.ndarray) -> bytes:
        """Encrypt the quantized argument at `position` (0 user, 1 bank, 2 agency) to bytes."""
        q = self.spec.check_input(position, q)
        prepare = self._circuit.simulate_prepare_input if self._simulated else self._circuit.prepare_input
        try:
            return prepare(Value(q), position).serialize()
        except RuntimeError as exc:
            raise ValueError(f"input {position} refused by Concrete: {exc}") from None

    def _decrypt(self, output: bytes) -> np.ndarray:
        process = self._circuit.simulate_process_output if self._simulated else self._circuit.process_output
        try:
            value = process(_deserialize(output), 0)
        except RuntimeError as exc:
            raise ValueError(f"not an output of this circuit ({exc})") from None
        return self.spec.check_output(value)


class KeyOwner(_Client):
    """The user: a fresh full key set; encrypts, decrypts, and exports the evaluation key and input keys."""

    def __init__(self, spec: CircuitSpec):
        start = time.perf_counter()
        self.keyset = Keyset(spec.program_info, None, *_random_seed_words())  # secret: the whole key set
        super().__init__(spec, spec.program_info, self.keyset)
        self.seconds = time.perf_counter() - start
        self._evaluation_key: bytes | None = None

    @classmethod
    def restore(cls, spec: CircuitSpec, secret_keys: Mapping[int, bytes], evaluation_key: bytes) -> KeyOwner:
        """The owner of keys generated elsewhere (`credit_model.runtime.keygen`): every secret key, checked, in a key
        set without evaluation keys (built in a millisecond), and the evaluation key's bytes as they are."""
        if sorted(secret_keys) != sorted(spec.secret_key_params):
            raise ValueError(f"expected secret keys {sorted(spec.secret_key_params)}, got {sorted(secret_keys)}")
        for key_id, blob in secret_keys.items():
            check_secret_key_layout(bytes(blob), spec.secret_key_params[key_id].dimension(), key_id)
        start = time.perf_counter()
        owner = cls.__new__(cls)
        initial = {k: LweSecretKey.deserialize(bytes(b), spec.secret_key_params[k]) for k, b in secret_keys.items()}
        owner.keyset = Keyset(spec.client_only_program_info, None, *_random_seed_words(), initial)
        _Client.__init__(owner, spec, spec.client_only_program_info, owner.keyset)
        owner.seconds = time.perf_counter() - start
        owner._evaluation_key = bytes(evaluation_key)
        return owner

    def evaluation_key(self) -> bytes:
        """The server key set, serialized as fhe.EvaluationKeys.serialize() does (public)."""
        if self._evaluation_key is not None:
            return self._evaluation_key
        return self.keyset.get_server_keys().serialize()

    def all_secret_keys(self) -> dict[int, bytes]:
        """Every secret key, the output's too: for the key owner's own process only (see keygen.py)."""
        keys = self.keyset.get_client_keys().get_secret_keys()
        return {key_id: keys[key_id].serialize() for key_id in self.spec.secret_key_params}

    def input_secret_keys(self) -> dict[int, bytes]:
        """The secret keys the inputs are encrypted under, and only those (to share with bank/agency)."""
        shared = set(self.spec.input_key_ids) & set(self.spec.output_key_ids)
        if shared:
            raise ValueError(f"secret keys {sorted(shared)} also decrypt the output; refusing to export them")
        keys = self.keyset.get_client_keys().get_secret_keys()
        return {key_id: keys[key_id].serialize() for key_id in self.spec.input_key_ids}

    def decrypt(self, output: bytes) -> np.ndarray:
        """Decrypt the circuit's serialized output to its quantized int64 array."""
        return self._decrypt(output)


class InputEncryptor(_Client):
    """Bank/agency: encrypts with the user's input secret keys only; cannot decrypt the output."""

    @classmethod
    def from_secret_keys(cls, spec: CircuitSpec, blobs: Mapping[int, bytes]) -> InputEncryptor:
        """Check every blob, then build a key set holding these input keys (others random, no eval keys)."""
        if not isinstance(blobs, Mapping):
            raise ValueError(f"secret keys must be a mapping key id -> bytes, not {type(blobs).__name__}")
        wanted = set(spec.input_key_ids)
        for key_id in blobs:
            if type(key_id) is not int or key_id not in wanted:
                role = "an output key" if key_id in spec.output_key_ids else "not a key of the inputs"
                raise ValueError(f"secret key id {key_id!r} is {role} (input keys: {sorted(wanted)}); refused")
        if wanted - set(blobs):
            raise ValueError(f"missing input secret key(s) {sorted(wanted - set(blobs))}")
        for key_id, blob in blobs.items():
            if not isinstance(blob, (bytes, bytearray, memoryview)):
                raise ValueError(f"secret key {key_id} must be bytes, not {type(blob).__name__}")
            check_secret_key_layout(bytes(blob), spec.secret_key_params[key_id].dimension(), key_id)
        start = time.perf_counter()
        initial = {k: LweSecretKey.deserialize(bytes(b), spec.secret_key_params[k]) for k, b in blobs.items()}
        encryptor = cls(spec, spec.client_only_program_info,
                        Keyset(spec.client_only_program_info, None, *_random_seed_words(), initial))
        encryptor.seconds = time.perf_counter() - start
        return encryptor


class Simulator(_Client):
    """INSECURE stand-in for `--fhe simulate`: the same encrypt/decrypt, no keys, no encryption at all."""

    insecure = True

    def __init__(self, spec: CircuitSpec):
        super().__init__(spec, spec.program_info, None)

    def decrypt(self, output: bytes) -> np.ndarray:
        return self._decrypt(output)
