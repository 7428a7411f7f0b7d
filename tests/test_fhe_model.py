"""Real FHE on the committed artifacts: standard FHEModel* round trip, key sharing, agreement with the clear model."""

import numpy as np
import pytest
from concrete import fhe
from concrete.ml.deployment import FHEModelClient, FHEModelServer

from credit_model.schema import PARTIES
from credit_model.training.fhe_model import ml_client, ml_server

pytestmark = pytest.mark.fhe


@pytest.fixture(scope="module")
def keyed_client(deployment):
    client = ml_client(deployment)
    client.generate_private_and_evaluation_keys()
    return client


def encrypt_all(client, deployment, records):
    return tuple(client.quantize_encrypt_serialize_party(p, deployment.preprocessor(p).transform_records([records[p]]))
                 for p in PARTIES)


def test_standard_client_server_round_trip(deployment, keyed_client, alice, clear_model):
    """Concrete ML's own FHEModelServer runs the three ciphertexts; its FHEModelClient decrypts the output."""
    server = FHEModelServer(str(deployment.directory))
    output = server.run(encrypt_all(keyed_client, deployment, alice), keyed_client.get_serialized_evaluation_keys())
    standard = FHEModelClient(str(deployment.directory))
    standard.client.keys = keyed_client.client.keys
    proba = np.asarray(standard.deserialize_decrypt_dequantize(output)).reshape(-1)
    assert proba[1] == pytest.approx(clear_model.probability(alice))
    assert proba[1] > 0.5


def test_each_party_encrypts_only_its_slice(deployment, keyed_client, alice):
    blobs = encrypt_all(keyed_client, deployment, alice)
    assert len({len(b) for b in blobs}) == 3  # 47, 1 and 2 columns give different sizes
    with pytest.raises(ValueError, match="columns"):
        keyed_client.quantize_encrypt_serialize_party("bank", np.zeros((1, 2)))


def test_the_inputs_secret_key_lets_the_bank_encrypt_for_the_key_owner_but_not_decrypt(deployment, keyed_client,
                                                                                       alice, clear_model):
    """Bank imports only the inputs' secret key; the user decrypts what the bank's ciphertext contributed to;
    the bank's key set cannot decrypt the output (it is under a key the user never shares)."""
    bank = ml_client(deployment)
    ids, secret = keyed_client.export_input_secret_keys()
    all_keys = keyed_client.client.keys._keyset.get_client_keys().get_secret_keys()
    assert ids == [0] and len(all_keys) == len(deployment.spec().secret_key_params) > 1
    assert secret == [all_keys[0].serialize()]
    bank.import_input_secret_keys(ids, secret)
    records = {**alice, "bank": {"Account_age": 0}}
    blobs = list(encrypt_all(keyed_client, deployment, records))
    blobs[1] = bank.quantize_encrypt_serialize_party("bank", deployment.preprocessor("bank").transform_records([records["bank"]]))
    keys = fhe.EvaluationKeys.deserialize(keyed_client.get_serialized_evaluation_keys())
    output = ml_server(deployment).run_parties(blobs, keys)
    truth = keyed_client.decrypt_probabilities(output)[0]
    assert truth[1] == pytest.approx(clear_model.probability(records))
    right = keyed_client.client.decrypt(fhe.Value.deserialize(output))
    others = [ml_client(deployment) for _ in range(3)]  # each with the input key and its own random other keys
    for other in others:
        other.import_input_secret_keys(ids, secret)
    matches = [bool((other.client.decrypt(fhe.Value.deserialize(output)) == right).all()) for other in others]
    assert matches != [True] * 3  # a wrong key matches by chance 1/256 of the time: all three, never
    with pytest.raises(ValueError, match="input secret keys"):
        bank.import_input_secret_keys([0, 1, 2], secret * 3)  # every key, the output's too: refused


@pytest.mark.slow
def test_fhe_agrees_with_clear_quantized_model_on_20_held_out_applicants(deployment, keyed_client, clear_model,
                                                                         held_out):
    applicants = held_out(20, 12345)  # rows of the held-out test file
    keys = fhe.EvaluationKeys.deserialize(keyed_client.get_serialized_evaluation_keys())
    server = ml_server(deployment)
    agree = 0
    for records in applicants:
        output = server.run_parties(encrypt_all(keyed_client, deployment, records), keys)
        fhe_p = keyed_client.decrypt_probabilities(output)[0][1]
        agree += int(fhe_p == pytest.approx(clear_model.probability(records)))
    assert agree == 20
