"""Explicit per-role state machines: an enum of states, a table of legal transitions, nothing implicit."""

from __future__ import annotations

from enum import Enum
from typing import Generic, Mapping, TypeVar

from .errors import IllegalState

S = TypeVar("S", bound=Enum)


class Event(str, Enum):
    """What can happen to a session, an application or a key at some role."""

    INPUT_PARTIAL = "input_partial"      # evaluator: an input arrived, some are still missing
    INPUT_COMPLETE = "input_complete"    # evaluator: an input arrived, all parties are present
    RUN = "run"
    RUN_DONE = "run_done"
    RUN_FAILED = "run_failed"
    PREPARE = "prepare"                  # user: keys ready, own input sent
    DECIDED_APPROVED = "approved"
    DECIDED_DENIED = "denied"
    EXPLAIN = "explain"
    KEY_RECEIVED = "key_received"        # bank/agency: client key arrived


class SessionState(str, Enum):
    """Evaluator, per session."""

    COLLECTING = "COLLECTING"
    READY = "READY"
    RUNNING = "RUNNING"
    DONE = "DONE"


class ApplicationState(str, Enum):
    """User, per application (session)."""

    NEW = "NEW"
    INPUT_SENT = "INPUT_SENT"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    EXPLAINED = "EXPLAINED"


class KeyState(str, Enum):
    """Bank and agency, per client key id."""

    NO_KEY = "NO_KEY"
    KEY_READY = "KEY_READY"


SESSION_TABLE: dict[tuple[SessionState, Event], SessionState] = {
    (SessionState.COLLECTING, Event.INPUT_PARTIAL): SessionState.COLLECTING,
    (SessionState.COLLECTING, Event.INPUT_COMPLETE): SessionState.READY,
    (SessionState.READY, Event.INPUT_COMPLETE): SessionState.READY,
    (SessionState.READY, Event.RUN): SessionState.RUNNING,
    (SessionState.RUNNING, Event.RUN_DONE): SessionState.DONE,
    (SessionState.RUNNING, Event.RUN_FAILED): SessionState.READY,
    (SessionState.DONE, Event.INPUT_COMPLETE): SessionState.READY,
    (SessionState.DONE, Event.RUN): SessionState.RUNNING,
}

APPLICATION_TABLE: dict[tuple[ApplicationState, Event], ApplicationState] = {
    (ApplicationState.NEW, Event.PREPARE): ApplicationState.INPUT_SENT,
    (ApplicationState.INPUT_SENT, Event.PREPARE): ApplicationState.INPUT_SENT,
    (ApplicationState.INPUT_SENT, Event.DECIDED_APPROVED): ApplicationState.APPROVED,
    (ApplicationState.INPUT_SENT, Event.DECIDED_DENIED): ApplicationState.DENIED,
    (ApplicationState.DENIED, Event.EXPLAIN): ApplicationState.EXPLAINED,
    (ApplicationState.EXPLAINED, Event.EXPLAIN): ApplicationState.EXPLAINED,
}

KEY_TABLE: dict[tuple[KeyState, Event], KeyState] = {
    (KeyState.NO_KEY, Event.KEY_RECEIVED): KeyState.KEY_READY,
    (KeyState.KEY_READY, Event.KEY_RECEIVED): KeyState.KEY_READY,
}


class StateMachine(Generic[S]):
    """A current state and the table it may move along; an event not in the table is refused."""

    def __init__(self, name: str, initial: S, table: Mapping[tuple[S, Event], S]):
        self.name, self.state, self.table = name, initial, table

    def can(self, event: Event) -> bool:
        return (self.state, event) in self.table

    def fire(self, event: Event) -> S:
        """Move along the table, or raise IllegalState naming the machine, state and event."""
        try:
            self.state = self.table[(self.state, event)]
        except KeyError:
            legal = sorted(e.value for (s, e) in self.table if s == self.state)
            raise IllegalState(f"{self.name}: {event.value!r} is not allowed in state "
                               f"{self.state.value} (allowed: {', '.join(legal) or 'none'})") from None
        return self.state
