"""Custody audit of one real-FHE application: every role captures what it receives; each capture is first shown to
hold what the protocol sends it, then searched for secret-key material and for the applicant's distinctive values."""

import copy

import pytest
import yaml

from credit_model.deployment import DEPLOYMENTS_DIR
from scenarios import SCENARIO_DIR
from simulation.runner import ScenarioRunner
from scenarios.spec import load_scenario
from tests.custody_audit import found, key_needles, number_needles, packed_key_needles, read_capture, type_counts
from tests.tree_by_hand import TreeByHand

ROLES = ("evaluator", "user", "bank", "agency")
# Values no other field of this applicant has, as the roles receive them (text) and as a column would be sent.
SENTINELS = {"user": {"Total_income": 271828.25, "Age": 61, "Occupation_type": "IT staff",
                      "Education_type": "Academic degree"},
             "bank": {"Account_age": 47},
             "agency": {}}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """The approved applicant with distinctive values, run once with every role capturing what it receives."""
    tmp = tmp_path_factory.mktemp("audit")
    raw = yaml.safe_load((SCENARIO_DIR / "approved.yaml").read_text())
    applicant = copy.deepcopy(raw["applicants"][0])
    for party, values in SENTINELS.items():
        applicant[party].update(values)
    by_hand = TreeByHand(DEPLOYMENTS_DIR / "kaggle")
    expected = "approved" if by_hand.approved(applicant) else "denied"
    applicant["steps"] = [{"action": "predict", "expect": {"decision": expected}}]
    raw.update(name="custody_audit", applicants=[applicant])
    path = tmp / "custody_audit.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    captures = {role: tmp / f"{role}-capture" for role in ROLES}
    for directory in captures.values():
        directory.mkdir()
    extra = {role: ["--capture-dir", str(captures[role])] for role in ROLES}
    extra["bank"].append("--capture-client-key")  # the secret keys the user sent: what everything is searched for
    run_dir = tmp / "run"
    report = ScenarioRunner(load_scenario(path), run_dir=run_dir, extra_args=extra).run()
    assert report.fatal is None and report.passed, report.applicants[0].failures
    return {"report": report, "applicant": applicant, "by_hand": by_hand, "run_dir": run_dir,
            "got": {role: read_capture(captures[role]) for role in ROLES}}


@pytest.fixture(scope="module")
def secret_keys(audited):
    client_keys = [frames for _, frames in audited["got"]["bank"] if frames[1] == b"CLIENT_KEY"]
    assert len(client_keys) == 1, "the bank received no CLIENT_KEY: nothing to search for"
    keys = client_keys[0][3:]
    assert keys and all(len(k) > 10_000 for k in keys)
    return keys


def sentinel_needles(party):
    """Text and float64 forms. Text is searched in JSON headers only: a few bytes of text turn up in megabytes of
    ciphertext by chance (b"Age" did, in a 37 MB capture); eight bytes or more are searched everywhere."""
    needles = []
    for name, value in SENTINELS[party].items():
        needles += number_needles(value) if isinstance(value, (int, float)) else [value.encode()]
    return needles


def headers_and_blobs(captured):
    """(every JSON header, every frame): frame 2 is a message's header (SPEC §3)."""
    headers = b"\n".join(frames[2] for _, frames in captured if len(frames) > 2)
    return headers, b"".join(f for _, frames in captured for f in frames)


def split(needles):
    """(short needles, for headers only; long ones, for every byte)."""
    return [n for n in needles if len(n) < 8], [n for n in needles if len(n) >= 8]


def scaled_needles(audited, party):
    """Each sentinel number as the preprocessed (standardised) column value the party would encrypt."""
    scaling = audited["by_hand"].scaling[party]
    return [n for name, v in SENTINELS[party].items() if name in scaling
            for n in number_needles((v - scaling[name][0]) / scaling[name][1])]


@pytest.mark.fhe
@pytest.mark.slow
def test_every_capture_holds_what_the_protocol_sends_that_role(audited):
    got = {role: type_counts(audited["got"][role]) for role in ROLES}
    assert set(got["evaluator"]) == {"COMMAND", "EVAL_KEY", "KEY_QUERY", "INPUT", "RUN", "GET_OUTPUT", "SHUTDOWN"}
    assert got["evaluator"]["INPUT"] == 3 and got["evaluator"]["EVAL_KEY"] == 1
    assert {"CLIENT_KEY", "COMMAND", "ACK"} <= set(got["bank"]) and {"CLIENT_KEY", "COMMAND"} <= set(got["agency"])
    assert {"OUTPUT", "COMMAND"} <= set(got["user"])
    assert audited["report"].applicants[0].decision.startswith("Credit card is likely to be")
    expected = "approved" if audited["by_hand"].approved(audited["applicant"]) else "denied"
    assert expected in audited["report"].applicants[0].decision


@pytest.mark.fhe
@pytest.mark.slow
def test_bank_and_agency_never_receive_an_output_or_another_partys_features(audited):
    for party, others in (("bank", ("user", "agency")), ("agency", ("user", "bank"))):
        captured = audited["got"][party]
        assert "OUTPUT" not in type_counts(captured)
        headers, everything = headers_and_blobs(captured)
        assert headers and everything
        needles = [n for other in others for n in sentinel_needles(other) + scaled_needles(audited, other)]
        names = [f["name"].encode() for other in others for f in audited["by_hand"].features[other]]
        short, long = split(needles + names)
        assert long and not found(long, everything), party
        assert short and not found(short + long, headers), party


@pytest.mark.fhe
@pytest.mark.slow
def test_the_evaluator_receives_no_key_material_and_no_plaintext(audited, secret_keys):
    headers, everything = headers_and_blobs(audited["got"]["evaluator"])
    assert len(everything) > 10_000_000 and b'"key_id"' in headers  # the evaluation key, three ciphertexts
    for key in secret_keys:
        assert not found(key_needles(key) + packed_key_needles(key), everything)
    plaintext = [n for party in ("user", "bank") for n in sentinel_needles(party) + scaled_needles(audited, party)]
    names = [f["name"].encode() for party in SENTINELS for f in audited["by_hand"].features[party]]
    short, long = split(plaintext + names)
    assert not found(long, everything)
    assert not found(short + long, headers)


@pytest.mark.fhe
@pytest.mark.slow
def test_no_log_holds_key_material_or_the_applicants_values(audited, secret_keys):
    logs = {p.name: p.read_bytes() for p in audited["run_dir"].glob("*.log")}
    assert set(logs) >= {f"{role}.log" for role in ROLES} and b"evaluation key" in logs["evaluator.log"]
    needles = [n for key in secret_keys for n in key_needles(key) + packed_key_needles(key)]
    needles += [n for party in ("user", "bank") for n in sentinel_needles(party) if not n[:1].isdigit()]
    needles += [str(v).encode() for party in ("user", "bank") for v in SENTINELS[party].values()
                if isinstance(v, float)]
    for name, text in logs.items():
        assert not found(needles, text), name


@pytest.mark.fhe
@pytest.mark.slow
def test_what_the_evaluator_stores_is_private_to_its_owner(audited):
    stored = [p for d in ("keys", "sessions") for p in (audited["run_dir"] / "evaluator" / d).rglob("*") if p.is_file()]
    assert any(p.suffix == ".evk" for p in stored) and any(p.name.startswith("i") and p.suffix == ".bin" for p in stored)
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in stored if p.suffix in (".evk", ".bin", ".json"))


@pytest.mark.parametrize("leak", ["raw", "hex", "HEX", "base64", "packed", "packed_lsb_first"])
def test_the_search_finds_a_key_however_it_is_encoded(leak):
    """The needles find a key leaked in each encoding inside megabytes of random bytes, and nothing in noise alone."""
    import base64
    import os
    import random

    rng = random.Random(leak)
    bits = [rng.randint(0, 1) for _ in range(1536)]
    key = b"\x03" + b"\x00" * 7 + b"0.5core_crypto::LweSecretKey".ljust(48, b"\x00") + (1536).to_bytes(8, "little") + b"".join(
        b.to_bytes(8, "little") for b in bits)
    order = bits if leak == "packed" else [b for i in range(0, 1536, 8) for b in bits[i:i + 8][::-1]]
    packed = bytes(int("".join(map(str, order[i:i + 8])), 2) for i in range(0, 1536, 8))
    encoded = {"raw": key, "hex": key.hex().encode(), "HEX": key.hex().upper().encode(),
               "base64": base64.b64encode(key), "packed": packed, "packed_lsb_first": packed}[leak]
    noise = os.urandom(4_000_000)
    needles = key_needles(key) + packed_key_needles(key)
    assert found(needles, noise[:1_000_000] + encoded[len(encoded) // 3:] + noise)  # a part of a leak too
    assert not found(needles, noise + key[:64])  # the constant header alone is no key material
