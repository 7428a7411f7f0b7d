"""credit_model.runtime.fhe_runtime against Concrete ML / concrete.fhe: quantization, real FHE, key separation, refusals."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from concrete import fhe
from concrete.compiler import ClientProgram, Keyset, LweSecretKey, TransportValue

from credit_model.runtime import fhe_runtime as rt
from credit_model.training.fhe_model import ml_server
from credit_model.training.generator import generate_applicants
from credit_model.schema import PARTIES

ROOT = Path(__file__).resolve().parent.parent
# Peak RSS of this process image. ru_maxrss is NOT usable in a subprocess: Linux carries the parent's
# high-water mark across fork+exec, so every child of pytest would report pytest's peak.
PEAK_MB = "int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024"
HEAVY = "[m for m in sys.modules if m.split('.')[0] in ('torch','sklearn','pandas') " \
        "or m.startswith(('concrete.fhe','concrete.ml'))]"


@pytest.fixture(scope="module")
def deployment():
    """The runtime is tested on the synthetic deployment: its circuit's 3-bit inputs and key layout are
    written out in the tests below (the default deployment's come from its own client.zip)."""
    from credit_model.deployment import load_deployment
    return load_deployment("synthetic")


@pytest.fixture(scope="module")
def spec(deployment):
    return rt.CircuitSpec.load(deployment.directory)


@pytest.fixture(scope="module")
def slices(deployment):
    return [deployment.slices[p] for p in PARTIES]


@pytest.fixture(scope="module")
def cml(deployment):
    """Concrete ML's own client (quantizers, dequantization, post-processing): the independent reference."""
    from concrete.ml.deployment import FHEModelClient
    return FHEModelClient(str(deployment.directory))


@pytest.fixture(scope="module")
def rows(deployment):
    """Preprocessed feature rows (user | bank | agency columns) of generated applicants."""
    df = generate_applicants(300, seed=2024)
    return np.concatenate([deployment.preprocessor(p).transform_frame(df) for p in PARTIES], axis=1)


@pytest.fixture(scope="module")
def reference(deployment, cml, slices):
    """[p(denied), p(approved)] of one row by Concrete ML + concrete.fhe simulation only (no fhe_runtime)."""
    client = fhe.Client(cml.client.specs, is_simulated=True)
    server = ml_server(deployment, simulate=True)

    def probabilities(row):
        q = cml.model.quantize_input(row[None, :])
        values = client.simulate_encrypt(*(q[:, a:b] for a, b in slices))
        output = server.run_parties([v.serialize() for v in values], None)
        return cml.model.post_processing(cml.model.dequantize_output(
            client.simulate_decrypt(fhe.Value.deserialize(output))))
    return probabilities


@pytest.fixture(scope="module")
def throwaway_keys(spec):
    """Serialized secret keys of a random key set (no evaluation keys: instant), by key id."""
    keyset = Keyset(spec.client_only_program_info, None)
    return {i: key.serialize() for i, key in enumerate(keyset.get_client_keys().get_secret_keys())}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory, throwaway_keys):
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps({str(k): v.hex() for k, v in throwaway_keys.items()}))
    return path


def run_python(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def encrypt_row(spec, slices, encryptors, row):
    return [encryptors[i].encrypt(i, spec.quantize(a, b, row[None, a:b])) for i, (a, b) in enumerate(slices)]


def test_quantization_equals_concrete_ml(spec, cml, rows, slices):
    scales = np.array([q.scale for q in cml.model.input_quantizers])
    zero_points = np.array([q.zero_point for q in cml.model.input_quantizers])
    ties = (np.arange(8)[:, None] + 0.5 - zero_points) * scales  # exactly between two levels: rint rounds to even
    x = np.vstack([rows, rows * 3 - 1, -2 * rows, ties])  # also far outside the calibrated range: clipping
    expected = cml.model.quantize_input(x)
    got = np.hstack([spec.quantize(a, b, x[:, a:b]) for a, b in slices])
    assert got.dtype == np.int64 and (expected == 0).any() and (expected == 7).any()
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="shape"):
        spec.quantize(47, 48, x[:, 47:49])
    with pytest.raises(ValueError, match="columns"):
        spec.quantize(48, 51, x[:, 48:51])
    with pytest.raises(ValueError, match="NaN"):
        spec.quantize(47, 48, [[np.nan]])


def test_circuit_spec_reads_the_deployment(spec, cml):
    assert spec.function_name == "credit_tree"
    assert spec.input_key_ids == (0,) and spec.output_key_ids == (2,)
    assert spec.input_shapes == ((1, 47), (1, 1), (1, 2))
    assert {k: p.dimension() for k, p in spec.secret_key_params.items()} == {0: 2048, 1: 771, 2: 2048}
    assert spec.program_info.serialize() == cml.client.specs.program_info.serialize()


@pytest.fixture(scope="module")
def owner(spec):
    return rt.KeyOwner(spec)


@pytest.fixture(scope="module")
def fhe_runs(spec, owner, deployment, rows, reference, slices):
    """20 applicants (10 approved, 10 denied by the reference): user encrypts with the full key set, bank and
    agency with an InputEncryptor built from the user's input keys; the evaluator runs real FHE."""
    approved = np.array([reference(row)[0, 1] > 0.5 for row in rows[:120]])
    chosen = np.concatenate([np.flatnonzero(approved)[:10], np.flatnonzero(~approved)[:10]])
    assert len(chosen) == 20
    encryptor = rt.InputEncryptor.from_secret_keys(spec, owner.input_secret_keys())
    keys = fhe.EvaluationKeys.deserialize(owner.evaluation_key())
    server = ml_server(deployment)
    return [(rows[i], server.run_parties(encrypt_row(spec, slices, (owner, encryptor, encryptor), rows[i]), keys))
            for i in chosen]


@pytest.mark.fhe
def test_real_fhe_round_trip_equals_concrete_ml(spec, owner, deployment, fhe_runs, reference):
    from concrete.ml.deployment import FHEModelClient
    standard = FHEModelClient(str(deployment.directory))
    standard.client.keys = fhe.Keys.deserialize(owner.keyset.serialize())
    assert standard.get_serialized_evaluation_keys() == owner.evaluation_key()  # same bytes as Concrete ML's
    decisions = set()
    for row, output in fhe_runs:
        q = owner.decrypt(output)
        np.testing.assert_array_equal(q, standard.client.decrypt(fhe.Value.deserialize(output)))
        got = spec.probabilities(q)
        np.testing.assert_array_equal(got, standard.deserialize_decrypt_dequantize(output))
        np.testing.assert_array_equal(got, reference(row))  # the clear quantized model's answer
        decisions.add(bool(got[0, 1] > 0.5))
    assert decisions == {True, False}
    for blob in (b"garbage", fhe_runs[0][1][:-1], owner.encrypt(1, np.zeros((1, 1), dtype=np.int64))):
        with pytest.raises(ValueError, match="not a"):
            owner.decrypt(blob)


@pytest.mark.fhe
def test_input_keys_cannot_decrypt_the_output(spec, owner, fhe_runs):
    """A key set holding the real input key (other keys random) decrypts outputs to garbage."""
    encryptor = rt.InputEncryptor.from_secret_keys(spec, owner.input_secret_keys())
    assert not hasattr(encryptor, "decrypt") and set(owner.input_secret_keys()) == {0}
    truth = [owner.decrypt(output) for _, output in fhe_runs]
    same = same_decision = trials = 0
    for _ in range(25):  # 25 random key sets x 20 outputs
        initial = {k: LweSecretKey.deserialize(b, spec.secret_key_params[k])
                   for k, b in owner.input_secret_keys().items()}
        info = spec.client_only_program_info  # key 2 is used only to decrypt: evaluation keys change nothing
        keyset = Keyset(info, None, 0, 0, 0, 0, initial)  # seeds 0: Concrete draws random ones
        circuit = ClientProgram.create_encrypted(info, keyset).get_client_circuit("credit_tree")
        for (_, output), q in zip(fhe_runs, truth):
            garbage = circuit.process_output(TransportValue.deserialize(output), 0).to_py_val().astype(np.int64)
            trials += 1
            same += np.array_equal(garbage, q)
            same_decision += (np.argmax(garbage.sum(-1)) == np.argmax(q.sum(-1)))
    print(f"\nwrong-key decryption: {same}/{trials} outputs equal the truth, {same_decision}/{trials} same argmax")
    assert same / trials < 0.1


def test_input_encryptor_refuses_bad_keys_and_stays_alive(spec, keys_file, deployment):
    result = run_python("""
        import json, sys
        import numpy as np
        import credit_model.runtime.fhe_runtime as rt
        spec = rt.CircuitSpec.load(sys.argv[1])
        keys = {int(k): bytes.fromhex(v) for k, v in json.load(open(sys.argv[2])).items()}
        k0 = keys[0]
        cases = {
            "output key id": {0: k0, 2: keys[2]}, "only the output key": {2: keys[2]}, "no key": {},
            "wrong length": {0: k0[:-8]}, "key of dimension 771": {0: keys[1]},
            "wrong header": {0: k0[:20] + bytes([k0[20] ^ 1]) + k0[21:]},
            "non-binary key": {0: k0[:-8] + (2).to_bytes(8, "little")},
            "extra id": {0: k0, 7: k0}, "string id": {"0": k0}, "hex string": {0: k0.hex()}, "list": [k0]}
        for name, blobs in cases.items():
            try:
                rt.InputEncryptor.from_secret_keys(spec, blobs)
                print(json.dumps([name, "ACCEPTED"]), flush=True)
            except ValueError as exc:
                print(json.dumps([name, str(exc)]), flush=True)
        encryptor = rt.InputEncryptor.from_secret_keys(spec, {0: k0})
        print(json.dumps(["alive", len(encryptor.encrypt(1, np.zeros((1, 1), dtype=np.int64)))]))
        """, deployment.directory, keys_file)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = dict(json.loads(line) for line in result.stdout.splitlines())
    expected = {"output key id": "output key", "only the output key": "output key", "no key": "missing",
                "wrong length": "not a serialized LWE secret key", "key of dimension 771": "dimension 2048",
                "wrong header": "not a serialized LWE secret key", "non-binary key": "binary",
                "extra id": "not a key of the inputs", "string id": "not a key of the inputs",
                "hex string": "must be bytes", "list": "mapping"}
    for name, words in expected.items():
        assert words in outcome[name], (name, outcome[name])
    assert outcome["alive"] > 0


def test_encrypt_and_decrypt_refuse_bad_values(spec, throwaway_keys):
    encryptor = rt.InputEncryptor.from_secret_keys(spec, {0: throwaway_keys[0]})
    for client in (encryptor, rt.Simulator(spec)):
        good = np.zeros((1, 2), dtype=np.int64)
        assert client.encrypt(2, good)
        for position, q, words in [(2, np.zeros((1, 3), dtype=np.int64), "shape"), (2, good[0], "shape"),
                                   (2, good.astype(float), "integer"), (2, good.tolist(), "integer"),
                                   (2, good.astype(bool), "integer"), (2, good + 8, "values"),
                                   (2, good - 1, "values"), (3, good, "position"), (-1, good, "position"),
                                   ("2", good, "position"), (True, good, "position")]:
            with pytest.raises(ValueError, match=words):
                client.encrypt(position, q)
    simulator = rt.Simulator(spec)
    for blob, words in [(b"garbage", "not a serialized"), ("text", "bytes"),
                        (encryptor.encrypt(0, np.zeros((1, 47), dtype=np.int64)), "shape")]:
        with pytest.raises(ValueError, match=words):
            simulator.decrypt(blob)
    with pytest.raises(ValueError, match="shape"):
        spec.probabilities(np.zeros((1, 2), dtype=np.int64))


def test_encryption_is_randomized(spec, throwaway_keys):
    q = np.full((1, 1), 5, dtype=np.int64)
    first = rt.InputEncryptor.from_secret_keys(spec, {0: throwaway_keys[0]})
    second = rt.InputEncryptor.from_secret_keys(spec, {0: throwaway_keys[0]})
    assert len({first.encrypt(1, q), first.encrypt(1, q), second.encrypt(1, q)}) == 3
    assert first.seconds < 0.5


@pytest.mark.fhe
def test_key_owners_draw_fresh_secret_keys(spec, owner):
    assert rt.KeyOwner(spec).input_secret_keys() != owner.input_secret_keys()


def test_previews_skip_the_header_every_ciphertext_shares(spec, throwaway_keys):
    """What the page and the reports show of a ciphertext is its own data: two encryptions of the same value share
    Concrete's first 64 bytes, and so did their old previews (bytes 0-15); a secret key is never previewed."""
    from protocol.transport import blob_preview, preview
    encryptor = rt.InputEncryptor.from_secret_keys(spec, {0: throwaway_keys[0]})
    first, second = (encryptor.encrypt(1, np.full((1, 1), 5, dtype=np.int64)) for _ in range(2))
    assert first[:64] == second[:64]
    assert len(blob_preview(first)) == 32 and blob_preview(first) != blob_preview(second)
    assert preview([b"FCS/1", b"INPUT", b"{}", first]) == blob_preview(first) == first[64:80].hex()
    assert preview([b"FCS/1", b"CLIENT_KEY", b"{}", throwaway_keys[0]]) == ""


@pytest.mark.fhe
def test_previews_of_evaluation_keys_and_outputs_differ(spec, owner, fhe_runs):
    from protocol.transport import blob_preview, preview
    keys = [owner.evaluation_key(), rt.KeyOwner(spec).evaluation_key()]
    assert keys[0][:64] == keys[1][:64] and blob_preview(keys[0]) != blob_preview(keys[1])
    assert preview([b"FCS/1", b"EVAL_KEY", b"{}", keys[0][:1024 * 1024]]) == blob_preview(keys[0])  # its first frame
    outputs = [output for _, output in fhe_runs]
    assert len({o[:64] for o in outputs}) == 1 and len({blob_preview(o) for o in outputs}) == len(outputs)


def test_simulated_round_trip_equals_the_clear_model(spec, deployment, rows, reference, slices):
    simulator = rt.Simulator(spec)
    server = ml_server(deployment, simulate=True)
    decisions = set()
    for row in rows[:50]:
        output = server.run_parties(encrypt_row(spec, slices, [simulator] * 3, row), None)
        got = spec.probabilities(simulator.decrypt(output))
        np.testing.assert_array_equal(got, reference(row))
        decisions.add(bool(got[0, 1] > 0.5))
    assert decisions == {True, False}


LIGHT_ROLE = """
    import json, sys, time
    start = time.perf_counter()
    import credit_model.runtime.fhe_runtime as rt
    imported = time.perf_counter()
    import numpy as np
    spec = rt.CircuitSpec.load(sys.argv[1])
    keys = {int(k): bytes.fromhex(v) for k, v in json.load(open(sys.argv[2])).items()}
    encryptor = rt.InputEncryptor.from_secret_keys(spec, {0: keys[0]})
    ready = time.perf_counter()
    blob = encryptor.encrypt(1, spec.quantize(47, 48, [[0.3]]))
    encrypted = time.perf_counter()
    simulator = rt.Simulator(spec)
    simulator.encrypt(0, np.zeros((1, 47), dtype=np.int64))
    print(json.dumps({"import_s": imported - start, "load_and_build_s": ready - imported,
                      "keyset_ms": encryptor.seconds * 1e3, "encrypt_ms": (encrypted - ready) * 1e3,
                      "peak_rss_mb": PEAK_MB,
                      "heavy": sorted(HEAVY), "bytes": len(blob)}))
    """.replace("HEAVY", HEAVY).replace("PEAK_MB", PEAK_MB)


def test_module_imports_no_heavy_library(deployment, keys_file):
    result = run_python(LIGHT_ROLE, deployment.directory, keys_file)
    assert result.returncode == 0, result.stderr[-2000:]
    light = json.loads(result.stdout)
    print(f"\nfhe_runtime: {light}")
    assert light["heavy"] == [] and light["bytes"] > 0


@pytest.mark.fhe
def test_measure_against_concrete_ml(deployment, keys_file):
    heavy = run_python("""
        import json, sys, time
        import numpy as np
        start = time.perf_counter()
        from concrete.ml.deployment import FHEModelClient
        imported = time.perf_counter()
        from concrete import fhe
        from concrete.compiler import LweSecretKey
        client = FHEModelClient(sys.argv[1])
        params = client.client.specs.program_info.get_keyset_info().secret_keys()
        blobs = {int(k): bytes.fromhex(v) for k, v in json.load(open(sys.argv[2])).items()}
        keys = fhe.Keys(client.client.specs)  # what bank/agency did: rebuild the whole key set
        built = time.perf_counter()
        keys.generate(initial_keys={k: LweSecretKey.deserialize(b, params[k]) for k, b in blobs.items()})
        client.client.keys = keys
        keyset_s = time.perf_counter() - built
        ready = time.perf_counter()
        q = client.model.quantize_input(np.full((1, 50), 0.3))
        client.client.encrypt(None, q[:, 47:48], None)[1].serialize()
        encrypted = time.perf_counter()
        print(json.dumps({"import_s": imported - start, "load_and_build_s": ready - imported,
                          "keyset_ms": keyset_s * 1e3, "encrypt_ms": (encrypted - ready) * 1e3,
                          "peak_rss_mb": PEAK_MB}))
        """.replace("PEAK_MB", PEAK_MB), deployment.directory, keys_file)
    assert heavy.returncode == 0, heavy.stderr[-2000:]
    light = run_python(LIGHT_ROLE, deployment.directory, keys_file)
    print(f"\nConcrete ML client: {heavy.stdout.strip()}\nfhe_runtime:        {light.stdout.strip()}")
