"""Who may send which message on which channel: one table, consulted by the one dispatch path of every role.

A channel is a socket a process serves: a role's ROUTER (`evaluator`, `bank`, `agency`), the commands a
role takes from the runner (`control`) and the runner's own control ROUTER (`runner`). The sender is the role whose CURVE key the ZAP handshake proved (see
`Node._sender`); a message whose type is not in its channel's table, or whose sender is not listed,
is refused with FORBIDDEN before any handler runs, so a refusal changes no state. A rule may also
bind a header field to the sender (an INPUT's `party`, a READY's `role`): a peer cannot speak for
another party. protocol/SPEC.md prints this table (`tests/test_authorization.py` pins the two together).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Forbidden
from .messages import Message, MessageType as T

ROLES = frozenset({"evaluator", "user", "bank", "agency"})
EVERY_ROLE = ROLES | {"runner"}


@dataclass(frozen=True)
class Rule:
    """The proven identities that may send a message type, and the header field (if any) that must name
    the sender itself."""

    senders: frozenset[str]
    bound_field: str | None = None


def _rules(**by_type: Rule) -> dict[T, Rule]:
    return {T(name): rule for name, rule in by_type.items()}


USER_ONLY = Rule(frozenset({"user"}))
RUNNER_ONLY = Rule(frozenset({"runner"}))
ANY_PEER = Rule(EVERY_ROLE)

AUTHORIZATION: dict[str, dict[T, Rule]] = {
    "evaluator": _rules(
        PING=ANY_PEER,
        KEY_QUERY=USER_ONLY,
        EVAL_KEY=USER_ONLY,
        INPUT=Rule(frozenset({"user", "bank", "agency"}), bound_field="party"),
        RUN=USER_ONLY,
        GET_OUTPUT=USER_ONLY,
    ),
    "bank": _rules(PING=ANY_PEER, CLIENT_KEY=USER_ONLY),
    "agency": _rules(PING=ANY_PEER, CLIENT_KEY=USER_ONLY, CANDIDATE=USER_ONLY),
    "control": _rules(PING=RUNNER_ONLY, COMMAND=RUNNER_ONLY, SHUTDOWN=RUNNER_ONLY),
    "runner": _rules(READY=Rule(ROLES, bound_field="role"), RESULT=Rule(ROLES), ERROR=Rule(ROLES),
                     PONG=Rule(ROLES)),
}


def authorize(channel: str, sender: str, message: Message) -> None:
    """Raise Forbidden unless `sender` may send `message` on `channel` (and names only itself)."""
    rule = AUTHORIZATION[channel].get(message.TYPE)
    if rule is None:
        raise Forbidden(f"{message.TYPE.value} is not accepted on the {channel} channel")
    if sender not in rule.senders:
        raise Forbidden(f"{sender} may not send {message.TYPE.value} to the {channel} "
                        f"(only {', '.join(sorted(rule.senders))})")
    if rule.bound_field is not None and getattr(message, rule.bound_field) != sender:
        raise Forbidden(f"{sender} may not send {message.TYPE.value} with {rule.bound_field} "
                        f"{getattr(message, rule.bound_field)!r}: it may only speak for itself")


# A message of a type its channel does not accept at all is refused; it may not be larger than this either.
NOT_ACCEPTED_LIMIT = 64 * 1024


def size_limits(channel: str, overrides: dict | None = None) -> dict[T, int]:
    """Per-type byte limits on a channel: the type's own limit where it is accepted (or the role's tighter
    override), NOT_ACCEPTED_LIMIT where it is not."""
    limits = {t: NOT_ACCEPTED_LIMIT for t in T if t not in AUTHORIZATION[channel]}
    return {**limits, **(overrides or {})}


def allowed_senders(channel: str, message_type: T) -> frozenset[str]:
    rule = AUTHORIZATION[channel].get(message_type)
    return rule.senders if rule is not None else frozenset()
