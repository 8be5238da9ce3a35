"""Applying the signing and encryption policy: which copy of a message each recipient gets.

The policy itself (modes, rules, which rule wins) is configuration: :mod:`config.policy`.
The result for a message is a list of :class:`Decision` per recipient; recipients with the
same outcome share one transformed copy (:func:`group`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from config.policy import EncryptMode, MissingAction, Policy, Rule, Scope, SignMode

__all__ = [
    "Decision",
    "EncryptMode",
    "MissingAction",
    "Outcome",
    "Policy",
    "Rule",
    "Scope",
    "SignMode",
    "decide",
    "group",
]


class Outcome(enum.StrEnum):
    SEND = "send"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    HOLD = "hold"


@dataclass(frozen=True)
class Decision:
    """What happens to one recipient's copy."""

    recipient: str
    sign: bool
    encrypt: bool
    outcome: Outcome = Outcome.SEND
    reason: str = ""


def decide(
    policy: Policy,
    sender: str,
    recipients: Sequence[str],
    *,
    sender_can_sign: bool,
    has_certificate: Callable[[str], bool],
) -> list[Decision]:
    """Pure decision per recipient; ``has_certificate`` answers from the store/cache.

    Never plaintext when encryption is mandatory: such a recipient without a certificate
    gets the rule's missing-certificate action, never a ``SEND`` without encryption.
    """
    decisions = []
    for recipient in recipients:
        sign_mode, encrypt_mode, missing = policy.resolve(sender, recipient)
        if sign_mode is SignMode.ALWAYS and not sender_can_sign:
            why = f"no signing certificate for {sender}"
            decisions.append(Decision(recipient, False, False, Outcome.TEMPFAIL, why))
            continue
        sign = sign_mode is not SignMode.NEVER and sender_can_sign
        known = encrypt_mode is not EncryptMode.NEVER and has_certificate(recipient)
        if encrypt_mode is EncryptMode.MANDATORY and not known:
            why = "no encryption certificate"
            decisions.append(Decision(recipient, sign, False, Outcome(missing.value), why))
            continue
        decisions.append(Decision(recipient, sign, known))
    return decisions


def group(decisions: Iterable[Decision]) -> dict[tuple[bool, bool], tuple[str, ...]]:
    """Recipients to send, by (sign, encrypt): each key is one transformed copy."""
    groups: dict[tuple[bool, bool], list[str]] = {}
    for decision in decisions:
        if decision.outcome is Outcome.SEND:
            groups.setdefault((decision.sign, decision.encrypt), []).append(decision.recipient)
    return {key: tuple(value) for key, value in groups.items()}
