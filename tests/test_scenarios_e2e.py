"""Whole scenarios through the four real processes: real FHE for the approved and explained ones, custody audit."""

from pathlib import Path

import pytest

from scenarios import SCENARIO_DIR
from scenarios.runner import ScenarioRunner
from scenarios.spec import load_scenario


def run(name, **kwargs):
    return ScenarioRunner(load_scenario(SCENARIO_DIR / f"{name}.yaml"), **kwargs).run()


def assert_passed(report):
    assert report.fatal is None
    assert [a.failures for a in report.applicants] == [[] for _ in report.applicants]
    assert report.passed
    assert report.exit_codes == {"evaluator": 0, "user": 0, "bank": 0, "agency": 0}


def frames_by_message(capture_dir: Path) -> dict[str, list[bytes]]:
    messages: dict[str, list[bytes]] = {}
    for path in sorted(capture_dir.iterdir()):
        stem, index = path.name.rsplit(".", 1)
        messages.setdefault(stem, []).append((int(index), path.read_bytes()))
    return {k: [b for _, b in sorted(v)] for k, v in messages.items()}


@pytest.mark.fhe
@pytest.mark.slow
def test_approved_with_real_fhe_and_the_evaluator_never_sees_the_client_key(tmp_path, alice):
    ev_dir, bank_dir = tmp_path / "evaluator-capture", tmp_path / "bank-capture"
    ev_dir.mkdir()
    bank_dir.mkdir()
    run_dir = tmp_path / "run"
    report = run("approved", run_dir=run_dir, extra_args={
        "evaluator": ["--capture-dir", str(ev_dir)],
        "bank": ["--capture-dir", str(bank_dir), "--capture-client-key"]})
    assert_passed(report)
    assert report.applicants[0].decision == "Credit card is likely to be approved ✅"

    bank_got = frames_by_message(bank_dir)
    client_keys = [frames for frames in bank_got.values() if frames[1] == b"CLIENT_KEY"]
    assert len(client_keys) == 1
    secret_keys = client_keys[0][3:]
    assert len(secret_keys) >= 1 and all(len(k) > 1000 for k in secret_keys)

    ev_got = frames_by_message(ev_dir)
    types = sorted({frames[1].decode() for frames in ev_got.values()})
    assert types == ["COMMAND", "EVAL_KEY", "GET_OUTPUT", "INPUT", "KEY_QUERY", "RUN", "SHUTDOWN"] or \
        set(types) <= {"COMMAND", "EVAL_KEY", "GET_OUTPUT", "INPUT", "KEY_QUERY", "RUN", "SHUTDOWN"}
    everything = b"".join(f for frames in ev_got.values() for f in frames)
    for key in secret_keys:
        for start in range(0, len(key) - 64, 512):  # no 64-byte window of any secret key
            assert key[start:start + 64] not in everything
    plaintext = [str(v).encode() for party in alice.values() for v in party.values()
                 if isinstance(v, str) or (isinstance(v, float) and v > 1000)]
    plaintext += [name.encode() for party in alice.values() for name in party]
    headers = b"".join(frames[2] for frames in ev_got.values() if len(frames) > 2)
    for value in plaintext:
        assert value not in headers, value

    # no role writes the client key or a plaintext feature value to its log
    logs = {p.name: p.read_bytes() for p in run_dir.glob("*.log")}
    assert set(logs) == {"evaluator.log", "user.log", "bank.log", "agency.log"}
    for name, text in logs.items():
        for key in secret_keys:
            assert key[:64] not in text and key[:64].hex().encode() not in text, name
        for value in (b"95400", b"Core staff", b"Incomplete higher"):
            assert value not in text, (name, value)
    # everything the evaluator stored (evaluation keys, ciphertexts) is private to its owner
    stored = [p for d in ("keys", "sessions") for p in (run_dir / "evaluator" / d).rglob("*") if p.is_file()]
    assert any(p.suffix == ".evk" for p in stored) and any(p.name.startswith("i") and p.suffix == ".bin" for p in stored)
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in stored if p.suffix in (".evk", ".bin", ".json"))


@pytest.mark.fhe
@pytest.mark.slow
def test_denied_and_explained_with_real_fhe_linear_and_bisect_agree():
    report = run("denied_bin_found")
    assert_passed(report)
    explains = [s.detail for s in report.steps if s.name.startswith("explain")]
    assert [e["strategy"] for e in explains] == ["linear", "bisect"]
    assert explains[0]["explanation"] == explains[1]["explanation"]
    assert explains[0]["bin"] == explains[1]["bin"] == "5-8"
    assert explains[1]["runs"] <= 3
    kinds = {m["type"] for m in report.messages}
    assert {"CANDIDATE", "RUN", "OUTPUT", "INPUT"} <= kinds


@pytest.mark.parametrize("name", ["denied_no_bin_helps", "denied_last_bin", "explain_when_approved",
                                  "missing_party_input", "several_applicants"])
def test_other_shipped_scenarios_in_simulation(name):
    report = run(name, fhe="simulate")
    assert_passed(report)


@pytest.mark.fhe
@pytest.mark.slow
def test_repeat_applicant_reuses_keys_and_the_runner_never_carries_keys_or_ciphertexts():
    report = run("repeat_applicant")
    assert_passed(report)
    prepares = [s.detail for s in report.steps if s.name == "prepare+encrypt"]
    assert "keygen_s" in prepares[0] and prepares[0]["eval_key_uploaded"]
    assert "keygen_s" not in prepares[1] and not prepares[1]["eval_key_uploaded"]
    assert prepares[1]["client_key_shared_with"] == []
    eval_keys = [m for m in report.messages if m["type"] == "EVAL_KEY"]
    assert len(eval_keys) == 1 and eval_keys[0]["bytes"] > 10_000_000
    through_runner = [m for m in report.messages if "runner" in (m["sender"], m["receiver"])]
    assert {m["type"] for m in through_runner} <= {"READY", "COMMAND", "RESULT", "SHUTDOWN"}
    assert max(m["bytes"] for m in through_runner) < 8192
    peer_types = {m["type"] for m in report.messages if "runner" not in (m["sender"], m["receiver"])}
    assert "INPUT" in peer_types


def test_evaluator_worker_processes_serve_a_scenario():
    report = run("denied_bin_found", fhe="simulate", extra_args={"evaluator": ["--workers", "2"]})
    assert_passed(report)


def test_bisect_refuses_a_deployment_without_the_monotone_constraint(deployment, tmp_path):
    import json
    import shutil

    copy = tmp_path / "deploy"
    shutil.copytree(deployment.directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["monotonic_cst"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = run("denied_bin_found", fhe="simulate", deployment=str(copy))
    failures = report.applicants[0].failures
    assert len(failures) == 1 and "step 3 (explain)" in failures[0]
    assert "bisect strategy needs a model trained with a monotone constraint" in failures[0]
    assert report.applicants[0].errors[0]["code"] == "ILLEGAL_STATE"
