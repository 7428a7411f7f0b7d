"""One Concrete circuit with one encrypted input per party, and the FHEModel* classes extended to use it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from concrete import fhe
from concrete.compiler import LweSecretKey
from concrete.ml.deployment import FHEModelClient, FHEModelDev, FHEModelServer

from credit_model.schema import PARTIES

# Concrete ML's default probability of error of one programmable bootstrap.
P_ERROR = 2 ** -40
# Layout of a serialized LWE secret key (concrete-python 2.10, pinned): this header, the dimension as a
# little-endian u64, then one u64 per coefficient. Concrete aborts the whole process (a Rust panic)
# on a blob that does not fit, so blobs from a peer are checked against it before deserializing.
SECRET_KEY_HEADER = bytes.fromhex(
    "0300000000000000302e35000000000300000000000000302e311900000000000000"
    "636f72655f63727970746f3a3a4c77655365637265744b657900000000")


def check_secret_key_layout(blob: bytes, dimension: int, index: int) -> None:
    """Raise ValueError unless `blob` is exactly a serialized LWE secret key of this dimension."""
    expected = SECRET_KEY_HEADER + dimension.to_bytes(8, "little")
    if len(blob) != len(expected) + 8 * dimension or not blob.startswith(expected):
        raise ValueError(f"secret key {index} is not a serialized LWE secret key of dimension {dimension} "
                         f"({len(blob)} bytes, expected {len(expected) + 8 * dimension})")


def compile_multi_input(model, q_inputset: np.ndarray, slices: Sequence[tuple[int, int]],
                        inference=None) -> fhe.Circuit:
    """Compile the fitted model's integer inference as f(user, bank, agency) over three encrypted slices.

    The three arguments are concatenated along the feature axis inside the circuit, so each party
    encrypts only its own columns. Input and evaluation-key compression are on. `inference` is the
    function of the concatenated row (default: a tree's `_tree_inference`, see families.prepare_for_circuit).
    """
    if inference is None:
        tree_inference = model._tree_inference  # pylint: disable=protected-access
        inference = lambda x: tree_inference(x)[0]  # noqa: E731

    def credit_tree(user, bank, agency):  # the name every deployment's circuit carries (any family)
        return inference(np.concatenate((user, bank, agency), axis=1))

    compiler = fhe.Compiler(credit_tree, {p: "encrypted" for p in PARTIES})
    inputset = [tuple(q_inputset[i:i + 1, a:b] for a, b in slices) for i in range(len(q_inputset))]
    config = fhe.Configuration(compress_input_ciphertexts=True, compress_evaluation_keys=True)
    return compiler.compile(inputset, config, p_error=P_ERROR)


class MultiInputFHEModelDev(FHEModelDev):
    """FHEModelDev that saves a model whose `fhe_circuit` was compiled by `compile_multi_input`.

    The saved client.zip / server.zip have the standard Concrete ML layout, so the standard
    FHEModelServer runs them unchanged (it accepts a tuple of serialized inputs).
    """

    def __init__(self, path_dir: str, model, circuit: fhe.Circuit):
        model.fhe_circuit_ = circuit
        model._is_compiled = True  # pylint: disable=protected-access
        super().__init__(path_dir, model)


class MultiInputFHEModelClient(FHEModelClient):
    """FHEModelClient for the three-input circuit.

    Concrete ML's client quantizes and encrypts all inputs of a model at once. Here each party
    quantizes its own columns with its own slice of the input quantizers and encrypts only its own
    argument (the others are passed as None). The client secret key can be exported as its LWE
    secret keys and imported by another party, which then rebuilds a key set able to encrypt.
    """

    def __init__(self, path_dir: str, slices: dict[str, tuple[int, int]], key_dir=None):
        self.slices = dict(slices)
        super().__init__(path_dir, key_dir)

    def _party_args(self, party: str, q_x: np.ndarray) -> list:
        args: list = [None] * len(PARTIES)
        args[PARTIES.index(party)] = q_x
        return args

    def quantize_party(self, party: str, x: np.ndarray) -> np.ndarray:
        start, stop = self.slices[party]
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != stop - start:
            raise ValueError(f"{party} input has {x.shape[1]} columns, expected {stop - start}")
        q_x = np.zeros_like(x, dtype=np.int64)
        for i, quantizer in enumerate(self.model.input_quantizers[start:stop]):
            q_x[:, i] = quantizer.quant(x[:, i])
        return q_x

    def quantize_encrypt_serialize_party(self, party: str, x: np.ndarray) -> bytes:
        """Quantize, encrypt and serialize one party's preprocessed row(s)."""
        encrypted = self.client.encrypt(*self._party_args(party, self.quantize_party(party, x)))
        return encrypted[PARTIES.index(party)].serialize()

    def _circuit_json(self) -> dict:
        return json.loads(self.client.specs.program_info.serialize())

    def input_key_ids(self) -> list[int]:
        """The secret key ids the circuit's inputs are encrypted under (the output uses another one)."""
        circuit = self._circuit_json()["circuits"][0]
        return sorted({i["typeInfo"]["lweCiphertext"]["encryption"]["keyId"] for i in circuit["inputs"]})

    def export_input_secret_keys(self) -> tuple[list[int], list[bytes]]:
        """The LWE secret keys the inputs are encrypted under, serialized, with their ids: what a party
        needs to encrypt its input, and nothing that decrypts the output (it is under another key)."""
        self.generate_private_and_evaluation_keys(force=False)
        keyset = self.client.keys._keyset  # pylint: disable=protected-access
        secret = keyset.get_client_keys().get_secret_keys()
        ids = self.input_key_ids()
        return ids, [secret[i].serialize() for i in ids]

    def import_input_secret_keys(self, ids: Sequence[int], blobs: Sequence[bytes]) -> float:
        """Build a key set that can only encrypt inputs, from the user's input secret keys (no evaluation
        keys are built: the program info it is made from lists none); returns the seconds it took."""
        expected = self.input_key_ids()
        if list(ids) != expected or len(blobs) != len(expected):
            raise ValueError(f"expected the input secret keys {expected}, got ids {list(ids)[:8]} "
                             f"with {len(blobs)} key(s)")
        params = self.client.specs.program_info.get_keyset_info().secret_keys()
        for key_id, blob in zip(ids, blobs):
            check_secret_key_layout(bytes(blob), params[key_id].dimension(), key_id)
        start = time.perf_counter()
        spec = self._circuit_json()
        spec["keyset"] = dict(spec["keyset"], lweBootstrapKeys=[], lweKeyswitchKeys=[], packingKeyswitchKeys=[])
        from concrete.compiler import ProgramInfo
        from concrete.fhe.compilation.specs import ClientSpecs
        keys = fhe.Keys(ClientSpecs(ProgramInfo.deserialize(json.dumps(spec).encode())))
        keys.generate(initial_keys={i: LweSecretKey.deserialize(bytes(b), params[i]) for i, b in zip(ids, blobs)})
        self.client.keys = keys
        return time.perf_counter() - start

    def decrypt_probabilities(self, serialized_output: bytes) -> np.ndarray:
        """Decrypt the circuit output into class probabilities [p(denied), p(approved)]."""
        return np.asarray(self.deserialize_decrypt_dequantize(serialized_output)).reshape(-1, 2)


class SimulatedPartyClient:
    """Insecure stand-in for MultiInputFHEModelClient in `--fhe simulate` mode (no keys, no encryption)."""

    def __init__(self, fhe_client: MultiInputFHEModelClient):
        self.inner = fhe_client
        self.client = fhe.Client(fhe_client.client.specs, is_simulated=True)

    def quantize_encrypt_serialize_party(self, party: str, x: np.ndarray) -> bytes:
        args = self.inner._party_args(party, self.inner.quantize_party(party, x))
        return self.client.simulate_encrypt(*args)[PARTIES.index(party)].serialize()

    def decrypt_probabilities(self, serialized_output: bytes) -> np.ndarray:
        value = fhe.Value.deserialize(serialized_output)
        q_out = self.client.simulate_decrypt(value)
        out = self.inner.model.post_processing(self.inner.model.dequantize_output(q_out))
        return np.asarray(out).reshape(-1, 2)


class MultiInputFHEModelServer(FHEModelServer):
    """FHEModelServer that runs the three serialized party inputs with a reusable key object."""

    def __init__(self, path_dir: str, server_zip: str = "server.zip"):
        self.server_zip = server_zip
        super().__init__(path_dir)

    def load(self):
        self.server = fhe.Server.load(Path(self.path_dir) / self.server_zip)

    @property
    def is_simulated(self) -> bool:
        return bool(self.server.is_simulated)

    def run_parties(self, inputs: Sequence[bytes], evaluation_keys) -> bytes:
        """Run the circuit on (user, bank, agency) serialized ciphertexts; keys may be an object."""
        values = [fhe.Value.deserialize(bytes(blob)) for blob in inputs]
        result = self.server.run(*values, evaluation_keys=evaluation_keys)
        return result.serialize()


def ml_client(deployment) -> MultiInputFHEModelClient:
    """Concrete ML's own client over a deployment's client.zip, for training and tests (the roles use
    `Deployment.spec()` and credit_model/runtime instead)."""
    return MultiInputFHEModelClient(str(deployment.directory), deployment.slices)


def ml_server(deployment, simulate: bool = False) -> MultiInputFHEModelServer:
    """Concrete ML's server over a deployment's server.zip, for training and tests (the evaluator uses
    `Deployment.circuit_server`)."""
    return MultiInputFHEModelServer(str(deployment.directory), "server_simulate.zip" if simulate else "server.zip")
