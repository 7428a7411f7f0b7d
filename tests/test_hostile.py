"""Replayed messages and ciphertexts of another circuit against a live evaluator."""

import numpy as np
import pytest
import zmq
from concrete import fhe

from credit_model.deployment import load_deployment
from credit_model.training.fhe_model import SimulatedPartyClient, ml_client
from credit_model.training.clear_model import ClearModel
from protocol.curve import Curve
from protocol.messages import GetOutput, Input, Ping, Run, decode, encode
from protocol.transport import make_socket
from simulation.processes import ProcessSet
from tests.pinned_deployment import TREE


@pytest.fixture(params=["simulate"])
def evaluator(tmp_path, request):
    procs = ProcessSet(tmp_path, "ipc", request.param, TREE)
    procs.start(180, ("evaluator",))
    ctx = zmq.Context()
    socks = {}
    for party in ("user", "bank", "agency"):
        socks[party] = make_socket(ctx, zmq.DEALER, f"{party}:1")
        Curve.load(party, procs.keys_dir).client("evaluator")(socks[party])
        socks[party].connect(procs.endpoints["evaluator"])

    def send(party, frames):
        socks[party].send_multipart(frames)
        assert socks[party].poll(30_000), "no reply"
        return decode(socks[party].recv_multipart())

    yield procs, send
    for sock in socks.values():
        sock.close(linger=0)
    ctx.term()
    procs.stop()


def blobs_for(records):
    dep = load_deployment(TREE)
    sim = SimulatedPartyClient(ml_client(dep))
    return sim, {p: sim.quantize_encrypt_serialize_party(p, dep.preprocessor(p).transform_records([records[p]]))
                 for p in records}


def test_replayed_messages_are_answered_and_change_nothing(evaluator, alice):
    procs, send = evaluator
    sim, blobs = blobs_for(alice)
    for party, blob in blobs.items():
        frames = encode(Input("a-1", "alice", party, "base", blob), 7)
        first, replay = send(party, frames), send(party, frames)  # the very same frames, same seq
        assert first.message == replay.message and replay.seq == 7
    assert send("user", encode(Run("a-1", "r1", {}), 8)).message.TYPE.value == "ACK"
    out = send("user", encode(GetOutput("a-1", "r1", 20_000), 9)).message
    replayed = send("user", encode(GetOutput("a-1", "r1", 20_000), 9)).message
    assert out == replayed
    probability = float(sim.decrypt_probabilities(out.ciphertext)[0][1])
    assert probability == pytest.approx(ClearModel(load_deployment(TREE)).probability(alice))


@pytest.mark.fhe
@pytest.mark.parametrize("evaluator", ["execute"], indirect=True)
def test_a_ciphertext_of_another_circuit_fails_its_run_not_the_evaluator(evaluator, alice):
    from protocol.messages import EvalKey
    procs, send = evaluator
    dep = load_deployment(TREE)
    client = ml_client(dep)
    client.generate_private_and_evaluation_keys()
    assert send("user", encode(EvalKey("alice", client.get_serialized_evaluation_keys()), 0)).message.TYPE.value == "ACK"
    blobs = {p: client.quantize_encrypt_serialize_party(p, dep.preprocessor(p).transform_records([alice[p]]))
             for p in alice}

    @fhe.compiler({"x": "encrypted"})
    def plus_one(x):
        return x + 1

    other = plus_one.compile([np.array([[i, i]]) for i in range(8)])
    other.keygen()
    foreign = other.encrypt(np.array([[1, 2]])).serialize()
    assert send("user", encode(Input("f-1", "alice", "user", "base", foreign), 1)).message.TYPE.value == "ACK"
    for party in ("bank", "agency"):
        send(party, encode(Input("f-1", "alice", party, "base", blobs[party]), 2))
    assert send("user", encode(Run("f-1", "r1", {}), 3)).message.TYPE.value == "ACK"
    reply = send("user", encode(GetOutput("f-1", "r1", 20_000), 4)).message
    assert reply.code == "BAD_CIPHERTEXT" and "run 'r1' failed" in reply.reason, reply.reason
    assert send("user", encode(Ping(), 5)).message.role == "evaluator"
    # the session is still usable: the right ciphertext, sent again, runs
    send("user", encode(Input("f-1", "alice", "user", "base", blobs["user"]), 6))
    assert send("user", encode(Run("f-1", "r2", {}), 7)).message.TYPE.value == "ACK"
    assert send("user", encode(GetOutput("f-1", "r2", 20_000), 8)).message.TYPE.value == "OUTPUT"
