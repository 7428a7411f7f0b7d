"""The page's copy of what its roles keep for whom (web/capacity.py): each role's own order of dropping keys and
applications, and the clicks it refuses because they would drop another open tab's current ones."""

from __future__ import annotations

import pytest

from web.capacity import Capacity, Limits, Refused


def test_limits_give_every_tab_its_applications_and_the_roles_their_arguments():
    limits = Limits(tabs=3, applications=5)
    assert (limits.sessions, limits.keys) == (15, 20) and Limits(tabs=16).keys == 32
    assert limits.role_args()["evaluator"] == ["--max-sessions", "15", "--max-keys", "20", "--max-store-mb", "4096"]
    assert {r: a for r, a in limits.role_args().items() if r != "evaluator"} == \
        {r: ["--max-keys", "20"] for r in ("user", "bank", "agency")}
    with pytest.raises(ValueError):
        Limits(tabs=17)


def test_applications_follow_the_evaluators_order():
    """The evaluator drops its oldest application: a tab's new one is refused only when that oldest is another open
    tab's current application; reservations in flight count, and a closed tab's application may go."""
    capacity = Capacity(Limits(tabs=2, applications=2), track_keys=False)
    capacity.done(capacity.reserve("A", "session", 0), "a1", 1)
    for i, when in ((1, 2), (2, 3)):
        capacity.done(capacity.reserve("B", "session", 0), f"b{i}", when)
    pending = capacity.reserve("B", "session", 0)  # the evaluator's 4th: nothing dropped yet
    with pytest.raises(Refused, match="The evaluator keeps 4 applications"):
        capacity.reserve("B", "session", 0)  # with the one in flight: a 5th would drop a1
    capacity.done(pending, "b3", 4)
    with pytest.raises(Refused):
        capacity.reserve("B", "session", 0)
    capacity.release("A")
    capacity.done(capacity.reserve("B", "session", 0), "b4", 5)
    assert sorted(capacity.opened) == ["b1", "b2", "b3", "b4"]


def test_keys_follow_each_roles_own_order():
    """The evaluator, bank and agency drop the oldest key made, the user the least recently used: a keygen that
    would make either drop another tab's current key is refused; a tab's own old key may go."""
    capacity = Capacity(Limits(tabs=2, applications=1))
    keys = capacity.limits.keys
    a = capacity.reserve("A", "key", 0)
    capacity.done(a, "ka", 1)
    for i in range(keys - 1):  # tab B makes keys again and again: each replaces B's previous one
        capacity.done(capacity.reserve("B", "key", 0), f"kb{i}", 2 + i)
    with pytest.raises(Refused, match=f"The roles keep {keys} evaluation keys"):
        capacity.reserve("B", "key", 0)  # would drop "ka", A's current key, the oldest made
    capacity.key_used("ka", 100, 0)  # the user just used A's key: still the oldest made at the evaluator
    with pytest.raises(Refused):
        capacity.reserve("B", "key", 0)
    capacity.done(capacity.reserve("A", "key", 0), "ka2", 101)  # A's own new keys drop its old ones
    capacity.done(capacity.reserve("B", "key", 0), "kb-next", 102)
    assert capacity.reserve("B", "key", 1).generation == 1  # a restart of the roles: nothing kept any more


def test_the_evaluators_byte_bound_holds_every_key_the_page_lets_it_keep():
    """The default deployment's 469 MB keys: 20 of them need 9.4 GB, more than the evaluator's default 4096 MB; the page
    starts it with room for all (10 % and 256 MB over), or the store would drop an open tab's key for its bytes."""
    key = 469_230_208
    limits = Limits(tabs=8, key_bytes=key)
    store = int(limits.role_args()["evaluator"][limits.role_args()["evaluator"].index("--max-store-mb") + 1])
    assert store * 2**20 >= limits.keys * key * 1.1 and limits.keys == 20
    assert Limits(tabs=8).store_mb == Limits(tabs=8, key_bytes=37_731_224).store_mb == 4096  # the tree's fit already
