"""The evaluator's store: owners and per-owner bounds, files 0600, run ids never reused, recovery of any accepted id."""

import hashlib
import json
import stat

import pytest

from evaluator.store import MAX_VARIANTS, SessionStore, check_id
from protocol.errors import ErrorCode, Forbidden, IllegalState, MalformedMessage, OverQuota, ProtocolError
from protocol.states import SessionState

PARTIES = ("user", "bank", "agency")


@pytest.fixture
def store(tmp_path):
    return SessionStore(tmp_path / "ev", PARTIES, max_sessions=3, max_keys=2)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def complete(store, session_id="a-1", key_id="a"):
    s = store.open(session_id, key_id)
    for party in PARTIES:
        store.add_input(s, party, "base", key_id, party.encode())
    return s


def test_inputs_move_the_session_to_ready_and_files_are_private(store):
    s = store.open("a-1", "a")
    store.add_input(s, "user", "base", "a", b"u")
    store.add_input(s, "bank", "base", "a", b"b")
    assert s.machine.state is SessionState.COLLECTING and s.missing() == ["agency"]
    store.add_input(s, "agency", "base", "a", b"g")
    assert s.machine.state is SessionState.READY
    files = [stored.path for stored in s.inputs.values()] + [s.directory / "meta.json"]
    assert len(files) == 4 and all(mode(p) == 0o600 for p in files)
    assert mode(s.directory) == 0o700 and mode(store.root) == 0o700
    assert s.inputs[("bank", "base")].sha256 == hashlib.sha256(b"b").hexdigest()


def test_an_owners_oldest_session_is_evicted_never_another_owners(store):
    theirs = store.open("other-1", "k", owner="someone")
    dirs = []
    for i in range(5):
        s = store.open(f"s-{i}", "k")
        store.add_input(s, "user", "base", "k", b"x" * 10)
        dirs.append(s.directory)
    assert list(store.sessions) == ["other-1", "s-2", "s-3", "s-4"]
    assert not dirs[0].exists() and not dirs[1].exists() and all(d.exists() for d in dirs[2:])
    assert theirs.directory.exists()
    with pytest.raises(ProtocolError) as err:
        store.get("s-0")
    assert err.value.code is ErrorCode.UNKNOWN_SESSION


def test_a_session_cannot_be_taken_over_or_fed_under_another_key(store):
    s = store.open("a-1", "a")
    with pytest.raises(Forbidden, match="another key id or owner"):
        store.open("a-1", "b")
    with pytest.raises(Forbidden):
        store.open("a-1", "a", owner="bank")
    with pytest.raises(Forbidden, match="another key id"):
        store.add_input(s, "bank", "base", "b", b"x")
    assert ("bank", "base") not in s.inputs


def test_keys_are_bounded_per_owner_and_never_replaced(store):
    store.put_key("a", b"1")
    store.put_key("b", b"2")
    store.put_key("z", b"9", owner="other")
    assert store.put_key("c", b"3") == ["a"]
    assert store.key_path("a") is None and mode(store.key_path("c")) == 0o600
    assert store.key_path("z") is not None
    with pytest.raises(IllegalState, match="never replaced"):
        store.put_key("c", b"overwrite")
    assert store.key_path("c").read_bytes() == b"3"
    index = json.loads((store.root / "keys" / "index.json").read_text())
    assert set(index) == {"b", "c", "z"} and mode(store.root / "keys" / "index.json") == 0o600


def test_a_partys_variants_are_capped_by_evicting_only_its_own(store):
    s = complete(store)
    for i in range(MAX_VARIANTS + 5):
        store.add_input(s, "agency", f"v{i}", "a", b"y")
    assert s.variants_of("agency") == [f"v{i}" for i in range(5, MAX_VARIANTS + 5)]
    assert all((p, "base") in s.inputs for p in PARTIES)


@pytest.mark.parametrize("bad", ["../x", "", "a" * 65, "a/b", ".hidden", "a\n", "a\nb", "ä", " a"])
def test_hostile_ids_are_refused(bad):
    with pytest.raises(MalformedMessage):
        check_id("session id", bad)


def test_inputs_are_refused_while_running_and_run_ids_are_never_reused(store):
    s = complete(store)
    paths = store.begin_run(s, "r1", {})
    assert [p.read_bytes() for p in paths] == [b"user", b"bank", b"agency"]
    with pytest.raises(IllegalState, match="RUNNING"):
        store.add_input(s, "agency", "y1", "a", b"x")
    assert ("agency", "y1") not in s.inputs
    out = store.output_path(s)
    out.write_bytes(b"o")
    store.finish_run(s, "r1", out, 0.5)
    assert s.outputs["r1"].inputs == {p: hashlib.sha256(p.encode()).hexdigest() for p in PARTIES}
    with pytest.raises(IllegalState, match="already used"):
        store.begin_run(s, "r1", {})
    with pytest.raises(ProtocolError) as err:
        store.begin_run(s, "r2", {"agency": "nope"})
    assert err.value.code is ErrorCode.MISSING_INPUTS and s.machine.state is SessionState.DONE


def test_a_writer_over_its_byte_quota_evicts_its_own_variants_then_is_refused(tmp_path):
    store = SessionStore(tmp_path / "ev", PARTIES, max_sessions=50, max_keys=50, max_bytes=8000)
    s = complete(store)  # bank's quota: a quarter of 8000 bytes
    store.add_input(s, "bank", "v1", "a", b"b" * 1000)
    store.add_input(s, "bank", "v2", "a", b"b" * 1100)  # 4 + 1000 + 1100 > 2000: v1 goes
    assert s.variants_of("bank") == ["v2"] and store.bytes_by["bank"] == 1104
    with pytest.raises(OverQuota, match="bank"):  # cannot fit even without v2: refused, nothing evicted
        store.add_input(s, "bank", "v3", "a", b"b" * 2500)
    assert s.variants_of("bank") == ["v2"] and store.bytes_by["bank"] == 1104
    assert all((p, "base") in s.inputs for p in PARTIES)


def test_the_user_over_the_store_bound_evicts_its_oldest_sessions_then_keys(tmp_path):
    store = SessionStore(tmp_path / "ev", PARTIES, max_sessions=50, max_keys=50, max_bytes=5000)
    store.put_key("k", b"k" * 1000)
    for i in range(6):
        s = store.open(f"s-{i}", "k")
        store.add_input(s, "user", "base", "k", b"x" * 1000)
        assert store.bytes_on_disk() <= 5000
    assert list(store.sessions)[-1] == "s-5" and "s-0" not in store.sessions
    store.put_key("big", b"b" * 4000)  # pushes out sessions first, then older keys
    assert store.bytes_on_disk() <= 5000 and store.key_path("big") is not None
    on_disk = sum(p.stat().st_size for p in store.root.rglob("*.bin")) + \
        sum(p.stat().st_size for p in store.root.rglob("*.evk"))
    assert on_disk == store.bytes_on_disk()


def test_a_restarted_store_recovers_every_accepted_id_and_refuses_reused_run_ids(tmp_path):
    first = SessionStore(tmp_path / "ev", PARTIES)
    first.put_key("k.1__x", b"key")
    s = complete(first, "a__b-1.x", "k.1__x")
    first.add_input(s, "agency", "v__1", "k.1__x", b"variant")
    first.begin_run(s, "r__1", {"agency": "v__1"})
    out = first.output_path(s)
    out.write_bytes(b"out")
    first.finish_run(s, "r__1", out, 0.25)
    again = SessionStore(tmp_path / "ev", PARTIES)
    assert again.recovered == 1 and again.key_path("k.1__x").read_bytes() == b"key"
    restored = again.get("a__b-1.x")
    assert restored.machine.state is SessionState.READY
    assert restored.inputs[("agency", "v__1")].path.read_bytes() == b"variant"
    assert restored.outputs["r__1"].path.read_bytes() == b"out" and restored.outputs["r__1"].seconds == 0.25
    with pytest.raises(IllegalState, match="already used"):
        again.begin_run(restored, "r__1", {})
    assert again.bytes_on_disk() == first.bytes_on_disk()
    fresh = again.open("n-1", "k.1__x")  # new files never collide with recovered ones
    again.add_input(fresh, "user", "base", "k.1__x", b"new")
    assert restored.inputs[("user", "base")].path.read_bytes() == b"user"


def test_recovery_skips_tampered_metadata_and_never_follows_paths(tmp_path):
    first = SessionStore(tmp_path / "ev", PARTIES)
    good = complete(first, "good-1", "k")
    bad = complete(first, "bad-1", "k")
    meta = json.loads((bad.directory / "meta.json").read_text())
    meta["inputs"][0]["file"] = "../../../etc/passwd"
    (bad.directory / "meta.json").write_text(json.dumps(meta))
    broken = complete(first, "broken-1", "k")
    (broken.directory / "meta.json").write_text("{not json")
    (tmp_path / "ev" / "keys" / "index.json").write_text(json.dumps({"bad\nid": {"file": "k1.evk", "owner": "user"}}))
    again = SessionStore(tmp_path / "ev", PARTIES)
    assert list(again.sessions) == ["good-1"] and again.recovered == 1 and not again.keys
    assert again.get("good-1").inputs[("bank", "base")].path == good.inputs[("bank", "base")].path
