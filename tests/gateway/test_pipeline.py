"""The pipeline on its own: every documented decision, called with real certs, keys and bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca.keys.errors import KeyBackendError
from cmc.errors import TemporaryFailure
from gateway.certs.view import Certificates, SigningIdentity
from gateway.metrics import Metrics
from gateway.pipeline import PipelineSettings, SmimePipeline, check_no_plaintext, strip_spoofed
from gateway.policy import EncryptMode, MissingAction, Policy, Rule, Scope, SignMode
from gateway.quarantine import Quarantine
from gateway.smime import decrypt, encrypt, sign, smime_kind, verify
from gateway.smime.mime import split_message
from gateway.smtp.message import Copy, MessageRefused, Transaction
from gateway.smtp.relay import Reply
from tests.gateway.certs import make_ca
from tests.gateway.test_end_to_end_smime import INTERNAL, PLAIN, MemoryCertificates, people

CA_ = make_ca()
WHO = people(CA_)
MALFORMED = b"From: alice@example.org\r\nthis line is no header field\r\n\r\nbody\r\n"


def pipeline(
    certificates: Certificates | None = None,
    policy: Policy | None = None,
    quarantine: Quarantine | None = None,
) -> SmimePipeline:
    settings = PipelineSettings(INTERNAL, policy or Policy(), trust_anchors=(CA_.cert,))
    return SmimePipeline(settings, certificates or MemoryCertificates(WHO.values()), quarantine)


def mail(sender: str, *recipients: str, content: bytes = PLAIN) -> Transaction:
    return Transaction("Q1", "127.0.0.1", sender, recipients, content)


def rule(pattern: str, **settings) -> Rule:
    return Rule(Scope.RECIPIENT, pattern, **settings)


async def refused(pipe: SmimePipeline, transaction: Transaction) -> Reply:
    with pytest.raises(MessageRefused) as caught:
        await pipe(transaction)
    return caught.value.reply


# -- malformed messages ------------------------------------------------------------------------
async def test_malformed_outbound_mail_that_must_be_signed_is_refused_permanently():
    reply = await refused(
        pipeline(), mail("alice@example.org", "erin@elsewhere.example", content=MALFORMED)
    )
    assert reply.code == 554 and reply.text.startswith("5.6.0")


async def test_malformed_outbound_mail_needing_no_transform_is_relayed_as_it_is():
    pipe = pipeline(policy=Policy(default_sign=SignMode.NEVER))
    [copy] = await pipe(mail("alice@example.org", "erin@elsewhere.example", content=MALFORMED))
    assert copy.content == MALFORMED and copy.actions == ("outbound", "pass")


async def test_malformed_inbound_mail_is_delivered_without_spoofed_verdicts():
    spoofed = b"X-Cmcgate-Signature: valid;\r\n signer=ceo@example.org\r\n" + MALFORMED
    [copy] = await pipeline()(mail("erin@elsewhere.example", "dave@example.org", content=spoofed))
    assert copy.content == MALFORMED
    assert copy.actions == ("inbound", "malformed")


def test_spoof_stripping_leaves_the_body_alone():
    body = b"\r\nX-Cmcgate-Signature: valid\r\n"
    assert (
        strip_spoofed(b"x-cmcgate-signature: valid\r\nbad line\r\n" + body)
        == b"bad line\r\n" + body
    )


# -- inbound ---------------------------------------------------------------------------------
async def test_plain_inbound_mail_loses_forged_verdict_headers():
    forged = b"X-Cmcgate-Signature: valid; signer=bob@partner.example\r\n" + PLAIN
    [copy] = await pipeline()(mail("bob@partner.example", "dave@example.org", content=forged))
    assert copy.content == PLAIN and copy.actions == ("inbound", "pass")


async def test_encrypted_mail_for_a_key_we_do_not_hold_is_delivered_as_it_is():
    sealed = encrypt(PLAIN, [WHO["carol"].cert])
    [copy] = await pipeline()(mail("bob@partner.example", "dave@example.org", content=sealed))
    assert copy.content == sealed and copy.actions == ("inbound", "not-decrypted")


async def test_each_internal_recipient_decrypts_with_their_own_key():
    sealed = encrypt(PLAIN, [WHO["alice"].cert, WHO["dave"].cert])
    copies = await pipeline()(
        mail("bob@partner.example", "alice@example.org", "dave@example.org", content=sealed)
    )
    assert [c.recipients for c in copies] == [("alice@example.org",), ("dave@example.org",)]
    for copy in copies:
        assert (
            copy.actions == ("inbound", "decrypt") and b"the numbers are attached" in copy.content
        )


async def test_opaque_signed_mail_is_unwrapped_and_stamped_valid_and_signer_harvested():
    bob = WHO["bob"]
    message = PLAIN.replace(b"Alice <alice@example.org>", b"bob@partner.example")
    opaque = sign(message, bob.key, bob.cert, bob.chain, detached=False)
    certificates = MemoryCertificates(WHO.values())
    [copy] = await pipeline(certificates)(
        mail("bob@partner.example", "dave@example.org", content=opaque)
    )
    assert copy.actions == ("inbound", "verify-valid")
    assert copy.content.startswith(b"X-Cmcgate-Signature: valid; signer=bob@partner.example\r\n")
    assert smime_kind(copy.content) == "plain" and b"the numbers are attached" in copy.content
    assert bob.cert in [c for c, _ in certificates.harvested]


async def test_a_signature_by_somebody_else_than_from_is_invalid_and_nothing_harvested():
    carol = WHO["carol"]
    signed = sign(PLAIN.replace(b"Alice <alice@example.org>", b"bob@partner.example"),
                  carol.key, carol.cert, carol.chain)  # fmt: skip
    certificates = MemoryCertificates(WHO.values())
    [copy] = await pipeline(certificates)(
        mail("bob@partner.example", "dave@example.org", content=signed)
    )
    assert copy.content.startswith(b"X-Cmcgate-Signature: invalid; signer=carol@partner.example")
    assert certificates.harvested == []


async def test_a_failing_harvest_does_not_stop_the_mail():
    class BrokenHarvest(MemoryCertificates):
        async def harvest(self, certificates, source):
            raise TemporaryFailure("database locked")

    bob = WHO["bob"]
    signed = sign(PLAIN.replace(b"Alice <alice@example.org>", b"bob@partner.example"),
                  bob.key, bob.cert, bob.chain)  # fmt: skip
    [copy] = await pipeline(BrokenHarvest(WHO.values()))(
        mail("bob@partner.example", "dave@example.org", content=signed)
    )
    assert copy.actions == ("inbound", "verify-valid")


# -- outbound --------------------------------------------------------------------------------
async def test_tempfail_wins_over_reject_when_both_happen_in_one_message():
    policy = Policy(rules=(
        rule("reject.example", encrypt=EncryptMode.MANDATORY, missing=MissingAction.REJECT),
        rule("later.example", encrypt=EncryptMode.MANDATORY, missing=MissingAction.TEMPFAIL),
    ))  # fmt: skip
    reply = await refused(
        pipeline(policy=policy), mail("alice@example.org", "a@reject.example", "b@later.example")
    )
    assert reply.code == 451 and reply.text.startswith("4.7.1")


async def test_hold_without_a_configured_quarantine_is_a_temporary_failure():
    policy = Policy(rules=(rule("*", encrypt=EncryptMode.MANDATORY, missing=MissingAction.HOLD),))
    reply = await refused(
        pipeline(policy=policy), mail("alice@example.org", "erin@elsewhere.example")
    )
    assert reply.code == 451


async def test_quarantine_that_cannot_be_written_gives_451(tmp_path: Path):
    (tmp_path / "file").write_bytes(b"")
    policy = Policy(rules=(rule("*", encrypt=EncryptMode.MANDATORY, missing=MissingAction.HOLD),))
    pipe = pipeline(policy=policy, quarantine=Quarantine(tmp_path / "file" / "q"))
    reply = await refused(pipe, mail("alice@example.org", "erin@elsewhere.example"))
    assert reply.code == 451 and reply.text.startswith("4.3.0")


async def test_enrolment_that_fails_temporarily_gives_451_when_signing_is_mandatory():
    certificates = MemoryCertificates(WHO.values(), failing=["alice@example.org"])
    always = Policy(default_sign=SignMode.ALWAYS)
    reply = await refused(
        pipeline(certificates, always), mail("alice@example.org", "bob@partner.example")
    )
    assert reply.code == 451 and reply.text.startswith("4.4.3")


async def test_enrolment_that_fails_temporarily_with_sign_allow_sends_unsigned():
    certificates = MemoryCertificates(WHO.values(), failing=["alice@example.org"])
    allow = Policy(default_sign=SignMode.ALLOW, default_encrypt=EncryptMode.NEVER)
    [copy] = await pipeline(certificates, allow)(mail("alice@example.org", "bob@partner.example"))
    assert "sign" not in copy.actions
    assert copy.content == PLAIN


async def test_hsm_session_failure_gives_451():
    class HsmDown(MemoryCertificates):
        async def signing_identity(
            self, email_: str, display_name: str | None = None
        ) -> SigningIdentity | None:
            raise KeyBackendError("PKCS#11 session lost: CKR_DEVICE_REMOVED")

    reply = await refused(
        pipeline(HsmDown(WHO.values())), mail("alice@example.org", "bob@partner.example")
    )
    assert reply.code == 451 and reply.text.startswith("4.7.0")


async def test_mail_the_client_encrypted_already_passes_to_a_mandatory_recipient_without_cert():
    sealed = encrypt(PLAIN, [WHO["bob"].cert])
    policy = Policy(rules=(rule("*", encrypt=EncryptMode.MANDATORY, missing=MissingAction.REJECT),))
    [copy] = await pipeline(policy=policy)(
        mail("alice@example.org", "erin@elsewhere.example", content=sealed)
    )
    assert copy.content == sealed and copy.actions == ("outbound", "client-encrypted")


async def test_mail_the_client_signed_already_is_encrypted_but_not_signed_twice():
    alice = WHO["alice"]
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    [copy] = await pipeline()(mail("alice@example.org", "bob@partner.example", content=signed))
    assert copy.actions == ("outbound", "encrypt")
    inner = decrypt(copy.content, WHO["bob"].rsa_key, WHO["bob"].cert)
    assert verify(inner, trust_anchors=[CA_.cert]).status == "valid"
    assert split_message(inner).body == split_message(signed).body


async def test_external_sender_relayed_to_a_mandatory_recipient_is_encrypted_not_signed():
    policy = Policy(rules=(rule("partner.example", encrypt=EncryptMode.MANDATORY),))
    [copy] = await pipeline(policy=policy)(mail("erin@elsewhere.example", "bob@partner.example"))
    assert copy.actions == ("outbound", "encrypt")
    assert b"the numbers" in decrypt(copy.content, WHO["bob"].rsa_key, WHO["bob"].cert)


async def test_a_recipient_whose_certificate_cannot_be_encrypted_to_counts_as_having_none():
    frank = CA_.issue("frank@partner.example", kind="ed25519")
    certificates = MemoryCertificates([*WHO.values(), frank])
    [copy] = await pipeline(certificates)(mail("alice@example.org", "frank@partner.example"))
    assert copy.actions == ("outbound", "sign")
    policy = Policy(rules=(rule("*", encrypt=EncryptMode.MANDATORY, missing=MissingAction.REJECT),))
    reply = await refused(
        pipeline(certificates, policy), mail("alice@example.org", "frank@partner.example")
    )
    assert reply.code == 550


def test_the_plaintext_guard_refuses_a_clear_copy_for_a_mandatory_recipient():
    alice = WHO["alice"]
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    sealed = encrypt(PLAIN, [WHO["bob"].cert])
    check_no_plaintext(
        [Copy(("bob@partner.example",), sealed, ("outbound", "encrypt"))], {"bob@partner.example"}
    )
    for bad in (
        Copy(("bob@partner.example",), signed, ("outbound", "encrypt")),
        Copy(("bob@partner.example",), sealed, ("outbound", "sign")),
        Copy(("bob@partner.example", "x@y.example"), PLAIN, ("outbound", "pass")),
    ):
        with pytest.raises(MessageRefused) as caught:
            check_no_plaintext([bad], {"bob@partner.example"})
        assert caught.value.reply.code == 451


# -- metrics ---------------------------------------------------------------------------------
async def test_metrics_count_each_copy_by_direction_action_and_result():
    metrics = Metrics(INTERNAL)
    pipe = metrics.timed(pipeline())
    transaction = mail("alice@example.org", "bob@partner.example", "dave@example.org")
    copies = await pipe(transaction)
    metrics.on_result(transaction, copies, Reply(250, "2.0.0 OK"))
    metrics.on_result(mail("erin@elsewhere.example", "dave@example.org"), [], Reply(451, "4.4.3 x"))
    assert metrics.count("outbound", "sign+encrypt", "accepted") == 1
    assert metrics.count("inbound", "pass", "accepted") == 1
    assert metrics.count("inbound", "none", "tempfail") == 1
    assert metrics.observations("outbound") == 1


# -- the adapter over the real stores ----------------------------------------------------------
async def test_the_pipeline_runs_on_the_real_certificate_and_key_stores(tmp_path: Path):
    from ca.keys.software import SoftwareBackend
    from gateway.certs.adapter import StoreCertificates
    from gateway.certs.keystore import KeyStore
    from gateway.certs.store import CertStore

    alice, dave, bob = WHO["alice"], WHO["dave"], WHO["bob"]
    with (
        CertStore.open(f"sqlite:///{tmp_path / 'gw.db'}") as store,
        KeyStore(SoftwareBackend(tmp_path / "keys", passphrase="test")) as keys,
    ):
        for user in (alice, dave):
            label = keys.import_for_certificate(user.cert, user.email, user.rsa_key)
            store.add(user.cert, "imported", key_label=label)
        store.add_chain([CA_.cert])
        store.add(bob.cert, "ldap")
        pipe = pipeline(StoreCertificates(store, keys))
        [out] = await pipe(mail("alice@example.org", "bob@partner.example"))
        assert out.actions == ("outbound", "sign", "encrypt")
        for reader in (bob, alice):  # alice: her own encryption certificate from the store
            inner = decrypt(out.content, reader.rsa_key, reader.cert)
            assert verify(inner, trust_anchors=[CA_.cert]).status == "valid"

        carol = WHO["carol"]
        message = PLAIN.replace(b"Alice <alice@example.org>", b"carol@partner.example")
        sealed = encrypt(sign(message, carol.key, carol.cert, carol.chain), [dave.cert])
        [into] = await pipe(mail("carol@partner.example", "dave@example.org", content=sealed))
        assert into.actions == ("inbound", "decrypt", "verify-valid")
        harvested = store.best_for_encryption("carol@partner.example")
        assert harvested is not None and harvested.source == "harvested"


def test_renewal_runs_are_counted_in_the_metrics():
    from gateway.broker.renewal import RenewalReport
    from gateway.metrics import Metrics

    metrics = Metrics(INTERNAL)
    report = RenewalReport(
        due=["a@example.org", "b@example.org", "c@example.org"],
        renewed={"a@example.org": "1f"},
        pending=["b@example.org"],
        failed={"c@example.org": "CA down"},
    )
    assert metrics.count_renewals(report) is report
    value = metrics.registry.get_sample_value
    assert value("cmcgate_certificate_renewals_total", {"result": "renewed"}) == 1
    assert value("cmcgate_certificate_renewals_total", {"result": "pending"}) == 1
    assert value("cmcgate_certificate_renewals_total", {"result": "failed"}) == 1
