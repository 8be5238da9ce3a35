"""Policy resolution: most specific rule wins, never plaintext when mandatory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.policy import (
    Decision,
    EncryptMode,
    MissingAction,
    Outcome,
    Policy,
    Rule,
    Scope,
    SignMode,
    decide,
    group,
)

POLICY = Policy(
    rules=(
        Rule(Scope.SENDER, "example.org", sign=SignMode.ALWAYS, encrypt=EncryptMode.ALLOW),
        Rule(
            Scope.RECIPIENT,
            "bank.example",
            encrypt=EncryptMode.MANDATORY,
            missing=MissingAction.REJECT,
        ),
        Rule(Scope.RECIPIENT, "legacy.bank.example", encrypt=EncryptMode.NEVER),
        Rule(
            Scope.RECIPIENT,
            "auditor@bank.example",
            encrypt=EncryptMode.MANDATORY,
            missing=MissingAction.HOLD,
        ),
        Rule(
            Scope.SENDER,
            "ceo@example.org",
            encrypt=EncryptMode.MANDATORY,
            missing=MissingAction.TEMPFAIL,
        ),
        Rule(Scope.RECIPIENT, "archive.example", sign=SignMode.NEVER),
    )
)


def test_recipient_domain_rule_beats_sender_domain_rule() -> None:
    assert POLICY.resolve("alice@example.org", "x@bank.example")[1:] == (
        EncryptMode.MANDATORY,
        MissingAction.REJECT,
    )


def test_longer_domain_wins_among_domain_rules() -> None:
    assert POLICY.resolve("alice@example.org", "x@legacy.bank.example")[1] is EncryptMode.NEVER


def test_recipient_address_beats_everything() -> None:
    assert POLICY.resolve("ceo@example.org", "auditor@bank.example")[1:] == (
        EncryptMode.MANDATORY,
        MissingAction.HOLD,
    )


def test_sender_address_beats_recipient_domain() -> None:
    # ceo's own rule is more specific than the partner-domain rule
    assert POLICY.resolve("ceo@example.org", "x@legacy.bank.example")[1:] == (
        EncryptMode.MANDATORY,
        MissingAction.TEMPFAIL,
    )


def test_each_setting_resolves_on_its_own() -> None:
    sign, encrypt, _ = POLICY.resolve("alice@example.org", "x@archive.example")
    assert (sign, encrypt) == (SignMode.NEVER, EncryptMode.ALLOW)


def test_matching_is_case_insensitive() -> None:
    assert POLICY.resolve("Alice@Example.ORG", "X@Bank.Example")[1] is EncryptMode.MANDATORY


def test_mandatory_without_certificate_takes_the_configured_action() -> None:
    decisions = decide(
        POLICY,
        "alice@example.org",
        ["a@bank.example", "auditor@bank.example", "b@other.example"],
        sender_can_sign=True,
        has_certificate=lambda r: False,
    )
    assert [(d.recipient, d.outcome) for d in decisions] == [
        ("a@bank.example", Outcome.REJECT),
        ("auditor@bank.example", Outcome.HOLD),
        ("b@other.example", Outcome.SEND),
    ]
    assert group(decisions) == {(True, False): ("b@other.example",)}


def test_allow_encrypts_only_recipients_with_known_certificates_in_separate_copies() -> None:
    decisions = decide(
        POLICY,
        "alice@example.org",
        ["known@other.example", "unknown@other.example"],
        sender_can_sign=True,
        has_certificate=lambda r: r.startswith("known"),
    )
    assert group(decisions) == {
        (True, True): ("known@other.example",),
        (True, False): ("unknown@other.example",),
    }


def test_sign_always_without_a_certificate_is_a_temporary_failure() -> None:
    [decision] = decide(
        POLICY,
        "alice@example.org",
        ["b@other.example"],
        sender_can_sign=False,
        has_certificate=lambda r: True,
    )
    assert decision.outcome is Outcome.TEMPFAIL


emails = st.from_regex(
    r"[a-z]{1,5}@([a-z]{1,4}\.){0,2}(example|bank\.example|example\.org)", fullmatch=True
)


@given(
    sender=emails,
    recipients=st.lists(emails, min_size=1, max_size=5),
    known=st.sets(emails),
    can_sign=st.booleans(),
)
def test_mandatory_encryption_never_yields_a_plaintext_send(
    sender: str, recipients: list[str], known: set[str], can_sign: bool
) -> None:
    decisions = decide(
        POLICY, sender, recipients, sender_can_sign=can_sign, has_certificate=lambda r: r in known
    )
    for d in decisions:
        assert isinstance(d, Decision)
        if (
            POLICY.resolve(sender, d.recipient)[1] is EncryptMode.MANDATORY
            and d.outcome is Outcome.SEND
        ):
            assert d.encrypt
    sent = [r for rs in group(decisions).values() for r in rs]
    assert len(sent) == len(set(sent)) or len(recipients) != len(set(recipients))
