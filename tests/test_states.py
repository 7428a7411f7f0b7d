"""Every legal transition of every role's state machine, and the refusal of every illegal one."""

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
