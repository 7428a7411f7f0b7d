"""The authorization table: pinned to SPEC's text, and enforced row by row by the live roles (every message
type from every proven identity); the one decision rule."""

import re
from pathlib import Path

import pytest

from credit_model.explainability import is_approved
from protocol.authorization import AUTHORIZATION, EVERY_ROLE, authorize
from protocol.errors import Forbidden
from protocol.messages import (
    Ack, Candidate, ClientKey, Command, Error, EvalKey, GetOutput, Input, KeyQuery, KeyStatus, MessageType,
    Output, Ping, Pong, Ready, Result, Run, Shutdown, encode,
)
from tests.conftest import ask

SPEC = Path(__file__).resolve().parent.parent / "protocol" / "SPEC.md"


def spec_table() -> dict:
    """The authorization table as SPEC.md writes it: (channel, type) -> (senders, bound field)."""
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## 5. Authorization", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("channel", "") or set(cells[0]) <= {"-"}:
            continue
        channel, type_name, senders, bound = cells
        rows[(channel, type_name)] = (frozenset(s.strip() for s in senders.split(",")),
                                      None if bound == "–" else bound)
    return rows


def test_the_spec_prints_exactly_the_table_the_code_enforces():
    rows = spec_table()
    assert len(rows) >= 15
    code = {(channel, t.value): (rule.senders, rule.bound_field)
            for channel, rules in AUTHORIZATION.items() for t, rule in rules.items()}
    assert rows == code


def sample(type_: MessageType, sender: str, session: str = "authz-1"):
    party = sender if sender in ("user", "bank", "agency") else "user"
    return {
        MessageType.READY: Ready(sender, 1), MessageType.COMMAND: Command("status"),
        MessageType.RESULT: Result("status"), MessageType.SHUTDOWN: Shutdown(), MessageType.PING: Ping(),
        MessageType.PONG: Pong(sender), MessageType.ACK: Ack({}), MessageType.ERROR: Error("MALFORMED", "x"),
        MessageType.KEY_QUERY: KeyQuery("authz", "0" * 64), MessageType.KEY_STATUS: KeyStatus("authz", True),
        MessageType.EVAL_KEY: EvalKey("authz", b"not a key"), MessageType.CLIENT_KEY: ClientKey("authz", [0], (b"x",)),
        MessageType.INPUT: Input(session, "authz", party, "base", b"not a ciphertext"),
        MessageType.RUN: Run(session, "r1", {}), MessageType.GET_OUTPUT: GetOutput(session, "r1", 0),
        MessageType.OUTPUT: Output(session, "r1", 0.1, {}, b"x"),
        MessageType.CANDIDATE: Candidate(session, "authz", 1, "v1"),
    }[type_]


@pytest.mark.parametrize("channel", sorted(AUTHORIZATION))
def test_every_type_from_every_identity_is_allowed_or_refused_as_the_table_says(channel):
    for type_ in MessageType:
        for sender in sorted(EVERY_ROLE | {"unknown"}):
            rule = AUTHORIZATION[channel].get(type_)
            message = sample(type_, sender)
            if rule is not None and sender in rule.senders and (
                    rule.bound_field is None or getattr(message, rule.bound_field) == sender):
                authorize(channel, sender, message)
            else:
                with pytest.raises(Forbidden):
                    authorize(channel, sender, message)


def test_a_bound_field_must_name_the_sender_itself():
    with pytest.raises(Forbidden, match="only speak for itself"):
        authorize("evaluator", "bank", Input("s", "k", "agency", "base", b"x"))
    with pytest.raises(Forbidden, match="only speak for itself"):
        authorize("runner", "bank", Ready("user", 1))
    authorize("runner", "bank", Ready("bank", 1))


@pytest.mark.parametrize("target", ["evaluator", "bank", "agency"])
def test_live_roles_enforce_every_row_and_a_refusal_changes_nothing(start_roles, client_socket, target):
    procs = start_roles(("evaluator", "bank", "agency"))
    socks = {who: client_socket(procs.endpoints[target], f"{who}:7", procs.keys_dir, server=target)
             for who in sorted(EVERY_ROLE)}
    before = procs.command(target, "status", {}, 10)
    seen = {"allowed": 0, "refused": 0}
    for type_ in MessageType:
        rule = AUTHORIZATION[target].get(type_)
        for sender, sock in socks.items():
            reply = ask(sock, encode(sample(type_, sender), 5)).message
            allowed = rule is not None and sender in rule.senders
            code = reply.code if reply.TYPE is MessageType.ERROR else reply.TYPE.value
            assert (code != "FORBIDDEN") == allowed, (target, type_.value, sender, code)
            seen["allowed" if allowed else "refused"] += 1
    assert seen["allowed"] >= 5 and seen["refused"] >= 70 and sum(seen.values()) == len(MessageType) * len(socks)
    assert procs.command(target, "status", {}, 10) == before
    # an INPUT naming another party than its proven sender is refused too
    if target == "evaluator":
        reply = ask(socks["bank"], encode(Input("authz-1", "authz", "user", "base", b"x"), 6)).message
        assert reply.code == "FORBIDDEN" and "only speak for itself" in reply.reason


def test_one_decision_rule_a_tie_is_denied():
    assert is_approved([0.4, 0.6]) and not is_approved([0.6, 0.4])
    assert not is_approved([0.5615, 0.5615]) and not is_approved([0.0, 0.0])


def test_every_decision_in_the_project_goes_through_the_one_rule():
    """The rule is decided in one place: no other module compares the two probabilities itself."""
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in root.glob("*/*.py"):
        if path.parts[-2] in ("tests", ".venv") or path.name == "explainability.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"argmax\(|probabilit\w*\[1\]\s*>|> 0\.5", text):
            offenders.append(path.name)
    assert offenders == []


def test_the_user_and_the_clear_model_agree_on_a_tie(start_roles):
    """Find an applicant on a leaf where p(approved) == p(denied) and check the user role says denied
    (the synthetic deployment has such a leaf)."""
    from credit_model.deployment import load_deployment
    from credit_model.training.clear_model import ClearModel
    from bench.load import applicant_records

    synthetic = load_deployment("synthetic")
    clear_model = ClearModel(synthetic)
    tie = None
    for records in applicant_records(synthetic, 3000, 11):
        p_denied, p_approved = clear_model.probabilities(records)
        if p_denied == p_approved:
            tie = records
            break
    if tie is None:
        pytest.skip("the deployed model has no leaf with p(approved) == p(denied)")
    assert clear_model.approved(tie) is False
    procs = start_roles(("evaluator", "user", "bank", "agency"), deployment="synthetic")
    procs.command("user", "prepare", {"session_id": "t-1", "key_id": "t", "features": tie["user"]}, 60)
    for party in ("bank", "agency"):
        procs.command(party, "encrypt", {"session_id": "t-1", "key_id": "t", "features": tie[party]}, 60)
    result = procs.command("user", "predict", {"session_id": "t-1"}, 60)
    assert result["approved"] is False and result["decision"].endswith("denied ❌")
