"""The evaluator's session store: bounded, files 0600, eviction removes everything of a session."""

import stat

import pytest

from evaluator.store import SessionStore, check_id
from protocol.errors import ErrorCode, IllegalState, MalformedMessage, ProtocolError
from protocol.states import Event, SessionState

PARTIES = ("user", "bank", "agency")


@pytest.fixture
def store(tmp_path):
    return SessionStore(tmp_path / "ev", PARTIES, max_sessions=3, max_keys=2)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_inputs_move_the_session_to_ready_and_files_are_private(store):
    s = store.open("a-1", "a")
    store.add_input(s, "user", "base", b"u")
    store.add_input(s, "bank", "base", b"b")
    assert s.machine.state is SessionState.COLLECTING and s.missing() == ["agency"]
    store.add_input(s, "agency", "base", b"g")
    assert s.machine.state is SessionState.READY
    for path in s.inputs.values():
        assert mode(path) == 0o600
    assert mode(s.directory) == 0o700


def test_oldest_session_is_evicted_with_its_files(store):
    dirs = []
    for i in range(4):
        s = store.open(f"s-{i}", "k")
        store.add_input(s, "user", "base", b"x" * 10)
        dirs.append(s.directory)
    assert list(store.sessions) == ["s-1", "s-2", "s-3"]
    assert not dirs[0].exists() and all(d.exists() for d in dirs[1:])
    with pytest.raises(ProtocolError) as err:
        store.get("s-0")
    assert err.value.code is ErrorCode.UNKNOWN_SESSION


def test_keys_are_bounded_and_private(store):
    store.put_key("a", b"1")
    store.put_key("b", b"2")
    assert store.put_key("c", b"3") == ["a"]
    assert store.key_path("a") is None and mode(store.key_path("c")) == 0o600
    assert sorted(p.name for p in (store.root / "keys").iterdir()) == ["b.evk", "c.evk"]


def test_hostile_ids_and_illegal_states(store):
    for bad in ("../x", "", "a" * 65, "a/b", ".hidden"):
        with pytest.raises(MalformedMessage):
            check_id("session id", bad)
    s = store.open("a-1", "a")
    with pytest.raises(ProtocolError, match="another key id"):
        store.open("a-1", "b")
    for party in PARTIES:
        store.add_input(s, party, "base", b"x")
    s.machine.fire(Event.RUN)
    with pytest.raises(IllegalState, match="RUNNING"):
        store.add_input(s, "agency", "y1", b"x")
    assert ("agency", "y1") not in s.inputs


def test_store_is_bounded_in_bytes_too(tmp_path):
    store = SessionStore(tmp_path / "ev", PARTIES, max_sessions=50, max_keys=50, max_bytes=5000)
    store.put_key("k", b"k" * 1000)
    for i in range(6):
        s = store.open(f"s-{i}", "k")
        store.add_input(s, "user", "base", b"x" * 1000)
        assert store.bytes_on_disk() <= 5000
    assert list(store.sessions)[-1] == "s-5" and "s-0" not in store.sessions
    assert not (tmp_path / "ev" / "sessions" / "s-0").exists()
    store.put_key("big", b"b" * 4000)  # pushes out sessions first, then older keys
    assert store.bytes_on_disk() <= 5000 and store.key_path("big") is not None


def test_a_restarted_store_recovers_keys_and_sessions(tmp_path):
    first = SessionStore(tmp_path / "ev", PARTIES)
    first.put_key("k", b"key")
    s = first.open("a-1", "k")
    for party in PARTIES:
        first.add_input(s, party, "base", party.encode())
    again = SessionStore(tmp_path / "ev", PARTIES)
    assert again.recovered == 1 and again.key_path("k").read_bytes() == b"key"
    restored = again.get("a-1")
    assert restored.machine.state is SessionState.READY and restored.inputs[("bank", "base")].read_bytes() == b"bank"
