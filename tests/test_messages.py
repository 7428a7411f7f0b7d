"""Frame codec: every message round-trips; every malformed input is a ProtocolError, never a crash."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from protocol import PROTOCOL_VERSION
from protocol.errors import (
    ErrorCode, MalformedMessage, MessageTooLarge, ProtocolError, UnknownMessageType, VersionMismatch,
)
from protocol.messages import (
    BLOB_CHUNK, MESSAGE_CLASSES, Ack, Candidate, ClientKey, Command, Error, EvalKey, GetOutput, Input, KeyQuery,
    KeyStatus, MessageType, Output, Ping, Pong, Ready, Result, Run, Shutdown, decode, encode,
)

EXAMPLES = [
    Ready("user", 42, {"user": "ipc:///tmp/x"}), Command("prepare", {"session_id": "a-1"}),
    Result("stats", {"messages": []}), Shutdown(), Ping(), Pong("bank"), Ack({"n": 1}),
    Error("FORBIDDEN", "bank may not send RUN"), KeyQuery("alice", "ab" * 32), KeyStatus("alice", True),
    EvalKey("alice", b"\x00" * 1000), ClientKey("alice", [0], (b"k1",)),
    Input("alice-1", "alice", "bank", "base", b"\x01\x02\x03"), Run("alice-1", "r1", {"agency": "v"}),
    GetOutput("alice-1", "r1", 500), Output("alice-1", "r1", 1.25, {"user": "ab" * 32}, b"\xff" * 10),
    Candidate("alice-1", "alice", 2, "y2", encrypt=False),
]


def test_every_type_has_a_class_and_an_example():
    assert set(MESSAGE_CLASSES) == set(MessageType)
    assert {m.TYPE for m in EXAMPLES} == set(MessageType)


def test_a_large_blob_travels_in_bounded_frames_and_comes_back_whole():
    key = bytes(range(256)) * (3 * BLOB_CHUNK // 256 + 7)
    frames = encode(EvalKey("k", key), 3)
    assert json.loads(frames[2])["evaluation_key_count"] == len(frames) - 3 == 4
    assert all(len(f) <= BLOB_CHUNK for f in frames[3:])
    assert decode(frames).message.evaluation_key == key
    oversized = frames[:3] + [frames[3] + frames[4]] + frames[5:]
    header = json.loads(frames[2])
    header["evaluation_key_count"] = 3
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode([oversized[0], oversized[1], json.dumps(header).encode()] + oversized[3:])


def test_too_many_frames_are_refused_before_decoding():
    frames = encode(Input("s-1", "k", "bank", "base", b"x"), 1) + [b"", b""]
    with pytest.raises(MessageTooLarge, match="frames"):
        decode(frames)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.TYPE.value)
def test_round_trip(message):
    frames = encode(message, 9)
    assert frames[0] == PROTOCOL_VERSION and frames[1] == message.TYPE.value.encode()
    packet = decode(frames)
    assert packet.seq == 9 and packet.message == message


def test_binary_fields_travel_as_raw_frames_not_json():
    frames = encode(EvalKey("k", b"\x00\x01secret-bytes"), 1)
    header = json.loads(frames[2])
    assert "evaluation_key" not in header and frames[3] == b"\x00\x01secret-bytes"


def _frames(type_name=b"ACK", header=None, blobs=(), version=PROTOCOL_VERSION):
    raw = header if isinstance(header, bytes) else json.dumps(header or {"seq": 1}).encode()
    return [version, type_name, raw, *blobs]


@pytest.mark.parametrize("frames, error, text", [
    (_frames(version=b"FCS/0"), VersionMismatch, "version"),
    (_frames(type_name=b"NOPE"), UnknownMessageType, "NOPE"),
    (_frames(header=b"{not json"), MalformedMessage, "JSON"),
    (_frames(header=b"[1, 2]"), MalformedMessage, "object"),
    (_frames(header={"seq": -1}), MalformedMessage, "seq"),
    (_frames(header={"seq": True}), MalformedMessage, "seq"),
    (_frames(b"KEY_QUERY", {"seq": 1}), MalformedMessage, "key_id"),
    (_frames(b"KEY_QUERY", {"seq": 1, "key_id": 5}), MalformedMessage, "str"),
    (_frames(b"KEY_QUERY", {"seq": 1, "key_id": "a", "fingerprint": "0" * 64, "extra": 1}), MalformedMessage,
     "unknown header"),
    (_frames(b"EVAL_KEY", {"seq": 1, "key_id": "a"}), MalformedMessage, "blob count"),
    (_frames(b"ACK", {"seq": 1}, [b"stray"]), MessageTooLarge, "frames"),
    (_frames(b"CLIENT_KEY", {"seq": 1, "key_id": "a", "key_ids": [0], "secret_keys_count": 1}, [b"x", b"y"]),
     MalformedMessage, "extra frame"),
    (_frames(b"CLIENT_KEY", {"seq": 1, "key_id": "a", "key_ids": [0], "secret_keys_count": 3}, [b"x"]),
     MalformedMessage, "blob"),
    (_frames(b"INPUT", {"seq": 1, "session_id": "s", "key_id": "k", "party": "bank", "variant": "v"},
             [b"x" * (2 * 1024 * 1024)]), MessageTooLarge, "limit"),
    ([PROTOCOL_VERSION, b"ACK"], MalformedMessage, "at least 3"),
])
def test_decode_errors(frames, error, text):
    with pytest.raises(error, match=text):
        decode(frames)


def test_error_codes_are_stable():
    assert ErrorCode.parse("MISSING_INPUTS") is ErrorCode.MISSING_INPUTS
    assert ErrorCode.parse("SOMETHING_NEW") is ErrorCode.INTERNAL
    assert MessageTooLarge("x").code is ErrorCode.TOO_LARGE


frame = st.binary(max_size=64)
type_names = st.sampled_from([t.value.encode() for t in MessageType] + [b"", b"\xff"])
headers = st.one_of(st.binary(max_size=64), st.dictionaries(
    st.sampled_from(["seq", "key_id", "session_id", "party", "variant", "run_id", "code", "reason", "offset",
                     "encrypt", "present", "detail", "secret_keys_count", "action", "params", "role", "pid"]),
    st.one_of(st.integers(-2, 2**40), st.text(max_size=8), st.booleans(), st.none(), st.lists(st.integers())),
).map(lambda d: json.dumps(d).encode()))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(version=st.one_of(st.just(PROTOCOL_VERSION), frame), type_name=type_names, header=headers,
       blobs=st.lists(frame, max_size=4))
def test_fuzzed_frames_only_ever_raise_protocol_errors(version, type_name, header, blobs):
    try:
        packet = decode([version, type_name, header, *blobs])
    except ProtocolError:
        return
    assert decode(encode(packet.message, packet.seq)) == packet
