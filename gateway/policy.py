"""Signing and encryption policy: which copy of a message each recipient gets.

Rules name a scope — a sender or a recipient, by address or by domain — and any of three
settings: ``sign`` (never / allow / always), ``encrypt`` (never / allow / mandatory) and
``missing`` (what a mandatory-encryption recipient without a certificate causes: reject,
tempfail or hold).  Each setting is resolved on its own, the most specific rule that sets
it wins:

    recipient address > sender address > recipient domain > sender domain > default

and among domain rules the longest matching domain wins (``sales.example.org`` beats
``example.org``, which also matches its subdomains).  Sign policy follows the same order:
a rule for a recipient may turn signing off for that recipient (e.g. a partner whose
archive rejects S/MIME).

The result for a message is a list of :class:`Decision` per recipient; recipients with the
same outcome share one transformed copy (:func:`group`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


class SignMode(enum.StrEnum):
    NEVER = "never"
    ALLOW = "allow"  # sign when the sender has (or can get) a certificate
    ALWAYS = "always"  # no certificate and none to be had: temporary failure


class EncryptMode(enum.StrEnum):
    NEVER = "never"
    ALLOW = "allow"  # encrypt when the recipient's certificate is known
    MANDATORY = "mandatory"  # never plaintext: see MissingAction


class MissingAction(enum.StrEnum):
    REJECT = "reject"  # 5xx: the sender learns at once
    TEMPFAIL = "tempfail"  # 4xx: the MTA retries, a certificate may appear meanwhile
    HOLD = "hold"  # quarantined at the gateway for an operator to decide


class Scope(enum.StrEnum):
    SENDER = "sender"
    RECIPIENT = "recipient"


@dataclass(frozen=True)
class Rule:
    """One policy rule; ``pattern`` is an address, a domain, or ``*`` for the default."""

    scope: Scope
    pattern: str
    sign: SignMode | None = None
    encrypt: EncryptMode | None = None
    missing: MissingAction | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", self.pattern.strip().lower())

    def specificity(self, sender: str, recipient: str) -> tuple[int, int] | None:
        """How specifically this rule matches (higher wins), or None when it doesn't."""
        address = sender if self.scope is Scope.SENDER else recipient
        if self.pattern == "*":
            return (0, 0)
        if "@" in self.pattern:
            if address != self.pattern:
                return None
            return (4 if self.scope is Scope.RECIPIENT else 3, 0)
        domain = address.rpartition("@")[2]
        if domain != self.pattern and not domain.endswith("." + self.pattern):
            return None
        return (2 if self.scope is Scope.RECIPIENT else 1, len(self.pattern))


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    default_sign: SignMode = SignMode.ALLOW
    default_encrypt: EncryptMode = EncryptMode.ALLOW
    default_missing: MissingAction = MissingAction.TEMPFAIL

    def resolve(self, sender: str, recipient: str) -> tuple[SignMode, EncryptMode, MissingAction]:
        sender, recipient = sender.lower(), recipient.lower()
        matches = [
            (spec, rule)
            for rule in self.rules
            if (spec := rule.specificity(sender, recipient)) is not None
        ]
        matches.sort(key=lambda item: item[0], reverse=True)

        def first(attribute: str, default: str) -> str:
            for _, rule in matches:
                value = getattr(rule, attribute)
                if value is not None:
                    return str(value)
            return default

        return (
            SignMode(first("sign", self.default_sign)),
            EncryptMode(first("encrypt", self.default_encrypt)),
            MissingAction(first("missing", self.default_missing)),
        )


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
