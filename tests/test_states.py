"""Every legal transition of every role's state machine, and the refusal of every illegal one; the tables pinned to
the text of protocol/SPEC.md §8."""

import re
from pathlib import Path

import pytest

from protocol.errors import ErrorCode, IllegalState
from protocol.states import (
    APPLICATION_TABLE, KEY_TABLE, SESSION_TABLE, ApplicationState, Event, KeyState, SessionState, StateMachine,
)

TABLES = [(SESSION_TABLE, SessionState), (APPLICATION_TABLE, ApplicationState), (KEY_TABLE, KeyState)]


@pytest.mark.parametrize("table, states", TABLES)
def test_every_legal_transition(table, states):
    for (state, event), target in table.items():
        machine = StateMachine("m", state, table)
        assert machine.can(event)
        assert machine.fire(event) is target and machine.state is target


@pytest.mark.parametrize("table, states", TABLES)
def test_every_illegal_transition_is_refused_and_leaves_the_state(table, states):
    for state in states:
        for event in Event:
            if (state, event) in table:
                continue
            machine = StateMachine("m", state, table)
            with pytest.raises(IllegalState) as err:
                machine.fire(event)
            assert err.value.code is ErrorCode.ILLEGAL_STATE
            assert state.value in err.value.reason and event.value in err.value.reason
            assert machine.state is state


def test_session_lifecycle():
    m = StateMachine("s", SessionState.COLLECTING, SESSION_TABLE)
    for event, expected in [(Event.INPUT_PARTIAL, SessionState.COLLECTING),
                            (Event.INPUT_COMPLETE, SessionState.READY), (Event.RUN, SessionState.RUNNING),
                            (Event.RUN_DONE, SessionState.DONE), (Event.INPUT_COMPLETE, SessionState.READY),
                            (Event.RUN, SessionState.RUNNING), (Event.RUN_FAILED, SessionState.READY)]:
        assert m.fire(event) is expected
    assert not StateMachine("s", SessionState.RUNNING, SESSION_TABLE).can(Event.INPUT_COMPLETE)


def test_explain_only_after_denial():
    assert StateMachine("a", ApplicationState.DENIED, APPLICATION_TABLE).can(Event.EXPLAIN)
    for state in (ApplicationState.NEW, ApplicationState.INPUT_SENT, ApplicationState.APPROVED):
        assert not StateMachine("a", state, APPLICATION_TABLE).can(Event.EXPLAIN)


# --- the tables pinned to SPEC's text ----------------------------------------------------------------------------
SPEC = Path(__file__).resolve().parent.parent / "protocol" / "SPEC.md"
CODE_TABLES = {"SESSION_TABLE": SESSION_TABLE, "APPLICATION_TABLE": APPLICATION_TABLE, "KEY_TABLE": KEY_TABLE}
STATE_ENUMS = {"SESSION_TABLE": SessionState, "APPLICATION_TABLE": ApplicationState, "KEY_TABLE": KeyState}
# SPEC names events in words; each wording is mapped here by hand to the code's event (a new or changed wording
# fails below, instead of being guessed at).
SPEC_EVENT_WORDS = {
    "INPUT, some party still missing": Event.INPUT_PARTIAL,
    "INPUT completing user+bank+agency": Event.INPUT_COMPLETE,
    "INPUT (another variant, or a resend)": Event.INPUT_COMPLETE,  # READY: every party's input is present
    "INPUT": Event.INPUT_COMPLETE,                                 # DONE: every party's input is present
    "RUN": Event.RUN,
    "run finished": Event.RUN_DONE,
    "run failed": Event.RUN_FAILED,
    "prepare": Event.PREPARE,
    "approved": Event.DECIDED_APPROVED,
    "denied": Event.DECIDED_DENIED,
    "explain": Event.EXPLAIN,
    "CLIENT_KEY": Event.KEY_RECEIVED,
}
ARROW = re.compile(r"(?=\b([A-Z][A-Z_]*) –([^→;.]+?)→ ([A-Z][A-Z_]*)\b)")


def spec_state_tables() -> dict[str, set[tuple[str, str, str]]]:
    """SPEC §8's tables as written: table name -> {(state, event wording, next state)}, from its markdown rows
    (`| state | event | next |`) and from its arrow chains (`A –event→ B –event→ C`)."""
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## 8. States and transitions", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, set[tuple[str, str, str]]] = {}
    current = None
    for line in section.splitlines():
        named = re.search(r"\(`([A-Z_]+_TABLE)`\)", line)
        if named:
            current = tables.setdefault(named.group(1), set())
        if current is None:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        if len(cells) == 3 and cells[0] != "state" and not set(cells[0]) <= {"-", ":"}:
            current.add(tuple(cells))
        for state, words, target in ARROW.findall(line):
            current.add((state, words.strip(), target))
    return tables


def test_the_state_tables_are_exactly_the_ones_spec_prints():
    written = spec_state_tables()
    assert set(written) == set(CODE_TABLES), f"SPEC §8 names the tables {sorted(written)}"
    for name, table in CODE_TABLES.items():
        rows = written[name]
        assert len(rows) >= 2, f"SPEC §8 gives no transitions for {name}"
        unknown = {words for _, words, _ in rows} - set(SPEC_EVENT_WORDS)
        assert not unknown, f"SPEC §8 ({name}) uses event wordings this test does not know: {unknown}"
        spec = {(state, SPEC_EVENT_WORDS[words].value, target) for state, words, target in rows}
        code = {(state.value, event.value, target.value) for (state, event), target in table.items()}
        assert not spec - code, f"{name}: in SPEC §8 but not in protocol/states.py: {sorted(spec - code)}"
        assert not code - spec, f"{name}: in protocol/states.py but not in SPEC §8: {sorted(code - spec)}"
        states = {s for state, _, target in spec for s in (state, target)}
        assert states == {s.value for s in STATE_ENUMS[name]}, \
            f"{name}: SPEC §8 names the states {sorted(states)}, the code has {[s.value for s in STATE_ENUMS[name]]}"
