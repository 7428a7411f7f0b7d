"""What the roles keep for the page's tabs, in the order they drop it, so that no tab's click makes them drop another
open tab's keys or application; at most `tabs` tabs hold keys at once.

Every tab is the one owner "user" to the evaluator (SPEC §12): beyond `--max-sessions` it drops that owner's oldest
application, beyond `--max-keys` its oldest evaluation key (bank and agency likewise their oldest client keys), and
the user its least recently used keys, whichever tab they belong to. The page is the only runner of its roles, so it
knows that order: each click that would add a key or an application is admitted only when what the roles would then
drop is no other open tab's current key or current application (a tab's older applications are dead to the roles:
only its current one can be run or explained). Refusals name the bound and what frees it: a tab closed, or another
keygen or application of that tab.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from protocol.settings import RoleSettings

MAX_TABS = 16  # keys are 38-469 MB each at the evaluator (on disk) and at the user (in memory)
STORE_MB_DEFAULT = RoleSettings.max_store_mb  # the evaluator's --max-store-mb when not told


@dataclass(frozen=True)
class Limits:
    tabs: int = 8  # tabs holding keys at once
    applications: int = 25  # decided applications a tab keeps for "Save as scenario"; its older ones are dropped
    key_bytes: int = 0  # the deployment's evaluation key (real FHE; 0 with simulation, which has none)

    def __post_init__(self):
        if not (1 <= self.tabs <= MAX_TABS and self.applications >= 1):
            raise ValueError(f"tabs must be 1 to {MAX_TABS} and applications at least 1")

    @property
    def keys(self) -> int:
        """Keys every role keeps: room for each tab's current key and as many again being replaced."""
        return max(20, 2 * self.tabs)

    @property
    def sessions(self) -> int:
        """Applications the evaluator keeps: tabs x applications per tab."""
        return self.tabs * self.applications

    @property
    def store_mb(self) -> int:
        """The evaluator's byte bound: room for `keys` evaluation keys of this deployment and its other files, so
        that it never drops an open tab's key for its bytes before its count (the default deployment's key is
        469 MB: 20 of them are 9 GB on the evaluator's disk), and never less than the evaluator's own default."""
        return max(STORE_MB_DEFAULT, -(-self.keys * self.key_bytes * 11 // 10 // 2**20) + 256)

    def role_args(self) -> dict[str, list[str]]:
        keys = ["--max-keys", str(self.keys)]
        return {"evaluator": ["--max-sessions", str(self.sessions), *keys, "--max-store-mb", str(self.store_mb)],
                "user": keys, "bank": keys, "agency": keys}


class Refused(Exception):
    """A click the page does not send: it would make the roles drop another tab's keys or application."""


@dataclass(frozen=True)
class Ticket:
    tab: str
    kind: str  # "key" | "session"
    generation: int


def _dropped(order: dict[str, int], adding: int, limit: int) -> list[str]:
    """What a role keeping `limit` entries drops when `adding` more come: the entries with the lowest order."""
    return sorted(order, key=order.__getitem__)[:max(0, len(order) + adding - limit)]


class Capacity:
    """The page's copy of what its roles keep for whom (keys unless --fhe simulate, which makes none; applications),
    for the role set of one generation: a restart of the roles starts it afresh."""

    def __init__(self, limits: Limits, track_keys: bool = True):
        self.limits, self.track_keys = limits, track_keys
        self._lock = threading.Lock()
        self._reset(0)

    def _reset(self, generation: int) -> None:
        self.generation = generation
        self.holders: set[str] = set()  # tabs holding keys
        self.live: dict[str, dict[str, str]] = {"key": {}, "session": {}}  # tab -> its current key id, session id
        self.made: dict[str, int] = {}  # key id -> when it was made (evaluator, bank, agency drop the oldest)
        self.used: dict[str, int] = {}  # key id -> when the user last used it (it drops the least recently used)
        self.opened: dict[str, int] = {}  # session id -> when the evaluator opened it (it drops the oldest)
        self.owner: dict[str, str] = {}  # key id or session id -> tab
        self.pending = {"key": 0, "session": 0}

    def _sync(self, generation: int) -> None:
        if generation != self.generation:
            self._reset(generation)

    def _blocked(self, tab: str, kind: str, ids: list[str]) -> list[str]:
        return [i for i in ids if self.owner.get(i) not in (None, tab) and self.live[kind].get(self.owner[i]) == i]

    def reserve(self, tab: str, kind: str, generation: int) -> Ticket:
        """Admit one keygen (kind "key") or new application ("session") of `tab`, or raise Refused saying why."""
        with self._lock:
            self._sync(generation)
            if kind == "key" and tab not in self.holders and len(self.holders) >= self.limits.tabs:
                raise Refused(f"This page serves at most {self.limits.tabs} applicants (tabs with keys) at once, "
                              f"so that none of them can push another's keys or application out of the roles: "
                              f"close one of the other tabs, then generate the keys again.")
            adding = self.pending[kind] + 1
            if kind == "key" and self.track_keys:
                dropped = _dropped(self.made, adding, self.limits.keys) + _dropped(self.used, adding, self.limits.keys)
                if self._blocked(tab, "key", dropped):
                    raise Refused(f"The roles keep {self.limits.keys} evaluation keys, and one more would push out "
                                  f"the keys of another open tab (the oldest): close idle tabs, or try again once "
                                  f"that tab made new keys.")
            if kind == "session" and self._blocked(tab, "session", _dropped(self.opened, adding,
                                                                            self.limits.sessions)):
                raise Refused(f"The evaluator keeps {self.limits.sessions} applications, and one more would push out "
                              f"another open tab's application (the oldest): close idle tabs, or try again once "
                              f"that tab started a new application.")
            self.pending[kind] += 1
            return Ticket(tab, kind, generation)

    def done(self, ticket: Ticket, ident: str | None, when: int, live: bool = True) -> None:
        """The reserved click ended: `ident` (the key id or session id) was made at command number `when`, or
        nothing (None); `live` False records one that may exist but that the tab does not use (a failed click)."""
        with self._lock:
            if ticket.generation != self.generation:
                return
            self.pending[ticket.kind] -= 1
            if ident is None:
                return
            self.owner[ident] = ticket.tab
            if live:
                self.live[ticket.kind][ticket.tab] = ident
                if ticket.kind == "key":  # new keys, a new application: the tab's current one is dead to it
                    self.live["session"].pop(ticket.tab, None)
            if ticket.kind == "key":
                self.holders.add(ticket.tab)
                if self.track_keys:
                    self.made[ident] = self.used[ident] = when
                    self._trim(self.made, self.limits.keys)
                    self._trim(self.used, self.limits.keys)
            else:
                self.opened[ident] = when
                self._trim(self.opened, self.limits.sessions)

    def _trim(self, order: dict[str, int], limit: int) -> None:
        for ident in _dropped(order, 0, limit):
            del order[ident]
            if ident not in self.made and ident not in self.used and ident not in self.opened:
                self.owner.pop(ident, None)

    def key_used(self, key_id: str, when: int, generation: int) -> None:
        """The user used a key for a new input (its `prepare`): it is now its most recently used."""
        with self._lock:
            if generation == self.generation and key_id in self.used:
                self.used[key_id] = max(self.used[key_id], when)

    def release(self, tab: str) -> None:
        """A tab closed (or reloaded): its keys and applications are no one's any more; its place is free."""
        with self._lock:
            self.holders.discard(tab)
            for live in self.live.values():
                live.pop(tab, None)

    def holding(self) -> int:
        with self._lock:
            return len(self.holders)
